//! The node: the broker state machine behind the contract of ARCHITECTURE §2.
//!
//! ```text
//! let mut node = Node::new(config, recovered, seed, now)?;
//! node.handle(now, input);                                    // one input at a time
//! while let Some(command) = node.poll_command() { execute(command) }   // drain fully
//! let wake_at = node.poll_timeout();                          // None: no timer armed
//! ```
//!
//! `handle` first fires every timer due at `now`, then applies the input, then dispatches the
//! queues the input touched and hands the new log records to storage: one `Append` and one
//! `Sync` per log per call, so a burst of inputs shares one fsync.
//!
//! Submodules: `persistence` (logs, waiters, confirms), `recovery` (rebuild from the logs),
//! `session` (connections and frame decoding), `requests` (queue administration),
//! `publish`, `consume`, `admin` (HTTP routes and metrics).

mod admin;
mod cluster;
mod consume;
mod idempotency;
mod invariants;
pub(crate) mod moved_dead_letters;
mod payloads;
mod peers;
mod persistence;
mod publish;
mod recovery;
mod redrive;
mod requests;
mod session;
mod storage_metrics;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::Config;
use crate::ids::{ConnId, ConsumerId, NodeId, QueueId, Term};
use crate::io::{Command, Input, LogId, Recovered};
use crate::queue::Queue;
use crate::rng::Rng;
use crate::time::{Instant, Millis, Now};
use crate::timer::{Timer, TimerTable};

pub use cluster::{CatalogQueue, ClusterStatus};
pub use publish::{
    HEADER_DEAD_LETTER_PUBLISHED_AT, HEADER_DEAD_LETTER_REASON, HEADER_DEAD_LETTER_SEQUENCE,
    HEADER_DEAD_LETTER_SOURCE, HEADER_DEAD_LETTER_SUBSCRIPTION,
};
pub use recovery::{NodeRecovery, RecoveryError};

use idempotency::Idempotency;
use persistence::{LogState, Waiters};
use session::{Connection, ConsumerRecord};

/// How often housekeeping runs (it catches wall-clock jumps for delay queues).
const HOUSEKEEPING_INTERVAL: Millis = Millis(1_000);

/// Node-wide counters for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeCounters {
    /// Connections accepted.
    pub connections_opened: u64,
    /// Frames that could not be decoded.
    pub malformed_frames: u64,
    /// Requests answered with an error.
    pub request_errors: u64,
    /// Syncs completed by storage.
    pub syncs_completed: u64,
    /// Peer frames received.
    pub peer_frames_in: u64,
    /// Peer frames that do not decode or that a correct peer could not have sent.
    pub peer_frames_malformed: u64,
    /// Peer frames dropped: malformed, or not expected by this node.
    pub peer_frames_dropped: u64,
    /// Catalog frames sent to peers (Raft messages are counted by the group's driver).
    pub catalog_frames_out: u64,
    /// Their bytes.
    pub catalog_bytes_out: u64,
}

/// One broker node.
pub struct Node {
    config: Config,
    node_id: NodeId,
    #[allow(dead_code)] // kept for election timeouts and sampling; forked per component
    rng: Rng,
    now: Now,
    term: Term,
    queues: BTreeMap<QueueId, Queue>,
    queue_names: BTreeMap<String, QueueId>,
    next_queue_id: u64,
    next_subscription_id: u64,
    next_consumer_id: u64,
    connections: BTreeMap<ConnId, Connection>,
    consumers: BTreeMap<ConsumerId, ConsumerRecord>,
    logs: BTreeMap<LogId, LogState>,
    waiters: Waiters,
    idempotency: Idempotency,
    timers: TimerTable,
    commands: VecDeque<Command>,
    dirty: BTreeSet<QueueId>,
    /// Dead-letter messages whose redrive copies wait for durability: (queue, sequence).
    redriving: BTreeSet<(QueueId, crate::ids::Sequence)>,
    fenced: Option<String>,
    counters: NodeCounters,
    storage_metrics: storage_metrics::StorageMetrics,
    /// Emptied effect vectors kept for the next queue operation (see `take_effects`).
    spare_effects: crate::queue::Effects,
    /// Sum of the queues' `resident_bytes_counted`: durable payload bytes in memory, held
    /// near `storage.payload_memory_bytes` (see `payloads`).
    payload_resident_bytes: u64,
    /// Queues with a subscription stopped at a payload on disk: they get a read.
    payloads_wanted_queues: BTreeSet<QueueId>,
    /// Payload reads done and bytes they brought back, for metrics.
    payload_reads: payloads::PayloadReadCounters,
    /// Redrives waiting for payloads read back from disk.
    parked_redrives: Vec<redrive::ParkedRedrive>,
    /// Encodes records and reply frames into shared blocks (no allocation per message).
    encoder: krest_proto::frame::SharedEncoder,
    /// The metadata group and the catalog, when this node is one of a cluster of several.
    cluster: Option<Box<cluster::ClusterState>>,
    /// When each peer was last heard from (a well-formed frame), by this node's clock.
    peer_heard: BTreeMap<NodeId, Instant>,
    /// Peers with a link up, as the runtime reports.
    peer_links: BTreeSet<NodeId>,
}

impl Node {
    /// Builds the node from its configuration and what storage recovered. Fails if the
    /// recovered records cannot be understood (the runtime reports it and exits).
    pub fn new(
        config: Config,
        recovered: Recovered,
        seed: u64,
        now: Now,
    ) -> Result<Node, RecoveryError> {
        let mut recovery = Node::recovering(config, seed, now)?;
        for (log, state) in recovered.raft_states {
            recovery.raft_state(log, state);
        }
        // The metadata log first, as storage lists it (`meta` sorts before `queue-*`).
        let (metadata, queue_logs): (Vec<_>, Vec<_>) = recovered
            .logs
            .into_iter()
            .partition(|(log, _)| *log == LogId::Metadata);
        for (log, records) in metadata.into_iter().chain(queue_logs) {
            recovery.feed(log, records);
        }
        recovery.finish()
    }

    /// Starts building the node from logs handed over piece by piece ([`NodeRecovery`]), so
    /// that a backlog larger than memory is never held whole: storage hands each segment's
    /// records over as it reads them.
    pub fn recovering(config: Config, seed: u64, now: Now) -> Result<NodeRecovery, RecoveryError> {
        config
            .validate()
            .map_err(|error| RecoveryError::Config(error.to_string()))?;
        let node = Node {
            node_id: NodeId(config.server.node_id),
            idempotency: Idempotency::new(
                config.limits.idempotency_window_per_producer,
                config.limits.max_idempotent_producers,
            ),
            config,
            rng: Rng::from_seed(seed),
            now,
            term: Term(1),
            queues: BTreeMap::new(),
            queue_names: BTreeMap::new(),
            next_queue_id: 1,
            next_subscription_id: 1,
            next_consumer_id: 1,
            connections: BTreeMap::new(),
            consumers: BTreeMap::new(),
            logs: BTreeMap::new(),
            waiters: Waiters::default(),
            timers: TimerTable::default(),
            commands: VecDeque::new(),
            dirty: BTreeSet::new(),
            redriving: BTreeSet::new(),
            fenced: None,
            counters: NodeCounters::default(),
            storage_metrics: storage_metrics::StorageMetrics::default(),
            spare_effects: crate::queue::Effects::default(),
            payload_resident_bytes: 0,
            payloads_wanted_queues: BTreeSet::new(),
            payload_reads: payloads::PayloadReadCounters::default(),
            parked_redrives: Vec::new(),
            encoder: krest_proto::frame::SharedEncoder::new(),
            cluster: None,
            peer_heard: BTreeMap::new(),
            peer_links: BTreeSet::new(),
        };
        Ok(NodeRecovery::new(node))
    }

    /// The end of recovery: housekeeping armed, and the first commands (log creations, acks
    /// of messages every subscription had acked) out.
    fn recovered(mut self) -> Node {
        let now = self.now;
        self.timers
            .arm(now.monotonic + HOUSEKEEPING_INTERVAL, Timer::Housekeeping);
        self.flush();
        self
    }

    /// Applies one input at `now` (timers due at `now` fire first).
    pub fn handle(&mut self, now: Now, input: Input) {
        assert!(
            now.monotonic >= self.now.monotonic,
            "monotonic time went backwards: {:?} after {:?}",
            now.monotonic,
            self.now.monotonic
        );
        assert!(
            self.commands.is_empty(),
            "the drive contract: poll_command is drained to empty after every handle, before \
             the next input ({} commands left)",
            self.commands.len()
        );
        self.now = now;
        self.fire_timers();
        match input {
            Input::Tick => {}
            Input::ClientConnected { conn } => self.on_client_connected(conn),
            Input::ClientFrame { conn, body } => self.on_client_frame(conn, body),
            Input::ClientStreamError { conn, reason } => self.on_client_stream_error(conn, reason),
            Input::ClientDisconnected { conn } => self.on_client_disconnected(conn),
            Input::StorageDone(done) => self.on_storage_done(done),
            Input::PeerFrame { peer, body } => self.on_peer_frame(peer, body),
            Input::PeerLink { peer, linked } => {
                if linked {
                    self.peer_links.insert(peer);
                } else {
                    self.peer_links.remove(&peer);
                }
            }
            Input::Admin { request, http } => self.on_admin_request(request, http),
        }
        self.flush();
    }

    /// The next command for the runtime; call until `None` after every `handle`.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When the core next needs a `Tick`; `None` if no timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.cluster_timeout()) {
            (Some(timer), Some(group)) => Some(timer.min(group)),
            (timer, group) => timer.or(group),
        }
    }

    /// The node-wide counters behind the metrics.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Why the node is fenced, if it is (a storage failure: it confirms nothing any more).
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A queue by name (for tests and tools).
    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queue_names.get(name).map(|id| &self.queues[id])
    }

    /// Every queue (for tests and tools).
    pub fn queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values()
    }

    fn fire_timers(&mut self) {
        self.tick_cluster();
        while let Some(timer) = self.timers.pop_due(self.now.monotonic) {
            match timer {
                Timer::CatalogWait { token } => self.on_catalog_deadline(token),
                Timer::Lease {
                    queue,
                    subscription,
                } => {
                    let now = self.now;
                    self.with_queue(queue, |queue, effects| {
                        queue.leases_due(subscription, now, effects)
                    });
                }
                Timer::Redelivery {
                    queue,
                    subscription,
                    sequence,
                } => {
                    let now = self.now;
                    if let Some(queue_state) = self.queues.get_mut(&queue) {
                        queue_state.redelivery_due(subscription, sequence, now);
                        self.dirty.insert(queue);
                    }
                }
                Timer::DelayDue { queue } => {
                    if let Some(queue_state) = self.queues.get_mut(&queue) {
                        queue_state.delay_timer = None;
                        self.dirty.insert(queue);
                    }
                }
                Timer::FetchWait { consumer } => self.on_fetch_wait_over(consumer),
                Timer::Housekeeping => {
                    let delay_queues: Vec<QueueId> = self
                        .queues
                        .values()
                        .filter(|queue| queue.is_delay())
                        .map(|queue| queue.id)
                        .collect();
                    self.dirty.extend(delay_queues);
                    self.timers.arm(
                        self.now.monotonic + HOUSEKEEPING_INTERVAL,
                        Timer::Housekeeping,
                    );
                }
            }
        }
    }

    /// Runs `operation` on a queue and applies its effects; marks the queue for dispatch.
    /// Returns the last index appended to the queue's log, if any.
    fn with_queue(
        &mut self,
        queue: QueueId,
        operation: impl FnOnce(&mut Queue, &mut crate::queue::Effects),
    ) -> Option<crate::ids::LogIndex> {
        let mut effects = self.take_effects();
        let queue_state = self.queues.get_mut(&queue)?;
        operation(queue_state, &mut effects);
        self.dirty.insert(queue);
        self.apply_effects(queue, effects)
    }

    /// End of a `handle`: deliver what became deliverable, then hand records to storage.
    fn flush(&mut self) {
        self.drain_cluster();
        while let Some(queue) = self.dirty.pop_first() {
            self.dispatch_queue(queue);
        }
        // Dispatch may have proposed (a dead-letter queue's declaration).
        self.drain_cluster();
        self.flush_logs();
        // After the appends: a payload leaves memory only once its record is on its way to
        // storage, and a read is ordered after the appends of the records it names.
        self.request_payload_reads();
        self.make_payload_room();
    }
}

#[cfg(test)]
mod payload_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
