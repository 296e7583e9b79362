//! Consuming: subscribe, unsubscribe, fetch, settle, credit; turning deliveries into frames.

use krest_proto::client::{
    self as wire, server_frame, Deliveries, Done, ErrorCode, Fetch, Settle, SubscribeOk,
    SubscriptionEnded,
};

use super::session::{ConsumerRecord, PendingFetch, RequestError};
use super::Node;
use crate::ids::{ConnId, ConsumerId, QueueId};
use crate::io::LogId;
use crate::queue::dispatch::SettleAction;
use crate::queue::{AckMode, ConsumerState, QueueKind};
use crate::time::Millis;
use crate::timer::Timer;

impl Node {
    /// A subscribe; `may_declare`: it may declare its queue through the cluster's catalog
    /// (once: a subscribe handled again after that declaration may not).
    pub(super) fn on_subscribe(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: wire::Subscribe,
        may_declare: bool,
    ) -> Result<(), RequestError> {
        let limits = self.config.limits.clone();
        let connection = self
            .connections
            .get(&conn)
            .expect("routed from a live connection");
        if connection.consumers.len() >= limits.max_consumers_per_connection as usize {
            return Err((
                ErrorCode::LimitReached,
                format!(
                    "this connection already has {} consumers (limits.max_consumers_per_connection)",
                    connection.consumers.len()
                ),
            ));
        }
        if let Some(error) = self.served_elsewhere(&request.queue) {
            return Err(error);
        }
        let queue = match (&request.create_if_missing, self.queue_id(&request.queue)) {
            (_, Ok(queue)) => queue,
            (Some(settings), Err(_)) if self.is_clustered() && may_declare => {
                let then = super::cluster::CatalogThen::Redispatch {
                    conn,
                    request_id,
                    body: Box::new(krest_proto::client::client_frame::Body::Subscribe(
                        request.clone(),
                    )),
                };
                let kind = Some(QueueKind::Persistent);
                match self.cluster_declare(&request.queue, settings, kind, then)? {
                    super::cluster::ClusterDeclare::Waiting => return Ok(()), // handled again
                    super::cluster::ClusterDeclare::Exists => {}
                    super::cluster::ClusterDeclare::Here => {
                        // A temporary queue: declared here, as on a single node.
                        self.declare_queue(&request.queue, settings, kind, false)?;
                    }
                }
                return self.on_subscribe(conn, request_id, request, false);
            }
            (Some(settings), Err(_)) if !self.is_clustered() => {
                self.declare_queue(&request.queue, settings, Some(QueueKind::Persistent), false)?
                    .0
            }
            (_, Err(error)) => return Err(error),
        };
        let ack_mode = match wire::AckMode::try_from(request.ack_mode) {
            Ok(wire::AckMode::Unspecified | wire::AckMode::Explicit) => AckMode::Explicit,
            Ok(wire::AckMode::Auto) => AckMode::Auto,
            Err(_) => {
                return Err((
                    ErrorCode::InvalidArgument,
                    format!("unknown ack mode {}", request.ack_mode),
                ))
            }
        };
        let broadcast = match wire::DeliveryMode::try_from(request.mode) {
            Ok(wire::DeliveryMode::Unspecified | wire::DeliveryMode::Point) => false,
            Ok(wire::DeliveryMode::Broadcast) => true,
            Err(_) => {
                return Err((
                    ErrorCode::InvalidArgument,
                    format!("unknown delivery mode {}", request.mode),
                ))
            }
        };
        let prefetch = match request.prefetch {
            0 => self.config.queue_defaults.prefetch.min(limits.max_in_flight_per_consumer),
            prefetch if prefetch > limits.max_in_flight_per_consumer => {
                return Err((
                    ErrorCode::InvalidArgument,
                    format!(
                        "prefetch {prefetch} exceeds the limit of {} (limits.max_in_flight_per_consumer)",
                        limits.max_in_flight_per_consumer
                    ),
                ))
            }
            prefetch => prefetch,
        };
        let consumer = ConsumerId(self.next_consumer_id);
        self.next_consumer_id += 1;
        let queue_state = &self.queues[&queue];
        let subscription_name = if broadcast {
            format!("broadcast-{}", consumer.0)
        } else if request.group.is_empty() {
            "default".to_string()
        } else {
            request.group.clone()
        };
        let subscription = match queue_state.subscription_names.get(&subscription_name) {
            Some(id) if queue_state.subscriptions[id].broadcast == broadcast => *id,
            Some(_) => {
                return Err((
                    ErrorCode::InvalidArgument,
                    format!("'{subscription_name}' names a broadcast subscription"),
                ))
            }
            None => {
                if queue_state.subscriptions.len() >= limits.max_subscriptions_per_queue as usize {
                    return Err((
                        ErrorCode::LimitReached,
                        format!(
                            "queue '{}' already has {} subscriptions (limits.max_subscriptions_per_queue)",
                            request.queue,
                            queue_state.subscriptions.len()
                        ),
                    ));
                }
                self.add_subscription(queue, subscription_name, !broadcast, broadcast)
            }
        };
        let state = ConsumerState {
            ack_mode,
            pull: request.pull,
            prefetch,
            credit: if request.pull { 0 } else { prefetch },
            unacked: 0,
            fetch_remaining: 0,
        };
        self.queues
            .get_mut(&queue)
            .expect("known")
            .attach_consumer(subscription, consumer, state);
        self.consumers.insert(
            consumer,
            ConsumerRecord {
                conn,
                queue,
                subscription,
                pull: request.pull,
                ack_mode,
                fetch: None,
            },
        );
        self.connections
            .get_mut(&conn)
            .expect("live")
            .consumers
            .insert(consumer);
        self.reply(
            conn,
            request_id,
            server_frame::Body::SubscribeOk(SubscribeOk {
                subscription_id: consumer.0,
            }),
        );
        self.dirty.insert(queue);
        Ok(())
    }

    /// Finds a consumer of this connection.
    fn own_consumer(&self, conn: ConnId, id: u64) -> Result<ConsumerRecord, RequestError> {
        match self.consumers.get(&ConsumerId(id)) {
            Some(record) if record.conn == conn => Ok(record.clone()),
            _ => Err((
                ErrorCode::SubscriptionNotFound,
                format!("subscription {id} is not open on this connection"),
            )),
        }
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: wire::Unsubscribe,
    ) -> Result<(), RequestError> {
        self.own_consumer(conn, request.subscription_id)?;
        let consumer = ConsumerId(request.subscription_id);
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.consumers.remove(&consumer);
        }
        self.remove_consumer(consumer);
        self.reply(conn, request_id, server_frame::Body::Done(Done {}));
        Ok(())
    }

    /// Detaches a consumer: what it held is redelivered; a broadcast subscription goes with it;
    /// a waiting fetch is answered with what it has.
    pub(super) fn remove_consumer(&mut self, consumer: ConsumerId) {
        // Every request is answered once, a fetch cut short too (it disarms its own timer).
        self.answer_fetch(consumer);
        let Some(record) = self.consumers.remove(&consumer) else {
            return;
        };
        self.with_queue(record.queue, |queue, effects| {
            queue.detach_consumer(record.subscription, consumer, effects);
            let broadcast = queue
                .subscriptions
                .get(&record.subscription)
                .is_some_and(|subscription| subscription.broadcast);
            if broadcast {
                queue.delete_subscription(record.subscription, effects);
            }
        });
    }

    /// Ends a consumer from the server side, telling its client why.
    pub(super) fn end_consumer(&mut self, consumer: ConsumerId, code: ErrorCode, message: String) {
        let Some(record) = self.consumers.get(&consumer) else {
            return;
        };
        let conn = record.conn;
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.consumers.remove(&consumer);
        }
        self.reply(
            conn,
            0,
            server_frame::Body::SubscriptionEnded(SubscriptionEnded {
                subscription_id: consumer.0,
                reason: Some(wire::Error {
                    code: code as i32,
                    message,
                    leader_address: String::new(),
                }),
            }),
        );
        self.remove_consumer(consumer);
    }

    pub(super) fn on_fetch(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: Fetch,
    ) -> Result<(), RequestError> {
        let record = self.own_consumer(conn, request.subscription_id)?;
        let limits = &self.config.limits;
        if !record.pull {
            return Err((
                ErrorCode::InvalidArgument,
                "fetch needs a pull subscription".into(),
            ));
        }
        if record.fetch.is_some() {
            return Err((
                ErrorCode::InvalidArgument,
                "a fetch is already waiting on this subscription".into(),
            ));
        }
        if request.max_messages == 0 || request.max_messages > limits.max_fetch_messages {
            return Err((
                ErrorCode::InvalidArgument,
                format!(
                    "max_messages must be between 1 and {} (limits.max_fetch_messages)",
                    limits.max_fetch_messages
                ),
            ));
        }
        if request.wait_ms > limits.max_fetch_wait_ms {
            return Err((
                ErrorCode::InvalidArgument,
                format!(
                    "wait_ms exceeds the limit of {} (limits.max_fetch_wait_ms)",
                    limits.max_fetch_wait_ms
                ),
            ));
        }
        let consumer = ConsumerId(request.subscription_id);
        if let Some(state) = self
            .queues
            .get_mut(&record.queue)
            .and_then(|queue| queue.consumer_mut(record.subscription, consumer))
        {
            state.fetch_remaining = request.max_messages;
        }
        self.consumers.get_mut(&consumer).expect("own").fetch = Some(PendingFetch {
            request_id,
            deadline: None,
            deliveries: Vec::new(),
        });
        self.dispatch_queue(record.queue);
        let Some(fetch) = self
            .consumers
            .get_mut(&consumer)
            .and_then(|record| record.fetch.as_mut())
        else {
            return Ok(()); // answered by the dispatch
        };
        if request.wait_ms == 0 {
            self.answer_fetch(consumer);
        } else {
            let deadline = self.now.monotonic + Millis(request.wait_ms);
            fetch.deadline = Some(deadline);
            self.timers.arm(deadline, Timer::FetchWait { consumer });
        }
        Ok(())
    }

    pub(super) fn on_fetch_wait_over(&mut self, consumer: ConsumerId) {
        let due = self
            .consumers
            .get(&consumer)
            .and_then(|record| record.fetch.as_ref())
            .and_then(|fetch| fetch.deadline)
            .is_some_and(|deadline| deadline <= self.now.monotonic);
        if due {
            self.answer_fetch(consumer);
        }
    }

    /// Answers a consumer's waiting fetch with whatever it collected.
    fn answer_fetch(&mut self, consumer: ConsumerId) {
        let Some(record) = self.consumers.get_mut(&consumer) else {
            return;
        };
        let Some(fetch) = record.fetch.take() else {
            return;
        };
        let (conn, queue, subscription) = (record.conn, record.queue, record.subscription);
        if let Some(deadline) = fetch.deadline {
            self.timers.disarm(deadline, Timer::FetchWait { consumer });
        }
        if let Some(state) = self
            .queues
            .get_mut(&queue)
            .and_then(|queue_state| queue_state.consumer_mut(subscription, consumer))
        {
            state.fetch_remaining = 0;
        }
        let queue_name = self
            .queues
            .get(&queue)
            .map(|queue| queue.name.clone())
            .unwrap_or_default();
        self.reply(
            conn,
            fetch.request_id,
            server_frame::Body::Deliveries(Deliveries {
                subscription_id: consumer.0,
                queue: queue_name,
                deliveries: fetch.deliveries,
            }),
        );
    }

    pub(super) fn on_credit(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: wire::Credit,
    ) -> Result<(), RequestError> {
        let record = self.own_consumer(conn, request.subscription_id)?;
        let cap = self.config.limits.max_in_flight_per_consumer;
        if let Some(state) = self.queues.get_mut(&record.queue).and_then(|queue| {
            queue.consumer_mut(record.subscription, ConsumerId(request.subscription_id))
        }) {
            state.credit = state.credit.saturating_add(request.messages).min(cap);
        }
        self.dirty.insert(record.queue);
        self.reply(conn, request_id, server_frame::Body::Done(Done {}));
        Ok(())
    }

    pub(super) fn on_settle(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: Settle,
    ) -> Result<(), RequestError> {
        let record = self.own_consumer(conn, request.subscription_id)?;
        if record.ack_mode == AckMode::Auto {
            return Err((
                ErrorCode::InvalidArgument,
                "an auto-ack subscription has nothing to settle".into(),
            ));
        }
        let max_lease = self.config.limits.max_ack_timeout_ms;
        let action = match wire::SettleAction::try_from(request.action) {
            Ok(wire::SettleAction::Ack) => SettleAction::Ack,
            Ok(wire::SettleAction::Nack) => SettleAction::Nack {
                delay: Millis(request.delay_ms.min(max_lease)),
            },
            Ok(wire::SettleAction::Reject) => SettleAction::Reject,
            Ok(wire::SettleAction::Extend) => {
                let lease = match request.extend_ms {
                    0 => self.queues[&record.queue].settings.ack_timeout.0,
                    lease => lease,
                };
                if lease > max_lease {
                    return Err((ErrorCode::InvalidArgument, format!("extend_ms exceeds the limit of {max_lease} (limits.max_ack_timeout_ms)")));
                }
                SettleAction::Extend {
                    lease: Millis(lease),
                }
            }
            _ => {
                return Err((
                    ErrorCode::InvalidArgument,
                    "settle needs an action: ack, nack, reject or extend".into(),
                ))
            }
        };
        if record.queue_is_durable(self) && matches!(action, SettleAction::Ack) {
            self.refuse_if_fenced()?;
        }
        let now = self.now;
        let consumer = ConsumerId(request.subscription_id);
        let mut outcome = Default::default();
        let index = self.with_queue(record.queue, |queue, effects| {
            outcome = queue.settle(
                record.subscription,
                consumer,
                action,
                &request.tags,
                now,
                effects,
            );
        });
        let outcome: crate::queue::dispatch::SettleOutcome = outcome;
        if outcome.unknown > 0 {
            return Err((
                ErrorCode::UnknownDelivery,
                format!(
                    "{} of {} delivery tags name no delivery this subscription holds (already settled, expired or redelivered)",
                    outcome.unknown,
                    request.tags.len()
                ),
            ));
        }
        let mut needs: Vec<_> = index
            .map(|index| (LogId::Queue(record.queue), index))
            .into_iter()
            .collect();
        if !needs.is_empty() {
            // The ack is only as durable as the subscription it belongs to.
            let declared_at = self
                .queues
                .get(&record.queue)
                .and_then(|queue| queue.subscriptions.get(&record.subscription))
                .and_then(|subscription| subscription.declared_at);
            needs.extend(declared_at.map(|index| (LogId::Metadata, index)));
        }
        if crate::planted::active(crate::planted::PlantedBug::AckBeforeSync) {
            needs.clear();
        }
        self.reply_done_when_durable(conn, request_id, &needs);
        Ok(())
    }

    /// Delivers what can be delivered on one queue now.
    pub(super) fn dispatch_queue(&mut self, queue: QueueId) {
        let now = self.now;
        let mut effects = self.take_effects();
        let Some(queue_state) = self.queues.get_mut(&queue) else {
            return;
        };
        queue_state.dispatch(now, &mut effects);
        if !queue_state.payloads_wanted.is_empty() {
            self.payloads_wanted_queues.insert(queue);
        }
        self.rearm_delay_timer(queue);
        self.apply_effects(queue, effects);
        self.account_payloads(queue);
    }

    fn rearm_delay_timer(&mut self, queue: QueueId) {
        let now = self.now;
        let Some(queue_state) = self.queues.get_mut(&queue) else {
            return;
        };
        let wanted = queue_state.next_due(now).map(|due| now.monotonic_at(due));
        if wanted == queue_state.delay_timer {
            return;
        }
        if let Some(old) = queue_state.delay_timer.take() {
            self.timers.disarm(old, Timer::DelayDue { queue });
        }
        if let Some(deadline) = wanted {
            queue_state.delay_timer = Some(deadline);
            self.timers.arm(deadline, Timer::DelayDue { queue });
        }
    }

    /// Sends push deliveries in as few frames per consumer as the frame limit allows; adds
    /// fetched ones to their fetch and answers it.
    pub(super) fn hand_out_deliveries(
        &mut self,
        queue: QueueId,
        deliveries: &mut Vec<(ConsumerId, wire::Delivery)>,
    ) {
        if deliveries.is_empty() {
            return;
        }
        // By consumer, each consumer's deliveries in the order they were made (a stable sort,
        // skipped in the usual case of one consumer or deliveries already in consumer order).
        if !deliveries.is_sorted_by_key(|(consumer, _)| *consumer) {
            deliveries.sort_by_key(|(consumer, _)| *consumer);
        }
        let queue_name = self
            .queues
            .get(&queue)
            .map(|queue| queue.name.clone())
            .unwrap_or_default();
        let mut deliveries = deliveries.drain(..).peekable();
        while let Some((consumer, first)) = deliveries.next() {
            // Room for everything left: exact in the usual case of a single consumer.
            let mut batch = Vec::with_capacity(1 + deliveries.len());
            batch.push(first);
            while let Some((_, delivery)) = deliveries.next_if(|(next, _)| *next == consumer) {
                batch.push(delivery);
            }
            let Some(record) = self.consumers.get_mut(&consumer) else {
                continue;
            };
            if let Some(fetch) = record.fetch.as_mut() {
                fetch.deliveries.extend(batch);
                self.answer_fetch(consumer);
                continue;
            }
            let conn = record.conn;
            let max_frame_bytes = self.config.limits.max_frame_bytes;
            if deliveries_frame_bytes(consumer, &queue_name, &batch) <= max_frame_bytes as usize {
                // The usual case: one frame.
                let body = Deliveries {
                    subscription_id: consumer.0,
                    queue: queue_name.clone(),
                    deliveries: batch,
                };
                self.reply(conn, 0, server_frame::Body::Deliveries(body));
                continue;
            }
            for deliveries in frames_within_limit(consumer, &queue_name, batch, max_frame_bytes) {
                let body = Deliveries {
                    subscription_id: consumer.0,
                    queue: queue_name.clone(),
                    deliveries,
                };
                self.reply(conn, 0, server_frame::Body::Deliveries(body));
            }
        }
    }
}

/// The bytes of `Deliveries` frame holding `deliveries` at most (its length prefix counted as
/// the longest one), computed without building it.
fn deliveries_frame_bytes(
    consumer: ConsumerId,
    queue_name: &str,
    deliveries: &[wire::Delivery],
) -> usize {
    deliveries_envelope_bytes(consumer, queue_name)
        + deliveries
            .iter()
            .map(|delivery| prost::encoding::message::encoded_len(3, delivery))
            .sum::<usize>()
}

/// The bytes of an empty `Deliveries` frame: the server frame's field tag and the longest
/// length prefix of its body included.
fn deliveries_envelope_bytes(consumer: ConsumerId, queue_name: &str) -> usize {
    use prost::Message as _;
    let without_name = Deliveries {
        subscription_id: consumer.0,
        queue: String::new(),
        deliveries: Vec::new(),
    };
    let name_bytes = match queue_name.len() {
        0 => 0,
        length => {
            prost::encoding::key_len(2)
                + prost::encoding::encoded_len_varint(length as u64)
                + length
        }
    };
    without_name.encoded_len() + name_bytes + 1 + 5
}

/// Cuts one consumer's push deliveries into batches whose `Deliveries` frames stay within
/// `max_frame_bytes`, the limit the client was told in `HelloOk` (its decoder refuses anything
/// larger). Each batch holds at least one delivery; one delivery always fits, as a message is
/// at most `max_message_bytes`, which leaves 1024 bytes of the frame for the envelope.
fn frames_within_limit(
    consumer: ConsumerId,
    queue_name: &str,
    deliveries: Vec<wire::Delivery>,
    max_frame_bytes: u32,
) -> Vec<Vec<wire::Delivery>> {
    let envelope_bytes = deliveries_envelope_bytes(consumer, queue_name);
    let mut frames = Vec::new();
    let mut current: Vec<wire::Delivery> = Vec::new();
    let mut current_bytes = envelope_bytes;
    for delivery in deliveries {
        let delivery_bytes = prost::encoding::message::encoded_len(3, &delivery);
        if !current.is_empty() && current_bytes + delivery_bytes > max_frame_bytes as usize {
            frames.push(std::mem::take(&mut current));
            current_bytes = envelope_bytes;
        }
        current_bytes += delivery_bytes;
        current.push(delivery);
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
}

impl ConsumerRecord {
    fn queue_is_durable(&self, node: &Node) -> bool {
        node.queues
            .get(&self.queue)
            .is_some_and(|queue| queue.settings.kind.is_durable())
    }
}
