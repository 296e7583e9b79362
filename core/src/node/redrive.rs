//! Redrive: moving the messages of a dead-letter queue back to the queues they came from.
//!
//! Each dead-lettered message names its source in the `krest-dead-letter-source` header. A
//! redrive copies each message that no consumer holds, oldest first, to its source queue
//! without the dead-letter headers, and lets the dead-letter queue remove it only once every
//! copy is stored (durable for a persistent queue). A crash in between can leave a message in
//! both queues (delivered twice), never in neither. Messages without a source, whose source
//! queue is gone, or whose source is full stay where they are and are counted as skipped.

use std::collections::BTreeSet;

use krest_proto::client::{server_frame, ErrorCode, Header, RedriveOk};

use super::persistence::WaiterAction;
use super::publish::{
    Accepted, HEADER_DEAD_LETTER_PUBLISHED_AT, HEADER_DEAD_LETTER_REASON,
    HEADER_DEAD_LETTER_SEQUENCE, HEADER_DEAD_LETTER_SOURCE, HEADER_DEAD_LETTER_SUBSCRIPTION,
    HEADER_DELIVERY_COUNT,
};
use super::session::RequestError;
use super::Node;
use crate::ids::{ConnId, LogIndex, QueueId, Sequence};
use crate::io::LogId;
use crate::queue::message::message_size_bytes;
use crate::queue::Effects;
use crate::time::UnixMillis;

/// What a redrive did.
#[derive(Debug, Default)]
pub(super) struct Redrive {
    /// Copies stored in their source queues.
    pub moved: u64,
    /// Messages left in the dead-letter queue.
    pub skipped: u64,
    /// What must be durable before the copies count.
    pub needs: Vec<(LogId, LogIndex)>,
}

/// Who waits for a redrive's answer.
#[derive(Debug, Clone, Copy)]
pub(super) enum RedriveReply {
    /// A client's `RedriveQueue`.
    Client { conn: ConnId, request_id: u64 },
    /// `POST /v1/queues/NAME/redrive`.
    Admin { request: crate::ids::AdminRequestId },
}

/// A redrive that reached a message whose payload is on disk: it goes on when the read is back.
#[derive(Debug)]
pub(super) struct ParkedRedrive {
    reply: RedriveReply,
    queue: QueueId,
    /// Messages it may still move or skip.
    remaining: u64,
    /// The last message it moved or skipped: it goes on after it (a message skipped stays in
    /// the queue and must not count twice).
    after: Option<Sequence>,
    done: Redrive,
}

/// Redrives waiting for payloads at once, at most.
const PARKED_REDRIVES_MAX: usize = 64;

impl Node {
    /// Copies up to `max_messages` (0: all) messages of dead-letter queue `name` back to their
    /// sources; the dead-letter queue removes them once the copies are durable. `reply` gets
    /// the counts once every copy is durable; if some payloads are on disk, after they are read
    /// back (the redrive then goes on from there).
    pub(super) fn start_redrive(
        &mut self,
        reply: RedriveReply,
        name: &str,
        max_messages: u64,
    ) -> Result<(), RequestError> {
        let queue = self.queue_id(name)?;
        self.refuse_if_fenced()?;
        if self.parked_redrives.len() >= PARKED_REDRIVES_MAX {
            return Err((
                ErrorCode::LimitReached,
                format!("{PARKED_REDRIVES_MAX} redrives already wait for payloads read back from disk; try again"),
            ));
        }
        let remaining = if max_messages == 0 {
            u64::MAX
        } else {
            max_messages
        };
        let parked = ParkedRedrive {
            reply,
            queue,
            remaining,
            after: None,
            done: Redrive::default(),
        };
        self.continue_redrive(parked);
        Ok(())
    }

    /// Payloads of `queue` came back from disk: the redrives waiting for them go on.
    pub(super) fn resume_redrives(&mut self, queue: QueueId) {
        if !self
            .parked_redrives
            .iter()
            .any(|parked| parked.queue == queue)
        {
            return;
        }
        let (resumed, waiting) = std::mem::take(&mut self.parked_redrives)
            .into_iter()
            .partition(|parked| parked.queue == queue);
        self.parked_redrives = waiting;
        for parked in resumed {
            self.continue_redrive(parked);
        }
    }

    /// The queue of parked redrives is gone, or the node fenced: they answer with `reason`.
    pub(super) fn fail_parked_redrives(
        &mut self,
        queue: Option<QueueId>,
        code: ErrorCode,
        reason: &str,
    ) {
        let (failed, waiting) = std::mem::take(&mut self.parked_redrives)
            .into_iter()
            .partition(|parked: &ParkedRedrive| queue.is_none_or(|queue| parked.queue == queue));
        self.parked_redrives = waiting;
        for parked in failed {
            match parked.reply {
                RedriveReply::Client { conn, request_id } => {
                    self.send_error(conn, request_id, code, reason.to_string())
                }
                RedriveReply::Admin { request } => {
                    self.admin_error(request, code, reason.to_string())
                }
            }
        }
    }

    /// Moves messages until the limit, the end of the queue, or a payload on disk (then the
    /// redrive parks until it is read back); answers once it is complete.
    fn continue_redrive(&mut self, mut parked: ParkedRedrive) {
        let on_disk = self.redrive_step(&mut parked);
        if on_disk {
            self.payloads_wanted_queues.insert(parked.queue);
            self.parked_redrives.push(parked);
            return;
        }
        let done = parked.done;
        let action = match parked.reply {
            RedriveReply::Client { conn, request_id } => {
                let body = server_frame::Body::RedriveOk(RedriveOk {
                    moved: done.moved,
                    skipped: done.skipped,
                });
                WaiterAction::Client {
                    conn,
                    request_id,
                    frame: self.encode_reply(request_id, body),
                    confirms: 0,
                }
            }
            RedriveReply::Admin { request } => {
                let body = serde_json::json!({ "moved": done.moved, "skipped": done.skipped });
                WaiterAction::Admin {
                    request,
                    status: 200,
                    body: serde_json::to_vec_pretty(&body).expect("JSON values serialise"),
                }
            }
        };
        self.when_durable(&done.needs, action);
    }

    /// One pass over the candidates; returns whether it stopped at a payload on disk (marked
    /// wanted, so the node reads it and those after it back).
    fn redrive_step(&mut self, parked: &mut ParkedRedrive) -> bool {
        let dead_letter_queue = parked.queue;
        let candidates = self.redrive_candidates(dead_letter_queue, parked.after, parked.remaining);
        let mut moved = Vec::new();
        let mut on_disk = false;
        for (sequence, source, payload, headers) in candidates {
            let Some(payload) = payload else {
                let queue_state = self.queues.get_mut(&dead_letter_queue).expect("named");
                queue_state.payloads_wanted.insert(sequence);
                on_disk = true;
                break;
            };
            parked.remaining -= 1;
            parked.after = Some(sequence);
            let target = match source.and_then(|source| self.queue_id(&source).ok()) {
                Some(target) if target != dead_letter_queue => target,
                _ => {
                    parked.done.skipped += 1;
                    continue;
                }
            };
            let size = message_size_bytes(&payload, &headers);
            let mut effects = Effects::default();
            let room = self
                .queues
                .get_mut(&target)
                .expect("named by queue_id")
                .make_room(1, size, &mut effects);
            self.apply_effects(target, effects);
            if room.is_err() {
                parked.done.skipped += 1;
                continue;
            }
            let accepted = Accepted {
                payload,
                headers,
                deliver_at: UnixMillis(0),
                producer: None,
            };
            let stored = self.store_message(target, accepted);
            if let Some(index) = stored.log_index {
                parked.done.needs.push((LogId::Queue(target), index));
            }
            if let Some(index) = self.queues[&target].declared_at {
                parked.done.needs.push((LogId::Metadata, index));
            }
            self.redriving.insert((dead_letter_queue, sequence));
            moved.push(sequence);
        }
        parked.done.moved += moved.len() as u64;
        if !moved.is_empty() {
            let needs: Vec<(LogId, LogIndex)> = parked.done.needs.clone();
            let action = WaiterAction::FinishRedrive {
                queue: dead_letter_queue,
                sequences: moved,
            };
            self.when_durable(&needs, action);
        }
        on_disk
    }

    /// The messages of `queue` after `after` that no consumer holds and no redrive is moving,
    /// oldest first, up to `limit` and the first whose payload is on disk (`None`), with their
    /// source queue's name and their headers (dead-letter headers removed).
    #[allow(clippy::type_complexity)]
    fn redrive_candidates(
        &self,
        queue: QueueId,
        after: Option<Sequence>,
        limit: u64,
    ) -> Vec<(Sequence, Option<String>, Option<bytes::Bytes>, Vec<Header>)> {
        let queue_state = &self.queues[&queue];
        let held: BTreeSet<Sequence> = queue_state
            .subscriptions
            .values()
            .flat_map(|subscription| subscription.in_flight.keys())
            .collect();
        let from = after.map_or(Sequence(0), |after| after.next());
        queue_state
            .messages
            .range(from..)
            .map(|(_, message)| message)
            .filter(|message| !held.contains(&message.sequence))
            .filter(|message| !self.redriving.contains(&(queue, message.sequence)))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .scan(false, |past_disk, message| {
                // Up to and including the first on disk: the redrive parks there.
                if *past_disk {
                    return None;
                }
                *past_disk = !queue_state.payloads.contains_key(message.sequence);
                Some(message)
            })
            .map(|message| {
                let source = message
                    .headers()
                    .iter()
                    .find(|header| header.key == HEADER_DEAD_LETTER_SOURCE)
                    .map(|header| header.value.clone());
                let headers = message
                    .headers()
                    .iter()
                    .filter(|header| !is_dead_letter_header(&header.key))
                    .cloned()
                    .collect();
                let payload = queue_state.payloads.get(message.sequence).cloned();
                (message.sequence, source, payload, headers)
            })
            .collect()
    }

    /// The copies are stored: the dead-letter queue lets the messages go.
    pub(super) fn finish_redrive(&mut self, queue: QueueId, sequences: Vec<Sequence>) {
        for sequence in &sequences {
            self.redriving.remove(&(queue, *sequence));
        }
        self.with_queue(queue, |queue_state, effects| {
            for sequence in sequences {
                queue_state.remove_message(
                    sequence,
                    krest_proto::storage::RemoveReason::Redriven,
                    effects,
                );
            }
        });
    }

    /// The copies can never be confirmed (the node is fenced): the messages stay.
    pub(super) fn abort_redrive(&mut self, queue: QueueId, sequences: Vec<Sequence>) {
        for sequence in sequences {
            self.redriving.remove(&(queue, sequence));
        }
    }

    /// `RedriveQueue` from a client: answered with `RedriveOk` once the copies are stored.
    pub(super) fn on_redrive(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: krest_proto::client::RedriveQueue,
    ) -> Result<(), RequestError> {
        let reply = RedriveReply::Client { conn, request_id };
        self.start_redrive(reply, &request.name, request.max_messages)
    }
}

fn is_dead_letter_header(key: &str) -> bool {
    [
        HEADER_DEAD_LETTER_REASON,
        HEADER_DEAD_LETTER_SOURCE,
        HEADER_DEAD_LETTER_SEQUENCE,
        HEADER_DEAD_LETTER_SUBSCRIPTION,
        HEADER_DEAD_LETTER_PUBLISHED_AT,
        HEADER_DELIVERY_COUNT,
    ]
    .contains(&key)
}

#[cfg(test)]
mod tests {
    use krest_proto::client::{self as wire, server_frame, QueueKind as WireKind};

    use crate::harness::{kind, message, tag, Harness};

    /// A rejected message in `q.dlq`, with the harness's syncs left to the test.
    fn dead_lettered() -> (Harness, crate::ids::ConnId) {
        let mut harness = Harness::default_config();
        let conn = harness.connect(0);
        harness.declare(conn, "q", kind(WireKind::Persistent));
        harness.publish(conn, "q", vec![message("poison")]);
        let subscription = harness.subscribe(
            conn,
            wire::Subscribe {
                queue: "q".into(),
                prefetch: 1,
                ..Default::default()
            },
        );
        let pushed = harness.take_pushed(conn);
        let reject = harness.settle(
            conn,
            subscription,
            wire::SettleAction::Reject,
            vec![tag(&pushed[0].1)],
        );
        assert!(matches!(reject, Some(server_frame::Body::Done(_))));
        assert_eq!(harness.node().queue("q.dlq").unwrap().messages.len(), 1);
        harness.sync_automatically = false;
        (harness, conn)
    }

    #[test]
    fn the_dead_letter_queue_lets_go_only_once_the_copy_is_durable() {
        let (mut harness, conn) = dead_lettered();
        let request = harness.send(
            conn,
            wire::client_frame::Body::RedriveQueue(wire::RedriveQueue {
                name: "q.dlq".into(),
                max_messages: 0,
            }),
        );
        assert!(
            harness.take_reply(conn, request).is_none(),
            "not before the sync"
        );
        assert_eq!(
            harness.node().queue("q.dlq").unwrap().messages.len(),
            1,
            "still held"
        );
        assert_eq!(
            harness.node().queue("q").unwrap().messages.len(),
            1,
            "copied"
        );
        let again = harness.send(
            conn,
            wire::client_frame::Body::RedriveQueue(wire::RedriveQueue {
                name: "q.dlq".into(),
                max_messages: 0,
            }),
        );
        harness.complete_syncs();
        let answer = harness.take_reply(conn, request);
        assert!(
            matches!(answer, Some(server_frame::Body::RedriveOk(ref ok)) if ok.moved == 1),
            "{answer:?}"
        );
        let second = harness.take_reply(conn, again);
        assert!(
            matches!(second, Some(server_frame::Body::RedriveOk(ref ok)) if ok.moved == 0),
            "a message being redriven is not copied twice: {second:?}"
        );
        assert!(harness.node().queue("q.dlq").unwrap().messages.is_empty());
        let source = harness.node().queue("q").unwrap();
        let copy = source.messages.values().next().unwrap();
        assert_eq!(
            source
                .payloads
                .get(copy.sequence)
                .map(|payload| &payload[..]),
            Some(&b"poison"[..])
        );
        assert!(copy
            .headers()
            .iter()
            .all(|header| !header.key.starts_with("krest-")));
    }
}
