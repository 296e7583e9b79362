//! A subscription: one cursor over a queue's first deliveries, its in-flight table, its
//! redeliveries, and the consumers that share it.
//!
//! Invariants, for every message `m` of the queue and this subscription `s`:
//! - `m` is in at most one of `in_flight`, `ready`, `waiting`;
//! - if `m.order_key > cursor` (or `m` is not yet visible), `s` has not delivered it; it may be in
//!   `skip` (acked before a restart), and then it is not counted in `m.pending_subscriptions`;
//! - if `m.order_key <= cursor`, `s` still needs `m` exactly when `m` is in `in_flight`, `ready`
//!   or `waiting`.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{ConsumerId, Sequence, SubscriptionId};
use crate::queue::message::OrderKey;
use crate::queue::table::SeqRing;
use crate::time::Instant;

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Acked when sent: at most once.
    Auto,
    /// Acked by the consumer; redelivered after the lease expires.
    Explicit,
}

/// A delivery waiting for its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// Who holds it; `None` while it is being moved to the dead-letter queue.
    pub consumer: Option<ConsumerId>,
    /// Deliveries so far, this one included.
    pub delivery_count: u32,
    /// When the lease runs out (`None` while dead-lettering).
    pub lease_deadline: Option<Instant>,
}

/// A consumer as the subscription sees it: how much it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerState {
    /// Auto or explicit.
    pub ack_mode: AckMode,
    /// Pull consumers get messages only through fetches.
    pub pull: bool,
    /// Explicit push: most unacked at once. Pull: most unacked at once as well.
    pub prefetch: u32,
    /// Auto push: deliveries granted and not yet used.
    pub credit: u32,
    /// Delivered and not yet settled.
    pub unacked: u32,
    /// Pull: messages the waiting fetch still takes.
    pub fetch_remaining: u32,
}

impl ConsumerState {
    /// Whether one more message may go to this consumer now.
    pub fn has_capacity(&self) -> bool {
        let window_open = match self.ack_mode {
            AckMode::Explicit => self.unacked < self.prefetch,
            AckMode::Auto => true,
        };
        let wants = if self.pull {
            self.fetch_remaining > 0
        } else {
            match self.ack_mode {
                AckMode::Explicit => true,
                AckMode::Auto => self.credit > 0,
            }
        };
        window_open && wants
    }
}

/// One subscription of a queue.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Unique in the node.
    pub id: SubscriptionId,
    /// Unique in the queue; the group name for point subscriptions.
    pub name: String,
    /// Point subscriptions are durable (declared in the metadata log, acks logged);
    /// broadcast ones live as long as their one consumer.
    pub durable: bool,
    /// Whether it serves a single broadcast subscriber.
    pub broadcast: bool,
    /// Every message ordered at or before this key was first-delivered (or skipped).
    pub cursor: OrderKey,
    /// Acked (before a restart) but ahead of the cursor.
    pub skip: BTreeSet<Sequence>,
    /// Delivered, waiting for an ack.
    pub in_flight: SeqRing<InFlight>,
    /// To be redelivered now: sequence to deliveries so far.
    pub ready: BTreeMap<Sequence, u32>,
    /// To be redelivered after a nack delay: sequence to (deliveries so far, when).
    pub waiting: BTreeMap<Sequence, (u32, Instant)>,
    /// Consumers attached, in attach order.
    pub consumers: BTreeMap<ConsumerId, ConsumerState>,
    /// The consumer served last, for round robin.
    pub last_served: Option<ConsumerId>,
    /// Metadata log index of its declaration (durable subscriptions of durable queues): an
    /// ack is confirmed only once the subscription it belongs to is durable too.
    pub declared_at: Option<crate::ids::LogIndex>,
}

impl Subscription {
    /// A new subscription whose cursor starts before every message.
    pub fn new(id: SubscriptionId, name: String, durable: bool, broadcast: bool) -> Self {
        Subscription {
            id,
            name,
            durable,
            broadcast,
            cursor: OrderKey::default(),
            skip: BTreeSet::new(),
            in_flight: SeqRing::new(),
            ready: BTreeMap::new(),
            waiting: BTreeMap::new(),
            consumers: BTreeMap::new(),
            last_served: None,
            declared_at: None,
        }
    }

    /// Whether this subscription still needs message `sequence` with order key `key`.
    pub fn needs(&self, sequence: Sequence, key: Option<OrderKey>) -> bool {
        match key {
            Some(key) if key <= self.cursor => {
                self.in_flight.contains_key(sequence)
                    || self.ready.contains_key(&sequence)
                    || self.waiting.contains_key(&sequence)
            }
            _ => !self.skip.contains(&sequence),
        }
    }

    /// The next consumer with capacity, round robin after the one served last.
    pub fn next_consumer(&self) -> Option<ConsumerId> {
        let after = self.last_served.unwrap_or(ConsumerId(0));
        let has_capacity =
            |(id, state): (&ConsumerId, &ConsumerState)| state.has_capacity().then_some(*id);
        self.consumers
            .range(ConsumerId(after.0 + 1)..)
            .find_map(has_capacity)
            .or_else(|| self.consumers.range(..=after).find_map(has_capacity))
    }

    /// Messages this subscription holds in flight or waiting for redelivery.
    pub fn unsettled(&self) -> usize {
        self.in_flight.len() + self.ready.len() + self.waiting.len()
    }
}
