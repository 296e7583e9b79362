//! The client state machine: everything a Krest-MQ client does except the I/O, written once for
//! the tokio and smol drivers (and driven by hand in tests, in virtual time).
//!
//! It never reads a clock, opens a socket or spawns a task. The driver passes `now` to every
//! call, carries out the [`Action`]s it emits (connect, write, close), reports what the socket
//! did (`on_connected`, `on_bytes`, `on_socket_closed`, ...), calls [`ClientMachine::on_timeout`]
//! when [`ClientMachine::poll_timeout`] passes, and hands each [`Event`] to whoever waits for it.
//!
//! What it owns:
//! - the link: which server to try next (round robin, a redirect first), the reconnect backoff
//!   as a deadline, the connect-and-handshake timeout, the Hello with this client's producer id;
//! - framing: the bounded frame decoder for what the server sends, request ids for what it is
//!   sent;
//! - the request table: every request is answered exactly once, by the server, by
//!   `Disconnected` (the link dropped after it was written), by `Timeout` (its deadline), or by
//!   the last connection error (too many failed attempts while it waited for a link); a request
//!   started while there is no link waits for one;
//! - redirects: `NOT_LEADER` with a leader address sends the request again, on a connection to
//!   that leader, at most [`MAX_REDIRECTS`] times;
//! - consumers: the subscribe of each consumer, its subscription id on the current link, and
//!   its re-subscription after every reconnect;
//! - timers for callers ([`ClientMachine::start_timer`]), so retry backoff needs no runtime timer.

mod frames;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use krest_proto::client::{client_frame, server_frame, ClientFrame, Hello, Subscribe, Unsubscribe};
use krest_proto::frame::{encode_frame, FrameDecoder};

use crate::config::ClientConfig;
use crate::error::ClientError;

/// How many times one request follows `NOT_LEADER` before its error is returned.
pub const MAX_REDIRECTS: u32 = 3;
/// Bytes handed to the driver and not yet written, above which [`ClientMachine::has_write_room`]
/// says no (callers wait: back-pressure from the socket up to the producers).
pub const MAX_UNWRITTEN_BYTES: usize = 4 * 1024 * 1024;
/// A session shorter than this counts as a failed attempt, so a server that accepts and then
/// drops every connection is not hammered without delay.
pub const SESSION_STABLE_AFTER: Duration = Duration::from_secs(1);

/// One request (or caller timer) of this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey(pub u64);

/// One consumer of this client; it outlives connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerKey(pub u64);

/// One connection attempt; reports about an older attempt are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub u64);

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Drop any current socket and open a TCP connection to `address`; report
    /// [`ClientMachine::on_connected`] or [`ClientMachine::on_connect_failed`] with `attempt`.
    Connect {
        /// Which attempt.
        attempt: AttemptId,
        /// `HOST:PORT`.
        address: String,
    },
    /// Write these bytes to the current socket, after everything written before; report
    /// [`ClientMachine::on_written`] with their length once written.
    Write(Bytes),
    /// Close the current socket (nothing more will be written to it).
    Close,
}

/// What the machine tells the callers.
#[derive(Debug)]
pub enum Event {
    /// The answer to a request (or the end of a timer: `Err(Timeout)`).
    Answer {
        /// Which.
        request: RequestKey,
        /// The server's answer body, or why there is none.
        result: Result<server_frame::Body, ClientError>,
    },
    /// Pushed deliveries for a consumer.
    Deliveries {
        /// Whose.
        consumer: ConsumerKey,
        /// As the server sent them.
        deliveries: krest_proto::client::Deliveries,
    },
    /// A consumer's subscription ended for good (the server ended it, re-subscribing failed,
    /// or the client closed).
    ConsumerEnded {
        /// Whose.
        consumer: ConsumerKey,
        /// Why.
        error: ClientError,
    },
}

/// What happens with the answer to a request besides handing it to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Nothing.
    Plain,
    /// A consumer's first subscribe: route the new subscription id to it.
    Subscribe(ConsumerKey),
    /// A re-subscribe after a reconnect; nobody waits for it.
    Resubscribe(ConsumerKey),
    /// A caller's timer; never sent.
    Timer,
}

#[derive(Debug)]
enum RequestState {
    /// Waiting for a link; fails after `attempts_max` failed attempts since `failures_at_start`.
    Waiting {
        failures_at_start: u64,
        attempts_max: u64,
    },
    /// Written on the current link with this request id.
    Written { request_id: u64 },
    /// A timer; only its deadline matters.
    Timer,
}

#[derive(Debug)]
struct Request {
    body: Option<client_frame::Body>,
    purpose: Purpose,
    deadline: Option<Instant>,
    state: RequestState,
    redirects: u32,
}

#[derive(Debug)]
struct ConsumerEntry {
    /// Sent again, as is, after every reconnect.
    subscribe: Subscribe,
    /// The id on the current link, once subscribed there.
    subscription_id: Option<u64>,
    /// The first subscribe succeeded; only confirmed consumers are subscribed again.
    confirmed: bool,
}

#[derive(Debug)]
enum Link {
    /// No connection; the next attempt starts at `retry_at`.
    Down { retry_at: Instant },
    /// TCP connect, then the handshake, until `deadline`.
    Connecting {
        attempt: AttemptId,
        address: String,
        deadline: Instant,
    },
    /// Hello sent; waiting for HelloOk until `deadline`.
    Handshaking {
        attempt: AttemptId,
        address: String,
        deadline: Instant,
    },
    /// Serving requests since `since`.
    Up {
        attempt: AttemptId,
        address: String,
        since: Instant,
    },
    /// The client was closed.
    Closed,
}

/// What a caller can see of the link.
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    /// Sessions (handshakes completed) so far.
    pub sessions: u64,
    /// Connection attempts that failed so far.
    pub failed_attempts: u64,
    /// The server the client is connected to, if it is.
    pub connected_to: Option<String>,
    /// The node id that server reported.
    pub node_id: Option<u64>,
}

/// The client state machine. See the module documentation.
pub struct ClientMachine {
    config: ClientConfig,
    producer_id: u64,
    link: Link,
    next_attempt: u64,
    next_request_id: u64,
    next_key: u64,
    next_server: usize,
    redirect_to: Option<String>,
    consecutive_failures: u32,
    status: LinkStatus,
    last_error: Option<ClientError>,
    decoder: FrameDecoder,
    read_buffer: BytesMut,
    unwritten_bytes: usize,
    requests: BTreeMap<RequestKey, Request>,
    /// Request id on the current link -> the request (absent: nobody waits).
    written: BTreeMap<u64, RequestKey>,
    deadlines: BTreeSet<(Instant, RequestKey)>,
    consumers: BTreeMap<ConsumerKey, ConsumerEntry>,
    /// Subscription id on the current link -> consumer.
    routes: BTreeMap<u64, ConsumerKey>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl ClientMachine {
    /// A machine that starts connecting at once (the first [`Action::Connect`] is ready).
    /// `producer_id` identifies this client's publishes across reconnects; it must not be 0.
    pub fn new(config: ClientConfig, producer_id: u64, now: Instant) -> ClientMachine {
        assert_ne!(producer_id, 0, "producer id 0 means no producer identity");
        assert!(
            !config.servers.is_empty(),
            "a client needs a server address"
        );
        let mut machine = ClientMachine {
            decoder: FrameDecoder::new(config.max_frame_bytes),
            config,
            producer_id,
            link: Link::Down { retry_at: now },
            next_attempt: 1,
            next_request_id: 1,
            next_key: 1,
            next_server: 0,
            redirect_to: None,
            consecutive_failures: 0,
            status: LinkStatus::default(),
            last_error: None,
            read_buffer: BytesMut::new(),
            unwritten_bytes: 0,
            requests: BTreeMap::new(),
            written: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            consumers: BTreeMap::new(),
            routes: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        machine.on_timeout(now);
        machine
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// This client's producer id.
    pub fn producer_id(&self) -> u64 {
        self.producer_id
    }

    /// What a caller can see of the link.
    pub fn status(&self) -> &LinkStatus {
        &self.status
    }

    /// Why the latest connection attempt failed.
    pub fn last_error(&self) -> Option<&ClientError> {
        self.last_error.as_ref()
    }

    /// Whether the client was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.link, Link::Closed)
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the callers.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether fewer than [`MAX_UNWRITTEN_BYTES`] wait to be written.
    pub fn has_write_room(&self) -> bool {
        self.unwritten_bytes < MAX_UNWRITTEN_BYTES
    }

    /// The earliest deadline: a reconnect, a connect timeout, a request timeout or a timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Down { retry_at } => Some(*retry_at),
            Link::Connecting { deadline, .. } | Link::Handshaking { deadline, .. } => {
                Some(*deadline)
            }
            Link::Up { .. } | Link::Closed => None,
        };
        let request = self.deadlines.first().map(|(deadline, _)| *deadline);
        link.into_iter().chain(request).min()
    }

    /// Starts a request: written at once if the link is up, else queued until it is. It waits
    /// through at most `attempts_max` failed connection attempts, and fails with `Timeout` after
    /// `timeout`. Its answer comes as one [`Event::Answer`].
    pub fn start_request(
        &mut self,
        now: Instant,
        body: client_frame::Body,
        timeout: Duration,
        attempts_max: u32,
    ) -> RequestKey {
        self.start(now, body, Purpose::Plain, timeout, attempts_max)
    }

    /// Sends a request nobody waits for (credit, unsubscribe). Without a link it is dropped:
    /// the server forgot the connection's subscriptions already.
    pub fn send_ignored(&mut self, body: client_frame::Body) {
        if matches!(self.link, Link::Up { .. }) {
            // Its answer finds no entry in `written` and is only logged.
            self.write_frame(body);
        }
    }

    /// A timer for the caller: [`Event::Answer`] with `Err(Timeout)` at `now + duration`.
    pub fn start_timer(&mut self, now: Instant, duration: Duration) -> RequestKey {
        let key = self.new_key();
        let deadline = now + duration;
        self.requests.insert(
            key,
            Request {
                body: None,
                purpose: Purpose::Timer,
                deadline: Some(deadline),
                state: RequestState::Timer,
                redirects: 0,
            },
        );
        self.deadlines.insert((deadline, key));
        key
    }

    /// Forgets a request (its caller stopped waiting); a late answer is dropped.
    pub fn cancel(&mut self, key: RequestKey) {
        if let Some(request) = self.requests.remove(&key) {
            self.forget(key, &request);
        }
    }

    /// Registers a consumer and starts its subscribe. The answer comes as [`Event::Answer`];
    /// on success the consumer's deliveries come as [`Event::Deliveries`] from then on, across
    /// reconnects, until [`ClientMachine::remove_consumer`] or [`Event::ConsumerEnded`].
    pub fn add_consumer(
        &mut self,
        now: Instant,
        subscribe: Subscribe,
        timeout: Duration,
    ) -> (ConsumerKey, RequestKey) {
        let consumer = ConsumerKey(self.new_key().0);
        let entry = ConsumerEntry {
            subscribe: subscribe.clone(),
            subscription_id: None,
            confirmed: false,
        };
        self.consumers.insert(consumer, entry);
        let body = client_frame::Body::Subscribe(subscribe);
        let attempts_max = self.config.reconnect_attempts_per_request;
        let purpose = Purpose::Subscribe(consumer);
        let request = self.start(now, body, purpose, timeout, attempts_max);
        (consumer, request)
    }

    /// Forgets a consumer. Returns its subscription id on the current link, if it had one, so
    /// the caller can unsubscribe (with a request it waits for, or [`Self::send_ignored`]).
    pub fn remove_consumer(&mut self, consumer: ConsumerKey) -> Option<u64> {
        let entry = self.consumers.remove(&consumer)?;
        let subscription_id = entry.subscription_id?;
        self.routes.remove(&subscription_id);
        Some(subscription_id)
    }

    /// The consumer's subscription id on the current link: `Disconnected` while it is not
    /// subscribed there, `InvalidArgument` once it ended for good.
    pub fn subscription_id(&self, consumer: ConsumerKey) -> Result<u64, ClientError> {
        match self.consumers.get(&consumer) {
            None => Err(ClientError::InvalidArgument(
                "the subscription has ended".into(),
            )),
            Some(entry) => entry.subscription_id.ok_or(ClientError::Disconnected),
        }
    }

    /// Closes the client: every request fails with `Closed`, every consumer ends, the socket
    /// closes, and nothing is attempted again.
    pub fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        if !matches!(self.link, Link::Down { .. }) {
            self.actions.push_back(Action::Close);
        }
        self.link = Link::Closed;
        self.status.connected_to = None;
        self.fail_all(|_| ClientError::Closed);
        for (consumer, _) in std::mem::take(&mut self.consumers) {
            let error = ClientError::Closed;
            self.events
                .push_back(Event::ConsumerEnded { consumer, error });
        }
        self.routes.clear();
        self.written.clear();
    }

    /// The TCP connection of `attempt` is open: say Hello.
    pub fn on_connected(&mut self, now: Instant, attempt: AttemptId) {
        let Link::Connecting {
            attempt: current,
            address,
            deadline,
        } = &self.link
        else {
            return;
        };
        if *current != attempt {
            return;
        }
        let (address, deadline) = (address.clone(), *deadline);
        let _ = now;
        self.read_buffer.clear();
        self.decoder = FrameDecoder::new(self.config.max_frame_bytes);
        self.unwritten_bytes = 0;
        let hello = client_frame::Body::Hello(Hello {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            client_name: self.config.client_name.clone(),
            producer_id: self.producer_id,
        });
        self.write_frame(hello);
        self.link = Link::Handshaking {
            attempt,
            address,
            deadline,
        };
    }

    /// The TCP connect of `attempt` failed.
    pub fn on_connect_failed(&mut self, now: Instant, attempt: AttemptId, error: std::io::Error) {
        if self.current_attempt() == Some(attempt) {
            let address = self.current_address().unwrap_or_default();
            let error = std::io::Error::new(
                error.kind(),
                format!("cannot connect to {address}: {error}"),
            );
            self.attempt_failed(now, ClientError::Io(error));
        }
    }

    /// `length` bytes of earlier [`Action::Write`]s were written.
    pub fn on_written(&mut self, length: usize) {
        self.unwritten_bytes = self.unwritten_bytes.saturating_sub(length);
    }

    /// Bytes arrived on the current socket.
    pub fn on_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if !matches!(self.link, Link::Handshaking { .. } | Link::Up { .. }) {
            return;
        }
        self.read_buffer.extend_from_slice(bytes);
        loop {
            let body = match self.decoder.decode(&mut self.read_buffer) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(error) => {
                    return self.link_failed(now, ClientError::Protocol(error.to_string()))
                }
            };
            match krest_proto::frame::decode_body(body) {
                Ok(frame) => self.on_frame(now, frame),
                Err(error) => {
                    return self.link_failed(now, ClientError::Protocol(error.to_string()))
                }
            }
            if !matches!(self.link, Link::Handshaking { .. } | Link::Up { .. }) {
                return;
            }
        }
    }

    /// The current socket closed (end of stream or an error).
    pub fn on_socket_closed(&mut self, now: Instant, error: Option<std::io::Error>) {
        if matches!(self.link, Link::Handshaking { .. } | Link::Up { .. }) {
            let error = error.map_or(ClientError::Disconnected, ClientError::Io);
            self.link_failed(now, error);
        }
    }

    /// Time passed: start a connection attempt that is due, give up on one that took too long,
    /// fail requests past their deadline, end timers.
    pub fn on_timeout(&mut self, now: Instant) {
        match &self.link {
            Link::Down { retry_at } if *retry_at <= now => self.start_attempt(now),
            Link::Connecting {
                deadline, address, ..
            }
            | Link::Handshaking {
                deadline, address, ..
            } if *deadline <= now => {
                let timeout = self.config.connect_timeout;
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("cannot connect to {address}: no handshake within {timeout:?}"),
                );
                self.actions.push_back(Action::Close);
                self.attempt_failed(now, ClientError::Io(error));
            }
            _ => {}
        }
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(request) = self.requests.remove(&key) {
                self.forget(key, &request);
                self.answer(key, request.purpose, Err(ClientError::Timeout));
            }
        }
    }

    fn new_key(&mut self) -> RequestKey {
        let key = RequestKey(self.next_key);
        self.next_key += 1;
        key
    }

    fn start(
        &mut self,
        now: Instant,
        body: client_frame::Body,
        purpose: Purpose,
        timeout: Duration,
        attempts_max: u32,
    ) -> RequestKey {
        let key = self.new_key();
        if self.is_closed() {
            self.answer(key, purpose, Err(ClientError::Closed));
            return key;
        }
        let deadline = now + timeout;
        let request = Request {
            body: Some(body),
            purpose,
            deadline: Some(deadline),
            state: RequestState::Waiting {
                failures_at_start: self.status.failed_attempts,
                attempts_max: u64::from(attempts_max),
            },
            redirects: 0,
        };
        self.requests.insert(key, request);
        self.deadlines.insert((deadline, key));
        if matches!(self.link, Link::Up { .. }) {
            self.write_request(key);
        }
        key
    }

    /// Writes a waiting request on the current link.
    fn write_request(&mut self, key: RequestKey) {
        let Some(body) = self
            .requests
            .get(&key)
            .and_then(|request| request.body.clone())
        else {
            return;
        };
        let request_id = self.write_frame(body);
        self.written.insert(request_id, key);
        if let Some(request) = self.requests.get_mut(&key) {
            request.state = RequestState::Written { request_id };
        }
    }

    /// Encodes one frame with a new request id and queues its write; returns the id.
    fn write_frame(&mut self, body: client_frame::Body) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let frame = ClientFrame {
            request_id,
            body: Some(body),
        };
        let mut bytes = BytesMut::new();
        encode_frame(&frame, &mut bytes);
        self.unwritten_bytes += bytes.len();
        self.actions.push_back(Action::Write(bytes.freeze()));
        request_id
    }

    fn forget(&mut self, key: RequestKey, request: &Request) {
        if let Some(deadline) = request.deadline {
            self.deadlines.remove(&(deadline, key));
        }
        if let RequestState::Written { request_id } = request.state {
            self.written.remove(&request_id);
        }
    }

    fn answer(
        &mut self,
        request: RequestKey,
        purpose: Purpose,
        result: Result<server_frame::Body, ClientError>,
    ) {
        match purpose {
            Purpose::Plain | Purpose::Subscribe(_) | Purpose::Timer => {
                self.events.push_back(Event::Answer { request, result })
            }
            Purpose::Resubscribe(_) => {}
        }
    }

    fn current_attempt(&self) -> Option<AttemptId> {
        match &self.link {
            Link::Connecting { attempt, .. }
            | Link::Handshaking { attempt, .. }
            | Link::Up { attempt, .. } => Some(*attempt),
            Link::Down { .. } | Link::Closed => None,
        }
    }

    fn current_address(&self) -> Option<String> {
        match &self.link {
            Link::Connecting { address, .. }
            | Link::Handshaking { address, .. }
            | Link::Up { address, .. } => Some(address.clone()),
            Link::Down { .. } | Link::Closed => None,
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        let address = self.redirect_to.take().unwrap_or_else(|| {
            let servers = &self.config.servers;
            let address = servers[self.next_server % servers.len()].clone();
            self.next_server = self.next_server.wrapping_add(1);
            address
        });
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        self.actions.push_back(Action::Connect {
            attempt,
            address: address.clone(),
        });
        self.link = Link::Connecting {
            attempt,
            address,
            deadline: now + self.config.connect_timeout,
        };
    }

    /// A connection attempt failed before the handshake completed.
    fn attempt_failed(&mut self, now: Instant, error: ClientError) {
        tracing::debug!(%error, "connection attempt failed");
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.status.failed_attempts += 1;
        self.go_down(now);
        let failed_attempts = self.status.failed_attempts;
        let given_up: Vec<RequestKey> = self
            .requests
            .iter()
            .filter(|(_, request)| match request.state {
                RequestState::Waiting {
                    failures_at_start,
                    attempts_max,
                } => failed_attempts - failures_at_start >= attempts_max,
                _ => false,
            })
            .map(|(key, _)| *key)
            .collect();
        for key in given_up {
            if let Some(request) = self.requests.remove(&key) {
                self.forget(key, &request);
                self.answer(key, request.purpose, Err(error.duplicate()));
                if let Purpose::Subscribe(consumer) = request.purpose {
                    self.consumers.remove(&consumer);
                }
            }
        }
        self.last_error = Some(error);
    }

    /// An established (or handshaking) link failed: requests written on it fail with
    /// `Disconnected` (they may have been carried out), consumers lose their subscription ids,
    /// and a new attempt is scheduled.
    fn link_failed(&mut self, now: Instant, error: ClientError) {
        let session_was_up = match &self.link {
            Link::Up { since, .. } => Some(*since),
            _ => None,
        };
        self.actions.push_back(Action::Close);
        match session_was_up {
            Some(since) => {
                tracing::debug!(%error, "connection lost");
                if now.duration_since(since) >= SESSION_STABLE_AFTER {
                    self.consecutive_failures = 0;
                } else {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                }
                self.go_down(now);
            }
            None => return self.attempt_failed(now, error),
        }
        self.status.connected_to = None;
        self.status.node_id = None;
        let written: Vec<RequestKey> = std::mem::take(&mut self.written).into_values().collect();
        for key in written {
            let Some(request) = self.requests.remove(&key) else {
                continue;
            };
            self.forget(key, &request);
            self.answer(key, request.purpose, Err(ClientError::Disconnected));
        }
        self.routes.clear();
        for entry in self.consumers.values_mut() {
            entry.subscription_id = None;
        }
    }

    fn go_down(&mut self, now: Instant) {
        let delay = self.config.reconnect_delay(self.consecutive_failures);
        self.link = Link::Down {
            retry_at: now + delay,
        };
    }

    /// Fails every request and timer with `error`.
    fn fail_all(&mut self, error: impl Fn(&Request) -> ClientError) {
        for (key, request) in std::mem::take(&mut self.requests) {
            let error = error(&request);
            self.answer(key, request.purpose, Err(error));
        }
        self.deadlines.clear();
    }

    /// The handshake completed: re-subscribe confirmed consumers, then write every waiting
    /// request in the order it was started.
    fn on_session_up(&mut self, now: Instant, node_id: u64) {
        let (attempt, address) = match &self.link {
            Link::Handshaking {
                attempt, address, ..
            } => (*attempt, address.clone()),
            _ => return,
        };
        self.status.sessions += 1;
        self.status.connected_to = Some(address.clone());
        self.status.node_id = Some(node_id);
        self.link = Link::Up {
            attempt,
            address,
            since: now,
        };
        let resubscribes: Vec<(ConsumerKey, Subscribe)> = self
            .consumers
            .iter()
            .filter(|(_, entry)| entry.confirmed)
            .map(|(consumer, entry)| (*consumer, entry.subscribe.clone()))
            .collect();
        for (consumer, subscribe) in resubscribes {
            let body = client_frame::Body::Subscribe(subscribe);
            let purpose = Purpose::Resubscribe(consumer);
            let timeout = self.config.request_timeout;
            self.start(now, body, purpose, timeout, u32::MAX);
        }
        let waiting: Vec<RequestKey> = self
            .requests
            .iter()
            .filter(|(_, request)| matches!(request.state, RequestState::Waiting { .. }))
            .map(|(key, _)| *key)
            .collect();
        for key in waiting {
            self.write_request(key);
        }
    }

    /// Ends an orphan subscription (its consumer was removed while subscribing).
    fn unsubscribe_orphan(&mut self, subscription_id: u64) {
        self.send_ignored(client_frame::Body::Unsubscribe(Unsubscribe {
            subscription_id,
        }));
    }
}
