//! What goes into the core ([`Input`]) and what comes out ([`Command`]).
//!
//! The runtime feeds one input at a time to `Node::handle`, then drains every command with
//! `Node::poll_command` and carries them out in order. Commands for one client or one log must be
//! executed in the order they were emitted.

use bytes::Bytes;

use crate::ids::{AdminRequestId, ConnId, LogIndex, NodeId, QueueId, Term};

/// One event for the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// Nothing happened but time passed; timers due at `now` fire. Sent when `poll_timeout`
    /// is reached (spurious ticks are harmless).
    Tick,
    /// A client connected. The runtime chose `conn`, unique while the node runs. Nothing is
    /// sent back until the client's Hello.
    ClientConnected {
        /// The new connection.
        conn: ConnId,
    },
    /// One complete frame body from a client (the length prefix already removed, its bound
    /// checked). The core decodes it; a malformed body gets an error frame and a close.
    ClientFrame {
        /// From whom.
        conn: ConnId,
        /// The protobuf body of a `ClientFrame`.
        body: Bytes,
    },
    /// The runtime's frame decoder refused the byte stream (for example a length over the
    /// maximum). The core answers with an error frame and closes the connection.
    ClientStreamError {
        /// Whose stream.
        conn: ConnId,
        /// What was wrong, for the client.
        reason: String,
    },
    /// The connection is gone (closed by the client, by an error, or after `CloseClient`).
    /// Its unacked deliveries go back to their queues.
    ClientDisconnected {
        /// Which.
        conn: ConnId,
    },
    /// A storage request finished.
    StorageDone(StorageDone),
    /// One complete frame body from the peer link to node `peer` (the link's handshake named
    /// it; the length prefix is removed and its bound checked). A body that does not decode,
    /// or that a correct peer could not have sent, is dropped and counted, never trusted.
    PeerFrame {
        /// The node at the other end of the link.
        peer: NodeId,
        /// The protobuf body of a `PeerFrame` (`peer.proto`).
        body: Bytes,
    },
    /// The link to peer node `peer` came up (`linked`) or went down. The router sends it when
    /// a link task says so; the node reports which peers are reachable.
    PeerLink {
        /// The node at the other end.
        peer: NodeId,
        /// Up or down.
        linked: bool,
    },
    /// An admin HTTP request. Answered with exactly one `Command::AdminResponse`.
    Admin {
        /// Chosen by the runtime, echoed in the response.
        request: AdminRequestId,
        /// The request.
        http: AdminHttpRequest,
    },
}

/// An admin request as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminHttpRequest {
    /// `GET`, `PUT`, `POST`, `DELETE`.
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// Without `?`.
    pub query: String,
    /// The body, JSON where one is expected.
    pub body: Vec<u8>,
}

impl From<krest_proto::http::HttpRequest> for AdminHttpRequest {
    fn from(request: krest_proto::http::HttpRequest) -> AdminHttpRequest {
        AdminHttpRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            body: request.body,
        }
    }
}

/// The result of storage work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageDone {
    /// Every record of `log` up to `through` is durable.
    Synced {
        /// Which log.
        log: LogId,
        /// The last durable index.
        through: LogIndex,
    },
    /// How a sync went, for metrics only (it confirms nothing): how long the fsync took and
    /// the log's size on disk afterwards. Storage sends it after the `Synced` it describes.
    Measured {
        /// Which log.
        log: LogId,
        /// The fsync's duration in microseconds.
        sync_micros: u64,
        /// Bytes of the log's segment files.
        log_bytes: u64,
    },
    /// The records a `Read` asked for, in index order. Indexes the log no longer holds (a
    /// log deleted in the meantime) are left out.
    Read {
        /// Which log.
        log: LogId,
        /// The records read, each checked against its checksum.
        records: Vec<LogRecord>,
    },
    /// A [`StorageRequest::Persist`] is done: everything it covers is durable.
    Persisted {
        /// Which log.
        log: LogId,
        /// The request's token.
        token: u64,
    },
    /// A request on `log` failed. The node fences itself: it confirms nothing from now on.
    Failed {
        /// Which log.
        log: LogId,
        /// What the storage reported, for operators.
        reason: String,
    },
}

/// One action for the runtime.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write `frame` (a complete frame, length prefix included) to the client. If the client
    /// is gone, drop it.
    SendToClient {
        /// To whom.
        conn: ConnId,
        /// The bytes to write.
        frame: Bytes,
    },
    /// Flush what was sent to the client, then close the connection. The runtime reports
    /// `ClientDisconnected` afterwards.
    CloseClient {
        /// Which.
        conn: ConnId,
        /// Why, for the server's log.
        reason: String,
    },
    /// Stop (`false`) or resume (`true`) reading from the client's socket: TCP back-pressure
    /// while its unconfirmed publishes are at the limit.
    SetReading {
        /// Which.
        conn: ConnId,
        /// Whether to read.
        enabled: bool,
    },
    /// Work for the storage thread; completions come back as `Input::StorageDone`.
    Storage(StorageRequest),
    /// Write `frame` (a complete peer frame, length prefix included) to the link to node
    /// `peer`. If there is no link, drop it: the peer protocol tolerates loss.
    SendToPeer {
        /// To which node.
        peer: NodeId,
        /// The bytes to write.
        frame: Bytes,
    },
    /// The answer to `Input::Admin`.
    AdminResponse {
        /// Which request.
        request: AdminRequestId,
        /// HTTP status.
        status: u16,
        /// Content type of `body`.
        content_type: &'static str,
        /// The body.
        body: Vec<u8>,
    },
}

/// A log the core writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogId {
    /// Queue declarations and durable subscriptions.
    Metadata,
    /// One queue's messages, acks and removals.
    Queue(QueueId),
}

impl LogId {
    /// The log's directory name: `meta` or `queue-<id>`.
    pub fn name(&self) -> String {
        match self {
            LogId::Metadata => "meta".into(),
            LogId::Queue(queue) => format!("queue-{}", queue.0),
        }
    }

    /// The inverse of [`LogId::name`].
    pub fn from_name(name: &str) -> Option<LogId> {
        if name == "meta" {
            return Some(LogId::Metadata);
        }
        let digits = name.strip_prefix("queue-")?;
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(|id| LogId::Queue(QueueId(id)))
    }
}

/// One record of a log: its position, its term and an opaque body (a protobuf the core
/// encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The term it was written in.
    pub term: Term,
    /// Its position.
    pub index: LogIndex,
    /// The encoded record.
    pub body: Bytes,
}

/// Work for the storage thread. Requests on one log are executed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRequest {
    /// Create an empty log (a no-op if it exists and is empty).
    CreateLog {
        /// Which.
        log: LogId,
    },
    /// Append records (consecutive indexes following the log's last). Not durable until a
    /// `Sync`; failures are reported as `StorageDone::Failed`.
    Append {
        /// Which log.
        log: LogId,
        /// In index order.
        records: Vec<LogRecord>,
    },
    /// Make every record appended before this request durable, then answer
    /// `StorageDone::Synced`. One fsync may serve many syncs (group commit).
    Sync {
        /// Which log.
        log: LogId,
    },
    /// Read back the records at `indexes` (ascending; appended earlier, synced or not) and
    /// answer `StorageDone::Read`; a record that cannot be read is a `StorageDone::Failed`.
    /// The core asks for the publish records of messages whose payloads it keeps on disk only
    /// (`storage.payload_memory_bytes`), just before delivering them.
    Read {
        /// Which log.
        log: LogId,
        /// The records wanted, in ascending order.
        indexes: Vec<LogIndex>,
    },
    /// Remove every record after `index` (a conflicting suffix a Raft leader overwrites),
    /// durably before anything later is executed: a removed record never comes back after a
    /// crash. Nothing comes back on success; a failure is `StorageDone::Failed`.
    TruncateAfter {
        /// Which log.
        log: LogId,
        /// The last record kept.
        index: LogIndex,
    },
    /// A Raft group's persistence barrier: make every record of `log` appended before this
    /// request durable, and `raft_state` (if given) durable in the log's state file (written
    /// whole, fsynced, renamed over the old one, the directory fsynced), before any record
    /// appended after this request; then answer `StorageDone::Persisted` with `token`. Every
    /// `Persist` gets exactly one answer (or `Failed`), in the order they were asked, so a
    /// group releases its votes and append acknowledgements by token. Unlike `Sync`, it is
    /// answered for an empty log too.
    Persist {
        /// Which log.
        log: LogId,
        /// The term and vote to make durable, if they changed.
        raft_state: Option<RaftState>,
        /// Echoed in the answer.
        token: u64,
    },
    /// Delete segment files whose records all have indexes below `index`.
    DeleteSegmentsBelow {
        /// Which log.
        log: LogId,
        /// The first index still needed.
        index: LogIndex,
    },
    /// Delete the whole log (and its Raft state file, if any).
    DeleteLog {
        /// Which.
        log: LogId,
    },
}

/// What a Raft member must never forget about a log: the latest term it saw and whom it
/// voted for in that term; and how far it knows the log to be committed (it may lag: it only
/// spares a restarted member the wait for a leader before it applies what it had).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RaftState {
    /// The latest term seen.
    pub term: Term,
    /// The vote cast in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// Entries up to here were committed when this was saved.
    pub commit: LogIndex,
}

/// What storage recovered at startup, handed to `Node::new`.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Every log found, with its valid records in index order.
    pub logs: Vec<(LogId, Vec<LogRecord>)>,
    /// The Raft state saved for each log that has one, in log order.
    pub raft_states: Vec<(LogId, RaftState)>,
}
