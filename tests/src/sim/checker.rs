//! The checkers: what must hold at every step, and what must hold once the chaos is over.
//!
//! The checker watches the node from outside, the way its clients do, but at the node's edge:
//! it sees each request as the node receives it and each frame as the node emits it, with the
//! node's own clocks. That is where leases and ordering are decided, so those checks are exact.
//! Loss and liveness are judged from the clients' history at the end.
//!
//! Checked at every step:
//! - every delivered payload was published by some producer to that queue (no phantom), and a
//!   dead-lettered copy names its source queue and a reason;
//! - nothing is delivered after the node confirmed its ack;
//! - no message is delivered while another delivery of it holds a live lease;
//! - one message is never stored under two sequences (idempotent publish);
//! - first deliveries of a subscription follow sequence order, and on a delay queue a message
//!   due no later than one delivered before it, and older than it, is never delivered after it;
//! - a delay message is never delivered before its deliver-at time on the node's wall clock.
//!
//! Checked at the end (see [`Checker::unsettled`]): every confirmed message was acked, in its
//! queue or in its dead-letter queue, except messages of a temporary queue that a restart
//! removed and the oldest messages a drop-oldest queue dropped to make room; and every publish
//! ended.

use std::collections::{BTreeMap, BTreeSet};

use krest_core::ids::ConnId;
use krest_core::Now;
use krest_proto::client::{
    client_frame, server_frame, ClientFrame, Delivery, DeliveryMode, ServerFrame, SettleAction,
};

use super::history::{History, MessageId, PublishOutcome};

/// What the checker knows about a queue.
#[derive(Debug, Clone)]
pub struct QueueModel {
    /// Temporary queues lose everything at a restart.
    pub temporary: bool,
    /// Delay queues deliver by deliver-at time.
    pub delay: bool,
    /// Drop-oldest queues: how many messages they hold.
    pub drop_oldest_max: Option<u64>,
    /// Dead-letter queues: the queue whose messages they take.
    pub source: Option<String>,
    /// Its dead-letter queue, if its messages can be dead-lettered.
    pub dead_letter_queue: Option<String>,
    /// The lease of a delivery.
    pub ack_timeout_ms: u64,
}

/// The point group every workload consumer of a queue shares; the end-of-run checks count its
/// acks (a broadcast subscription lives only as long as its subscriber).
pub const GROUP: &str = "workers";

/// One subscription of one queue: what leases, acks and first deliveries belong to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Track {
    /// The queue.
    pub queue: String,
    /// The point group, or `broadcast-<conn>-<consumer>`.
    pub subscription: String,
}

impl Track {
    fn new(queue: &str, subscription: &str) -> Track {
        Track {
            queue: queue.to_string(),
            subscription: subscription.to_string(),
        }
    }
}

impl std::fmt::Display for Track {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "queue '{}' (subscription {})",
            self.queue, self.subscription
        )
    }
}

/// A request the node received and has not answered yet.
#[derive(Debug, Clone)]
enum Request {
    Publish {
        queue: String,
        id: Option<MessageId>,
    },
    Subscribe {
        queue: String,
        broadcast: bool,
        group: String,
    },
    Ack {
        track: Track,
        ids: Vec<MessageId>,
    },
}

/// A delivery holding a lease.
#[derive(Debug, Clone, Copy)]
struct Lease {
    conn: ConnId,
    consumer: u64,
    expires_monotonic_ms: u64,
}

/// A violation, with the simulated time it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated milliseconds.
    pub at_ms: u64,
    /// What went wrong, in a sentence.
    pub text: String,
}

/// Counts of what the checker saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// Deliveries.
    pub deliveries: u64,
    /// First deliveries.
    pub first_deliveries: u64,
    /// Acks the node confirmed.
    pub acks_confirmed: u64,
    /// Publishes the node confirmed.
    pub publishes_confirmed: u64,
}

/// The checker's state.
#[derive(Debug, Default)]
pub struct Checker {
    queues: BTreeMap<String, QueueModel>,
    requests: BTreeMap<(ConnId, u64), Request>,
    /// Consumer (subscription id in the protocol) to its queue and subscription.
    consumers: BTreeMap<(ConnId, u64), Track>,
    /// Queue and sequence to the message stored there.
    sequences: BTreeMap<(String, u64), MessageId>,
    /// Queue and message to its sequence.
    stored_at: BTreeMap<(String, MessageId), u64>,
    leases: BTreeMap<(Track, MessageId), Lease>,
    first_delivered: BTreeSet<(Track, MessageId)>,
    /// First deliveries by this process, per queue: (sequence, deliver-at).
    delivered_order: BTreeMap<Track, Vec<(u64, u64)>>,
    /// First deliveries of the current step: queue, message, sequence, deliver-at.
    step_first_deliveries: Vec<(Track, MessageId, u64, u64)>,
    acked: BTreeSet<(Track, MessageId)>,
    /// Acks the node received while the delivery's lease was live.
    ack_received: BTreeSet<(Track, MessageId)>,
    /// Highest sequence seen confirmed or delivered, per queue.
    max_sequence: BTreeMap<String, u64>,
    /// Simulated times at which a process ended.
    process_ends_ms: Vec<u64>,
    /// What went wrong.
    pub violations: Vec<Violation>,
    /// What was seen.
    pub seen: Seen,
    now_ms: u64,
}

impl Checker {
    /// A checker for these queues.
    pub fn new(queues: BTreeMap<String, QueueModel>) -> Checker {
        Checker {
            queues,
            ..Checker::default()
        }
    }

    fn violation(&mut self, text: String) {
        self.violations.push(Violation {
            at_ms: self.now_ms,
            text,
        });
    }

    /// The node is about to handle `frame` from `conn`.
    pub fn on_request(&mut self, now_ms: u64, node: Now, conn: ConnId, frame: &ClientFrame) {
        self.now_ms = now_ms;
        let key = (conn, frame.request_id);
        match &frame.body {
            Some(client_frame::Body::Publish(publish)) => {
                let id = publish
                    .messages
                    .first()
                    .and_then(|message| MessageId::parse(&message.payload));
                let queue = publish.queue.clone();
                self.requests.insert(key, Request::Publish { queue, id });
            }
            Some(client_frame::Body::Subscribe(subscribe)) => {
                let request = Request::Subscribe {
                    queue: subscribe.queue.clone(),
                    broadcast: subscribe.mode == DeliveryMode::Broadcast as i32,
                    group: subscribe.group.clone(),
                };
                self.requests.insert(key, request);
            }
            Some(client_frame::Body::Settle(settle)) => {
                let Some(track) = self.consumers.get(&(conn, settle.subscription_id)).cloned()
                else {
                    return;
                };
                let queue = track.queue.clone();
                let ack_timeout_ms = self.queues[&queue].ack_timeout_ms;
                let mut ids = Vec::new();
                for tag in &settle.tags {
                    let Some(id) = self.sequences.get(&(queue.clone(), tag.sequence)).copied()
                    else {
                        continue;
                    };
                    ids.push(id);
                    let lease_key = (track.clone(), id);
                    let Some(lease) = self.leases.get_mut(&lease_key) else {
                        continue;
                    };
                    if lease.conn != conn || lease.consumer != settle.subscription_id {
                        continue;
                    }
                    if settle.action == SettleAction::Ack as i32
                        && lease.expires_monotonic_ms > node.monotonic.0
                    {
                        // Durable or not, nobody may hear of it (a crash between the fsync
                        // and the answer): the message may be gone without a confirmed ack.
                        self.ack_received.insert(lease_key.clone());
                    }
                    if settle.action == SettleAction::Extend as i32 {
                        if lease.expires_monotonic_ms > node.monotonic.0 {
                            let extend_ms = match settle.extend_ms {
                                0 => ack_timeout_ms,
                                extend_ms => extend_ms,
                            };
                            lease.expires_monotonic_ms = node.monotonic.0 + extend_ms;
                        }
                    } else {
                        self.leases.remove(&lease_key);
                    }
                }
                if settle.action == SettleAction::Ack as i32 {
                    self.requests.insert(key, Request::Ack { track, ids });
                }
            }
            _ => {}
        }
    }

    /// The node emitted `frame` to `conn`.
    pub fn on_response(
        &mut self,
        now_ms: u64,
        node: Now,
        conn: ConnId,
        frame: &ServerFrame,
        history: &History,
    ) {
        self.now_ms = now_ms;
        if let Some(server_frame::Body::Deliveries(deliveries)) = &frame.body {
            for delivery in &deliveries.deliveries {
                self.on_delivery(
                    node,
                    conn,
                    deliveries.subscription_id,
                    &deliveries.queue,
                    delivery,
                    history,
                );
            }
            return;
        }
        if frame.request_id == 0 {
            return;
        }
        let Some(request) = self.requests.remove(&(conn, frame.request_id)) else {
            return;
        };
        match (request, &frame.body) {
            (
                Request::Publish {
                    queue,
                    id: Some(id),
                },
                Some(server_frame::Body::PublishOk(ok)),
            ) => {
                if let Some(sequence) = ok.sequences.first() {
                    self.seen.publishes_confirmed += 1;
                    self.stored(&queue, id, *sequence);
                }
            }
            (
                Request::Subscribe {
                    queue,
                    broadcast,
                    group,
                },
                Some(server_frame::Body::SubscribeOk(ok)),
            ) => {
                // Each broadcast subscriber has a subscription of its own.
                let subscription = if broadcast {
                    format!("broadcast-{}-{}", conn.0, ok.subscription_id)
                } else {
                    group
                };
                let consumer = (conn, ok.subscription_id);
                self.consumers
                    .insert(consumer, Track::new(&queue, &subscription));
            }
            (Request::Ack { track, ids }, Some(server_frame::Body::Done(_))) => {
                self.seen.acks_confirmed += ids.len() as u64;
                for id in ids {
                    self.acked.insert((track.clone(), id));
                }
            }
            _ => {}
        }
    }

    /// `id` is stored in `queue` under `sequence`.
    fn stored(&mut self, queue: &str, id: MessageId, sequence: u64) {
        let key = (queue.to_string(), id);
        match self.stored_at.get(&key) {
            Some(earlier) if *earlier != sequence => {
                let earlier = *earlier;
                self.violation(format!(
                    "message {id} is stored twice in queue '{queue}': as sequence {earlier} and as {sequence} (idempotent publish failed)"
                ));
            }
            _ => {}
        }
        self.stored_at.insert(key, sequence);
        self.sequences.insert((queue.to_string(), sequence), id);
        let highest = self.max_sequence.entry(queue.to_string()).or_default();
        *highest = (*highest).max(sequence);
    }

    fn on_delivery(
        &mut self,
        node: Now,
        conn: ConnId,
        consumer: u64,
        queue: &str,
        delivery: &Delivery,
        history: &History,
    ) {
        self.seen.deliveries += 1;
        let Some(model) = self.queues.get(queue).cloned() else {
            self.violation(format!("a delivery from unknown queue '{queue}'"));
            return;
        };
        let sequence = delivery.tag.map(|tag| tag.sequence).unwrap_or_default();
        let Some(id) = MessageId::parse(&delivery.payload) else {
            self.violation(format!(
                "queue '{queue}' delivered sequence {sequence} with a payload no producer sent"
            ));
            return;
        };
        let Some(published) = self.check_origin(queue, &model, id, delivery, history) else {
            return;
        };
        let track = self
            .consumers
            .get(&(conn, consumer))
            .cloned()
            .unwrap_or_else(|| Track::new(queue, GROUP));
        let key = (track.clone(), id);
        let first = !self.first_delivered.contains(&key);
        if model.delay && first {
            let deliver_at_ms = published.deliver_at_ms.unwrap_or_default();
            if node.wall.0 < deliver_at_ms {
                self.violation(format!(
                    "delay message {id} of queue '{queue}' was delivered {} ms before its deliver-at time (node wall clock)",
                    deliver_at_ms - node.wall.0
                ));
            }
        }
        if self.acked.contains(&key) {
            self.violation(format!(
                "message {id} of queue '{queue}' was delivered again after its ack was confirmed"
            ));
        }
        self.stored(queue, id, sequence);
        if let Some(lease) = self.leases.get(&key) {
            if lease.expires_monotonic_ms > node.monotonic.0 {
                self.violation(format!(
                    "message {id} of queue '{queue}' was delivered to consumer {consumer} while consumer {} still held it with {} ms of lease left",
                    lease.consumer,
                    lease.expires_monotonic_ms - node.monotonic.0
                ));
            }
        }
        self.leases.insert(
            key.clone(),
            Lease {
                conn,
                consumer,
                expires_monotonic_ms: node.monotonic.0 + model.ack_timeout_ms,
            },
        );
        if self.first_delivered.insert(key) {
            self.seen.first_deliveries += 1;
            let deliver_at_ms = if model.delay {
                published.deliver_at_ms.unwrap_or_default()
            } else {
                0
            };
            self.check_first_delivery_order(track, id, sequence, deliver_at_ms);
        }
    }

    /// The published message `id` comes from, if the delivery is one of it.
    fn check_origin(
        &mut self,
        queue: &str,
        model: &QueueModel,
        id: MessageId,
        delivery: &Delivery,
        history: &History,
    ) -> Option<super::history::Published> {
        let Some(published) = history.messages.get(&id).cloned() else {
            self.violation(format!(
                "queue '{queue}' delivered {id}, which no producer ever published"
            ));
            return None;
        };
        let expected_queue = model.source.as_deref().unwrap_or(queue);
        if published.queue != expected_queue {
            self.violation(format!(
                "queue '{queue}' delivered {id}, which was published to '{}'",
                published.queue
            ));
            return None;
        }
        if model.source.is_some() {
            let header = |key: &str| {
                delivery
                    .headers
                    .iter()
                    .find(|header| header.key == key)
                    .map(|header| header.value.clone())
            };
            let reason = header(krest_core::node::HEADER_DEAD_LETTER_REASON);
            let source = header(krest_core::node::HEADER_DEAD_LETTER_SOURCE);
            if reason.as_deref().is_none_or(str::is_empty)
                || source.as_deref() != Some(expected_queue)
            {
                self.violation(format!(
                    "dead-lettered {id} in '{queue}' lost its reason or source (reason {reason:?}, source {source:?})"
                ));
            }
        }
        Some(published)
    }

    /// A first delivery of `id` (sequence, deliver-at) in this step; checked at the step's end.
    fn check_first_delivery_order(
        &mut self,
        track: Track,
        id: MessageId,
        sequence: u64,
        deliver_at_ms: u64,
    ) {
        self.step_first_deliveries
            .push((track, id, sequence, deliver_at_ms));
    }

    /// The node finished handling one input. Nothing first-delivered by an earlier step of this
    /// process may be one that had to come after a message first-delivered in this step.
    /// Sequences are assigned and synced in log order, so an older message became deliverable
    /// no later than a newer one; on a delay queue its order key is then no later either when
    /// it is due no later. Deliveries of one step count as simultaneous: the node groups them
    /// into one frame per consumer, so their order across consumers says nothing.
    pub fn end_step(&mut self) {
        let step = std::mem::take(&mut self.step_first_deliveries);
        for (track, id, sequence, deliver_at_ms) in &step {
            let delivered = self.delivered_order.entry(track.clone()).or_default();
            let overtaken = delivered
                .iter()
                .find(|(other_sequence, other_deliver_at_ms)| {
                    sequence < other_sequence && deliver_at_ms <= other_deliver_at_ms
                })
                .copied();
            if let Some((other_sequence, _)) = overtaken {
                self.violation(format!(
                    "first deliveries of {track} out of order: {id} (sequence {sequence}) came after sequence {other_sequence}"
                ));
            }
        }
        for (track, _, sequence, deliver_at_ms) in step {
            self.delivered_order
                .entry(track)
                .or_default()
                .push((sequence, deliver_at_ms));
        }
    }

    /// The node saw `conn` close: its leases end, its consumers and requests are gone.
    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.leases.retain(|_, lease| lease.conn != conn);
        self.consumers.retain(|(owner, _), _| *owner != conn);
        self.requests.retain(|(owner, _), _| *owner != conn);
    }

    /// The node's process ended: every lease, consumer and request is gone, and temporary
    /// queues start over.
    pub fn on_process_end(&mut self, now_ms: u64) {
        self.process_ends_ms.push(now_ms);
        self.leases.clear();
        self.consumers.clear();
        self.requests.clear();
        self.delivered_order.clear();
        self.step_first_deliveries.clear();
        let temporary: BTreeSet<String> = self
            .queues
            .iter()
            .filter(|(_, model)| model.temporary)
            .map(|(name, _)| name.clone())
            .collect();
        self.sequences
            .retain(|(queue, _), _| !temporary.contains(queue));
        self.stored_at
            .retain(|(queue, _), _| !temporary.contains(queue));
        self.max_sequence
            .retain(|queue, _| !temporary.contains(queue));
        // A temporary queue's messages are gone; a retried publish stores one anew.
        self.acked
            .retain(|(track, _)| !temporary.contains(&track.queue));
        self.ack_received
            .retain(|(track, _)| !temporary.contains(&track.queue));
        self.first_delivered
            .retain(|(track, _)| !temporary.contains(&track.queue));
    }

    /// What is not settled yet: confirmed messages not acked (in their queue or its
    /// dead-letter queue) and not legitimately gone, and publishes that never ended. Empty when
    /// the run may stop; at the end of a run each entry is a violation.
    pub fn unsettled(&self, history: &History) -> Vec<String> {
        let mut open = Vec::new();
        for (id, published) in &history.messages {
            let sequence = match published.outcome {
                PublishOutcome::Confirmed { sequence, .. } => sequence,
                PublishOutcome::Failed { .. } => continue,
                PublishOutcome::Pending => {
                    open.push(format!(
                        "the publish of {id} to '{}' never completed after {} attempts",
                        published.queue, published.attempts
                    ));
                    continue;
                }
            };
            let queue = &published.queue;
            let Some(model) = self.queues.get(queue) else {
                continue;
            };
            // Acked, in the queue or in its dead-letter queue: confirmed, or received while
            // the lease was live (the answer may have been lost to a crash after the fsync).
            let acked = |queue: &String| {
                let key = (Track::new(queue, GROUP), *id);
                self.acked.contains(&key) || self.ack_received.contains(&key)
            };
            if acked(queue) || model.dead_letter_queue.as_ref().is_some_and(acked) {
                continue;
            }
            // The process that stored it ended (it was stored after the first attempt; the
            // confirm may reach the client after the crash).
            let restarted_since = self
                .process_ends_ms
                .iter()
                .any(|end| *end >= published.first_attempt_ms);
            if model.temporary && restarted_since {
                continue;
            }
            if let Some(max_messages) = model.drop_oldest_max {
                let newest = self.max_sequence.get(queue).copied().unwrap_or_default();
                if sequence + max_messages <= newest {
                    continue;
                }
            }
            let delivered = self
                .first_delivered
                .contains(&(Track::new(queue, GROUP), *id));
            open.push(format!(
                "confirmed message {id} (queue '{queue}', sequence {sequence}) was never acked; {}",
                if delivered {
                    "it was delivered at least once"
                } else {
                    "it was never delivered"
                }
            ));
        }
        open
    }
}
