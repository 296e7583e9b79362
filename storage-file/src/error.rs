//! The one error type of this crate.
//!
//! Every variant names the file or directory it is about, so an operator reading the message
//! knows where to look without a backtrace. Only [`StorageError::Io`] and
//! [`StorageError::Locked`] can go away by retrying; the others describe the data or the call.

use std::io;
use std::path::{Path, PathBuf};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation, including a full disk (`ENOSPC`).
    #[error("could not {operation} {}: {}{source}", .path.display(), disk_full_hint(.source))]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// What was being done, as a verb phrase: "write a record to", "fsync".
        operation: &'static str,
        /// What the operating system reported.
        source: io::Error,
    },

    /// A record that is not at the tail of the newest segment failed its checks, so it cannot be
    /// a torn write from a crash and must not be skipped.
    #[error(
        "the record at byte offset {offset} of {} is corrupt ({reason}) and valid records \
         follow it, so this is not a torn write from a crash; the log cannot be served until \
         this range is repaired (in a cluster, from a replica)",
        .path.display()
    )]
    Corrupt {
        /// The segment file holding the bad record.
        path: PathBuf,
        /// Where the bad record starts, in bytes from the start of the file.
        offset: u64,
        /// Which check failed, and where the next valid record is when one was found.
        reason: String,
    },

    /// An append did not carry the index that follows the last record.
    #[error(
        "the log in {} expected a record with index {expected_index} but was given index \
         {got_index}",
        .path.display()
    )]
    OutOfOrder {
        /// The log's directory.
        path: PathBuf,
        /// `last_index() + 1`.
        expected_index: u64,
        /// What the caller passed.
        got_index: u64,
    },

    /// Another process (or another `DataDir` in this process) holds the data directory's lock.
    #[error(
        "the data directory lock {} is held by another process; two servers cannot share a \
         data directory",
        .path.display()
    )]
    Locked {
        /// The lock file, `<root>/LOCK`.
        path: PathBuf,
    },

    /// A record body is larger than the on-disk format can describe.
    #[error(
        "a record body of {body_bytes} bytes cannot be appended to the log in {}: the limit \
         is {} bytes",
        .path.display(),
        crate::record::MAX_BODY_BYTES
    )]
    BodyTooLarge {
        /// The log's directory.
        path: PathBuf,
        /// The size of the rejected body.
        body_bytes: usize,
    },

    /// A read asked for indexes the log does not hold.
    #[error(
        "the log in {} holds indexes {} but indexes {from_index}..={to_index} were requested",
        .path.display(),
        describe_range(*.first_index, *.last_index)
    )]
    OutOfRange {
        /// The log's directory.
        path: PathBuf,
        /// The first index requested.
        from_index: u64,
        /// The last index requested.
        to_index: u64,
        /// The log's first index at the time, `None` when it is empty.
        first_index: Option<u64>,
        /// The log's last index at the time, `None` when it is empty.
        last_index: Option<u64>,
    },

    /// An earlier write or fsync failed in a way that leaves the files' contents unknown (after a
    /// failed fsync the kernel may have dropped the dirty pages), so the log refuses more work.
    #[error(
        "the log in {} is unusable because an earlier attempt to {failed_operation} failed; \
         reopen it to recover from what is on disk",
        .path.display()
    )]
    Unusable {
        /// The log's directory.
        path: PathBuf,
        /// The operation that failed first.
        failed_operation: &'static str,
    },

    /// A file or directory this crate did not create sits where only its files belong.
    #[error(
        "{} does not belong in a Krest-MQ data directory; move it elsewhere and start again",
        .path.display()
    )]
    UnexpectedFile {
        /// The unexpected entry.
        path: PathBuf,
    },

    /// A log name is not 1 to 100 characters of `a-z`, `0-9` and `-`.
    #[error(
        "{} is not a valid log name: use 1 to 100 characters of a-z, 0-9 and -",
        .path.display()
    )]
    InvalidLogName {
        /// The directory the name would have had.
        path: PathBuf,
    },

    /// `DataDir::create_log` was asked for a log that already exists.
    #[error("the log {} already exists", .path.display())]
    LogExists {
        /// The existing log's directory.
        path: PathBuf,
    },
}

/// A closure that wraps an `io::Error` with the path and operation it happened on, for
/// `map_err`.
pub(crate) fn io_error(
    path: &Path,
    operation: &'static str,
) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io {
        path,
        operation,
        source,
    }
}

/// Says so plainly when an error means the disk or the quota is full.
fn disk_full_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "the disk is full (free space, then retry or restart): "
        }
        _ => "",
    }
}

/// "1..=9", or "nothing" for an empty log.
fn describe_range(first_index: Option<u64>, last_index: Option<u64>) -> String {
    match (first_index, last_index) {
        (Some(first), Some(last)) => format!("{first}..={last}"),
        _ => "nothing".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A full disk is reported in words, next to the path and the operation.
    #[test]
    fn full_disk_message_is_plain() {
        let error = StorageError::Io {
            path: PathBuf::from("/data/logs/meta/00000000000000000001.seg"),
            operation: "append a record to",
            source: io::Error::from(io::ErrorKind::StorageFull),
        };
        let message = error.to_string();
        assert!(message.starts_with(
            "could not append a record to /data/logs/meta/00000000000000000001.seg: the disk is full"
        ));
    }

    // The corruption message names the file and the offset and rules out a torn write.
    #[test]
    fn corrupt_message_names_file_and_offset() {
        let error = StorageError::Corrupt {
            path: PathBuf::from("/data/logs/q/00000000000000000007.seg"),
            offset: 96,
            reason: "checksum mismatch".to_string(),
        };
        let message = error.to_string();
        assert!(message.contains("byte offset 96 of /data/logs/q/00000000000000000007.seg"));
        assert!(message.contains("not a torn write"));
    }
}
