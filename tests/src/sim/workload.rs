//! The simulated clients: a setup client that declares the queues, producers that publish with
//! idempotency keys and retry until each publish ends, and consumers that ack, nack, reject,
//! let leases run out, or vanish holding messages.
//!
//! Clients speak the real protocol (protobuf frames) and know nothing of the node's state. A
//! client acts when woken ([`SimClient::wake`]) or when a frame reaches it, and tells the
//! simulation what to do through [`Actions`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use krest_core::ids::ConnId;
use krest_core::rng::Rng;
use krest_proto::client::{
    client_frame, server_frame, ClientFrame, DeclareQueue, DeliveryMode, DeliveryTag, ErrorCode,
    Fetch, Hello, OutgoingMessage, Publish, QueueKind, QueueSettings, ServerFrame, Settle,
    SettleAction, Subscribe,
};
use prost::Message as _;

use super::history::{History, MessageId, OpKind, OpStatus, PublishOutcome, Published};
use super::server::WALL_ORIGIN_MS;
use super::streams::{between, chance};

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Declaring queues; no faults.
    Setup,
    /// Load and faults.
    Chaos,
    /// No faults, no new messages: everything pending must complete.
    Drain,
}

/// A queue of the workload.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Its name.
    pub name: &'static str,
    /// How it is declared.
    pub settings: QueueSettings,
    /// Consumers attached to it.
    pub consumers: usize,
    /// Whether those consumers work during the chaos (a drop-oldest queue fills up without).
    pub consume_in_chaos: bool,
    /// Relative share of new messages.
    pub publish_weight: u64,
}

impl QueueSpec {
    /// Where its dead letters go: the named queue, or `<name>.dlq`.
    pub fn dead_letter_queue(&self) -> String {
        match self.settings.dead_letter_queue.as_str() {
            "" => format!("{}.dlq", self.name),
            name => name.to_string(),
        }
    }

    /// Whether its messages can be dead-lettered (dead-letter queues' own are not, here:
    /// their consumers always ack).
    pub fn can_dead_letter(&self) -> bool {
        !self.name.ends_with(".dlq")
    }
}

/// The queues every run uses.
pub fn queue_specs() -> Vec<QueueSpec> {
    let settings =
        |kind: QueueKind, ack_timeout_ms: u64, max_deliveries: u32, dead: &str| QueueSettings {
            kind: kind as i32,
            ack_timeout_ms,
            max_deliveries,
            dead_letter_queue: dead.into(),
            ..QueueSettings::default()
        };
    let dead_letter_queue = |name: &'static str| QueueSpec {
        name,
        settings: settings(QueueKind::Persistent, 1_500, 0, ""),
        consumers: 1,
        consume_in_chaos: true,
        publish_weight: 0,
    };
    vec![
        dead_letter_queue("latest.dlq"),
        dead_letter_queue("scratch.dlq"),
        QueueSpec {
            name: "orders.dlq",
            settings: settings(QueueKind::Persistent, 1_500, 0, ""),
            consumers: 1,
            consume_in_chaos: true,
            publish_weight: 0,
        },
        QueueSpec {
            name: "timers.dlq",
            settings: settings(QueueKind::Persistent, 1_500, 0, ""),
            consumers: 1,
            consume_in_chaos: true,
            publish_weight: 0,
        },
        QueueSpec {
            name: "orders",
            settings: settings(QueueKind::Persistent, 1_500, 3, "orders.dlq"),
            consumers: 3,
            consume_in_chaos: true,
            publish_weight: 45,
        },
        QueueSpec {
            name: "timers",
            settings: settings(QueueKind::Delay, 1_500, 3, "timers.dlq"),
            consumers: 2,
            consume_in_chaos: true,
            publish_weight: 25,
        },
        QueueSpec {
            name: "latest",
            settings: QueueSettings {
                max_messages: 8,
                overflow: krest_proto::client::OverflowPolicy::DropOldest as i32,
                ..settings(QueueKind::Persistent, 1_500, 0, "")
            },
            consumers: 1,
            consume_in_chaos: false,
            publish_weight: 20,
        },
        QueueSpec {
            name: "scratch",
            settings: settings(QueueKind::Temporary, 1_500, 0, ""),
            consumers: 1,
            consume_in_chaos: true,
            publish_weight: 10,
        },
    ]
}

/// When broadcast subscribers first subscribe, in simulated milliseconds.
const BROADCAST_JOIN_MS: u64 = 1_000;

/// What a client asks the simulation to do.
#[derive(Debug, Default)]
pub struct Actions {
    /// Open a connection (the simulation answers with [`SimClient::on_connected`] or, if the
    /// node is down, with [`SimClient::on_closed`]).
    pub connect: bool,
    /// Frames to send on the current connection, in order.
    pub send: Vec<Bytes>,
    /// Close the current connection.
    pub disconnect: bool,
    /// Wake this client again at this simulated time.
    pub wake_at_ms: Option<u64>,
}

/// What the clients share: the clock, the phase, their random stream and the history.
pub struct Context<'a> {
    /// Simulated time.
    pub now_ms: u64,
    /// Where the run is.
    pub phase: Phase,
    /// The workload stream.
    pub rng: &'a mut Rng,
    /// The history.
    pub history: &'a mut History,
    /// The queues.
    pub queues: &'a [QueueSpec],
}

/// What a client is for.
#[derive(Debug)]
pub enum Role {
    /// Declares every queue once.
    Setup {
        /// Queues the node confirmed.
        declared: BTreeSet<&'static str>,
    },
    /// Publishes.
    Producer(Producer),
    /// Consumes one queue.
    Consumer(Consumer),
}

/// A producer's state.
#[derive(Debug)]
pub struct Producer {
    producer_id: u64,
    next_number: u64,
    /// Messages whose publish has not ended.
    unresolved: BTreeSet<u64>,
    /// Of those, the ones sent on the current connection.
    sent: BTreeSet<u64>,
}

/// What a consumer will do with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Ack,
    /// Extend the lease, then ack later.
    ExtendThenAck {
        ack_after_ms: u64,
    },
    Nack {
        delay_ms: u64,
    },
    Reject,
    Ignore,
}

/// A delivery the consumer is working on.
#[derive(Debug, Clone, Copy)]
struct Held {
    subscription: u64,
    tag: DeliveryTag,
    decision: Decision,
    due_ms: u64,
}

/// A consumer's state.
#[derive(Debug)]
pub struct Consumer {
    queue: usize,
    /// Pull (fetch) instead of push.
    pull: bool,
    /// A broadcast subscriber (a subscription of its own) instead of the point group.
    broadcast: bool,
    subscription: Option<u64>,
    subscribing: bool,
    /// A pull consumer's fetch is waiting for its answer.
    fetching: bool,
    held: Vec<Held>,
}

/// A request in flight and what it was.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Declare(&'static str),
    Publish { number: u64, op: usize },
    Subscribe,
    Settle { op: usize },
    Fetch,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// Its place in the simulation's list.
    pub index: usize,
    /// What it does.
    pub role: Role,
    /// Its connection, if it has one.
    pub conn: Option<ConnId>,
    next_request_id: u64,
    pending: BTreeMap<u64, Pending>,
    reconnect_at_ms: u64,
}

impl SimClient {
    /// A client; `index` also makes a producer's id.
    pub fn new(index: usize, role: Role) -> SimClient {
        SimClient {
            index,
            role,
            conn: None,
            next_request_id: 1,
            pending: BTreeMap::new(),
            reconnect_at_ms: 0,
        }
    }

    /// Stands in while a client is taken out of the list to be worked on.
    pub fn placeholder() -> SimClient {
        SimClient::new(
            usize::MAX,
            Role::Setup {
                declared: BTreeSet::new(),
            },
        )
    }

    /// A producer with id `producer_id`.
    pub fn producer(index: usize, producer_id: u64) -> SimClient {
        SimClient::new(
            index,
            Role::Producer(Producer {
                producer_id,
                next_number: 1,
                unresolved: BTreeSet::new(),
                sent: BTreeSet::new(),
            }),
        )
    }

    /// A consumer of `queues[queue]`.
    pub fn consumer(index: usize, queue: usize, pull: bool, broadcast: bool) -> SimClient {
        SimClient::new(
            index,
            Role::Consumer(Consumer {
                queue,
                pull,
                broadcast,
                subscription: None,
                subscribing: false,
                fetching: false,
                held: Vec::new(),
            }),
        )
    }

    /// Whether the setup client has declared every queue.
    pub fn setup_done(&self, queues: &[QueueSpec]) -> bool {
        match &self.role {
            Role::Setup { declared } => declared.len() == queues.len(),
            _ => true,
        }
    }

    /// Whether a producer still has publishes that did not end.
    pub fn has_unresolved(&self) -> bool {
        matches!(&self.role, Role::Producer(producer) if !producer.unresolved.is_empty())
    }

    fn frame(&mut self, body: client_frame::Body, pending: Option<Pending>) -> Bytes {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        if let Some(pending) = pending {
            self.pending.insert(request_id, pending);
        }
        ClientFrame {
            request_id,
            body: Some(body),
        }
        .encode_to_vec()
        .into()
    }

    /// Time to act.
    pub fn wake(&mut self, context: &mut Context<'_>) -> Actions {
        let mut actions = Actions::default();
        let Some(_) = self.conn else {
            if context.now_ms >= self.reconnect_at_ms {
                actions.connect = true;
                actions.wake_at_ms = Some(context.now_ms + between(context.rng, 1, 10));
            } else {
                actions.wake_at_ms = Some(self.reconnect_at_ms);
            }
            return actions;
        };
        let vanish = context.phase == Phase::Chaos && chance(context.rng, 3);
        match &mut self.role {
            Role::Setup { .. } => self.declare_missing(context, &mut actions),
            Role::Producer(_) => self.publish(context, &mut actions),
            Role::Consumer(_) => self.consume(context, &mut actions),
        }
        if vanish && !matches!(self.role, Role::Setup { .. }) {
            actions.disconnect = true;
        }
        actions
            .wake_at_ms
            .get_or_insert(context.now_ms + between(context.rng, 5, 40));
        actions
    }

    fn declare_missing(&mut self, context: &mut Context<'_>, actions: &mut Actions) {
        let Role::Setup { declared } = &self.role else {
            return;
        };
        let waiting: BTreeSet<&'static str> = self
            .pending
            .values()
            .filter_map(|pending| match pending {
                Pending::Declare(name) => Some(*name),
                _ => None,
            })
            .collect();
        let missing: Vec<QueueSpec> = context
            .queues
            .iter()
            .filter(|spec| !declared.contains(spec.name) && !waiting.contains(spec.name))
            .cloned()
            .collect();
        for spec in missing {
            let body = client_frame::Body::DeclareQueue(DeclareQueue {
                name: spec.name.into(),
                settings: Some(spec.settings),
            });
            let frame = self.frame(body, Some(Pending::Declare(spec.name)));
            actions.send.push(frame);
        }
    }

    fn publish(&mut self, context: &mut Context<'_>, actions: &mut Actions) {
        let Role::Producer(producer) = &mut self.role else {
            return;
        };
        if context.phase == Phase::Chaos
            && producer.unresolved.len() < 6
            && chance(context.rng, 600)
        {
            let total: u64 = context.queues.iter().map(|spec| spec.publish_weight).sum();
            let mut pick = context.rng.below(total);
            let spec = context
                .queues
                .iter()
                .find(|spec| {
                    if pick < spec.publish_weight {
                        return true;
                    }
                    pick -= spec.publish_weight;
                    false
                })
                .expect("weights add up");
            let deliver_at_ms = (spec.settings.kind == QueueKind::Delay as i32).then(|| {
                let client_wall = WALL_ORIGIN_MS + context.now_ms;
                if chance(context.rng, 100) {
                    client_wall.saturating_sub(between(context.rng, 0, 2_000))
                } else {
                    client_wall + between(context.rng, 0, 3_000)
                }
            });
            let id = MessageId {
                producer: producer.producer_id,
                number: producer.next_number,
            };
            producer.next_number += 1;
            producer.unresolved.insert(id.number);
            context.history.messages.insert(
                id,
                Published {
                    queue: spec.name.into(),
                    deliver_at_ms,
                    first_attempt_ms: context.now_ms,
                    attempts: 0,
                    outcome: PublishOutcome::Pending,
                },
            );
        }
        let producer_id = producer.producer_id;
        let to_send: Vec<u64> = producer
            .unresolved
            .difference(&producer.sent)
            .copied()
            .collect();
        producer.sent.extend(to_send.iter().copied());
        for number in to_send {
            let id = MessageId {
                producer: producer_id,
                number,
            };
            let published = context.history.messages.get_mut(&id).expect("recorded");
            published.attempts += 1;
            let body = client_frame::Body::Publish(Publish {
                queue: published.queue.clone(),
                messages: vec![OutgoingMessage {
                    payload: id.payload().into(),
                    deliver_at_unix_ms: published.deliver_at_ms.unwrap_or_default(),
                    producer_sequence: number,
                    ..OutgoingMessage::default()
                }],
            });
            let op = context
                .history
                .invoke(context.now_ms, self.index, OpKind::Publish(id));
            let frame = self.frame(body, Some(Pending::Publish { number, op }));
            actions.send.push(frame);
        }
    }

    fn consume(&mut self, context: &mut Context<'_>, actions: &mut Actions) {
        let Role::Consumer(consumer) = &mut self.role else {
            return;
        };
        let spec = &context.queues[consumer.queue];
        // Broadcast subscribers join after the point groups exist (they subscribe at once).
        let active = (spec.consume_in_chaos || context.phase == Phase::Drain)
            && (!consumer.broadcast || context.now_ms >= BROADCAST_JOIN_MS);
        if consumer.subscription.is_none() && !consumer.subscribing && active {
            consumer.subscribing = true;
            let body = client_frame::Body::Subscribe(Subscribe {
                queue: spec.name.into(),
                group: if consumer.broadcast {
                    String::new()
                } else {
                    super::checker::GROUP.into()
                },
                mode: if consumer.broadcast {
                    DeliveryMode::Broadcast as i32
                } else {
                    DeliveryMode::Point as i32
                },
                prefetch: 4,
                pull: consumer.pull,
                create_if_missing: Some(spec.settings.clone()),
                ..Subscribe::default()
            });
            let frame = self.frame(body, Some(Pending::Subscribe));
            actions.send.push(frame);
            return;
        }
        let Role::Consumer(consumer) = &mut self.role else {
            return;
        };
        let now_ms = context.now_ms;
        if let (true, false, Some(subscription_id)) =
            (consumer.pull, consumer.fetching, consumer.subscription)
        {
            consumer.fetching = true;
            let body = client_frame::Body::Fetch(Fetch {
                subscription_id,
                max_messages: between(context.rng, 1, 4) as u32,
                wait_ms: between(context.rng, 0, 500),
            });
            let frame = self.frame(body, Some(Pending::Fetch));
            actions.send.push(frame);
        }
        let Role::Consumer(consumer) = &mut self.role else {
            return;
        };
        let (due, later): (Vec<Held>, Vec<Held>) = consumer
            .held
            .drain(..)
            .partition(|held| held.due_ms <= now_ms);
        consumer.held = later;
        let mut groups: BTreeMap<(u64, u8, u64), Vec<DeliveryTag>> = BTreeMap::new();
        for held in due {
            let (action, delay_ms) = match held.decision {
                Decision::Ack => (SettleAction::Ack, 0),
                Decision::ExtendThenAck { ack_after_ms } => {
                    consumer.held.push(Held {
                        decision: Decision::Ack,
                        due_ms: now_ms + ack_after_ms,
                        ..held
                    });
                    (SettleAction::Extend, 0)
                }
                Decision::Nack { delay_ms } => (SettleAction::Nack, delay_ms),
                Decision::Reject => (SettleAction::Reject, 0),
                Decision::Ignore => continue,
            };
            groups
                .entry((held.subscription, action as u8, delay_ms))
                .or_default()
                .push(held.tag);
        }
        for ((subscription_id, action, delay_ms), tags) in groups {
            let action = SettleAction::try_from(i32::from(action)).expect("one of ours");
            let name = match action {
                SettleAction::Ack => "ack",
                SettleAction::Nack => "nack",
                SettleAction::Extend => "extend",
                _ => "reject",
            };
            let op = context.history.invoke(
                now_ms,
                self.index,
                OpKind::Settle {
                    action: name,
                    tags: tags.len(),
                },
            );
            let body = client_frame::Body::Settle(Settle {
                subscription_id,
                action: action as i32,
                tags,
                delay_ms,
                extend_ms: 0,
            });
            let frame = self.frame(body, Some(Pending::Settle { op }));
            actions.send.push(frame);
        }
    }

    /// The connection is open: say hello (with the producer id for idempotency).
    pub fn on_connected(&mut self, conn: ConnId) -> Actions {
        self.conn = Some(conn);
        let producer_id = match &self.role {
            Role::Producer(producer) => producer.producer_id,
            _ => 0,
        };
        let hello = client_frame::Body::Hello(Hello {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            client_name: format!("sim-{}", self.index),
            producer_id,
        });
        let frame = self.frame(hello, None);
        Actions {
            send: vec![frame],
            wake_at_ms: None,
            ..Actions::default()
        }
    }

    /// The connection dropped (or could not open): every open request's outcome is unknown.
    pub fn on_closed(&mut self, context: &mut Context<'_>) {
        self.conn = None;
        self.reconnect_at_ms = context.now_ms + between(context.rng, 10, 200);
        for (_, pending) in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Publish { op, .. } | Pending::Settle { op } => {
                    context.history.end(op, OpStatus::Unknown)
                }
                Pending::Declare(_) | Pending::Subscribe | Pending::Fetch => {}
            }
        }
        match &mut self.role {
            Role::Producer(producer) => producer.sent.clear(),
            Role::Consumer(consumer) => {
                consumer.subscription = None;
                consumer.subscribing = false;
                consumer.fetching = false;
                consumer.held.clear();
            }
            Role::Setup { .. } => {}
        }
    }

    /// A frame from the node.
    pub fn on_frame(&mut self, context: &mut Context<'_>, frame: ServerFrame) -> Actions {
        let actions = Actions::default();
        if let Some(server_frame::Body::Deliveries(deliveries)) = frame.body {
            if self.pending.remove(&frame.request_id).is_some() {
                // The answer to a fetch (possibly empty, after its wait).
                if let Role::Consumer(consumer) = &mut self.role {
                    consumer.fetching = false;
                }
            }
            let Role::Consumer(consumer) = &mut self.role else {
                return actions;
            };
            // A broadcast subscription's dead letters would be second copies of the group's.
            let may_reject =
                context.queues[consumer.queue].can_dead_letter() && !consumer.broadcast;
            for delivery in deliveries.deliveries {
                let Some(tag) = delivery.tag else {
                    continue;
                };
                let decision = decide(context, may_reject);
                consumer.held.push(Held {
                    subscription: deliveries.subscription_id,
                    tag,
                    decision,
                    due_ms: context.now_ms + between(context.rng, 0, 30),
                });
            }
            return actions;
        }
        if let Some(server_frame::Body::SubscriptionEnded(ended)) = frame.body {
            if let Role::Consumer(consumer) = &mut self.role {
                if consumer.subscription == Some(ended.subscription_id) {
                    consumer.subscription = None;
                }
            }
            return actions;
        }
        let Some(pending) = self.pending.remove(&frame.request_id) else {
            return actions;
        };
        self.on_answer(context, pending, frame.body);
        actions
    }

    fn on_answer(
        &mut self,
        context: &mut Context<'_>,
        pending: Pending,
        body: Option<server_frame::Body>,
    ) {
        let error = match &body {
            Some(server_frame::Body::Error(error)) => {
                Some(ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified))
            }
            _ => None,
        };
        match (pending, &mut self.role) {
            (Pending::Declare(name), Role::Setup { declared }) if error.is_none() => {
                declared.insert(name);
            }
            (Pending::Publish { number, op }, Role::Producer(producer)) => {
                let id = MessageId {
                    producer: producer.producer_id,
                    number,
                };
                producer.sent.remove(&number);
                match (&body, error) {
                    (Some(server_frame::Body::PublishOk(ok)), _) => {
                        context.history.end(op, OpStatus::Ok);
                        producer.unresolved.remove(&number);
                        let published = context.history.messages.get_mut(&id).expect("recorded");
                        if published.outcome == PublishOutcome::Pending {
                            published.outcome = PublishOutcome::Confirmed {
                                sequence: ok.sequences.first().copied().unwrap_or_default(),
                                at_ms: context.now_ms,
                            };
                        }
                    }
                    (
                        _,
                        Some(
                            code @ (ErrorCode::QueueNotFound
                            | ErrorCode::QueueFull
                            | ErrorCode::MessageTooLarge
                            | ErrorCode::InvalidArgument),
                        ),
                    ) => {
                        context.history.end(op, OpStatus::Failed);
                        producer.unresolved.remove(&number);
                        let published = context.history.messages.get_mut(&id).expect("recorded");
                        published.outcome = PublishOutcome::Failed {
                            code: code.as_str_name().into(),
                        };
                    }
                    // Unavailable (fenced, shutting down) and the like: it may be stored; try
                    // again with the same key.
                    _ => context.history.end(op, OpStatus::Unknown),
                }
            }
            (Pending::Fetch, Role::Consumer(consumer)) => consumer.fetching = false,
            (Pending::Subscribe, Role::Consumer(consumer)) => {
                consumer.subscribing = false;
                if let Some(server_frame::Body::SubscribeOk(ok)) = body {
                    consumer.subscription = Some(ok.subscription_id);
                }
            }
            (Pending::Settle { op }, _) => {
                let status = if error.is_none() {
                    OpStatus::Ok
                } else {
                    OpStatus::Failed
                };
                context.history.end(op, status);
            }
            _ => {}
        }
    }
}

/// What a consumer does with one delivery: in the chaos phase mostly ack, sometimes nack,
/// reject (where that dead-letters), or nothing at all (the lease runs out); once draining,
/// always ack.
fn decide(context: &mut Context<'_>, may_reject: bool) -> Decision {
    if context.phase == Phase::Drain {
        return Decision::Ack;
    }
    match context.rng.below(100) {
        0..=67 => Decision::Ack,
        68..=71 => Decision::ExtendThenAck {
            ack_after_ms: between(context.rng, 500, 2_500),
        },
        72..=81 => Decision::Nack {
            delay_ms: between(context.rng, 0, 300),
        },
        82..=84 if may_reject => Decision::Reject,
        _ => Decision::Ignore,
    }
}
