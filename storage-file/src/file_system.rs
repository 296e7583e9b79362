//! The file-system operations this crate performs, as one small trait, so that the real segment
//! and recovery code runs unchanged over the operating system's files ([`OsFileSystem`]) or over
//! the simulator's in-memory, fault-injecting disk ([`crate::memory_disk::MemoryFileSystem`]).
//!
//! The trait holds only what the logs and the data directory use. Its durability contract is the
//! one of POSIX file systems, which the rest of the crate relies on and the memory disk enforces:
//!
//! - bytes written to a file are durable only once [`AppendFile::sync_data`] (or
//!   [`AppendFile::sync_all`]) on that file has returned `Ok`;
//! - a directory entry (a file or directory created, removed or renamed in a directory) is
//!   durable only once [`FileSystem::sync_directory`] on that directory has returned `Ok`;
//! - after a failed sync, nothing it should have covered may be taken as durable (the kernel
//!   may have dropped the pages), which is why a log refuses more work after one.
//!
//! Every method reports the operating system's `io::Error` as is; the crate's `files` module
//! adds the path and the operation.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// Anything else (a symbolic link, a socket, ...): never created by this crate.
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The listed directory joined with the entry's name.
    pub path: PathBuf,
    /// What the entry is.
    pub kind: EntryKind,
}

/// The file-system operations the logs and the data directory need.
///
/// A value is cheap to clone and every clone reaches the same files: the data directory hands a
/// clone to each log it opens.
pub trait FileSystem: Clone + Send + Sync + fmt::Debug + 'static {
    /// An open file that bytes are appended to (a segment being written).
    type AppendFile: AppendFile;
    /// An open file read sequentially from a seek position (a segment being read back).
    type ReadFile: io::Read + io::Seek + Send + fmt::Debug;
    /// Proof that this process holds an exclusive lock; the lock is released when it is dropped.
    type Lock: Send + Sync + fmt::Debug;

    /// Whether `path` exists and is a directory.
    fn is_directory(&self, path: &Path) -> bool;

    /// Creates the directory `path`, whose parent must exist; fails with
    /// `io::ErrorKind::AlreadyExists` when something is there already.
    fn create_directory(&self, path: &Path) -> io::Result<()>;

    /// Creates the directory `path` and any missing parents; succeeds if it exists already.
    fn create_directory_all(&self, path: &Path) -> io::Result<()>;

    /// Lists the entries of the directory `path`, in no particular order.
    fn list_directory(&self, path: &Path) -> io::Result<Vec<DirectoryEntry>>;

    /// Removes the directory `path` and everything in it.
    fn remove_directory_all(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to` (the logs rename only within one directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the entries of the directory `path` (created, removed, renamed) durable.
    fn sync_directory(&self, path: &Path) -> io::Result<()>;

    /// Reads the whole file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Opens the existing file at `path` for reading from its start.
    fn open_for_reading(&self, path: &Path) -> io::Result<Self::ReadFile>;

    /// Opens the existing file at `path` for appending at its end.
    fn open_for_append(&self, path: &Path) -> io::Result<Self::AppendFile>;

    /// Creates a new, empty file at `path` for appending; fails with
    /// `io::ErrorKind::AlreadyExists` when something is there already.
    fn create_for_append(&self, path: &Path) -> io::Result<Self::AppendFile>;

    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Opens (creating it if needed) the file at `path` and takes an exclusive lock on it
    /// without waiting. `Ok(None)` means someone else holds the lock.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Self::Lock>>;
}

/// An open file that bytes are appended to.
pub trait AppendFile: Send + fmt::Debug {
    /// Writes all of `bytes` at the end of the file. On error, a prefix of `bytes` may have
    /// been written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Cuts (or extends with zeros) the file to `length_bytes`.
    fn set_len(&mut self, length_bytes: u64) -> io::Result<()>;

    /// Makes the file's data (and its length) durable: `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Makes the file's data and all its metadata durable: `fsync`.
    fn sync_all(&mut self) -> io::Result<()>;
}

/// The operating system's file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OsFileSystem;

impl FileSystem for OsFileSystem {
    type AppendFile = File;
    type ReadFile = File;
    type Lock = File;

    fn is_directory(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn create_directory(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn create_directory_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_directory(&self, path: &Path) -> io::Result<Vec<DirectoryEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let kind = if file_type.is_file() {
                EntryKind::File
            } else if file_type.is_dir() {
                EntryKind::Directory
            } else {
                EntryKind::Other
            };
            entries.push(DirectoryEntry {
                path: entry.path(),
                kind,
            });
        }
        Ok(entries)
    }

    fn remove_directory_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_directory(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_for_reading(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn open_for_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().append(true).open(path)
    }

    fn create_for_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().append(true).create_new(true).open(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(source),
        }
    }
}

impl AppendFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn set_len(&mut self, length_bytes: u64) -> io::Result<()> {
        File::set_len(self, length_bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
}
