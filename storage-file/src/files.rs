//! Small file-system steps shared by the log and the data directory, each mapping its
//! `io::Error` to a [`StorageError::Io`] that names the path and the operation.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use crate::error::{io_error, StorageError};

/// Makes the entries of `directory` (files created, renamed or removed in it) durable.
pub(crate) fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    let handle = File::open(directory).map_err(io_error(directory, "open the directory"))?;
    handle
        .sync_all()
        .map_err(io_error(directory, "fsync the directory"))
}

/// Makes the entry of `path` in its parent directory durable, when it has a parent.
pub(crate) fn sync_parent_directory(path: &Path) -> Result<(), StorageError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_directory(parent),
        _ => sync_directory(Path::new(".")),
    }
}

/// Creates `directory` and any missing parents; returns whether it had to be created.
pub(crate) fn create_directory(directory: &Path) -> Result<bool, StorageError> {
    if directory.is_dir() {
        return Ok(false);
    }
    fs::create_dir_all(directory).map_err(io_error(directory, "create the directory"))?;
    Ok(true)
}

/// Reads the whole of `path`.
pub(crate) fn read_whole(path: &Path) -> Result<Vec<u8>, StorageError> {
    fs::read(path).map_err(io_error(path, "read"))
}

/// Opens an existing segment for appending at its end.
pub(crate) fn open_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_error(path, "open for appending"))
}

/// Creates a new, empty segment file for appending; fails if it exists already.
pub(crate) fn create_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(io_error(path, "create"))
}

/// Cuts `file` (at `path`) to `length_bytes` and makes the new length durable.
pub(crate) fn cut_and_sync(
    file: &File,
    path: &Path,
    length_bytes: u64,
) -> Result<(), StorageError> {
    file.set_len(length_bytes)
        .map_err(io_error(path, "truncate"))?;
    file.sync_all().map_err(io_error(path, "fsync"))
}

/// Removes the file at `path`.
pub(crate) fn remove_file(path: &Path) -> Result<(), StorageError> {
    fs::remove_file(path).map_err(io_error(path, "delete"))
}
