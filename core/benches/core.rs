//! Benchmarks of the core alone: no sockets, no files, no threads. Storage is played by the
//! bench itself, which answers every `Sync` at once.
//!
//! - `node/publish_deliver_ack/{0,255}_in_flight`: one message through the real [`Node`]: a
//!   publish frame to a persistent queue, its sync, the confirm and the delivery, an ack frame
//!   (of the oldest delivery), its sync and the ack's answer; alone, or with 255 other messages
//!   delivered and unacked as under a steady load. Target (issue 6): at most 250 ns a message.
//! - `delay_index/schedule` and `delay_index/fire`: a delay queue holding 1 million pending
//!   messages (10 million with `KREST_BENCH_DELAY_10M=1`); scheduling one more, and a due message
//!   being delivered and removed. Target: at least 1M of each per second at 10 million.
//! - `in_flight/ack_random`: acking deliveries picked at random among 100,000 in flight.
//!
//! Run with `cargo bench -p krest-core`; each bench runs a few seconds.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use krest_core::ids::{ConnId, ConsumerId, LogIndex, SubscriptionId};
use krest_core::queue::dispatch::SettleAction;
use krest_core::queue::{
    AckMode, ConsumerState, Effects, Message, Overflow, Queue, QueueKind, QueueSettings,
};
use krest_core::rng::Rng;
use krest_core::{Command, Config, Input, LogId, Node, Now, StorageDone, StorageRequest};
use krest_core::{Instant, Millis, UnixMillis};
use krest_proto::client::{self as wire, client_frame, server_frame, ClientFrame, ServerFrame};
use krest_proto::frame::{encode_frame, FrameDecoder};

/// Operations timed together between two untimed refills.
const CHUNK: u64 = 1_000;
/// Payload of the node bench, as in `krest bench`.
const PAYLOAD_BYTES: usize = 1024;

/// Runs `operation` and returns how long it took. Benches measure time; the core never does.
#[allow(clippy::disallowed_methods)]
#[inline(never)] // a frame of its own, for profilers (`valgrind --toggle-collect='*timed*'`)
fn timed(operation: impl FnOnce()) -> Duration {
    let started = std::time::Instant::now();
    operation();
    started.elapsed()
}

/// Runs `iterations` operations on `state` in chunks of at most [`CHUNK`]: `operation(state,
/// count)` is timed; `restore(state, count)`, which brings the state back to where it started,
/// is not.
fn in_chunks<State>(
    state: &mut State,
    iterations: u64,
    operation: impl Fn(&mut State, u64),
    restore: impl Fn(&mut State, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut remaining = iterations;
    while remaining > 0 {
        let count = remaining.min(CHUNK);
        total += timed(|| operation(state, count));
        restore(state, count);
        remaining -= count;
    }
    total
}

// --- the node, end to end ---------------------------------------------------------------

/// One node, a producer and a consumer connection, and storage that syncs at once.
struct NodeBench {
    node: Node,
    now: Now,
    producer: ConnId,
    consumer: ConnId,
    consumer_id: u64,
    /// Last index appended per log, for the `Synced` answers.
    appended: Vec<(LogId, LogIndex)>,
    /// Syncs requested and not yet answered.
    syncs: Vec<(LogId, LogIndex)>,
    /// Frames the node sent since the last `take_frames`.
    frames: Vec<Bytes>,
    /// The publish frame body, the same every time (request ids need not be unique).
    publish: Bytes,
    /// The sequence of the next message to ack (messages are acked in publish order).
    next_ack: u64,
}

impl NodeBench {
    /// Ready to run with `in_flight` messages published and delivered but not yet acked
    /// (at most the consumer's prefetch of 256), as under a steady load.
    fn new(in_flight: u64) -> NodeBench {
        let now = Now {
            monotonic: Instant(1_000),
            wall: UnixMillis(1_700_000_000_000),
        };
        let node = Node::new(Config::default(), Default::default(), 7, now).expect("empty start");
        let mut bench = NodeBench {
            node,
            now,
            producer: ConnId(1),
            consumer: ConnId(2),
            consumer_id: 0,
            appended: Vec::new(),
            syncs: Vec::new(),
            frames: Vec::new(),
            publish: Bytes::new(),
            next_ack: 1,
        };
        bench.drain();
        for conn in [bench.producer, bench.consumer] {
            bench.input(Input::ClientConnected { conn });
            bench.request(
                conn,
                client_frame::Body::Hello(wire::Hello {
                    protocol_version: krest_proto::PROTOCOL_VERSION,
                    client_name: "bench".into(),
                    producer_id: 0,
                }),
            );
        }
        let settings = wire::QueueSettings {
            kind: wire::QueueKind::Persistent as i32,
            ..Default::default()
        };
        bench.request(
            bench.producer,
            client_frame::Body::DeclareQueue(wire::DeclareQueue {
                name: "bench".into(),
                settings: Some(settings),
            }),
        );
        let subscribed = bench.request(
            bench.consumer,
            client_frame::Body::Subscribe(wire::Subscribe {
                queue: "bench".into(),
                prefetch: 256,
                ..Default::default()
            }),
        );
        bench.consumer_id = match subscribed {
            Some(server_frame::Body::SubscribeOk(ok)) => ok.subscription_id,
            other => panic!("subscribe failed: {other:?}"),
        };
        bench.publish = frame_body(
            1,
            client_frame::Body::Publish(wire::Publish {
                queue: "bench".into(),
                messages: vec![wire::OutgoingMessage {
                    payload: Bytes::from(vec![b'x'; PAYLOAD_BYTES]),
                    ..Default::default()
                }],
            }),
        );
        assert!(in_flight < 256, "within the consumer's prefetch");
        for _ in 0..in_flight {
            bench.publish();
        }
        bench.frames.clear();
        bench
    }

    fn input(&mut self, input: Input) {
        self.node.handle(self.now, input);
        self.drain();
    }

    /// Executes every command; answers syncs until none is left.
    fn drain(&mut self) {
        loop {
            while let Some(command) = self.node.poll_command() {
                match command {
                    Command::SendToClient { frame, .. } => self.frames.push(frame),
                    Command::Storage(StorageRequest::Append { log, records }) => {
                        let last = records.last().expect("appends carry records").index;
                        match self.appended.iter_mut().find(|(known, _)| *known == log) {
                            Some(entry) => entry.1 = last,
                            None => self.appended.push((log, last)),
                        }
                    }
                    Command::Storage(StorageRequest::Sync { log }) => {
                        if let Some((_, last)) =
                            self.appended.iter().find(|(known, _)| *known == log)
                        {
                            self.syncs.push((log, *last));
                        }
                    }
                    Command::Storage(StorageRequest::Read { .. }) => {
                        panic!("the benches' payloads fit storage.payload_memory_bytes")
                    }
                    _ => {}
                }
            }
            let Some((log, through)) = self.syncs.pop() else {
                return;
            };
            let done = StorageDone::Synced { log, through };
            self.node.handle(self.now, Input::StorageDone(done));
        }
    }

    /// Sends a request during setup and returns its answer.
    fn request(&mut self, conn: ConnId, body: client_frame::Body) -> Option<server_frame::Body> {
        self.frames.clear();
        let body = frame_body(1, body);
        self.input(Input::ClientFrame { conn, body });
        let frames = std::mem::take(&mut self.frames);
        frames
            .iter()
            .flat_map(decode_frames)
            .find_map(|frame| frame.body)
    }

    /// The ack frame bodies of the next `count` messages, in publish order.
    fn next_acks(&mut self, count: u64) -> Vec<Bytes> {
        let acks = (self.next_ack..self.next_ack + count)
            .map(|sequence| {
                frame_body(
                    sequence,
                    client_frame::Body::Settle(wire::Settle {
                        subscription_id: self.consumer_id,
                        action: wire::SettleAction::Ack as i32,
                        tags: vec![wire::DeliveryTag {
                            sequence,
                            delivery_count: 1,
                        }],
                        delay_ms: 0,
                        extend_ms: 0,
                    }),
                )
            })
            .collect();
        self.next_ack += count;
        acks
    }

    /// Publishes one message; its sync completes at once, then it is confirmed and delivered.
    fn publish(&mut self) {
        let publish = self.publish.clone();
        self.input(Input::ClientFrame {
            conn: self.producer,
            body: publish,
        });
    }

    /// One message: publish, sync, confirm and deliver; the ack of the oldest delivery, its
    /// sync, its answer.
    fn one_message(&mut self, ack: Bytes) {
        self.publish();
        self.input(Input::ClientFrame {
            conn: self.consumer,
            body: ack,
        });
        self.frames.clear();
    }
}

/// A client frame's body (what the runtime hands the core: the length prefix removed).
fn frame_body(request_id: u64, body: client_frame::Body) -> Bytes {
    let mut bytes = BytesMut::new();
    encode_frame(
        &ClientFrame {
            request_id,
            body: Some(body),
        },
        &mut bytes,
    );
    bytes.freeze().slice(4..)
}

fn decode_frames(frame: &Bytes) -> Vec<ServerFrame> {
    let mut buffer = BytesMut::from(&frame[..]);
    let mut decoder = FrameDecoder::new(u32::MAX);
    let mut frames = Vec::new();
    while let Some(decoded) = decoder
        .decode_message::<ServerFrame>(&mut buffer)
        .expect("server frames decode")
    {
        frames.push(decoded);
    }
    frames
}

fn node_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("node");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    // Alone: each message is acked before the next is published (every table goes from empty
    // to one entry and back); and with 255 others in flight, as under a steady load.
    for in_flight in [0, 255] {
        let mut bench = NodeBench::new(in_flight);
        // Check once that the loop really delivers and acks: the queue keeps only the window.
        for ack in bench.next_acks(10) {
            bench.one_message(ack);
        }
        let queue = bench.node.queue("bench").expect("declared");
        assert_eq!(queue.messages.len() as u64, in_flight, "the rest was acked");
        assert_eq!(queue.counters.acked, 10);
        let name = format!("publish_deliver_ack/{}_in_flight", in_flight);
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                let mut remaining = iterations;
                while remaining > 0 {
                    let count = remaining.min(CHUNK);
                    let acks = bench.next_acks(count);
                    total += timed(|| {
                        for ack in acks {
                            bench.one_message(ack);
                        }
                    });
                    remaining -= count;
                }
                total
            })
        });
        let queue = bench.node.queue("bench").expect("declared");
        assert_eq!(queue.messages.len() as u64, in_flight, "the rest was acked");
    }
    group.finish();
}

// --- the delay index ----------------------------------------------------------------------

/// A delay queue with one auto-ack consumer and `pending` messages due over the next
/// `pending` milliseconds (one a millisecond on average).
struct DelayBench {
    queue: Queue,
    now: Now,
    rng: Rng,
    horizon_ms: u64,
    payload: Bytes,
}

impl DelayBench {
    fn new(pending: u64) -> DelayBench {
        let settings = QueueSettings {
            kind: QueueKind::Delay,
            max_messages: u64::MAX,
            max_bytes: u64::MAX,
            overflow: Overflow::RejectPublish,
            ack_timeout: Millis(30_000),
            max_deliveries: 0,
            dead_letter_queue: String::new(),
        };
        let mut queue = Queue::new(krest_core::ids::QueueId(1), "delayed".into(), settings);
        let subscription = SubscriptionId(1);
        queue.add_subscription(subscription, "default".into(), true, false);
        queue.attach_consumer(
            subscription,
            ConsumerId(1),
            ConsumerState {
                ack_mode: AckMode::Auto,
                pull: false,
                prefetch: 0,
                credit: u32::MAX,
                unacked: 0,
                fetch_remaining: 0,
            },
        );
        let mut bench = DelayBench {
            queue,
            now: Now {
                monotonic: Instant(1_000),
                wall: UnixMillis(1_700_000_000_000),
            },
            rng: Rng::from_seed(42),
            horizon_ms: pending,
            payload: Bytes::from_static(b"due"),
        };
        bench.schedule(pending);
        bench
    }

    /// Schedules `count` messages due at random within the horizon from now.
    fn schedule(&mut self, count: u64) {
        for _ in 0..count {
            let sequence = self.queue.take_sequence();
            let due = self.now.wall.0 + 1 + self.rng.below(self.horizon_ms);
            let message = Message::new(
                sequence,
                Vec::new(),
                UnixMillis(due),
                self.now.wall,
                None,
                self.payload.len() as u64,
            );
            self.queue
                .insert(message, Some(self.payload.clone()), self.now);
            self.queue.make_deliverable(sequence, self.now);
        }
    }

    /// Moves the clock to when `count` more messages are due (untimed).
    fn advance_past(&mut self, count: u64) {
        let last = self
            .queue
            .delay_index
            .iter()
            .nth(count as usize - 1)
            .expect("enough pending");
        self.now.wall = last.due;
        self.now.monotonic = Instant(self.now.monotonic.0 + 1);
    }

    /// Delivers (and, auto-acked, removes) every due message.
    fn fire(&mut self) -> usize {
        let mut effects = Effects::default();
        self.queue.dispatch(self.now, &mut effects);
        effects.deliveries.len()
    }
}

fn delay_benches(criterion: &mut Criterion) {
    let mut sizes = vec![1_000_000u64];
    if std::env::var_os("KREST_BENCH_DELAY_10M").is_some() {
        sizes.push(10_000_000);
    }
    let mut group = criterion.benchmark_group("delay_index");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    for pending in sizes {
        let label = format!("{}M_pending", pending / 1_000_000);
        // Built on first use, so a filtered run (`cargo bench -- node`) skips the setup.
        let mut state: Option<DelayBench> = None;
        group.bench_function(format!("schedule/{label}"), |bencher| {
            let bench = state.get_or_insert_with(|| DelayBench::new(pending));
            bencher.iter_custom(|iterations| {
                in_chunks(bench, iterations, DelayBench::schedule, |bench, count| {
                    bench.advance_past(count);
                    let fired = bench.fire() as u64;
                    // Ties at the last due time may fire a few more: put them back.
                    bench.schedule(fired.saturating_sub(count));
                })
            })
        });
        group.bench_function(format!("fire/{label}"), |bencher| {
            let bench = state.get_or_insert_with(|| DelayBench::new(pending));
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                let mut remaining = iterations;
                while remaining > 0 {
                    let count = remaining.min(CHUNK);
                    bench.advance_past(count);
                    let mut fired = 0;
                    total += timed(|| fired = bench.fire());
                    assert!(fired as u64 >= count, "{fired} of {count} fired");
                    bench.schedule(fired as u64);
                    remaining -= count;
                }
                total
            })
        });
        if let Some(bench) = state {
            assert_eq!(bench.queue.messages.len() as u64, pending);
        }
    }
    group.finish();
}

// --- acks of random in-flight deliveries --------------------------------------------------

/// A temporary queue with one explicit-ack consumer holding `in_flight` deliveries.
struct AckBench {
    queue: Queue,
    now: Now,
    rng: Rng,
    /// Sequences in flight, in no particular order.
    in_flight: Vec<u64>,
    payload: Bytes,
}

impl AckBench {
    const SUBSCRIPTION: SubscriptionId = SubscriptionId(1);
    const CONSUMER: ConsumerId = ConsumerId(1);

    fn new(in_flight: u64) -> AckBench {
        let settings = QueueSettings {
            kind: QueueKind::Temporary,
            max_messages: u64::MAX,
            max_bytes: u64::MAX,
            overflow: Overflow::RejectPublish,
            ack_timeout: Millis(30_000),
            max_deliveries: 0,
            dead_letter_queue: String::new(),
        };
        let mut queue = Queue::new(krest_core::ids::QueueId(1), "acks".into(), settings);
        queue.add_subscription(Self::SUBSCRIPTION, "default".into(), false, false);
        queue.attach_consumer(
            Self::SUBSCRIPTION,
            Self::CONSUMER,
            ConsumerState {
                ack_mode: AckMode::Explicit,
                pull: false,
                prefetch: u32::try_from(in_flight).expect("fits"),
                credit: 0,
                unacked: 0,
                fetch_remaining: 0,
            },
        );
        let mut bench = AckBench {
            queue,
            now: Now {
                monotonic: Instant(1_000),
                wall: UnixMillis(1_700_000_000_000),
            },
            rng: Rng::from_seed(7),
            in_flight: Vec::new(),
            payload: Bytes::from_static(b"in flight"),
        };
        bench.refill(in_flight);
        bench
    }

    /// Publishes and delivers `count` more messages.
    fn refill(&mut self, count: u64) {
        for _ in 0..count {
            let sequence = self.queue.take_sequence();
            let message = Message::new(
                sequence,
                Vec::new(),
                UnixMillis(0),
                self.now.wall,
                None,
                self.payload.len() as u64,
            );
            self.queue
                .insert(message, Some(self.payload.clone()), self.now);
        }
        let mut effects = Effects::default();
        self.queue.dispatch(self.now, &mut effects);
        self.in_flight.extend(
            effects
                .deliveries
                .iter()
                .filter_map(|(_, delivery)| delivery.tag.map(|tag| tag.sequence)),
        );
    }

    /// Acks `count` deliveries picked at random, one settle each.
    fn ack_random(&mut self, count: u64) {
        let mut effects = Effects::default();
        for _ in 0..count {
            let picked = self.rng.below(self.in_flight.len() as u64) as usize;
            let sequence = self.in_flight.swap_remove(picked);
            let tag = wire::DeliveryTag {
                sequence,
                delivery_count: 1,
            };
            let outcome = self.queue.settle(
                Self::SUBSCRIPTION,
                Self::CONSUMER,
                SettleAction::Ack,
                &[tag],
                self.now,
                &mut effects,
            );
            debug_assert_eq!(outcome.applied, 1);
            effects.removed.clear();
            effects.disarm.clear();
        }
    }
}

fn ack_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("in_flight");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    let in_flight = 100_000;
    let mut state: Option<AckBench> = None;
    group.bench_function("ack_random/100k", |bencher| {
        let bench = state.get_or_insert_with(|| AckBench::new(in_flight));
        bencher.iter_custom(|iterations| {
            in_chunks(bench, iterations, AckBench::ack_random, AckBench::refill)
        })
    });
    group.finish();
    if let Some(bench) = state {
        assert_eq!(bench.queue.in_flight_count(), in_flight);
    }
}

criterion_group!(benches, node_benches, delay_benches, ack_benches);
criterion_main!(benches);
