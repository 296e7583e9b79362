//! Specifications of the log's normal operation: append, sync, roll, read, truncate, delete.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::test_support::TemporaryDirectory;

/// Opens (or reopens) the log at `directory` with `segment_bytes`, panicking on error.
pub(super) fn open(directory: &Path, segment_bytes: u64) -> (SegmentedLog, Vec<StoredRecord>) {
    SegmentedLog::open(directory, LogConfig { segment_bytes }).expect("open")
}

/// A body of `size` bytes that differs from record to record.
pub(super) fn body(index: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|position| (index as usize * 31 + position) as u8)
        .collect()
}

/// Appends records `indexes` with `body_size`-byte bodies and term 1, returning what was
/// appended.
pub(super) fn append_all<F: FileSystem>(
    log: &mut SegmentedLog<F>,
    indexes: std::ops::RangeInclusive<u64>,
    body_size: usize,
) -> Vec<StoredRecord> {
    indexes
        .map(|index| {
            let body = body(index, body_size);
            log.append(1, index, &body).expect("append");
            StoredRecord {
                term: 1,
                index,
                body: Bytes::from(body),
            }
        })
        .collect()
}

/// The segment files of `directory`, sorted.
pub(super) fn segment_files(directory: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(directory)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .collect();
    paths.sort();
    paths
}

/// Records of 10-byte bodies take 34 bytes; three fit in 102.
const THREE_RECORDS_BYTES: u64 = 3 * (HEADER_BYTES as u64 + 10);

// Records appended and synced come back, identical and in order, after a reopen.
#[test]
fn append_sync_reopen_returns_the_same_records() {
    let temporary = TemporaryDirectory::new("round-trip");
    let directory = temporary.path().join("log");
    let (mut log, recovered) = open(&directory, LogConfig::default().segment_bytes);
    assert!(recovered.is_empty());
    assert_eq!(
        (log.first_index(), log.last_index(), log.synced_index()),
        (None, None, None)
    );
    let appended = append_all(&mut log, 5..=24, 100);
    assert_eq!(log.synced_index(), None);
    assert_eq!(log.sync().expect("sync"), Some(24));
    assert_eq!(log.synced_index(), Some(24));
    assert_eq!(log.size_bytes(), 20 * (HEADER_BYTES as u64 + 100));
    drop(log);
    let (log, recovered) = open(&directory, LogConfig::default().segment_bytes);
    assert_eq!(recovered, appended);
    assert_eq!(
        (log.first_index(), log.last_index(), log.synced_index()),
        (Some(5), Some(24), Some(24))
    );
}

// Appends must carry the next index; the first append of an empty log may carry any index.
#[test]
fn appends_must_be_consecutive() {
    let temporary = TemporaryDirectory::new("order");
    let (mut log, _) = open(temporary.path(), 1024);
    log.append(1, 100, b"first").expect("any first index");
    for wrong in [100, 102, 99] {
        match log.append(1, wrong, b"x") {
            Err(StorageError::OutOfOrder {
                expected_index,
                got_index,
                ..
            }) => {
                assert_eq!((expected_index, got_index), (101, wrong));
            }
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
    }
    log.append(2, 101, b"second").expect("next index");
    assert_eq!(log.last_index(), Some(101));
}

// A new segment starts exactly when the next record would pass segment_bytes, and each
// segment file is named after its first index.
#[test]
fn segments_roll_at_segment_bytes() {
    let temporary = TemporaryDirectory::new("roll");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    append_all(&mut log, 1..=10, 10);
    assert_eq!(log.segment_count(), 4);
    let names: Vec<String> = segment_files(temporary.path())
        .iter()
        .map(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .expect("utf-8")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [1, 4, 7, 10]
            .map(|first: u64| format!("{first:020}.seg"))
            .to_vec()
    );
    for path in segment_files(temporary.path()) {
        assert!(fs::metadata(&path).expect("metadata").len() <= THREE_RECORDS_BYTES);
    }
}

// A streaming open hands the records over one segment file at a time, oldest first: the
// pieces are the segments' records, and together they are what a whole open returns.
#[test]
fn open_with_each_hands_over_one_segment_at_a_time() {
    let temporary = TemporaryDirectory::new("each");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    let appended = append_all(&mut log, 1..=10, 10);
    log.sync().expect("sync");
    drop(log);
    let mut pieces: Vec<Vec<u64>> = Vec::new();
    let mut streamed = Vec::new();
    let log = SegmentedLog::open_with_each(
        OsFileSystem,
        temporary.path(),
        LogConfig {
            segment_bytes: THREE_RECORDS_BYTES,
        },
        &mut |records| {
            pieces.push(records.iter().map(|record| record.index).collect());
            streamed.extend(records);
        },
    )
    .expect("open");
    assert_eq!(
        pieces,
        vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]
    );
    assert_eq!(streamed, appended);
    assert_eq!(log.last_index(), Some(10));
    drop(log);
    let (_, whole) = open(temporary.path(), THREE_RECORDS_BYTES);
    assert_eq!(whole, streamed);
}

// One `append_many` lays records out exactly as one `append` per record does (the same
// segment files, byte for byte, and the same records after a reopen), and a bad index stops
// the batch there: what came before it is in the log, nothing after.
#[test]
fn append_many_matches_one_append_per_record() {
    let one_by_one = TemporaryDirectory::new("append-one-by-one");
    let batched = TemporaryDirectory::new("append-many");
    let (mut single, _) = open(one_by_one.path(), THREE_RECORDS_BYTES);
    let appended = append_all(&mut single, 1..=10, 10);
    let (mut log, _) = open(batched.path(), THREE_RECORDS_BYTES);
    log.append_many(
        appended
            .iter()
            .map(|record| (record.term, record.index, &record.body[..])),
    )
    .expect("append_many");
    assert_eq!(log.segment_count(), single.segment_count());
    let contents = |directory: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        segment_files(directory)
            .into_iter()
            .map(|path| {
                let bytes = fs::read(&path).expect("read");
                (PathBuf::from(path.file_name().expect("a name")), bytes)
            })
            .collect()
    };
    assert_eq!(contents(batched.path()), contents(one_by_one.path()));
    assert_eq!(log.sync().expect("sync"), Some(10));
    drop(log);
    let (mut log, recovered) = open(batched.path(), THREE_RECORDS_BYTES);
    assert_eq!(recovered, appended);
    let error = log
        .append_many([
            (1, 11, &b"eleven"[..]),
            (1, 13, &b"a gap"[..]),
            (1, 14, &b"after it"[..]),
        ])
        .expect_err("a gap");
    assert!(
        matches!(
            error,
            StorageError::OutOfOrder {
                expected_index: 12,
                got_index: 13,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(log.last_index(), Some(11));
}

// A record larger than segment_bytes gets a segment to itself, and the log moves on after it.
#[test]
fn oversized_record_gets_its_own_segment() {
    let temporary = TemporaryDirectory::new("oversized");
    let (mut log, _) = open(temporary.path(), 100);
    log.append(1, 1, &body(1, 10)).expect("small");
    log.append(1, 2, &body(2, 500)).expect("oversized");
    log.append(1, 3, &body(3, 10)).expect("small");
    log.sync().expect("sync");
    let sizes: Vec<u64> = segment_files(temporary.path())
        .iter()
        .map(|path| fs::metadata(path).expect("metadata").len())
        .collect();
    assert_eq!(sizes, vec![34, 524, 34]);
    drop(log);
    let (_, recovered) = open(temporary.path(), 100);
    assert_eq!(
        recovered
            .iter()
            .map(|record| record.body.len())
            .collect::<Vec<_>>(),
        vec![10, 500, 10]
    );
}

// Ranges are read back across segments, and the byte budget stops the read early but never
// before the first record.
#[test]
fn read_range_spans_segments_and_respects_the_budget() {
    let temporary = TemporaryDirectory::new("read");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    let appended = append_all(&mut log, 1..=10, 10);
    assert_eq!(
        log.read_range(2, 9, u64::MAX).expect("read"),
        appended[1..9]
    );
    assert_eq!(log.read_range(4, 10, 25).expect("read"), appended[3..5]);
    assert_eq!(log.read_range(5, 10, 0).expect("read"), appended[4..5]);
    for (from_index, to_index) in [(0, 3), (3, 11), (5, 4)] {
        assert!(matches!(
            log.read_range(from_index, to_index, u64::MAX),
            Err(StorageError::OutOfRange { .. })
        ));
    }
}

// Reads find records far from the start of a large segment through the checkpoints.
#[test]
fn read_range_in_a_large_segment_uses_checkpoints() {
    let temporary = TemporaryDirectory::new("checkpoints");
    let (mut log, _) = open(temporary.path(), LogConfig::default().segment_bytes);
    let appended = append_all(&mut log, 1..=2000, 200);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        log.read_range(1500, 1502, u64::MAX).expect("read"),
        appended[1499..1502]
    );
    assert_eq!(
        log.read_range(2000, 2000, u64::MAX).expect("read"),
        appended[1999..]
    );
}

// After truncate_after the removed records are gone, also after a reopen, and the log accepts
// the next index with a new term.
#[test]
fn truncate_after_then_reopen() {
    let temporary = TemporaryDirectory::new("truncate");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    let appended = append_all(&mut log, 1..=10, 10);
    log.sync().expect("sync");
    log.truncate_after(5).expect("truncate");
    assert_eq!(
        (log.last_index(), log.synced_index(), log.segment_count()),
        (Some(5), Some(5), 2)
    );
    log.truncate_after(7)
        .expect("truncating past the end does nothing");
    assert_eq!(log.last_index(), Some(5));
    log.append(2, 6, b"new six").expect("append after truncate");
    log.sync().expect("sync");
    drop(log);
    let (log, recovered) = open(temporary.path(), THREE_RECORDS_BYTES);
    assert_eq!(recovered[..5], appended[..5]);
    assert_eq!(
        recovered[5],
        StoredRecord {
            term: 2,
            index: 6,
            body: Bytes::from_static(b"new six")
        }
    );
    assert_eq!(log.last_index(), Some(6));
}

// Truncating below the first index empties the log, which then accepts any index.
#[test]
fn truncate_below_first_index_empties_the_log() {
    let temporary = TemporaryDirectory::new("truncate-all");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    append_all(&mut log, 10..=15, 10);
    log.truncate_after(3).expect("truncate");
    assert_eq!(
        (log.first_index(), log.last_index(), log.segment_count()),
        (None, None, 0)
    );
    log.append(1, 40, b"again").expect("any index");
    drop(log);
    let (log, recovered) = open(temporary.path(), THREE_RECORDS_BYTES);
    assert_eq!(recovered.len(), 1);
    assert_eq!(log.first_index(), Some(40));
}

// delete_segments_below deletes only segments entirely below the index, never the active one,
// and the log reopens from the new first index.
#[test]
fn delete_segments_below_keeps_partial_and_active_segments() {
    let temporary = TemporaryDirectory::new("delete");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    let appended = append_all(&mut log, 1..=11, 10);
    // Segments: 1-3, 4-6, 7-9, 10-11.
    assert_eq!(log.delete_segments_below(8).expect("delete"), 2);
    assert_eq!(log.first_index(), Some(7));
    assert_eq!(log.delete_segments_below(8).expect("delete again"), 0);
    assert_eq!(
        log.delete_segments_below(u64::MAX)
            .expect("delete all but active"),
        1
    );
    assert_eq!((log.first_index(), log.segment_count()), (Some(10), 1));
    log.sync().expect("sync");
    drop(log);
    let (mut log, recovered) = open(temporary.path(), THREE_RECORDS_BYTES);
    assert_eq!(recovered, appended[9..]);
    log.append(1, 12, b"next").expect("append");
}

// On the real file system the deleted segment files are removed by a background thread, in
// order; waiting for it finds them gone, and a destroy right after a delete reports nothing.
#[test]
fn deleted_segments_are_removed_in_the_background_and_a_destroy_can_follow_at_once() {
    let temporary = TemporaryDirectory::new("delete-background");
    let directory = temporary.path().join("queue-1");
    let (mut log, _) = open(&directory, THREE_RECORDS_BYTES);
    append_all(&mut log, 1..=11, 10);
    // The first indexes of the segment files on disk, oldest first.
    let segments_on_disk = |directory: &Path| -> Vec<u64> {
        crate::segment::list_segment_files(directory)
            .expect("list")
            .into_iter()
            .map(|(first_index, _)| first_index)
            .collect()
    };
    assert_eq!(segments_on_disk(&directory), [1, 4, 7, 10]);
    assert_eq!(log.delete_segments_below(8).expect("delete"), 2);
    OsFileSystem.wait_for_removals(&directory).expect("removed");
    assert_eq!(segments_on_disk(&directory), [7, 10]);
    assert_eq!(log.delete_segments_below(u64::MAX).expect("delete"), 1);
    log.destroy()
        .expect("destroy while a removal may be pending");
    OsFileSystem
        .wait_for_removals(&directory)
        .expect("a removal that found its directory gone is not a failure");
    assert!(!directory.exists());
}

// Destroy removes the log's directory and everything in it.
#[test]
fn destroy_removes_the_directory() {
    let temporary = TemporaryDirectory::new("destroy");
    let directory = temporary.path().join("queue-1");
    let (mut log, _) = open(&directory, THREE_RECORDS_BYTES);
    append_all(&mut log, 1..=7, 10);
    log.destroy().expect("destroy");
    assert!(!directory.exists());
    assert!(!temporary.path().join("queue-1.deleting").exists());
}

// A file that is not a segment inside a log directory stops the open.
#[test]
fn stray_file_in_log_directory_is_reported() {
    let temporary = TemporaryDirectory::new("stray-segment");
    fs::create_dir_all(temporary.path()).expect("create");
    fs::write(temporary.path().join("1.seg"), b"").expect("write");
    assert!(matches!(
        SegmentedLog::open(temporary.path(), LogConfig::default()),
        Err(StorageError::UnexpectedFile { .. })
    ));
}

// Once an fsync has failed, every later call is refused with Unusable until the log is
// reopened, and a reopen recovers what is on disk.
#[test]
fn failed_fsync_makes_the_log_unusable_until_reopened() {
    let temporary = TemporaryDirectory::new("unusable");
    let (mut log, _) = open(temporary.path(), THREE_RECORDS_BYTES);
    append_all(&mut log, 1..=2, 10);
    // What sync_active_segment records when fdatasync returns an error.
    log.failed_operation = Some("fsync a segment");
    let unusable = |result: Result<(), StorageError>| match result {
        Err(StorageError::Unusable {
            failed_operation, ..
        }) => {
            assert_eq!(failed_operation, "fsync a segment")
        }
        other => panic!("expected Unusable, got {other:?}"),
    };
    unusable(log.append(1, 3, b"x"));
    unusable(log.sync().map(drop));
    unusable(log.truncate_after(1));
    unusable(log.delete_segments_below(2).map(drop));
    unusable(log.read_range(1, 2, u64::MAX).map(drop));
    drop(log);
    let (log, recovered) = open(temporary.path(), THREE_RECORDS_BYTES);
    assert_eq!((recovered.len(), log.last_index()), (2, Some(2)));
}
