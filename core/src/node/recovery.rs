//! Rebuilding the node from its logs after a restart.
//!
//! The metadata log gives queues and durable subscriptions; each queue log gives its messages,
//! which subscription acked what, and what was removed. A record that passed its checksum but
//! does not decode is refused: the node does not start on data it cannot understand.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use krest_proto::storage::{metadata_record, queue_record, MetadataRecord, QueueRecord};
use prost::Message as _;

use super::idempotency::Stored;
use super::moved_dead_letters::DeadLetterCopy;
use super::persistence::LogState;
use super::Node;
use crate::ids::{LogIndex, NodeId, ProducerId, QueueId, Sequence, SubscriptionId};
use crate::io::{Command, LogId, LogRecord, RaftState, StorageRequest};
use crate::queue::message::message_size_bytes;
use crate::queue::{Message, OrderKey, Queue, QueueSettings};
use crate::time::UnixMillis;

/// Why the node cannot start from what storage recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// A record passed its checksum but is not a valid record of its log.
    #[error("log {log}: record {index} cannot be decoded: {reason}")]
    UndecodableRecord {
        /// The log's name.
        log: String,
        /// The record's index.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
}

/// What the metadata log says about one queue.
struct DeclaredQueue {
    name: String,
    settings: QueueSettings,
    declared_at: LogIndex,
    subscriptions: BTreeSet<String>,
    /// The nodes holding its log, the serving one first (empty on a single node).
    replicas: Vec<NodeId>,
}

/// A node being rebuilt from its logs, handed over piece by piece: the metadata log first,
/// then each queue log, its records in index order, in as many pieces as storage likes (one
/// per segment file). Only the current piece is in memory, never the whole backlog: each
/// message keeps its payload while the payload memory budget has room (the oldest do, which
/// are delivered first), copied out of the piece; the others stay on disk and are read back
/// before delivery.
///
/// The first error stops the replay: later pieces are ignored and [`NodeRecovery::finish`]
/// returns it.
pub struct NodeRecovery {
    node: Node,
    /// The metadata records, until the first queue log arrives.
    metadata: Vec<LogRecord>,
    /// Queues declared by the metadata log and not replayed yet (`None` until it was read).
    declared: Option<BTreeMap<QueueId, DeclaredQueue>>,
    /// The queue log being replayed.
    current: Option<QueueReplay>,
    /// Logs whose queue is gone (deleted, the files not removed yet).
    orphans: Vec<LogId>,
    dead_letter_copies: Vec<DeadLetterCopy>,
    /// Payload bytes kept in memory so far, over every queue.
    resident_bytes: u64,
    /// The Raft states storage saved, by log.
    raft_states: BTreeMap<LogId, RaftState>,
    error: Option<RecoveryError>,
}

/// One queue log being replayed.
struct QueueReplay {
    queue: Queue,
    declaration: DeclaredQueue,
    acked: BTreeMap<String, BTreeSet<Sequence>>,
    next_sequence: u64,
    last_published: u64,
    first_index: Option<LogIndex>,
    last_index: Option<LogIndex>,
}

impl NodeRecovery {
    pub(super) fn new(node: Node) -> NodeRecovery {
        NodeRecovery {
            node,
            metadata: Vec::new(),
            declared: None,
            current: None,
            orphans: Vec::new(),
            dead_letter_copies: Vec::new(),
            resident_bytes: 0,
            raft_states: BTreeMap::new(),
            error: None,
        }
    }

    /// The Raft state storage saved for `log` (before any record is fed).
    pub fn raft_state(&mut self, log: LogId, state: RaftState) {
        assert!(
            self.declared.is_none() && self.metadata.is_empty(),
            "Raft states come before the records"
        );
        self.raft_states.insert(log, state);
    }

    /// The next records of `log`, in index order. Every piece of the metadata log comes
    /// before any queue log; the pieces of one log come one after the other.
    pub fn feed(&mut self, log: LogId, records: Vec<LogRecord>) {
        if self.error.is_some() {
            return;
        }
        if let Err(error) = self.try_feed(log, records) {
            self.error = Some(error);
        }
    }

    fn try_feed(&mut self, log: LogId, records: Vec<LogRecord>) -> Result<(), RecoveryError> {
        let LogId::Queue(queue) = log else {
            if records.is_empty() {
                return Ok(());
            }
            assert!(
                self.declared.is_none(),
                "the metadata log is recovered before the queue logs"
            );
            self.metadata.extend(records);
            return Ok(());
        };
        self.read_metadata()?;
        if self
            .current
            .as_ref()
            .is_some_and(|current| current.queue.id != queue)
        {
            self.finish_queue();
        }
        if self.current.is_none() {
            assert!(
                !self.node.queues.contains_key(&queue),
                "the pieces of one log come one after the other"
            );
            let declared = self.declared.as_mut().expect("read above");
            let Some(declaration) = declared.remove(&queue) else {
                if !self.orphans.contains(&log) {
                    self.orphans.push(log);
                }
                return Ok(());
            };
            self.current = Some(QueueReplay::new(queue, declaration));
        }
        let mut current = self.current.take().expect("set above");
        let replayed = self.replay(&mut current, &records);
        self.current = Some(current);
        replayed
    }

    /// Replays the metadata log, once, when the first queue log arrives (or at the end).
    fn read_metadata(&mut self) -> Result<(), RecoveryError> {
        if self.declared.is_some() {
            return Ok(());
        }
        let metadata = std::mem::take(&mut self.metadata);
        let clustered = self.node.config.cluster.voters(self.node.node_id.0).len() > 1;
        // In a cluster only what was committed is applied now (the rest when a leader says
        // it is); a single node's log is all committed.
        let saved = self
            .raft_states
            .get(&LogId::Metadata)
            .copied()
            .unwrap_or_default();
        let committed = match clustered {
            true => metadata.partition_point(|record| record.index <= saved.commit),
            false => metadata.len(),
        };
        let mut declared = self
            .node
            .replay_metadata(&metadata[..committed], clustered)?;
        match metadata.last() {
            Some(last) => {
                self.node
                    .logs
                    .insert(LogId::Metadata, LogState::recovered(last.index));
            }
            None => self.node.create_log(LogId::Metadata),
        }
        if clustered {
            let me = self.node.node_id;
            let catalog = declared
                .iter()
                .map(|(id, queue)| {
                    let entry = super::CatalogQueue {
                        name: queue.name.clone(),
                        kind: queue.settings.kind,
                        settings: queue.settings.to_wire(),
                        replicas: queue.replicas.clone(),
                    };
                    (*id, entry)
                })
                .collect();
            declared.retain(|_, queue| queue.replicas.first() == Some(&me));
            let saved = RaftState {
                commit: LogIndex(committed as u64),
                ..saved
            };
            self.node.start_cluster(saved, metadata, catalog);
        }
        self.declared = Some(declared);
        Ok(())
    }

    /// The node, rebuilt; or the first error met.
    pub fn finish(mut self) -> Result<Node, RecoveryError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.read_metadata()?;
        self.finish_queue();
        // Queues declared whose log holds nothing yet.
        let declared = std::mem::take(self.declared.as_mut().expect("read above"));
        for (queue, declaration) in declared {
            self.current = Some(QueueReplay::new(queue, declaration));
            self.finish_queue();
        }
        let mut node = self.node;
        node.settle_moved_dead_letters(self.dead_letter_copies);
        for orphan in self.orphans {
            // A log whose queue was deleted (the delete was logged, the files were not removed).
            node.commands
                .push_back(Command::Storage(StorageRequest::DeleteLog { log: orphan }));
        }
        Ok(node.recovered())
    }
}

impl Node {
    /// The queues `records` declare. In a cluster (`clustered`) the records are committed
    /// entries of the metadata group, applied by the rules of `Node::apply_catalog_record`: a
    /// leader's empty entry is skipped, a second declaration of a name is ignored.
    fn replay_metadata(
        &mut self,
        records: &[LogRecord],
        clustered: bool,
    ) -> Result<BTreeMap<QueueId, DeclaredQueue>, RecoveryError> {
        let mut declared: BTreeMap<QueueId, DeclaredQueue> = BTreeMap::new();
        let mut names: BTreeMap<String, QueueId> = BTreeMap::new();
        for record in records {
            if clustered && record.body.is_empty() {
                continue;
            }
            let decoded = MetadataRecord::decode(record.body.clone())
                .map_err(|error| undecodable(LogId::Metadata, record, error))?;
            match decoded.body {
                Some(metadata_record::Body::QueueDeclared(queue)) => {
                    let settings = QueueSettings::resolve(
                        &queue.name,
                        &queue.settings.unwrap_or_default(),
                        &self.config.queue_defaults,
                        u64::MAX,
                        None,
                    )
                    .map_err(|error| undecodable(LogId::Metadata, record, error.0))?;
                    // Ids come from a counter starting at 1, and a live name has one queue:
                    // anything else was not written by a node.
                    let id = QueueId(queue.queue_id);
                    let next_id = queue.queue_id.checked_add(1).filter(|_| id.0 != 0);
                    let Some(next_id) = next_id else {
                        let reason = format!("queue id {id} is never given out");
                        return Err(undecodable(LogId::Metadata, record, reason));
                    };
                    if clustered && (declared.contains_key(&id) || names.contains_key(&queue.name))
                    {
                        self.next_queue_id = self.next_queue_id.max(next_id);
                        continue; // the first declaration stands, on every node
                    }
                    if clustered && queue.replicas.is_empty() {
                        let reason = format!("queue {id} '{}' has no placement", queue.name);
                        return Err(undecodable(LogId::Metadata, record, reason));
                    }
                    if declared.contains_key(&id) || names.contains_key(&queue.name) {
                        let reason = format!("queue {id} '{}' is declared twice", queue.name);
                        return Err(undecodable(LogId::Metadata, record, reason));
                    }
                    self.next_queue_id = self.next_queue_id.max(next_id);
                    names.insert(queue.name.clone(), id);
                    declared.insert(
                        QueueId(queue.queue_id),
                        DeclaredQueue {
                            name: queue.name,
                            settings,
                            declared_at: record.index,
                            subscriptions: BTreeSet::new(),
                            replicas: queue.replicas.iter().map(|id| NodeId(*id)).collect(),
                        },
                    );
                }
                Some(metadata_record::Body::QueueDeleted(queue)) => {
                    if let Some(gone) = declared.remove(&QueueId(queue.queue_id)) {
                        names.remove(&gone.name);
                    }
                }
                Some(metadata_record::Body::SubscriptionDeclared(subscription)) => {
                    if let Some(queue) = declared.get_mut(&QueueId(subscription.queue_id)) {
                        queue.subscriptions.insert(subscription.name);
                    }
                }
                Some(metadata_record::Body::SubscriptionDeleted(subscription)) => {
                    if let Some(queue) = declared.get_mut(&QueueId(subscription.queue_id)) {
                        queue.subscriptions.remove(&subscription.name);
                    }
                }
                None => return Err(undecodable(LogId::Metadata, record, "empty record")),
            }
        }
        Ok(declared)
    }
}

impl QueueReplay {
    fn new(id: QueueId, declaration: DeclaredQueue) -> QueueReplay {
        let mut queue = Queue::new(id, declaration.name.clone(), declaration.settings.clone());
        queue.declared_at = Some(declaration.declared_at);
        QueueReplay {
            queue,
            declaration,
            acked: BTreeMap::new(),
            next_sequence: 1,
            last_published: 0,
            first_index: None,
            last_index: None,
        }
    }
}

impl NodeRecovery {
    /// Replays the next records of the current queue's log.
    fn replay(
        &mut self,
        replay: &mut QueueReplay,
        records: &[LogRecord],
    ) -> Result<(), RecoveryError> {
        let id = replay.queue.id;
        let log = LogId::Queue(id);
        let budget = self.node.config.storage.payload_memory_bytes;
        for record in records {
            replay.first_index.get_or_insert(record.index);
            replay.last_index = Some(record.index);
            let decoded = QueueRecord::decode(record.body.clone())
                .map_err(|error| undecodable(log, record, error))?;
            match decoded.body {
                Some(queue_record::Body::Publish(stored)) => {
                    // Sequences start at 1 and each publish record carries a higher one.
                    if stored.sequence <= replay.last_published || stored.sequence == u64::MAX {
                        let reason = format!(
                            "a publish of sequence {} follows sequence {}",
                            stored.sequence, replay.last_published
                        );
                        return Err(undecodable(log, record, reason));
                    }
                    replay.last_published = stored.sequence;
                    replay.next_sequence = replay.next_sequence.max(stored.sequence + 1);
                    let producer = (stored.producer_id != 0)
                        .then_some((ProducerId(stored.producer_id), stored.producer_sequence));
                    let forget = crate::planted::active(
                        crate::planted::PlantedBug::ForgetIdempotencyAfterRestart,
                    );
                    if let Some((producer, producer_sequence)) = producer.filter(|_| !forget) {
                        self.node.idempotency.record(
                            producer,
                            producer_sequence,
                            Stored {
                                queue: id,
                                sequence: Sequence(stored.sequence),
                                log_index: Some(record.index),
                            },
                        );
                    }
                    self.dead_letter_copies.extend(DeadLetterCopy::from_stored(
                        &stored.headers,
                        &stored.payload,
                    ));
                    let size_bytes = message_size_bytes(&stored.payload, &stored.headers);
                    let message = Message::new(
                        Sequence(stored.sequence),
                        stored.headers,
                        UnixMillis(stored.deliver_at_unix_ms),
                        UnixMillis(stored.published_at_unix_ms),
                        Some(record.index),
                        size_bytes,
                    );
                    let queue = &mut replay.queue;
                    queue.bytes += size_bytes;
                    if self.resident_bytes.saturating_add(size_bytes) <= budget {
                        // Copied out: the piece storage read (a whole segment) is freed
                        // once replayed, whatever is kept.
                        self.resident_bytes += size_bytes;
                        queue.resident_bytes += size_bytes;
                        let payload = Bytes::copy_from_slice(&stored.payload);
                        queue.payloads.insert(message.sequence, payload);
                    }
                    queue.messages.insert(message.sequence, message);
                }
                Some(queue_record::Body::Acked(ack)) => {
                    check_next_sequence(ack.next_sequence, log, record)?;
                    replay.next_sequence = replay.next_sequence.max(ack.next_sequence);
                    if crate::planted::active(crate::planted::PlantedBug::ForgetAcksAfterRestart) {
                        continue;
                    }
                    replay
                        .acked
                        .entry(ack.subscription)
                        .or_default()
                        .extend(ack.sequences.into_iter().map(Sequence));
                }
                Some(queue_record::Body::Removed(removed)) => {
                    check_next_sequence(removed.next_sequence, log, record)?;
                    replay.next_sequence = replay.next_sequence.max(removed.next_sequence);
                    let consumed =
                        removed.reason == krest_proto::storage::RemoveReason::Consumed as i32;
                    if consumed
                        && crate::planted::active(
                            crate::planted::PlantedBug::ForgetAcksAfterRestart,
                        )
                    {
                        continue;
                    }
                    let queue = &mut replay.queue;
                    for sequence in removed.sequences {
                        let sequence = Sequence(sequence);
                        if let Some(message) = queue.messages.remove(sequence) {
                            queue.bytes -= message.size_bytes();
                            if queue.payloads.remove(sequence).is_some() {
                                queue.resident_bytes -= message.size_bytes();
                                self.resident_bytes -= message.size_bytes();
                            }
                        }
                    }
                }
                Some(queue_record::Body::SubscriptionDeclared(subscription)) => {
                    replay.declaration.subscriptions.insert(subscription.name);
                }
                None => return Err(undecodable(log, record, "empty record")),
            }
        }
        Ok(())
    }

    /// Ends the replay of the current queue's log: order keys, subscriptions and what they
    /// acked, the log's state; the queue joins the node.
    fn finish_queue(&mut self) {
        let Some(replay) = self.current.take() else {
            return;
        };
        let QueueReplay {
            mut queue,
            declaration,
            acked,
            next_sequence,
            first_index,
            last_index,
            ..
        } = replay;
        let id = queue.id;
        let log = LogId::Queue(id);
        let node = &mut self.node;
        queue.next_sequence = Sequence(next_sequence);
        let is_delay = queue.is_delay();
        for message in queue.messages.values_mut() {
            let key = OrderKey {
                due: if is_delay {
                    message.deliver_at
                } else {
                    UnixMillis(0)
                },
                sequence: message.sequence,
            };
            message.set_order_due(Some(key.due));
            if is_delay {
                queue.delay_index.insert(key);
            }
        }
        for name in &declaration.subscriptions {
            let subscription = SubscriptionId(node.next_subscription_id);
            node.next_subscription_id += 1;
            queue.add_subscription(subscription, name.clone(), true, false);
            let Some(acked) = acked.get(name) else {
                continue;
            };
            for sequence in acked {
                if let Some(message) = queue.messages.get_mut(*sequence) {
                    message.pending_subscriptions -= 1;
                    queue
                        .subscriptions
                        .get_mut(&subscription)
                        .expect("just added")
                        .skip
                        .insert(*sequence);
                }
            }
        }
        match (first_index, last_index) {
            (Some(first), Some(last)) => {
                let mut state = LogState::recovered(last);
                state.deleted_below = first;
                node.logs.insert(log, state);
            }
            _ => node.create_log(log),
        }
        // Acked by every subscription before the crash, but the removal record was lost.
        let unneeded: Vec<Sequence> = if queue.subscriptions.is_empty() {
            Vec::new()
        } else {
            queue
                .messages
                .values()
                .filter(|message| message.pending_subscriptions == 0)
                .map(|message| message.sequence)
                .collect()
        };
        node.queue_names.insert(declaration.name, id);
        node.queues.insert(id, queue);
        node.account_payloads(id);
        node.with_queue(id, |queue, effects| {
            for sequence in unneeded {
                queue.remove_message(
                    sequence,
                    krest_proto::storage::RemoveReason::Consumed,
                    effects,
                );
            }
        });
        node.account_payloads(id);
        self.resident_bytes = node.payload_resident_bytes;
    }
}

/// A next sequence that the queue could still take (the last sequence has no successor).
fn check_next_sequence(
    next_sequence: u64,
    log: LogId,
    record: &LogRecord,
) -> Result<(), RecoveryError> {
    if next_sequence == u64::MAX {
        let reason = format!("next sequence {next_sequence} leaves no sequence to take");
        return Err(undecodable(log, record, reason));
    }
    Ok(())
}

fn undecodable(log: LogId, record: &LogRecord, reason: impl ToString) -> RecoveryError {
    RecoveryError::UndecodableRecord {
        log: log.name(),
        index: record.index.0,
        reason: reason.to_string(),
    }
}
