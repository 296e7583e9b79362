//! Payloads in memory and on disk: the queue's side of the payload memory budget
//! (`storage.payload_memory_bytes`, enforced by the node across queues).
//!
//! A durable message's publish record is in its queue's log, so its payload may leave memory at
//! any time and be read back later. The queue keeps, per message, either the payload or nothing
//! (`Message::payload` is `None`), and the set of resident messages with their total size.
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
            subscription.in_flight.contains_key(&sequence)
                || subscription.ready.contains_key(&sequence)
                || subscription.waiting.contains_key(&sequence)
        })
    }

    /// Whether the message is stored without its payload.
    pub fn payload_on_disk(&self, sequence: Sequence) -> bool {
        self.resident.is_some()
            && self
                .messages
                .get(&sequence)
                .is_some_and(|message| message.payload.is_none())
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
                .find(|(_, message)| message.payload.is_none())
                .map(|(sequence, message)| (*sequence, message.log_index));
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
        let Some(message) = self.messages.get_mut(&sequence) else {
            return false;
        };
        if message.payload.is_some() || message.log_index != Some(log_index) {
            return false;
        }
        message.payload = Some(payload);
        self.resident_bytes += message.size_bytes;
        self.track_residents().insert(sequence);
        self.payloads_read_recently = true;
        true
    }

    /// The set of messages with their payload in memory, built from the messages the first
    /// time it is needed (while it is `None`, every message has its payload).
    pub fn track_residents(&mut self) -> &mut std::collections::BTreeSet<Sequence> {
        let messages = &self.messages;
        self.resident.get_or_insert_with(|| {
            messages
                .iter()
                .filter(|(_, message)| message.payload.is_some())
                .map(|(sequence, _)| *sequence)
                .collect()
        })
    }

    /// Whether the message is kept in memory by this queue's tracking (`None`: all are).
    pub fn tracked_as_resident(&self, sequence: Sequence) -> bool {
        match &self.resident {
            None => self.messages.contains_key(&sequence),
            Some(resident) => resident.contains(&sequence),
        }
    }

    /// Drops payloads, newest message first, until `bytes_wanted` are freed or nothing more
    /// may go (held messages stay). Returns the bytes freed.
    pub fn evict_payloads(&mut self, bytes_wanted: u64) -> u64 {
        let mut freed = 0;
        let mut below: Option<Sequence> = None;
        if bytes_wanted > 0 && self.resident_bytes > 0 {
            self.track_residents();
        }
        while freed < bytes_wanted {
            let Some(resident) = &self.resident else {
                break;
            };
            let candidate = match below {
                None => resident.last().copied(),
                Some(bound) => resident.range(..bound).next_back().copied(),
            };
            let Some(sequence) = candidate else {
                break;
            };
            below = Some(sequence);
            if self.is_held(sequence) {
                continue;
            }
            let message = self
                .messages
                .get_mut(&sequence)
                .expect("resident messages are stored");
            assert!(
                message.log_index.is_some(),
                "only messages with a log record leave memory"
            );
            message.payload = None;
            let size_bytes = message.size_bytes;
            self.track_residents().remove(&sequence);
            self.resident_bytes -= size_bytes;
            freed += size_bytes;
        }
        freed
    }

    /// The log indexes of the payloads to read next: the lowest wanted message and the
    /// messages on disk that follow it in delivery order (sequence order, or deliver-at order
    /// in a delay queue), at most `messages_max` and, past the first, `bytes_max` bytes; then
    /// the other wanted messages within the same bounds. Ascending; empty when nothing is
    /// wanted. Looks at no more than `4 × messages_max` messages after the first. Each comes
    /// with the index of its publish record, in ascending order of those.
    pub fn payloads_to_read(
        &self,
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
                .get(&first)
                .and_then(|message| message.order_key)
                .unwrap_or(OrderKey {
                    due: crate::time::UnixMillis(0),
                    sequence: first,
                });
            Box::new(self.delay_index.range(from..).map(|key| key.sequence))
        } else {
            Box::new(self.messages.range(first..).map(|(sequence, _)| *sequence))
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
            let Some(message) = self.messages.get(&sequence) else {
                continue;
            };
            if let (None, Some(index)) = (&message.payload, message.log_index) {
                if !chosen.contains(&(sequence, index)) {
                    bytes += message.size_bytes;
                    chosen.push((sequence, index));
                }
            }
        }
        chosen.sort_unstable_by_key(|(_, index)| *index);
        chosen
    }
}
