//! Property tests of the node: random operation sequences against one node, checked against the
//! delivery invariants of ARCHITECTURE §3 and §8.
//!
//! A [`Scenario`] drives the harness with a list of [`Op`]s the way a careful client would, and
//! keeps a record of what such a client saw: which publishes were confirmed, which acks were
//! confirmed, and every delivery with the step and wall time at which it arrived. Each property
//! runs its own mix of operations and checks that record (or the queue itself, after every step).
//!
//! Deliveries are observed per connection after each step, so the interleaving of two consumers'
//! deliveries within one step is unknown; the order checks compare whole steps with each other
//! and each consumer's batch within a step.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use krest_proto::client::{self as wire, client_frame, server_frame, QueueKind as WireKind};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;

use crate::harness::{bodies, kind, message, tag, Harness};
use crate::ids::ConnId;
use crate::io::{Input, LogId};
use crate::queue::Queue;

const QUEUE: &str = "q";
const ACK_TIMEOUT_MS: u64 = 1_000;
const NACK_DELAY_MS_MAX: u64 = 2_000;
const CONSUMERS_MAX: usize = 4;
const GROUPS: [&str; 2] = ["default", "other"];

// --- operations ------------------------------------------------------------------------------

/// One thing a client (or the machine under the node) does.
#[derive(Debug, Clone)]
enum Op {
    /// Publishes one message per delay (delays are used on delay queues only).
    Publish {
        delays_ms: Vec<u64>,
        padding: usize,
        header_bytes: usize,
    },
    /// A new connection subscribes (skipped when there are enough consumers already).
    Subscribe(ConsumerSpec),
    /// A consumer's connection goes away.
    Leave { pick: Index },
    /// Acks one delivery held by a consumer.
    Ack { pick: Index },
    /// Nacks one delivery held by a consumer, redelivered after `delay_ms`.
    Nack { pick: Index, delay_ms: u64 },
    /// Renews the lease of one delivery held by a consumer (0: by the queue's ack timeout).
    Extend { pick: Index, extend_ms: u64 },
    /// A pull consumer without a waiting fetch asks for up to `max_messages`.
    Fetch {
        pick: Index,
        max_messages: u32,
        wait_ms: u64,
    },
    /// Virtual time passes (both clocks).
    Advance { ms: u64 },
    /// The wall clock jumps ahead; the monotonic clock does not.
    WallJump { ms: u64 },
    /// Crash and restart: unsynced records are lost; every consumer reconnects.
    Restart,
    /// Storage stops completing syncs until `SyncOn`.
    SyncOff,
    /// Storage completes every pending sync and keeps up from now on.
    SyncOn,
    /// Storage completes the pending syncs of the metadata log only, or of the queue logs only
    /// (the runtime keeps the order of commands per log, not across logs).
    SyncLogs { metadata: bool },
    /// Purges the queue.
    Purge,
}

/// How a consumer subscribes.
#[derive(Debug, Clone, Copy)]
struct ConsumerSpec {
    broadcast: bool,
    group: usize,
    prefetch: u32,
    pull: bool,
}

/// Which operations a property uses.
#[derive(Debug, Clone, Copy)]
struct Mix {
    broadcast: bool,
    groups: usize,
    delay_ms_max: u64,
    padding_max: usize,
    restarts: bool,
    sync_windows: bool,
    partial_syncs: bool,
    purge: bool,
    wall_jumps: bool,
}

impl Mix {
    const POINT_ONLY: Mix = Mix {
        broadcast: false,
        groups: 1,
        delay_ms_max: 0,
        padding_max: 4,
        restarts: false,
        sync_windows: false,
        partial_syncs: false,
        purge: false,
        wall_jumps: false,
    };
}

fn op_strategy(mix: Mix) -> impl Strategy<Value = Op> {
    let publish = (
        prop::collection::vec(0..=mix.delay_ms_max, 1..=3),
        0..=mix.padding_max,
        prop_oneof![3 => Just(0usize), 1 => 1..=mix.padding_max],
    )
        .prop_map(|(delays_ms, padding, header_bytes)| Op::Publish {
            delays_ms,
            padding,
            header_bytes,
        });
    let subscribe = (
        any::<bool>(),
        0..mix.groups,
        1u32..=4,
        prop::bool::weighted(0.3),
    )
        .prop_map(move |(broadcast, group, prefetch, pull)| {
            Op::Subscribe(ConsumerSpec {
                broadcast: broadcast && mix.broadcast,
                group,
                prefetch,
                pull,
            })
        });
    let fetch = (
        any::<Index>(),
        1u32..=4,
        prop_oneof![Just(0u64), 1..=2_000u64],
    )
        .prop_map(|(pick, max_messages, wait_ms)| Op::Fetch {
            pick,
            max_messages,
            wait_ms,
        });
    let nack_delay = prop_oneof![Just(0u64), 1..=NACK_DELAY_MS_MAX];
    let extend = (any::<Index>(), 0..=2 * ACK_TIMEOUT_MS);
    let mut choices: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (4, publish.boxed()),
        (2, subscribe.boxed()),
        (
            1,
            any::<Index>().prop_map(|pick| Op::Leave { pick }).boxed(),
        ),
        (4, any::<Index>().prop_map(|pick| Op::Ack { pick }).boxed()),
        (
            2,
            (any::<Index>(), nack_delay)
                .prop_map(|(pick, delay_ms)| Op::Nack { pick, delay_ms })
                .boxed(),
        ),
        (
            1,
            extend
                .prop_map(|(pick, extend_ms)| Op::Extend { pick, extend_ms })
                .boxed(),
        ),
        (2, fetch.boxed()),
        (3, (0..=1_500u64).prop_map(|ms| Op::Advance { ms }).boxed()),
    ];
    if mix.wall_jumps {
        choices.push((1, (1..=5_000u64).prop_map(|ms| Op::WallJump { ms }).boxed()));
    }
    if mix.restarts {
        choices.push((1, Just(Op::Restart).boxed()));
    }
    if mix.sync_windows {
        choices.push((1, Just(Op::SyncOff).boxed()));
        choices.push((1, Just(Op::SyncOn).boxed()));
    }
    if mix.partial_syncs {
        let sync_logs = any::<bool>().prop_map(|metadata| Op::SyncLogs { metadata });
        choices.push((1, sync_logs.boxed()));
    }
    if mix.purge {
        choices.push((1, Just(Op::Purge).boxed()));
    }
    Union::new_weighted(choices)
}

fn ops(mix: Mix) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(mix), 1..=60)
}

// --- the scenario and what it records --------------------------------------------------------

/// A subscription as clients see it: a point group (durable, shared by its consumers, survives
/// restarts) or the subscription of one broadcast consumer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SubscriptionName {
    Point(&'static str),
    Broadcast { epoch: usize, consumer: u64 },
}

struct Consumer {
    spec: ConsumerSpec,
    conn: ConnId,
    id: u64,
    name: SubscriptionName,
    /// The request id of a fetch waiting for its answer.
    fetch: Option<u64>,
}

/// A delivery a consumer holds and has not settled.
#[derive(Clone)]
struct Held {
    conn: ConnId,
    consumer: u64,
    name: SubscriptionName,
    delivery: wire::Delivery,
}

/// A delivery as it arrived.
#[derive(Debug, Clone)]
struct Seen {
    step: usize,
    /// Restarts before it.
    epoch: usize,
    wall_ms: u64,
    consumer: u64,
    name: SubscriptionName,
    message: String,
    delivery: wire::Delivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckStatus {
    /// No answer yet: it may have been applied.
    Pending,
    /// `Done` arrived: the ack is durable.
    Confirmed,
    /// Answered with an error: not applied.
    Refused,
}

#[derive(Debug, Clone)]
struct AckAttempt {
    step: usize,
    conn: ConnId,
    request_id: u64,
    name: SubscriptionName,
    message: String,
    status: AckStatus,
}

struct PendingPublish {
    conn: ConnId,
    request_id: u64,
    messages: Vec<String>,
}

#[derive(Default)]
struct Record {
    published: BTreeSet<String>,
    /// Confirmed messages and their sequences.
    confirmed: BTreeMap<String, u64>,
    acks: Vec<AckAttempt>,
    seen: Vec<Seen>,
}

struct Scenario {
    harness: Harness,
    delay_queue: bool,
    producer: ConnId,
    consumers: Vec<Consumer>,
    held: Vec<Held>,
    pending_publishes: Vec<PendingPublish>,
    next_message: u64,
    step: usize,
    epoch: usize,
    record: Record,
}

/// The id of a message: its payload up to the padding.
fn message_id(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    text.split('.').next().unwrap_or_default().to_string()
}

impl Scenario {
    fn new(settings: wire::QueueSettings) -> Scenario {
        // A payload budget of a few messages: most durable payloads are read back from the
        // log before delivery, so every property covers that path too.
        let mut config = crate::config::Config::default();
        config.storage.payload_memory_bytes = 256;
        let mut harness = Harness::new(config);
        let producer = harness.connect(0);
        let declared = harness.declare(producer, QUEUE, settings.clone());
        assert!(
            matches!(declared, Some(server_frame::Body::Done(_))),
            "{declared:?}"
        );
        Scenario {
            harness,
            delay_queue: settings.kind == WireKind::Delay as i32,
            producer,
            consumers: Vec::new(),
            held: Vec::new(),
            pending_publishes: Vec::new(),
            next_message: 1,
            step: 0,
            epoch: 0,
            record: Record::default(),
        }
    }

    /// Applies `ops`, checking the node's invariants and then `check` after each.
    fn run(&mut self, ops: &[Op], mut check: impl FnMut(&Scenario)) {
        for op in ops {
            self.apply(op);
            self.harness.node().check_invariants();
            check(self);
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Publish {
                delays_ms,
                padding,
                header_bytes,
            } => self.publish(delays_ms, *padding, *header_bytes),
            Op::Subscribe(spec) if self.consumers.len() < CONSUMERS_MAX => self.subscribe(*spec),
            Op::Subscribe(_) => {}
            Op::Leave { pick } if !self.consumers.is_empty() => {
                self.leave(pick.index(self.consumers.len()))
            }
            Op::Leave { .. } => {}
            Op::Ack { pick } if !self.held.is_empty() => {
                self.settle(pick.index(self.held.len()), wire::SettleAction::Ack, 0)
            }
            Op::Nack { pick, delay_ms } if !self.held.is_empty() => self.settle(
                pick.index(self.held.len()),
                wire::SettleAction::Nack,
                *delay_ms,
            ),
            Op::Extend { pick, extend_ms } if !self.held.is_empty() => self.settle(
                pick.index(self.held.len()),
                wire::SettleAction::Extend,
                *extend_ms,
            ),
            Op::Ack { .. } | Op::Nack { .. } | Op::Extend { .. } => {}
            Op::Fetch {
                pick,
                max_messages,
                wait_ms,
            } => self.fetch(*pick, *max_messages, *wait_ms),
            Op::Advance { ms } => self.harness.advance(*ms),
            Op::WallJump { ms } => {
                self.harness.now.wall.0 += ms;
                self.harness.input(Input::Tick);
            }
            Op::Restart => self.restart(),
            Op::SyncOff => self.harness.sync_automatically = false,
            Op::SyncOn => {
                self.harness.sync_automatically = true;
                self.harness.complete_syncs();
            }
            Op::SyncLogs { metadata } => {
                let logs: BTreeSet<LogId> = self.harness.pending_syncs().into_iter().collect();
                for log in logs
                    .into_iter()
                    .filter(|log| (*log == LogId::Metadata) == *metadata)
                {
                    sync_only(&mut self.harness, log);
                }
            }
            Op::Purge => {
                let purge = wire::PurgeQueue { name: QUEUE.into() };
                let _ = self
                    .harness
                    .send(self.producer, client_frame::Body::PurgeQueue(purge));
            }
        }
        self.collect();
        self.step += 1;
    }

    fn publish(&mut self, delays_ms: &[u64], padding: usize, header_bytes: usize) {
        let mut messages = Vec::new();
        let mut ids = Vec::new();
        for delay_ms in delays_ms {
            let id = format!("m{}", self.next_message);
            self.next_message += 1;
            let headers = (header_bytes > 0)
                .then(|| wire::Header {
                    key: "k".into(),
                    value: "v".repeat(header_bytes),
                })
                .into_iter()
                .collect();
            messages.push(wire::OutgoingMessage {
                payload: Bytes::from(format!("{id}{}", ".".repeat(padding))),
                headers,
                delay_ms: if self.delay_queue { *delay_ms } else { 0 },
                ..Default::default()
            });
            self.record.published.insert(id.clone());
            ids.push(id);
        }
        let request_id = self.harness.publish(self.producer, QUEUE, messages);
        self.pending_publishes.push(PendingPublish {
            conn: self.producer,
            request_id,
            messages: ids,
        });
    }

    fn subscribe(&mut self, spec: ConsumerSpec) {
        let conn = self.harness.connect(0);
        let mode = match spec.broadcast {
            true => wire::DeliveryMode::Broadcast,
            false => wire::DeliveryMode::Point,
        };
        let request = wire::Subscribe {
            queue: QUEUE.into(),
            mode: mode as i32,
            group: GROUPS[spec.group].into(),
            prefetch: spec.prefetch,
            pull: spec.pull,
            ..Default::default()
        };
        let id = self.harness.subscribe(conn, request);
        let name = match spec.broadcast {
            true => SubscriptionName::Broadcast {
                epoch: self.epoch,
                consumer: id,
            },
            false => SubscriptionName::Point(GROUPS[spec.group]),
        };
        self.consumers.push(Consumer {
            spec,
            conn,
            id,
            name,
            fetch: None,
        });
    }

    fn fetch(&mut self, pick: Index, max_messages: u32, wait_ms: u64) {
        let idle: Vec<usize> = (0..self.consumers.len())
            .filter(|i| self.consumers[*i].spec.pull && self.consumers[*i].fetch.is_none())
            .collect();
        if idle.is_empty() {
            return;
        }
        let consumer = &mut self.consumers[*pick.get(&idle)];
        let fetch = wire::Fetch {
            subscription_id: consumer.id,
            max_messages,
            wait_ms,
        };
        let request_id = self
            .harness
            .send(consumer.conn, client_frame::Body::Fetch(fetch));
        consumer.fetch = Some(request_id);
    }

    fn leave(&mut self, position: usize) {
        let consumer = self.consumers.remove(position);
        self.harness.input(Input::ClientDisconnected {
            conn: consumer.conn,
        });
        self.held.retain(|held| held.consumer != consumer.id);
    }

    /// Settles one held delivery, one tag per request so that an answer is all or nothing.
    /// `milliseconds` is a nack's delay or an extension's lease.
    fn settle(&mut self, position: usize, action: wire::SettleAction, milliseconds: u64) {
        let extend = action == wire::SettleAction::Extend;
        let held = match extend {
            true => self.held[position].clone(),
            false => self.held.remove(position),
        };
        let settle = wire::Settle {
            subscription_id: held.consumer,
            action: action as i32,
            tags: vec![tag(&held.delivery)],
            delay_ms: if extend { 0 } else { milliseconds },
            extend_ms: if extend { milliseconds } else { 0 },
        };
        let request_id = self
            .harness
            .send(held.conn, client_frame::Body::Settle(settle));
        if action == wire::SettleAction::Ack {
            self.record.acks.push(AckAttempt {
                step: self.step,
                conn: held.conn,
                request_id,
                name: held.name,
                message: message_id(&held.delivery.payload),
                status: AckStatus::Pending,
            });
        }
    }

    fn restart(&mut self) {
        self.harness.restart();
        self.epoch += 1;
        self.held.clear();
        self.pending_publishes.clear();
        self.producer = self.harness.connect(0);
        let specs: Vec<ConsumerSpec> = self.consumers.drain(..).map(|c| c.spec).collect();
        for spec in specs {
            self.subscribe(spec);
        }
    }

    /// Takes every delivery and every answer that arrived.
    fn collect(&mut self) {
        let wall_ms = self.harness.now.wall.0;
        for consumer in &mut self.consumers {
            let mut deliveries = self.harness.take_pushed(consumer.conn);
            let fetched = consumer
                .fetch
                .and_then(|request_id| self.harness.take_reply(consumer.conn, request_id));
            match fetched {
                None => {}
                Some(server_frame::Body::Deliveries(batch)) => {
                    consumer.fetch = None;
                    let id = batch.subscription_id;
                    deliveries.extend(batch.deliveries.into_iter().map(|d| (id, d)));
                }
                Some(other) => panic!("a fetch was answered with {other:?}"),
            }
            assert!(
                consumer.spec.pull || consumer.fetch.is_none(),
                "only pull consumers fetch"
            );
            for (subscription_id, delivery) in deliveries {
                assert_eq!(subscription_id, consumer.id, "one consumer per connection");
                let sequence = tag(&delivery).sequence;
                self.held.retain(|held| {
                    held.name != consumer.name || tag(&held.delivery).sequence != sequence
                });
                self.record.seen.push(Seen {
                    step: self.step,
                    epoch: self.epoch,
                    wall_ms,
                    consumer: consumer.id,
                    name: consumer.name.clone(),
                    message: message_id(&delivery.payload),
                    delivery: delivery.clone(),
                });
                self.held.push(Held {
                    conn: consumer.conn,
                    consumer: consumer.id,
                    name: consumer.name.clone(),
                    delivery,
                });
            }
        }
        let harness = &mut self.harness;
        let record = &mut self.record;
        self.pending_publishes.retain(|pending| {
            match harness.take_reply(pending.conn, pending.request_id) {
                None => true,
                Some(server_frame::Body::PublishOk(ok)) => {
                    assert_eq!(ok.sequences.len(), pending.messages.len());
                    for (id, sequence) in pending.messages.iter().zip(ok.sequences) {
                        record.confirmed.insert(id.clone(), sequence);
                    }
                    false
                }
                Some(_) => false,
            }
        });
        for attempt in &mut self.record.acks {
            if attempt.status != AckStatus::Pending {
                continue;
            }
            match harness.take_reply(attempt.conn, attempt.request_id) {
                None => {}
                Some(server_frame::Body::Done(_)) => attempt.status = AckStatus::Confirmed,
                Some(_) => attempt.status = AckStatus::Refused,
            }
        }
    }

    /// The end of a run: storage keeps up, every consumer leaves, leases and nack delays run
    /// out, and a fresh consumer of the default group acks everything it gets. Returns the
    /// messages it got.
    fn drain_with_fresh_consumer(&mut self) -> BTreeSet<String> {
        self.apply(&Op::SyncOn);
        while !self.consumers.is_empty() {
            self.leave(0);
        }
        self.apply(&Op::Advance {
            ms: 10 * ACK_TIMEOUT_MS + NACK_DELAY_MS_MAX,
        });
        let first_step = self.step;
        self.subscribe(ConsumerSpec {
            broadcast: false,
            group: 0,
            prefetch: 64,
            pull: false,
        });
        self.collect();
        self.step += 1;
        let mut idle_rounds = 0;
        for _ in 0..1_000 {
            if self.held.is_empty() {
                idle_rounds += 1;
                if idle_rounds == 2 {
                    break;
                }
                self.apply(&Op::Advance {
                    ms: 2 * ACK_TIMEOUT_MS,
                });
                continue;
            }
            idle_rounds = 0;
            while !self.held.is_empty() {
                self.settle(0, wire::SettleAction::Ack, 0);
            }
            self.step += 1;
            self.collect();
        }
        assert!(self.held.is_empty(), "the fresh consumer finished");
        self.record
            .seen
            .iter()
            .filter(|seen| seen.step >= first_step)
            .map(|seen| seen.message.clone())
            .collect()
    }
}

// --- checks ----------------------------------------------------------------------------------

/// Checks that the first deliveries of each subscription (per restart epoch) follow `key`:
/// every step's first deliveries come after every earlier step's, each consumer's batch is
/// ordered, and no message is first-delivered twice.
fn check_first_delivery_order(seen: &[Seen], key: impl Fn(&wire::Delivery) -> (u64, u64)) {
    #[derive(Default)]
    struct Order {
        step: usize,
        before_step: Option<(u64, u64)>,
        in_step: Option<(u64, u64)>,
        last_by_consumer: BTreeMap<u64, (u64, u64)>,
        delivered: BTreeSet<u64>,
    }
    let mut orders: BTreeMap<(usize, SubscriptionName), Order> = BTreeMap::new();
    for seen in seen
        .iter()
        .filter(|seen| tag(&seen.delivery).delivery_count == 1)
    {
        let order = orders.entry((seen.epoch, seen.name.clone())).or_default();
        if order.step != seen.step {
            order.before_step = order.before_step.max(order.in_step);
            order.step = seen.step;
            order.in_step = None;
            order.last_by_consumer.clear();
        }
        let this = key(&seen.delivery);
        assert!(
            order.before_step.is_none_or(|before| this > before),
            "{seen:?} comes after {:?}, first-delivered in an earlier step",
            order.before_step
        );
        if let Some(previous) = order.last_by_consumer.insert(seen.consumer, this) {
            assert!(
                this > previous,
                "{seen:?} follows {previous:?} in one batch"
            );
        }
        assert!(
            order.delivered.insert(this.1),
            "{seen:?} was first-delivered twice"
        );
        order.in_step = order.in_step.max(Some(this));
    }
}

/// The ack attempts that may have been applied to the latest delivery of each message, per
/// subscription: sent after it and not refused.
fn maybe_acked(record: &Record, name: &SubscriptionName) -> BTreeSet<String> {
    let mut last_delivered: BTreeMap<&str, usize> = BTreeMap::new();
    for seen in record.seen.iter().filter(|seen| &seen.name == name) {
        last_delivered.insert(&seen.message, seen.step);
    }
    record
        .acks
        .iter()
        .filter(|ack| &ack.name == name && ack.status != AckStatus::Refused)
        .filter(|ack| last_delivered.get(ack.message.as_str()) < Some(&ack.step))
        .map(|ack| ack.message.clone())
        .collect()
}

/// Checks that no confirmed ack is followed by a delivery of its message to its subscription.
fn check_nothing_delivered_after_confirmed_ack(record: &Record) {
    let mut confirmed: BTreeMap<(&SubscriptionName, &str), usize> = BTreeMap::new();
    for ack in &record.acks {
        if ack.status == AckStatus::Confirmed {
            let step = confirmed
                .entry((&ack.name, &ack.message))
                .or_insert(ack.step);
            *step = (*step).min(ack.step);
        }
    }
    for seen in &record.seen {
        if let Some(step) = confirmed.get(&(&seen.name, seen.message.as_str())) {
            assert!(
                seen.step < *step,
                "{seen:?} delivered after its ack (sent in step {step}) was confirmed"
            );
        }
    }
}

/// A drop-oldest queue stays within its bounds. (Counters against contents, and the other
/// bookkeeping, are `Node::check_invariants`, which `Scenario::run` calls after every step.)
fn check_queue_bounds(queue: &Queue) {
    assert!(queue.messages.len() as u64 <= queue.settings.max_messages);
    assert!(queue.bytes <= queue.settings.max_bytes);
}

fn settings(kind_of_queue: WireKind) -> wire::QueueSettings {
    wire::QueueSettings {
        ack_timeout_ms: ACK_TIMEOUT_MS,
        ..kind(kind_of_queue)
    }
}

/// 256 cases (a fraction of a second), unless `PROPTEST_CASES` asks for another number;
/// `PROPTEST_RNG_SEED` replays a run. Failures are printed, not written to the source tree.
fn config() -> ProptestConfig {
    let defaults = ProptestConfig::default();
    ProptestConfig {
        cases: match std::env::var_os("PROPTEST_CASES") {
            Some(_) => defaults.cases,
            None => 256,
        },
        failure_persistence: None,
        ..defaults
    }
}

// --- properties ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Within a subscription (point or broadcast, push or pull), first deliveries follow
    /// sequence order, whatever the consumers ack, nack, let expire or dead-letter.
    #[test]
    fn first_deliveries_follow_sequence_order(
        ops in ops(Mix { broadcast: true, groups: 2, ..Mix::POINT_ONLY })
    ) {
        let mut scenario = Scenario::new(wire::QueueSettings {
            max_deliveries: 3,
            ..settings(WireKind::Persistent)
        });
        scenario.run(&ops, |_| {});
        check_first_delivery_order(&scenario.record.seen, |d| (0, tag(d).sequence));
    }

    /// On a delay queue no delivery happens before the message's deliver-at, and first
    /// deliveries come in (deliver-at, sequence) order.
    #[test]
    fn no_delayed_message_is_delivered_before_its_deliver_at(
        ops in ops(Mix {
            broadcast: true,
            groups: 2,
            delay_ms_max: 3_000,
            restarts: true,
            wall_jumps: true,
            ..Mix::POINT_ONLY
        })
    ) {
        let mut scenario = Scenario::new(settings(WireKind::Delay));
        scenario.run(&ops, |_| {});
        for seen in &scenario.record.seen {
            prop_assert!(
                seen.wall_ms >= seen.delivery.deliver_at_unix_ms,
                "delivered early: {:?}", seen
            );
        }
        check_first_delivery_order(&scenario.record.seen, |d| {
            (d.deliver_at_unix_ms, tag(d).sequence)
        });
    }

    /// Through crashes and storage stalls, every confirmed message that was not acked is
    /// delivered again, with its confirmed sequence, and nothing unpublished is delivered.
    #[test]
    fn every_confirmed_message_is_delivered_until_acked(
        ops in ops(Mix { restarts: true, sync_windows: true, partial_syncs: true, ..Mix::POINT_ONLY })
    ) {
        let mut scenario = Scenario::new(settings(WireKind::Persistent));
        scenario.run(&ops, |_| {});
        let finally_delivered = scenario.drain_with_fresh_consumer();
        let record = &scenario.record;
        for seen in &record.seen {
            prop_assert!(record.published.contains(&seen.message), "{:?}", seen);
            if let Some(sequence) = record.confirmed.get(&seen.message) {
                prop_assert_eq!(*sequence, tag(&seen.delivery).sequence, "{:?}", seen);
            }
        }
        let acked = maybe_acked(record, &SubscriptionName::Point(GROUPS[0]));
        for message in record.confirmed.keys() {
            prop_assert!(
                acked.contains(message) || finally_delivered.contains(message),
                "confirmed message {} was lost", message
            );
        }
        check_nothing_delivered_after_confirmed_ack(record);
    }

    /// Once an ack's `Done` arrived, its message is never delivered to that subscription again,
    /// not even after a crash.
    #[test]
    fn nothing_is_delivered_after_its_ack_was_confirmed(
        ops in ops(Mix {
            broadcast: true,
            groups: 2,
            restarts: true,
            sync_windows: true,
            partial_syncs: true,
            ..Mix::POINT_ONLY
        })
    ) {
        let mut scenario = Scenario::new(settings(WireKind::Persistent));
        scenario.run(&ops, |_| {});
        scenario.drain_with_fresh_consumer();
        check_nothing_delivered_after_confirmed_ack(&scenario.record);
    }

    /// After every operation the byte count of each queue (the dead-letter queue too) is the sum
    /// of its messages' sizes, a drop-oldest queue stays within its bounds, and every
    /// per-message and per-consumer counter matches the subscription tables.
    #[test]
    fn queue_counters_match_contents(
        ops in ops(Mix {
            broadcast: true,
            groups: 2,
            padding_max: 40,
            restarts: true,
            sync_windows: true,
            partial_syncs: true,
            purge: true,
            ..Mix::POINT_ONLY
        })
    ) {
        let mut scenario = Scenario::new(wire::QueueSettings {
            max_messages: 6,
            max_bytes: 150,
            overflow: wire::OverflowPolicy::DropOldest as i32,
            max_deliveries: 3,
            ..settings(WireKind::Persistent)
        });
        scenario.run(&ops, |scenario| {
            scenario.harness.node().queues().for_each(check_queue_bounds)
        });
    }
}

// --- focused examples ------------------------------------------------------------------------

fn point(prefetch: u32) -> wire::Subscribe {
    wire::Subscribe {
        queue: QUEUE.into(),
        prefetch,
        ..Default::default()
    }
}

/// A settle of one delivery.
fn settle(
    subscription_id: u64,
    action: wire::SettleAction,
    delivery: &wire::Delivery,
    delay_ms: u64,
) -> client_frame::Body {
    client_frame::Body::Settle(wire::Settle {
        subscription_id,
        action: action as i32,
        tags: vec![tag(delivery)],
        delay_ms,
        extend_ms: 0,
    })
}

#[test]
fn an_auto_ack_consumer_gets_only_as_many_messages_as_its_credit() {
    // Auto-ack push consumers are bounded by credit, Credit frames grant more, and what they
    // got is acked at once.
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, QUEUE, settings(WireKind::Persistent));
    let subscription = harness.subscribe(
        conn,
        wire::Subscribe {
            ack_mode: wire::AckMode::Auto as i32,
            ..point(2)
        },
    );
    let messages = (1..=5).map(|i| message(&i.to_string())).collect();
    harness.publish(conn, QUEUE, messages);
    assert_eq!(bodies(&harness.take_pushed(conn)), ["1", "2"]);
    harness.advance(10 * ACK_TIMEOUT_MS);
    assert!(harness.take_pushed(conn).is_empty(), "no credit, no lease");
    let credit = |messages| {
        client_frame::Body::Credit(wire::Credit {
            subscription_id: subscription,
            messages,
        })
    };
    assert!(matches!(
        harness.call(conn, credit(2)),
        Some(server_frame::Body::Done(_))
    ));
    assert_eq!(bodies(&harness.take_pushed(conn)), ["3", "4"]);
    harness.call(conn, credit(10));
    assert_eq!(bodies(&harness.take_pushed(conn)), ["5"]);
    let queue = harness.node().queue(QUEUE).unwrap();
    assert!(queue.messages.is_empty(), "auto-acked messages are removed");
    assert_eq!(queue.in_flight_count(), 0);
    harness.restart();
    assert!(
        harness.node().queue(QUEUE).unwrap().messages.is_empty(),
        "the auto acks were logged"
    );
}

#[test]
fn a_nack_with_a_delay_redelivers_only_after_the_delay() {
    // A nacked message waits out its delay before its redelivery, while the others flow.
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, QUEUE, settings(WireKind::Persistent));
    let subscription = harness.subscribe(conn, point(10));
    harness.publish(conn, QUEUE, vec![message("a")]);
    let first = harness.take_pushed(conn);
    let nack = settle(subscription, wire::SettleAction::Nack, &first[0].1, 500);
    let nack = harness.call(conn, nack);
    assert!(matches!(nack, Some(server_frame::Body::Done(_))));
    harness.publish(conn, QUEUE, vec![message("b")]);
    assert_eq!(bodies(&harness.take_pushed(conn)), ["b"]);
    harness.advance(499);
    assert!(harness.take_pushed(conn).is_empty(), "redelivered early");
    harness.advance(1);
    let again = harness.take_pushed(conn);
    assert_eq!(bodies(&again), ["a"]);
    assert_eq!(tag(&again[0].1).delivery_count, 2);
}

#[test]
fn a_purge_keeps_the_messages_in_flight_and_their_acks_still_work() {
    // Purging removes what nobody holds; a delivery in flight stays, can be acked, and nothing
    // purged comes back.
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, QUEUE, settings(WireKind::Persistent));
    let subscription = harness.subscribe(conn, point(1));
    harness.publish(conn, QUEUE, vec![message("a"), message("b"), message("c")]);
    let held = harness.take_pushed(conn);
    assert_eq!(bodies(&held), ["a"]);
    let purge = wire::PurgeQueue { name: QUEUE.into() };
    let purged = harness.call(conn, client_frame::Body::PurgeQueue(purge));
    assert!(matches!(purged, Some(server_frame::Body::Done(_))));
    assert_eq!(harness.node().queue(QUEUE).unwrap().messages.len(), 1);
    let ack = settle(subscription, wire::SettleAction::Ack, &held[0].1, 0);
    let ack = harness.call(conn, ack);
    assert!(matches!(ack, Some(server_frame::Body::Done(_))));
    harness.advance(10 * ACK_TIMEOUT_MS);
    assert!(harness.take_pushed(conn).is_empty());
    harness.restart();
    assert!(
        harness.node().queue(QUEUE).unwrap().messages.is_empty(),
        "the purge and the ack were logged"
    );
}

/// Completes the pending sync of `log` only, as a storage worker that fsyncs logs
/// independently may.
fn sync_only(harness: &mut Harness, log: LogId) {
    harness.complete_syncs_of(&[log]);
}

#[test]
fn an_ack_is_confirmed_only_once_its_subscription_is_durable() {
    // The Done of an ack promises the ack survives a crash, which needs the point subscription's
    // declaration (metadata log) to be durable as well as the ack record (queue log); another
    // group keeps the message stored, so the ack is logged as an ack, not as a removal.
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, QUEUE, settings(WireKind::Persistent));
    let other = harness.connect(0);
    let other_group = wire::Subscribe {
        group: GROUPS[1].into(),
        ..point(10)
    };
    harness.subscribe(other, other_group);
    harness.publish(conn, QUEUE, vec![message("a")]);
    harness.sync_automatically = false;
    let subscription = harness.subscribe(conn, point(10));
    let delivered = harness.take_pushed(conn);
    assert_eq!(bodies(&delivered), ["a"]);
    let ack = settle(subscription, wire::SettleAction::Ack, &delivered[0].1, 0);
    let ack = harness.send(conn, ack);
    let queue_log = harness
        .storage
        .logs
        .keys()
        .copied()
        .find(|log| *log != LogId::Metadata);
    sync_only(&mut harness, queue_log.expect("the queue has a log"));
    let confirmed = harness.take_reply(conn, ack).is_some();
    harness.restart();
    harness.sync_automatically = true;
    let conn = harness.connect(0);
    harness.subscribe(conn, point(10));
    let again = harness.take_pushed(conn);
    assert!(
        !confirmed || again.is_empty(),
        "the ack was confirmed before the subscription was durable; after a crash {:?} came back",
        bodies(&again)
    );
}
