//! The connection: shared state between the public handles and the background task.
//!
//! [`Shared`] owns the table of pending requests (request id -> where the answer goes), the table
//! of live consumers (local consumer id -> subscribe request and delivery channel) and the routes
//! from the current connection's subscription ids to those consumers. One mutex guards all of
//! it, and it is never held across an `.await`.
//!
//! Invariants:
//! - A request is registered in `pending` only while a link (a live connection) exists, in the
//!   same critical section that reads the link; tearing a link down removes it and drains
//!   `pending` in one critical section too. So every registered request is answered exactly
//!   once: by the server, by [`ClientError::Disconnected`], or by its own timeout.
//! - A subscription id is routed only after the reader processed its `SubscribeOk`, before the
//!   reader looks at the next frame, so no delivery for it can arrive unrouted.
//! - Routes belong to one connection and are cleared with it; consumers outlive connections and
//!   are subscribed again on the next one.

mod dispatch;
pub(crate) mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use krest_proto::client::{
    client_frame, server_frame, ClientFrame, Deliveries, Subscribe, Unsubscribe,
};
use krest_proto::frame::frame_bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::ClientError;

/// The answer to one request: the server's result body, or why there is none.
pub(crate) type Response = Result<server_frame::Body, ClientError>;

/// Frames queued for the writer of one connection, at most. Senders wait when it is full.
const WRITE_QUEUE_FRAMES: usize = 1024;

/// What the connection hands to one consumer.
#[derive(Debug)]
pub(crate) enum ConsumerEvent {
    /// Pushed deliveries of the consumer's current subscription.
    Deliveries(Deliveries),
    /// The subscription ended for good (the server ended it, or re-subscribing failed).
    Ended(ClientError),
}

/// A consumer as the connection knows it.
struct ConsumerEntry {
    /// Sent again, as is, after every reconnect.
    subscribe: Subscribe,
    /// Deliveries go here. Unbounded because the server bounds it: it pushes only within the
    /// consumer's credit (prefetch unacked, or granted credit with auto ack), and a bounded
    /// channel here would stall every other consumer on the connection behind a slow one.
    events: mpsc::UnboundedSender<ConsumerEvent>,
    /// The id on the current connection, once subscribed there.
    subscription_id: Option<u64>,
    /// The first subscribe succeeded; only confirmed consumers are subscribed again.
    confirmed: bool,
}

/// What to do with the answer of a pending request besides handing it to its waiter.
#[derive(Debug, Clone, Copy)]
enum PendingKind {
    /// Nothing.
    Plain,
    /// A subscribe: route the new subscription id to this consumer.
    Subscribe { consumer_id: u64 },
    /// Nobody waits (credit, unsubscribe of a dropped consumer); errors are only logged.
    Ignored,
}

struct Pending {
    kind: PendingKind,
    responder: Option<oneshot::Sender<Response>>,
}

/// The write side of the current connection.
#[derive(Clone)]
struct Link {
    generation: u64,
    writer: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct State {
    link: Option<Link>,
    pending: HashMap<u64, Pending>,
    consumers: HashMap<u64, ConsumerEntry>,
    /// Subscription id on the current connection -> consumer id.
    routes: HashMap<u64, u64>,
    closed: bool,
}

/// What waiting requests watch: connection attempts and their outcome.
#[derive(Debug, Default)]
pub(crate) struct Status {
    /// Connections established so far.
    pub(crate) sessions: u64,
    /// Connection attempts that failed so far.
    pub(crate) failed_attempts: u64,
    /// Why the latest attempt failed.
    pub(crate) last_error: Option<Arc<ClientError>>,
}

/// State shared by the handles ([`crate::Client`], producers, consumers) and the task.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    /// Identifies this client's publishes across reconnects; never 0.
    pub(crate) producer_id: u64,
    next_request_id: AtomicU64,
    next_consumer_id: AtomicU64,
    /// The next idempotency sequence for a publish; starts at 1.
    pub(crate) next_producer_sequence: AtomicU64,
    state: Mutex<State>,
    pub(crate) status: watch::Sender<Status>,
}

/// A request that was written (or queued for writing) and waits for its answer. Dropping it
/// forgets the request, so a late answer is discarded.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    request_id: u64,
    receiver: oneshot::Receiver<Response>,
    deadline: Instant,
}

impl InFlight {
    /// Waits for the answer until the request's deadline.
    pub(crate) async fn response(mut self) -> Response {
        match tokio::time::timeout_at(self.deadline, &mut self.receiver).await {
            Err(_elapsed) => Err(ClientError::Timeout),
            Ok(Err(_dropped)) => Err(ClientError::Disconnected),
            Ok(Ok(response)) => response,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.request_id);
    }
}

impl Shared {
    pub(crate) fn new(config: ClientConfig, producer_id: u64) -> Shared {
        assert_ne!(producer_id, 0, "producer id 0 means no producer identity");
        Shared {
            config,
            producer_id,
            next_request_id: AtomicU64::new(1),
            next_consumer_id: AtomicU64::new(1),
            next_producer_sequence: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            status: watch::Sender::new(Status::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the tables consistent (no multi-step updates
        // span a panic point), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request and waits for its answer, within `timeout` overall.
    pub(crate) async fn request(
        self: &Arc<Self>,
        body: client_frame::Body,
        timeout: Duration,
    ) -> Response {
        self.start(body, timeout).await?.response().await
    }

    /// Queues one request for writing (waiting for a connection if there is none) and returns
    /// the handle to its answer. Requests started one after another are written in that order.
    pub(crate) async fn start(
        self: &Arc<Self>,
        body: client_frame::Body,
        timeout: Duration,
    ) -> Result<InFlight, ClientError> {
        self.start_kind(body, PendingKind::Plain, timeout).await
    }

    async fn start_kind(
        self: &Arc<Self>,
        body: client_frame::Body,
        kind: PendingKind,
        timeout: Duration,
    ) -> Result<InFlight, ClientError> {
        let deadline = Instant::now() + timeout;
        let (responder, receiver) = oneshot::channel();
        let (request_id, link) = self.register_when_linked(kind, responder, deadline).await?;
        let in_flight = InFlight {
            shared: Arc::clone(self),
            request_id,
            receiver,
            deadline,
        };
        let frame = frame_bytes(&ClientFrame {
            request_id,
            body: Some(body),
        });
        // If the writer is gone, the connection is being torn down, which answers the pending
        // request with Disconnected: nothing to do here.
        match tokio::time::timeout_at(deadline, link.writer.send(frame)).await {
            Err(_elapsed) => Err(ClientError::Timeout),
            Ok(_sent_or_torn_down) => Ok(in_flight),
        }
    }

    /// Registers a pending request on the current link, waiting for a link if there is none.
    /// Gives up after `reconnect_attempts_per_request` failed connection attempts, or at the
    /// deadline.
    async fn register_when_linked(
        &self,
        kind: PendingKind,
        responder: oneshot::Sender<Response>,
        deadline: Instant,
    ) -> Result<(u64, Link), ClientError> {
        let mut status = self.status.subscribe();
        let failures_at_start = status.borrow().failed_attempts;
        let mut responder = Some(responder);
        loop {
            // Mark the status seen before looking at the link: the task installs the link first
            // and then updates the status, so no change can slip between the two looks.
            let failed_attempts = status.borrow_and_update().failed_attempts;
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(ClientError::Closed);
                }
                if let Some(link) = state.link.clone() {
                    let request_id = self.next_request_id();
                    let pending = Pending {
                        kind,
                        responder: responder.take(),
                    };
                    state.pending.insert(request_id, pending);
                    return Ok((request_id, link));
                }
            }
            let attempts_max = u64::from(self.config.reconnect_attempts_per_request);
            if failed_attempts - failures_at_start >= attempts_max {
                let last_error = status.borrow().last_error.clone();
                return Err(last_error.map_or(ClientError::Disconnected, |e| e.duplicate()));
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Err(_elapsed) => return Err(ClientError::Timeout),
                Ok(Err(_task_gone)) => return Err(ClientError::Closed),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Queues a request nobody waits for (credit, unsubscribe of a dropped consumer). Without a
    /// connection there is nothing to do: the server forgot the subscription already.
    pub(crate) async fn send_ignored(&self, body: client_frame::Body) {
        if let Some((frame, writer)) = self.register_ignored(body) {
            let _sent_or_torn_down = writer.send(frame).await;
        }
    }

    /// Like [`Shared::send_ignored`], without waiting: if the write queue is full the frame is
    /// dropped (used from `Drop`).
    pub(crate) fn try_send_ignored(&self, body: client_frame::Body) {
        if let Some((frame, writer)) = self.register_ignored(body) {
            if writer.try_send(frame).is_err() {
                tracing::debug!("write queue full or closed, dropping a fire-and-forget request");
            }
        }
    }

    fn register_ignored(&self, body: client_frame::Body) -> Option<(Bytes, mpsc::Sender<Bytes>)> {
        let mut state = self.lock();
        let link = state.link.clone()?;
        let request_id = self.next_request_id();
        let pending = Pending {
            kind: PendingKind::Ignored,
            responder: None,
        };
        state.pending.insert(request_id, pending);
        let frame = frame_bytes(&ClientFrame {
            request_id,
            body: Some(body),
        });
        Some((frame, link.writer))
    }

    /// Registers a consumer (not yet confirmed) and returns its id.
    pub(crate) fn add_consumer(
        &self,
        subscribe: Subscribe,
        events: mpsc::UnboundedSender<ConsumerEvent>,
    ) -> u64 {
        let consumer_id = self.next_consumer_id.fetch_add(1, Ordering::Relaxed);
        let entry = ConsumerEntry {
            subscribe,
            events,
            subscription_id: None,
            confirmed: false,
        };
        self.lock().consumers.insert(consumer_id, entry);
        consumer_id
    }

    /// Subscribes a registered consumer on the current connection and waits for the answer.
    pub(crate) async fn subscribe_consumer(
        self: &Arc<Self>,
        consumer_id: u64,
        subscribe: Subscribe,
        timeout: Duration,
    ) -> Response {
        let kind = PendingKind::Subscribe { consumer_id };
        let body = client_frame::Body::Subscribe(subscribe);
        self.start_kind(body, kind, timeout).await?.response().await
    }

    /// Forgets a consumer; returns its subscription id on the current connection, if any.
    pub(crate) fn remove_consumer(&self, consumer_id: u64) -> Option<u64> {
        let mut state = self.lock();
        let entry = state.consumers.remove(&consumer_id)?;
        let subscription_id = entry.subscription_id?;
        state.routes.remove(&subscription_id);
        Some(subscription_id)
    }

    /// The consumer's subscription id on the current connection, if it is subscribed there.
    pub(crate) fn subscription_id(&self, consumer_id: u64) -> Option<u64> {
        self.current_subscription_id(consumer_id).ok()
    }

    /// The consumer's subscription id on the current connection: [`ClientError::Disconnected`]
    /// while it is not subscribed there, [`ClientError::InvalidArgument`] once it ended for good.
    pub(crate) fn current_subscription_id(&self, consumer_id: u64) -> Result<u64, ClientError> {
        match self.lock().consumers.get(&consumer_id) {
            None => Err(ClientError::InvalidArgument(
                "the subscription has ended".into(),
            )),
            Some(entry) => entry.subscription_id.ok_or(ClientError::Disconnected),
        }
    }

    /// Ends a consumer's subscription quietly (used when a consumer is dropped).
    pub(crate) fn forget_consumer(&self, consumer_id: u64) {
        if let Some(subscription_id) = self.remove_consumer(consumer_id) {
            let unsubscribe = Unsubscribe { subscription_id };
            self.try_send_ignored(client_frame::Body::Unsubscribe(unsubscribe));
        }
    }

    /// Marks the client closed: requests fail with [`ClientError::Closed`] from now on.
    pub(crate) fn mark_closed(&self) {
        self.lock().closed = true;
    }
}
