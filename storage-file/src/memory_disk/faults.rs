//! The faults the memory disk injects on its own, and the count of every fault that fired.
//!
//! Each per-operation fault is one draw from the disk's seeded [`Rng`], made only while that
//! fault is switched on, so a plan with every probability at zero draws nothing and the same
//! seed with the same plan and the same operations fails the same operations.

use std::io;

use krest_core::rng::Rng;

/// Probabilities are given out of this many operations.
pub const PER_MILLION: u32 = 1_000_000;

/// Which faults the memory disk injects, switched on and off by the simulator at any time.
/// The default injects none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Out of a million reads (a whole-file read, or one read call on an open file), how many
    /// fail with an I/O error.
    pub read_errors_per_million: u32,
    /// Out of a million writes (appends and length changes), how many fail with an I/O error
    /// before writing anything.
    pub write_errors_per_million: u32,
    /// Out of a million syncs (of a file or a directory), how many fail with an I/O error. A
    /// failed sync makes nothing durable; what it should have covered stays unsynced, so a later
    /// sync that succeeds (by a log reopened without a crash) still makes it durable. (Linux may
    /// instead mark such pages clean and lose them; this disk does not model that.)
    pub sync_errors_per_million: u32,
    /// The disk holds at most this many bytes of files; a write that would pass it writes what
    /// fits and fails with `io::ErrorKind::StorageFull`. `None`: no limit.
    pub disk_bytes_max: Option<u64>,
}

/// How many times each fault fired since the disk was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Reads that failed by the plan.
    pub read_errors: u64,
    /// Writes that failed by the plan.
    pub write_errors: u64,
    /// Syncs that failed by the plan.
    pub sync_errors: u64,
    /// Writes refused (in whole or in part) because the disk was full.
    pub disk_full_errors: u64,
    /// Bits flipped at rest.
    pub bit_flips: u64,
    /// Crashes.
    pub crashes: u64,
    /// Files of which a crash kept some unsynced bytes (a torn write).
    pub torn_writes: u64,
    /// Unsynced directory operations a crash kept.
    pub directory_operations_kept: u64,
    /// Unsynced directory operations a crash lost.
    pub directory_operations_lost: u64,
}

/// The plan, the rng that decides each fault, and the counts.
#[derive(Debug)]
pub(super) struct Faults {
    pub(super) plan: FaultPlan,
    pub(super) stats: FaultStats,
    rng: Rng,
}

impl Faults {
    pub(super) fn new(rng: Rng) -> Faults {
        Faults {
            plan: FaultPlan::default(),
            stats: FaultStats::default(),
            rng,
        }
    }

    /// Fails a read when the plan says so.
    pub(super) fn on_read(&mut self) -> io::Result<()> {
        if !fires(&mut self.rng, self.plan.read_errors_per_million) {
            return Ok(());
        }
        self.stats.read_errors += 1;
        Err(io::Error::other("injected read error (memory disk)"))
    }

    /// Fails a write when the plan says so.
    pub(super) fn on_write(&mut self) -> io::Result<()> {
        if !fires(&mut self.rng, self.plan.write_errors_per_million) {
            return Ok(());
        }
        self.stats.write_errors += 1;
        Err(io::Error::other("injected write error (memory disk)"))
    }

    /// Fails a sync when the plan says so.
    pub(super) fn on_sync(&mut self) -> io::Result<()> {
        if !fires(&mut self.rng, self.plan.sync_errors_per_million) {
            return Ok(());
        }
        self.stats.sync_errors += 1;
        Err(io::Error::other("injected fsync error (memory disk)"))
    }

    /// Counts a write the full disk refused and returns its error.
    pub(super) fn disk_full(&mut self) -> io::Error {
        self.stats.disk_full_errors += 1;
        let disk_bytes_max = self.plan.disk_bytes_max.unwrap_or(0);
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!("the memory disk holds at most {disk_bytes_max} bytes"),
        )
    }
}

/// Draws whether a fault with `per_million` chances in a million fires; no draw at zero.
fn fires(rng: &mut Rng, per_million: u32) -> bool {
    per_million > 0 && rng.below(u64::from(PER_MILLION)) < u64::from(per_million)
}
