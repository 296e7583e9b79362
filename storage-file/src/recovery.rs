//! Reading one segment file back after a restart, and telling a torn write from corruption.
//!
//! The scan walks records from byte 0, each of which must pass the checks of
//! [`crate::record`] and carry the next index. At the first record that does not:
//!
//! - in a segment that is not the newest, the answer is [`StorageError::Corrupt`]: the log never
//!   writes to a segment before the older one is fsynced, so an older segment cannot be torn;
//! - in the newest segment, the rest of the file is searched for a valid record (complete, with
//!   a matching checksum and a plausible index). If one exists, the bad record sits in the middle
//!   of the log and the answer is again [`StorageError::Corrupt`]. If none exists, the bad bytes
//!   are the tail of a write the crash interrupted (zeros included), and the scan reports a
//!   [`TornTail`] for the caller to cut off.
//!
//! The search is bounded: it visits each byte offset once and computes a checksum only where the
//! header is plausible, meaning the body fits in the file and the index is above the last good
//! one. A record with a good checksum but the wrong index counts as bad, so a gap followed by
//! more records is corruption, while a lone such record at the very end is cut off like any
//! torn tail.

use std::path::Path;

use bytes::Bytes;
use krest_core::planted::{self, PlantedBug};

use crate::error::StorageError;
use crate::record::{
    decode_at, decode_unchecked_index, Header, Problem, StoredRecord, HEADER_BYTES,
};
use crate::segment::Segment;

/// The valid records of one segment file, and the torn tail that follows them, if any.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    /// The segment as it stands once a torn tail is cut off.
    pub(crate) segment: Segment,
    pub(crate) records: Vec<StoredRecord>,
    pub(crate) torn_tail: Option<TornTail>,
}

/// The bytes from `offset` to the end of the newest segment are an interrupted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TornTail {
    pub(crate) offset: u64,
    pub(crate) problem: Problem,
}

/// Scans the whole content `data` of the segment file at `path`, whose name says its first
/// record has `first_index`. `is_newest` says whether a torn tail is acceptable.
pub(crate) fn scan_segment(
    path: &Path,
    first_index: u64,
    data: Bytes,
    is_newest: bool,
) -> Result<ScannedSegment, StorageError> {
    let mut segment = Segment::empty(path.to_path_buf(), first_index);
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        // `None` after the record with index u64::MAX: no record can follow it.
        let expected_index = segment.next_index();
        let decoded = match expected_index.map(|expected| decode_at(&data, offset, expected)) {
            Some(Ok(decoded)) => decoded,
            outcome => {
                if let Some(valid_offset) = planted_skip(&data, offset, expected_index) {
                    segment.push_record((valid_offset - offset) as u64);
                    offset = valid_offset;
                    continue;
                }
                let problem = match outcome {
                    Some(Err(problem)) => problem,
                    _ => Problem::PastIndexSpace,
                };
                let torn_tail =
                    judge_bad_record(path, &data, offset, expected_index, problem, is_newest)?;
                return Ok(ScannedSegment {
                    segment,
                    records,
                    torn_tail: Some(torn_tail),
                });
            }
        };
        segment.push_record(decoded.header.record_bytes());
        records.push(StoredRecord {
            term: decoded.header.term,
            index: decoded.header.index,
            body: data.slice(decoded.body.clone()),
        });
        offset = decoded.end();
    }
    Ok(ScannedSegment {
        segment,
        records,
        torn_tail: None,
    })
}

/// With the planted bug [`PlantedBug::SkipCorruptRecord`]: where the next valid record after the
/// bad one at `bad_offset` starts, so recovery can pretend the bad one is not there.
fn planted_skip(data: &[u8], bad_offset: usize, expected_index: Option<u64>) -> Option<usize> {
    if !planted::active(PlantedBug::SkipCorruptRecord) {
        return None;
    }
    let (offset, index) = find_valid_record_after(data, bad_offset, expected_index?)?;
    (Some(index) == expected_index.map(|expected| expected + 1)).then_some(offset)
}

/// Decides whether the bad record at `bad_offset` is a torn tail (returned) or corruption.
/// `expected_index` is the index the record should have carried, `None` past the index space.
fn judge_bad_record(
    path: &Path,
    data: &[u8],
    bad_offset: usize,
    expected_index: Option<u64>,
    problem: Problem,
    is_newest: bool,
) -> Result<TornTail, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: bad_offset as u64,
        reason,
    };
    if !is_newest {
        return Err(corrupt(format!(
            "{problem}, in a segment that is not the newest, so no crash can have torn it"
        )));
    }
    let valid_after = expected_index
        .and_then(|expected_index| find_valid_record_after(data, bad_offset, expected_index));
    match valid_after {
        Some((offset, index)) => Err(corrupt(format!(
            "{problem}; a valid record with index {index} follows at byte offset {offset}"
        ))),
        None => Ok(TornTail {
            offset: bad_offset as u64,
            problem,
        }),
    }
}

/// Searches the bytes after a bad record for a record that passes every check and carries an
/// index the log could have written there. Returns its offset and index.
fn find_valid_record_after(
    data: &[u8],
    bad_offset: usize,
    expected_index: u64,
) -> Option<(usize, u64)> {
    let last_header_start = data.len().checked_sub(HEADER_BYTES)?;
    for offset in bad_offset + 1..=last_header_start {
        let header_bytes = data[offset..]
            .first_chunk::<HEADER_BYTES>()
            .expect("within bounds");
        let header = Header::parse(header_bytes);
        // Anything at or below the last good index cannot belong after it (stale bytes).
        let index_plausible = header.index >= expected_index;
        let body_fits = u64::from(header.body_len) <= (last_header_start - offset) as u64;
        if index_plausible && body_fits && decode_unchecked_index(data, offset).is_ok() {
            return Some((offset, header.index));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode;

    const PATH: &str = "/log/00000000000000000001.seg";

    /// Encodes records with the given indexes and 10-byte bodies, returning the bytes and the
    /// offset of each record.
    fn segment_bytes(indexes: &[u64]) -> (Vec<u8>, Vec<usize>) {
        let mut buffer = Vec::new();
        let mut offsets = Vec::new();
        for &index in indexes {
            offsets.push(buffer.len());
            encode(&mut buffer, 1, index, &[index as u8; 10]);
        }
        (buffer, offsets)
    }

    fn scan(data: Vec<u8>, is_newest: bool) -> Result<ScannedSegment, StorageError> {
        scan_segment(Path::new(PATH), 1, Bytes::from(data), is_newest)
    }

    // A clean segment yields all its records and no torn tail.
    #[test]
    fn clean_segment_yields_every_record() {
        let (data, _) = segment_bytes(&[1, 2, 3]);
        let scanned = scan(data.clone(), false).expect("clean");
        assert_eq!(scanned.records.len(), 3);
        assert_eq!(scanned.segment.size_bytes, data.len() as u64);
        assert_eq!(scanned.torn_tail, None);
    }

    // A partial last record of the newest segment is a torn tail at that record's offset.
    #[test]
    fn partial_last_record_is_torn_tail() {
        let (mut data, offsets) = segment_bytes(&[1, 2, 3]);
        data.truncate(offsets[2] + 30);
        let scanned = scan(data, true).expect("torn, not corrupt");
        assert_eq!(scanned.records.len(), 2);
        assert_eq!(
            scanned.torn_tail.map(|tail| tail.offset),
            Some(offsets[2] as u64)
        );
    }

    // The same partial record in an older segment is corruption.
    #[test]
    fn partial_record_in_older_segment_is_corrupt() {
        let (mut data, offsets) = segment_bytes(&[1, 2, 3]);
        data.truncate(offsets[2] + 30);
        match scan(data, false) {
            Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, offsets[2] as u64),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    // A record with a wrong index followed by a valid record is corruption at the wrong one.
    #[test]
    fn index_gap_with_records_after_is_corrupt() {
        let (data, offsets) = segment_bytes(&[1, 2, 4, 5]);
        match scan(data, true) {
            Err(StorageError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, offsets[2] as u64);
                assert!(reason.contains("index 4 where index 3"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    // A record going backwards is corruption even when it is the first of the segment.
    #[test]
    fn index_going_backwards_is_corrupt() {
        let (data, _) = segment_bytes(&[0, 1, 2]);
        assert!(matches!(
            scan(data, true),
            Err(StorageError::Corrupt { offset: 0, .. })
        ));
    }

    // A zero-filled tail after valid records is torn, however long it is.
    #[test]
    fn zero_filled_tail_is_torn() {
        let (mut data, _) = segment_bytes(&[1, 2]);
        let valid_bytes = data.len();
        data.resize(valid_bytes + 8192, 0);
        let scanned = scan(data, true).expect("torn");
        assert_eq!(scanned.records.len(), 2);
        assert_eq!(
            scanned.torn_tail.map(|tail| tail.offset),
            Some(valid_bytes as u64)
        );
    }

    // Records whose index is at or below the last good one do not count as valid records after a
    // bad one (they cannot belong after it), so the tail is still torn.
    #[test]
    fn stale_lower_records_after_bad_one_do_not_make_it_corrupt() {
        let (mut data, _) = segment_bytes(&[1, 2, 3]);
        data.extend_from_slice(&[0xAB; 7]);
        let (stale, _) = segment_bytes(&[2]);
        data.extend_from_slice(&stale);
        let scanned = scan(data, true).expect("torn");
        assert_eq!(scanned.records.len(), 3);
    }
}
