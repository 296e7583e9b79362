//! A crate-private harness for tests: one node behind the command router, the in-memory
//! storage, scripted clients, virtual time.
//!
//! Storage completes syncs when the harness is told to (`sync_automatically`, or
//! `complete_syncs`), so tests can check that nothing is confirmed before its fsync. A restart
//! keeps only what was synced, like a crash.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use krest_proto::client::{self as wire, client_frame, server_frame, ClientFrame, ServerFrame};
use krest_proto::frame::{encode_frame, FrameDecoder};

use crate::config::Config;
use crate::ids::ConnId;
use crate::io::{AdminHttpRequest, Input, LogId, Recovered};
use crate::memory_storage::MemoryStorage;
use crate::node::Node;
use crate::router::{Event, Mailbox, MailboxRouter, Outbound};
use crate::time::{Instant, Now, UnixMillis};

/// One node under test.
pub struct Harness {
    pub router: MailboxRouter,
    pub mailbox: Mailbox,
    pub config: Config,
    pub now: Now,
    pub storage: MemoryStorage,
    pub sync_automatically: bool,
    pub inbox: BTreeMap<ConnId, Vec<ServerFrame>>,
    pub closed: Vec<ConnId>,
    pub reading_paused: BTreeMap<ConnId, bool>,
    pub admin: BTreeMap<u64, (u16, Vec<u8>)>,
    next_conn: u64,
    next_request: u64,
    next_admin: u64,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        let now = Now {
            monotonic: Instant(1_000),
            wall: UnixMillis(1_700_000_000_000),
        };
        let node = Node::new(config.clone(), Recovered::default(), 7, now).expect("empty recovery");
        let mut harness = Harness {
            router: MailboxRouter::new(node),
            mailbox: Mailbox::default(),
            config,
            now,
            storage: MemoryStorage::default(),
            sync_automatically: true,
            inbox: BTreeMap::new(),
            closed: Vec::new(),
            reading_paused: BTreeMap::new(),
            admin: BTreeMap::new(),
            next_conn: 1,
            next_request: 1,
            next_admin: 1,
        };
        harness.run_until_quiet();
        harness
    }

    pub fn default_config() -> Harness {
        Harness::new(Config::default())
    }

    /// The node under test.
    pub fn node(&self) -> &Node {
        self.router.node()
    }

    /// Runs `node` from now on, as after a restart: no connection survives.
    pub fn replace_node(&mut self, node: Node) {
        self.router = MailboxRouter::new(node);
        self.run_until_quiet();
    }

    /// Feeds one input and carries out everything it causes (syncing if automatic).
    pub fn input(&mut self, input: Input) {
        self.router.on_input(self.now, input, &self.mailbox);
        self.run_until_quiet();
    }

    /// Routes what the router collected, runs storage, feeds completions and disconnects back,
    /// until nothing more happens.
    fn run_until_quiet(&mut self) {
        loop {
            let mut disconnects = Vec::new();
            let mail = self.mailbox.take();
            for (conn, message) in mail.to_connections {
                match message {
                    Outbound::Frame(frame) => self.receive(conn, &frame),
                    Outbound::Close { .. } => {
                        self.closed.push(conn);
                        disconnects.push(conn);
                    }
                    Outbound::Reading(enabled) => {
                        self.reading_paused.insert(conn, !enabled);
                    }
                }
            }
            for (tag, answer) in mail.admin_answers {
                self.admin.insert(tag, (answer.status, answer.body));
            }
            let requests = self.router.take_storage_requests();
            let done = self.storage.run(requests, self.sync_automatically);
            if done.is_empty() && disconnects.is_empty() {
                return;
            }
            self.router.on_storage_done(self.now, done);
            for conn in disconnects {
                let input = Input::ClientDisconnected { conn };
                self.router.on_event(self.now, Event::Input(input));
            }
        }
    }

    fn receive(&mut self, conn: ConnId, frame: &[u8]) {
        let mut buffer = BytesMut::from(frame);
        let mut decoder = FrameDecoder::new(u32::MAX);
        while let Some(decoded) = decoder
            .decode_message::<ServerFrame>(&mut buffer)
            .expect("server frames decode")
        {
            self.inbox.entry(conn).or_default().push(decoded);
        }
    }

    /// Completes every requested sync.
    pub fn complete_syncs(&mut self) {
        let done = self.storage.complete_syncs();
        self.router.on_storage_done(self.now, done);
        self.run_until_quiet();
    }

    /// Completes the syncs requested so far of `logs` only; the others stay pending.
    pub fn complete_syncs_of(&mut self, logs: &[LogId]) {
        let done = self.storage.complete_syncs_of(|log| logs.contains(&log));
        self.router.on_storage_done(self.now, done);
        self.run_until_quiet();
    }

    /// The logs with a sync pending.
    pub fn pending_syncs(&self) -> Vec<LogId> {
        self.storage
            .pending_syncs
            .iter()
            .map(|(log, _)| *log)
            .collect()
    }

    /// Crash and restart: unsynced records are lost, connections are gone.
    pub fn restart(&mut self) {
        self.storage.crash(|unsynced| unsynced);
        self.now.monotonic = Instant(self.now.monotonic.0 + 1);
        let recovered = self.storage.recovered();
        let node = Node::new(self.config.clone(), recovered, 7, self.now).expect("recovery");
        self.inbox.clear();
        self.replace_node(node);
    }

    pub fn advance(&mut self, milliseconds: u64) {
        self.now.monotonic.0 += milliseconds;
        self.now.wall.0 += milliseconds;
        self.input(Input::Tick);
    }

    /// Connects and says Hello with `producer_id`.
    pub fn connect(&mut self, producer_id: u64) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.input(Input::ClientConnected { conn });
        let reply = self.call(
            conn,
            client_frame::Body::Hello(wire::Hello {
                protocol_version: krest_proto::PROTOCOL_VERSION,
                client_name: "test".into(),
                producer_id,
            }),
        );
        assert!(
            matches!(reply, Some(server_frame::Body::HelloOk(_))),
            "{reply:?}"
        );
        conn
    }

    /// Sends a request; returns its id.
    pub fn send(&mut self, conn: ConnId, body: client_frame::Body) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        let mut bytes = BytesMut::new();
        encode_frame(
            &ClientFrame {
                request_id,
                body: Some(body),
            },
            &mut bytes,
        );
        let body = Bytes::copy_from_slice(&bytes[4..]);
        self.input(Input::ClientFrame { conn, body });
        request_id
    }

    /// The reply to `request_id`, if it arrived (taken out of the inbox).
    pub fn take_reply(&mut self, conn: ConnId, request_id: u64) -> Option<server_frame::Body> {
        let inbox = self.inbox.entry(conn).or_default();
        let position = inbox
            .iter()
            .position(|frame| frame.request_id == request_id)?;
        inbox.remove(position).body
    }

    /// Sends a request and returns its reply (if it came at once).
    pub fn call(&mut self, conn: ConnId, body: client_frame::Body) -> Option<server_frame::Body> {
        let request_id = self.send(conn, body);
        self.take_reply(conn, request_id)
    }

    /// Takes every pushed delivery for `conn`.
    pub fn take_pushed(&mut self, conn: ConnId) -> Vec<(u64, wire::Delivery)> {
        let inbox = self.inbox.entry(conn).or_default();
        let mut taken = Vec::new();
        inbox.retain(|frame| match &frame.body {
            Some(server_frame::Body::Deliveries(batch)) if frame.request_id == 0 => {
                taken.extend(
                    batch
                        .deliveries
                        .iter()
                        .map(|delivery| (batch.subscription_id, delivery.clone())),
                );
                false
            }
            _ => true,
        });
        taken
    }

    pub fn admin(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let tag = self.next_admin;
        self.next_admin += 1;
        let http = AdminHttpRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            body: body.as_bytes().to_vec(),
        };
        let responder = self.mailbox.responder(tag);
        self.router
            .on_event(self.now, Event::Admin { http, responder });
        self.run_until_quiet();
        let (status, body) = self.admin.remove(&tag).expect("admin answered");
        (status, String::from_utf8(body).expect("utf-8"))
    }

    // --- conveniences -------------------------------------------------------------------

    pub fn declare(
        &mut self,
        conn: ConnId,
        name: &str,
        settings: wire::QueueSettings,
    ) -> Option<server_frame::Body> {
        self.call(
            conn,
            client_frame::Body::DeclareQueue(wire::DeclareQueue {
                name: name.into(),
                settings: Some(settings),
            }),
        )
    }

    pub fn publish(
        &mut self,
        conn: ConnId,
        queue: &str,
        messages: Vec<wire::OutgoingMessage>,
    ) -> u64 {
        self.send(
            conn,
            client_frame::Body::Publish(wire::Publish {
                queue: queue.into(),
                messages,
            }),
        )
    }

    pub fn subscribe(&mut self, conn: ConnId, request: wire::Subscribe) -> u64 {
        match self.call(conn, client_frame::Body::Subscribe(request)) {
            Some(server_frame::Body::SubscribeOk(ok)) => ok.subscription_id,
            other => panic!("subscribe failed: {other:?}"),
        }
    }

    pub fn settle(
        &mut self,
        conn: ConnId,
        subscription_id: u64,
        action: wire::SettleAction,
        tags: Vec<wire::DeliveryTag>,
    ) -> Option<server_frame::Body> {
        self.call(
            conn,
            client_frame::Body::Settle(wire::Settle {
                subscription_id,
                action: action as i32,
                tags,
                delay_ms: 0,
                extend_ms: 0,
            }),
        )
    }

    pub fn synced_records(&self, log: LogId) -> usize {
        let memory = self.storage.logs.get(&log);
        memory.map_or(0, |memory| memory.durable_records().len())
    }
}

/// A message with a body and nothing else.
pub fn message(body: &str) -> wire::OutgoingMessage {
    wire::OutgoingMessage {
        payload: Bytes::copy_from_slice(body.as_bytes()),
        ..Default::default()
    }
}

/// Settings of a queue of this kind, defaults otherwise.
pub fn kind(kind: wire::QueueKind) -> wire::QueueSettings {
    wire::QueueSettings {
        kind: kind as i32,
        ..Default::default()
    }
}

/// The error code of a reply, if it is an error.
pub fn error_code(reply: &Option<server_frame::Body>) -> Option<wire::ErrorCode> {
    match reply {
        Some(server_frame::Body::Error(error)) => wire::ErrorCode::try_from(error.code).ok(),
        _ => None,
    }
}

/// The bodies of deliveries, as text.
pub fn bodies(deliveries: &[(u64, wire::Delivery)]) -> Vec<String> {
    deliveries
        .iter()
        .map(|(_, delivery)| String::from_utf8_lossy(&delivery.payload).into_owned())
        .collect()
}

/// A delivery's tag.
pub fn tag(delivery: &wire::Delivery) -> wire::DeliveryTag {
    delivery.tag.expect("deliveries carry tags")
}
