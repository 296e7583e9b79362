//! Delivery and settlement: moving messages from a queue to its consumers and back.
//!
//! First deliveries of a subscription follow its cursor (sequence order, or deliver-at order in
//! a delay queue); redeliveries (`ready`) go first, lowest sequence first. Consumers of one
//! subscription are served round robin while they have capacity.

use bytes::Bytes;
use krest_proto::client::{Delivery, DeliveryTag};
use krest_proto::storage::RemoveReason;
use std::ops::Bound;

use smallvec::SmallVec;

use super::table::SeqRing;
use super::{lease_timer, release_in_flight, DeadLetter, Effects, Queue};
use crate::ids::{ConsumerId, Sequence, SubscriptionId};
use crate::planted::{self, PlantedBug};
use crate::queue::subscription::{AckMode, ConsumerState, InFlight, Leases, Subscription};
use crate::time::{Instant, Millis, Now, UnixMillis};
use crate::timer::Timer;

/// What a consumer asks to do with delivery tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleAction {
    /// Done with it.
    Ack,
    /// Back to the queue, redelivered after the delay.
    Nack {
        /// Wait before redelivery.
        delay: Millis,
    },
    /// Straight to the dead-letter queue.
    Reject,
    /// Renew the lease.
    Extend {
        /// New lease length from now.
        lease: Millis,
    },
}

/// The result of a settle: how many tags matched a live delivery of this consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SettleOutcome {
    /// Tags acted on.
    pub applied: u32,
    /// Tags naming no delivery this consumer holds (already settled, expired, redelivered).
    pub unknown: u32,
}

/// What a subscription's cursor finds next.
enum FirstDelivery {
    /// This message, now at the cursor.
    Ready(Sequence),
    /// This message is next, but its payload must be read back first (the cursor stays).
    OnDisk(Sequence),
    /// Nothing deliverable (or due) yet.
    Nothing,
}

/// A message a subscription holds keeps its payload in memory (see `payloads`).
const HELD_PAYLOAD: &str = "a held message keeps its payload in memory";

/// Whether a stored message's payload is on disk only. The usual answer, every payload in
/// memory, costs two loads: the tables have the same length.
fn payload_on_disk(
    messages: &SeqRing<super::Message>,
    payloads: &SeqRing<Bytes>,
    sequence: Sequence,
) -> bool {
    payloads.len() < messages.len()
        && messages.contains_key(sequence)
        && !payloads.contains_key(sequence)
}

impl Queue {
    /// Attaches a consumer to a subscription.
    pub fn attach_consumer(
        &mut self,
        subscription: SubscriptionId,
        consumer: ConsumerId,
        state: ConsumerState,
    ) {
        let subscription = self
            .subscriptions
            .get_mut(&subscription)
            .expect("attach to an existing subscription");
        subscription.consumers.insert(consumer, state);
    }

    /// A consumer's state, to adjust credit or fetches.
    pub fn consumer_mut(
        &mut self,
        subscription: SubscriptionId,
        consumer: ConsumerId,
    ) -> Option<&mut ConsumerState> {
        self.subscriptions
            .get_mut(&subscription)?
            .consumers
            .get_mut(&consumer)
    }

    /// Detaches a consumer; what it held goes back to the subscription for redelivery.
    pub fn detach_consumer(
        &mut self,
        subscription_id: SubscriptionId,
        consumer: ConsumerId,
        effects: &mut Effects,
    ) {
        let queue = self.id;
        let max_deliveries = self.settings.max_deliveries;
        let Some(subscription) = self.subscriptions.get_mut(&subscription_id) else {
            return;
        };
        subscription.consumers.remove(&consumer);
        if subscription.last_served == Some(consumer) {
            subscription.last_served = None;
        }
        let held: Vec<Sequence> = subscription
            .in_flight
            .iter()
            .filter(|(_, in_flight)| in_flight.consumer == Some(consumer))
            .map(|(sequence, _)| sequence)
            .collect();
        for sequence in held {
            take_back(
                queue,
                max_deliveries,
                subscription,
                &self.messages,
                &self.payloads,
                sequence,
                effects,
            );
        }
    }

    /// Delivers whatever can be delivered now, to every subscription's consumers.
    pub fn dispatch(&mut self, now: Now, effects: &mut Effects) {
        // Walks the subscriptions by id without collecting them: this runs after every input.
        let mut next_id = self.subscriptions.keys().next().copied();
        while let Some(id) = next_id {
            next_id = self
                .subscriptions
                .range((Bound::Excluded(id), Bound::Unbounded))
                .next()
                .map(|(id, _)| *id);
            let mut unneeded = Vec::new();
            loop {
                let subscription = self.subscriptions.get_mut(&id).expect("listed above");
                let Some(consumer) = subscription.next_consumer() else {
                    break;
                };
                let next = match subscription.ready.first_key_value() {
                    Some((&sequence, &count)) => {
                        if payload_on_disk(&self.messages, &self.payloads, sequence) {
                            self.payloads_wanted.insert(sequence);
                            break;
                        }
                        subscription.ready.pop_first();
                        Some((sequence, count + 1))
                    }
                    None => match self.next_first_delivery(id, now) {
                        FirstDelivery::Ready(sequence) => {
                            Some((self.planted_swap(id, now, sequence, effects), 1))
                        }
                        FirstDelivery::OnDisk(sequence) => {
                            self.payloads_wanted.insert(sequence);
                            break;
                        }
                        FirstDelivery::Nothing => None,
                    },
                };
                let Some((sequence, delivery_count)) = next else {
                    break;
                };
                if self.deliver(id, consumer, sequence, delivery_count, now, effects) {
                    unneeded.push(sequence);
                }
            }
            for sequence in unneeded {
                self.remove_message(sequence, RemoveReason::Consumed, effects);
            }
        }
    }

    /// Advances the subscription's cursor to the next deliverable, due message. The cursor
    /// stays before a message whose payload is on disk: it is reported, to be read back first.
    fn next_first_delivery(&mut self, id: SubscriptionId, now: Now) -> FirstDelivery {
        loop {
            let subscription = &self.subscriptions[&id];
            let cursor = subscription.cursor;
            let key = if self.is_delay() {
                let Some(key) = self.delay_index.first_after(&cursor) else {
                    return FirstDelivery::Nothing;
                };
                let mut visible_until = now.wall;
                if planted::active(PlantedBug::DeliverDelayedEarly) {
                    visible_until = visible_until + Millis(1_000);
                }
                if key.due > visible_until {
                    return FirstDelivery::Nothing;
                }
                key
            } else {
                let Some((_, message)) = self.messages.range(cursor.sequence.next()..).next()
                else {
                    return FirstDelivery::Nothing;
                };
                let Some(key) = message.order_key() else {
                    return FirstDelivery::Nothing;
                };
                key
            };
            let skipped = subscription.skip.contains(&key.sequence);
            if !skipped && payload_on_disk(&self.messages, &self.payloads, key.sequence) {
                return FirstDelivery::OnDisk(key.sequence);
            }
            let subscription = self.subscriptions.get_mut(&id).expect("exists");
            subscription.cursor = key;
            self.due_high_water = self.due_high_water.max(key.due);
            if skipped {
                subscription.skip.remove(&key.sequence);
                continue;
            }
            return FirstDelivery::Ready(key.sequence);
        }
    }

    /// With the planted bug [`PlantedBug::SwapFirstDeliveries`], now and then holds `first`
    /// back for a millisecond and delivers the message after it instead.
    fn planted_swap(
        &mut self,
        id: SubscriptionId,
        now: Now,
        first: Sequence,
        effects: &mut Effects,
    ) -> Sequence {
        if !planted::active(PlantedBug::SwapFirstDeliveries) || self.is_delay() || first.0 % 5 != 2
        {
            return first;
        }
        let FirstDelivery::Ready(second) = self.next_first_delivery(id, now) else {
            return first;
        };
        let queue = self.id;
        let due = now.monotonic + Millis(1);
        let subscription = self.subscriptions.get_mut(&id).expect("exists");
        subscription.waiting.insert(first, (1, due));
        let timer = Timer::Redelivery {
            queue,
            subscription: id,
            sequence: first,
        };
        effects.arm.push((due, timer));
        second
    }

    /// Hands one message to one consumer. Returns whether the message is now unneeded (auto ack
    /// by the last subscription that needed it).
    fn deliver(
        &mut self,
        id: SubscriptionId,
        consumer: ConsumerId,
        sequence: Sequence,
        delivery_count: u32,
        now: Now,
        effects: &mut Effects,
    ) -> bool {
        let queue = self.id;
        let ack_timeout = self.settings.ack_timeout;
        let message = self
            .messages
            .get_mut(sequence)
            .expect("deliverable messages are stored");
        let subscription = self.subscriptions.get_mut(&id).expect("exists");
        let state = subscription
            .consumers
            .get_mut(&consumer)
            .expect("chosen consumer exists");
        subscription.last_served = Some(consumer);
        if state.pull {
            state.fetch_remaining -= 1;
        }
        effects.deliveries.push((
            consumer,
            Delivery {
                tag: Some(DeliveryTag {
                    sequence: sequence.0,
                    delivery_count,
                }),
                payload: self
                    .payloads
                    .get(sequence)
                    .cloned()
                    .expect("dispatch delivers resident payloads only"),
                headers: message.headers().to_vec(),
                deliver_at_unix_ms: message.deliver_at.0,
                published_at_unix_ms: message.published_at.0,
            },
        ));
        self.counters.delivered += 1;
        if delivery_count > 1 {
            self.counters.redelivered += 1;
        }
        match state.ack_mode {
            AckMode::Explicit => {
                state.unacked += 1;
                let mut deadline = now.monotonic + ack_timeout;
                if planted::active(PlantedBug::ExpireLeaseEarly) {
                    deadline = now.monotonic + Millis(ack_timeout.0 / 2);
                }
                subscription.in_flight.insert(
                    sequence,
                    InFlight {
                        consumer: Some(consumer),
                        delivery_count,
                        lease_deadline: Some(deadline),
                    },
                );
                if let Some(at) = subscription.leases.add(deadline, sequence) {
                    effects.arm.push((at, lease_timer(queue, id)));
                }
                false
            }
            AckMode::Auto => {
                if !state.pull {
                    state.credit -= 1;
                }
                self.counters.acked += 1;
                record_ack(subscription, message, effects)
            }
        }
    }

    /// Settles delivery tags held by `consumer`.
    pub fn settle(
        &mut self,
        id: SubscriptionId,
        consumer: ConsumerId,
        action: SettleAction,
        tags: &[DeliveryTag],
        now: Now,
        effects: &mut Effects,
    ) -> SettleOutcome {
        let queue = self.id;
        let max_deliveries = self.settings.max_deliveries;
        let mut outcome = SettleOutcome::default();
        let mut unneeded: SmallVec<[Sequence; 8]> = SmallVec::new();
        let Some(subscription) = self.subscriptions.get_mut(&id) else {
            outcome.unknown = tags.len() as u32;
            return outcome;
        };
        for tag in tags {
            let sequence = Sequence(tag.sequence);
            let held = subscription
                .in_flight
                .get(sequence)
                .is_some_and(|in_flight| {
                    in_flight.consumer == Some(consumer)
                        && in_flight.delivery_count == tag.delivery_count
                });
            if !held {
                outcome.unknown += 1;
                continue;
            }
            outcome.applied += 1;
            if let SettleAction::Extend { lease } = action {
                let in_flight = subscription.in_flight.get_mut(sequence).expect("held");
                let deadline = now.monotonic + lease;
                // The entry of the old deadline goes stale.
                in_flight.lease_deadline = Some(deadline);
                if let Some(at) = subscription.leases.add(deadline, sequence) {
                    effects.arm.push((at, lease_timer(queue, id)));
                }
                subscription.leases.prune(&subscription.in_flight);
                continue;
            }
            let in_flight = subscription.in_flight.remove(sequence).expect("held");
            release_in_flight(subscription, &in_flight);
            let message = self
                .messages
                .get_mut(sequence)
                .expect("in-flight messages are stored");
            let payload = self.payloads.get(sequence).expect(HELD_PAYLOAD);
            match action {
                SettleAction::Ack => {
                    self.counters.acked += 1;
                    if record_ack(subscription, message, effects) {
                        unneeded.push(sequence);
                    }
                }
                SettleAction::Nack { delay } => {
                    self.counters.nacked += 1;
                    let due = (delay.0 > 0).then(|| now.monotonic + delay);
                    return_to_queue(
                        queue,
                        max_deliveries,
                        subscription,
                        (message, payload),
                        in_flight.delivery_count,
                        due,
                        effects,
                    );
                }
                SettleAction::Reject => {
                    start_dead_letter(
                        subscription,
                        message,
                        payload,
                        in_flight.delivery_count,
                        "rejected",
                        effects,
                    );
                }
                SettleAction::Extend { .. } => unreachable!("handled above"),
            }
        }
        for sequence in unneeded {
            self.remove_message(sequence, RemoveReason::Consumed, effects);
        }
        outcome
    }

    /// The subscription's lease timer fired: every delivery whose lease ran out is taken back,
    /// and the timer is armed again at the next lease, if any.
    pub fn leases_due(&mut self, id: SubscriptionId, now: Now, effects: &mut Effects) {
        let queue = self.id;
        let max_deliveries = self.settings.max_deliveries;
        let Some(subscription) = self.subscriptions.get_mut(&id) else {
            return;
        };
        let (expired, next) = subscription
            .leases
            .take_due(now.monotonic, &subscription.in_flight);
        if let Some(next) = next {
            effects.arm.push((next, lease_timer(queue, id)));
        }
        for (deadline, sequence) in expired {
            if !Leases::runs_out(&subscription.in_flight, deadline, sequence) {
                continue; // named twice, and taken back already
            }
            if planted::active(PlantedBug::SkipRedeliveryAfterLeaseExpiry) {
                // The consumer silently keeps the delivery: its lease never runs out again.
                let forever = now.monotonic + Millis(u64::MAX / 4);
                let held = subscription.in_flight.get_mut(sequence).expect("runs out");
                held.lease_deadline = Some(forever);
                if let Some(at) = subscription.leases.add(forever, sequence) {
                    effects.arm.push((at, lease_timer(queue, id)));
                }
                continue;
            }
            self.counters.expired += 1;
            take_back(
                queue,
                max_deliveries,
                subscription,
                &self.messages,
                &self.payloads,
                sequence,
                effects,
            );
        }
    }

    /// A nack delay is over: the message may be redelivered.
    pub fn redelivery_due(&mut self, id: SubscriptionId, sequence: Sequence, now: Now) {
        let Some(subscription) = self.subscriptions.get_mut(&id) else {
            return;
        };
        if let Some((count, due)) = subscription.waiting.get(&sequence).copied() {
            if due <= now.monotonic {
                subscription.waiting.remove(&sequence);
                subscription.ready.insert(sequence, count);
            }
        }
    }

    /// The dead-letter copy is stored: the subscription is done with the message.
    pub fn finish_dead_letter(
        &mut self,
        id: SubscriptionId,
        sequence: Sequence,
        effects: &mut Effects,
    ) {
        let Some(subscription) = self.subscriptions.get_mut(&id) else {
            return;
        };
        let moving = subscription
            .in_flight
            .get(sequence)
            .is_some_and(|in_flight| in_flight.consumer.is_none());
        if !moving {
            return;
        }
        subscription.in_flight.remove(sequence);
        self.counters.dead_lettered += 1;
        let message = self
            .messages
            .get_mut(sequence)
            .expect("in-flight messages are stored");
        if record_ack(subscription, message, effects) {
            self.remove_message(sequence, RemoveReason::DeadLettered, effects);
        }
    }

    /// At recovery: subscription `subscription_name` had moved message `sequence` to its
    /// dead-letter queue (the copy is durable) when a crash lost the record of it. Done with it,
    /// if this is that very message and the subscription still needs it.
    pub fn settle_moved_dead_letter(
        &mut self,
        subscription_name: &str,
        sequence: Sequence,
        published_at: UnixMillis,
        payload_digest: u64,
        effects: &mut Effects,
    ) {
        let Some(id) = self.subscription_names.get(subscription_name).copied() else {
            return;
        };
        let Some(message) = self.messages.get_mut(sequence) else {
            return;
        };
        // A payload on disk is not compared: the sequence, subscription and publish time (to
        // the millisecond) of a queue of that name already name the message.
        let same_payload = self.payloads.get(sequence).is_none_or(|payload| {
            crate::node::moved_dead_letters::payload_digest(payload) == payload_digest
        });
        if message.published_at != published_at || !same_payload {
            return;
        }
        let subscription = self.subscriptions.get_mut(&id).expect("named");
        let undelivered = message
            .order_key()
            .is_none_or(|key| key > subscription.cursor);
        if !undelivered || !subscription.needs(sequence, message.order_key()) {
            return;
        }
        subscription.skip.insert(sequence);
        if record_ack(subscription, message, effects) {
            self.remove_message(sequence, RemoveReason::DeadLettered, effects);
        }
    }

    /// The dead-letter queue refused the copy: keep the message here, ready for redelivery.
    pub fn abort_dead_letter(&mut self, id: SubscriptionId, sequence: Sequence) {
        let Some(subscription) = self.subscriptions.get_mut(&id) else {
            return;
        };
        if let Some(in_flight) = subscription.in_flight.get(sequence).copied() {
            if in_flight.consumer.is_none() {
                subscription.in_flight.remove(sequence);
                subscription
                    .ready
                    .insert(sequence, in_flight.delivery_count);
            }
        }
    }

    /// Whether a subscription has first-delivered every deliverable message and has nothing to
    /// redeliver (used by tests and metrics).
    pub fn subscription_backlog(&self, id: SubscriptionId) -> u64 {
        let Some(subscription) = self.subscriptions.get(&id) else {
            return 0;
        };
        self.messages
            .values()
            .filter(|message| subscription.needs(message.sequence, message.order_key()))
            .count() as u64
    }
}

/// Counts an ack of `message` by `subscription`; logs it for durable subscriptions. Returns
/// whether no subscription needs the message any more.
fn record_ack(
    subscription: &Subscription,
    message: &mut super::Message,
    effects: &mut Effects,
) -> bool {
    assert!(
        message.pending_subscriptions > 0,
        "acked a message nobody needed"
    );
    message.pending_subscriptions -= 1;
    if subscription.durable {
        effects.acked.push((subscription.id, message.sequence));
    }
    message.pending_subscriptions == 0
}

/// Takes delivery `sequence` back from its consumer (a lease expired, the consumer left):
/// releases the lease and returns the message to the subscription for redelivery, or starts
/// its dead-lettering past `max_deliveries`.
fn take_back(
    queue: crate::ids::QueueId,
    max_deliveries: u32,
    subscription: &mut Subscription,
    messages: &SeqRing<super::Message>,
    payloads: &SeqRing<Bytes>,
    sequence: Sequence,
    effects: &mut Effects,
) {
    let Some(in_flight) = subscription.in_flight.remove(sequence) else {
        return;
    };
    release_in_flight(subscription, &in_flight);
    let message = messages
        .get(sequence)
        .expect("in-flight messages are stored");
    return_to_queue(
        queue,
        max_deliveries,
        subscription,
        (message, payloads.get(sequence).expect(HELD_PAYLOAD)),
        in_flight.delivery_count,
        None,
        effects,
    );
}

/// Puts a message the consumer gave up back into the subscription: dead-letter it if it has had
/// its deliveries, otherwise ready now or after `due`.
fn return_to_queue(
    queue: crate::ids::QueueId,
    max_deliveries: u32,
    subscription: &mut Subscription,
    (message, payload): (&super::Message, &Bytes),
    delivery_count: u32,
    due: Option<Instant>,
    effects: &mut Effects,
) {
    if max_deliveries > 0 && delivery_count >= max_deliveries {
        start_dead_letter(
            subscription,
            message,
            payload,
            delivery_count,
            "max_deliveries",
            effects,
        );
        return;
    }
    match due {
        None => {
            subscription.ready.insert(message.sequence, delivery_count);
        }
        Some(due) => {
            subscription
                .waiting
                .insert(message.sequence, (delivery_count, due));
            effects.arm.push((
                due,
                Timer::Redelivery {
                    queue,
                    subscription: subscription.id,
                    sequence: message.sequence,
                },
            ));
        }
    }
}

/// Holds the message in the subscription (no consumer, no lease) until its dead-letter copy is
/// stored.
fn start_dead_letter(
    subscription: &mut Subscription,
    message: &super::Message,
    payload: &Bytes,
    delivery_count: u32,
    reason: &'static str,
    effects: &mut Effects,
) {
    subscription.in_flight.insert(
        message.sequence,
        InFlight {
            consumer: None,
            delivery_count,
            lease_deadline: None,
        },
    );
    effects.dead_letters.push(DeadLetter {
        subscription: subscription.id,
        message: message.clone(),
        payload: payload.clone(),
        reason,
        delivery_count,
    });
}
