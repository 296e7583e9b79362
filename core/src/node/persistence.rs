//! Logs and confirms: records waiting to be appended, what each log has made durable, and the
//! replies that wait for durability ("waiters").
//!
//! Rules kept here:
//! - records get consecutive indexes per log; they leave for storage at the end of `handle`,
//!   one `Append` and one `Sync` per log;
//! - a waiter's action runs only when every (log, index) it needs is synced, and never after the
//!   node is fenced: a storage failure answers every waiter with `UNAVAILABLE` and stops all
//!   confirms for good;
//! - a message of a durable queue becomes deliverable when its publish record is synced.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use krest_proto::client::{server_frame, ErrorCode};
use krest_proto::storage::{queue_record, Acked, QueueRecord, RemoveReason, Removed};
use smallvec::SmallVec;

use super::Node;
use crate::ids::{AdminRequestId, ConnId, LogIndex, QueueId, Sequence, SubscriptionId, WaiterId};
use crate::io::{Command, LogId, LogRecord, StorageDone, StorageRequest};
use crate::queue::Effects;

/// Records per `Removed` record, so purging a large queue writes bounded records.
const REMOVED_PER_RECORD: usize = 8_192;

/// The core's view of one log.
#[derive(Debug, Default)]
pub(super) struct LogState {
    /// The index the next record gets.
    pub next_index: LogIndex,
    /// Every record up to here is durable.
    pub synced_index: LogIndex,
    /// Records not yet handed to storage.
    pub unsent: Vec<LogRecord>,
    /// Durable-queue messages that become deliverable once their record is synced.
    pub deliverable_after_sync: VecDeque<(LogIndex, Sequence)>,
    /// Waiters by the index they need.
    pub waiting: BTreeSet<(LogIndex, WaiterId)>,
    /// The last `DeleteSegmentsBelow` sent.
    pub deleted_below: LogIndex,
    /// The first index the queue's messages needed when deletion was last considered (and
    /// maybe held back by the idempotency table): it is considered again 1024 records later.
    pub deletion_considered_at: LogIndex,
}

impl LogState {
    /// A log whose records up to `last` are durable.
    pub fn recovered(last: LogIndex) -> LogState {
        LogState {
            next_index: last.next(),
            synced_index: last,
            ..LogState::default()
        }
    }
}

/// What to do when durability is reached.
#[derive(Debug, Clone)]
pub(super) enum WaiterAction {
    /// Send a prepared success frame; `confirms` publishes of the connection are settled.
    Client {
        conn: ConnId,
        request_id: u64,
        frame: Bytes,
        confirms: u32,
    },
    /// Answer an admin request.
    Admin {
        request: AdminRequestId,
        status: u16,
        body: Vec<u8>,
    },
    /// The dead-letter copy is stored; the source subscription may let go.
    FinishDeadLetter {
        queue: QueueId,
        subscription: SubscriptionId,
        sequence: Sequence,
    },
    /// The redrive copies are stored; the dead-letter queue may let these messages go.
    FinishRedrive {
        queue: QueueId,
        sequences: Vec<Sequence>,
    },
}

/// One pending action and how many (log, index) needs it still has.
#[derive(Debug)]
struct Waiter {
    unmet: usize,
    action: WaiterAction,
}

/// The waiter table.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    table: BTreeMap<WaiterId, Waiter>,
    next_id: u64,
}

impl Waiters {
    /// Waiting actions.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

impl Node {
    /// Queues a record for `log`; returns its index.
    pub(super) fn append_record(&mut self, log: LogId, body: Bytes) -> LogIndex {
        let term = self.term;
        let state = self.logs.get_mut(&log).expect("appending to a known log");
        let index = state.next_index;
        state.next_index = index.next();
        state.unsent.push(LogRecord { term, index, body });
        index
    }

    /// Creates the core's state for a new, empty log and asks storage to create it.
    pub(super) fn create_log(&mut self, log: LogId) {
        assert!(!self.logs.contains_key(&log), "log {log:?} exists");
        self.logs.insert(
            log,
            LogState {
                next_index: LogIndex(1),
                ..LogState::default()
            },
        );
        self.commands
            .push_back(Command::Storage(StorageRequest::CreateLog { log }));
    }

    /// Runs `action` once every need is durable (at once if all already are).
    pub(super) fn when_durable(&mut self, needs: &[(LogId, LogIndex)], action: WaiterAction) {
        if let Some(reason) = self.fenced.clone() {
            self.fail_waiter(action, &reason);
            return;
        }
        // One registration per log, at the highest index needed there: a sync through it covers
        // the lower ones, and a need named twice (a redrive of two messages into one queue needs
        // its declaration twice) must not be counted twice, or the waiter would never run.
        // A handful of logs at most (a queue's and the metadata log), so a small vector
        // searched linearly beats a map.
        let mut unmet: SmallVec<[(LogId, LogIndex); 2]> = SmallVec::new();
        for (log, index) in needs {
            let behind = self
                .logs
                .get(log)
                .is_some_and(|state| state.synced_index < *index);
            if behind {
                match unmet.iter_mut().find(|(known, _)| known == log) {
                    Some((_, highest)) => *highest = (*highest).max(*index),
                    None => unmet.push((*log, *index)),
                }
            }
        }
        if unmet.is_empty() {
            self.run_waiter(action);
            return;
        }
        let id = WaiterId(self.waiters.next_id);
        self.waiters.next_id += 1;
        for (log, index) in &unmet {
            self.logs
                .get_mut(log)
                .expect("filtered to known logs")
                .waiting
                .insert((*index, id));
        }
        self.waiters.table.insert(
            id,
            Waiter {
                unmet: unmet.len(),
                action,
            },
        );
    }

    fn run_waiter(&mut self, action: WaiterAction) {
        match action {
            WaiterAction::Client {
                conn,
                frame,
                confirms,
                ..
            } => {
                self.send_frame_bytes(conn, frame);
                self.settle_confirms(conn, confirms);
            }
            WaiterAction::Admin {
                request,
                status,
                body,
            } => self.admin_respond(request, status, body),
            WaiterAction::FinishDeadLetter {
                queue,
                subscription,
                sequence,
            } => {
                self.with_queue(queue, |queue, effects| {
                    queue.finish_dead_letter(subscription, sequence, effects)
                });
            }
            WaiterAction::FinishRedrive { queue, sequences } => {
                self.finish_redrive(queue, sequences)
            }
        }
    }

    /// Answers a waiter that can never be satisfied.
    fn fail_waiter(&mut self, action: WaiterAction, reason: &str) {
        match action {
            WaiterAction::Client {
                conn,
                request_id,
                confirms,
                ..
            } => {
                self.send_error(conn, request_id, ErrorCode::Unavailable, reason.to_string());
                self.settle_confirms(conn, confirms);
            }
            WaiterAction::Admin { request, .. } => {
                self.admin_error(request, ErrorCode::Unavailable, reason.to_string())
            }
            WaiterAction::FinishDeadLetter {
                queue,
                subscription,
                sequence,
            } => {
                if let Some(queue_state) = self.queues.get_mut(&queue) {
                    queue_state.abort_dead_letter(subscription, sequence);
                    self.dirty.insert(queue);
                }
            }
            WaiterAction::FinishRedrive { queue, sequences } => {
                self.abort_redrive(queue, sequences)
            }
        }
    }

    /// Fails every waiter that needs `log` (the log is being deleted). A waiter may need other
    /// logs too (a publish waits for its queue's log and for the queue's declaration in the
    /// metadata log): its registrations there go with it.
    pub(super) fn fail_waiters_on(&mut self, log: LogId, reason: &str) {
        let Some(state) = self.logs.get_mut(&log) else {
            return;
        };
        let ids: BTreeSet<WaiterId> = std::mem::take(&mut state.waiting)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        for state in self.logs.values_mut() {
            state.waiting.retain(|(_, id)| !ids.contains(id));
        }
        for id in ids {
            if let Some(waiter) = self.waiters.table.remove(&id) {
                self.fail_waiter(waiter.action, reason);
            }
        }
    }

    pub(super) fn on_storage_done(&mut self, done: StorageDone) {
        match done {
            StorageDone::Synced { log, through } => self.on_synced(log, through),
            StorageDone::Measured {
                log,
                sync_micros,
                log_bytes,
            } => self.storage_metrics.record(log, sync_micros, log_bytes),
            StorageDone::Read { log, records } => self.on_payloads_read(log, records),
            StorageDone::Persisted { log, token } => self.on_group_persisted(log, token),
            StorageDone::Failed { log, reason } => {
                self.fence(format!("storage failed on log {}: {reason}", log.name()))
            }
        }
    }

    fn on_synced(&mut self, log: LogId, through: LogIndex) {
        if self.fenced.is_some() {
            return;
        }
        self.counters.syncs_completed += 1;
        if self
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.replicates(log))
        {
            // A replicated log's records count when committed, not when synced here.
            return;
        }
        self.mark_durable(log, through);
    }

    /// Everything of `log` through `through` counts as durable: its waiters run and the
    /// messages waiting for it become deliverable.
    pub(super) fn mark_durable(&mut self, log: LogId, through: LogIndex) {
        let Some(state) = self.logs.get_mut(&log) else {
            return; // deleted meanwhile
        };
        assert!(
            through < state.next_index,
            "storage synced records never appended"
        );
        if through <= state.synced_index {
            return;
        }
        state.synced_index = through;
        let mut deliverable = Vec::new();
        while let Some((index, sequence)) = state.deliverable_after_sync.front().copied() {
            if index > through {
                break;
            }
            state.deliverable_after_sync.pop_front();
            deliverable.push(sequence);
        }
        let mut ready = Vec::new();
        while let Some((index, id)) = state.waiting.first().copied() {
            if index > through {
                break;
            }
            state.waiting.pop_first();
            ready.push(id);
        }
        if let LogId::Queue(queue) = log {
            if let Some(queue_state) = self.queues.get_mut(&queue) {
                let now = self.now;
                for sequence in deliverable {
                    queue_state.make_deliverable(sequence, now);
                }
                self.dirty.insert(queue);
            }
        }
        for id in ready {
            let waiter = self
                .waiters
                .table
                .get_mut(&id)
                .expect("indexed waiter exists");
            waiter.unmet -= 1;
            if waiter.unmet == 0 {
                let waiter = self.waiters.table.remove(&id).expect("exists");
                self.run_waiter(waiter.action);
            }
        }
    }

    /// Stops confirming for good: every waiter is answered `UNAVAILABLE`.
    pub(super) fn fence(&mut self, reason: String) {
        if self.fenced.is_some() {
            return;
        }
        self.fenced = Some(format!(
            "node is fenced after a storage failure and confirms nothing until restarted ({reason})"
        ));
        let message = self.fenced.clone().expect("just set");
        for state in self.logs.values_mut() {
            state.waiting.clear();
            state.unsent.clear();
        }
        let waiters = std::mem::take(&mut self.waiters.table);
        for (_, waiter) in waiters {
            self.fail_waiter(waiter.action, &message);
        }
        self.fail_parked_redrives(None, ErrorCode::Unavailable, &message);
        self.fence_cluster(&message);
    }

    /// Turns a queue operation's effects into records, timers, deliveries and dead letters.
    /// Returns the last index appended to the queue's log.
    /// The emptied vectors are kept for the next operation (see [`Node::take_effects`]).
    pub(super) fn apply_effects(
        &mut self,
        queue: QueueId,
        mut effects: Effects,
    ) -> Option<LogIndex> {
        for (deadline, timer) in effects.disarm.drain(..) {
            self.timers.disarm(deadline, timer);
        }
        for (deadline, timer) in effects.arm.drain(..) {
            self.timers.arm(deadline, timer);
        }
        let last_index = self.log_acks_and_removals(queue, &effects.acked, &effects.removed);
        self.hand_out_deliveries(queue, &mut effects.deliveries);
        for dead_letter in std::mem::take(&mut effects.dead_letters) {
            self.dead_letter(queue, dead_letter);
        }
        self.recycle_effects(effects);
        last_index
    }

    /// An empty [`Effects`] for a queue operation, with the capacity earlier operations left in
    /// it: every input runs one or two queue operations, and fresh vectors for each would cost
    /// several allocations per message.
    pub(super) fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.spare_effects)
    }

    /// Keeps `effects`' vectors, emptied (and trimmed after a large burst), for the next
    /// [`Node::take_effects`].
    fn recycle_effects(&mut self, mut effects: Effects) {
        /// Entries a kept vector may hold room for.
        const KEPT_CAPACITY_MAX: usize = 1_024;
        let Effects {
            deliveries,
            acked,
            removed,
            dead_letters,
            arm,
            disarm,
        } = &mut effects;
        deliveries.clear();
        deliveries.shrink_to(KEPT_CAPACITY_MAX);
        acked.clear();
        acked.shrink_to(KEPT_CAPACITY_MAX);
        removed.clear();
        removed.shrink_to(KEPT_CAPACITY_MAX);
        dead_letters.clear();
        dead_letters.shrink_to(KEPT_CAPACITY_MAX);
        arm.clear();
        arm.shrink_to(KEPT_CAPACITY_MAX);
        disarm.clear();
        disarm.shrink_to(KEPT_CAPACITY_MAX);
        // An operation that did not take the spare (it built its own) must not replace a spare
        // with more room.
        let room = |effects: &Effects| {
            effects.deliveries.capacity()
                + effects.acked.capacity()
                + effects.removed.capacity()
                + effects.dead_letters.capacity()
                + effects.arm.capacity()
                + effects.disarm.capacity()
        };
        if room(&effects) >= room(&self.spare_effects) {
            self.spare_effects = effects;
        }
    }

    fn log_acks_and_removals(
        &mut self,
        queue: QueueId,
        acked: &[(SubscriptionId, Sequence)],
        removed: &[(Sequence, RemoveReason)],
    ) -> Option<LogIndex> {
        let queue_state = self.queues.get(&queue)?;
        if !queue_state.settings.kind.is_durable() || (acked.is_empty() && removed.is_empty()) {
            return None;
        }
        let next_sequence = queue_state.next_sequence.0;
        // Usually one subscription acks and one reason removes: small vectors searched
        // linearly, not maps, so an ack costs no allocation beyond its record's own.
        let mut bodies: SmallVec<[QueueRecord; 2]> = SmallVec::new();
        let mut by_subscription: SmallVec<[(SubscriptionId, Vec<u64>); 1]> = SmallVec::new();
        for (subscription, sequence) in acked {
            // An ack of a message removed in the same operation needs no record of its own.
            if queue_state.messages.contains_key(*sequence) {
                group(&mut by_subscription, *subscription).push(sequence.0);
            }
        }
        by_subscription.sort_unstable_by_key(|(subscription, _)| *subscription);
        for (subscription, sequences) in by_subscription {
            let Some(name) = queue_state
                .subscriptions
                .get(&subscription)
                .map(|s| s.name.clone())
            else {
                continue;
            };
            bodies.push(QueueRecord {
                body: Some(queue_record::Body::Acked(Acked {
                    subscription: name,
                    sequences,
                    next_sequence,
                })),
            });
        }
        let mut by_reason: SmallVec<[(i32, Vec<u64>); 1]> = SmallVec::new();
        for (sequence, reason) in removed {
            group(&mut by_reason, *reason as i32).push(sequence.0);
        }
        by_reason.sort_unstable_by_key(|(reason, _)| *reason);
        for (reason, sequences) in by_reason {
            let removed = |sequences| QueueRecord {
                body: Some(queue_record::Body::Removed(Removed {
                    sequences,
                    reason,
                    next_sequence,
                })),
            };
            if sequences.len() <= REMOVED_PER_RECORD {
                bodies.push(removed(sequences));
                continue;
            }
            for chunk in sequences.chunks(REMOVED_PER_RECORD) {
                bodies.push(removed(chunk.to_vec()));
            }
        }
        let log = LogId::Queue(queue);
        let mut last = None;
        for body in bodies {
            let body = self.encoder.encode(&body);
            last = Some(self.append_record(log, body));
        }
        last
    }

    /// Hands every unsent record to storage, one append and one sync per log, and lets storage
    /// drop segments nothing needs any more.
    pub(super) fn flush_logs(&mut self) {
        if self.fenced.is_some() {
            return;
        }
        // Runs at the end of every `handle`: no allocation here beyond the records' own.
        let Node {
            logs,
            queues,
            commands,
            idempotency,
            ..
        } = self;
        for (log, state) in logs.iter_mut() {
            let log = *log;
            let first_needed = match log {
                LogId::Queue(queue) => queues.get(&queue).map(|queue| {
                    queue
                        .messages
                        .values()
                        .next()
                        .and_then(|message| message.log_index())
                        .unwrap_or(state.next_index)
                }),
                LogId::Metadata => None,
            };
            if !state.unsent.is_empty() {
                // The next batch is likely as large: start it at that size, not by doubling.
                let capacity = state.unsent.len();
                let records = std::mem::replace(&mut state.unsent, Vec::with_capacity(capacity));
                commands.push_back(Command::Storage(StorageRequest::Append { log, records }));
                commands.push_back(Command::Storage(StorageRequest::Sync { log }));
            }
            let Some(first_needed) = first_needed else {
                continue;
            };
            let considered = state.deleted_below.max(state.deletion_considered_at);
            if first_needed.0 <= considered.0 + 1024 {
                continue;
            }
            state.deletion_considered_at = first_needed;
            // Publish records of messages already gone still rebuild the idempotency table at
            // recovery: a retry after a restart must find them (krest-sim seed
            // 16548559470313174546 stored a retried message twice once they were deleted).
            let LogId::Queue(queue) = log else {
                continue;
            };
            let first_needed = idempotency
                .oldest_log_index(queue)
                .map_or(first_needed, |oldest| oldest.min(first_needed));
            if first_needed.0 > state.deleted_below.0 + 1024 {
                state.deleted_below = first_needed;
                commands.push_back(Command::Storage(StorageRequest::DeleteSegmentsBelow {
                    log,
                    index: first_needed,
                }));
            }
        }
    }

    /// Answers `request_id` with `Done` once every need is durable.
    pub(super) fn reply_done_when_durable(
        &mut self,
        conn: ConnId,
        request_id: u64,
        needs: &[(LogId, LogIndex)],
    ) {
        let frame = self.encode_reply(
            request_id,
            server_frame::Body::Done(krest_proto::client::Done {}),
        );
        self.when_durable(
            needs,
            WaiterAction::Client {
                conn,
                request_id,
                frame,
                confirms: 0,
            },
        );
    }

    /// Sends a frame that is already encoded (if the connection is still there).
    pub(super) fn send_frame_bytes(&mut self, conn: ConnId, frame: Bytes) {
        if self.connections.contains_key(&conn) {
            self.commands
                .push_back(Command::SendToClient { conn, frame });
        }
    }

    /// Encodes a reply frame.
    pub(super) fn encode_reply(&mut self, request_id: u64, body: server_frame::Body) -> Bytes {
        self.encoder.frame(&krest_proto::client::ServerFrame {
            request_id,
            body: Some(body),
        })
    }
}

/// The values grouped under `key` in `groups` (a new, empty group if it has none yet).
fn group<K: PartialEq, const N: usize>(
    groups: &mut SmallVec<[(K, Vec<u64>); N]>,
    key: K,
) -> &mut Vec<u64> {
    let position = match groups.iter().position(|(known, _)| *known == key) {
        Some(position) => position,
        None => {
            groups.push((key, Vec::new()));
            groups.len() - 1
        }
    };
    &mut groups[position].1
}
