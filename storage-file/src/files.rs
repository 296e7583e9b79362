//! Small file-system steps shared by the log and the data directory, each going through a
//! [`FileSystem`] and mapping its `io::Error` to a [`StorageError::Io`] that names the path and
//! the operation.

use std::path::Path;

use crate::error::{io_error, StorageError};
use crate::file_system::{AppendFile, DirectoryEntry, FileSystem};

/// Makes the entries of `directory` (files created, renamed or removed in it) durable.
pub(crate) fn sync_directory<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<(), StorageError> {
    file_system
        .sync_directory(directory)
        .map_err(io_error(directory, "fsync the directory"))
}

/// Makes the entry of `path` in its parent directory durable, when it has a parent.
pub(crate) fn sync_parent_directory<F: FileSystem>(
    file_system: &F,
    path: &Path,
) -> Result<(), StorageError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_directory(file_system, parent),
        _ => sync_directory(file_system, Path::new(".")),
    }
}

/// Creates `directory` and any missing parents, and makes each created entry durable in its
/// parent, top down, so a crash can lose none of them. Returns whether anything was created.
pub(crate) fn create_directory_durably<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<bool, StorageError> {
    let missing: Vec<&Path> = directory
        .ancestors()
        .take_while(|ancestor| {
            !ancestor.as_os_str().is_empty() && !file_system.is_directory(ancestor)
        })
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    file_system
        .create_directory_all(directory)
        .map_err(io_error(directory, "create the directory"))?;
    for created in missing.iter().rev() {
        sync_parent_directory(file_system, created)?;
    }
    Ok(true)
}

/// Lists the entries of `directory`.
pub(crate) fn list_directory<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<Vec<DirectoryEntry>, StorageError> {
    file_system
        .list_directory(directory)
        .map_err(io_error(directory, "list the directory"))
}

/// Removes `directory` and everything in it.
pub(crate) fn remove_directory_all<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<(), StorageError> {
    file_system
        .remove_directory_all(directory)
        .map_err(io_error(directory, "remove"))
}

/// Reads the whole of `path`.
pub(crate) fn read_whole<F: FileSystem>(
    file_system: &F,
    path: &Path,
    buffer: &mut Vec<u8>,
) -> Result<(), StorageError> {
    file_system
        .read_into(path, buffer)
        .map_err(io_error(path, "read"))
}

/// Opens an existing segment for appending at its end.
pub(crate) fn open_for_append<F: FileSystem>(
    file_system: &F,
    path: &Path,
) -> Result<F::AppendFile, StorageError> {
    file_system
        .open_for_append(path)
        .map_err(io_error(path, "open for appending"))
}

/// Creates a new, empty segment file for appending; fails if it exists already.
pub(crate) fn create_for_append<F: FileSystem>(
    file_system: &F,
    path: &Path,
) -> Result<F::AppendFile, StorageError> {
    file_system
        .create_for_append(path)
        .map_err(io_error(path, "create"))
}

/// Cuts `file` (at `path`) to `length_bytes` and makes the new length durable.
pub(crate) fn cut_and_sync(
    file: &mut impl AppendFile,
    path: &Path,
    length_bytes: u64,
) -> Result<(), StorageError> {
    file.set_len(length_bytes)
        .map_err(io_error(path, "truncate"))?;
    file.sync_all().map_err(io_error(path, "fsync"))
}

/// Removes the file at `path`.
pub(crate) fn remove_file<F: FileSystem>(file_system: &F, path: &Path) -> Result<(), StorageError> {
    file_system
        .remove_file(path)
        .map_err(io_error(path, "delete"))
}

/// The name of the entry at `path`, when it is valid UTF-8.
pub(crate) fn entry_name(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_string)
}
