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
mod server;
mod streams;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use krest_core::ids::ConnId;
use krest_core::planted::PlantedBug;
use krest_core::{Command, Config, Input, StorageDone};
use krest_proto::client::{ClientFrame, QueueKind, ServerFrame};
use krest_proto::frame::FrameDecoder;
use krest_storage_file::memory_disk::{FaultPlan, FaultStats};
use krest_storage_file::FileSystem as _;
use prost::Message as _;

pub use checker::Violation;
use checker::{Checker, QueueModel};
use history::{History, OpStatus};
use network::Network;
use server::{Server, StartFailure};
pub use streams::Trace;
use streams::{between, chance, Streams};
use workload::{queue_specs, Actions, Context, Phase, QueueSpec, Role, SimClient};

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
}

impl Options {
    /// The defaults for `seed`: 20 s of chaos, at most 60 s of drain.
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            chaos_ms: 20_000,
            drain_ms_max: 60_000,
            planted: None,
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
    StorageRun(u64),
    StorageDone(u64, Vec<StorageDone>),
    Restart,
    Fault(Fault),
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
    server: Server,
    restart_scheduled: bool,
    network: Network,
    clients: Vec<SimClient>,
    history: History,
    checker: Checker,
    faults: BTreeMap<&'static str, u64>,
    bits_flipped: u64,
    /// The epoch of the latest process started.
    last_epoch: Option<u64>,
    ending: Option<Ending>,
}

impl Simulation {
    fn new(options: Options) -> Simulation {
        let mut streams = Streams::new(options.seed);
        let queues = queue_specs();
        let mut config = Config::default();
        config.server.node_id = 1;
        config.storage.segment_bytes = between(&mut streams.disk, 4_096, 16_384);
        let wall_skew_ms = between(&mut streams.clocks, 0, 4_000) as i64 - 2_000;
        let server = Server::new(config, streams.disk.fork(), wall_skew_ms);
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
            for _ in 0..spec.consumers {
                clients.push(SimClient::consumer(clients.len(), index));
            }
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
            server,
            restart_scheduled: false,
            network: Network::default(),
            clients,
            history: History::default(),
            checker: Checker::new(models),
            faults: BTreeMap::new(),
            bits_flipped: 0,
            last_epoch: None,
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
        self.start_node();
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
            let next_timer = self.server.next_timer();
            match (next_event, next_timer) {
                (_, Some(timer)) if next_event.is_none_or(|event| timer < event) => {
                    self.now_ms = self.now_ms.max(timer);
                    self.node_input(Input::Tick);
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

    fn begin_chaos(&mut self) {
        self.phase = Phase::Chaos;
        let end = self.now_ms + self.options.chaos_ms;
        self.schedule(end, Event::EndChaos);
        let faults = &mut self.streams.faults;
        let mut plan = Vec::new();
        let mut at = self.now_ms;
        loop {
            at += between(faults, 1_000, 6_000);
            if at >= end {
                break;
            }
            plan.push((at, Fault::Crash));
        }
        let mut at = self.now_ms;
        loop {
            at += between(faults, 1_000, 5_000);
            if at >= end {
                break;
            }
            plan.push((at, Fault::ClockJump));
        }
        if chance(faults, 400) {
            let at = self.now_ms + faults.below(self.options.chaos_ms);
            plan.push((at, Fault::DiskErrorsOn));
            plan.push((at + between(faults, 200, 2_000), Fault::DiskErrorsOff));
        }
        if chance(faults, 300) {
            let at = self.now_ms + faults.below(self.options.chaos_ms);
            plan.push((at, Fault::DiskFull));
            plan.push((at + between(faults, 200, 2_000), Fault::DiskRoom));
        }
        if chance(faults, 200) {
            let at = self.now_ms + faults.below(self.options.chaos_ms);
            plan.push((at, Fault::BitFlip));
        }
        for (at, fault) in plan {
            self.schedule(at, Event::Fault(fault));
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
                if self.for_running_process(conn) {
                    self.node_input(Input::ClientConnected { conn });
                }
            }
            Event::ServerFrame(conn, body) => self.frame_to_server(conn, body),
            Event::ServerDisconnect(conn) => {
                if self.for_running_process(conn) {
                    let connection = self.network.get_mut(conn).expect("known");
                    connection.closed_for_server = true;
                    self.checker.on_disconnect(conn);
                    self.node_input(Input::ClientDisconnected { conn });
                }
            }
            Event::ClientFrame(conn, frame) => self.frame_to_client(conn, frame),
            Event::ClientClosed(conn) => self.close_for_client(conn),
            Event::StorageRun(epoch) => self.run_storage(epoch),
            Event::StorageDone(epoch, done) => {
                if self.server.epoch() == Some(epoch) {
                    for done in done {
                        self.node_input(Input::StorageDone(done));
                    }
                    self.run_storage(epoch);
                }
            }
            Event::Restart => {
                self.restart_scheduled = false;
                if self.server.process.is_none() {
                    self.start_node();
                }
            }
            Event::Fault(fault) => self.inject(fault),
            Event::EndChaos => self.begin_drain(),
        }
    }

    /// Whether `conn` belongs to the running process and the node has not seen it close.
    fn for_running_process(&self, conn: ConnId) -> bool {
        let epoch = self.server.epoch();
        self.network.get(conn).is_some_and(|connection| {
            Some(connection.epoch) == epoch && !connection.closed_for_server
        })
    }

    fn context(&mut self) -> Context<'_> {
        Context {
            now_ms: self.now_ms,
            phase: self.phase,
            rng: &mut self.streams.workload,
            history: &mut self.history,
            queues: &self.queues,
        }
    }

    fn wake_client(&mut self, index: usize) {
        let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
        let actions = client.wake(&mut self.context());
        self.clients[index] = client;
        self.apply(index, actions);
    }

    fn apply(&mut self, index: usize, actions: Actions) {
        if let Some(at_ms) = actions.wake_at_ms {
            self.schedule(at_ms, Event::ClientWake(index));
        }
        if actions.connect {
            self.connect(index);
        }
        let Some(conn) = self.clients[index].conn else {
            return;
        };
        for body in actions.send {
            let at = self
                .network
                .arrival_at_server(conn, self.now_ms, &mut self.streams.network);
            self.schedule(at, Event::ServerFrame(conn, body));
        }
        if actions.disconnect {
            self.count("client-vanished");
            let at = self
                .network
                .arrival_at_server(conn, self.now_ms, &mut self.streams.network);
            self.schedule(at, Event::ServerDisconnect(conn));
            self.close_for_client(conn);
        }
    }

    fn connect(&mut self, index: usize) {
        let Some(epoch) = self.server.epoch() else {
            let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
            client.on_closed(&mut self.context());
            self.clients[index] = client;
            self.schedule(self.now_ms + 1, Event::ClientWake(index));
            return;
        };
        let conn = self.network.open(index, epoch);
        let at = self
            .network
            .arrival_at_server(conn, self.now_ms, &mut self.streams.network);
        self.schedule(at, Event::ServerConnect(conn));
        let actions = self.clients[index].on_connected(conn);
        self.apply(index, actions);
    }

    fn close_for_client(&mut self, conn: ConnId) {
        let Some(connection) = self.network.get_mut(conn) else {
            return;
        };
        if connection.closed_for_client {
            return;
        }
        connection.closed_for_client = true;
        let index = connection.client;
        if self.clients[index].conn != Some(conn) {
            return;
        }
        let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
        client.on_closed(&mut self.context());
        self.clients[index] = client;
        self.network.forget_closed();
    }

    fn frame_to_server(&mut self, conn: ConnId, body: Bytes) {
        if !self.for_running_process(conn) {
            return;
        }
        let connection = self.network.get_mut(conn).expect("checked");
        if !connection.reading {
            connection.held.push_back(body);
            return;
        }
        self.deliver_to_node(conn, body);
    }

    fn deliver_to_node(&mut self, conn: ConnId, body: Bytes) {
        if let (Ok(frame), Some(now)) = (
            ClientFrame::decode(body.clone()),
            self.server.now(self.now_ms),
        ) {
            self.checker.on_request(self.now_ms, now, conn, &frame);
        }
        self.node_input(Input::ClientFrame { conn, body });
    }

    fn frame_to_client(&mut self, conn: ConnId, frame: ServerFrame) {
        let Some(connection) = self.network.get(conn) else {
            return;
        };
        if connection.closed_for_client {
            return;
        }
        let index = connection.client;
        if self.clients[index].conn != Some(conn) {
            return;
        }
        let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
        let actions = client.on_frame(&mut self.context(), frame);
        self.clients[index] = client;
        self.apply(index, actions);
    }

    /// Feeds the node one input and carries out what it asks.
    fn node_input(&mut self, input: Input) {
        if self.server.process.is_none() {
            return;
        }
        trace_input(&mut self.trace, self.now_ms, &input);
        let commands = self.server.handle(self.now_ms, input);
        for command in commands {
            self.execute(command);
        }
        self.checker.end_step();
        if self.server.fenced() && !self.restart_scheduled {
            self.count("node-fenced");
            self.server.kill();
            self.on_process_end();
            let at = self.now_ms + between(&mut self.streams.faults, 50, 500);
            self.schedule_restart(at);
        }
    }

    fn execute(&mut self, command: Command) {
        trace_command(&mut self.trace, &command);
        let now = self.server.now(self.now_ms).expect("running");
        match command {
            Command::SendToClient { conn, frame } => {
                let mut buffer = BytesMut::from(&frame[..]);
                let mut decoder = FrameDecoder::new(u32::MAX);
                while let Some(frame) = decoder
                    .decode_message::<ServerFrame>(&mut buffer)
                    .expect("the node sends valid frames")
                {
                    self.checker
                        .on_response(self.now_ms, now, conn, &frame, &self.history);
                    if self.network.get(conn).is_none() {
                        continue;
                    }
                    let at = self.network.arrival_at_client(
                        conn,
                        self.now_ms,
                        &mut self.streams.network,
                    );
                    self.schedule(at, Event::ClientFrame(conn, frame));
                }
            }
            Command::CloseClient { conn, .. } => {
                if self.network.get(conn).is_some() {
                    let at = self.network.arrival_at_client(
                        conn,
                        self.now_ms,
                        &mut self.streams.network,
                    );
                    self.schedule(at, Event::ClientClosed(conn));
                    self.schedule(self.now_ms + 1, Event::ServerDisconnect(conn));
                }
            }
            Command::SetReading { conn, enabled } => {
                let Some(connection) = self.network.get_mut(conn) else {
                    return;
                };
                connection.reading = enabled;
                if enabled {
                    let held: Vec<Bytes> = connection.held.drain(..).collect();
                    for body in held {
                        // Same time, in order: ahead of anything that arrives later.
                        self.schedule(self.now_ms, Event::ServerFrame(conn, body));
                    }
                }
            }
            Command::Storage(request) => {
                if self.server.queue_storage(request) {
                    let epoch = self.server.epoch().expect("running");
                    let at = self.now_ms + between(&mut self.streams.disk, 0, 1);
                    self.schedule(at, Event::StorageRun(epoch));
                }
            }
            Command::AdminResponse { .. } => {}
        }
    }

    fn run_storage(&mut self, epoch: u64) {
        if self.server.epoch() != Some(epoch) {
            return;
        }
        if let Some(done) = self.server.run_storage_batch() {
            let latency = if chance(&mut self.streams.disk, 30) {
                between(&mut self.streams.disk, 5, 40)
            } else {
                between(&mut self.streams.disk, 0, 2)
            };
            self.schedule(self.now_ms + latency, Event::StorageDone(epoch, done));
        }
    }

    fn start_node(&mut self) {
        match self.server.start(self.now_ms, &mut self.streams.clocks) {
            Ok(()) => {
                self.count("node-started");
                self.last_epoch = self.server.epoch();
            }
            Err(StartFailure::Corrupt(reason)) => {
                if self.bits_flipped > 0 {
                    self.ending = Some(Ending::CorruptionDetected(reason));
                } else {
                    self.checker.violations.push(Violation {
                        at_ms: self.now_ms,
                        text: format!(
                            "recovery refused the data although no bit was flipped: {reason}"
                        ),
                    });
                    self.ending = Some(Ending::Drained);
                }
            }
            Err(StartFailure::Transient(reason)) => {
                debug(self.now_ms, &format!("start failed, will retry: {reason}"));
                self.count("start-failed-and-retried");
                let at = self.now_ms + between(&mut self.streams.faults, 50, 300);
                self.schedule_restart(at);
            }
            Err(StartFailure::Refused(reason)) => {
                self.checker.violations.push(Violation {
                    at_ms: self.now_ms,
                    text: format!("the core refused what storage recovered: {reason}"),
                });
                self.ending = Some(Ending::Drained);
            }
        }
    }

    fn schedule_restart(&mut self, at_ms: u64) {
        if !self.restart_scheduled {
            self.restart_scheduled = true;
            self.schedule(at_ms, Event::Restart);
        }
    }

    /// The process is gone: its connections drop for the clients, its leases end.
    fn on_process_end(&mut self) {
        self.checker.on_process_end(self.now_ms);
        let Some(epoch) = self.last_epoch else {
            return;
        };
        for conn in self.network.open_on(epoch) {
            self.network.get_mut(conn).expect("open").closed_for_server = true;
            let at = self
                .network
                .arrival_at_client(conn, self.now_ms, &mut self.streams.network);
            self.schedule(at, Event::ClientClosed(conn));
        }
    }

    /// Flips one bit at rest in a segment that is not the newest of its log: storage must
    /// refuse it at the next start (the run then ends as `CorruptionDetected`) unless the
    /// segment was deleted first. The newest segment is spared because a flip in its last
    /// record looks exactly like a torn write, which recovery cuts off; only a replica can
    /// tell the two apart.
    fn flip_bit(&mut self) {
        let file_system = self.server.disk.file_system();
        let logs = Path::new(server::DATA_DIR).join("logs");
        let mut eligible = BTreeSet::new();
        for log in file_system.list_directory(&logs).unwrap_or_default() {
            let mut segments: Vec<PathBuf> = file_system
                .list_directory(&log.path)
                .unwrap_or_default()
                .into_iter()
                .map(|entry| entry.path)
                .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
                .collect();
            segments.sort();
            segments.pop();
            eligible.extend(segments);
        }
        let flipped = self
            .server
            .disk
            .flip_random_bit_in(&mut self.streams.disk, |path| eligible.contains(path));
        if flipped.is_some() {
            self.bits_flipped += 1;
        }
    }

    fn inject(&mut self, fault: Fault) {
        if self.phase != Phase::Chaos {
            return;
        }
        match fault {
            Fault::Crash => {
                if self.server.process.is_none() {
                    return;
                }
                if chance(&mut self.streams.faults, 300) {
                    self.count("process-killed");
                    self.server.kill();
                } else {
                    let mode = self.server.crash_machine(&mut self.streams.disk);
                    self.count(mode);
                }
                self.on_process_end();
                let at = self.now_ms + between(&mut self.streams.faults, 10, 500);
                self.schedule_restart(at);
            }
            Fault::DiskErrorsOn => {
                self.server.disk.set_fault_plan(FaultPlan {
                    read_errors_per_million: 5_000,
                    write_errors_per_million: 2_000,
                    sync_errors_per_million: 5_000,
                    ..self.server.disk.fault_plan()
                });
            }
            Fault::DiskErrorsOff => self.server.disk.set_fault_plan(FaultPlan {
                disk_bytes_max: self.server.disk.fault_plan().disk_bytes_max,
                ..FaultPlan::default()
            }),
            Fault::DiskFull => {
                let room = between(&mut self.streams.faults, 0, 16_384);
                self.server.disk.set_fault_plan(FaultPlan {
                    disk_bytes_max: Some(self.server.disk.used_bytes() + room),
                    ..self.server.disk.fault_plan()
                });
            }
            Fault::DiskRoom => self.server.disk.set_fault_plan(FaultPlan {
                disk_bytes_max: None,
                ..self.server.disk.fault_plan()
            }),
            Fault::BitFlip => self.flip_bit(),
            Fault::ClockJump => {
                self.count("clock-jump");
                let jump = between(&mut self.streams.clocks, 0, 6_000) as i64 - 3_000;
                self.server.wall_skew_ms += jump;
            }
        }
    }

    fn begin_drain(&mut self) {
        self.phase = Phase::Drain;
        self.server.disk.set_fault_plan(FaultPlan::default());
        if self.server.process.is_none() {
            self.schedule_restart(self.now_ms);
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
        let stats: FaultStats = self.server.disk.stats();
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
    }
}

fn trace_command(trace: &mut Trace, command: &Command) {
    match command {
        Command::SendToClient { conn, frame } => {
            trace.number(conn.0 << 4 | 7);
            trace.bytes(frame);
        }
        Command::Storage(request) => {
            trace.number(8);
            trace.bytes(format!("{request:?}").as_bytes());
        }
        other => trace.bytes(format!("{other:?}").as_bytes()),
    }
}
