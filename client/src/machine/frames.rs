//! What the machine does with each frame the server sends: the handshake answer, answers to
//! requests (with redirects and subscription routing), pushed deliveries, ended subscriptions.

use std::time::Instant;

use krest_proto::client::{server_frame, Deliveries, ErrorCode, ServerFrame, SubscriptionEnded};

use super::{ClientMachine, Event, Link, Purpose, RequestKey, RequestState, MAX_REDIRECTS};
use crate::error::ClientError;

impl ClientMachine {
    pub(super) fn on_frame(&mut self, now: Instant, frame: ServerFrame) {
        if matches!(self.link, Link::Handshaking { .. }) {
            return match frame.body {
                Some(server_frame::Body::HelloOk(hello_ok)) => {
                    self.on_session_up(now, hello_ok.node_id)
                }
                Some(server_frame::Body::Error(error)) => {
                    self.actions.push_back(super::Action::Close);
                    self.attempt_failed(now, ClientError::from_wire(error))
                }
                _ => {
                    let error = ClientError::Protocol("the server did not answer Hello".into());
                    self.link_failed(now, error)
                }
            };
        }
        match (frame.request_id, frame.body) {
            (0, Some(server_frame::Body::Deliveries(deliveries))) => self.on_deliveries(deliveries),
            (0, Some(server_frame::Body::SubscriptionEnded(ended))) => {
                self.on_subscription_ended(ended)
            }
            (0, Some(server_frame::Body::Error(error))) => {
                // A connection-level error (for example LIMIT_REACHED): the server closes next.
                tracing::warn!(error = %ClientError::from_wire(error), "the server reported an error");
            }
            (0, body) => tracing::warn!(?body, "ignoring an unexpected frame from the server"),
            (request_id, body) => self.on_response(now, request_id, body),
        }
    }

    fn on_deliveries(&mut self, deliveries: Deliveries) {
        match self.routes.get(&deliveries.subscription_id) {
            Some(&consumer) => self.events.push_back(Event::Deliveries {
                consumer,
                deliveries,
            }),
            // A subscription just unsubscribed, or one whose subscribe was cancelled: unacked
            // deliveries come back after their ack timeout or when the connection closes.
            None => tracing::debug!(
                subscription_id = deliveries.subscription_id,
                "dropping deliveries of an unknown subscription"
            ),
        }
    }

    fn on_subscription_ended(&mut self, ended: SubscriptionEnded) {
        let Some(consumer) = self.routes.remove(&ended.subscription_id) else {
            return;
        };
        if self.consumers.remove(&consumer).is_some() {
            let error = match ended.reason {
                Some(reason) => ClientError::from_wire(reason),
                None => ClientError::Protocol("the server ended the subscription".into()),
            };
            self.events
                .push_back(Event::ConsumerEnded { consumer, error });
        }
    }

    fn on_response(&mut self, now: Instant, request_id: u64, body: Option<server_frame::Body>) {
        let Some(key) = self.written.remove(&request_id) else {
            // Timed out, cancelled, or nobody waits (credit, unsubscribe).
            if let Some(server_frame::Body::Error(error)) = body {
                let error = ClientError::from_wire(error);
                tracing::debug!(%error, request_id, "an answer nobody waits for");
            }
            return;
        };
        if let Some(server_frame::Body::Error(error)) = &body {
            if error.code == ErrorCode::NotLeader as i32 && !error.leader_address.is_empty() {
                let leader = error.leader_address.clone();
                if self.redirect(now, key, leader) {
                    return;
                }
            }
        }
        let Some(request) = self.requests.remove(&key) else {
            return;
        };
        self.forget(key, &request);
        let result = match body {
            Some(server_frame::Body::Error(error)) => Err(ClientError::from_wire(error)),
            Some(body) => Ok(body),
            None => Err(ClientError::Protocol("an answer without a body".into())),
        };
        match request.purpose {
            Purpose::Subscribe(consumer) => self.on_subscribe_answer(consumer, &result, false),
            Purpose::Resubscribe(consumer) => self.on_subscribe_answer(consumer, &result, true),
            Purpose::Plain | Purpose::Timer => {}
        }
        self.answer(key, request.purpose, result);
    }

    /// Sends request `key` again on a connection to `leader`; false once it used up its
    /// redirects (then the NOT_LEADER error is its answer).
    fn redirect(&mut self, now: Instant, key: RequestKey, leader: String) -> bool {
        let Some(request) = self.requests.get_mut(&key) else {
            return true;
        };
        if request.redirects >= MAX_REDIRECTS {
            return false;
        }
        request.redirects += 1;
        request.state = RequestState::Waiting {
            failures_at_start: self.status.failed_attempts,
            attempts_max: u64::from(self.config.reconnect_attempts_per_request),
        };
        tracing::debug!(%leader, "following a redirect to the leader");
        self.redirect_to = Some(leader);
        // A redirect is not a failure: connect to the leader at once.
        let error = ClientError::Server {
            code: ErrorCode::NotLeader,
            message: "redirected to the leader".into(),
        };
        self.link_failed(now, error);
        self.link = Link::Down { retry_at: now };
        true
    }

    /// Routes a new subscription id to its consumer, or ends the consumer if re-subscribing
    /// failed.
    fn on_subscribe_answer(
        &mut self,
        consumer: super::ConsumerKey,
        result: &Result<server_frame::Body, ClientError>,
        resubscribe: bool,
    ) {
        match result {
            Ok(server_frame::Body::SubscribeOk(ok)) => {
                let Some(entry) = self.consumers.get_mut(&consumer) else {
                    // The consumer was removed while subscribing: end the orphan subscription.
                    self.unsubscribe_orphan(ok.subscription_id);
                    return;
                };
                entry.subscription_id = Some(ok.subscription_id);
                entry.confirmed = true;
                self.routes.insert(ok.subscription_id, consumer);
            }
            Err(ClientError::Disconnected) => {}
            Err(error) => {
                let confirmed = self
                    .consumers
                    .get(&consumer)
                    .is_some_and(|entry| entry.confirmed);
                if resubscribe || !confirmed {
                    if let Some(entry) = self.consumers.remove(&consumer) {
                        if resubscribe {
                            let queue = &entry.subscribe.queue;
                            tracing::warn!(%error, %queue, "re-subscribing failed");
                            let error = error.duplicate();
                            self.events
                                .push_back(Event::ConsumerEnded { consumer, error });
                        }
                    }
                }
            }
            Ok(_) => {}
        }
    }
}
