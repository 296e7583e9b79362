//! What the log remembers about each segment file, and how segment files are named and found.
//!
//! A segment is named after the index of its first record, `{first_index:020}.seg`, so the
//! names sort in index order. Invariants kept by [`Segment`]: the file holds exactly
//! `record_count` records with indexes `first_index..first_index + record_count`, packed from
//! byte 0 to byte `size_bytes`; `checkpoints` is sorted, starts at `(first_index, 0)` when the
//! segment is not empty, and lists record starts at least [`CHECKPOINT_INTERVAL_BYTES`] apart.

use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::file_system::{EntryKind, FileSystem};
use crate::files;

/// The file name extension of segment files.
const SEGMENT_EXTENSION: &str = ".seg";

/// Digits in a segment name: enough for any `u64`.
const SEGMENT_NAME_DIGITS: usize = 20;

/// How far apart (in bytes) the remembered record starts are. A lookup reads at most this much
/// (plus one record) from disk; memory is one checkpoint per this many bytes of log.
pub(crate) const CHECKPOINT_INTERVAL_BYTES: u64 = 64 * 1024;

/// A remembered record start: the record with `index` begins at byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) index: u64,
    pub(crate) offset: u64,
}

/// One segment file of a log.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) first_index: u64,
    pub(crate) record_count: u64,
    pub(crate) size_bytes: u64,
    pub(crate) checkpoints: Vec<Checkpoint>,
}

impl Segment {
    /// An empty segment at `path` whose first record will have `first_index`.
    pub(crate) fn empty(path: PathBuf, first_index: u64) -> Segment {
        Segment {
            path,
            first_index,
            record_count: 0,
            size_bytes: 0,
            checkpoints: Vec::new(),
        }
    }

    /// The index of the last record, `None` when the segment holds none.
    pub(crate) fn last_index(&self) -> Option<u64> {
        self.record_count
            .checked_sub(1)
            .map(|last_offset| self.first_index + last_offset)
    }

    /// The index the next record appended here must carry; `None` once the segment holds the
    /// record with index `u64::MAX`, the last a log can have.
    pub(crate) fn next_index(&self) -> Option<u64> {
        self.first_index.checked_add(self.record_count)
    }

    /// Whether the segment holds the record with `index`.
    pub(crate) fn contains(&self, index: u64) -> bool {
        index >= self.first_index && index - self.first_index < self.record_count
    }

    /// Accounts for one more record of `record_bytes` written at the end of the file.
    pub(crate) fn push_record(&mut self, record_bytes: u64) {
        let index = self
            .next_index()
            .expect("no record is accepted past the end of the index space");
        let offset = self.size_bytes;
        let due = match self.checkpoints.last() {
            None => true,
            Some(last) => offset >= last.offset + CHECKPOINT_INTERVAL_BYTES,
        };
        if due {
            self.checkpoints.push(Checkpoint { index, offset });
        }
        self.record_count += 1;
        self.size_bytes += record_bytes;
    }

    /// The checkpoint closest before (or at) the record with `index`, which must be held here.
    pub(crate) fn checkpoint_for(&self, index: u64) -> Checkpoint {
        assert!(
            self.contains(index),
            "index {index} is not in segment {}",
            self.path.display()
        );
        let after = self
            .checkpoints
            .partition_point(|checkpoint| checkpoint.index <= index);
        self.checkpoints[after - 1]
    }

    /// Forgets every record from `index` on, which starts at byte `offset`.
    pub(crate) fn forget_from(&mut self, index: u64, offset: u64) {
        assert!(index >= self.first_index && index - self.first_index <= self.record_count);
        assert!(offset <= self.size_bytes);
        self.record_count = index - self.first_index;
        self.size_bytes = offset;
        self.checkpoints
            .retain(|checkpoint| checkpoint.index < index);
    }
}

/// The path of the segment whose first record has `first_index`.
pub(crate) fn segment_path(directory: &Path, first_index: u64) -> PathBuf {
    directory.join(format!(
        "{first_index:0width$}{SEGMENT_EXTENSION}",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// The first index a segment file name stands for, or `None` if it is not a segment name.
fn parse_segment_name(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(SEGMENT_EXTENSION)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists the segment files of `directory` as `(first_index, path)`, sorted by index. Anything
/// else in the directory is an error: this crate never leaves other files there, so a stranger
/// means someone else is writing into the log.
pub(crate) fn list_segment_files_in<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut segments = Vec::new();
    for entry in files::list_directory(file_system, directory)? {
        let first_index = files::entry_name(&entry.path).and_then(|name| parse_segment_name(&name));
        match first_index {
            Some(first_index) if entry.kind == EntryKind::File => {
                segments.push((first_index, entry.path))
            }
            _ => return Err(StorageError::UnexpectedFile { path: entry.path }),
        }
    }
    segments.sort_unstable_by_key(|(first_index, _)| *first_index);
    Ok(segments)
}

/// [`list_segment_files_in`] on the operating system's file system (for the fuzz target and
/// tests).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn list_segment_files(directory: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    use crate::file_system::OsFileSystem;
    list_segment_files_in(&OsFileSystem, directory)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Segment names are twenty zero-padded digits, sort in index order and parse back.
    #[test]
    fn names_round_trip_and_sort() {
        let directory = Path::new("/log");
        let small = segment_path(directory, 7);
        let large = segment_path(directory, u64::MAX);
        assert_eq!(small, Path::new("/log/00000000000000000007.seg"));
        assert!(small.file_name() < large.file_name());
        for path in [small, large] {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .expect("utf-8");
            assert!(parse_segment_name(name).is_some());
        }
        assert_eq!(parse_segment_name("7.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000007.log"), None);
    }

    // Checkpoints are spaced by the interval and lookups land on the closest one before.
    #[test]
    fn checkpoints_are_spaced_and_found() {
        let mut segment = Segment::empty(segment_path(Path::new("/log"), 10), 10);
        let record_bytes = CHECKPOINT_INTERVAL_BYTES / 4;
        for _ in 0..9 {
            segment.push_record(record_bytes);
        }
        let starts: Vec<u64> = segment
            .checkpoints
            .iter()
            .map(|checkpoint| checkpoint.index)
            .collect();
        assert_eq!(starts, vec![10, 14, 18]);
        assert_eq!(
            segment.checkpoint_for(13),
            Checkpoint {
                index: 10,
                offset: 0
            }
        );
        assert_eq!(segment.checkpoint_for(14).offset, 4 * record_bytes);
        assert_eq!(segment.last_index(), Some(18));
        segment.forget_from(14, 4 * record_bytes);
        assert_eq!(segment.last_index(), Some(13));
        assert_eq!(segment.checkpoints.len(), 1);
    }
}
