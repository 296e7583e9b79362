//! The `core_inputs` target: this module plays the runtime, the clients and the storage around
//! one [`Node`] behind the command router every runtime uses ([`MailboxRouter`]), and checks
//! after every input what each of them can see.
//!
//! Storage is the test drivers' [`MemoryStorage`], which behaves like the file storage within
//! its contract: a `Sync` is completed whenever the fuzz bytes say so (in order within a log), a
//! crash loses any suffix of the records not yet synced, and deleting segments drops a prefix of
//! synced records below the index asked for (as many as the bytes say), never the last record
//! (the active segment is never deleted).
//!
//! Layout of the input: a byte for the queues' default `max_deliveries`, eight for the node's
//! seed, then steps. Each step starts with a byte choosing (modulo 20): 0-6 a request from a
//! client, 7 a new connection (usually with its Hello), 8 a disconnect, 9 a garbage frame, 10 a
//! stream error, 11-12 time passing, 13-15 storage completing syncs, 16 storage failing, 17 an
//! admin request, 18 a crash and restart, 19 a crash and restart with one record replaced. The
//! step's choices follow it (see [`Runtime::step`] and `requests`; `fuzz/seeds.py` writes such
//! inputs by hand). Once the bytes run out, storage completes everything, time passes every
//! deadline, and every request must have had its answer.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use krest_proto::client::{client_frame, server_frame, ClientFrame, ErrorCode, ServerFrame};
use krest_proto::frame::FrameDecoder;
use prost::Message as _;

use super::byte_source::ByteSource;
use super::requests::{self, Known};
use crate::config::Config;
use crate::ids::ConnId;
use crate::io::{Input, LogId, Recovered, StorageDone, StorageRequest};
use crate::memory_storage::MemoryStorage;
use crate::node::{Node, RecoveryError};
use crate::router::{AdminResponse, Event, Mailbox, MailboxRouter, Outbound};
use crate::time::{Instant, Millis, Now, UnixMillis};

/// Inputs per run, whatever the length of the fuzz input.
const STEPS_MAX: usize = 2_000;
/// Client connections open at once.
const CLIENTS_MAX: usize = 5;
/// Delivery tags and sequences a client remembers to name in later requests.
const REMEMBERED_MAX: usize = 32;
/// Rounds of "complete every sync, let every timer fire" before everything must be answered.
const QUIESCE_ROUNDS_MAX: usize = 64;

/// Drives a node with the inputs `data` encodes (see the module documentation of
/// [`crate::fuzzing`]) and checks it after every one.
pub fn core_inputs(data: &[u8]) {
    run(data, None);
}

/// [`core_inputs`], telling `trace` every input and every command as it happens, to see what a
/// failing input does.
pub fn core_inputs_traced(data: &[u8], trace: &mut dyn FnMut(&str)) {
    run(data, Some(trace));
}

fn run(data: &[u8], trace: Option<&mut dyn FnMut(&str)>) {
    let mut source = ByteSource::new(data);
    let mut runtime = Runtime::start(&mut source, trace);
    for _ in 0..STEPS_MAX {
        if source.is_empty() {
            break;
        }
        if !runtime.step(&mut source) {
            // A replaced record the node cannot recover from: nothing more to drive.
            return;
        }
        runtime.check();
    }
    runtime.quiesce(&mut source);
}

/// A client connection as the driver sees it.
#[derive(Debug)]
struct Client {
    /// The node asked to close it; it is disconnected on a later step.
    closing: bool,
    /// What the node last said about reading from the socket.
    reading: bool,
    /// Request ids sent and not yet answered, with how many times each was sent.
    asked: BTreeMap<u64, u32>,
    known: Known,
}

struct Runtime<'t> {
    trace: Option<&'t mut dyn FnMut(&str)>,
    config: Config,
    seed: u64,
    router: MailboxRouter,
    mailbox: Mailbox,
    now: Now,
    storage: MemoryStorage,
    clients: BTreeMap<ConnId, Client>,
    next_conn: u64,
    next_request_id: u64,
    /// Admin requests sent and not answered, by tag.
    admin_waiting: BTreeSet<u64>,
    next_admin: u64,
    /// Sequences from publish confirms, to name in cancels.
    sequences: Vec<u64>,
    /// A record was replaced by fuzz bytes: the node may hold anything it decoded from them.
    tainted: bool,
}

/// Small limits, so that every bound is within reach of a short input.
fn config(source: &mut ByteSource) -> Config {
    let mut config = Config::default();
    let limits = &mut config.limits;
    limits.max_frame_bytes = 1_100;
    limits.max_message_bytes = 76;
    limits.max_queues = 4;
    limits.max_consumers_per_connection = 3;
    limits.max_subscriptions_per_queue = 3;
    limits.max_in_flight_per_consumer = 40;
    limits.max_fetch_messages = 6;
    limits.max_fetch_wait_ms = 5_000;
    limits.max_unconfirmed_per_connection = 3;
    limits.max_ack_timeout_ms = 10_000;
    limits.max_delay_ms = 60_000;
    limits.idempotency_window_per_producer = 4;
    limits.max_idempotent_producers = 2;
    let defaults = &mut config.queue_defaults;
    defaults.max_messages = 16;
    defaults.max_bytes = 1_024;
    defaults.ack_timeout_ms = 1_000;
    defaults.max_deliveries = source.up_to(3) as u32;
    defaults.prefetch = 3;
    // About three messages: most durable payloads live on disk and are read back.
    config.storage.payload_memory_bytes = 200;
    config.validate().expect("the fuzz configuration is valid");
    config
}

impl<'t> Runtime<'t> {
    fn start(source: &mut ByteSource, trace: Option<&'t mut dyn FnMut(&str)>) -> Runtime<'t> {
        let config = config(source);
        let seed = source.u64();
        let now = Now {
            monotonic: Instant(1_000),
            wall: UnixMillis(1_700_000_000_000),
        };
        let node = Node::new(config.clone(), Recovered::default(), seed, now)
            .expect("a node starts from nothing");
        let mut runtime = Runtime {
            trace,
            config,
            seed,
            router: MailboxRouter::new(node),
            mailbox: Mailbox::default(),
            now,
            storage: MemoryStorage::default(),
            clients: BTreeMap::new(),
            next_conn: 1,
            next_request_id: 1,
            admin_waiting: BTreeSet::new(),
            next_admin: 1,
            sequences: Vec::new(),
            tainted: false,
        };
        runtime.drain(source);
        runtime
    }

    /// One input chosen by the fuzz bytes. Returns false when the run cannot go on.
    fn step(&mut self, source: &mut ByteSource) -> bool {
        match source.below(20) {
            0..=6 => self.send_request(source),
            7 => self.connect(source),
            8 => self.disconnect(source),
            9 => self.send_garbage(source),
            10 => self.stream_error(source),
            11 | 12 => self.advance_time(source),
            13..=15 => self.complete_syncs(source),
            16 => self.fail_storage(source),
            17 => self.admin(source),
            18 => self.restart(source),
            _ => return self.restart_with_replaced_record(source),
        }
        true
    }

    /// What must hold after every input.
    fn check(&self) {
        let node = self.router.node();
        node.check_invariants();
        assert_eq!(
            self.router.unroutable(),
            0,
            "the node sends only to connections it knows"
        );
        if !self.tainted {
            for queue in node.queues() {
                let settings = &queue.settings;
                assert!(
                    queue.messages.len() as u64 <= settings.max_messages,
                    "{}",
                    queue.name
                );
                assert!(queue.bytes <= settings.max_bytes, "{}", queue.name);
            }
        }
        let deadline = self
            .router
            .poll_timeout()
            .expect("housekeeping is always armed");
        assert!(
            deadline > self.now.monotonic,
            "every timer due now has fired"
        );
    }

    /// Tells the trace, if there is one, what happens.
    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            trace(&line());
        }
    }

    fn input(&mut self, input: Input, source: &mut ByteSource) {
        let monotonic = self.now.monotonic;
        self.note(|| format!("{monotonic:?} {input:?}"));
        self.router.on_input(self.now, input, &self.mailbox);
        self.drain(source);
    }

    /// Carries out what the router routed.
    fn drain(&mut self, source: &mut ByteSource) {
        let mail = self.mailbox.take();
        for (conn, message) in mail.to_connections {
            self.note(|| format!("    -> {conn} {message:?}"));
            self.route_to_connection(conn, message);
        }
        for (tag, answer) in mail.admin_answers {
            self.note(|| format!("    -> admin {tag} {}", answer.status));
            self.admin_answered(tag, answer);
        }
        for request in self.router.take_storage_requests() {
            self.note(|| format!("    -> {request:?}"));
            self.store(request, source);
        }
    }

    fn route_to_connection(&mut self, conn: ConnId, message: Outbound) {
        match message {
            Outbound::Frame(frame) => self.receive(conn, frame),
            Outbound::Close { reason } => {
                assert!(!reason.is_empty(), "a close says why");
                let client = self
                    .clients
                    .get_mut(&conn)
                    .expect("closing a live connection");
                assert!(!client.closing, "connection {conn} is closed once");
                client.closing = true;
            }
            Outbound::Reading(enabled) => {
                let client = self
                    .clients
                    .get_mut(&conn)
                    .expect("pausing a live connection");
                assert_ne!(
                    client.reading, enabled,
                    "reading is switched, never repeated"
                );
                client.reading = enabled;
            }
        }
    }

    fn admin_answered(&mut self, tag: u64, answer: AdminResponse) {
        assert!(self.admin_waiting.remove(&tag), "{tag} answered once");
        let status = answer.status;
        assert!((200..600).contains(&status), "status {status}");
        assert!(!answer.content_type.is_empty());
    }

    /// A frame for a client: it fits the frame limit, decodes, answers something asked.
    fn receive(&mut self, conn: ConnId, frame: Bytes) {
        let max_frame_bytes = self.config.limits.max_frame_bytes;
        let client = self
            .clients
            .get_mut(&conn)
            .expect("frames go to live connections");
        let mut buffer = BytesMut::from(&frame[..]);
        let body = match FrameDecoder::new(max_frame_bytes).decode(&mut buffer) {
            Ok(Some(body)) => body,
            other => panic!(
                "a server frame of {} bytes does not fit the maximum of {max_frame_bytes} \
                 the client was told: {other:?}",
                frame.len()
            ),
        };
        assert!(buffer.is_empty(), "one command carries one frame");
        let frame = ServerFrame::decode(body).expect("server frames decode");
        if frame.request_id != 0 {
            let count = client.asked.get_mut(&frame.request_id);
            let count = count.unwrap_or_else(|| {
                panic!(
                    "request {} answered more often than asked",
                    frame.request_id
                )
            });
            *count -= 1;
            if *count == 0 {
                client.asked.remove(&frame.request_id);
            }
        }
        match frame.body.expect("server frames have a body") {
            server_frame::Body::SubscribeOk(ok) => {
                client.known.subscriptions.push(ok.subscription_id)
            }
            server_frame::Body::Deliveries(batch) => {
                for delivery in batch.deliveries {
                    let tag = delivery.tag.expect("deliveries carry tags");
                    assert!(tag.delivery_count >= 1);
                    client.known.tags.push((batch.subscription_id, tag));
                }
                let excess = client.known.tags.len().saturating_sub(REMEMBERED_MAX);
                client.known.tags.drain(..excess);
            }
            server_frame::Body::PublishOk(ok) => {
                self.sequences.extend(ok.sequences);
                let excess = self.sequences.len().saturating_sub(REMEMBERED_MAX);
                self.sequences.drain(..excess);
            }
            server_frame::Body::Error(error) => {
                assert!(!error.message.is_empty(), "an error says why");
                let code = ErrorCode::try_from(error.code).expect("a known error code");
                assert_ne!(code, ErrorCode::Unspecified);
            }
            _ => {}
        }
    }

    fn store(&mut self, request: StorageRequest, source: &mut ByteSource) {
        if let StorageRequest::Append { log, records } = &request {
            let memory = self.storage.logs.get(log);
            let memory = memory.expect("a log is created before appends");
            if memory.records.is_empty() && memory.durable_through.0 == 0 {
                assert_eq!(records[0].index.0, 1, "{log:?} starts at index 1");
            }
        }
        let dropped = |droppable: usize| source.up_to(droppable as u64) as usize;
        self.storage.execute(request, dropped);
    }

    fn pick_client(&self, source: &mut ByteSource) -> Option<ConnId> {
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        source.pick(&conns).copied()
    }

    fn connect(&mut self, source: &mut ByteSource) {
        if self.clients.len() >= CLIENTS_MAX {
            let closing = self.clients.iter().find(|(_, client)| client.closing);
            let Some(conn) = closing.map(|(conn, _)| *conn) else {
                return;
            };
            self.clients.remove(&conn);
            self.input(Input::ClientDisconnected { conn }, source);
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let client = Client {
            closing: false,
            reading: true,
            asked: BTreeMap::new(),
            known: Known::default(),
        };
        self.clients.insert(conn, client);
        self.input(Input::ClientConnected { conn }, source);
        if source.chance(232) {
            let hello = client_frame::Body::Hello(requests::hello(source));
            let request_id = self.fresh_request_id();
            self.send_frame(conn, request_id, Some(hello), source);
        }
    }

    fn disconnect(&mut self, source: &mut ByteSource) {
        if let Some(conn) = self.pick_client(source) {
            self.clients.remove(&conn);
            self.input(Input::ClientDisconnected { conn }, source);
        }
    }

    fn fresh_request_id(&mut self) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        request_id
    }

    fn send_request(&mut self, source: &mut ByteSource) {
        let Some(conn) = self.pick_client(source) else {
            return self.connect(source);
        };
        let request_id = match source.chance(8) {
            true => 0,
            false => self.fresh_request_id(),
        };
        let body = match source.chance(4) {
            true => None,
            false => {
                let known = &self.clients[&conn].known;
                Some(requests::client_request(source, known, &self.sequences))
            }
        };
        self.send_frame(conn, request_id, body, source);
    }

    fn send_frame(
        &mut self,
        conn: ConnId,
        request_id: u64,
        body: Option<client_frame::Body>,
        source: &mut ByteSource,
    ) {
        let frame = ClientFrame { request_id, body };
        self.expect_answer(conn, request_id);
        let body = Bytes::from(frame.encode_to_vec());
        self.input(Input::ClientFrame { conn, body }, source);
    }

    /// Counts a request the node must answer (a closing connection's frames are ignored).
    fn expect_answer(&mut self, conn: ConnId, request_id: u64) {
        let client = self
            .clients
            .get_mut(&conn)
            .expect("sending on a live connection");
        if request_id != 0 && !client.closing {
            *client.asked.entry(request_id).or_default() += 1;
        }
    }

    fn send_garbage(&mut self, source: &mut ByteSource) {
        let Some(conn) = self.pick_client(source) else {
            return;
        };
        let length = source.up_to(40) as usize;
        let body = Bytes::copy_from_slice(source.take(length));
        // Garbage can decode, and then it is a request like any other.
        if let Ok(frame) = ClientFrame::decode(body.clone()) {
            self.expect_answer(conn, frame.request_id);
        }
        self.input(Input::ClientFrame { conn, body }, source);
    }

    fn stream_error(&mut self, source: &mut ByteSource) {
        if let Some(conn) = self.pick_client(source) {
            let reason = "frame of 9999999 bytes exceeds the maximum".to_string();
            self.input(Input::ClientStreamError { conn, reason }, source);
        }
    }

    fn advance_time(&mut self, source: &mut ByteSource) {
        let step = match source.below(4) {
            0 => source.up_to(10),
            1 => source.up_to(1_500),
            2 => source.up_to(20_000),
            _ => 0,
        };
        self.now.monotonic = self.now.monotonic + Millis(step);
        self.now.wall = match source.below(16) {
            0 => UnixMillis(self.now.wall.0.saturating_sub(source.up_to(10_000))),
            1 => self.now.wall + Millis(source.up_to(10_000)),
            _ => self.now.wall + Millis(step),
        };
        self.input(Input::Tick, source);
    }

    fn complete_syncs(&mut self, source: &mut ByteSource) {
        let mut logs: Vec<LogId> = self
            .storage
            .pending_syncs
            .iter()
            .map(|(log, _)| *log)
            .collect();
        logs.dedup();
        let chosen = match source.chance(64) {
            true => None,
            false => source.pick(&logs).copied(),
        };
        let completions = self
            .storage
            .complete_syncs_of(|log| chosen.is_none_or(|chosen| chosen == log));
        for done in completions {
            self.input(Input::StorageDone(done), source);
        }
        self.complete_reads(source);
    }

    /// Answers the reads asked for so far, with the records still in memory.
    fn complete_reads(&mut self, source: &mut ByteSource) {
        for done in self.storage.complete_reads() {
            self.input(Input::StorageDone(done), source);
        }
    }

    fn fail_storage(&mut self, source: &mut ByteSource) {
        let logs: Vec<LogId> = self.storage.logs.keys().copied().collect();
        if let Some(log) = source.pick(&logs).copied() {
            let reason = "could not fsync: input/output error".to_string();
            self.input(
                Input::StorageDone(StorageDone::Failed { log, reason }),
                source,
            );
        }
    }

    fn admin(&mut self, source: &mut ByteSource) {
        let tag = self.next_admin;
        self.next_admin += 1;
        self.admin_waiting.insert(tag);
        let http = requests::admin_request(source);
        self.note(|| format!("admin {tag} {http:?}"));
        let responder = self.mailbox.responder(tag);
        self.router
            .on_event(self.now, Event::Admin { http, responder });
        self.drain(source);
    }

    /// The process dies: connections and pending work are gone, and each log loses some suffix
    /// of what was not synced.
    fn crash(&mut self, source: &mut ByteSource) {
        self.note(|| "crash".to_string());
        self.storage
            .crash(|unsynced| source.up_to(unsynced as u64) as usize);
        self.clients.clear();
        self.admin_waiting.clear();
    }

    fn recover(&mut self) -> Result<Node, RecoveryError> {
        self.note(|| "restart".to_string());
        let recovered: Recovered = self.storage.recovered();
        self.now.monotonic = self.now.monotonic + Millis(1);
        Node::new(self.config.clone(), recovered, self.seed, self.now)
    }

    /// Runs `node` from now on: a new process, with a new router and mailbox.
    fn run(&mut self, node: Node) {
        self.router = MailboxRouter::new(node);
        self.mailbox = Mailbox::default();
    }

    fn restart(&mut self, source: &mut ByteSource) {
        self.crash(source);
        match self.recover() {
            Ok(node) => self.run(node),
            Err(error) => panic!("a node restarts from the records it wrote: {error}"),
        }
        self.drain(source);
    }

    /// A crash after which one record holds other bytes (with a valid checksum, as if written
    /// so). The node must refuse to start or start consistent; after a refusal the original
    /// record is put back and the node must start.
    fn restart_with_replaced_record(&mut self, source: &mut ByteSource) -> bool {
        self.crash(source);
        let logs: Vec<LogId> = self.storage.logs.keys().copied().collect();
        let chosen = source.pick(&logs).copied();
        let logs = &mut self.storage.logs;
        let Some((log, memory)) = chosen.and_then(|log| Some((log, logs.get_mut(&log)?))) else {
            return self.restart_after_crash(source);
        };
        if memory.records.is_empty() {
            return self.restart_after_crash(source);
        }
        let position = source.below(memory.records.len());
        let length = source.up_to(48) as usize;
        let replacement = Bytes::copy_from_slice(source.take(length));
        let original = std::mem::replace(&mut memory.records[position].body, replacement.clone());
        self.note(|| format!("record {position} of {log:?} now holds {replacement:?}"));
        match self.recover() {
            Ok(node) => {
                self.tainted = true;
                self.run(node);
                self.drain(source);
                true
            }
            Err(error) => {
                assert!(!error.to_string().is_empty(), "a refusal says why");
                let memory = self.storage.logs.get_mut(&log).expect("chosen above");
                memory.records[position].body = original;
                self.restart_after_crash(source)
            }
        }
    }

    fn restart_after_crash(&mut self, source: &mut ByteSource) -> bool {
        match self.recover() {
            Ok(node) => {
                self.run(node);
                self.drain(source);
                true
            }
            Err(_) if self.tainted => false,
            Err(error) => panic!("a node restarts from the records it wrote: {error}"),
        }
    }

    /// The end of a run: the clients told to go go, storage completes everything, time passes
    /// every lease and fetch, and then every request must have had its answer.
    fn quiesce(&mut self, source: &mut ByteSource) {
        let closing: Vec<ConnId> = self
            .clients
            .iter()
            .filter(|(_, client)| client.closing)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in closing {
            self.clients.remove(&conn);
            self.input(Input::ClientDisconnected { conn }, source);
            self.check();
        }
        let limits = &self.config.limits;
        let long_enough = Millis(limits.max_fetch_wait_ms + limits.max_ack_timeout_ms + 1);
        for _ in 0..QUIESCE_ROUNDS_MAX {
            while self.storage.has_pending() {
                for done in self.storage.complete_syncs() {
                    self.input(Input::StorageDone(done), source);
                    self.check();
                }
                self.complete_reads(source);
                self.check();
            }
            let unanswered = self.clients.values().any(|client| !client.asked.is_empty());
            if !unanswered && self.admin_waiting.is_empty() {
                return;
            }
            self.now.monotonic = self.now.monotonic + long_enough;
            self.now.wall = self.now.wall + long_enough;
            self.input(Input::Tick, source);
            self.check();
        }
        let unanswered: Vec<(&ConnId, &BTreeMap<u64, u32>)> = self
            .clients
            .iter()
            .map(|(conn, client)| (conn, &client.asked))
            .filter(|(_, asked)| !asked.is_empty())
            .collect();
        panic!(
            "requests never answered: {unanswered:?}, admin requests: {:?}",
            self.admin_waiting
        );
    }
}
