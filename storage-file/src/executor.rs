//! Executes the core's storage requests against a data directory.
//!
//! Runtime-agnostic: a runtime runs [`StorageExecutor::execute_batch`] on its storage thread
//! with every request that arrived since the last batch. Appends are written in order; every
//! log that was asked to sync is fsynced once at the end of the batch (group commit: one fsync
//! covers every append issued before it), and its `Synced` completion reports the last durable
//! index. A failure answers `Failed` for that log; the core then fences itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use krest_core::ids::{LogIndex, Term};
use krest_core::{LogId, LogRecord, RaftState, Recovered, StorageDone, StorageRequest};

use crate::file_system::{FileSystem, OsFileSystem};
use crate::{DataDir, LogConfig, SegmentedLog, StorageError};

/// Open logs of one data directory, on the file system `F` (the operating system's unless said
/// otherwise; the simulator uses [`crate::memory_disk::MemoryFileSystem`]).
pub struct StorageExecutor<F: FileSystem = OsFileSystem> {
    data_dir: DataDir<F>,
    logs: BTreeMap<LogId, SegmentedLog<F>>,
    /// Logs that failed: further requests on them fail at once.
    failed: BTreeMap<LogId, String>,
    /// The Raft states found at open.
    raft_states: Vec<(LogId, RaftState)>,
}

/// Why the data directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Storage refused (locked, corrupt, unreadable).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A directory under `logs/` that is not a log of ours.
    #[error("unexpected log directory '{0}' in the data directory")]
    UnknownLog(String),
}

impl StorageExecutor {
    /// Opens (creating if needed) the data directory and recovers every log.
    pub fn open(
        root: &Path,
        segment_bytes: u64,
    ) -> Result<(StorageExecutor, Recovered), OpenError> {
        StorageExecutor::open_with(OsFileSystem, root, segment_bytes)
    }

    /// Opens the data directory and hands each log's records to `each` one segment file at a
    /// time, as they are read (see [`StorageExecutor::open_with_each`]).
    pub fn open_each(
        root: &Path,
        segment_bytes: u64,
        each: &mut dyn FnMut(LogId, Vec<LogRecord>),
    ) -> Result<StorageExecutor, OpenError> {
        StorageExecutor::open_with_each(OsFileSystem, root, segment_bytes, each)
    }
}

impl<F: FileSystem> StorageExecutor<F> {
    /// Opens (creating if needed) the data directory on `file_system` and recovers every log.
    pub fn open_with(
        file_system: F,
        root: &Path,
        segment_bytes: u64,
    ) -> Result<(StorageExecutor<F>, Recovered), OpenError> {
        let mut recovered = Recovered::default();
        let executor = StorageExecutor::open_with_each(
            file_system,
            root,
            segment_bytes,
            &mut |log, records| match recovered.logs.last_mut() {
                Some((last, earlier)) if *last == log => earlier.extend(records),
                _ => recovered.logs.push((log, records)),
            },
        )?;
        // Empty logs are reported after the others; the collected result is in log order.
        recovered.logs.sort_by_key(|(log, _)| *log);
        recovered.raft_states = executor.raft_states().to_vec();
        Ok((executor, recovered))
    }

    /// Opens (creating if needed) the data directory and hands each log's records to `each`,
    /// one segment file at a time as they are read, log after log in name order (`meta`
    /// first), then every log that holds no record, with no records: a node rebuilt from them ([`krest_core::NodeRecovery`]) never holds the whole
    /// backlog in memory.
    pub fn open_with_each(
        file_system: F,
        root: &Path,
        segment_bytes: u64,
        each: &mut dyn FnMut(LogId, Vec<LogRecord>),
    ) -> Result<StorageExecutor<F>, OpenError> {
        let mut unknown = None;
        let mut with_records = BTreeSet::new();
        let (data_dir, opened) = DataDir::open_with_each(
            file_system,
            root,
            LogConfig { segment_bytes },
            &mut |name, records| {
                let Some(id) = LogId::from_name(name) else {
                    unknown.get_or_insert_with(|| name.to_string());
                    return;
                };
                let records = records
                    .into_iter()
                    .map(|record| LogRecord {
                        term: Term(record.term),
                        index: LogIndex(record.index),
                        body: record.body,
                    })
                    .collect();
                with_records.insert(id);
                each(id, records);
            },
        )?;
        let mut logs = BTreeMap::new();
        for (name, log) in opened {
            let id = LogId::from_name(&name).ok_or_else(|| OpenError::UnknownLog(name.clone()))?;
            if !with_records.contains(&id) {
                // Every log is reported, an empty one too (its queue may be gone).
                each(id, Vec::new());
            }
            logs.insert(id, log);
        }
        if let Some(name) = unknown {
            return Err(OpenError::UnknownLog(name));
        }
        let mut raft_states = Vec::new();
        for (name, state) in data_dir.load_raft_states()? {
            let id = LogId::from_name(&name).ok_or(OpenError::UnknownLog(name))?;
            raft_states.push((id, state));
        }
        raft_states.sort();
        Ok(StorageExecutor {
            data_dir,
            logs,
            failed: BTreeMap::new(),
            raft_states,
        })
    }

    /// The Raft states saved under `root`, read without opening (or locking) the data
    /// directory: a node being rebuilt needs them before the records
    /// ([`krest_core::NodeRecovery::raft_state`]).
    pub fn read_raft_states_with(
        file_system: &F,
        root: &Path,
    ) -> Result<Vec<(LogId, RaftState)>, OpenError> {
        let directory = root.join(crate::raft_state::RAFT_DIRECTORY_NAME);
        let mut states = Vec::new();
        for (name, state) in crate::raft_state::read_all(file_system, &directory)? {
            let id = LogId::from_name(&name).ok_or(OpenError::UnknownLog(name))?;
            states.push((id, state));
        }
        states.sort();
        Ok(states)
    }

    /// The Raft state saved for each log that has one, as found at open, in log order.
    pub fn raft_states(&self) -> &[(LogId, RaftState)] {
        &self.raft_states
    }

    /// Executes `requests` in order, fsyncs each log asked to sync once, and returns the
    /// completions.
    ///
    /// Consecutive appends to one log (the core sends one per `handle` call, so one per client
    /// frame under load) are gathered and written together, in as few writes as their segments
    /// allow; any other request on that log first writes what was gathered, so each log still
    /// sees its requests in order. Logs are independent, so their writes may interleave
    /// differently than their requests did.
    pub fn execute_batch(&mut self, requests: Vec<StorageRequest>) -> Vec<StorageDone> {
        let mut to_sync: BTreeSet<LogId> = BTreeSet::new();
        let mut done = Vec::new();
        // `Persist` barriers, answered after their log's fsync at the end of the batch.
        let mut persisted: Vec<(LogId, u64)> = Vec::new();
        // Appends gathered per log, not yet written.
        let mut gathered: BTreeMap<LogId, Vec<LogRecord>> = BTreeMap::new();
        for request in requests {
            let log = request_log(&request);
            if let StorageRequest::Append { log, records } = request {
                if !self.failed.contains_key(&log) {
                    match gathered.get_mut(&log) {
                        Some(earlier) => earlier.extend(records),
                        None => {
                            gathered.insert(log, records);
                        }
                    }
                }
                continue;
            }
            if !matches!(request, StorageRequest::Sync { .. }) {
                self.write_gathered(log, &mut gathered, &mut done);
            }
            if let Some(reason) = self.failed.get(&log) {
                if matches!(
                    request,
                    StorageRequest::Sync { .. }
                        | StorageRequest::Read { .. }
                        | StorageRequest::Persist { .. }
                ) {
                    done.push(StorageDone::Failed {
                        log,
                        reason: reason.clone(),
                    });
                }
                continue;
            }
            let result = match request {
                StorageRequest::CreateLog { log } => self.create(log),
                StorageRequest::Append { .. } => unreachable!("gathered above"),
                StorageRequest::Sync { log } => {
                    to_sync.insert(log);
                    Ok(())
                }
                StorageRequest::Read { log, indexes } => self.read(log, &indexes).map(|records| {
                    done.push(StorageDone::Read { log, records });
                }),
                StorageRequest::Persist {
                    log,
                    raft_state,
                    token,
                } => {
                    // The state file first, at once: it is durable before anything appended
                    // after this request. The records before it are synced with the batch's
                    // fsync of this log, before the answer goes.
                    let saved = match raft_state {
                        Some(state) => self.data_dir.save_raft_state(&log.name(), state),
                        None => Ok(()),
                    };
                    saved.map(|()| {
                        to_sync.insert(log);
                        persisted.push((log, token));
                    })
                }
                StorageRequest::TruncateAfter { log, index } => match self.logs.get_mut(&log) {
                    Some(segmented) => segmented.truncate_after(index.0),
                    None => Ok(()),
                },
                StorageRequest::DeleteSegmentsBelow { log, index } => match self.logs.get_mut(&log)
                {
                    Some(segmented) => segmented.delete_segments_below(index.0).map(|_| ()),
                    None => Ok(()),
                },
                StorageRequest::DeleteLog { log } => {
                    to_sync.remove(&log);
                    let destroyed = match self.logs.remove(&log) {
                        Some(segmented) => segmented.destroy(),
                        None => Ok(()),
                    };
                    destroyed.and_then(|()| self.data_dir.remove_raft_state(&log.name()))
                }
            };
            if let Err(error) = result {
                self.fail(log, error.to_string(), &mut done);
                to_sync.remove(&log);
            }
        }
        let logs_gathered: Vec<LogId> = gathered.keys().copied().collect();
        for log in logs_gathered {
            self.write_gathered(log, &mut gathered, &mut done);
            if self.failed.contains_key(&log) {
                to_sync.remove(&log);
            }
        }
        for log in to_sync {
            let Some(segmented) = self.logs.get_mut(&log) else {
                continue;
            };
            let started = std::time::Instant::now();
            match segmented.sync() {
                Ok(Some(through)) => {
                    done.push(StorageDone::Synced {
                        log,
                        through: LogIndex(through),
                    });
                    done.push(StorageDone::Measured {
                        log,
                        sync_micros: u64::try_from(started.elapsed().as_micros())
                            .unwrap_or(u64::MAX),
                        log_bytes: segmented.size_bytes(),
                    });
                }
                Ok(None) => {}
                Err(error) => self.fail(log, error.to_string(), &mut done),
            }
        }
        for (log, token) in persisted {
            if let Some(reason) = self.failed.get(&log) {
                let reason = reason.clone();
                done.push(StorageDone::Failed { log, reason });
            } else {
                done.push(StorageDone::Persisted { log, token });
            }
        }
        done
    }

    fn create(&mut self, log: LogId) -> Result<(), StorageError> {
        if self.logs.contains_key(&log) {
            return Ok(());
        }
        let segmented = self.data_dir.create_log(&log.name())?;
        self.logs.insert(log, segmented);
        Ok(())
    }

    /// Writes the appends gathered for `log`, if any; a failure fails the log.
    fn write_gathered(
        &mut self,
        log: LogId,
        gathered: &mut BTreeMap<LogId, Vec<LogRecord>>,
        done: &mut Vec<StorageDone>,
    ) {
        let Some(records) = gathered.remove(&log) else {
            return;
        };
        if let Err(error) = self.append(log, &records) {
            self.fail(log, error.to_string(), done);
        }
    }

    fn append(&mut self, log: LogId, records: &[LogRecord]) -> Result<(), StorageError> {
        let segmented = match self.logs.get_mut(&log) {
            Some(segmented) => segmented,
            None => {
                self.create(log)?;
                self.logs.get_mut(&log).expect("just created")
            }
        };
        segmented.append_many(
            records
                .iter()
                .map(|record| (record.term.0, record.index.0, &record.body[..])),
        )
    }

    /// Reads the records at `indexes` (ascending). Runs of nearby indexes are read in one
    /// pass and the records between them skipped. A log that is gone reads as empty.
    fn read(&self, log: LogId, indexes: &[LogIndex]) -> Result<Vec<LogRecord>, StorageError> {
        /// Records between two wanted ones below which one pass reads through them.
        const GAP_READ_THROUGH: u64 = 64;
        let Some(segmented) = self.logs.get(&log) else {
            return Ok(Vec::new());
        };
        let mut records = Vec::with_capacity(indexes.len());
        let mut position = 0;
        while position < indexes.len() {
            let first = indexes[position].0;
            let mut last = first;
            let mut end = position + 1;
            while end < indexes.len() && indexes[end].0 <= last + GAP_READ_THROUGH {
                last = indexes[end].0;
                end += 1;
            }
            let wanted = &indexes[position..end];
            for record in segmented.read_range(first, last, u64::MAX)? {
                if wanted.binary_search(&LogIndex(record.index)).is_ok() {
                    records.push(LogRecord {
                        term: Term(record.term),
                        index: LogIndex(record.index),
                        body: record.body,
                    });
                }
            }
            position = end;
        }
        Ok(records)
    }

    fn fail(&mut self, log: LogId, reason: String, done: &mut Vec<StorageDone>) {
        self.failed.insert(log, reason.clone());
        done.push(StorageDone::Failed { log, reason });
    }

    /// Makes every log durable (used at shutdown).
    pub fn sync_all(&mut self) -> Vec<StorageDone> {
        let requests = self
            .logs
            .keys()
            .map(|log| StorageRequest::Sync { log: *log })
            .collect();
        self.execute_batch(requests)
    }
}

fn request_log(request: &StorageRequest) -> LogId {
    match request {
        StorageRequest::CreateLog { log }
        | StorageRequest::Append { log, .. }
        | StorageRequest::Sync { log }
        | StorageRequest::Read { log, .. }
        | StorageRequest::TruncateAfter { log, .. }
        | StorageRequest::Persist { log, .. }
        | StorageRequest::DeleteSegmentsBelow { log, .. }
        | StorageRequest::DeleteLog { log } => *log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_disk::{CrashMode, MemoryDisk};
    use crate::test_support::TemporaryDirectory as TempDir;
    use bytes::Bytes;
    use krest_core::rng::Rng;

    fn record(index: u64, body: &'static [u8]) -> LogRecord {
        LogRecord {
            term: Term(1),
            index: LogIndex(index),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn one_batch_syncs_each_log_once_and_a_reopen_recovers_the_records() {
        let directory = TempDir::new("executor");
        let log = LogId::Queue(krest_core::ids::QueueId(3));
        {
            let (mut executor, recovered) = StorageExecutor::open(directory.path(), 4096).unwrap();
            assert!(recovered.logs.is_empty());
            let done = executor.execute_batch(vec![
                StorageRequest::CreateLog { log },
                StorageRequest::Append {
                    log,
                    records: vec![record(1, b"a")],
                },
                StorageRequest::Sync { log },
                StorageRequest::Append {
                    log,
                    records: vec![record(2, b"b")],
                },
                StorageRequest::Sync { log },
            ]);
            assert_eq!(
                done[0],
                StorageDone::Synced {
                    log,
                    through: LogIndex(2)
                },
                "one sync for both, through the last append"
            );
            assert!(
                matches!(done[1..], [StorageDone::Measured { log: measured, log_bytes, .. }]
                    if measured == log && log_bytes == 2 * (24 + 1)),
                "then its measurement: {done:?}"
            );
        }
        let (_, recovered) = StorageExecutor::open(directory.path(), 4096).unwrap();
        assert_eq!(
            recovered.logs,
            vec![(log, vec![record(1, b"a"), record(2, b"b")])]
        );
    }

    // A read returns exactly the records asked for, in index order, from nearby runs and far
    // apart alike, including records appended earlier in the same batch and not yet synced; a
    // log that is gone reads as empty, and a log that failed answers Failed.
    #[test]
    fn a_read_returns_the_records_asked_for_synced_or_not() {
        let directory = TempDir::new("executor-read");
        let log = LogId::Queue(krest_core::ids::QueueId(3));
        let (mut executor, _) = StorageExecutor::open(directory.path(), 4096).unwrap();
        let bodies: Vec<Vec<u8>> = (1..=300u64)
            .map(|index| format!("record {index}").into_bytes())
            .collect();
        let records: Vec<LogRecord> = bodies
            .iter()
            .enumerate()
            .map(|(position, body)| LogRecord {
                term: Term(1),
                index: LogIndex(position as u64 + 1),
                body: Bytes::from(body.clone()),
            })
            .collect();
        let wanted = [2u64, 3, 5, 60, 61, 250, 300];
        let done = executor.execute_batch(vec![
            StorageRequest::CreateLog { log },
            StorageRequest::Append {
                log,
                records: records[..200].to_vec(),
            },
            StorageRequest::Sync { log },
            StorageRequest::Append {
                log,
                records: records[200..].to_vec(),
            },
            StorageRequest::Read {
                log,
                indexes: wanted.iter().map(|index| LogIndex(*index)).collect(),
            },
        ]);
        let read = done
            .iter()
            .find_map(|done| match done {
                StorageDone::Read {
                    log: read_log,
                    records,
                } if *read_log == log => Some(records.clone()),
                _ => None,
            })
            .expect("the read is answered");
        let expected: Vec<LogRecord> = wanted
            .iter()
            .map(|index| records[*index as usize - 1].clone())
            .collect();
        assert_eq!(read, expected);

        let gone = LogId::Queue(krest_core::ids::QueueId(4));
        let done = executor.execute_batch(vec![StorageRequest::Read {
            log: gone,
            indexes: vec![LogIndex(1)],
        }]);
        assert_eq!(
            done,
            vec![StorageDone::Read {
                log: gone,
                records: Vec::new()
            }]
        );

        let done = executor.execute_batch(vec![StorageRequest::Read {
            log,
            indexes: vec![LogIndex(301)],
        }]);
        assert!(
            matches!(done[..], [StorageDone::Failed { log: failed, .. }] if failed == log),
            "{done:?}"
        );
        let done = executor.execute_batch(vec![StorageRequest::Read {
            log,
            indexes: vec![LogIndex(1)],
        }]);
        assert!(
            matches!(done[..], [StorageDone::Failed { log: failed, .. }] if failed == log),
            "a failed log answers every read: {done:?}"
        );
    }

    // Appends to one log from several requests of a batch are written together, yet each log
    // ends as if every request had run one by one: a request of another kind on a log first
    // writes what was gathered for it, and one sync per log covers its last append.
    #[test]
    fn appends_gathered_across_requests_keep_each_logs_order() {
        let directory = TempDir::new("executor-gather");
        let first = LogId::Queue(krest_core::ids::QueueId(1));
        let second = LogId::Queue(krest_core::ids::QueueId(2));
        let append = |log, index, body| StorageRequest::Append {
            log,
            records: vec![record(index, body)],
        };
        let (mut executor, _) = StorageExecutor::open(directory.path(), 4096).unwrap();
        let done = executor.execute_batch(vec![
            StorageRequest::CreateLog { log: first },
            StorageRequest::CreateLog { log: second },
            append(first, 1, b"a"),
            append(second, 1, b"x"),
            StorageRequest::Sync { log: first },
            append(first, 2, b"b"),
            append(second, 2, b"y"),
            StorageRequest::Sync { log: second },
            append(first, 3, b"c"),
            StorageRequest::DeleteSegmentsBelow {
                log: first,
                index: LogIndex(1),
            },
            append(first, 4, b"d"),
            StorageRequest::Sync { log: first },
        ]);
        let synced: Vec<(LogId, u64)> = done
            .iter()
            .filter_map(|done| match done {
                StorageDone::Synced { log, through } => Some((*log, through.0)),
                _ => None,
            })
            .collect();
        assert_eq!(synced, vec![(first, 4), (second, 2)], "{done:?}");
        drop(executor);
        let (_, mut recovered) = StorageExecutor::open(directory.path(), 4096).unwrap();
        recovered.logs.sort_by_key(|(log, _)| *log);
        assert_eq!(
            recovered.logs,
            vec![
                (
                    first,
                    vec![
                        record(1, b"a"),
                        record(2, b"b"),
                        record(3, b"c"),
                        record(4, b"d")
                    ]
                ),
                (second, vec![record(1, b"x"), record(2, b"y")]),
            ]
        );
    }

    // On the simulator's memory disk the executor behaves as on the real one: what a batch
    // synced survives a crash, what it only appended does not.
    #[test]
    fn on_the_memory_disk_a_synced_batch_survives_a_crash() {
        let disk = MemoryDisk::new(Rng::from_seed(1));
        let root = Path::new("/krest");
        let log = LogId::Queue(krest_core::ids::QueueId(3));
        let (mut executor, recovered) =
            StorageExecutor::open_with(disk.file_system(), root, 4096).unwrap();
        assert!(recovered.logs.is_empty());
        let done = executor.execute_batch(vec![
            StorageRequest::CreateLog { log },
            StorageRequest::Append {
                log,
                records: vec![record(1, b"a")],
            },
            StorageRequest::Sync { log },
        ]);
        assert!(matches!(
            done[..],
            [StorageDone::Synced { .. }, StorageDone::Measured { .. }]
        ));
        let done = executor.execute_batch(vec![StorageRequest::Append {
            log,
            records: vec![record(2, b"b")],
        }]);
        assert!(done.is_empty());
        disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(2));
        drop(executor);
        let (_, recovered) = StorageExecutor::open_with(disk.file_system(), root, 4096).unwrap();
        assert_eq!(recovered.logs, vec![(log, vec![record(1, b"a")])]);
    }

    /// Each `Persist` is answered once, with its token, after the records before it are
    /// durable, an empty log's too; its state survives a crash at once; deleting the log
    /// deletes its state.
    #[test]
    fn a_persist_makes_state_and_records_durable_and_is_answered_by_token() {
        let disk = MemoryDisk::new(Rng::from_seed(4));
        let root = Path::new("/krest");
        let log = LogId::Metadata;
        let other = LogId::Queue(krest_core::ids::QueueId(2));
        let state = |term, vote: Option<u64>| RaftState {
            term: Term(term),
            voted_for: vote.map(krest_core::ids::NodeId),
            commit: LogIndex(1),
        };
        let (mut executor, _) = StorageExecutor::open_with(disk.file_system(), root, 4096).unwrap();
        let done = executor.execute_batch(vec![
            StorageRequest::CreateLog { log },
            StorageRequest::CreateLog { log: other },
            StorageRequest::Persist {
                log,
                raft_state: Some(state(2, Some(3))),
                token: 7,
            },
            StorageRequest::Persist {
                log: other,
                raft_state: Some(state(1, None)),
                token: 8,
            },
        ]);
        assert_eq!(
            done,
            [
                StorageDone::Persisted { log, token: 7 },
                StorageDone::Persisted {
                    log: other,
                    token: 8
                }
            ]
        );
        let done = executor.execute_batch(vec![
            StorageRequest::Append {
                log,
                records: vec![record(1, b"a")],
            },
            StorageRequest::Persist {
                log,
                raft_state: Some(state(3, None)),
                token: 9,
            },
            StorageRequest::Append {
                log,
                records: vec![record(2, b"b")],
            },
            StorageRequest::DeleteLog { log: other },
        ]);
        // The log's fsync at the end of the batch covers the append after the barrier too.
        assert!(matches!(
            done[..],
            [
                StorageDone::Synced {
                    through: LogIndex(2),
                    ..
                },
                StorageDone::Measured { .. },
                StorageDone::Persisted { token: 9, .. }
            ]
        ));
        disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(5));
        drop(executor);
        let (executor, recovered) =
            StorageExecutor::open_with(disk.file_system(), root, 4096).unwrap();
        let records = vec![record(1, b"a"), record(2, b"b")];
        assert_eq!(recovered.logs, vec![(log, records)]);
        assert_eq!(recovered.raft_states, [(log, state(3, None))]);
        assert_eq!(executor.raft_states(), [(log, state(3, None))]);
    }

    /// A truncation in a batch comes after the appends before it and before those after it,
    /// and is durable at once: a crash that loses everything unsynced brings the removed
    /// records back neither in the batch's order nor after it.
    #[test]
    fn a_truncated_suffix_is_replaced_in_order_and_never_comes_back() {
        let disk = MemoryDisk::new(Rng::from_seed(3));
        let root = Path::new("/krest");
        let log = LogId::Metadata;
        let (mut executor, _) = StorageExecutor::open_with(disk.file_system(), root, 4096).unwrap();
        let old = [record(1, b"a"), record(2, b"old"), record(3, b"old")];
        let done = executor.execute_batch(vec![
            StorageRequest::CreateLog { log },
            StorageRequest::Append {
                log,
                records: old.to_vec(),
            },
            StorageRequest::Sync { log },
        ]);
        assert!(matches!(
            done[0],
            StorageDone::Synced {
                through: LogIndex(3),
                ..
            }
        ));
        let done = executor.execute_batch(vec![
            StorageRequest::TruncateAfter {
                log,
                index: LogIndex(1),
            },
            StorageRequest::Append {
                log,
                records: vec![record(2, b"new")],
            },
            StorageRequest::Sync { log },
        ]);
        assert!(matches!(
            done[0],
            StorageDone::Synced {
                through: LogIndex(2),
                ..
            }
        ));
        // A truncation alone, then a crash before any sync.
        let done = executor.execute_batch(vec![StorageRequest::TruncateAfter {
            log,
            index: LogIndex(1),
        }]);
        assert!(done.is_empty(), "nothing answers a truncation that worked");
        disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(4));
        drop(executor);
        let (_, recovered) = StorageExecutor::open_with(disk.file_system(), root, 4096).unwrap();
        assert_eq!(recovered.logs, vec![(log, vec![record(1, b"a")])]);
    }

    #[test]
    fn an_out_of_order_append_fails_that_log_and_later_syncs_report_the_failure() {
        let directory = TempDir::new("executor-fail");
        let log = LogId::Metadata;
        let (mut executor, _) = StorageExecutor::open(directory.path(), 4096).unwrap();
        let done = executor.execute_batch(vec![
            StorageRequest::CreateLog { log },
            StorageRequest::Append {
                log,
                records: vec![record(1, b"a"), record(5, b"gap")],
            },
            StorageRequest::Sync { log },
        ]);
        assert!(!done.is_empty());
        assert!(done
            .iter()
            .all(|done| matches!(done, StorageDone::Failed { .. })));
        let done = executor.execute_batch(vec![StorageRequest::Sync { log }]);
        assert!(matches!(done.as_slice(), [StorageDone::Failed { .. }]));
    }
}
