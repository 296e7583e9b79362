//! An in-memory disk for the deterministic simulator: the real log and recovery code runs on it
//! through [`MemoryFileSystem`], and the simulator crashes it and injects faults through
//! [`MemoryDisk`].
//!
//! The disk models durability the way the logs rely on it (see [`crate::file_system`]): each
//! file has durable bytes and unsynced ones, each directory durable names and unsynced ones. A
//! file sync makes the file's bytes durable; a directory sync makes the names created, removed
//! or renamed in that directory durable. [`MemoryDisk::crash`] throws away what is not durable,
//! keeping some of it as a [`CrashMode`] and the given rng decide.
//!
//! A [`MemoryDisk`] is the disk itself, shared by clones, and outlives the processes that use
//! it. [`MemoryDisk::file_system`] hands a process its view; a crash ends that process, so every
//! later call through a view (or a file opened through it) taken before the crash fails with an
//! I/O error and changes nothing. Locks are held per view and released by a crash.
//!
//! Faults, each counted in [`FaultStats`]:
//!
//! - read, write and sync errors, each with a probability per operation ([`FaultPlan`]), drawn
//!   from the disk's own seeded rng; a failed sync makes nothing durable;
//! - a full disk: writes past [`FaultPlan::disk_bytes_max`] write what fits and fail with
//!   `io::ErrorKind::StorageFull`;
//! - bits flipped at rest in durable data ([`MemoryDisk::flip_bit`],
//!   [`MemoryDisk::flip_random_bit`]);
//! - crashes ([`MemoryDisk::crash`]): unsynced writes lost, torn at a sector boundary, or a
//!   random subset of the unsynced directory operations kept.
//!
//! Nothing here reads a clock or an unseeded random number, and every map is ordered, so the
//! same seeds and the same calls always leave the same disk.

mod crash;
mod faults;
mod file_data;
mod memory_file_system;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use krest_core::rng::Rng;

pub use crash::{CrashMode, SECTOR_BYTES};
pub use faults::{FaultPlan, FaultStats, PER_MILLION};
pub use memory_file_system::{MemoryAppendFile, MemoryFileSystem, MemoryLock, MemoryReadFile};

use faults::Faults;
use tree::{InodeId, Tree};

/// The disk every process of one simulated node uses, across its crashes. Clones share it.
#[derive(Clone)]
pub struct MemoryDisk {
    state: Arc<Mutex<DiskState>>,
}

/// One bit [`MemoryDisk::flip_random_bit`] flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlippedBit {
    /// The file it is in.
    pub path: PathBuf,
    /// The byte it is in, from the start of the file.
    pub byte_offset: u64,
    /// Which bit of the byte, 0 (the least significant) to 7.
    pub bit: u8,
}

/// Everything behind the disk's lock.
#[derive(Debug)]
struct DiskState {
    tree: Tree,
    faults: Faults,
    /// Counts crashes; a view taken before the latest crash is dead.
    epoch: u64,
    /// The lock files held, each by the holder's token.
    locks: BTreeMap<InodeId, u64>,
    next_lock_token: u64,
}

impl DiskState {
    /// How many more bytes the disk takes; `None`: no limit.
    fn room_bytes(&self) -> Option<u64> {
        let disk_bytes_max = self.faults.plan.disk_bytes_max?;
        Some(disk_bytes_max.saturating_sub(self.tree.used_bytes()))
    }
}

impl MemoryDisk {
    /// An empty disk (only `/`) injecting no faults; `fault_rng` decides the faults of any
    /// [`FaultPlan`] set later.
    pub fn new(fault_rng: Rng) -> MemoryDisk {
        let state = DiskState {
            tree: Tree::new(),
            faults: Faults::new(fault_rng),
            epoch: 0,
            locks: BTreeMap::new(),
            next_lock_token: 0,
        };
        MemoryDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The view of the disk for the process starting now; it dies at the next crash.
    pub fn file_system(&self) -> MemoryFileSystem {
        let epoch = self.lock().epoch;
        MemoryFileSystem::new(Arc::clone(&self.state), epoch)
    }

    /// Switches faults on or off from now on.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        self.lock().faults.plan = plan;
    }

    /// The faults injected now.
    pub fn fault_plan(&self) -> FaultPlan {
        self.lock().faults.plan
    }

    /// How many times each fault fired so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().faults.stats
    }

    /// The bytes taken by every file still reachable (by processes or after a crash).
    pub fn used_bytes(&self) -> u64 {
        self.lock().tree.used_bytes()
    }

    /// Crashes the machine in a [`CrashMode`] drawn from `rng`, and returns the mode.
    pub fn crash(&self, rng: &mut Rng) -> CrashMode {
        let mode = CrashMode::ALL[rng.below(CrashMode::ALL.len() as u64) as usize];
        self.crash_with(mode, rng);
        mode
    }

    /// Crashes the machine: what is not durable is lost, except what `mode` and `rng` keep.
    /// Every view and open file taken before is dead from now on, and every lock is released.
    pub fn crash_with(&self, mode: CrashMode, rng: &mut Rng) {
        let mut state = self.lock();
        let state = &mut *state;
        crash::crash(&mut state.tree, mode, rng, &mut state.faults.stats);
        state.epoch += 1;
        state.locks.clear();
    }

    /// Flips bit `bit` (0 to 7) of the durable byte at `byte_offset` of the file at `path`.
    /// Fails when there is no such file or the byte is not durable.
    pub fn flip_bit(&self, path: &Path, byte_offset: u64, bit: u8) -> io::Result<()> {
        assert!(bit < 8, "a byte has bits 0 to 7, not {bit}");
        let mut state = self.lock();
        let inode = state.tree.lookup(path)?;
        let file = state.tree.file_mut(inode)?;
        let offset = usize::try_from(byte_offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        if offset >= file.durable().len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("byte {byte_offset} of {} is not durable", path.display()),
            ));
        }
        file.flip_durable_bit(offset, bit);
        state.faults.stats.bit_flips += 1;
        Ok(())
    }

    /// Flips one bit, drawn from `rng`, of the durable data of a file drawn from `rng` among
    /// those holding durable data. `None` when no file does.
    pub fn flip_random_bit(&self, rng: &mut Rng) -> Option<FlippedBit> {
        self.flip_random_bit_in(rng, |_| true)
    }

    /// [`MemoryDisk::flip_random_bit`] among the files whose path `eligible` accepts (the
    /// simulator spares the newest segment of each log, where a flipped last record cannot be
    /// told from a torn write).
    pub fn flip_random_bit_in(
        &self,
        rng: &mut Rng,
        eligible: impl Fn(&Path) -> bool,
    ) -> Option<FlippedBit> {
        let candidates: Vec<(PathBuf, u64)> = {
            let state = self.lock();
            let files = state
                .tree
                .files()
                .into_iter()
                .filter(|(path, _)| eligible(path));
            let sized = files.map(|(path, inode)| {
                let durable_bytes = state
                    .tree
                    .file(inode)
                    .map_or(0, |file| file.durable().len());
                (path, durable_bytes as u64)
            });
            sized
                .filter(|(_, durable_bytes)| *durable_bytes > 0)
                .collect()
        };
        if candidates.is_empty() {
            return None;
        }
        let (path, durable_bytes) = &candidates[rng.below(candidates.len() as u64) as usize];
        let byte_offset = rng.below(*durable_bytes);
        let bit = rng.below(8) as u8;
        self.flip_bit(path, byte_offset, bit)
            .expect("a durable byte of a listed file");
        Some(FlippedBit {
            path: path.clone(),
            byte_offset,
            bit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        lock_state(&self.state)
    }
}

impl fmt::Debug for MemoryDisk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        formatter
            .debug_struct("MemoryDisk")
            .field("epoch", &state.epoch)
            .field("plan", &state.faults.plan)
            .field("stats", &state.faults.stats)
            .finish_non_exhaustive()
    }
}

/// Locks the disk's state. A poisoned lock means a panic (a failed assertion) that ends the test
/// or the simulation anyway; taking it over lets the drops that follow (a lock being released)
/// run without a second panic.
fn lock_state(state: &Mutex<DiskState>) -> MutexGuard<'_, DiskState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
