//! What the connection task does to the shared tables: install and tear down a link,
//! re-subscribe consumers, and route each frame the server sends.
//!
//! Every function here runs on the connection task, synchronously, so frames are handled in
//! the order they arrived.

use bytes::Bytes;
use krest_proto::client::{
    client_frame, server_frame, ClientFrame, Deliveries, ServerFrame, SubscriptionEnded,
    Unsubscribe,
};
use krest_proto::frame::frame_bytes;
use tokio::sync::mpsc;

use super::{ConsumerEvent, Link, Pending, PendingKind, Response, Shared, State};
use crate::error::ClientError;

impl Shared {
    /// Makes a new write queue the current link; returns its generation and the queue's
    /// receiving end, for the writer.
    pub(super) fn install_link(&self) -> (u64, mpsc::Receiver<Bytes>) {
        let (writer, frames) = mpsc::channel(super::WRITE_QUEUE_FRAMES);
        let generation = {
            let mut state = self.lock();
            let generation = state.link.as_ref().map_or(0, |link| link.generation) + 1;
            let link = Link { generation, writer };
            state.link = Some(link);
            generation
        };
        // After the link: waiters look at the status first, then at the link.
        self.status.send_modify(|status| status.sessions += 1);
        (generation, frames)
    }

    /// Registers a subscribe for every confirmed consumer and returns the frames to write.
    pub(super) fn resubscribe_frames(&self) -> Vec<Bytes> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut frames = Vec::new();
        for (consumer_id, entry) in &state.consumers {
            if !entry.confirmed {
                continue;
            }
            let request_id = self.next_request_id();
            let kind = PendingKind::Subscribe {
                consumer_id: *consumer_id,
            };
            let pending = Pending {
                kind,
                responder: None,
            };
            state.pending.insert(request_id, pending);
            frames.push(frame_bytes(&ClientFrame {
                request_id,
                body: Some(client_frame::Body::Subscribe(entry.subscribe.clone())),
            }));
        }
        frames
    }

    /// Tears down link `generation`: every pending request fails, every route is forgotten.
    /// With `closing`, consumers are dropped too, which ends their streams.
    pub(super) fn teardown(&self, generation: u64, closing: bool) {
        let pending = {
            let mut state = self.lock();
            if state.link.as_ref().map(|link| link.generation) == Some(generation) {
                state.link = None;
            }
            state.routes.clear();
            for entry in state.consumers.values_mut() {
                entry.subscription_id = None;
            }
            if closing {
                state.consumers.clear();
            }
            std::mem::take(&mut state.pending)
        };
        for (_, pending) in pending {
            if let Some(responder) = pending.responder {
                let error = if closing {
                    ClientError::Closed
                } else {
                    ClientError::Disconnected
                };
                let _waiter_gone = responder.send(Err(error));
            }
        }
    }

    /// Handles one frame from the server.
    pub(super) fn on_server_frame(&self, frame: ServerFrame) {
        match (frame.request_id, frame.body) {
            (0, Some(server_frame::Body::Deliveries(deliveries))) => self.on_deliveries(deliveries),
            (0, Some(server_frame::Body::SubscriptionEnded(ended))) => {
                self.on_subscription_ended(ended)
            }
            (0, body) => tracing::warn!(?body, "ignoring an unexpected frame from the server"),
            (request_id, body) => self.on_response(request_id, response_from_body(body)),
        }
    }

    fn on_deliveries(&self, deliveries: Deliveries) {
        let state = self.lock();
        let entry = state
            .routes
            .get(&deliveries.subscription_id)
            .and_then(|consumer_id| state.consumers.get(consumer_id));
        match entry {
            Some(entry) => {
                let _consumer_gone = entry.events.send(ConsumerEvent::Deliveries(deliveries));
            }
            // A subscription just unsubscribed, or one whose subscribe was cancelled: unacked
            // deliveries come back after their ack timeout or when the connection closes.
            None => tracing::debug!(
                subscription_id = deliveries.subscription_id,
                "dropping deliveries of an unknown subscription"
            ),
        }
    }

    fn on_subscription_ended(&self, ended: SubscriptionEnded) {
        let mut state = self.lock();
        let Some(consumer_id) = state.routes.remove(&ended.subscription_id) else {
            return;
        };
        if let Some(entry) = state.consumers.remove(&consumer_id) {
            let error = match ended.reason {
                Some(reason) => ClientError::from_wire(reason),
                None => ClientError::Protocol("the server ended the subscription".into()),
            };
            let _consumer_gone = entry.events.send(ConsumerEvent::Ended(error));
        }
    }

    fn on_response(&self, request_id: u64, response: Response) {
        let mut state = self.lock();
        let Some(pending) = state.pending.remove(&request_id) else {
            // Timed out or cancelled by its waiter.
            tracing::debug!(request_id, "dropping the answer to a forgotten request");
            return;
        };
        match pending.kind {
            PendingKind::Plain => {}
            PendingKind::Ignored => {
                if let Err(error) = &response {
                    tracing::warn!(%error, "a fire-and-forget request failed");
                }
            }
            PendingKind::Subscribe { consumer_id } => {
                let resubscribe = pending.responder.is_none();
                self.on_subscribe_answer(&mut state, consumer_id, &response, resubscribe);
            }
        }
        drop(state);
        if let Some(responder) = pending.responder {
            let _waiter_gone = responder.send(response);
        }
    }

    /// Routes a new subscription id to its consumer, or ends the consumer if re-subscribing
    /// failed.
    fn on_subscribe_answer(
        &self,
        state: &mut State,
        consumer_id: u64,
        response: &Response,
        resubscribe: bool,
    ) {
        match response {
            Ok(server_frame::Body::SubscribeOk(ok)) => {
                let Some(entry) = state.consumers.get_mut(&consumer_id) else {
                    // The consumer was dropped while subscribing: end the orphan subscription.
                    self.unsubscribe_orphan(state, ok.subscription_id);
                    return;
                };
                entry.subscription_id = Some(ok.subscription_id);
                entry.confirmed = true;
                state.routes.insert(ok.subscription_id, consumer_id);
            }
            Err(ClientError::Disconnected) => {}
            Err(error) if resubscribe => {
                if let Some(entry) = state.consumers.remove(&consumer_id) {
                    tracing::warn!(%error, queue = entry.subscribe.queue, "re-subscribing failed");
                    let _consumer_gone = entry.events.send(ConsumerEvent::Ended(error.duplicate()));
                }
            }
            Err(_) | Ok(_) => {}
        }
    }

    fn unsubscribe_orphan(&self, state: &mut State, subscription_id: u64) {
        let Some(link) = state.link.clone() else {
            return;
        };
        let request_id = self.next_request_id();
        let pending = Pending {
            kind: PendingKind::Ignored,
            responder: None,
        };
        state.pending.insert(request_id, pending);
        let frame = frame_bytes(&ClientFrame {
            request_id,
            body: Some(client_frame::Body::Unsubscribe(Unsubscribe {
                subscription_id,
            })),
        });
        let _full_or_closed = link.writer.try_send(frame);
    }
}

/// The answer a response body stands for.
fn response_from_body(body: Option<server_frame::Body>) -> Response {
    match body {
        Some(server_frame::Body::Error(error)) => Err(ClientError::from_wire(error)),
        Some(body) => Ok(body),
        None => Err(ClientError::Protocol("an answer without a body".into())),
    }
}
