//! The node's bookkeeping invariants, checked in one place: by the property tests after every
//! operation, by the fuzz driver after every input, and by anyone who wants to know that a node
//! is consistent.
//!
//! What must hold between two calls of `handle` (every input applied, every queue dispatched):
//!
//! - queues: names and ids match both ways; `bytes` is the sum of the message sizes; messages
//!   are keyed by their sequence, below `next_sequence`; the visible messages (with an order
//!   key) are a prefix in sequence order; a delay queue's index holds exactly the visible
//!   messages' keys; a message's `pending_subscriptions` counts the subscriptions that need it,
//!   and a queue with subscriptions keeps no message that none needs;
//! - subscriptions: `in_flight`, `ready`, `waiting` and `skip` name stored messages, each at most
//!   once; what is in the first three was delivered (its key is at or before the cursor), what
//!   is skipped was not; every in-flight entry is held by an attached consumer with a lease, or
//!   is being dead-lettered (no consumer, no lease); each consumer's `unacked` is what it holds,
//!   within its prefetch, and auto-ack consumers hold nothing;
//! - consumers and connections point at each other, at live queues and subscriptions, and agree
//!   on pull and ack mode; only a pull consumer with a waiting fetch may take more messages;
//! - logs: every durable queue has one and nothing else does; indexes are consecutive and every
//!   waiter is registered on a log, while nothing waits once the node is fenced;
//! - payloads: a queue's `resident` set names exactly its durable messages with a payload in
//!   memory, and the node's total is the sum of their sizes; only durable messages with a log
//!   record are without a payload, and never one a subscription holds; the total stays within
//!   `storage.payload_memory_bytes` plus what subscriptions hold (unless fenced).
//!
//! Queue bounds are not checked here: a restart with smaller defaults may leave a queue over
//! them, and it only refuses (or drops) from then on.

use std::collections::BTreeSet;

use super::Node;
use crate::ids::{LogIndex, Sequence, WaiterId};
use crate::io::LogId;
use crate::queue::{AckMode, Queue, Subscription};
use crate::time::UnixMillis;

impl Node {
    /// Panics with a sentence naming the broken invariant if the node's bookkeeping is
    /// inconsistent (see this module's documentation for the list). Costs O(messages ×
    /// subscriptions): for tests, fuzzing and the simulator, not for every call in production.
    pub fn check_invariants(&self) {
        assert!(self.dirty.is_empty(), "every touched queue was dispatched");
        self.check_queue_directory();
        for queue in self.queues.values() {
            check_messages(queue);
            for subscription in queue.subscriptions.values() {
                check_subscription(queue, subscription);
                self.check_attached_consumers(queue, subscription);
            }
        }
        self.check_consumers_and_connections();
        self.check_logs();
        self.check_payloads();
    }

    /// The payload memory budget's bookkeeping: which payloads are in memory, their sum per
    /// queue and in all, and that nothing held or undurable is without its payload.
    fn check_payloads(&self) {
        let mut total = 0;
        let mut held_bytes = 0;
        for queue in self.queues.values() {
            let name = &queue.name;
            let durable = queue.settings.kind.is_durable();
            let held: BTreeSet<Sequence> = queue
                .subscriptions
                .values()
                .flat_map(|subscription| {
                    subscription
                        .in_flight
                        .keys()
                        .chain(subscription.ready.keys().copied())
                        .chain(subscription.waiting.keys().copied())
                })
                .collect();
            let mut resident_bytes = 0;
            let mut resident_count = 0;
            for (sequence, message) in queue.messages.iter() {
                let resident = queue.payloads.contains_key(sequence);
                if resident {
                    resident_count += 1;
                }
                if resident && durable {
                    resident_bytes += message.size_bytes();
                    if held.contains(&sequence) {
                        held_bytes += message.size_bytes();
                    }
                }
                if !resident {
                    assert!(durable, "temporary queue {name} keeps every payload");
                    assert!(
                        message.log_index().is_some(),
                        "message {sequence} of {name} without payload has a record"
                    );
                    assert!(
                        !held.contains(&sequence),
                        "message {sequence} of {name} is held, so its payload is in memory"
                    );
                }
            }
            assert_eq!(
                queue.payloads.len(),
                resident_count,
                "queue {name} keeps payloads of stored messages only"
            );
            assert_eq!(
                queue.resident_bytes, resident_bytes,
                "resident bytes of {name}"
            );
            assert_eq!(
                queue.resident_bytes_counted, queue.resident_bytes,
                "the node's total is up to date with queue {name}"
            );
            total += queue.resident_bytes;
        }
        assert_eq!(
            self.payload_resident_bytes, total,
            "the node's payload total"
        );
        let budget = self.config.storage.payload_memory_bytes;
        assert!(
            self.fenced.is_some() || total <= budget + held_bytes,
            "payloads in memory ({total} bytes) stay within the budget ({budget}) plus what \
             consumers hold ({held_bytes})"
        );
    }

    fn check_queue_directory(&self) {
        assert_eq!(
            self.queue_names.len(),
            self.queues.len(),
            "one name per queue"
        );
        for (name, id) in &self.queue_names {
            let queue = self.queues.get(id).expect("a named queue exists");
            assert_eq!(&queue.name, name, "queue {id} is known by its own name");
        }
        for (id, queue) in &self.queues {
            assert_eq!(queue.id, *id, "queue {id} is filed under its id");
            assert!(id.0 < self.next_queue_id, "queue ids come from the counter");
            for subscription in queue.subscriptions.keys() {
                assert!(subscription.0 < self.next_subscription_id);
            }
        }
    }

    fn check_attached_consumers(&self, queue: &Queue, subscription: &Subscription) {
        let limits = &self.config.limits;
        for (consumer, state) in &subscription.consumers {
            let record = self
                .consumers
                .get(consumer)
                .unwrap_or_else(|| panic!("consumer {consumer} attached to a queue is known"));
            assert_eq!(
                (record.queue, record.subscription),
                (queue.id, subscription.id),
                "consumer {consumer} reads the subscription it is attached to"
            );
            assert_eq!((record.pull, record.ack_mode), (state.pull, state.ack_mode));
            let holding = subscription
                .in_flight
                .values()
                .filter(|in_flight| in_flight.consumer == Some(*consumer))
                .count() as u32;
            assert_eq!(state.unacked, holding, "unacked of consumer {consumer}");
            match state.ack_mode {
                AckMode::Explicit => assert!(
                    state.unacked <= state.prefetch,
                    "consumer {consumer} holds {} with a prefetch of {}",
                    state.unacked,
                    state.prefetch
                ),
                AckMode::Auto => assert_eq!(state.unacked, 0, "auto-ack holds nothing"),
            }
            assert!(state.prefetch <= limits.max_in_flight_per_consumer);
            assert!(state.credit <= limits.max_in_flight_per_consumer);
            if state.fetch_remaining > 0 {
                assert!(
                    state.pull && record.fetch.is_some(),
                    "consumer {consumer} takes messages only for a waiting fetch"
                );
            }
        }
    }

    fn check_consumers_and_connections(&self) {
        for (consumer, record) in &self.consumers {
            assert!(consumer.0 < self.next_consumer_id);
            let queue = self
                .queues
                .get(&record.queue)
                .unwrap_or_else(|| panic!("consumer {consumer} reads a live queue"));
            let subscription = queue
                .subscriptions
                .get(&record.subscription)
                .unwrap_or_else(|| panic!("consumer {consumer} reads a live subscription"));
            assert!(subscription.consumers.contains_key(consumer));
            let connection = self
                .connections
                .get(&record.conn)
                .unwrap_or_else(|| panic!("consumer {consumer} belongs to a live connection"));
            assert!(connection.consumers.contains(consumer));
            if record.fetch.is_some() {
                assert!(record.pull, "only pull consumers fetch");
            }
        }
        let limit = self.config.limits.max_unconfirmed_per_connection;
        for (conn, connection) in &self.connections {
            for consumer in &connection.consumers {
                let record = self.consumers.get(consumer);
                assert!(
                    record.is_some_and(|record| record.conn == *conn),
                    "consumer {consumer} of connection {conn} points back at it"
                );
            }
            if connection.reading {
                assert!(
                    connection.unconfirmed < limit,
                    "connection {conn} reads at the limit"
                );
            } else {
                assert!(
                    connection.unconfirmed > limit / 2,
                    "connection {conn} is paused"
                );
            }
        }
    }

    fn check_logs(&self) {
        assert!(
            self.logs.contains_key(&LogId::Metadata),
            "the metadata log exists"
        );
        for queue in self.queues.values() {
            let has_log = self.logs.contains_key(&LogId::Queue(queue.id));
            assert_eq!(
                has_log,
                queue.settings.kind.is_durable(),
                "queue {} has a log exactly when it is durable",
                queue.name
            );
        }
        let mut waiting: BTreeSet<WaiterId> = BTreeSet::new();
        for (log, state) in &self.logs {
            if let LogId::Queue(queue) = log {
                assert!(
                    self.queues.contains_key(queue),
                    "log {log:?} belongs to a queue"
                );
            }
            assert!(
                state.synced_index < state.next_index,
                "{log:?} synced what it wrote"
            );
            let first_unsent = state.next_index.0.saturating_sub(state.unsent.len() as u64);
            for (expected, record) in (first_unsent..).zip(&state.unsent) {
                assert_eq!(
                    record.index,
                    LogIndex(expected),
                    "{log:?} indexes are consecutive"
                );
            }
            let mut previous = state.synced_index;
            for (index, _) in &state.deliverable_after_sync {
                assert!(
                    *index > previous,
                    "{log:?} makes messages deliverable in log order"
                );
                assert!(*index < state.next_index);
                previous = *index;
            }
            for (index, waiter) in &state.waiting {
                assert!(
                    *index > state.synced_index,
                    "{log:?} waiter {waiter} is still waiting"
                );
                assert!(
                    *index < state.next_index,
                    "{log:?} waiter {waiter} waits for a record"
                );
                waiting.insert(*waiter);
            }
        }
        assert_eq!(
            waiting.len(),
            self.waiters.len(),
            "every waiter is registered on a log, and every registration names a live waiter"
        );
        if self.fenced.is_some() {
            assert_eq!(
                self.waiters.len(),
                0,
                "a fenced node has answered every waiter"
            );
        }
    }
}

/// The queue's own tables: sizes, order keys, the delay index, pending counts.
fn check_messages(queue: &Queue) {
    let name = &queue.name;
    let bytes: u64 = queue
        .messages
        .values()
        .map(|message| message.size_bytes())
        .sum();
    assert_eq!(
        queue.bytes, bytes,
        "bytes of queue {name} is the sum of message sizes"
    );
    let mut hidden_seen = false;
    // The delay index must hold exactly the visible keys: each is in it, and it has no more.
    let mut visible: usize = 0;
    for (sequence, message) in queue.messages.iter() {
        assert_eq!(
            message.sequence, sequence,
            "queue {name} files {sequence} by sequence"
        );
        assert!(
            sequence < queue.next_sequence,
            "{sequence} of {name} was taken"
        );
        match message.order_key() {
            None => hidden_seen = true,
            Some(key) => {
                assert!(
                    !hidden_seen,
                    "{sequence} of {name} is visible after a hidden one"
                );
                assert_eq!(key.sequence, sequence);
                if queue.is_delay() {
                    assert!(
                        key.due >= message.deliver_at,
                        "{sequence} of {name} is not early"
                    );
                    assert!(
                        queue.delay_index.contains(&key),
                        "delay index of {name} holds visible {sequence}"
                    );
                } else {
                    assert_eq!(
                        key.due,
                        UnixMillis(0),
                        "only delay queues order by due time"
                    );
                }
                visible += 1;
            }
        }
        let needing = queue
            .subscriptions
            .values()
            .filter(|subscription| subscription.needs(message.sequence, message.order_key()))
            .count();
        assert_eq!(
            usize::from(message.pending_subscriptions),
            needing,
            "pending subscriptions of {sequence} of queue {name}"
        );
        if !queue.subscriptions.is_empty() {
            assert!(
                needing > 0,
                "{sequence} of {name} is needed by someone or removed"
            );
        }
    }
    queue.delay_index.check();
    if queue.is_delay() {
        assert_eq!(
            queue.delay_index.len(),
            visible,
            "delay index of {name} holds only the visible keys"
        );
    } else {
        assert!(
            queue.delay_index.is_empty(),
            "only delay queues have a delay index"
        );
    }
    assert_eq!(queue.subscription_names.len(), queue.subscriptions.len());
    for (subscription_name, id) in &queue.subscription_names {
        let subscription = queue
            .subscriptions
            .get(id)
            .expect("a named subscription exists");
        assert_eq!(&subscription.name, subscription_name);
    }
}

/// One subscription's tables against the queue's messages.
fn check_subscription(queue: &Queue, subscription: &Subscription) {
    let id = subscription.id;
    assert_eq!(
        subscription.durable, !subscription.broadcast,
        "point subscriptions are durable"
    );
    if subscription.broadcast {
        assert_eq!(
            subscription.consumers.len(),
            1,
            "broadcast {id} lives with its consumer"
        );
    }
    if !queue.is_delay() {
        assert_eq!(subscription.cursor.due, UnixMillis(0));
    }
    let delivered = |sequence: &Sequence| {
        let message = queue
            .messages
            .get(*sequence)
            .unwrap_or_else(|| panic!("{sequence} held by subscription {id} is stored"));
        message
            .order_key()
            .is_some_and(|key| key <= subscription.cursor)
    };
    let mut named: BTreeSet<Sequence> = BTreeSet::new();
    let tables = [
        subscription.in_flight.keys().collect::<Vec<_>>(),
        subscription.ready.keys().copied().collect(),
        subscription.waiting.keys().copied().collect(),
    ];
    for sequence in tables.into_iter().flatten() {
        assert!(
            delivered(&sequence),
            "{sequence} of subscription {id} was delivered"
        );
        assert!(
            named.insert(sequence),
            "{sequence} is in one table of subscription {id}"
        );
    }
    for sequence in &subscription.skip {
        assert!(
            !delivered(sequence),
            "skipped {sequence} of subscription {id} is ahead"
        );
        assert!(
            named.insert(*sequence),
            "{sequence} is in one table of subscription {id}"
        );
    }
    for (sequence, in_flight) in subscription.in_flight.iter() {
        assert!(in_flight.delivery_count >= 1);
        match in_flight.consumer {
            Some(consumer) => {
                assert!(
                    subscription.consumers.contains_key(&consumer),
                    "{sequence} of subscription {id} is held by attached consumer {consumer}"
                );
                let deadline = in_flight
                    .lease_deadline
                    .expect("a held delivery has a lease");
                assert!(
                    subscription.leases.watches(deadline, sequence),
                    "the lease of {sequence} of subscription {id} is watched"
                );
                assert!(
                    subscription
                        .leases
                        .armed()
                        .is_some_and(|armed| armed <= deadline),
                    "the lease timer of subscription {id} is armed by {deadline:?}"
                );
            }
            None => assert!(
                in_flight.lease_deadline.is_none(),
                "a dead letter has no lease"
            ),
        }
    }
    let counts = subscription
        .ready
        .values()
        .chain(subscription.waiting.values().map(|(count, _)| count));
    for count in counts {
        assert!(*count >= 1, "a redelivery follows a delivery");
    }
    if let Some(served) = subscription.last_served {
        assert!(
            subscription.consumers.contains_key(&served),
            "{served} is still attached"
        );
    }
}
