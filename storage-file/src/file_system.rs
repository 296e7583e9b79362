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

    /// Reads the whole file at `path` into `buffer`, replacing what it held; a buffer that
    /// is large enough is reused, not reallocated. By default through [`FileSystem::read`].
    fn read_into(&self, path: &Path, buffer: &mut Vec<u8>) -> io::Result<()> {
        *buffer = self.read(path)?;
        Ok(())
    }

    /// A hint that the file at `path` will be read whole soon: the file system may start
    /// reading it in the background. It changes nothing and reports nothing (a failure shows
    /// when the file is read). By default it does nothing.
    fn will_read(&self, path: &Path) {
        let _ = path;
    }

    /// Opens the existing file at `path` for reading from its start.
    fn open_for_reading(&self, path: &Path) -> io::Result<Self::ReadFile>;

    /// Opens the existing file at `path` for appending at its end.
    fn open_for_append(&self, path: &Path) -> io::Result<Self::AppendFile>;

    /// Creates a new, empty file at `path` for appending; fails with
    /// `io::ErrorKind::AlreadyExists` when something is there already.
    fn create_for_append(&self, path: &Path) -> io::Result<Self::AppendFile>;

    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes `files` (entries of `directory`) in their order, each removal made durable
    /// (the directory synced) before the next, so that a crash never keeps the removal of a
    /// later file without that of an earlier one. This default does it before returning.
    /// [`OsFileSystem`] hands the work to a background thread instead and reports a failure
    /// at its next call (or at [`FileSystem::wait_for_removals`]); after a failure it removes
    /// nothing more of that list. Removals that have not happened yet when the process ends
    /// are simply not done, as after a crash.
    fn remove_files_in_order(&self, directory: &Path, files: Vec<PathBuf>) -> io::Result<()> {
        for file in files {
            self.remove_file(&file)?;
            self.sync_directory(directory)?;
        }
        Ok(())
    }

    /// Waits until every removal handed over by [`FileSystem::remove_files_in_order`] for
    /// files of `directory` is done, and reports the first failure not yet reported. A log
    /// waits before it opens or destroys its directory, so that no earlier removal can reach
    /// files made after it; removals in other directories do not hold it up.
    fn wait_for_removals(&self, directory: &Path) -> io::Result<()> {
        let _ = directory;
        Ok(())
    }

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

    fn read_into(&self, path: &Path, buffer: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Read as _;
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        buffer.clear();
        buffer.reserve(usize::try_from(length).unwrap_or(usize::MAX));
        file.read_to_end(buffer)?;
        Ok(())
    }

    /// Reads the file on a short-lived thread of its own, into a scratch buffer, so that the
    /// recovery reading it next finds it in the page cache: the disk reads one segment while
    /// the node replays the previous one.
    fn will_read(&self, path: &Path) {
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("krest-read-ahead".into())
            .spawn(move || {
                use std::io::Read as _;
                let Ok(mut file) = fs::File::open(&path) else {
                    return;
                };
                let mut scratch = vec![0u8; 1 << 20];
                while matches!(file.read(&mut scratch), Ok(read) if read > 0) {}
            });
        // Without a thread there is no read-ahead, and nothing else changes.
        drop(spawned);
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

    /// Unlinking a 64 MiB segment takes 20 ms here (the kernel drops its cached pages and frees
    /// its extents); on the storage thread it held every fsync, and with them every confirm,
    /// for that long. A background thread does it, and frees the data in small steps (see
    /// [`OsFileSystem::remove_in_order_now`]).
    fn remove_files_in_order(&self, directory: &Path, files: Vec<PathBuf>) -> io::Result<()> {
        remover::submit(directory.to_path_buf(), files)
    }

    fn wait_for_removals(&self, directory: &Path) -> io::Result<()> {
        remover::wait(directory)
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

/// The background thread that removes files for [`OsFileSystem`]: one for the process,
/// started on first use, doing the removals in the order they were handed over.
mod remover {
    use std::collections::VecDeque;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

    use super::OsFileSystem;

    struct Job {
        directory: PathBuf,
        files: Vec<PathBuf>,
    }

    #[derive(Default)]
    struct State {
        jobs: VecDeque<Job>,
        /// The directory of the job being done.
        busy: Option<PathBuf>,
        started: bool,
        /// The first failure not yet reported.
        failure: Option<io::Error>,
    }

    #[derive(Default)]
    struct Remover {
        state: Mutex<State>,
        changed: Condvar,
    }

    fn shared() -> &'static Remover {
        static REMOVER: OnceLock<Remover> = OnceLock::new();
        REMOVER.get_or_init(Remover::default)
    }

    impl Remover {
        // A panic while holding the lock leaves the state consistent: take it anyway.
        fn lock(&self) -> MutexGuard<'_, State> {
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Waits, holding the lock again, until `waiting` is false.
        fn wait_while<'a>(
            &self,
            state: MutexGuard<'a, State>,
            waiting: impl FnMut(&mut State) -> bool,
        ) -> MutexGuard<'a, State> {
            self.changed
                .wait_while(state, waiting)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    pub(super) fn submit(directory: PathBuf, files: Vec<PathBuf>) -> io::Result<()> {
        let remover = shared();
        let mut state = remover.lock();
        if let Some(failure) = state.failure.take() {
            return Err(failure);
        }
        if !state.started {
            let spawned = std::thread::Builder::new()
                .name("krest-remover".into())
                .spawn(|| run(shared()));
            if spawned.is_err() {
                // No thread: do it here, as the trait's default does.
                drop(state);
                return OsFileSystem.remove_in_order_now(&directory, files);
            }
            state.started = true;
        }
        state.jobs.push_back(Job { directory, files });
        remover.changed.notify_all();
        Ok(())
    }

    pub(super) fn wait(directory: &Path) -> io::Result<()> {
        let remover = shared();
        let mut state = remover.wait_while(remover.lock(), |state| {
            state.busy.as_deref() == Some(directory)
                || state.jobs.iter().any(|job| job.directory == directory)
        });
        state.failure.take().map_or(Ok(()), Err)
    }

    fn run(remover: &Remover) {
        loop {
            let job = {
                let mut state = remover.wait_while(remover.lock(), |state| state.jobs.is_empty());
                let job = state.jobs.pop_front().expect("waited for a job");
                state.busy = Some(job.directory.clone());
                job
            };
            let result = OsFileSystem.remove_in_order_now(&job.directory, job.files);
            let mut state = remover.lock();
            state.busy = None;
            if let Err(error) = result {
                state.failure.get_or_insert(error);
            }
            remover.changed.notify_all();
        }
    }
}

impl OsFileSystem {
    /// The removals of [`FileSystem::remove_files_in_order`], done now. A file or directory
    /// already gone ends the job without a failure: the log's directory was destroyed
    /// meanwhile, and leaving later files of the list in place is always safe.
    ///
    /// Each file is opened before it is unlinked, so the unlink only drops its name (cheap);
    /// its data is then freed by [`shrink_away`], a slice at a time, while nothing can see it
    /// any more (after a crash the file system frees such an orphan itself).
    fn remove_in_order_now(&self, directory: &Path, files: Vec<PathBuf>) -> io::Result<()> {
        let gone = |error: &io::Error| error.kind() == io::ErrorKind::NotFound;
        for file in files {
            let held = OpenOptions::new().write(true).open(&file);
            match fs::remove_file(&file).and_then(|()| self.sync_directory(directory)) {
                Ok(()) => {}
                Err(error) if gone(&error) => return Ok(()),
                Err(error) => return Err(error),
            }
            if let Ok(held) = held {
                shrink_away(held);
            }
        }
        Ok(())
    }
}

/// How much of an unlinked file one step frees.
const SHRINK_STEP_BYTES: u64 = 1 << 20;

/// Frees an unlinked file's data from its end, [`SHRINK_STEP_BYTES`] at a time. Freeing 64 MiB
/// at once (an unlink or a truncate to zero) holds one ext4 journal handle for about 20 ms
/// here, and every fdatasync of the logs waits for that handle: 9-15 ms stalls of every
/// confirm, measured with strace. A step holds it a fraction of a millisecond, and a pause
/// between steps lets the storage thread's fsyncs through. A failed step leaves the rest to
/// the close, which frees it all.
fn shrink_away(file: File) {
    let Ok(metadata) = file.metadata() else {
        return;
    };
    let mut length = metadata.len();
    while length > 0 {
        length = length.saturating_sub(SHRINK_STEP_BYTES);
        if file.set_len(length).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TemporaryDirectory;

    #[test]
    fn read_into_replaces_the_buffer_and_reuses_its_memory() {
        let temporary = TemporaryDirectory::new("read-into");
        fs::create_dir_all(temporary.path()).expect("create");
        let path = temporary.path().join("file");
        fs::write(&path, b"segment bytes").expect("write");
        let mut buffer = Vec::with_capacity(4096);
        buffer.extend_from_slice(b"what was there");
        let allocation = buffer.as_ptr();
        OsFileSystem.read_into(&path, &mut buffer).expect("read");
        assert_eq!(buffer, b"segment bytes");
        assert_eq!(
            buffer.as_ptr(),
            allocation,
            "a large enough buffer is reused"
        );
        // The read-ahead hint changes nothing a read sees, and a missing file is no error.
        OsFileSystem.will_read(&path);
        OsFileSystem.will_read(&temporary.path().join("missing"));
        let mut again = Vec::new();
        OsFileSystem
            .read_into(&path, &mut again)
            .expect("read again");
        assert_eq!(again, b"segment bytes");
    }
}
