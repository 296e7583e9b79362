//! Specifications of recovery: torn writes are cut off, corruption is reported, never skipped.

use std::fs::{self, OpenOptions};
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

use super::tests::{append_all, body, open, segment_files};
use super::*;
use crate::record::{encode, Header};
use crate::test_support::TemporaryDirectory;

/// The byte offsets at which the records of a clean segment file start.
fn record_offsets(path: &Path) -> Vec<u64> {
    let data = fs::read(path).expect("read");
    let mut offsets = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        offsets.push(offset as u64);
        let header = Header::parse(data[offset..].first_chunk().expect("whole header"));
        offset += header.record_bytes() as usize;
    }
    offsets
}

/// Flips one bit of the byte at `offset` of the file at `path`.
fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut data = fs::read(path).expect("read");
    data[offset as usize] ^= 1 << bit;
    fs::write(path, data).expect("write");
}

/// Writes a segment file by hand holding records with `indexes` and 10-byte bodies.
fn write_segment(directory: &Path, first_index: u64, indexes: &[u64]) -> Vec<u64> {
    fs::create_dir_all(directory).expect("create");
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for &index in indexes {
        offsets.push(data.len() as u64);
        encode(&mut data, 1, index, &body(index, 10));
    }
    fs::write(segment_path(directory, first_index), data).expect("write");
    offsets
}

/// The first index of the segment file at `path`, from its name.
fn first_index_of(path: &Path) -> u64 {
    let name = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .expect("utf-8 name");
    name.parse().expect("digits")
}

fn expect_corrupt(directory: &Path) -> (std::path::PathBuf, u64, String) {
    match SegmentedLog::open(
        directory,
        LogConfig {
            segment_bytes: 1 << 20,
        },
    ) {
        Err(StorageError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Ok(_) => panic!("expected corruption, the log opened"),
        Err(other) => panic!("expected corruption, got {other}"),
    }
}

// A bit flip inside a record with valid records after it is reported as corruption, naming
// that segment file and the exact byte offset of the record.
#[test]
fn bit_flip_before_valid_records_is_corruption() {
    let temporary = TemporaryDirectory::new("flip-middle");
    let (mut log, _) = open(temporary.path(), 1 << 20);
    append_all(&mut log, 1..=5, 40);
    log.sync().expect("sync");
    drop(log);
    let segment = &segment_files(temporary.path())[0];
    let offsets = record_offsets(segment);
    flip_bit(segment, offsets[2] + 30, 3);
    let (path, offset, reason) = expect_corrupt(temporary.path());
    assert_eq!((&path, offset), (segment, offsets[2]));
    assert!(
        reason.contains(&format!("index 4 follows at byte offset {}", offsets[3])),
        "{reason}"
    );
}

// A bit flip in the last record only is a torn write: the record is cut off, the file is
// shortened to where it began, and the log carries on.
#[test]
fn bit_flip_in_last_record_is_a_torn_tail() {
    let temporary = TemporaryDirectory::new("flip-last");
    let (mut log, _) = open(temporary.path(), 1 << 20);
    let appended = append_all(&mut log, 1..=5, 40);
    log.sync().expect("sync");
    drop(log);
    let segment = &segment_files(temporary.path())[0];
    let offsets = record_offsets(segment);
    flip_bit(segment, offsets[4] + 2, 0);
    let (mut log, recovered) = open(temporary.path(), 1 << 20);
    assert_eq!(recovered, appended[..4]);
    assert_eq!(fs::metadata(segment).expect("metadata").len(), offsets[4]);
    log.append(1, 5, b"rewritten")
        .expect("append after recovery");
}

// A bad record in a segment that is not the newest is corruption, even at its very end.
#[test]
fn bad_record_in_an_older_segment_is_corruption() {
    let temporary = TemporaryDirectory::new("flip-older");
    let (mut log, _) = open(temporary.path(), 3 * 34);
    append_all(&mut log, 1..=7, 10);
    log.sync().expect("sync");
    drop(log);
    let older = &segment_files(temporary.path())[1];
    let last_offset = *record_offsets(older).last().expect("records");
    flip_bit(older, last_offset + 25, 7);
    let (path, offset, _) = expect_corrupt(temporary.path());
    assert_eq!((&path, offset), (older, last_offset));
}

// A zero-filled tail (file length extended, data never written) is a torn write.
#[test]
fn zero_filled_tail_is_a_torn_write() {
    let temporary = TemporaryDirectory::new("zeros");
    let (mut log, _) = open(temporary.path(), 1 << 20);
    let appended = append_all(&mut log, 1..=3, 10);
    log.sync().expect("sync");
    drop(log);
    let segment = &segment_files(temporary.path())[0];
    let valid_bytes = fs::metadata(segment).expect("metadata").len();
    let file = OpenOptions::new().write(true).open(segment).expect("open");
    file.set_len(valid_bytes + 4096).expect("extend with zeros");
    drop(file);
    let (_, recovered) = open(temporary.path(), 1 << 20);
    assert_eq!(recovered, appended);
    assert_eq!(fs::metadata(segment).expect("metadata").len(), valid_bytes);
}

// A gap in the indexes inside a segment, with records after it, is corruption at the first
// record past the gap.
#[test]
fn index_gap_inside_a_segment_is_corruption() {
    let temporary = TemporaryDirectory::new("gap-inside");
    let offsets = write_segment(temporary.path(), 1, &[1, 2, 4, 5]);
    let (path, offset, reason) = expect_corrupt(temporary.path());
    assert_eq!(
        (path, offset),
        (segment_path(temporary.path(), 1), offsets[2])
    );
    assert!(
        reason.contains("index 4 where index 3 must come next"),
        "{reason}"
    );
}

// A gap between two segment files is corruption, reported at the start of the later file.
#[test]
fn index_gap_between_segments_is_corruption() {
    let temporary = TemporaryDirectory::new("gap-between");
    write_segment(temporary.path(), 1, &[1, 2, 3]);
    write_segment(temporary.path(), 5, &[5, 6]);
    let (path, offset, reason) = expect_corrupt(temporary.path());
    assert_eq!((path, offset), (segment_path(temporary.path(), 5), 0));
    assert!(
        reason.contains("starts at index 5 but the previous segment ends at index 3"),
        "{reason}"
    );
}

// An empty newest segment, as left by a crash right after it was created, is fine, and the next
// record goes into it.
#[test]
fn empty_newest_segment_is_fine() {
    let temporary = TemporaryDirectory::new("empty-newest");
    write_segment(temporary.path(), 1, &[1, 2, 3]);
    write_segment(temporary.path(), 4, &[]);
    let (mut log, recovered) = open(temporary.path(), 1 << 20);
    assert_eq!(
        (recovered.len(), log.segment_count(), log.last_index()),
        (3, 2, Some(3))
    );
    log.append(1, 4, b"four").expect("append");
    assert_eq!(log.segment_count(), 2);
}

// A log holding only an empty segment is empty, and its first append may carry any index.
#[test]
fn only_an_empty_segment_means_an_empty_log() {
    let temporary = TemporaryDirectory::new("empty-only");
    write_segment(temporary.path(), 7, &[]);
    let (mut log, recovered) = open(temporary.path(), 1 << 20);
    assert!(recovered.is_empty());
    assert_eq!((log.first_index(), log.last_index()), (None, None));
    log.append(1, 20, b"twenty").expect("append");
    drop(log);
    assert_eq!(
        segment_files(temporary.path()),
        vec![segment_path(temporary.path(), 20)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    // For any record sizes, segment size and cut point of the newest segment file (a torn
    // write), reopening yields exactly a prefix of the appended records that keeps every record
    // of the older segments, and the log accepts the next index afterwards.
    #[test]
    fn torn_newest_segment_recovers_a_prefix(
        body_sizes in vec(0usize..300, 1..40),
        segment_bytes in 32u64..800,
        cut_fraction in 0.0f64..=1.0,
    ) {
        let temporary = TemporaryDirectory::new("torn-property");
        let mut appended = Vec::new();
        {
            let (mut log, _) = open(temporary.path(), segment_bytes);
            for (position, size) in body_sizes.iter().enumerate() {
                let index = position as u64 + 1;
                let body = body(index, *size);
                log.append(1, index, &body).expect("append");
                appended.push(StoredRecord { term: 1, index, body: Bytes::from(body) });
            }
            log.sync().expect("sync");
        }
        let newest = segment_files(temporary.path()).pop().expect("a segment");
        let newest_bytes = fs::metadata(&newest).expect("metadata").len();
        let cut = (newest_bytes as f64 * cut_fraction) as u64;
        OpenOptions::new().write(true).open(&newest).expect("open").set_len(cut).expect("cut");

        let (mut log, recovered) =
            SegmentedLog::open(temporary.path(), LogConfig { segment_bytes }).expect("a torn tail is not corruption");
        prop_assert!(recovered.len() <= appended.len());
        prop_assert_eq!(&recovered[..], &appended[..recovered.len()]);
        prop_assert!(recovered.len() as u64 >= first_index_of(&newest) - 1);
        prop_assert_eq!(log.last_index(), recovered.last().map(|record| record.index));

        let next_index = recovered.len() as u64 + 1;
        log.append(2, next_index, b"after the crash").expect("append after recovery");
        log.sync().expect("sync");
        drop(log);
        let (_, reopened) = open(temporary.path(), segment_bytes);
        prop_assert_eq!(reopened.len() as u64, next_index);
        prop_assert_eq!(reopened.last().map(|record| record.term), Some(2));
    }

    // Flipping any bit of any record except the log's last is reported as corruption at that
    // record's offset in its file; flipping a bit of the last record loses only that record.
    #[test]
    fn bit_flip_is_corruption_unless_in_the_last_record(
        body_sizes in vec(0usize..100, 2..20),
        segment_bytes in 32u64..400,
        record_choice in any::<prop::sample::Index>(),
        bit_choice in any::<prop::sample::Index>(),
    ) {
        let temporary = TemporaryDirectory::new("flip-property");
        {
            let (mut log, _) = open(temporary.path(), segment_bytes);
            for (position, size) in body_sizes.iter().enumerate() {
                let index = position as u64 + 1;
                log.append(1, index, &body(index, *size)).expect("append");
            }
            log.sync().expect("sync");
        }
        let located: Vec<(std::path::PathBuf, u64, u64)> = segment_files(temporary.path())
            .into_iter()
            .flat_map(|path| {
                let data_len = fs::metadata(&path).expect("metadata").len();
                let offsets = record_offsets(&path);
                let ends: Vec<u64> = offsets.iter().skip(1).copied().chain([data_len]).collect();
                offsets.into_iter().zip(ends).map(move |(start, end)| (path.clone(), start, end))
            })
            .collect();
        prop_assert_eq!(located.len(), body_sizes.len());
        let chosen = record_choice.index(located.len());
        let (path, start, end) = &located[chosen];
        let bit = bit_choice.index(((end - start) * 8) as usize) as u64;
        flip_bit(path, start + bit / 8, (bit % 8) as u8);

        let result = SegmentedLog::open(temporary.path(), LogConfig { segment_bytes });
        if chosen + 1 == located.len() {
            let (_, recovered) = result.expect("a bad last record is a torn tail");
            prop_assert_eq!(recovered.len(), chosen);
        } else {
            match result {
                Err(StorageError::Corrupt { path: corrupt_path, offset, .. }) => {
                    prop_assert_eq!(&corrupt_path, path);
                    prop_assert_eq!(offset, *start);
                }
                Err(other) => prop_assert!(false, "expected corruption, got {}", other),
                Ok(_) => prop_assert!(false, "expected corruption, the log opened"),
            }
        }
    }
}
