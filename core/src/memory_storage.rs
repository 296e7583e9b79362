//! The one in-memory storage executor of the test drivers (the core's harness, the fuzz driver,
//! the embedded virtual-time broker). The simulator runs the real file storage on a simulated
//! disk instead.
//!
//! It keeps every log's records and how far each is durable. Appends are applied at once;
//! syncs and reads wait until the driver completes them, so a test decides when an fsync
//! finishes and what a crash loses. Like the file storage, a sync covers what was appended
//! before it was asked for, and syncing an empty log completes nothing.

use std::collections::{BTreeMap, VecDeque};

use crate::ids::LogIndex;
use crate::io::{LogId, LogRecord, RaftState, Recovered, StorageDone, StorageRequest};

/// One log in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    /// The records kept, in index order (segments deleted below some point are gone).
    pub records: Vec<LogRecord>,
    /// Records up to here survive a crash.
    pub durable_through: LogIndex,
}

impl MemoryLog {
    /// The records that survive a crash.
    pub fn durable_records(&self) -> &[LogRecord] {
        let durable = self
            .records
            .partition_point(|record| record.index <= self.durable_through);
        &self.records[..durable]
    }
}

/// Logs in memory. See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    /// Every log, by id.
    pub logs: BTreeMap<LogId, MemoryLog>,
    /// Syncs asked for and not completed: the log and its last index when asked.
    pub pending_syncs: VecDeque<(LogId, LogIndex)>,
    /// Reads asked for and not answered.
    pub pending_reads: VecDeque<(LogId, Vec<LogIndex>)>,
    /// Raft states saved (durable as soon as a `Persist` is carried out, as the file storage's
    /// state file is when the request returns).
    pub raft_states: BTreeMap<LogId, RaftState>,
    /// `Persist` barriers not answered: the log, its last index when asked, the token.
    pub pending_persists: VecDeque<(LogId, LogIndex, u64)>,
}

impl MemoryStorage {
    /// Carries out `request`. Of the records a `DeleteSegmentsBelow` may drop (durable, below
    /// its index, never a log's last one), `dropped` chooses how many go: the file storage
    /// drops whole segments only.
    pub fn execute(&mut self, request: StorageRequest, dropped: impl FnOnce(usize) -> usize) {
        match request {
            StorageRequest::CreateLog { log } => {
                self.logs.entry(log).or_default();
            }
            StorageRequest::Append { log, records } => {
                assert!(!records.is_empty(), "an append carries records");
                let memory = self
                    .logs
                    .get_mut(&log)
                    .expect("a log is created before appends");
                for record in records {
                    if let Some(last) = memory.records.last() {
                        assert_eq!(
                            record.index,
                            last.index.next(),
                            "{log:?} gets consecutive records"
                        );
                    }
                    memory.records.push(record);
                }
            }
            StorageRequest::Sync { log } => {
                let last = self.logs.get(&log).and_then(|memory| memory.records.last());
                if let Some(last) = last {
                    self.pending_syncs.push_back((log, last.index));
                }
            }
            StorageRequest::Read { log, indexes } => {
                assert!(!indexes.is_empty(), "a read names records");
                assert!(
                    indexes.windows(2).all(|pair| pair[0] < pair[1]),
                    "read indexes ascend"
                );
                self.pending_reads.push_back((log, indexes));
            }
            StorageRequest::TruncateAfter { log, index } => {
                let Some(memory) = self.logs.get_mut(&log) else {
                    return;
                };
                // Durable at once, as the file storage's truncation is when it returns.
                memory.records.retain(|record| record.index <= index);
                memory.durable_through = memory.durable_through.min(index);
                let kept_through = memory.records.last().map_or(LogIndex(0), |last| last.index);
                for (pending, through) in self.pending_syncs.iter_mut() {
                    if *pending == log {
                        *through = (*through).min(kept_through);
                    }
                }
                for (pending, through, _) in self.pending_persists.iter_mut() {
                    if *pending == log {
                        *through = (*through).min(kept_through);
                    }
                }
            }
            StorageRequest::DeleteSegmentsBelow { log, index } => {
                let Some(memory) = self.logs.get_mut(&log) else {
                    return;
                };
                let droppable = memory
                    .records
                    .iter()
                    .take(memory.records.len().saturating_sub(1))
                    .take_while(|record| {
                        record.index < index && record.index <= memory.durable_through
                    })
                    .count();
                let dropped = dropped(droppable).min(droppable);
                memory.records.drain(..dropped);
            }
            StorageRequest::Persist {
                log,
                raft_state,
                token,
            } => {
                if let Some(state) = raft_state {
                    self.raft_states.insert(log, state);
                }
                let last = self
                    .logs
                    .get(&log)
                    .and_then(|memory| memory.records.last())
                    .map_or(LogIndex(0), |last| last.index);
                self.pending_persists.push_back((log, last, token));
            }
            StorageRequest::DeleteLog { log } => {
                self.logs.remove(&log);
                self.raft_states.remove(&log);
                self.pending_syncs.retain(|(pending, _)| *pending != log);
                self.pending_persists
                    .retain(|(pending, ..)| *pending != log);
            }
        }
    }

    /// Completes the pending syncs of the logs `chosen` picks (the others stay pending).
    pub fn complete_syncs_of(&mut self, chosen: impl Fn(LogId) -> bool) -> Vec<StorageDone> {
        let mut completions = Vec::new();
        let logs = &mut self.logs;
        self.pending_syncs.retain(|&(log, through)| {
            if !chosen(log) {
                return true;
            }
            if let Some(memory) = logs.get_mut(&log) {
                memory.durable_through = memory.durable_through.max(through);
                completions.push(StorageDone::Synced { log, through });
            }
            false
        });
        self.pending_persists.retain(|&(log, through, token)| {
            if !chosen(log) {
                return true;
            }
            if let Some(memory) = logs.get_mut(&log) {
                memory.durable_through = memory.durable_through.max(through);
            }
            completions.push(StorageDone::Persisted { log, token });
            false
        });
        completions
    }

    /// Completes every pending sync.
    pub fn complete_syncs(&mut self) -> Vec<StorageDone> {
        self.complete_syncs_of(|_| true)
    }

    /// Answers every pending read with the records still kept.
    pub fn complete_reads(&mut self) -> Vec<StorageDone> {
        let mut completions = Vec::new();
        while let Some((log, indexes)) = self.pending_reads.pop_front() {
            let records = self.logs.get(&log).map_or_else(Vec::new, |memory| {
                memory
                    .records
                    .iter()
                    .filter(|record| indexes.binary_search(&record.index).is_ok())
                    .cloned()
                    .collect()
            });
            completions.push(StorageDone::Read { log, records });
        }
        completions
    }

    /// What the drivers that let storage finish at once do after each input: carries out
    /// `requests` (deleting segments drops every record that may go), answers every read,
    /// and completes every sync if `sync`; returns the completions for the node.
    pub fn run(&mut self, requests: Vec<StorageRequest>, sync: bool) -> Vec<StorageDone> {
        for request in requests {
            self.execute(request, |droppable| droppable);
        }
        let mut done = self.complete_reads();
        if sync {
            done.extend(self.complete_syncs());
        }
        done
    }

    /// Whether a sync, a persist or a read waits.
    pub fn has_pending(&self) -> bool {
        !self.pending_syncs.is_empty()
            || !self.pending_reads.is_empty()
            || !self.pending_persists.is_empty()
    }

    /// The process dies: pending work is gone, and each log loses the suffix of what was not
    /// synced that `lost` chooses (given how many records are not durable). Reopening makes
    /// what survived durable.
    pub fn crash(&mut self, mut lost: impl FnMut(usize) -> usize) {
        for memory in self.logs.values_mut() {
            let unsynced = memory.records.len() - memory.durable_records().len();
            let lost = lost(unsynced).min(unsynced);
            memory.records.truncate(memory.records.len() - lost);
            memory.durable_through = memory.records.last().map_or(LogIndex(0), |last| last.index);
        }
        self.pending_syncs.clear();
        self.pending_reads.clear();
        self.pending_persists.clear();
    }

    /// What a restart recovers: every log's records.
    pub fn recovered(&self) -> Recovered {
        let logs = self
            .logs
            .iter()
            .map(|(log, memory)| (*log, memory.records.clone()));
        Recovered {
            logs: logs.collect(),
            raft_states: self
                .raft_states
                .iter()
                .map(|(log, state)| (*log, *state))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::ids::Term;

    fn records(indexes: std::ops::RangeInclusive<u64>) -> Vec<LogRecord> {
        indexes
            .map(|index| LogRecord {
                term: Term(1),
                index: LogIndex(index),
                body: Bytes::from_static(b"r"),
            })
            .collect()
    }

    /// A sync asked for before a truncation reports no more than what the truncation kept,
    /// and a crash keeps only what was synced.
    #[test]
    fn a_truncation_caps_pending_syncs_and_a_crash_keeps_the_synced() {
        let mut storage = MemoryStorage::default();
        let log = LogId::Metadata;
        storage.execute(StorageRequest::CreateLog { log }, |_| 0);
        let append = StorageRequest::Append {
            log,
            records: records(1..=3),
        };
        storage.execute(append, |_| 0);
        storage.execute(StorageRequest::Sync { log }, |_| 0);
        let truncate = StorageRequest::TruncateAfter {
            log,
            index: LogIndex(1),
        };
        storage.execute(truncate, |_| 0);
        let through = LogIndex(1);
        assert_eq!(
            storage.complete_syncs(),
            [StorageDone::Synced { log, through }]
        );
        let append = StorageRequest::Append {
            log,
            records: records(2..=2),
        };
        storage.execute(append, |_| 0);
        storage.crash(|unsynced| unsynced);
        assert_eq!(storage.recovered().logs, [(log, records(1..=1))]);
    }

    /// A `Persist` is answered once with its token, for an empty log too; it makes what was
    /// appended before it durable, and its Raft state survives a crash.
    #[test]
    fn a_persist_is_answered_by_token_and_its_state_survives_a_crash() {
        let mut storage = MemoryStorage::default();
        let log = LogId::Metadata;
        storage.execute(StorageRequest::CreateLog { log }, |_| 0);
        let state = RaftState {
            term: Term(3),
            voted_for: Some(crate::ids::NodeId(2)),
            commit: LogIndex(1),
        };
        let persist = |token| StorageRequest::Persist {
            log,
            raft_state: Some(state),
            token,
        };
        storage.execute(persist(1), |_| 0);
        let append = StorageRequest::Append {
            log,
            records: records(1..=2),
        };
        storage.execute(append, |_| 0);
        storage.execute(persist(2), |_| 0);
        assert_eq!(
            storage.complete_syncs(),
            [
                StorageDone::Persisted { log, token: 1 },
                StorageDone::Persisted { log, token: 2 }
            ]
        );
        storage.execute(
            StorageRequest::Append {
                log,
                records: records(3..=3),
            },
            |_| 0,
        );
        storage.crash(|unsynced| unsynced);
        let recovered = storage.recovered();
        assert_eq!(recovered.logs, [(log, records(1..=2))]);
        assert_eq!(recovered.raft_states, [(log, state)]);
    }
}
