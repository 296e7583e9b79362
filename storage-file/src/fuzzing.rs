//! The fuzz target body for recovery, public so that the cargo-fuzz target in `fuzz/` and the
//! corpus replay test in `tests/fuzz_corpus.rs` run exactly the same checks.
//!
//! [`storage_recovery`] writes arbitrary bytes as segment files of one or two logs into a fresh
//! data directory and opens it the way the server does ([`StorageExecutor::open`]). Whatever the
//! bytes, opening must not panic and must end in one of two ways:
//!
//! - a clean refusal: [`StorageError::Corrupt`] naming a segment file that was written and an
//!   offset inside it, or the refusal of a log or file name that is not ours; opening again
//!   refuses the same way;
//! - a recovered log: every segment file now holds exactly the recovered records, each encoded
//!   with its checksum, as a prefix of what was written (only the newest segment of a log may
//!   have lost a torn tail); opening again recovers the same records and changes no byte
//!   (recovery is idempotent); and the log takes the next record and recovers it too.
//!
//! [`storage_recovery`]: crate::fuzzing::storage_recovery
//! [`StorageExecutor::open`]: crate::StorageExecutor::open
//! [`StorageError::Corrupt`]: crate::StorageError::Corrupt

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use krest_core::ids::{LogIndex, Term};
use krest_core::{LogId, LogRecord, Recovered, StorageDone, StorageRequest};

use crate::executor::{OpenError, StorageExecutor};
use crate::record::encode;
use crate::segment::{list_segment_files, segment_path};
use crate::StorageError;

/// Log directory names the first byte chooses from: two logs of the core, the largest queue id,
/// and a name that is a valid directory name but no log of the core (a queue id past `u64`).
const LOG_NAMES: [&str; 4] = [
    "meta",
    "queue-1",
    "queue-18446744073709551615",
    "queue-99999999999999999999",
];

/// Fuzz inputs are small; bodies of this size are enough to roll segments.
const APPENDED_BODY: &[u8] = b"appended after recovery";

/// Writes `data` as segment files and checks recovery (see the module documentation).
///
/// Layout of `data`: byte 0 holds flags (bits 0-1: the first log's name from a fixed list;
/// bit 2: a second log, `queue-2`, takes every other segment; bit 3: a half-removed log
/// directory `queue-3.deleting` is left behind; bits 4-7: the segment size for appends, 64 to
/// 1024 bytes). Then, until the data ends, one segment each: a byte for its first index (0 to
/// 239 as is, 240 to 255 counting down from `u64::MAX`), a u16 little-endian length, and that
/// many bytes of content (fewer at the end of the input).
pub fn storage_recovery(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let first_log = LOG_NAMES[usize::from(flags & 0b11)];
    let mut log_names = vec![first_log];
    if flags & 0b100 != 0 {
        log_names.push("queue-2");
    }
    let segment_bytes = 64 * (1 + u64::from(flags >> 4));
    let mut segments: Vec<(&str, u64, &[u8])> = Vec::new();
    while let [selector, low, high, after @ ..] = rest {
        let length = usize::from(u16::from_le_bytes([*low, *high])).min(after.len());
        let first_index = match *selector {
            selector @ 0..=239 => u64::from(selector),
            selector => u64::MAX - u64::from(255 - selector),
        };
        let log = log_names[segments.len() % log_names.len()];
        segments.push((log, first_index, &after[..length]));
        rest = &after[length..];
    }

    let root = ScratchDirectory::new();
    let logs_directory = root.path().join("logs");
    for name in &log_names {
        fs::create_dir_all(logs_directory.join(name)).expect("create a log directory");
    }
    for (log, first_index, content) in &segments {
        let path = segment_path(&logs_directory.join(log), *first_index);
        fs::write(path, content).expect("write a segment");
    }
    let tombstone = logs_directory.join("queue-3.deleting");
    if flags & 0b1000 != 0 {
        fs::create_dir_all(&tombstone).expect("create a tombstone");
        fs::write(segment_path(&tombstone, 1), b"half removed").expect("write into it");
    }
    let written = snapshot(&logs_directory);

    match StorageExecutor::open(root.path(), segment_bytes) {
        Ok((executor, recovered)) => {
            assert!(
                !tombstone.exists(),
                "a half-removed log is finished off at open"
            );
            check_files_hold_the_records(&logs_directory, &recovered, &written);
            drop(executor);
            let on_disk = snapshot(&logs_directory);
            let (executor, again) = open_again(root.path(), segment_bytes);
            assert_eq!(again.logs, recovered.logs, "recovery is idempotent");
            assert_eq!(
                snapshot(&logs_directory),
                on_disk,
                "a second recovery changes nothing"
            );
            append_and_recover(root.path(), segment_bytes, executor, recovered);
        }
        Err(error) => {
            check_refusal(&error, &written, &log_names);
            match StorageExecutor::open(root.path(), segment_bytes) {
                Ok(_) => panic!("the second open accepted what the first refused: {error}"),
                Err(again) => assert_eq!(again.to_string(), error.to_string()),
            }
        }
    }
}

/// A refusal is a corruption report inside a file that was written, or the refusal of a name.
fn check_refusal(error: &OpenError, written: &BTreeMap<PathBuf, Vec<u8>>, log_names: &[&str]) {
    assert!(!error.to_string().is_empty());
    match error {
        OpenError::Storage(StorageError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            let content = written
                .get(path)
                .unwrap_or_else(|| panic!("corruption reported in {path:?}, not a segment"));
            assert!(
                *offset <= content.len() as u64,
                "offset {offset} is inside {path:?}"
            );
            assert!(!reason.is_empty(), "a corruption report says what is wrong");
        }
        OpenError::UnknownLog(name) => {
            assert!(log_names.contains(&name.as_str()), "{name} was written");
            assert_eq!(
                LogId::from_name(name),
                None,
                "{name} names no log of the core"
            );
        }
        other => panic!("opening fuzz-written segments failed unexpectedly: {other}"),
    }
}

/// Every segment file holds exactly its recovered records, and what was written before them.
fn check_files_hold_the_records(
    logs_directory: &Path,
    recovered: &Recovered,
    written: &BTreeMap<PathBuf, Vec<u8>>,
) {
    for (log, records) in &recovered.logs {
        let directory = logs_directory.join(log.name());
        let files = list_segment_files(&directory).expect("the log's files are listed");
        let mut remaining = records.as_slice();
        for (position, (first_index, path)) in files.iter().enumerate() {
            let content = fs::read(path).expect("read a recovered segment");
            let original = written.get(path).expect("recovery creates no segment");
            assert!(
                original.starts_with(&content),
                "{path:?} keeps a prefix of what was written"
            );
            let is_newest = position + 1 == files.len();
            if !is_newest {
                assert_eq!(
                    &content, original,
                    "only the newest segment may lose a torn tail"
                );
            }
            let mut expected = Vec::new();
            while let Some(record) = remaining.first() {
                if expected.len() == content.len() {
                    break;
                }
                if expected.is_empty() {
                    assert_eq!(record.index.0, *first_index, "{path:?} starts at its name");
                }
                encode(&mut expected, record.term.0, record.index.0, &record.body);
                remaining = &remaining[1..];
            }
            assert_eq!(
                content, expected,
                "{path:?} holds exactly its recovered records"
            );
        }
        assert!(
            remaining.is_empty(),
            "every recovered record of {log:?} is in a file"
        );
        for pair in records.windows(2) {
            assert_eq!(
                pair[0].index.next(),
                pair[1].index,
                "indexes are consecutive"
            );
        }
    }
}

fn open_again(root: &Path, segment_bytes: u64) -> (StorageExecutor, Recovered) {
    match StorageExecutor::open(root, segment_bytes) {
        Ok(opened) => opened,
        Err(error) => panic!("a recovered data directory does not open again: {error}"),
    }
}

/// Appends one record to every log, syncs, and checks a reopen recovers it after the others.
fn append_and_recover(
    root: &Path,
    segment_bytes: u64,
    mut executor: StorageExecutor,
    recovered: Recovered,
) {
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (log, records) in &recovered.logs {
        let mut records = records.clone();
        let index = match records.last() {
            Some(last) if last.index.0 == u64::MAX => {
                expected.push((*log, records, None));
                continue; // the index space is used up; appending is a programmer error
            }
            Some(last) => last.index.next(),
            None => LogIndex(1),
        };
        let record = LogRecord {
            term: Term(7),
            index,
            body: Bytes::from_static(APPENDED_BODY),
        };
        requests.push(StorageRequest::Append {
            log: *log,
            records: vec![record.clone()],
        });
        requests.push(StorageRequest::Sync { log: *log });
        records.push(record);
        expected.push((*log, records, Some(index)));
    }
    let done = executor.execute_batch(requests);
    for (log, _, appended) in &expected {
        if let Some(through) = appended {
            let synced = StorageDone::Synced {
                log: *log,
                through: *through,
            };
            assert!(done.contains(&synced), "{log:?} syncs its append: {done:?}");
        }
    }
    drop(executor);
    let (_, again) = open_again(root, segment_bytes);
    let expected: Vec<(LogId, Vec<LogRecord>)> = expected
        .into_iter()
        .map(|(log, records, _)| (log, records))
        .collect();
    assert_eq!(
        again.logs, expected,
        "the appended records are recovered after the others"
    );
}

/// Every file under `directory`, with its content.
fn snapshot(directory: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).expect("list a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let content = fs::read(&path).expect("read a file");
                files.insert(path, content);
            }
        }
    }
    files
}

/// Distinguishes the directories of one process's runs.
static NEXT_SCRATCH_NUMBER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system's temporary directory (`TMPDIR`), removed when dropped.
struct ScratchDirectory {
    path: PathBuf,
}

impl ScratchDirectory {
    fn new() -> ScratchDirectory {
        let number = NEXT_SCRATCH_NUMBER.fetch_add(1, Ordering::Relaxed);
        let name = format!("krest-fuzz-recovery-{}-{number}", std::process::id());
        let path = std::env::temp_dir().join(name);
        // A crash of an earlier process with the same id may have left it behind.
        let _ = fs::remove_dir_all(&path);
        ScratchDirectory { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDirectory {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
