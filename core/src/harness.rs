//! A crate-private harness for tests: one node, in-memory logs, scripted clients, virtual time.
//!
//! Storage completes syncs when the harness is told to (`sync_automatically`, or
//! `complete_syncs`), so tests can check that nothing is confirmed before its fsync. A restart
//! keeps only what was synced, like a crash.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use krest_proto::client::{self as wire, client_frame, server_frame, ClientFrame, ServerFrame};
use krest_proto::frame::{encode_frame, FrameDecoder};

use crate::config::Config;
use crate::ids::{AdminRequestId, ConnId};
use crate::io::{
    AdminHttpRequest, Command, Input, LogId, LogRecord, Recovered, StorageDone, StorageRequest,
};
use crate::node::Node;
use crate::time::{Instant, Now, UnixMillis};

/// A log kept in memory: appended records and how many of them are synced.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    pub records: Vec<LogRecord>,
    pub synced: usize,
}

/// One node under test.
pub struct Harness {
    pub node: Node,
    pub config: Config,
    pub now: Now,
    pub logs: BTreeMap<LogId, MemoryLog>,
    pub pending_syncs: VecDeque<LogId>,
    pub sync_automatically: bool,
    pub inbox: BTreeMap<ConnId, Vec<ServerFrame>>,
    pub closed: Vec<ConnId>,
    pub reading_paused: BTreeMap<ConnId, bool>,
    pub admin: BTreeMap<AdminRequestId, (u16, Vec<u8>)>,
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
            node,
            config,
            now,
            logs: BTreeMap::new(),
            pending_syncs: VecDeque::new(),
            sync_automatically: true,
            inbox: BTreeMap::new(),
            closed: Vec::new(),
            reading_paused: BTreeMap::new(),
            admin: BTreeMap::new(),
            next_conn: 1,
            next_request: 1,
            next_admin: 1,
        };
        harness.drain();
        harness
    }

    pub fn default_config() -> Harness {
        Harness::new(Config::default())
    }

    /// Feeds one input and executes every command (syncing if automatic).
    pub fn input(&mut self, input: Input) {
        self.node.handle(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            while let Some(command) = self.node.poll_command() {
                self.execute(command);
            }
            if !self.sync_automatically || self.pending_syncs.is_empty() {
                return;
            }
            self.complete_syncs();
        }
    }

    /// Completes every requested sync.
    pub fn complete_syncs(&mut self) {
        while let Some(log) = self.pending_syncs.pop_front() {
            self.complete_sync(log);
        }
    }

    /// Completes the syncs requested so far of `logs` only; the others stay pending.
    pub fn complete_syncs_of(&mut self, logs: &[LogId]) {
        let (now, later) = self
            .pending_syncs
            .drain(..)
            .partition(|log| logs.contains(log));
        self.pending_syncs = later;
        for log in now {
            self.complete_sync(log);
        }
    }

    fn complete_sync(&mut self, log: LogId) {
        let Some(memory) = self.logs.get_mut(&log) else {
            return;
        };
        memory.synced = memory.records.len();
        let Some(last) = memory.records.last() else {
            return;
        };
        let through = last.index;
        self.node.handle(
            self.now,
            Input::StorageDone(StorageDone::Synced { log, through }),
        );
        while let Some(command) = self.node.poll_command() {
            self.execute(command);
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::SendToClient { conn, frame } => {
                let mut buffer = BytesMut::from(&frame[..]);
                let mut decoder = FrameDecoder::new(u32::MAX);
                while let Some(decoded) = decoder
                    .decode_message::<ServerFrame>(&mut buffer)
                    .expect("server frames decode")
                {
                    self.inbox.entry(conn).or_default().push(decoded);
                }
            }
            Command::CloseClient { conn, .. } => {
                self.closed.push(conn);
                self.node
                    .handle(self.now, Input::ClientDisconnected { conn });
            }
            Command::SetReading { conn, enabled } => {
                self.reading_paused.insert(conn, !enabled);
            }
            Command::Storage(request) => self.execute_storage(request),
            Command::AdminResponse {
                request,
                status,
                body,
                ..
            } => {
                self.admin.insert(request, (status, body));
            }
        }
    }

    fn execute_storage(&mut self, request: StorageRequest) {
        match request {
            StorageRequest::CreateLog { log } => {
                self.logs.entry(log).or_default();
            }
            StorageRequest::Append { log, records } => {
                let memory = self.logs.get_mut(&log).expect("append to a created log");
                for record in records {
                    if let Some(last) = memory.records.last() {
                        assert_eq!(
                            record.index,
                            last.index.next(),
                            "log indexes are consecutive"
                        );
                    }
                    memory.records.push(record);
                }
            }
            StorageRequest::Sync { log } => self.pending_syncs.push_back(log),
            StorageRequest::Read { log, indexes } => {
                let records = self.logs.get(&log).map_or_else(Vec::new, |memory| {
                    memory
                        .records
                        .iter()
                        .filter(|record| indexes.contains(&record.index))
                        .cloned()
                        .collect()
                });
                self.node.handle(
                    self.now,
                    Input::StorageDone(StorageDone::Read { log, records }),
                );
                while let Some(command) = self.node.poll_command() {
                    self.execute(command);
                }
            }
            StorageRequest::DeleteSegmentsBelow { .. } => {}
            StorageRequest::DeleteLog { log } => {
                self.logs.remove(&log);
            }
        }
    }

    /// Crash and restart: unsynced records are lost, connections are gone.
    pub fn restart(&mut self) {
        for memory in self.logs.values_mut() {
            memory.records.truncate(memory.synced);
        }
        let recovered = Recovered {
            logs: self
                .logs
                .iter()
                .map(|(log, memory)| (*log, memory.records.clone()))
                .collect(),
        };
        self.now.monotonic = Instant(self.now.monotonic.0 + 1);
        self.node = Node::new(self.config.clone(), recovered, 7, self.now).expect("recovery");
        self.pending_syncs.clear();
        self.inbox.clear();
        self.drain();
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
        let request = AdminRequestId(self.next_admin);
        self.next_admin += 1;
        self.input(Input::Admin {
            request,
            http: AdminHttpRequest {
                method: method.into(),
                path: path.into(),
                query: String::new(),
                body: body.as_bytes().to_vec(),
            },
        });
        let (status, body) = self.admin.remove(&request).expect("admin answered");
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
        self.logs.get(&log).map(|memory| memory.synced).unwrap_or(0)
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
