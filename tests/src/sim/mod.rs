//! The deterministic simulator: one node of the real broker (the real `krest-core` state
//! machine over the real `krest-storage-file` logs on a fault-injecting memory disk), simulated
//! clients speaking the real protocol, a simulated network, and checkers, all driven by one
//! seed in virtual time.
//!
//! A run has three phases. In *setup* a client declares the queues. In *chaos* producers and
//! consumers work while faults fire: crashes of the process or the whole machine (losing
//! unsynced writes, tearing them at a sector, or keeping some directory operations), fsync,
//! write and read errors, a full disk, bit flips at rest, clock jumps, slow network frames and
//! clients that vanish. In *drain* faults stop, a fenced or dead node is restarted, producers
//! finish their retries and consumers ack everything, until the checkers find nothing
//! unsettled or the drain time runs out (a liveness failure).
//!
//! Everything random comes from [`Streams`], forked from the seed; nothing reads a clock; maps
//! are ordered. So a seed always produces the same run, and [`Report::trace_hash`] proves it.
//! The event loop is the runtimes' loop: take the earliest of the next event and the node's
//! next timer, feed the node one input, route every command it emits.

mod checker;
mod history;
mod network;
mod nodes;
mod routing;
mod server;
mod streams;
mod workload;

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use bytes::Bytes;
use krest_core::ids::ConnId;
use krest_core::planted::PlantedBug;
use krest_core::router::Outbound;
use krest_core::{Config, Input, StorageRequest};
use krest_proto::client::{QueueKind, ServerFrame};
use krest_storage_file::memory_disk::FaultStats;

pub use checker::Violation;
use checker::{Checker, QueueModel};
use history::{History, OpStatus};
use network::Network;
use server::Server;
pub use streams::Trace;
use streams::{between, Streams};
use workload::{queue_specs, Phase, QueueSpec, Role, SimClient};

/// Nodes simulated. The simulator is written for many (each with its disk, clocks and
/// processes; clients spread over them; faults pick one); the broker has one until the cluster
/// lands.
const NODES: usize = 1;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The seed: the whole run follows from it.
    pub seed: u64,
    /// Simulated milliseconds of chaos.
    pub chaos_ms: u64,
    /// Simulated milliseconds the drain may take before pending work counts as stuck.
    pub drain_ms_max: u64,
    /// The planted bug to switch on (builds with the `planted-bugs` feature only).
    pub planted: Option<PlantedBug>,
    /// Nodes: 1 runs this simulator; 3 or 5 run the cluster simulation of
    /// `krest_core::cluster::simulation`. `None`: drawn from the seed ([`nodes_for`]).
    pub nodes: Option<usize>,
}

impl Options {
    /// The defaults for `seed`: 20 s of chaos, at most 60 s of drain.
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            chaos_ms: 20_000,
            drain_ms_max: 60_000,
            planted: None,
            nodes: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Drained: every check ran.
    Drained,
    /// The node refused to start because storage found corruption a bit flip caused. That is
    /// the designed answer (never serve a corrupt range); the run stops there.
    CorruptionDetected(String),
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// A hash of every node input and command: equal for equal seeds.
    pub trace_hash: u64,
    /// Events processed (node inputs included).
    pub events: u64,
    /// Simulated time at the end.
    pub virtual_ms: u64,
    /// How it ended.
    pub ending: Ending,
    /// Every violation, in the order found; empty for a passing run.
    pub violations: Vec<Violation>,
    /// How many times each fault fired.
    pub faults: BTreeMap<&'static str, u64>,
    /// Messages published (confirmed) and delivered, acks confirmed.
    pub publishes_confirmed: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Acks confirmed.
    pub acks_confirmed: u64,
    /// Client operations that ended unknown (connection dropped first).
    pub operations_unknown: usize,
    /// The last client operations of the history, one line each, oldest first.
    pub history_tail: Vec<String>,
    /// Nodes simulated.
    pub nodes: usize,
    /// A cluster run: declares confirmed at the end, peer frames sent, `NOT_LEADER` answers
    /// the clients followed.
    pub cluster: Option<(usize, u64, u64)>,
}

/// How many nodes `seed` runs: half the seeds one node (this simulator, its streams as they
/// always were), the others 3 or 5 (the cluster simulation), drawn from a stream of their own.
/// A planted bug runs where it can show: consensus and catalog bugs on clusters, the others on
/// one node.
pub fn nodes_for(seed: u64, planted: Option<PlantedBug>) -> usize {
    match planted {
        Some(bug) if bug.needs_cluster() => [3, 5][(seed % 2) as usize],
        Some(_) => 1,
        None => match krest_core::rng::Rng::from_seed(seed ^ 0x6e6f_6465_735f_6e72).below(10) {
            0..=4 => 1,
            5..=7 => 3,
            _ => 5,
        },
    }
}

/// Runs one seed on a cluster of `nodes`.
fn run_cluster(options: Options, nodes: usize) -> Report {
    use krest_core::cluster::simulation::Simulation as ClusterSimulation;
    let bug = options.planted.and_then(PlantedBug::raft_bug);
    let outcome =
        panic::catch_unwind(|| ClusterSimulation::with_bug(options.seed, nodes, bug).run());
    let (result, violation) = match outcome {
        Ok(Ok(report)) => (report, None),
        Ok(Err(text)) => (Default::default(), Some(text)),
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            (Default::default(), Some(format!("a node panicked: {text}")))
        }
    };
    let mut faults = BTreeMap::new();
    let counts = &result.counts;
    for (name, value) in [
        ("peer-frame-lost", counts.lost),
        ("peer-frame-duplicated", counts.duplicated),
        ("node-crash", counts.crashes),
        ("node-pause", counts.pauses),
        ("storage-failure", counts.storage_failures),
    ] {
        if value > 0 {
            faults.insert(name, value);
        }
    }
    for (shape, value) in &counts.partitions {
        let name = match *shape {
            "halves" => "partition-halves",
            "isolated" => "partition-isolated",
            "one-way" => "partition-one-way",
            _ => "partition-bridge",
        };
        faults.insert(name, *value);
    }
    let text = violation.map(|text| {
        let (bug, seed) = (options.planted, options.seed);
        match bug {
            Some(bug) => format!("{text} (nodes {nodes}, planted {})", bug.name()),
            None => format!("{text} (seed {seed}, nodes {nodes})"),
        }
    });
    Report {
        seed: options.seed,
        trace_hash: result.trace_hash,
        events: result.events,
        virtual_ms: result.virtual_ms,
        ending: Ending::Drained,
        violations: text
            .map(|text| Violation {
                at_ms: result.virtual_ms,
                text,
            })
            .into_iter()
            .collect(),
        faults,
        publishes_confirmed: result.publishes_confirmed as u64,
        deliveries: 0,
        acks_confirmed: 0,
        operations_unknown: 0,
        history_tail: Vec::new(),
        nodes,
        cluster: Some((result.confirmed, result.peer_frames, result.redirects)),
    }
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one seed. A panic inside the node (an assertion of the core, including
/// `Node::check_invariants`) is reported as a violation.
pub fn run(options: Options) -> Report {
    #[cfg(feature = "planted-bugs")]
    krest_core::planted::set_active(options.planted);
    #[cfg(not(feature = "planted-bugs"))]
    assert!(
        options.planted.is_none(),
        "planted bugs need the planted-bugs feature"
    );
    let nodes = options
        .nodes
        .unwrap_or_else(|| nodes_for(options.seed, options.planted));
    if nodes > 1 {
        let report = run_cluster(options, nodes);
        #[cfg(feature = "planted-bugs")]
        krest_core::planted::set_active(None);
        return report;
    }
    let mut simulation = Simulation::new(options);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| simulation.run()));
    if let Err(payload) = outcome {
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        simulation.checker.violations.push(Violation {
            at_ms: simulation.now_ms,
            text: format!("the node panicked: {text}"),
        });
    }
    #[cfg(feature = "planted-bugs")]
    krest_core::planted::set_active(None);
    simulation.report()
}

/// Something that happens at a simulated time.
#[derive(Debug)]
enum Event {
    ClientWake(usize),
    ServerConnect(ConnId),
    ServerFrame(ConnId, Bytes),
    ServerDisconnect(ConnId),
    ClientFrame(ConnId, ServerFrame),
    ClientClosed(ConnId),
    StorageRun(usize, u64),
    StorageDone(usize, u64),
    Restart(usize),
    Fault(usize, Fault),
    EndChaos,
}

/// A fault the fault stream schedules.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Crash,
    DiskErrorsOn,
    DiskErrorsOff,
    DiskFull,
    DiskRoom,
    BitFlip,
    ClockJump,
}

struct Simulation {
    options: Options,
    streams: Streams,
    trace: Trace,
    now_ms: u64,
    events: BTreeMap<(u64, u64), Event>,
    next_event: u64,
    processed: u64,
    phase: Phase,
    queues: Vec<QueueSpec>,
    /// The nodes, by index (one until the cluster lands).
    nodes: Vec<Server>,
    network: Network,
    clients: Vec<SimClient>,
    history: History,
    checker: Checker,
    faults: BTreeMap<&'static str, u64>,
    /// Files with a flipped bit (each flip lands in one), by node.
    flipped_files: Vec<(usize, PathBuf)>,
    ending: Option<Ending>,
}

impl Simulation {
    fn new(options: Options) -> Simulation {
        let mut streams = Streams::new(options.seed);
        let queues = queue_specs();
        let mut config = Config::default();
        config.storage.segment_bytes = between(&mut streams.disk, 4_096, 16_384);
        // A quarter of the runs keep every durable payload in memory, the others keep none or
        // a few kilobytes: their consumers read most payloads back from the (faulty) disk.
        config.storage.payload_memory_bytes = match between(&mut streams.disk, 0, 3) {
            0 => 0,
            1 => 2_048,
            2 => 16_384,
            _ => config.storage.payload_memory_bytes,
        };
        let nodes = (0..NODES)
            .map(|node| {
                let mut config = config.clone();
                config.server.node_id = node as u64 + 1;
                let wall_skew_ms = between(&mut streams.clocks, 0, 4_000) as i64 - 2_000;
                Server::new(config, streams.disk.fork(), wall_skew_ms)
            })
            .collect();
        let mut clients = vec![SimClient::new(
            0,
            Role::Setup {
                declared: Default::default(),
            },
        )];
        for producer in 1..=3 {
            clients.push(SimClient::producer(clients.len(), producer));
        }
        for (index, spec) in queues.iter().enumerate() {
            for consumer in 0..spec.consumers {
                // The second consumer of a queue with several pulls; the others are pushed to.
                let pull = consumer == 1;
                clients.push(SimClient::consumer(clients.len(), index, pull, false));
            }
        }
        // Broadcast subscribers, each a subscription of its own, on queues that never
        // dead-letter (a broadcast subscription's dead letters would be second copies) and
        // whose point group is durable (so it exists for every message the broadcast
        // subscriber sees; a temporary queue's group is gone after a restart).
        for name in ["orders.dlq", "timers.dlq"] {
            let index = queues
                .iter()
                .position(|spec| spec.name == name)
                .expect("a workload queue");
            clients.push(SimClient::consumer(clients.len(), index, false, true));
        }
        let models = queues
            .iter()
            .map(|spec| (spec.name.to_string(), queue_model(spec, &queues)))
            .collect();
        Simulation {
            options,
            streams,
            trace: Trace::default(),
            now_ms: 0,
            events: BTreeMap::new(),
            next_event: 0,
            processed: 0,
            phase: Phase::Setup,
            queues,
            nodes,
            network: Network::default(),
            clients,
            history: History::default(),
            checker: Checker::new(models),
            faults: BTreeMap::new(),
            flipped_files: Vec::new(),
            ending: None,
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.next_event += 1;
        self.events
            .insert((at_ms.max(self.now_ms), self.next_event), event);
    }

    fn count(&mut self, fault: &'static str) {
        *self.faults.entry(fault).or_default() += 1;
    }

    fn run(&mut self) {
        for node in 0..self.nodes.len() {
            self.start_node(node);
        }
        for index in 0..self.clients.len() {
            self.schedule(0, Event::ClientWake(index));
        }
        let setup_deadline_ms = 10_000;
        let mut drain_started_ms = None;
        let mut next_settled_check_ms = 0;
        loop {
            if self.ending.is_some() {
                return;
            }
            if self.phase == Phase::Setup {
                if self.clients[0].setup_done(&self.queues) {
                    self.begin_chaos();
                } else {
                    assert!(
                        self.now_ms < setup_deadline_ms,
                        "the queues were not declared within {setup_deadline_ms} ms"
                    );
                }
            }
            if self.phase == Phase::Drain && self.now_ms >= next_settled_check_ms {
                // Judging the whole history is costly: a few times per simulated second.
                next_settled_check_ms = self.now_ms + 100;
                let started = *drain_started_ms.get_or_insert(self.now_ms);
                if self.settled() || self.now_ms > started + self.options.drain_ms_max {
                    self.ending = Some(Ending::Drained);
                    return;
                }
            }
            let next_event = self.events.first_key_value().map(|(key, _)| key.0);
            let next_timer = (0..self.nodes.len())
                .filter_map(|node| Some((self.nodes[node].next_timer()?, node)))
                .min();
            match (next_event, next_timer) {
                (_, Some((timer, node))) if next_event.is_none_or(|event| timer < event) => {
                    self.now_ms = self.now_ms.max(timer);
                    self.node_input(node, Input::Tick);
                }
                _ if next_event.is_some() => {
                    let ((at_ms, _), event) = self.events.pop_first().expect("peeked");
                    self.now_ms = at_ms;
                    self.processed += 1;
                    debug(at_ms, &format!("{event:?}"));
                    self.on_event(event);
                }
                _ => panic!("nothing left to happen"),
            }
        }
    }

    fn settled(&self) -> bool {
        !self.clients.iter().any(SimClient::has_unresolved)
            && self.checker.unsettled(&self.history).is_empty()
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ClientWake(index) => self.wake_client(index),
            Event::ServerConnect(conn) => {
                if let Some(node) = self.running_node_of(conn) {
                    self.node_input(node, Input::ClientConnected { conn });
                }
            }
            Event::ServerFrame(conn, body) => self.frame_to_server(conn, body),
            Event::ServerDisconnect(conn) => {
                if let Some(node) = self.running_node_of(conn) {
                    let connection = self.network.get_mut(conn).expect("known");
                    connection.closed_for_server = true;
                    self.checker.on_disconnect(conn);
                    self.node_input(node, Input::ClientDisconnected { conn });
                }
            }
            Event::ClientFrame(conn, frame) => self.frame_to_client(conn, frame),
            Event::ClientClosed(conn) => self.close_for_client(conn),
            Event::StorageRun(node, epoch) => self.run_storage(node, epoch),
            Event::StorageDone(node, epoch) => {
                if self.nodes[node].epoch() == Some(epoch) {
                    for done in self.nodes[node].finish_storage_batch() {
                        self.node_input(node, Input::StorageDone(done));
                    }
                    self.run_storage(node, epoch);
                }
            }
            Event::Restart(node) => {
                self.nodes[node].restart_scheduled = false;
                if self.nodes[node].process.is_none() {
                    self.start_node(node);
                }
            }
            Event::Fault(node, fault) => self.inject(node, fault),
            Event::EndChaos => self.begin_drain(),
        }
    }

    fn report(&mut self) -> Report {
        if self.ending == Some(Ending::Drained) && self.phase == Phase::Drain {
            for text in self.checker.unsettled(&self.history) {
                self.checker.violations.push(Violation {
                    at_ms: self.now_ms,
                    text,
                });
            }
        }
        let mut stats = FaultStats::default();
        for node in &self.nodes {
            let disk = node.disk.stats();
            stats.read_errors += disk.read_errors;
            stats.write_errors += disk.write_errors;
            stats.sync_errors += disk.sync_errors;
            stats.disk_full_errors += disk.disk_full_errors;
            stats.bit_flips += disk.bit_flips;
            stats.torn_writes += disk.torn_writes;
            stats.directory_operations_kept += disk.directory_operations_kept;
            stats.directory_operations_lost += disk.directory_operations_lost;
        }
        for (name, value) in [
            ("disk-read-error", stats.read_errors),
            ("disk-write-error", stats.write_errors),
            ("disk-fsync-error", stats.sync_errors),
            ("disk-full", stats.disk_full_errors),
            ("bit-flip", stats.bit_flips),
            ("torn-write", stats.torn_writes),
            ("directory-operation-kept", stats.directory_operations_kept),
            ("directory-operation-lost", stats.directory_operations_lost),
        ] {
            if value > 0 {
                self.faults.insert(name, value);
            }
        }
        Report {
            seed: self.options.seed,
            trace_hash: self.trace.hash(),
            events: self.processed,
            virtual_ms: self.now_ms,
            ending: self.ending.clone().unwrap_or(Ending::Drained),
            violations: self.checker.violations.clone(),
            faults: self.faults.clone(),
            publishes_confirmed: self.checker.seen.publishes_confirmed,
            deliveries: self.checker.seen.deliveries,
            acks_confirmed: self.checker.seen.acks_confirmed,
            operations_unknown: self.history.count(OpStatus::Unknown),
            history_tail: self.history.tail(20),
            nodes: 1,
            cluster: None,
        }
    }
}

/// With `KREST_SIM_DEBUG` set, prints one line of what happened to stderr.
fn debug(at_ms: u64, text: &str) {
    if std::env::var_os("KREST_SIM_DEBUG").is_some() {
        eprintln!("{at_ms:>8} {text}");
    }
}

/// What the checker knows about `spec`.
fn queue_model(spec: &QueueSpec, queues: &[QueueSpec]) -> QueueModel {
    let kind = spec.settings.kind;
    let source = queues
        .iter()
        .find(|other| other.can_dead_letter() && other.dead_letter_queue() == spec.name)
        .map(|other| other.name.to_string());
    QueueModel {
        temporary: kind == QueueKind::Temporary as i32,
        delay: kind == QueueKind::Delay as i32,
        drop_oldest_max: (spec.settings.overflow
            == krest_proto::client::OverflowPolicy::DropOldest as i32)
            .then_some(spec.settings.max_messages),
        source,
        dead_letter_queue: spec.can_dead_letter().then(|| spec.dead_letter_queue()),
        ack_timeout_ms: spec.settings.ack_timeout_ms,
    }
}

fn trace_input(trace: &mut Trace, now_ms: u64, input: &Input) {
    trace.number(now_ms);
    match input {
        Input::Tick => trace.number(0),
        Input::ClientConnected { conn } => trace.number(conn.0 << 4 | 1),
        Input::ClientFrame { conn, body } => {
            trace.number(conn.0 << 4 | 2);
            trace.bytes(body);
        }
        Input::ClientStreamError { conn, .. } => trace.number(conn.0 << 4 | 3),
        Input::ClientDisconnected { conn } => trace.number(conn.0 << 4 | 4),
        Input::StorageDone(done) => {
            trace.number(5);
            trace.bytes(format!("{done:?}").as_bytes());
        }
        Input::Admin { request, .. } => trace.number(request.0 << 4 | 6),
        Input::PeerFrame { peer, body } => {
            trace.number(peer.0 << 4 | 10);
            trace.bytes(body);
        }
        Input::PeerLink { peer, linked } => trace.number(peer.0 << 4 | (12 + u64::from(*linked))),
    }
}

fn trace_outbound(trace: &mut Trace, conn: ConnId, message: &Outbound) {
    match message {
        Outbound::Frame(frame) => {
            trace.number(conn.0 << 4 | 7);
            trace.bytes(frame);
        }
        other => {
            trace.number(conn.0 << 4 | 9);
            trace.bytes(format!("{other:?}").as_bytes());
        }
    }
}

fn trace_storage(trace: &mut Trace, request: &StorageRequest) {
    trace.number(8);
    trace.bytes(format!("{request:?}").as_bytes());
}
