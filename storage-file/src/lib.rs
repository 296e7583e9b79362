//! krest-storage-file: Krest-MQ's logs on disk. Segmented append-only logs with CRC-32C records,
//! group commit, and crash recovery that tells a torn write from corruption.
//!
//! This crate knows nothing of queues or Raft: it stores `(term, index, body)` records with
//! consecutive indexes. [`StorageExecutor`] maps the core's storage requests onto
//! [`SegmentedLog`] and [`DataDir`]; `krest-host` runs it on a [`StorageWorker`] thread.
//!
//! # Using it
//!
//! ```no_run
//! use krest_storage_file::{DataDir, LogConfig};
//!
//! # fn main() -> Result<(), krest_storage_file::StorageError> {
//! let (mut data_dir, recovered) = DataDir::open("/var/lib/krest".as_ref(), LogConfig::default())?;
//! for (name, _log, records) in &recovered {
//!     println!("{name}: {} records", records.len());
//! }
//! let mut log = data_dir.create_log("queue-17")?;
//! log.append(1, 1, b"first")?; // into the page cache
//! log.append(1, 2, b"second")?;
//! let durable = log.sync()?; // one fdatasync covers both appends
//! assert_eq!(durable, Some(2));
//! # Ok(())
//! # }
//! ```
//!
//! # On-disk format
//!
//! A data directory holds `LOCK` (an exclusive `flock`-style lock, see [`DataDir`]) and one
//! directory per log under `logs/`. A log directory holds only segment files, named after the
//! index of their first record as twenty zero-padded digits: `00000000000000000001.seg`.
//! Segments are consecutive: each starts at the index after the previous one's last record.
//!
//! A segment file is a sequence of records with no file header and no padding. Each record is:
//!
//! ```text
//! offset  size  field
//!      0     4  body_len  u32 little-endian: bytes of body
//!      4     4  crc32c    u32 little-endian: CRC-32C (Castagnoli) of bytes 0..4, 8..24 and the body
//!      8     8  term      u64 little-endian
//!     16     8  index     u64 little-endian: one more than the previous record's
//!     24     …  body      body_len bytes
//! ```
//!
//! A new segment is started when the next record would push the active one past
//! [`LogConfig::segment_bytes`]; a record larger than that gets a segment to itself.
//!
//! # Durability
//!
//! [`SegmentedLog::append`] writes each record with one `write_all` to the open active segment
//! and does not sync. [`SegmentedLog::sync`] issues one `fdatasync` for everything appended
//! before it (group commit), plus a directory `fsync` when segment files were deleted. When the
//! log moves to a new segment, it first fdatasyncs the old one and fsyncs the directory after
//! creating the new file, so every segment but the newest is always whole on disk.
//! [`SegmentedLog::truncate_after`] is durable when it returns.
//!
//! # Recovery
//!
//! [`SegmentedLog::open`] reads every segment and checks each record's length, checksum and
//! index:
//!
//! - indexes must be consecutive across all segments, and each segment's first record must carry
//!   the index in its name; a gap or a step backwards is corruption;
//! - a bad record at the tail of the newest segment, with no valid record anywhere after it, is
//!   a torn write (a zero-filled tail included): the file is cut at that offset, the cut is
//!   fsynced, and the log continues from the last good record;
//! - a bad record followed by a valid one (a complete record with a matching checksum and an
//!   index the log could have written there), or any bad record in an older segment, is
//!   corruption: [`StorageError::Corrupt`] names the file and the byte offset. Nothing is ever
//!   skipped silently;
//! - an empty newest segment (created just before a crash) is fine.
//!
//! The search for a valid record after a bad one visits each remaining byte offset once and
//! computes a checksum only where the header is plausible.
//!
//! # File systems
//!
//! Every file operation goes through the [`FileSystem`] trait. [`OsFileSystem`] (`std::fs`) is
//! the default everywhere: [`DataDir::open`], [`SegmentedLog::open`] and
//! [`StorageExecutor::open`] use it. The `open_with` constructors take any file system; the
//! deterministic simulator passes a [`MemoryFileSystem`], one process's view of a
//! [`MemoryDisk`] that it crashes and injects faults into (see [`memory_disk`]).

mod data_dir;
mod error;
mod executor;
pub mod file_system;
mod files;
/// Fuzz target body (run by `fuzz/` and by the corpus replay test; feature `testing`).
#[cfg(feature = "testing")]
pub mod fuzzing;
#[cfg(any(test, feature = "testing"))]
pub mod memory_disk;
mod raft_state;
mod reader;
mod record;
mod recovery;
mod segment;
mod segmented_log;
#[cfg(test)]
mod test_support;
pub mod worker;

pub use data_dir::{is_valid_log_name, DataDir, RecoveredLog};
pub use error::StorageError;
pub use executor::{OpenError, StorageExecutor};
pub use file_system::{FileSystem, OsFileSystem};
#[cfg(any(test, feature = "testing"))]
pub use memory_disk::{MemoryDisk, MemoryFileSystem};
pub use record::{StoredRecord, MAX_BODY_BYTES};
pub use segmented_log::{LogConfig, SegmentedLog};
pub use worker::{BatchExecutor, Completions, StorageWorker};

/// The size of a record header in bytes; a record takes this plus its body on disk.
pub const RECORD_HEADER_BYTES: usize = record::HEADER_BYTES;

// The runtime moves logs to a dedicated I/O thread, so they must be `Send`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<SegmentedLog>();
    assert_send::<DataDir>();
    assert_send::<StorageExecutor>();
    assert_send::<StorageError>();
};

#[cfg(any(test, feature = "testing"))]
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<SegmentedLog<MemoryFileSystem>>();
    assert_send::<DataDir<MemoryFileSystem>>();
    assert_send::<StorageExecutor<MemoryFileSystem>>();
};
