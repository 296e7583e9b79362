//! A data directory: many named logs under one root, guarded by one lock.
//!
//! Layout:
//!
//! ```text
//! <root>/LOCK                      exclusive lock, held while the DataDir or any of its logs lives
//! <root>/logs/<name>/              one SegmentedLog per name ([a-z0-9-], 1 to 100 characters)
//! <root>/logs/<name>.deleting/     a log whose removal a crash interrupted; removed at open
//! <root>/raft/<name>               the term and vote of a log that is a Raft group's
//!                                  (see `raft_state`)
//! ```
//!
//! Invariants: while a [`DataDir`] value (or any log it handed out) is alive, this process holds
//! the lock on `<root>/LOCK`, so a second server on the same root fails with
//! [`StorageError::Locked`] instead of interleaving writes. Every directory entry the data
//! directory creates is fsynced in its parent before it is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use krest_core::RaftState;

use crate::error::{io_error, StorageError};
use crate::file_system::{EntryKind, FileSystem, OsFileSystem};
use crate::files;
use crate::record::StoredRecord;
use crate::segmented_log::{LogConfig, SegmentedLog};

/// The name of the lock file under the root.
const LOCK_FILE_NAME: &str = "LOCK";

/// The sub-directory of the root holding one directory per log.
const LOGS_DIRECTORY_NAME: &str = "logs";

/// The suffix a log directory gets while it is being removed.
pub(crate) const TOMBSTONE_SUFFIX: &str = ".deleting";

/// The longest log name accepted.
const LOG_NAME_BYTES_MAX: usize = 100;

/// One log found by [`DataDir::open`]: its name, the log, and its recovered records.
pub type RecoveredLog<F = OsFileSystem> = (String, SegmentedLog<F>, Vec<StoredRecord>);

/// One log opened by [`DataDir::open_with_each`]: its name and the log (its records went to
/// the callback).
pub type OpenedLog<F = OsFileSystem> = (String, SegmentedLog<F>);

/// A data directory holding many named logs, locked against a second server, on the file
/// system `F` (the operating system's unless said otherwise).
#[derive(Debug)]
pub struct DataDir<F: FileSystem = OsFileSystem> {
    file_system: F,
    root: PathBuf,
    logs_directory: PathBuf,
    raft_directory: PathBuf,
    config: LogConfig,
    lock: Arc<F::Lock>,
}

impl DataDir {
    /// [`DataDir::open_with`] on the operating system's file system.
    pub fn open(
        root: &Path,
        config: LogConfig,
    ) -> Result<(DataDir, Vec<RecoveredLog>), StorageError> {
        DataDir::open_with(OsFileSystem, root, config)
    }
}

impl<F: FileSystem> DataDir<F> {
    /// Creates `root` and `root/logs` if needed, takes the lock on `root/LOCK`, finishes any
    /// interrupted log removal, and recovers every log, returned sorted by name.
    ///
    /// Fails with [`StorageError::Locked`] when another process (or another `DataDir` value in
    /// this one) holds the lock, and with [`StorageError::UnexpectedFile`] when `root/logs`
    /// holds anything but log directories.
    pub fn open_with(
        file_system: F,
        root: &Path,
        config: LogConfig,
    ) -> Result<(DataDir<F>, Vec<RecoveredLog<F>>), StorageError> {
        let mut records: Vec<(String, Vec<StoredRecord>)> = Vec::new();
        let (data_dir, logs) = DataDir::open_with_each(
            file_system,
            root,
            config,
            &mut |name, segment| match records.last_mut() {
                Some((last, records)) if last == name => records.extend(segment),
                _ => records.push((name.to_string(), segment)),
            },
        )?;
        let mut records = records.into_iter().peekable();
        let recovered = logs
            .into_iter()
            .map(|(name, log)| {
                let mine = records.next_if(|(owner, _)| *owner == name);
                let log_records = mine.map(|(_, records)| records).unwrap_or_default();
                (name, log, log_records)
            })
            .collect();
        Ok((data_dir, recovered))
    }

    /// [`DataDir::open_with`], handing each log's valid records to `each` (with the log's
    /// name) one segment file at a time as they are read, log after log in name order, so that
    /// only one segment's data is in memory at once. Returns the logs without their records.
    pub fn open_with_each(
        file_system: F,
        root: &Path,
        config: LogConfig,
        each: &mut dyn FnMut(&str, Vec<StoredRecord>),
    ) -> Result<(DataDir<F>, Vec<OpenedLog<F>>), StorageError> {
        let logs_directory = root.join(LOGS_DIRECTORY_NAME);
        files::create_directory_durably(&file_system, &logs_directory)?;
        let lock = lock_root(&file_system, root)?;
        let data_dir = DataDir {
            file_system,
            root: root.to_path_buf(),
            logs_directory,
            raft_directory: root.join(crate::raft_state::RAFT_DIRECTORY_NAME),
            config,
            lock: Arc::new(lock),
        };
        let mut recovered = Vec::new();
        for (name, path) in data_dir.list_log_directories()? {
            let mut log = SegmentedLog::open_with_each(
                data_dir.file_system.clone(),
                &path,
                config,
                &mut |segment| each(&name, segment),
            )?;
            log.hold_directory_lock(Arc::clone(&data_dir.lock));
            recovered.push((name, log));
        }
        Ok((data_dir, recovered))
    }

    /// Creates a new, empty log called `name` under `root/logs/name/`. Fails with
    /// [`StorageError::InvalidLogName`] for a name outside `[a-z0-9-]{1,100}` and with
    /// [`StorageError::LogExists`] when a log of that name exists (open logs are returned by
    /// [`DataDir::open`]; a destroyed log's name can be used again).
    pub fn create_log(&mut self, name: &str) -> Result<SegmentedLog<F>, StorageError> {
        let path = self.logs_directory.join(name);
        if !is_valid_log_name(name) {
            return Err(StorageError::InvalidLogName { path });
        }
        match self.file_system.create_directory(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::LogExists { path });
            }
            Err(error) => return Err(io_error(&path, "create the directory")(error)),
        }
        files::sync_directory(&self.file_system, &self.logs_directory)?;
        let (mut log, records) =
            SegmentedLog::open_with(self.file_system.clone(), &path, self.config)?;
        assert!(
            records.is_empty(),
            "a freshly created log directory holds no records"
        );
        log.hold_directory_lock(Arc::clone(&self.lock));
        Ok(log)
    }

    /// Every log's saved Raft state, by log name (sorted), creating `root/raft` if needed and
    /// removing leftovers of interrupted saves. A state file that fails its checks is
    /// [`StorageError::Corrupt`]: a member must not forget its vote.
    pub fn load_raft_states(&self) -> Result<Vec<(String, RaftState)>, StorageError> {
        crate::raft_state::load_all(&self.file_system, &self.raft_directory)
    }

    /// Saves the Raft state of log `name` durably: when this returns, a crash keeps it.
    pub fn save_raft_state(&self, name: &str, state: RaftState) -> Result<(), StorageError> {
        crate::raft_state::save(&self.file_system, &self.raft_directory, name, state)
    }

    /// Removes the Raft state of log `name`, if it has one.
    pub fn remove_raft_state(&self, name: &str) -> Result<(), StorageError> {
        crate::raft_state::remove(&self.file_system, &self.raft_directory, name)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration every log of this directory is opened with.
    pub fn config(&self) -> LogConfig {
        self.config
    }

    /// Lists the log directories by name, removing leftovers of interrupted removals.
    fn list_log_directories(&self) -> Result<Vec<(String, PathBuf)>, StorageError> {
        let directory = &self.logs_directory;
        let mut logs = Vec::new();
        let mut removed_tombstone = false;
        for entry in files::list_directory(&self.file_system, directory)? {
            let path = entry.path;
            let name = files::entry_name(&path);
            let Some(name) = name.filter(|_| entry.kind == EntryKind::Directory) else {
                return Err(StorageError::UnexpectedFile { path });
            };
            if let Some(log_name) = name.strip_suffix(TOMBSTONE_SUFFIX) {
                if is_valid_log_name(log_name) {
                    files::remove_directory_all(&self.file_system, &path)?;
                    removed_tombstone = true;
                    continue;
                }
            }
            if !is_valid_log_name(&name) {
                return Err(StorageError::UnexpectedFile { path });
            }
            logs.push((name, path));
        }
        if removed_tombstone {
            files::sync_directory(&self.file_system, directory)?;
        }
        logs.sort();
        Ok(logs)
    }
}

/// Opens `root/LOCK` and takes an exclusive lock on it without waiting.
fn lock_root<F: FileSystem>(file_system: &F, root: &Path) -> Result<F::Lock, StorageError> {
    let path = root.join(LOCK_FILE_NAME);
    match file_system.try_lock(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(StorageError::Locked { path }),
        Err(source) => Err(io_error(&path, "lock")(source)),
    }
}

/// Whether `name` is 1 to 100 characters of `a-z`, `0-9` and `-`.
pub fn is_valid_log_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= LOG_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_support::TemporaryDirectory;

    fn small_config() -> LogConfig {
        LogConfig { segment_bytes: 256 }
    }

    // Log names are limited to lower-case letters, digits and dashes.
    #[test]
    fn log_names_are_checked() {
        for valid in ["meta", "queue-17", "0", &"a".repeat(100)] {
            assert!(is_valid_log_name(valid), "{valid}");
        }
        for invalid in ["", "Queue", "a.b", "a/b", "..", "a_b", &"a".repeat(101)] {
            assert!(!is_valid_log_name(invalid), "{invalid}");
        }
    }

    // A second open of a root that is already open fails with Locked, and succeeds once the
    // first DataDir and all its logs are dropped.
    #[test]
    fn lock_refuses_a_second_open_of_the_same_root() {
        let temporary = TemporaryDirectory::new("lock");
        let (mut data_dir, _) =
            DataDir::open(temporary.path(), small_config()).expect("first open");
        let log = data_dir.create_log("meta").expect("create");
        match DataDir::open(temporary.path(), small_config()) {
            Err(StorageError::Locked { path }) => assert_eq!(path, temporary.path().join("LOCK")),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(data_dir);
        // The log still holds the lock.
        assert!(matches!(
            DataDir::open(temporary.path(), small_config()),
            Err(StorageError::Locked { .. })
        ));
        drop(log);
        DataDir::open(temporary.path(), small_config()).expect("open after the first is gone");
    }

    // Every log created in a data directory comes back, with its records, at the next open.
    #[test]
    fn recovers_multiple_logs() {
        let temporary = TemporaryDirectory::new("multiple");
        {
            let (mut data_dir, recovered) =
                DataDir::open(temporary.path(), small_config()).expect("open");
            assert!(recovered.is_empty());
            for (number, name) in ["queue-2", "meta", "queue-1"].into_iter().enumerate() {
                let mut log = data_dir.create_log(name).expect("create");
                for index in 1..=(number as u64 + 1) * 10 {
                    log.append(1, index, name.as_bytes()).expect("append");
                }
                log.sync().expect("sync");
            }
        }
        let (_data_dir, recovered) =
            DataDir::open(temporary.path(), small_config()).expect("reopen");
        let summary: Vec<(&str, usize)> = recovered
            .iter()
            .map(|(name, _, records)| (name.as_str(), records.len()))
            .collect();
        assert_eq!(
            summary,
            vec![("meta", 20), ("queue-1", 30), ("queue-2", 10)]
        );
        for (name, log, records) in &recovered {
            assert!(records.iter().all(|record| record.body == name.as_bytes()));
            assert!(
                log.segment_count() > 1,
                "{name} should span several 256-byte segments"
            );
        }
    }

    // Creating a log twice or with a bad name fails; a destroyed log's name can be reused.
    #[test]
    fn create_destroy_and_recreate() {
        let temporary = TemporaryDirectory::new("recreate");
        let (mut data_dir, _) = DataDir::open(temporary.path(), small_config()).expect("open");
        let mut log = data_dir.create_log("queue-5").expect("create");
        log.append(1, 1, b"x").expect("append");
        assert!(matches!(
            data_dir.create_log("queue-5"),
            Err(StorageError::LogExists { .. })
        ));
        assert!(matches!(
            data_dir.create_log("Queue"),
            Err(StorageError::InvalidLogName { .. })
        ));
        log.destroy().expect("destroy");
        assert!(!temporary.path().join("logs/queue-5").exists());
        let log = data_dir.create_log("queue-5").expect("recreate");
        assert_eq!(log.last_index(), None);
    }

    // A log directory left half-removed by a crash is finished off at open, not recovered.
    #[test]
    fn interrupted_removal_is_finished_at_open() {
        let temporary = TemporaryDirectory::new("tombstone");
        let tombstone = temporary.path().join("logs/queue-9.deleting");
        fs::create_dir_all(&tombstone).expect("create tombstone");
        fs::write(tombstone.join("00000000000000000001.seg"), b"partial").expect("write");
        let (_data_dir, recovered) = DataDir::open(temporary.path(), small_config()).expect("open");
        assert!(recovered.is_empty());
        assert!(!tombstone.exists());
    }

    // A stray file among the log directories stops the open instead of being ignored.
    #[test]
    fn stray_file_is_reported() {
        let temporary = TemporaryDirectory::new("stray");
        fs::create_dir_all(temporary.path().join("logs")).expect("create");
        fs::write(temporary.path().join("logs/notes.txt"), b"hello").expect("write");
        match DataDir::open(temporary.path(), small_config()) {
            Err(StorageError::UnexpectedFile { path }) => {
                assert_eq!(path, temporary.path().join("logs/notes.txt"));
            }
            other => panic!("expected UnexpectedFile, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod memory_disk_tests;
