//! Queues: an ordered store of messages plus the subscriptions that consume it.
//!
//! A queue knows nothing of connections, logs or frames. Its methods take `now`, change state,
//! and report what follows in [`Effects`] (deliveries to send, acks and removals to log, dead
//! letters to move, timers to arm); the node turns those into commands.
//!
//! Invariants kept here:
//! - sequences are strictly increasing and never reused;
//! - a message becomes deliverable (gets its order key) only when it is durable, in sequence
//!   order; in a delay queue its order key is never earlier than its deliver-at;
//! - `pending_subscriptions` of a message is the number of subscriptions that still need it; a
//!   message no subscription needs is removed, unless the queue has no subscription at all (then
//!   it is kept for the first one);
//! - `bytes` is the sum of the stored messages' sizes;
//! - `payloads` holds a payload for every message of a temporary queue and for the durable
//!   messages whose payload is in memory, and for nothing else; `resident_bytes` is the sum of
//!   their sizes (durable queues); a message in flight, ready or waiting for redelivery always
//!   has its payload (see `payloads`).

pub mod dispatch;
pub mod due_index;
pub mod message;
pub mod payloads;
pub mod settings;
pub mod subscription;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};

use krest_proto::storage::RemoveReason;

use crate::ids::{ConsumerId, LogIndex, QueueId, Sequence, SubscriptionId};
use crate::time::{Instant, Now, UnixMillis};
use crate::timer::Timer;

pub use message::{Message, OrderKey};
pub use settings::{validate_queue_name, Overflow, QueueKind, QueueSettings};
pub use subscription::{AckMode, ConsumerState, InFlight, Subscription};

/// A message leaving a subscription for the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The subscription that gives it up.
    pub subscription: SubscriptionId,
    /// A copy of the message.
    pub message: Message,
    /// Its payload (a held message always has it in memory).
    pub payload: bytes::Bytes,
    /// Why: `max_deliveries` or `rejected`.
    pub reason: &'static str,
    /// Deliveries it had.
    pub delivery_count: u32,
}

/// What a queue operation asks the node to do.
#[derive(Debug, Default)]
pub struct Effects {
    /// Deliveries to hand to consumers.
    pub deliveries: Vec<(ConsumerId, krest_proto::client::Delivery)>,
    /// Acks by durable subscriptions, to log.
    pub acked: Vec<(SubscriptionId, Sequence)>,
    /// Messages removed, to log.
    pub removed: Vec<(Sequence, RemoveReason)>,
    /// Messages to move to the dead-letter queue.
    pub dead_letters: Vec<DeadLetter>,
    /// Timers to arm.
    pub arm: Vec<(Instant, Timer)>,
    /// Timers no longer needed.
    pub disarm: Vec<(Instant, Timer)>,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounters {
    /// Messages accepted.
    pub published: u64,
    /// Deliveries, first and repeated.
    pub delivered: u64,
    /// Deliveries after the first.
    pub redelivered: u64,
    /// Acks (explicit and automatic).
    pub acked: u64,
    /// Nacks.
    pub nacked: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Moves to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages dropped by the drop-oldest policy.
    pub dropped: u64,
}

/// One queue.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Node-unique id.
    pub id: QueueId,
    /// Its name.
    pub name: String,
    /// Resolved settings.
    pub settings: QueueSettings,
    /// Stored messages, by sequence.
    pub messages: table::SeqRing<Message>,
    /// The payloads in memory, by sequence: all of them in a temporary queue; in a durable
    /// queue, those within the node's payload memory budget (the others are read back from the
    /// log before delivery). Apart from `messages` so that a payload on disk costs no slot.
    pub payloads: table::SeqRing<bytes::Bytes>,
    /// The sequence the next message gets.
    pub next_sequence: Sequence,
    /// Sum of stored message sizes.
    pub bytes: u64,
    /// Delay queues: order keys of the deliverable messages.
    pub delay_index: due_index::DueIndex,
    /// Delay queues: the latest due time any subscription has passed; new order keys are never
    /// below it, so they always land after every cursor.
    pub due_high_water: UnixMillis,
    /// Subscriptions by id.
    pub subscriptions: BTreeMap<SubscriptionId, Subscription>,
    /// Subscription ids by name.
    pub subscription_names: BTreeMap<String, SubscriptionId>,
    /// The armed delay-due timer, if any.
    pub delay_timer: Option<Instant>,
    /// Metadata log index of the declaration (durable queues).
    pub declared_at: Option<LogIndex>,
    /// Metrics.
    pub counters: QueueCounters,
    /// Durable queues: sum of the sizes of the messages in `payloads`.
    pub resident_bytes: u64,
    /// `resident_bytes` as last added to the node's total (see `Node::account_payloads`).
    pub resident_bytes_counted: u64,
    /// Messages a subscription stopped at because their payload is on disk.
    pub payloads_wanted: BTreeSet<Sequence>,
    /// The read of payloads out for this queue (one at a time): each message asked for and
    /// the index of its publish record. Empty when none is out.
    pub payload_read: Vec<(Sequence, LogIndex)>,
    /// Payloads were read back since the node last made room: evict other queues first.
    pub payloads_read_recently: bool,
}

impl Queue {
    /// An empty queue.
    pub fn new(id: QueueId, name: String, settings: QueueSettings) -> Queue {
        Queue {
            id,
            name,
            settings,
            messages: table::SeqRing::new(),
            payloads: table::SeqRing::new(),
            next_sequence: Sequence(1),
            bytes: 0,
            delay_index: due_index::DueIndex::new(),
            due_high_water: UnixMillis(0),
            subscriptions: BTreeMap::new(),
            subscription_names: BTreeMap::new(),
            delay_timer: None,
            declared_at: None,
            counters: QueueCounters::default(),
            resident_bytes: 0,
            resident_bytes_counted: 0,
            payloads_wanted: BTreeSet::new(),
            payload_read: Vec::new(),
            payloads_read_recently: false,
        }
    }

    /// Whether this is a delay queue.
    pub fn is_delay(&self) -> bool {
        self.settings.kind == QueueKind::Delay
    }

    /// Applies the overflow policy so that `count` more messages of `bytes` fit. Refuses (with
    /// a sentence for the client) when they cannot.
    pub fn make_room(
        &mut self,
        count: u64,
        bytes: u64,
        effects: &mut Effects,
    ) -> Result<(), String> {
        let settings = &self.settings;
        if count > settings.max_messages || bytes > settings.max_bytes {
            return Err(format!(
                "{count} messages of {bytes} bytes can never fit queue '{}' (max {} messages, {} bytes)",
                self.name, settings.max_messages, settings.max_bytes
            ));
        }
        let miscount = u64::from(crate::planted::active(
            crate::planted::PlantedBug::MiscountDropOldest,
        ));
        let overflows = |queue: &Queue| {
            queue.messages.len() as u64 + count + miscount > queue.settings.max_messages
                || queue.bytes + bytes > queue.settings.max_bytes
        };
        match self.settings.overflow {
            Overflow::RejectPublish if overflows(self) => Err(format!(
                "queue '{}' is full ({} messages, {} bytes; max {} messages, {} bytes)",
                self.name,
                self.messages.len(),
                self.bytes,
                self.settings.max_messages,
                self.settings.max_bytes
            )),
            Overflow::RejectPublish => Ok(()),
            Overflow::DropOldest => {
                while overflows(self) {
                    let oldest = self
                        .messages
                        .keys()
                        .next()
                        .expect("overflow implies messages");
                    self.remove_message(oldest, RemoveReason::DroppedOldest, effects);
                    self.counters.dropped += 1;
                }
                Ok(())
            }
        }
    }

    /// Stores a message (already numbered by [`Queue::take_sequence`]). Temporary queues make it
    /// deliverable at once; durable ones wait for [`Queue::make_deliverable`].
    pub fn insert(&mut self, mut message: Message, payload: Option<bytes::Bytes>, now: Now) {
        assert!(
            message.sequence < self.next_sequence,
            "sequence was not taken"
        );
        assert!(
            self.messages
                .last()
                .is_none_or(|(last, _)| last < message.sequence),
            "sequences must be inserted in increasing order"
        );
        message.pending_subscriptions = u16::try_from(self.subscriptions.len())
            .expect("limits.max_subscriptions_per_queue is at most 65,535");
        message.set_order_due(None);
        self.bytes += message.size_bytes();
        let sequence = message.sequence;
        match payload {
            Some(payload) => {
                if self.settings.kind.is_durable() {
                    self.resident_bytes += message.size_bytes();
                }
                self.payloads.insert(sequence, payload);
            }
            None => assert!(
                self.settings.kind.is_durable() && message.log_index().is_some(),
                "only a message with a log record may leave its payload on disk"
            ),
        }
        self.messages.insert(sequence, message);
        self.counters.published += 1;
        if !self.settings.kind.is_durable() {
            self.make_deliverable(sequence, now);
        }
    }

    /// The next sequence number.
    pub fn take_sequence(&mut self) -> Sequence {
        let sequence = self.next_sequence;
        self.next_sequence = sequence.next();
        sequence
    }

    /// The message is durable: give it its order key so subscriptions can deliver it. A no-op
    /// for a message removed in the meantime.
    pub fn make_deliverable(&mut self, sequence: Sequence, now: Now) {
        let is_delay = self.is_delay();
        let high_water = self.due_high_water;
        let Some(message) = self.messages.get_mut(sequence) else {
            return;
        };
        if message.order_key().is_some() {
            return;
        }
        let key = if is_delay {
            let _ = now;
            OrderKey {
                due: message.deliver_at.max(high_water),
                sequence,
            }
        } else {
            OrderKey {
                due: UnixMillis(0),
                sequence,
            }
        };
        message.set_order_due(Some(key.due));
        if is_delay {
            self.delay_index.insert(key);
        }
    }

    /// Removes a message from the queue and from every subscription's tables.
    pub fn remove_message(
        &mut self,
        sequence: Sequence,
        reason: RemoveReason,
        effects: &mut Effects,
    ) {
        let Some(message) = self.messages.remove(sequence) else {
            return;
        };
        self.bytes -= message.size_bytes();
        if self.payloads.remove(sequence).is_some() && self.settings.kind.is_durable() {
            self.resident_bytes -= message.size_bytes();
        }
        self.payloads_wanted.remove(&sequence);
        if let Some(key) = message.order_key() {
            self.delay_index.remove(&key);
        }
        let queue = self.id;
        for subscription in self.subscriptions.values_mut() {
            subscription.skip.remove(&sequence);
            subscription.ready.remove(&sequence);
            if let Some((_, due)) = subscription.waiting.remove(&sequence) {
                effects.disarm.push((
                    due,
                    Timer::Redelivery {
                        queue,
                        subscription: subscription.id,
                        sequence,
                    },
                ));
            }
            if let Some(in_flight) = subscription.in_flight.remove(sequence) {
                release_in_flight(subscription, &in_flight);
            }
        }
        effects.removed.push((sequence, reason));
    }

    /// Adds a subscription that starts before every stored message.
    pub fn add_subscription(
        &mut self,
        id: SubscriptionId,
        name: String,
        durable: bool,
        broadcast: bool,
    ) {
        assert!(
            !self.subscription_names.contains_key(&name),
            "duplicate subscription name"
        );
        for message in self.messages.values_mut() {
            message.pending_subscriptions += 1;
        }
        self.subscription_names.insert(name.clone(), id);
        self.subscriptions
            .insert(id, Subscription::new(id, name, durable, broadcast));
    }

    /// Deletes a subscription; messages nobody needs any more are removed (if other
    /// subscriptions remain). Its consumers must have been detached.
    pub fn delete_subscription(&mut self, id: SubscriptionId, effects: &mut Effects) {
        let Some(subscription) = self.subscriptions.remove(&id) else {
            return;
        };
        self.subscription_names.remove(&subscription.name);
        let queue = self.id;
        if let Some(armed) = subscription.leases.armed() {
            effects.disarm.push((armed, lease_timer(queue, id)));
        }
        for (sequence, (_, due)) in &subscription.waiting {
            effects.disarm.push((
                *due,
                Timer::Redelivery {
                    queue,
                    subscription: id,
                    sequence: *sequence,
                },
            ));
        }
        let mut unneeded = Vec::new();
        for message in self.messages.values_mut() {
            if subscription.needs(message.sequence, message.order_key()) {
                message.pending_subscriptions -= 1;
                if message.pending_subscriptions == 0 {
                    unneeded.push(message.sequence);
                }
            }
        }
        if !self.subscriptions.is_empty() {
            for sequence in unneeded {
                self.remove_message(sequence, RemoveReason::Consumed, effects);
            }
        }
    }

    /// Removes every message that is not in flight with some consumer. Returns how many.
    pub fn purge(&mut self, effects: &mut Effects) -> u64 {
        let held: BTreeSet<Sequence> = self
            .subscriptions
            .values()
            .flat_map(|subscription| subscription.in_flight.keys())
            .collect();
        let doomed: Vec<Sequence> = self
            .messages
            .keys()
            .filter(|sequence| !held.contains(sequence))
            .collect();
        for sequence in &doomed {
            self.remove_message(*sequence, RemoveReason::Purged, effects);
        }
        doomed.len() as u64
    }

    /// Cancels a delayed message no subscription has delivered yet.
    pub fn cancel(&mut self, sequence: Sequence, effects: &mut Effects) -> Result<(), String> {
        let Some(message) = self.messages.get(sequence) else {
            return Err(format!("queue '{}' has no message {}", self.name, sequence));
        };
        let delivered = message.order_key().is_some_and(|key| {
            self.subscriptions
                .values()
                .any(|subscription| key <= subscription.cursor)
        });
        if delivered {
            return Err(format!(
                "message {sequence} of queue '{}' was already delivered; only undelivered messages can be cancelled",
                self.name
            ));
        }
        self.remove_message(sequence, RemoveReason::Cancelled, effects);
        Ok(())
    }

    /// Delay queues: when the next message that is not yet due falls due.
    pub fn next_due(&mut self, now: Now) -> Option<UnixMillis> {
        if !self.is_delay() {
            return None;
        }
        let from = OrderKey {
            due: UnixMillis(now.wall.0.saturating_add(1)),
            sequence: Sequence(0),
        };
        self.delay_index.first_from(&from).map(|key| key.due)
    }

    /// Messages that are not yet due (delay queues).
    pub fn delayed_count(&self, now: Now) -> u64 {
        let from = OrderKey {
            due: UnixMillis(now.wall.0.saturating_add(1)),
            sequence: Sequence(0),
        };
        // Messages not yet deliverable (waiting for their fsync) are the newest ones (the
        // invariants check it), and every deliverable one is in the index: neither count walks
        // the whole queue, so a metrics scrape stays cheap with millions pending.
        let hidden = self.messages.len() - self.delay_index.len();
        let not_visible = self
            .messages
            .values()
            .rev()
            .take(hidden)
            .filter(|message| message.order_key().is_none() && message.deliver_at > now.wall)
            .count();
        let due = self.delay_index.count_below(&from);
        (self.delay_index.len() - due + not_visible) as u64
    }

    /// Deliveries waiting for an ack, over all subscriptions.
    pub fn in_flight_count(&self) -> u64 {
        self.subscriptions
            .values()
            .map(|subscription| subscription.in_flight.len() as u64)
            .sum()
    }
}

/// The lease timer of one subscription.
pub fn lease_timer(queue: QueueId, subscription: SubscriptionId) -> Timer {
    Timer::Lease {
        queue,
        subscription,
    }
}

/// Gives a consumer back the capacity an in-flight delivery held (already removed from
/// `in_flight`); its lease entry is stale from now on.
fn release_in_flight(subscription: &mut Subscription, in_flight: &InFlight) {
    if in_flight.lease_deadline.is_some() {
        subscription.leases.prune(&subscription.in_flight);
    }
    if let Some(consumer) = in_flight.consumer {
        if let Some(state) = subscription.consumers.get_mut(&consumer) {
            state.unacked -= 1;
        }
    }
}

#[cfg(test)]
mod tests;
