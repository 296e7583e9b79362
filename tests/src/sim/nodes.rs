//! The nodes' lives: starts and restarts through the real recovery code, crashes, disk
//! faults, bit flips, clock jumps, and the switch from chaos to drain.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use krest_storage_file::memory_disk::FaultPlan;
use krest_storage_file::FileSystem as _;

use super::checker::Violation;
use super::server::{self, StartFailure};
use super::streams::{between, chance};
use super::workload::Phase;
use super::{debug, Ending, Event, Fault, Simulation};

impl Simulation {
    pub(super) fn start_node(&mut self, node: usize) {
        match self.nodes[node].start(self.now_ms, &mut self.streams.clocks) {
            Ok(()) => self.count("node-started"),
            Err(StartFailure::Corrupt(reason)) => {
                // Designed, when it names a file whose bit the simulator flipped.
                let flipped = self.flipped_files.iter().any(|(flipped_node, path)| {
                    *flipped_node == node && reason.contains(&*path.to_string_lossy())
                });
                if flipped {
                    self.ending = Some(Ending::CorruptionDetected(reason));
                } else {
                    self.checker.violations.push(Violation {
                        at_ms: self.now_ms,
                        text: format!("recovery refused data where no bit was flipped: {reason}"),
                    });
                    self.ending = Some(Ending::Drained);
                }
            }
            Err(StartFailure::Transient(reason)) => {
                debug(self.now_ms, &format!("start failed, will retry: {reason}"));
                self.count("start-failed-and-retried");
                let at = self.now_ms + between(&mut self.streams.faults, 50, 300);
                self.schedule_restart(node, at);
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

    pub(super) fn schedule_restart(&mut self, node: usize, at_ms: u64) {
        if !self.nodes[node].restart_scheduled {
            self.nodes[node].restart_scheduled = true;
            self.schedule(at_ms, Event::Restart(node));
        }
    }

    /// The process is gone: its connections drop for the clients, its leases end.
    pub(super) fn on_process_end(&mut self, node: usize) {
        self.checker.on_process_end(self.now_ms);
        let Some(epoch) = self.nodes[node].last_epoch() else {
            return;
        };
        for conn in self.network.open_on(node, epoch) {
            self.network.get_mut(conn).expect("open").closed_for_server = true;
            let at = self
                .network
                .arrival_at_client(conn, self.now_ms, &mut self.streams.network);
            self.schedule(at, Event::ClientClosed(conn));
        }
    }

    pub(super) fn begin_chaos(&mut self) {
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
            let node = self.streams.faults.below(self.nodes.len() as u64) as usize;
            self.schedule(at, Event::Fault(node, fault));
        }
    }

    pub(super) fn inject(&mut self, node: usize, fault: Fault) {
        if self.phase != Phase::Chaos {
            return;
        }
        match fault {
            Fault::Crash => {
                if self.nodes[node].process.is_none() {
                    return;
                }
                if chance(&mut self.streams.faults, 300) {
                    self.count("process-killed");
                    self.nodes[node].kill();
                } else {
                    let mode = self.nodes[node].crash_machine(&mut self.streams.disk);
                    self.count(mode);
                }
                self.on_process_end(node);
                let at = self.now_ms + between(&mut self.streams.faults, 10, 500);
                self.schedule_restart(node, at);
            }
            Fault::DiskErrorsOn => {
                self.nodes[node].disk.set_fault_plan(FaultPlan {
                    read_errors_per_million: 5_000,
                    write_errors_per_million: 2_000,
                    sync_errors_per_million: 5_000,
                    ..self.nodes[node].disk.fault_plan()
                });
            }
            Fault::DiskErrorsOff => self.nodes[node].disk.set_fault_plan(FaultPlan {
                disk_bytes_max: self.nodes[node].disk.fault_plan().disk_bytes_max,
                ..FaultPlan::default()
            }),
            Fault::DiskFull => {
                let room = between(&mut self.streams.faults, 0, 2_048);
                self.nodes[node].disk.set_fault_plan(FaultPlan {
                    disk_bytes_max: Some(self.nodes[node].disk.used_bytes() + room),
                    ..self.nodes[node].disk.fault_plan()
                });
            }
            Fault::DiskRoom => self.nodes[node].disk.set_fault_plan(FaultPlan {
                disk_bytes_max: None,
                ..self.nodes[node].disk.fault_plan()
            }),
            Fault::BitFlip => self.flip_bit(node),
            Fault::ClockJump => {
                self.count("clock-jump");
                let jump = between(&mut self.streams.clocks, 0, 6_000) as i64 - 3_000;
                self.nodes[node].wall_skew_ms += jump;
            }
        }
    }

    /// Flips one bit at rest in a segment that is not the newest of its log: storage must
    /// refuse it at the next start (the run then ends as `CorruptionDetected`) unless the
    /// segment was deleted first. The newest segment is spared because a flip in its last
    /// record looks exactly like a torn write, which recovery cuts off; only a replica can
    /// tell the two apart.
    pub(super) fn flip_bit(&mut self, node: usize) {
        let file_system = self.nodes[node].disk.file_system();
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
        let flipped = self.nodes[node]
            .disk
            .flip_random_bit_in(&mut self.streams.disk, |path| eligible.contains(path));
        if let Some(flipped) = flipped {
            self.flipped_files.push((node, flipped.path));
        }
    }

    pub(super) fn begin_drain(&mut self) {
        self.phase = Phase::Drain;
        for node in 0..self.nodes.len() {
            self.nodes[node].disk.set_fault_plan(FaultPlan::default());
            if self.nodes[node].process.is_none() {
                self.schedule_restart(node, self.now_ms);
            }
        }
    }
}
