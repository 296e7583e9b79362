//! Rebuilding the node from its logs after a restart.
//!
//! The metadata log gives queues and durable subscriptions; each queue log gives its messages,
//! which subscription acked what, and what was removed. A record that passed its checksum but
//! does not decode is refused: the node does not start on data it cannot understand.

use std::collections::{BTreeMap, BTreeSet};

use krest_proto::storage::{metadata_record, queue_record, MetadataRecord, QueueRecord};
use prost::Message as _;

use super::idempotency::Stored;
use super::moved_dead_letters::DeadLetterCopy;
use super::persistence::LogState;
use super::Node;
use crate::ids::{LogIndex, ProducerId, QueueId, Sequence, SubscriptionId};
use crate::io::{Command, LogId, LogRecord, Recovered, StorageRequest};
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
}

impl Node {
    pub(super) fn recover(&mut self, recovered: Recovered) -> Result<(), RecoveryError> {
        let mut logs: BTreeMap<LogId, Vec<LogRecord>> = recovered.logs.into_iter().collect();
        let metadata = logs.remove(&LogId::Metadata).unwrap_or_default();
        let declared = self.replay_metadata(&metadata)?;
        match metadata.last() {
            Some(last) => {
                self.logs
                    .insert(LogId::Metadata, LogState::recovered(last.index));
            }
            None => self.create_log(LogId::Metadata),
        }
        let mut dead_letter_copies = Vec::new();
        for (id, declaration) in declared {
            let records = logs.remove(&LogId::Queue(id));
            self.recover_queue(id, declaration, records.as_deref(), &mut dead_letter_copies)?;
        }
        self.settle_moved_dead_letters(dead_letter_copies);
        for orphan in logs.into_keys() {
            // A log whose queue was deleted (the delete was logged, the files were not removed).
            self.commands
                .push_back(Command::Storage(StorageRequest::DeleteLog { log: orphan }));
        }
        Ok(())
    }

    fn replay_metadata(
        &mut self,
        records: &[LogRecord],
    ) -> Result<BTreeMap<QueueId, DeclaredQueue>, RecoveryError> {
        let mut declared: BTreeMap<QueueId, DeclaredQueue> = BTreeMap::new();
        let mut names: BTreeMap<String, QueueId> = BTreeMap::new();
        for record in records {
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

    fn recover_queue(
        &mut self,
        id: QueueId,
        declaration: DeclaredQueue,
        records: Option<&[LogRecord]>,
        dead_letter_copies: &mut Vec<DeadLetterCopy>,
    ) -> Result<(), RecoveryError> {
        let log = LogId::Queue(id);
        let mut queue = Queue::new(id, declaration.name.clone(), declaration.settings);
        queue.declared_at = Some(declaration.declared_at);
        let mut acked: BTreeMap<String, BTreeSet<Sequence>> = BTreeMap::new();
        let mut next_sequence = 1u64;
        let mut last_published = 0u64;
        for record in records.unwrap_or_default() {
            let decoded = QueueRecord::decode(record.body.clone())
                .map_err(|error| undecodable(log, record, error))?;
            match decoded.body {
                Some(queue_record::Body::Publish(stored)) => {
                    // Sequences start at 1 and each publish record carries a higher one.
                    if stored.sequence <= last_published || stored.sequence == u64::MAX {
                        let reason = format!(
                            "a publish of sequence {} follows sequence {last_published}",
                            stored.sequence
                        );
                        return Err(undecodable(log, record, reason));
                    }
                    last_published = stored.sequence;
                    next_sequence = next_sequence.max(stored.sequence + 1);
                    let producer = (stored.producer_id != 0)
                        .then_some((ProducerId(stored.producer_id), stored.producer_sequence));
                    let forget = crate::planted::active(
                        crate::planted::PlantedBug::ForgetIdempotencyAfterRestart,
                    );
                    if let Some((producer, producer_sequence)) = producer.filter(|_| !forget) {
                        self.idempotency.record(
                            producer,
                            producer_sequence,
                            Stored {
                                queue: id,
                                sequence: Sequence(stored.sequence),
                                log_index: Some(record.index),
                            },
                        );
                    }
                    dead_letter_copies.extend(DeadLetterCopy::from_stored(
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
                    queue.bytes += message.size_bytes();
                    queue.payloads.insert(message.sequence, stored.payload);
                    queue.messages.insert(message.sequence, message);
                }
                Some(queue_record::Body::Acked(ack)) => {
                    check_next_sequence(ack.next_sequence, log, record)?;
                    next_sequence = next_sequence.max(ack.next_sequence);
                    if crate::planted::active(crate::planted::PlantedBug::ForgetAcksAfterRestart) {
                        continue;
                    }
                    acked
                        .entry(ack.subscription)
                        .or_default()
                        .extend(ack.sequences.into_iter().map(Sequence));
                }
                Some(queue_record::Body::Removed(removed)) => {
                    check_next_sequence(removed.next_sequence, log, record)?;
                    next_sequence = next_sequence.max(removed.next_sequence);
                    let consumed =
                        removed.reason == krest_proto::storage::RemoveReason::Consumed as i32;
                    if consumed
                        && crate::planted::active(
                            crate::planted::PlantedBug::ForgetAcksAfterRestart,
                        )
                    {
                        continue;
                    }
                    for sequence in removed.sequences {
                        if let Some(message) = queue.messages.remove(Sequence(sequence)) {
                            queue.bytes -= message.size_bytes();
                            queue.payloads.remove(Sequence(sequence));
                        }
                    }
                }
                None => return Err(undecodable(log, record, "empty record")),
            }
        }
        queue.next_sequence = Sequence(next_sequence);
        // Every payload is in memory now; flush makes room if they pass the budget.
        queue.resident_bytes = queue.bytes;
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
            let subscription = SubscriptionId(self.next_subscription_id);
            self.next_subscription_id += 1;
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
        match records.and_then(|records| records.last()) {
            Some(last) => {
                let mut state = LogState::recovered(last.index);
                state.deleted_below = records
                    .and_then(|records| records.first())
                    .map(|first| first.index)
                    .unwrap_or_default();
                self.logs.insert(log, state);
            }
            None => self.create_log(log),
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
        self.queue_names.insert(declaration.name, id);
        self.queues.insert(id, queue);
        self.with_queue(id, |queue, effects| {
            for sequence in unneeded {
                queue.remove_message(
                    sequence,
                    krest_proto::storage::RemoveReason::Consumed,
                    effects,
                );
            }
        });
        Ok(())
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
