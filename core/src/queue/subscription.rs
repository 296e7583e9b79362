//! A subscription: one cursor over a queue's first deliveries, its in-flight table, its
//! redeliveries, and the consumers that share it.
//!
//! Invariants, for every message `m` of the queue and this subscription `s`:
//! - `m` is in at most one of `in_flight`, `ready`, `waiting`;
//! - if `m.order_key > cursor` (or `m` is not yet visible), `s` has not delivered it; it may be in
//!   `skip` (acked before a restart), and then it is not counted in `m.pending_subscriptions`;
//! - if `m.order_key <= cursor`, `s` still needs `m` exactly when `m` is in `in_flight`, `ready`
//!   or `waiting`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// When the leases of `in_flight` run out, earliest first, behind one timer.
    pub leases: Leases,
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
            leases: Leases::default(),
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

/// The lease deadlines of a subscription's deliveries, earliest first, watched by one timer
/// for the whole subscription instead of one per delivery.
///
/// A lease is nearly always `now + ack_timeout` when it starts, with the queue's fixed ack
/// timeout and a clock that never goes back, so deadlines arrive in order and are appended;
/// only an extension with a shorter lease is inserted further in. Settling a delivery does not
/// search for its entry: an entry is live only while `in_flight` holds that sequence, held by a
/// consumer, with that very deadline, and stale entries are dropped when they reach the front
/// (acks come mostly in delivery order) or all at once when they outnumber the live ones.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    /// (deadline, sequence), by deadline; entries of one deadline in the order they came.
    entries: VecDeque<(Instant, Sequence)>,
    /// Where the subscription's lease timer is armed, if it is.
    armed: Option<Instant>,
}

impl Leases {
    /// Records that the lease of delivery `sequence` runs out at `deadline`. Returns the
    /// deadline to arm the subscription's lease timer at, when it must be armed earlier than
    /// it is.
    pub fn add(&mut self, deadline: Instant, sequence: Sequence) -> Option<Instant> {
        let position = self
            .entries
            .partition_point(|(known, _)| *known <= deadline);
        if position == self.entries.len() {
            self.entries.push_back((deadline, sequence));
        } else {
            self.entries.insert(position, (deadline, sequence));
        }
        match self.armed {
            Some(armed) if armed <= deadline => None,
            _ => {
                self.armed = Some(deadline);
                Some(deadline)
            }
        }
    }

    /// Drops stale entries from the front, and every stale entry once they outnumber the live
    /// ones (a consumer holding one delivery for long while others ack behind it).
    pub fn prune(&mut self, in_flight: &SeqRing<InFlight>) {
        while let Some(&(deadline, sequence)) = self.entries.front() {
            if is_live(in_flight, deadline, sequence) {
                break;
            }
            self.entries.pop_front();
        }
        if self.entries.len() > 2 * in_flight.len() + 64 {
            self.entries
                .retain(|(deadline, sequence)| is_live(in_flight, *deadline, *sequence));
        }
    }

    /// The lease timer fired at `now`: removes the entries due and returns the live ones
    /// (leases that ran out, as (deadline, sequence)), and the deadline to arm the timer at
    /// next, if any. One lease may be named twice (delivered, settled and delivered again
    /// within one millisecond): [`Leases::runs_out`] tells whether it still holds.
    pub fn take_due(
        &mut self,
        now: Instant,
        in_flight: &SeqRing<InFlight>,
    ) -> (Vec<(Instant, Sequence)>, Option<Instant>) {
        self.armed = None;
        let mut expired = Vec::new();
        while let Some(&(deadline, sequence)) = self.entries.front() {
            if deadline > now {
                break;
            }
            self.entries.pop_front();
            if is_live(in_flight, deadline, sequence) {
                expired.push((deadline, sequence));
            }
        }
        self.prune(in_flight);
        let next = self.entries.front().map(|(deadline, _)| *deadline);
        self.armed = next;
        (expired, next)
    }

    /// Whether the delivery of `sequence` in `in_flight` is held with its lease running out
    /// at `deadline`.
    pub fn runs_out(in_flight: &SeqRing<InFlight>, deadline: Instant, sequence: Sequence) -> bool {
        is_live(in_flight, deadline, sequence)
    }

    /// Whether a live entry says the lease of `sequence` runs out at `deadline`.
    pub fn watches(&self, deadline: Instant, sequence: Sequence) -> bool {
        let from = self.entries.partition_point(|(known, _)| *known < deadline);
        self.entries
            .range(from..)
            .take_while(|(known, _)| *known == deadline)
            .any(|(_, known)| *known == sequence)
    }

    /// Where the lease timer is armed, if it is.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Entries kept, stale ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `in_flight` holds `sequence` for a consumer with its lease running out at `deadline`.
fn is_live(in_flight: &SeqRing<InFlight>, deadline: Instant, sequence: Sequence) -> bool {
    in_flight
        .get(sequence)
        .is_some_and(|held| held.consumer.is_some() && held.lease_deadline == Some(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(in_flight: &mut SeqRing<InFlight>, sequence: u64, deadline: u64) {
        in_flight.insert(
            Sequence(sequence),
            InFlight {
                consumer: Some(ConsumerId(1)),
                delivery_count: 1,
                lease_deadline: Some(Instant(deadline)),
            },
        );
    }

    #[test]
    fn leases_run_out_in_deadline_order_and_settled_ones_are_skipped() {
        let mut in_flight = SeqRing::new();
        let mut leases = Leases::default();
        for (sequence, deadline) in [(1, 100), (2, 100), (3, 200), (4, 300)] {
            held(&mut in_flight, sequence, deadline);
            let arm = leases.add(Instant(deadline), Sequence(sequence));
            assert_eq!(
                arm,
                (sequence == 1).then_some(Instant(100)),
                "only the first arms"
            );
        }
        // 2 is acked; 4's lease is cut short to 150, which arms the timer no earlier than 100.
        in_flight.remove(Sequence(2));
        leases.prune(&in_flight);
        in_flight.get_mut(Sequence(4)).unwrap().lease_deadline = Some(Instant(150));
        assert_eq!(leases.add(Instant(150), Sequence(4)), None);
        assert!(leases.watches(Instant(150), Sequence(4)));
        assert!(
            !leases.watches(Instant(300), Sequence(4))
                || !is_live(&in_flight, Instant(300), Sequence(4))
        );

        let (due, next) = leases.take_due(Instant(160), &in_flight);
        assert_eq!(
            due,
            vec![(Instant(100), Sequence(1)), (Instant(150), Sequence(4))]
        );
        assert_eq!(next, Some(Instant(200)));
        assert_eq!(leases.armed(), Some(Instant(200)));
        let (due, next) = leases.take_due(Instant(1_000), &in_flight);
        assert_eq!(
            due,
            vec![(Instant(200), Sequence(3))],
            "4's old deadline is stale"
        );
        assert_eq!(next, None);
        assert!(leases.is_empty());
    }

    #[test]
    fn stale_leases_behind_a_long_held_one_are_compacted() {
        let mut in_flight = SeqRing::new();
        let mut leases = Leases::default();
        held(&mut in_flight, 0, 10);
        leases.add(Instant(10), Sequence(0));
        // Sequence 0 stays held; many others are delivered and acked behind it.
        for sequence in 1..200_000u64 {
            held(&mut in_flight, sequence, 10 + sequence);
            leases.add(Instant(10 + sequence), Sequence(sequence));
            in_flight.remove(Sequence(sequence));
            leases.prune(&in_flight);
            assert!(leases.len() <= 2 * in_flight.len() + 65, "at {sequence}");
        }
        assert!(leases.watches(Instant(10), Sequence(0)));
    }
}
