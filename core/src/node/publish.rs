//! Publishing: validation, limits, idempotency, records, confirms after fsync; cancelling a
//! delayed message; moving dead letters.

use bytes::Bytes;
use krest_proto::client::{
    server_frame, CancelDelayed, ErrorCode, Header, OutgoingMessage, Publish, PublishOk,
};
use krest_proto::storage::{queue_record, QueueRecord, StoredMessage};
use smallvec::SmallVec;

use super::idempotency::Stored;
use super::persistence::WaiterAction;
use super::session::RequestError;
use super::Node;
use crate::ids::{ConnId, LogIndex, ProducerId, QueueId, Sequence};
use crate::io::LogId;
use crate::planted::{self, PlantedBug};
use crate::queue::message::message_size_bytes;
use crate::queue::{DeadLetter, Effects, Message, QueueKind};
use crate::time::{Millis, UnixMillis};

/// Header naming why a message was dead-lettered (`max_deliveries` or `rejected`).
pub const HEADER_DEAD_LETTER_REASON: &str = "krest-dead-letter-reason";
/// Header naming the queue a dead letter came from.
pub const HEADER_DEAD_LETTER_SOURCE: &str = "krest-dead-letter-source";
/// Header with the dead letter's sequence in its source queue.
pub const HEADER_DEAD_LETTER_SEQUENCE: &str = "krest-dead-letter-sequence";
/// Header with the subscription (group) that gave the dead letter up.
pub const HEADER_DEAD_LETTER_SUBSCRIPTION: &str = "krest-dead-letter-subscription";
/// Header with the source message's publish time (Unix milliseconds): with the source and its
/// sequence, it tells the very message apart from one of a queue re-created under that name.
pub const HEADER_DEAD_LETTER_PUBLISHED_AT: &str = "krest-dead-letter-published-at";
/// Header with how many deliveries the dead letter had.
pub const HEADER_DELIVERY_COUNT: &str = "krest-delivery-count";

/// A validated message, before it gets a sequence.
pub(super) struct Accepted {
    pub(super) payload: Bytes,
    pub(super) headers: Vec<Header>,
    pub(super) deliver_at: UnixMillis,
    pub(super) producer: Option<(ProducerId, u64)>,
}

impl Node {
    pub(super) fn on_publish(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: Publish,
    ) -> Result<(), RequestError> {
        let queue = self.queue_id(&request.queue)?;
        let kind = self.queues[&queue].settings.kind;
        if kind.is_durable() {
            self.refuse_if_fenced()?;
        }
        if request.messages.is_empty() {
            return Err((
                ErrorCode::InvalidArgument,
                "a publish needs at least one message".into(),
            ));
        }
        let producer = self
            .connections
            .get(&conn)
            .and_then(|connection| connection.producer);
        // One message per publish is the common case: no allocation for these lists then.
        let accepted: SmallVec<[Accepted; 1]> = request
            .messages
            .into_iter()
            .map(|message| self.validate_message(kind, producer, message))
            .collect::<Result<_, _>>()?;
        // Split retried messages (already stored) from new ones.
        let mut known: SmallVec<[Option<Stored>; 4]> = SmallVec::with_capacity(accepted.len());
        let (mut new_count, mut new_bytes) = (0u64, 0u64);
        for message in &accepted {
            let stored = message
                .producer
                .and_then(|(producer, sequence)| self.idempotency.lookup(producer, sequence))
                .filter(|stored| stored.queue == queue);
            if stored.is_none() {
                new_count += 1;
                new_bytes += message_size_bytes(&message.payload, &message.headers);
            }
            known.push(stored);
        }
        let mut effects = Effects::default();
        let room = self.queues.get_mut(&queue).expect("looked up").make_room(
            new_count,
            new_bytes,
            &mut effects,
        );
        self.apply_effects(queue, effects);
        room.map_err(|reason| (ErrorCode::QueueFull, reason))?;
        let mut sequences = Vec::with_capacity(accepted.len());
        let mut last_index: Option<LogIndex> = None;
        for (message, stored) in accepted.into_iter().zip(known) {
            let stored = match stored {
                Some(stored) => stored,
                None => {
                    let producer = message.producer;
                    let stored = self.store_message(queue, message);
                    if let Some((producer, sequence)) = producer {
                        self.idempotency.record(producer, sequence, stored);
                    }
                    stored
                }
            };
            sequences.push(stored.sequence.0);
            last_index = last_index.max(stored.log_index);
        }
        let confirms = sequences.len() as u32;
        self.add_unconfirmed(conn, confirms);
        let mut needs: SmallVec<[(LogId, LogIndex); 2]> = SmallVec::new();
        if let Some(index) = last_index {
            needs.push((LogId::Queue(queue), index));
        }
        if let Some(index) = self.queues[&queue].declared_at {
            needs.push((LogId::Metadata, index));
        }
        if planted::active(PlantedBug::ConfirmBeforeSync) {
            needs.clear();
        }
        let frame = self.encode_reply(
            request_id,
            server_frame::Body::PublishOk(PublishOk { sequences }),
        );
        self.when_durable(
            &needs,
            WaiterAction::Client {
                conn,
                request_id,
                frame,
                confirms,
            },
        );
        Ok(())
    }

    fn validate_message(
        &self,
        kind: QueueKind,
        producer: Option<ProducerId>,
        message: OutgoingMessage,
    ) -> Result<Accepted, RequestError> {
        let limits = &self.config.limits;
        let size = message_size_bytes(&message.payload, &message.headers);
        if size > u64::from(limits.max_message_bytes) {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {size} bytes exceeds the limit of {} bytes (limits.max_message_bytes)",
                    limits.max_message_bytes
                ),
            ));
        }
        let now = self.now.wall;
        let wants_delay = message.deliver_at_unix_ms != 0 || message.delay_ms != 0;
        if wants_delay && kind != QueueKind::Delay {
            return Err((
                ErrorCode::InvalidArgument,
                format!(
                    "a per-message delay needs a delay queue; this queue is {}",
                    kind.as_str()
                ),
            ));
        }
        if message.deliver_at_unix_ms != 0 && message.delay_ms != 0 {
            return Err((
                ErrorCode::InvalidArgument,
                "give deliver_at_unix_ms or delay_ms, not both".into(),
            ));
        }
        let deliver_at = if message.deliver_at_unix_ms != 0 {
            UnixMillis(message.deliver_at_unix_ms)
        } else {
            now + Millis(message.delay_ms)
        };
        if deliver_at.0.saturating_sub(now.0) > limits.max_delay_ms {
            return Err((
                ErrorCode::InvalidArgument,
                format!(
                    "deliver-at is more than {} ms ahead (limits.max_delay_ms)",
                    limits.max_delay_ms
                ),
            ));
        }
        let producer = match (message.producer_sequence, producer) {
            (0, _) => None,
            (sequence, Some(producer)) => Some((producer, sequence)),
            (_, None) => {
                return Err((
                    ErrorCode::InvalidArgument,
                    "producer_sequence needs a producer_id in Hello".into(),
                ))
            }
        };
        Ok(Accepted {
            payload: message.payload,
            headers: message.headers,
            deliver_at: if kind == QueueKind::Delay {
                deliver_at
            } else {
                UnixMillis(0)
            },
            producer,
        })
    }

    /// Numbers and stores one message (room already made); durable queues get a record.
    pub(super) fn store_message(&mut self, queue: QueueId, accepted: Accepted) -> Stored {
        let now = self.now;
        let queue_state = self.queues.get_mut(&queue).expect("known queue");
        let sequence = queue_state.take_sequence();
        let durable = queue_state.settings.kind.is_durable();
        let size_bytes = message_size_bytes(&accepted.payload, &accepted.headers);
        let mut log_index = None;
        if durable {
            let (producer_id, producer_sequence) = accepted
                .producer
                .map(|(producer, sequence)| (producer.0, sequence))
                .unwrap_or_default();
            let record = QueueRecord {
                body: Some(queue_record::Body::Publish(StoredMessage {
                    sequence: sequence.0,
                    payload: accepted.payload.clone(),
                    headers: accepted.headers.clone(),
                    deliver_at_unix_ms: accepted.deliver_at.0,
                    published_at_unix_ms: now.wall.0,
                    producer_id,
                    producer_sequence,
                })),
            };
            let log = LogId::Queue(queue);
            let body = self.encoder.encode(&record);
            let index = self.append_record(log, body);
            log_index = Some(index);
            self.logs
                .get_mut(&log)
                .expect("durable queues have logs")
                .deliverable_after_sync
                .push_back((index, sequence));
        }
        // Beyond the payload memory budget, the record in the log is the only copy, read back
        // just before delivery.
        let payload = (!durable || self.payload_fits(size_bytes)).then_some(accepted.payload);
        let message = Message::new(
            sequence,
            accepted.headers,
            accepted.deliver_at,
            now.wall,
            log_index,
            size_bytes,
        );
        self.queues
            .get_mut(&queue)
            .expect("known")
            .insert(message, payload, now);
        self.account_payloads(queue);
        self.dirty.insert(queue);
        Stored {
            queue,
            sequence,
            log_index,
        }
    }

    pub(super) fn on_cancel_delayed(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: CancelDelayed,
    ) -> Result<(), RequestError> {
        let queue = self.queue_id(&request.queue)?;
        if self.queues[&queue].settings.kind.is_durable() {
            self.refuse_if_fenced()?;
        }
        let mut result = Ok(());
        let index = self.with_queue(queue, |queue, effects| {
            result = queue.cancel(Sequence(request.sequence), effects);
        });
        result.map_err(|reason| (ErrorCode::MessageNotFound, reason))?;
        let needs: Vec<_> = index
            .map(|index| (LogId::Queue(queue), index))
            .into_iter()
            .collect();
        self.reply_done_when_durable(conn, request_id, &needs);
        Ok(())
    }

    /// Copies a message to its subscription's dead-letter queue (creating it if needed); the
    /// source lets go once the copy is durable.
    pub(super) fn dead_letter(&mut self, source: QueueId, dead_letter: DeadLetter) {
        let Some(source_queue) = self.queues.get(&source) else {
            return;
        };
        let target_name = source_queue.settings.dead_letter_queue.clone();
        let source_name = source_queue.name.clone();
        let kind = if source_queue.settings.kind.is_durable() {
            QueueKind::Persistent
        } else {
            QueueKind::Temporary
        };
        let settings = krest_proto::client::QueueSettings {
            kind: kind.to_wire() as i32,
            ..Default::default()
        };
        let subscription = dead_letter.subscription;
        let subscription_name = source_queue
            .subscriptions
            .get(&subscription)
            .map(|subscription| subscription.name.clone())
            .unwrap_or_default();
        let sequence = dead_letter.message.sequence;
        let clustered_elsewhere = self.is_clustered()
            && kind.is_durable()
            && !self.queue_names.contains_key(&target_name);
        if clustered_elsewhere {
            // In a cluster a dead-letter queue is served next to its source: declared through
            // the catalog (placed here) the first time; until it is, or if another node serves
            // that name, the message stays where it is and is dead-lettered on a later try.
            if self.is_served_here(&target_name) {
                self.cluster_declare_dead_letter_queue(&target_name, settings);
            }
            self.abort_dead_letter(source, subscription, sequence);
            return;
        }
        let target = match self.declare_queue(&target_name, &settings, Some(kind), false) {
            Ok((target, _)) => target,
            Err(_) => {
                self.abort_dead_letter(source, subscription, sequence);
                return;
            }
        };
        let mut headers = dead_letter.message.headers().to_vec();
        for (key, value) in [
            (HEADER_DEAD_LETTER_REASON, dead_letter.reason.to_string()),
            (HEADER_DEAD_LETTER_SOURCE, source_name),
            (HEADER_DEAD_LETTER_SEQUENCE, sequence.0.to_string()),
            (HEADER_DEAD_LETTER_SUBSCRIPTION, subscription_name),
            (
                HEADER_DEAD_LETTER_PUBLISHED_AT,
                dead_letter.message.published_at.0.to_string(),
            ),
            (
                HEADER_DELIVERY_COUNT,
                dead_letter.delivery_count.to_string(),
            ),
        ] {
            headers.push(Header {
                key: key.to_string(),
                value,
            });
        }
        let payload = dead_letter.payload;
        let size = message_size_bytes(&payload, &headers);
        let mut effects = Effects::default();
        let room = self
            .queues
            .get_mut(&target)
            .expect("declared")
            .make_room(1, size, &mut effects);
        self.apply_effects(target, effects);
        if room.is_err() {
            self.abort_dead_letter(source, subscription, sequence);
            return;
        }
        let stored = self.store_message(
            target,
            Accepted {
                payload,
                headers,
                deliver_at: UnixMillis(0),
                producer: None,
            },
        );
        let mut needs = Vec::new();
        if let Some(index) = stored.log_index {
            needs.push((LogId::Queue(target), index));
        }
        if let Some(index) = self.queues[&target].declared_at {
            needs.push((LogId::Metadata, index));
        }
        self.when_durable(
            &needs,
            WaiterAction::FinishDeadLetter {
                queue: source,
                subscription,
                sequence,
            },
        );
    }

    fn abort_dead_letter(
        &mut self,
        source: QueueId,
        subscription: crate::ids::SubscriptionId,
        sequence: Sequence,
    ) {
        if let Some(queue) = self.queues.get_mut(&source) {
            queue.abort_dead_letter(subscription, sequence);
            self.dirty.insert(source);
        }
    }
}
