//! Payloads in memory and on disk: the queue's side of the payload memory budget
//! (`storage.payload_memory_bytes`, enforced by the node across queues).
//!
//! A durable message's publish record is in its queue's log, so its payload may leave memory at
//! any time and be read back later. The queue keeps the payloads in memory in `payloads`, by
//! sequence, apart from the messages, and their total size in `resident_bytes`.
//!
//! Rules kept here:
//! - only durable messages are ever without a payload; temporary queues have no log to read from;
//! - a message a subscription holds (in flight, ready or waiting for redelivery) is never evicted:
//!   it may be redelivered or dead-lettered at any moment, and both need the payload;
//! - dispatch never delivers a message without its payload: the subscription stops there and
//!   the message goes into `payloads_wanted`; the node reads it (and the ones after it, in
//!   delivery order) back and dispatches again.

use bytes::Bytes;

use super::Queue;
use crate::ids::{LogIndex, Sequence};
use crate::planted::{self, PlantedBug};
use crate::queue::OrderKey;

impl Queue {
    /// Whether some subscription holds `sequence` (in flight, ready or waiting to be
    /// redelivered).
    pub fn is_held(&self, sequence: Sequence) -> bool {
        self.subscriptions.values().any(|subscription| {
            subscription.in_flight.contains_key(sequence)
                || subscription.ready.contains_key(&sequence)
                || subscription.waiting.contains_key(&sequence)
        })
    }

    /// Whether the message is stored without its payload.
    pub fn payload_on_disk(&self, sequence: Sequence) -> bool {
        self.has_payloads_on_disk()
            && self.messages.contains_key(sequence)
            && !self.payloads.contains_key(sequence)
    }

    /// Whether some message has its payload on disk only (cheap: the usual answer is no, and
    /// then dispatch checks nothing per message).
    pub fn has_payloads_on_disk(&self) -> bool {
        self.payloads.len() < self.messages.len()
    }

    /// Puts back the payload read from the publish record at `log_index`. Returns whether it
    /// was used: not when the message is gone, is resident already, or is another record.
    pub fn fill_payload(
        &mut self,
        sequence: Sequence,
        log_index: LogIndex,
        payload: Bytes,
    ) -> bool {
        if planted::active(PlantedBug::MixUpPayloadsReadBack) {
            let next = self
                .messages
                .range(sequence.next()..)
                .find(|(sequence, _)| !self.payloads.contains_key(*sequence))
                .map(|(sequence, message)| (sequence, message.log_index()));
            if let Some((next, Some(next_index))) = next {
                return self.fill_payload_exactly(next, next_index, payload);
            }
        }
        self.fill_payload_exactly(sequence, log_index, payload)
    }

    fn fill_payload_exactly(
        &mut self,
        sequence: Sequence,
        log_index: LogIndex,
        payload: Bytes,
    ) -> bool {
        let Some(message) = self.messages.get(sequence) else {
            return false;
        };
        if self.payloads.contains_key(sequence) || message.log_index() != Some(log_index) {
            return false;
        }
        self.resident_bytes += message.size_bytes();
        self.payloads.insert(sequence, payload);
        self.payloads_read_recently = true;
        true
    }

    /// Drops payloads, newest message first, until `bytes_wanted` are freed or nothing more
    /// may go (held messages stay). Returns the bytes freed.
    pub fn evict_payloads(&mut self, bytes_wanted: u64) -> u64 {
        if bytes_wanted == 0 || !self.settings.kind.is_durable() {
            return 0;
        }
        let mut freed = 0;
        let mut evicted = Vec::new();
        for (sequence, _) in self.payloads.iter().rev() {
            if freed >= bytes_wanted {
                break;
            }
            if self.is_held(sequence) {
                continue;
            }
            let message = self
                .messages
                .get(sequence)
                .expect("a payload belongs to a stored message");
            assert!(
                message.log_index().is_some(),
                "only messages with a log record leave memory"
            );
            freed += message.size_bytes();
            evicted.push(sequence);
        }
        for sequence in evicted {
            self.payloads.remove(sequence);
        }
        self.resident_bytes -= freed;
        freed
    }

    /// The log indexes of the payloads to read next: the lowest wanted message and the
    /// messages on disk that follow it in delivery order (sequence order, or deliver-at order
    /// in a delay queue), at most `messages_max` and, past the first, `bytes_max` bytes; then
    /// the other wanted messages within the same bounds. Ascending; empty when nothing is
    /// wanted. Looks at no more than `4 × messages_max` messages after the first. Each comes
    /// with the index of its publish record, in ascending order of those.
    pub fn payloads_to_read(
        &mut self,
        messages_max: usize,
        bytes_max: u64,
    ) -> Vec<(Sequence, LogIndex)> {
        let Some(first) = self.payloads_wanted.first().copied() else {
            return Vec::new();
        };
        let examined_max = messages_max.saturating_mul(4);
        let following: Box<dyn Iterator<Item = Sequence> + '_> = if self.is_delay() {
            let from = self
                .messages
                .get(first)
                .and_then(|message| message.order_key())
                .unwrap_or(OrderKey {
                    due: crate::time::UnixMillis(0),
                    sequence: first,
                });
            Box::new(self.delay_index.iter_from(from).map(|key| key.sequence))
        } else {
            Box::new(self.messages.range(first..).map(|(sequence, _)| sequence))
        };
        let candidates = std::iter::once(first)
            .chain(following.take(examined_max))
            .chain(self.payloads_wanted.iter().skip(1).copied());
        let mut chosen: Vec<(Sequence, LogIndex)> = Vec::new();
        let mut bytes = 0u64;
        for sequence in candidates {
            if chosen.len() >= messages_max || (!chosen.is_empty() && bytes >= bytes_max) {
                break;
            }
            let Some(message) = self.messages.get(sequence) else {
                continue;
            };
            if let (false, Some(index)) =
                (self.payloads.contains_key(sequence), message.log_index())
            {
                if !chosen.contains(&(sequence, index)) {
                    bytes += message.size_bytes();
                    chosen.push((sequence, index));
                }
            }
        }
        chosen.sort_unstable_by_key(|(_, index)| *index);
        chosen
    }
}
