//! One process's view of the memory disk: the [`FileSystem`] the logs run on in the simulator,
//! and the open files and locks it hands out.
//!
//! Every call first checks that no crash happened since the view was taken (a dead process
//! cannot touch the disk), then makes its checks, draws its faults, and only then changes
//! anything, so a failed call leaves the disk as it was (except a full-disk append, which writes
//! what fits, as `write(2)` would).

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::tree::InodeId;
use super::{lock_state, DiskState};
use crate::file_system::{AppendFile, DirectoryEntry, FileSystem};

/// A process's view of a [`super::MemoryDisk`]; clones are the same view.
#[derive(Clone)]
pub struct MemoryFileSystem {
    disk: Arc<Mutex<DiskState>>,
    /// The disk's epoch when the view was taken; the view dies when the disk's moves on.
    epoch: u64,
}

/// A file of the memory disk open for appending.
#[derive(Debug)]
pub struct MemoryAppendFile {
    file_system: MemoryFileSystem,
    inode: InodeId,
}

/// A file of the memory disk open for reading.
#[derive(Debug)]
pub struct MemoryReadFile {
    file_system: MemoryFileSystem,
    inode: InodeId,
    position: u64,
}

/// A lock held on a file of the memory disk, released when dropped or by a crash.
#[derive(Debug)]
pub struct MemoryLock {
    file_system: MemoryFileSystem,
    inode: InodeId,
    token: u64,
}

impl MemoryFileSystem {
    pub(super) fn new(disk: Arc<Mutex<DiskState>>, epoch: u64) -> MemoryFileSystem {
        MemoryFileSystem { disk, epoch }
    }

    /// The disk's state, unless the process owning this view has crashed.
    fn state(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let state = lock_state(&self.disk);
        if state.epoch != self.epoch {
            return Err(io::Error::other(
                "the process using this memory file system crashed; take a new view of the disk",
            ));
        }
        Ok(state)
    }

    /// The inode of the existing file at `path`.
    fn existing_file(&self, path: &Path) -> io::Result<InodeId> {
        let state = self.state()?;
        let inode = state.tree.lookup(path)?;
        state.tree.file(inode)?;
        Ok(inode)
    }
}

impl fmt::Debug for MemoryFileSystem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MemoryFileSystem")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl FileSystem for MemoryFileSystem {
    type AppendFile = MemoryAppendFile;
    type ReadFile = MemoryReadFile;
    type Lock = MemoryLock;

    fn is_directory(&self, path: &Path) -> bool {
        let Ok(state) = self.state() else {
            return false;
        };
        let inode = state.tree.lookup(path);
        inode.is_ok_and(|inode| state.tree.is_directory(inode))
    }

    fn create_directory(&self, path: &Path) -> io::Result<()> {
        self.state()?.tree.create_directory(path).map(drop)
    }

    fn create_directory_all(&self, path: &Path) -> io::Result<()> {
        self.state()?.tree.create_directory_all(path)
    }

    fn list_directory(&self, path: &Path) -> io::Result<Vec<DirectoryEntry>> {
        self.state()?.tree.list(path)
    }

    fn remove_directory_all(&self, path: &Path) -> io::Result<()> {
        self.state()?.tree.remove_directory_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state()?.tree.rename(from, to)
    }

    fn sync_directory(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state()?;
        let inode = state.tree.lookup(path)?;
        if !state.tree.is_directory(inode) {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        state.faults.on_sync()?;
        state.tree.sync_directory(inode);
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.state()?;
        let inode = state.tree.lookup(path)?;
        state.tree.file(inode)?;
        state.faults.on_read()?;
        Ok(state.tree.file(inode)?.current().to_vec())
    }

    fn open_for_reading(&self, path: &Path) -> io::Result<MemoryReadFile> {
        Ok(MemoryReadFile {
            inode: self.existing_file(path)?,
            file_system: self.clone(),
            position: 0,
        })
    }

    fn open_for_append(&self, path: &Path) -> io::Result<MemoryAppendFile> {
        Ok(MemoryAppendFile {
            inode: self.existing_file(path)?,
            file_system: self.clone(),
        })
    }

    fn create_for_append(&self, path: &Path) -> io::Result<MemoryAppendFile> {
        Ok(MemoryAppendFile {
            inode: self.state()?.tree.create_file(path)?,
            file_system: self.clone(),
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state()?.tree.remove_file(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<MemoryLock>> {
        let mut state = self.state()?;
        let inode = match state.tree.lookup(path) {
            Ok(inode) => inode,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                state.tree.create_file(path)?
            }
            Err(error) => return Err(error),
        };
        state.tree.file(inode)?;
        if state.locks.contains_key(&inode) {
            return Ok(None);
        }
        let token = state.next_lock_token;
        state.next_lock_token += 1;
        state.locks.insert(inode, token);
        Ok(Some(MemoryLock {
            file_system: self.clone(),
            inode,
            token,
        }))
    }
}

impl AppendFile for MemoryAppendFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.file_system.state()?;
        let state = &mut *state;
        state.faults.on_write()?;
        let room_bytes = state.room_bytes();
        let file = state.tree.file_mut(self.inode)?;
        let end_bytes = (file.current().len() + bytes.len()) as u64;
        let growth_bytes = end_bytes.saturating_sub(file.footprint_bytes());
        match room_bytes {
            Some(room_bytes) if growth_bytes > room_bytes => {
                let fitting_bytes = bytes.len() - (growth_bytes - room_bytes) as usize;
                file.append(&bytes[..fitting_bytes]);
                Err(state.faults.disk_full())
            }
            _ => {
                file.append(bytes);
                Ok(())
            }
        }
    }

    fn set_len(&mut self, length_bytes: u64) -> io::Result<()> {
        let mut state = self.file_system.state()?;
        let state = &mut *state;
        state.faults.on_write()?;
        let room_bytes = state.room_bytes();
        let file = state.tree.file_mut(self.inode)?;
        let growth_bytes = length_bytes.saturating_sub(file.footprint_bytes());
        if room_bytes.is_some_and(|room_bytes| growth_bytes > room_bytes) {
            return Err(state.faults.disk_full());
        }
        let length_bytes =
            usize::try_from(length_bytes).map_err(|_| io::ErrorKind::InvalidInput)?;
        file.set_len(length_bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.file_system.state()?;
        state.tree.file(self.inode)?;
        state.faults.on_sync()?;
        state.tree.file_mut(self.inode)?.sync();
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Read for MemoryReadFile {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let mut state = self.file_system.state()?;
        state.tree.file(self.inode)?;
        state.faults.on_read()?;
        let current = state.tree.file(self.inode)?.current();
        let start = usize::try_from(self.position)
            .map_or(current.len(), |position| position.min(current.len()));
        let count = buffer.len().min(current.len() - start);
        buffer[..count].copy_from_slice(&current[start..start + count]);
        self.position += count as u64;
        Ok(count)
    }
}

impl Seek for MemoryReadFile {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match position {
            SeekFrom::Start(offset) => (0, i128::from(offset)),
            SeekFrom::End(delta) => {
                let state = self.file_system.state()?;
                let length = state.tree.file(self.inode)?.current().len();
                (length as i128, i128::from(delta))
            }
            SeekFrom::Current(delta) => (i128::from(self.position), i128::from(delta)),
        };
        let target = u64::try_from(base + delta).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.position = target;
        Ok(target)
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        let mut state = lock_state(&self.file_system.disk);
        if state.locks.get(&self.inode) == Some(&self.token) {
            state.locks.remove(&self.inode);
        }
    }
}
