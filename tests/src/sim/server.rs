//! One simulated node: its disk, which outlives crashes, and the process running on it (the
//! real `krest-core` node over the real `krest-storage-file` executor on a [`MemoryDisk`]).
//!
//! The process has two clocks, as a real one does: a monotonic clock that starts anywhere at
//! each start and only moves forward, and a wall clock that is skewed from true time and may
//! jump either way. Storage runs like the runtimes' storage thread: requests queue while a
//! batch executes, and each batch is one `execute_batch` (one fsync per log) whose completions
//! come back after a latency drawn from the disk stream.

use std::path::Path;

use krest_core::ids::ConnId;
use krest_core::rng::Rng;
use krest_core::router::{Mailbox, MailboxRouter, Outbound};
use krest_core::{Config, Input, Instant, Node, Now, StorageDone, StorageRequest, UnixMillis};
use krest_storage_file::memory_disk::MemoryFileSystem;
use krest_storage_file::{MemoryDisk, OpenError, StorageError, StorageExecutor};

/// Where the node keeps its data on its disk.
pub const DATA_DIR: &str = "/krest";
/// Wall-clock time at simulated time zero.
pub const WALL_ORIGIN_MS: u64 = 1_700_000_000_000;

/// A running process.
pub struct Process {
    /// The broker, behind the command router every runtime uses.
    router: MailboxRouter,
    /// Where the router puts what it routes to connections.
    mailbox: Mailbox,
    executor: StorageExecutor<MemoryFileSystem>,
    /// Counts starts; events addressed to an older process are dropped.
    pub epoch: u64,
    /// Monotonic time is simulated time plus this.
    monotonic_offset_ms: u64,
    /// Requests that arrived since the running batch started.
    storage_queue: Vec<StorageRequest>,
    /// Where the storage thread is.
    storage: StorageState,
    /// The running batch's completions so far (its writes).
    batch_done: Vec<StorageDone>,
    /// The running batch's fsyncs, done when it finishes.
    batch_syncs: Vec<StorageRequest>,
}

/// What the router routed for one input: messages for connections and requests for storage,
/// each in the order the node emitted them.
pub struct Routed {
    /// Messages for connections.
    pub to_connections: Vec<(ConnId, Outbound)>,
    /// Requests for the storage thread.
    pub storage: Vec<StorageRequest>,
}

/// The simulated storage thread: idle, woken (a batch will start), or running a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageState {
    Idle,
    Woken,
    Running,
}

/// Why a start failed.
#[derive(Debug)]
pub enum StartFailure {
    /// Storage found corruption it refuses to serve: detected, as designed.
    Corrupt(String),
    /// Storage could not open for another reason (an injected read or write error, a full
    /// disk): worth another try.
    Transient(String),
    /// The core could not understand what storage recovered: never expected.
    Refused(String),
}

/// The node, its disk and its clocks.
pub struct Server {
    /// The disk, shared with nobody, surviving every crash.
    pub disk: MemoryDisk,
    /// The running process, if any.
    pub process: Option<Process>,
    config: Config,
    epochs: u64,
    /// Wall time is simulated time plus this (milliseconds, either sign).
    pub wall_skew_ms: i64,
    /// Inputs handled, over every process.
    inputs: u64,
    /// A restart is on its way.
    pub restart_scheduled: bool,
}

impl Server {
    /// A node with an empty disk whose faults are decided by `disk_rng`.
    pub fn new(config: Config, disk_rng: Rng, wall_skew_ms: i64) -> Server {
        Server {
            disk: MemoryDisk::new(disk_rng),
            process: None,
            config,
            epochs: 0,
            wall_skew_ms,
            inputs: 0,
            restart_scheduled: false,
        }
    }

    /// The node's clocks at simulated time `time_ms`.
    pub fn now(&self, time_ms: u64) -> Option<Now> {
        let process = self.process.as_ref()?;
        Some(Now {
            monotonic: Instant(time_ms + process.monotonic_offset_ms),
            wall: UnixMillis(self.wall_ms(time_ms)),
        })
    }

    /// The node's wall clock at `time_ms`.
    pub fn wall_ms(&self, time_ms: u64) -> u64 {
        (WALL_ORIGIN_MS + time_ms).saturating_add_signed(self.wall_skew_ms)
    }

    /// Starts a process: recovery through the real storage and core code.
    pub fn start(&mut self, time_ms: u64, clocks: &mut Rng) -> Result<(), StartFailure> {
        assert!(self.process.is_none(), "one process at a time");
        let segment_bytes = self.config.storage.segment_bytes;
        let opened =
            StorageExecutor::open_with(self.disk.file_system(), Path::new(DATA_DIR), segment_bytes);
        let (executor, recovered) = match opened {
            Ok(opened) => opened,
            Err(OpenError::Storage(error @ StorageError::Corrupt { .. })) => {
                return Err(StartFailure::Corrupt(error.to_string()))
            }
            Err(error) => return Err(StartFailure::Transient(error.to_string())),
        };
        self.epochs += 1;
        let monotonic_offset_ms = clocks.below(1 << 40);
        let now = Now {
            monotonic: Instant(time_ms + monotonic_offset_ms),
            wall: UnixMillis(self.wall_ms(time_ms)),
        };
        let node = Node::new(self.config.clone(), recovered, clocks.next_u64(), now)
            .map_err(|error| StartFailure::Refused(error.to_string()))?;
        self.process = Some(Process {
            router: MailboxRouter::new(node),
            mailbox: Mailbox::default(),
            executor,
            epoch: self.epochs,
            monotonic_offset_ms,
            storage_queue: Vec::new(),
            storage: StorageState::Idle,
            batch_done: Vec::new(),
            batch_syncs: Vec::new(),
        });
        Ok(())
    }

    /// Ends the process at once (kill -9): what it wrote stays on the disk, synced or not.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Ends the process and crashes the machine: the disk keeps what is durable and, as the
    /// crash mode drawn from `rng` decides, some of the rest. Returns the mode's name.
    pub fn crash_machine(&mut self, rng: &mut Rng) -> &'static str {
        self.process = None;
        match self.disk.crash(rng) {
            krest_storage_file::memory_disk::CrashMode::LoseUnsynced => "crash-lose-unsynced",
            krest_storage_file::memory_disk::CrashMode::TornWrites => "crash-torn-writes",
            krest_storage_file::memory_disk::CrashMode::KeepSomeDirectoryOperations => {
                "crash-keep-some-directory-operations"
            }
        }
    }

    /// The epoch of the latest process started (running or not).
    pub fn last_epoch(&self) -> Option<u64> {
        (self.epochs > 0).then_some(self.epochs)
    }

    /// The epoch of the running process.
    pub fn epoch(&self) -> Option<u64> {
        self.process.as_ref().map(|process| process.epoch)
    }

    /// Feeds one input to the node through the router and returns what the router routed,
    /// after checking the core's own invariants.
    pub fn handle(&mut self, time_ms: u64, input: Input) -> Routed {
        let now = self.now(time_ms).expect("a running process");
        let process = self.process.as_mut().expect("a running process");
        process.router.on_input(now, input, &process.mailbox);
        let routed = Routed {
            to_connections: process.mailbox.take().to_connections,
            storage: process.router.take_storage_requests(),
        };
        // The core's own consistency check costs O(messages); after every fourth input keeps
        // most of its power at a quarter of the price (a broken table stays broken).
        self.inputs += 1;
        if self.inputs.is_multiple_of(4) {
            process.router.node().check_invariants();
        }
        routed
    }

    /// When the node next wants a tick, in simulated time.
    pub fn next_timer(&self) -> Option<u64> {
        let process = self.process.as_ref()?;
        let deadline = process.router.poll_timeout()?;
        Some(deadline.0.saturating_sub(process.monotonic_offset_ms))
    }

    /// Queues a storage request; returns whether the storage thread must be woken (it is
    /// idle: nothing will pick the request up otherwise).
    pub fn queue_storage(&mut self, request: StorageRequest) -> bool {
        let process = self.process.as_mut().expect("a running process");
        process.storage_queue.push(request);
        let wake = process.storage == StorageState::Idle;
        if wake {
            process.storage = StorageState::Woken;
        }
        wake
    }

    /// Starts a batch of every queued request: writes now, fsyncs when the batch finishes
    /// ([`Server::finish_storage_batch`]), so a crash in between finds the written bytes
    /// unsynced, as it would while a real fsync runs. The executor fsyncs at the end of a batch
    /// anyway, so splitting it changes nothing else. Returns whether a batch started.
    pub fn start_storage_batch(&mut self) -> bool {
        let Some(process) = self.process.as_mut() else {
            return false;
        };
        if process.storage == StorageState::Running {
            return false;
        }
        if process.storage_queue.is_empty() {
            process.storage = StorageState::Idle;
            return false;
        }
        process.storage = StorageState::Running;
        let (syncs, writes): (Vec<_>, Vec<_>) = std::mem::take(&mut process.storage_queue)
            .into_iter()
            .partition(|request| matches!(request, StorageRequest::Sync { .. }));
        process.batch_done = process.executor.execute_batch(writes);
        process.batch_syncs = syncs;
        true
    }

    /// Runs the running batch's fsyncs and returns its completions for the node.
    pub fn finish_storage_batch(&mut self) -> Vec<StorageDone> {
        let Some(process) = self.process.as_mut() else {
            return Vec::new();
        };
        assert_eq!(process.storage, StorageState::Running, "a batch runs");
        process.storage = StorageState::Idle;
        let syncs = std::mem::take(&mut process.batch_syncs);
        let mut done = std::mem::take(&mut process.batch_done);
        done.extend(process.executor.execute_batch(syncs));
        // How long an fsync took is real time, not simulated time: the simulated node never
        // sees it, so the trace stays a function of the seed.
        done.retain(|done| !matches!(done, StorageDone::Measured { .. }));
        done
    }

    /// Whether the node fenced itself after a storage failure.
    pub fn fenced(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|process| process.router.node().fenced().is_some())
    }
}
