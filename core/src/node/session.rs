//! Client connections: the handshake, frame decoding and routing, error frames, flow control,
//! and cleanup when a connection goes.
//!
//! A connection must open with `Hello`; anything else first, a frame that does not decode, or a
//! stream error from the runtime gets one error frame and a close. Every request is answered
//! exactly once.

use std::collections::BTreeSet;

use bytes::Bytes;
use krest_proto::client::{client_frame, server_frame, ClientFrame, ErrorCode, HelloOk, Pong};
use prost::Message as _;

use super::Node;
use crate::ids::{ConnId, ConsumerId, ProducerId, QueueId, SubscriptionId};
use crate::io::Command;
use crate::queue::AckMode;
use crate::time::Instant;

/// A client connection.
#[derive(Debug, Default)]
pub(super) struct Connection {
    /// Set by Hello; frames before it are refused.
    pub greeted: bool,
    /// The producer identity from Hello, if any.
    pub producer: Option<ProducerId>,
    /// Consumers this connection opened.
    pub consumers: BTreeSet<ConsumerId>,
    /// Publishes accepted and not yet confirmed.
    pub unconfirmed: u32,
    /// Whether the runtime is reading from the socket.
    pub reading: bool,
    /// A close was requested; further frames are ignored.
    pub closing: bool,
}

/// A waiting fetch.
#[derive(Debug, Clone)]
pub(super) struct PendingFetch {
    pub request_id: u64,
    pub deadline: Option<Instant>,
    pub deliveries: Vec<krest_proto::client::Delivery>,
}

/// A consumer: which subscription it reads and how.
#[derive(Debug, Clone)]
pub(super) struct ConsumerRecord {
    pub conn: ConnId,
    pub queue: QueueId,
    pub subscription: SubscriptionId,
    pub pull: bool,
    pub ack_mode: AckMode,
    pub fetch: Option<PendingFetch>,
}

/// A failed request: the code and a sentence for the client.
pub(super) type RequestError = (ErrorCode, String);

impl Node {
    pub(super) fn on_client_connected(&mut self, conn: ConnId) {
        assert!(
            !self.connections.contains_key(&conn),
            "the runtime reused connection id {conn}"
        );
        self.counters.connections_opened += 1;
        self.connections.insert(
            conn,
            Connection {
                reading: true,
                ..Connection::default()
            },
        );
    }

    pub(super) fn on_client_frame(&mut self, conn: ConnId, body: Bytes) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if connection.closing {
            return;
        }
        let greeted = connection.greeted;
        let frame = match ClientFrame::decode(body) {
            Ok(frame) => frame,
            Err(error) => {
                self.counters.malformed_frames += 1;
                let reason = format!("malformed frame: {error}");
                self.send_error(conn, 0, ErrorCode::MalformedFrame, reason.clone());
                self.close(conn, reason);
                return;
            }
        };
        let request_id = frame.request_id;
        let Some(body) = frame.body else {
            self.send_error(
                conn,
                request_id,
                ErrorCode::InvalidArgument,
                "frame has no body (unknown or missing request type)".into(),
            );
            return;
        };
        match body {
            client_frame::Body::Hello(hello) => self.on_hello(conn, request_id, hello),
            _ if !greeted => {
                let reason = "the first frame of a connection must be Hello".to_string();
                self.send_error(conn, request_id, ErrorCode::InvalidArgument, reason.clone());
                self.close(conn, reason);
            }
            _ if request_id == 0 => {
                self.send_error(
                    conn,
                    0,
                    ErrorCode::InvalidArgument,
                    "request_id must not be 0".into(),
                );
            }
            body => {
                if let Err((code, message)) = self.route(conn, request_id, body, true) {
                    self.send_error(conn, request_id, code, message);
                }
            }
        }
    }

    /// Handles one request; `may_declare`: a subscribe may declare its queue through the
    /// cluster's catalog (it is handled again, without, once that is applied).
    pub(super) fn route(
        &mut self,
        conn: ConnId,
        request_id: u64,
        body: client_frame::Body,
        may_declare: bool,
    ) -> Result<(), RequestError> {
        use client_frame::Body;
        match body {
            Body::Hello(_) => unreachable!("handled before routing"),
            Body::DeclareQueue(request) => self.on_declare(conn, request_id, request),
            Body::DeleteQueue(request) => self.on_delete(conn, request_id, &request.name),
            Body::PurgeQueue(request) => self.on_purge(conn, request_id, &request.name),
            Body::RedriveQueue(request) => self.on_redrive(conn, request_id, request),
            Body::ListQueues(_) => {
                let queues = self.list_queue_infos();
                self.reply(conn, request_id, server_frame::Body::QueueList(queues));
                Ok(())
            }
            Body::GetQueue(request) => {
                let info = self.queue_info_by_name(&request.name)?;
                self.reply(conn, request_id, server_frame::Body::QueueInfo(info));
                Ok(())
            }
            Body::Publish(request) => self.on_publish(conn, request_id, request),
            Body::CancelDelayed(request) => self.on_cancel_delayed(conn, request_id, request),
            Body::Subscribe(request) => self.on_subscribe(conn, request_id, request, may_declare),
            Body::Unsubscribe(request) => self.on_unsubscribe(conn, request_id, request),
            Body::Fetch(request) => self.on_fetch(conn, request_id, request),
            Body::Settle(request) => self.on_settle(conn, request_id, request),
            Body::Credit(request) => self.on_credit(conn, request_id, request),
            Body::Ping(_) => {
                self.reply(conn, request_id, server_frame::Body::Pong(Pong {}));
                Ok(())
            }
        }
    }

    fn on_hello(&mut self, conn: ConnId, request_id: u64, hello: krest_proto::client::Hello) {
        let connection = self.connections.get_mut(&conn).expect("checked by caller");
        if connection.greeted {
            self.send_error(
                conn,
                request_id,
                ErrorCode::InvalidArgument,
                "Hello was already sent on this connection".into(),
            );
            return;
        }
        if hello.protocol_version != krest_proto::PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {} is not supported; this server speaks version {}",
                hello.protocol_version,
                krest_proto::PROTOCOL_VERSION
            );
            self.send_error(
                conn,
                request_id,
                ErrorCode::UnsupportedVersion,
                reason.clone(),
            );
            self.close(conn, reason);
            return;
        }
        connection.greeted = true;
        connection.producer = (hello.producer_id != 0).then_some(ProducerId(hello.producer_id));
        let limits = &self.config.limits;
        let ok = HelloOk {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            node_id: self.node_id.0,
            connection_id: conn.0,
            max_frame_bytes: limits.max_frame_bytes,
            max_message_bytes: limits.max_message_bytes,
        };
        self.reply(conn, request_id, server_frame::Body::HelloOk(ok));
    }

    pub(super) fn on_client_stream_error(&mut self, conn: ConnId, reason: String) {
        if !self.connections.contains_key(&conn) {
            return;
        }
        self.counters.malformed_frames += 1;
        self.send_error(conn, 0, ErrorCode::MalformedFrame, reason.clone());
        self.close(conn, reason);
    }

    pub(super) fn on_client_disconnected(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        for consumer in connection.consumers {
            self.remove_consumer(consumer);
        }
    }

    /// Asks the runtime to close the connection after what was already sent.
    pub(super) fn close(&mut self, conn: ConnId, reason: String) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            if !connection.closing {
                connection.closing = true;
                self.commands
                    .push_back(Command::CloseClient { conn, reason });
            }
        }
    }

    /// Sends one reply frame.
    pub(super) fn reply(&mut self, conn: ConnId, request_id: u64, body: server_frame::Body) {
        let frame = self.encode_reply(request_id, body);
        self.send_frame_bytes(conn, frame);
    }

    /// Sends an error frame.
    pub(super) fn send_error(
        &mut self,
        conn: ConnId,
        request_id: u64,
        code: ErrorCode,
        message: String,
    ) {
        self.counters.request_errors += 1;
        self.reply(
            conn,
            request_id,
            server_frame::Body::Error(krest_proto::client::Error {
                code: code as i32,
                leader_address: match code {
                    ErrorCode::NotLeader => message
                        .rsplit_once(super::cluster::NOT_LEADER_SEPARATOR)
                        .map(|(_, address)| address.to_string())
                        .unwrap_or_default(),
                    _ => String::new(),
                },
                message,
            }),
        );
    }

    /// Counts new unconfirmed publishes; stops reading from the socket at the limit.
    pub(super) fn add_unconfirmed(&mut self, conn: ConnId, count: u32) {
        let limit = self.config.limits.max_unconfirmed_per_connection;
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.unconfirmed += count;
        if connection.reading && connection.unconfirmed >= limit {
            connection.reading = false;
            self.commands.push_back(Command::SetReading {
                conn,
                enabled: false,
            });
        }
    }

    /// Settles confirmed publishes; resumes reading below half the limit.
    pub(super) fn settle_confirms(&mut self, conn: ConnId, count: u32) {
        if count == 0 {
            return;
        }
        let limit = self.config.limits.max_unconfirmed_per_connection;
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.unconfirmed -= count;
        if !connection.reading && connection.unconfirmed <= limit / 2 {
            connection.reading = true;
            self.commands.push_back(Command::SetReading {
                conn,
                enabled: true,
            });
        }
    }
}
