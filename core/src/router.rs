//! The one command router: what every driver of a node (the tokio and smol servers, the
//! simulator, the embedded virtual-time broker, the fuzz driver and the core's test harness)
//! does with the node's commands, written once so that none of them can drift from the others
//! and a routing bug shows up in the simulator.
//!
//! - [`Router`] owns the [`Node`] inside an event loop: it numbers admin requests, keeps the
//!   table of connections and waiting admin requests, feeds each [`Event`] to the node, and
//!   carries out every [`Command`] the node emits: frames go to the connection's
//!   [`ConnectionOutbox`], admin answers to their [`AdminResponder`], storage requests are
//!   gathered for the runtime to hand to its storage worker in one go. It keeps the drive
//!   contract: after every `handle` it drains `poll_command` to empty before the next input.
//! - [`Mailbox`] is the outbox and responder of drivers that handle every connection in one
//!   place (the simulator and the test drivers): what the router routes is collected there, in
//!   order, for the driver to take after each call.
//! - [`InboundFrames`] is the read side of one client connection: it cuts the byte stream into
//!   frame bodies (bounded by `limits.max_frame_bytes`) and turns a malformed stream or an idle
//!   connection into the input that makes the core answer with an error frame and close.
//! - [`WriteBatch`] is the write side: it gathers what the node sends into one socket write.
//!
//! No I/O happens here; the runtime reads the clock and passes `now` to every call.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use krest_proto::client::{server_frame, ErrorCode, ServerFrame};
use krest_proto::frame::{frame_bytes, FrameDecoder};

use crate::config::Limits;
use crate::ids::{AdminRequestId, ConnId, NodeId};
use crate::{AdminHttpRequest, Command, Input, Instant, Node, Now, StorageDone, StorageRequest};

/// Most events an event loop feeds the router per wake-up (those already queued) before it
/// hands the gathered storage requests to its storage worker: one hand-off per burst of frames
/// instead of one per frame. Bounded so that a flood can neither starve completions and timers
/// nor hold the first frame's storage work back for long (64 frames take ~0.1 ms of core time).
pub const EVENTS_PER_WAKE_MAX: usize = 64;

/// What the event loop tells one connection task, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Write these bytes (one or more whole frames).
    Frame(Bytes),
    /// Start (`true`) or stop (`false`) reading from the socket: TCP back-pressure.
    Reading(bool),
    /// Flush what was queued, then close the connection; `reason` is for the server's log.
    Close {
        /// Why.
        reason: String,
    },
}

/// Where the event loop puts messages for one connection task: an unbounded channel's sending
/// end. Unbounded is safe because the core bounds what it sends to a connection (confirms for a
/// bounded number of unconfirmed publishes, deliveries within credit).
pub trait ConnectionOutbox {
    /// Queues `message`; a connection that is gone drops it.
    fn push(&self, message: Outbound);
    /// Whether the connection task is gone (used to wait for clients to close at shutdown).
    fn is_closed(&self) -> bool;
}

/// An admin HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    /// HTTP status.
    pub status: u16,
    /// Content type of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// Where one admin request's answer goes: a one-shot channel's sending end.
pub trait AdminResponder {
    /// Hands over the answer; a requester that is gone drops it.
    fn respond(self, response: AdminResponse);
}

/// What connection and admin tasks send to the event loop.
pub enum Event<Outbox, Responder> {
    /// A connection task started; messages for it go to `outbox`.
    Connected {
        /// Chosen by the accept loop, unique while the node runs.
        conn: ConnId,
        /// Where its messages go.
        outbox: Outbox,
    },
    /// Something for the core: a frame, a stream error, a disconnect.
    Input(Input),
    /// A link to peer node `peer` completed its handshake; frames for it go to `outbox`
    /// (replacing an earlier link's).
    PeerLinked {
        /// The node at the other end.
        peer: NodeId,
        /// Where its frames go.
        outbox: Outbox,
    },
    /// The link to `peer` is gone (its task dropped its inbox first); its frames are dropped
    /// until it is linked again.
    PeerUnlinked {
        /// The node at the other end.
        peer: NodeId,
    },
    /// An admin request and where its answer goes.
    Admin {
        /// The request.
        http: AdminHttpRequest,
        /// Where the answer goes.
        responder: Responder,
    },
}

/// The node inside an event loop. See the module documentation.
pub struct Router<Outbox, Responder> {
    node: Node,
    connections: BTreeMap<ConnId, Outbox>,
    peers: BTreeMap<NodeId, Outbox>,
    admin_waiting: BTreeMap<AdminRequestId, Responder>,
    next_admin_request: u64,
    storage_requests: Vec<StorageRequest>,
    unroutable: u64,
}

impl<Outbox: ConnectionOutbox, Responder: AdminResponder> Router<Outbox, Responder> {
    /// Wraps a freshly built node and carries out the commands its construction left (the
    /// creation of missing logs, for example): call [`Router::take_storage_requests`] next.
    pub fn new(node: Node) -> Self {
        let mut router = Router {
            node,
            connections: BTreeMap::new(),
            peers: BTreeMap::new(),
            admin_waiting: BTreeMap::new(),
            next_admin_request: 1,
            storage_requests: Vec::new(),
            unroutable: 0,
        };
        router.execute_commands();
        router
    }

    /// When the node next needs a [`Router::on_timer`] call; `None`: no timer armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    /// Feeds `first` and then whatever else is already queued (`next_queued`, at most
    /// [`EVENTS_PER_WAKE_MAX`] in all) before the runtime hands storage its work: one hand-off
    /// (one wake-up of the storage thread, one batch) per burst, not per frame.
    pub fn on_event_burst(
        &mut self,
        now: Now,
        first: Event<Outbox, Responder>,
        mut next_queued: impl FnMut() -> Option<Event<Outbox, Responder>>,
    ) {
        self.on_event(now, first);
        for _ in 1..EVENTS_PER_WAKE_MAX {
            let Some(event) = next_queued() else {
                break;
            };
            self.on_event(now, event);
        }
    }

    /// Feeds one event to the node and carries out what it commands.
    pub fn on_event(&mut self, now: Now, event: Event<Outbox, Responder>) {
        match event {
            Event::Connected { conn, outbox } => {
                self.connections.insert(conn, outbox);
                self.handle(now, Input::ClientConnected { conn });
            }
            Event::Input(input) => {
                if let Input::ClientDisconnected { conn } = &input {
                    self.connections.remove(conn);
                }
                self.handle(now, input);
            }
            Event::PeerLinked { peer, outbox } => {
                self.peers.insert(peer, outbox);
                self.handle(now, Input::PeerLink { peer, linked: true });
            }
            Event::PeerUnlinked { peer } => {
                // Only a link that is gone: a newer link to the same peer may have replaced it
                // (its task drops its inbox before saying so).
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|outbox| outbox.is_closed())
                {
                    self.peers.remove(&peer);
                    self.handle(
                        now,
                        Input::PeerLink {
                            peer,
                            linked: false,
                        },
                    );
                }
            }
            Event::Admin { http, responder } => {
                let request = AdminRequestId(self.next_admin_request);
                self.next_admin_request += 1;
                self.admin_waiting.insert(request, responder);
                self.handle(now, Input::Admin { request, http });
            }
        }
    }

    /// The node's deadline passed (spurious calls are harmless).
    pub fn on_timer(&mut self, now: Now) {
        self.handle(now, Input::Tick);
    }

    /// Completions from the storage worker, in the order it produced them.
    pub fn on_storage_done(&mut self, now: Now, completions: Vec<StorageDone>) {
        for done in completions {
            self.handle(now, Input::StorageDone(done));
        }
    }

    /// The storage requests emitted since the last call, in order, for the storage worker.
    pub fn take_storage_requests(&mut self) -> Vec<StorageRequest> {
        std::mem::take(&mut self.storage_requests)
    }

    /// Tells every client why (an `UNAVAILABLE` error frame with `reason`, so a client knows
    /// to reconnect elsewhere or later), then asks each connection to flush and close.
    pub fn close_all_connections(&mut self, reason: &str) {
        let farewell = frame_bytes(&ServerFrame {
            request_id: 0,
            body: Some(server_frame::Body::Error(krest_proto::client::Error {
                code: ErrorCode::Unavailable as i32,
                message: reason.to_string(),
                leader_address: String::new(),
            })),
        });
        for outbox in self.connections.values() {
            outbox.push(Outbound::Frame(farewell.clone()));
            outbox.push(Outbound::Close {
                reason: reason.to_string(),
            });
        }
    }

    /// Whether every connection task is gone.
    pub fn all_connections_closed(&self) -> bool {
        self.connections.values().all(ConnectionOutbox::is_closed)
    }

    /// Messages the node sent to connections the router does not know (never connected, or
    /// already reported disconnected): always 0 for a correct node; the fuzz driver checks it.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// The node, for inspection.
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn handle(&mut self, now: Now, input: Input) {
        self.node.handle(now, input);
        self.execute_commands();
    }

    fn route_to_connection(&mut self, conn: ConnId, message: Outbound) {
        match self.connections.get(&conn) {
            Some(outbox) => outbox.push(message),
            None => self.unroutable += 1,
        }
    }

    fn execute_commands(&mut self) {
        while let Some(command) = self.node.poll_command() {
            match command {
                Command::SendToClient { conn, frame } => {
                    self.route_to_connection(conn, Outbound::Frame(frame));
                }
                Command::CloseClient { conn, reason } => {
                    self.route_to_connection(conn, Outbound::Close { reason });
                }
                Command::SetReading { conn, enabled } => {
                    self.route_to_connection(conn, Outbound::Reading(enabled));
                }
                Command::Storage(request) => self.storage_requests.push(request),
                Command::SendToPeer { peer, frame } => {
                    // No link: dropped, as the network may drop it; Raft retries.
                    if let Some(outbox) = self.peers.get(&peer) {
                        outbox.push(Outbound::Frame(frame));
                    }
                }
                Command::AdminResponse {
                    request,
                    status,
                    content_type,
                    body,
                } => {
                    if let Some(responder) = self.admin_waiting.remove(&request) {
                        responder.respond(AdminResponse {
                            status,
                            content_type,
                            body,
                        });
                    }
                }
            }
        }
    }
}

/// What a [`Mailbox`] collected, in the order the router routed it.
#[derive(Debug, Default)]
pub struct Mail {
    /// Messages for connections.
    pub to_connections: Vec<(ConnId, Outbound)>,
    /// Frames for peer links.
    pub to_peers: Vec<(NodeId, Outbound)>,
    /// Answers to admin requests, by the tag the driver gave the request.
    pub admin_answers: Vec<(u64, AdminResponse)>,
}

/// The outbox of every connection and the responder of every admin request, for drivers that
/// handle them all in one place (the simulator, the embedded broker, the fuzz driver and the
/// core's harness): give each connection [`Mailbox::outbox`] and each admin request
/// [`Mailbox::responder`], and [`Mailbox::take`] what was routed after each router call.
///
/// `Send`, so a driver on a multi-threaded runtime (the embedded broker) can hold it across an
/// `await`; the lock is never contended, one driver owns every clone.
#[derive(Debug, Clone, Default)]
pub struct Mailbox {
    mail: std::sync::Arc<std::sync::Mutex<Mail>>,
}

/// One connection's or peer link's slot in a [`Mailbox`].
#[derive(Debug)]
pub struct MailboxOutbox {
    to: Destination,
    mailbox: Mailbox,
}

#[derive(Debug, Clone, Copy)]
enum Destination {
    Connection(ConnId),
    Peer(NodeId),
}

/// One admin request's slot in a [`Mailbox`].
#[derive(Debug)]
pub struct MailboxResponder {
    tag: u64,
    mailbox: Mailbox,
}

impl Mailbox {
    /// The outbox of connection `conn`.
    pub fn outbox(&self, conn: ConnId) -> MailboxOutbox {
        MailboxOutbox {
            to: Destination::Connection(conn),
            mailbox: self.clone(),
        }
    }

    /// The outbox of the link to peer node `peer`.
    pub fn peer_outbox(&self, peer: NodeId) -> MailboxOutbox {
        MailboxOutbox {
            to: Destination::Peer(peer),
            mailbox: self.clone(),
        }
    }

    /// The responder of the admin request the driver tagged `tag`.
    pub fn responder(&self, tag: u64) -> MailboxResponder {
        MailboxResponder {
            tag,
            mailbox: self.clone(),
        }
    }

    /// Everything routed since the last call.
    pub fn take(&self) -> Mail {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mail> {
        self.mail.lock().expect("a mailbox is used by one driver")
    }
}

impl ConnectionOutbox for MailboxOutbox {
    fn push(&self, message: Outbound) {
        let mut mail = self.mailbox.lock();
        match self.to {
            Destination::Connection(conn) => mail.to_connections.push((conn, message)),
            Destination::Peer(peer) => mail.to_peers.push((peer, message)),
        }
    }

    /// The driver owns every connection's fate; it removes closed ones from the router with
    /// `ClientDisconnected`.
    fn is_closed(&self) -> bool {
        false
    }
}

impl AdminResponder for MailboxResponder {
    fn respond(self, response: AdminResponse) {
        let mut mail = self.mailbox.lock();
        mail.admin_answers.push((self.tag, response));
    }
}

/// A router whose connections and admin requests all answer into one [`Mailbox`].
pub type MailboxRouter = Router<MailboxOutbox, MailboxResponder>;

impl MailboxRouter {
    /// Feeds one core input the way every mailbox driver does: a new connection gets its slot
    /// in `mailbox`, an admin request its answer slot tagged with the request's id, and
    /// anything else goes to the node as it is.
    pub fn on_input(&mut self, now: Now, input: Input, mailbox: &Mailbox) {
        let event = match input {
            Input::ClientConnected { conn } => Event::Connected {
                conn,
                outbox: mailbox.outbox(conn),
            },
            Input::Admin { request, http } => Event::Admin {
                http,
                responder: mailbox.responder(request.0),
            },
            input => Event::Input(input),
        };
        self.on_event(now, event);
    }
}

/// The frame a client over `limits.max_connections` gets before the server closes it.
pub fn connection_limit_refusal(limits: &Limits) -> Bytes {
    frame_bytes(&ServerFrame {
        request_id: 0,
        body: Some(server_frame::Body::Error(krest_proto::client::Error {
            code: ErrorCode::LimitReached as i32,
            message: format!(
                "the server is at its connection limit ({}, limits.max_connections)",
                limits.max_connections
            ),
            leader_address: String::new(),
        })),
    })
}

/// The read side of one client connection. See the module documentation.
pub struct InboundFrames {
    conn: ConnId,
    decoder: FrameDecoder,
    idle_timeout_ms: u64,
    failed: bool,
}

impl InboundFrames {
    /// Bytes a runtime asks of the socket per read.
    pub const READ_CHUNK_BYTES: usize = 64 * 1024;

    /// For connection `conn`, within `limits`.
    pub fn new(conn: ConnId, limits: &Limits) -> InboundFrames {
        InboundFrames {
            conn,
            decoder: FrameDecoder::new(limits.max_frame_bytes),
            idle_timeout_ms: limits.idle_timeout_ms,
            failed: false,
        }
    }

    /// How long the connection may stay silent before [`InboundFrames::on_idle`].
    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.idle_timeout_ms)
    }

    /// Whether the stream was refused: the runtime stops reading and stops the idle timer, and
    /// waits for the core's close.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Cuts every whole frame out of `buffer` (bytes just read were appended to it) and appends
    /// the inputs for the core to `inputs`: one `ClientFrame` per frame, then, if the stream is
    /// malformed, one `ClientStreamError` after which nothing more is decoded. Leaves room in
    /// `buffer` for the next read.
    pub fn on_bytes(&mut self, buffer: &mut BytesMut, inputs: &mut Vec<Input>) {
        while !self.failed {
            match self.decoder.decode(buffer) {
                Ok(Some(body)) => inputs.push(Input::ClientFrame {
                    conn: self.conn,
                    body,
                }),
                Ok(None) => break,
                Err(error) => {
                    self.failed = true;
                    inputs.push(Input::ClientStreamError {
                        conn: self.conn,
                        reason: error.to_string(),
                    });
                }
            }
        }
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(Self::READ_CHUNK_BYTES);
        }
    }

    /// The connection sent nothing for the idle timeout: the input that makes the core close
    /// it with a reason. Afterwards the stream counts as failed.
    pub fn on_idle(&mut self) -> Input {
        self.failed = true;
        Input::ClientStreamError {
            conn: self.conn,
            reason: format!(
                "no data from the client for {} ms (limits.idle_timeout_ms)",
                self.idle_timeout_ms
            ),
        }
    }

    /// The input that reports the connection gone.
    pub fn disconnected(&self) -> Input {
        Input::ClientDisconnected { conn: self.conn }
    }
}

/// The write side of one client connection: gathers queued [`Outbound`] messages into one
/// socket write of at most about [`WriteBatch::MAX_BYTES`].
#[derive(Default)]
pub struct WriteBatch {
    bytes: BytesMut,
    reading: Option<bool>,
    close: Option<String>,
}

impl WriteBatch {
    /// Bytes gathered into one write before it is written (a larger frame is written whole).
    pub const MAX_BYTES: usize = 256 * 1024;

    /// Adds one message; returns whether to keep gathering (the batch is below its size and
    /// no close was asked for).
    pub fn add(&mut self, message: Outbound) -> bool {
        match message {
            Outbound::Frame(frame) => self.bytes.extend_from_slice(&frame),
            Outbound::Reading(enabled) => self.reading = Some(enabled),
            Outbound::Close { reason } => self.close = Some(reason),
        }
        self.close.is_none() && self.bytes.len() < Self::MAX_BYTES
    }

    /// The bytes to write now (empty if none).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// After the write: clears the batch and returns the last reading change asked for and
    /// whether to close (with the reason).
    pub fn finish(&mut self) -> (Option<bool>, Option<String>) {
        self.bytes.clear();
        (self.reading.take(), self.close.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// `body` with its big-endian length prefix.
    fn put_frame(buffer: &mut BytesMut, body: &[u8]) {
        buffer.put_u32(body.len() as u32);
        buffer.extend_from_slice(body);
    }

    fn limits(max_frame_bytes: u32) -> Limits {
        Limits {
            max_frame_bytes,
            ..crate::Config::default().limits
        }
    }

    #[test]
    fn inbound_frames_cut_whole_frames_and_stop_after_a_malformed_length() {
        let mut inbound = InboundFrames::new(ConnId(3), &limits(64));
        let mut buffer = BytesMut::new();
        put_frame(&mut buffer, b"first");
        put_frame(&mut buffer, b"secd");
        buffer.truncate(buffer.len() - 1); // the second frame is not whole yet
        let mut inputs = Vec::new();
        inbound.on_bytes(&mut buffer, &mut inputs);
        assert!(matches!(&inputs[..], [Input::ClientFrame { body, .. }] if body == "first"));
        buffer.extend_from_slice(b"d");
        buffer.extend_from_slice(&u32::MAX.to_be_bytes());
        buffer.extend_from_slice(&[0; 8]);
        inputs.clear();
        inbound.on_bytes(&mut buffer, &mut inputs);
        assert!(matches!(&inputs[0], Input::ClientFrame { body, .. } if body == "secd"));
        assert!(matches!(
            &inputs[1],
            Input::ClientStreamError {
                conn: ConnId(3),
                ..
            }
        ));
        assert_eq!(inputs.len(), 2);
        assert!(inbound.failed());
        inputs.clear();
        inbound.on_bytes(&mut buffer, &mut inputs);
        assert!(inputs.is_empty(), "nothing is decoded after a refusal");
    }

    #[test]
    fn a_write_batch_gathers_until_its_size_or_a_close_and_keeps_the_last_reading_change() {
        let mut batch = WriteBatch::default();
        assert!(batch.add(Outbound::Frame(Bytes::from_static(b"ab"))));
        assert!(batch.add(Outbound::Reading(false)));
        assert!(batch.add(Outbound::Reading(true)));
        assert!(!batch.add(Outbound::Close {
            reason: "bye".into()
        }));
        assert_eq!(batch.bytes(), b"ab");
        assert_eq!(batch.finish(), (Some(true), Some("bye".into())));
        assert!(batch.bytes().is_empty());
        let big = Bytes::from(vec![0u8; WriteBatch::MAX_BYTES]);
        assert!(!batch.add(Outbound::Frame(big)), "full after MAX_BYTES");
    }
}
