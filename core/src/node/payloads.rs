//! The payload memory budget (`storage.payload_memory_bytes`): durable payloads beyond it live
//! only in their queue's log and are read back just before delivery, so a backlog larger than
//! memory is published and consumed in bounded memory.
//!
//! How memory stays near the budget:
//! - a durable message is published with its payload in memory only if it fits the budget;
//!   otherwise its log record is the only copy (`store_message`);
//! - when a subscription reaches a message whose payload is on disk, dispatch stops there and
//!   the node asks storage for that record and those after it in delivery order, one read per
//!   queue at a time, at most [`READ_MESSAGES_MAX`] messages and [`READ_BYTES_MAX`] bytes;
//! - reads may pass the budget by their size; at the end of every `handle` the node drops
//!   payloads again, newest first, from queues that are not being read back before those that
//!   are, never one a subscription holds, until the total fits.
//!
//! So the payloads in memory stay within the budget plus one read per queue being consumed
//! from disk plus what consumers hold, and every message still reaches its consumers in order.

use krest_proto::storage::{queue_record, QueueRecord};
use prost::Message as _;

use super::Node;
use crate::ids::{QueueId, Sequence};
use crate::io::{Command, LogId, LogRecord, StorageRequest};

/// Most messages one read brings back.
pub(super) const READ_MESSAGES_MAX: usize = 256;

/// Most bytes one read brings back (past its first message, which is always read).
pub(super) const READ_BYTES_MAX: u64 = 1024 * 1024;

/// Payload reads, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PayloadReadCounters {
    /// Reads asked of storage.
    pub reads: u64,
    /// Payloads put back in memory.
    pub payloads: u64,
    /// Bytes of those payloads (and their headers).
    pub bytes: u64,
}

impl Node {
    /// Whether a new durable payload of `size_bytes` fits the budget.
    pub(super) fn payload_fits(&self, size_bytes: u64) -> bool {
        self.payload_resident_bytes.saturating_add(size_bytes)
            <= self.config.storage.payload_memory_bytes
    }

    /// Brings the node's total up to date with what `queue` has in memory now.
    pub(super) fn account_payloads(&mut self, queue: QueueId) {
        let Some(queue_state) = self.queues.get_mut(&queue) else {
            return;
        };
        self.payload_resident_bytes -= queue_state.resident_bytes_counted;
        self.payload_resident_bytes += queue_state.resident_bytes;
        queue_state.resident_bytes_counted = queue_state.resident_bytes;
    }

    /// Payload bytes of durable messages in memory (the budget's measure).
    pub(super) fn payload_resident_bytes(&self) -> u64 {
        self.payload_resident_bytes
    }

    /// Asks storage for the payloads the queues' subscriptions stopped at (one read per queue
    /// at a time; a queue whose read is out waits for it).
    pub(super) fn request_payload_reads(&mut self) {
        if self.fenced.is_some() {
            return;
        }
        let wanted = std::mem::take(&mut self.payloads_wanted_queues);
        for queue in wanted {
            let Some(queue_state) = self.queues.get_mut(&queue) else {
                continue;
            };
            if !queue_state.payload_read.is_empty() {
                continue;
            }
            let wanted = queue_state.payloads_to_read(READ_MESSAGES_MAX, READ_BYTES_MAX);
            queue_state.payloads_wanted.clear();
            if wanted.is_empty() {
                continue;
            }
            let indexes = wanted.iter().map(|(_, index)| *index).collect();
            queue_state.payload_read = wanted;
            self.payload_reads.reads += 1;
            self.commands
                .push_back(Command::Storage(StorageRequest::Read {
                    log: LogId::Queue(queue),
                    indexes,
                }));
        }
    }

    /// Storage read records back: put the payloads of the messages still stored in memory and
    /// dispatch the queue again. A record that does not decode, or a message asked for whose
    /// payload did not come back, is corruption: the node fences.
    pub(super) fn on_payloads_read(&mut self, log: LogId, records: Vec<LogRecord>) {
        let LogId::Queue(queue) = log else {
            return;
        };
        let Some(queue_state) = self.queues.get_mut(&queue) else {
            return; // deleted meanwhile
        };
        let asked = std::mem::take(&mut queue_state.payload_read);
        let mut corrupt = None;
        for record in records {
            match QueueRecord::decode(record.body.clone()) {
                Ok(QueueRecord {
                    body: Some(queue_record::Body::Publish(stored)),
                }) => {
                    let size = queue_state
                        .messages
                        .get(Sequence(stored.sequence))
                        .map_or(0, |message| message.size_bytes());
                    if queue_state.fill_payload(
                        Sequence(stored.sequence),
                        record.index,
                        stored.payload,
                    ) {
                        self.payload_reads.payloads += 1;
                        self.payload_reads.bytes += size;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    corrupt = Some(format!(
                        "record {} of log {} read back does not decode: {error}",
                        record.index.0,
                        log.name()
                    ));
                    break;
                }
            }
        }
        // Every message asked for and still stored must have its payload back: a record that
        // is missing, or is not that message's publish, is corruption, and reading it again
        // would only loop.
        if corrupt.is_none() {
            let queue_state = self.queues.get(&queue).expect("looked up above");
            corrupt = asked
                .iter()
                .find(|(sequence, index)| {
                    queue_state.messages.get(*sequence).is_some_and(|message| {
                        !queue_state.payloads.contains_key(*sequence)
                            && message.log_index() == Some(*index)
                    })
                })
                .map(|(sequence, index)| {
                    format!(
                        "record {} of log {} read back is not the publish of message {}",
                        index.0,
                        log.name(),
                        sequence.0
                    )
                });
        }
        self.dirty.insert(queue);
        self.account_payloads(queue);
        if let Some(reason) = corrupt {
            self.fence(reason);
            return;
        }
        // Before the end of this `handle` makes room again: what came back is still here.
        self.resume_redrives(queue);
    }

    /// Drops payloads until the total fits the budget: first from queues not being read back
    /// (their newest messages are the furthest from delivery), then from the others. A queue
    /// counts as being read back from its last read until the next time room is made.
    pub(super) fn make_payload_room(&mut self) {
        let budget = self.config.storage.payload_memory_bytes;
        // A fenced node hands no more records to storage: its payloads must stay.
        if self.payload_resident_bytes <= budget || self.fenced.is_some() {
            return;
        }
        for reading_too in [false, true] {
            let mut next = self.queues.keys().next().copied();
            while let Some(queue) = next {
                if self.payload_resident_bytes <= budget {
                    break;
                }
                next = self
                    .queues
                    .range((std::ops::Bound::Excluded(queue), std::ops::Bound::Unbounded))
                    .next()
                    .map(|(id, _)| *id);
                let queue_state = self.queues.get_mut(&queue).expect("listed");
                let reading =
                    !queue_state.payload_read.is_empty() || queue_state.payloads_read_recently;
                if reading && !reading_too {
                    continue;
                }
                let excess = self.payload_resident_bytes - budget;
                queue_state.evict_payloads(excess);
                self.account_payloads(queue);
            }
        }
        for queue in self.queues.values_mut() {
            queue.payloads_read_recently = false;
        }
    }
}
