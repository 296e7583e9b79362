//! What a crash leaves on the memory disk.
//!
//! Everything durable survives: every synced byte, every name whose directory was synced. Of
//! the rest, what survives depends on the [`CrashMode`] and on draws from the rng the crash is
//! given, so the same seed always leaves the same disk. After a crash every file and directory
//! is clean again: the disk holds exactly what the next process reads.

use krest_core::rng::Rng;

use super::faults::FaultStats;
use super::file_data::FileData;
use super::tree::Tree;

/// Writes reach the disk in whole sectors of this many bytes.
pub const SECTOR_BYTES: usize = 512;

/// Which of the unsynced changes a crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and every unsynced directory operation is lost.
    LoseUnsynced,
    /// Each file keeps a random prefix of its unsynced bytes, cut at a sector boundary (or the
    /// whole of them); when the cut falls past the durable end, the file may also keep its new
    /// length with zeros after the cut (the length reached the disk, the data did not). Every
    /// unsynced directory operation is lost.
    TornWrites,
    /// Each unsynced directory operation is kept or lost at random, independently of the others
    /// (harsher than journaling file systems, which keep them in order); every unsynced write is
    /// lost. An operation whose starting point was lost (renaming a name whose creation was
    /// lost) changes nothing.
    KeepSomeDirectoryOperations,
}

impl CrashMode {
    /// Every mode, for drawing one at random.
    pub const ALL: [CrashMode; 3] = [
        CrashMode::LoseUnsynced,
        CrashMode::TornWrites,
        CrashMode::KeepSomeDirectoryOperations,
    ];
}

/// Decides what of `tree` survives a crash in `mode`, counting what was kept and lost.
pub(super) fn crash(tree: &mut Tree, mode: CrashMode, rng: &mut Rng, stats: &mut FaultStats) {
    for operation in tree.take_pending() {
        let keep = mode == CrashMode::KeepSomeDirectoryOperations && rng.below(2) == 1;
        if keep {
            tree.apply_durably(&operation);
            stats.directory_operations_kept += 1;
        } else {
            stats.directory_operations_lost += 1;
        }
    }
    for file in tree.keep_only_durable_names() {
        if file.dirty_from().is_none() {
            continue;
        }
        let survived = match mode {
            CrashMode::TornWrites => torn(file, rng),
            CrashMode::LoseUnsynced | CrashMode::KeepSomeDirectoryOperations => {
                file.durable().to_vec()
            }
        };
        if survived != file.durable() {
            stats.torn_writes += 1;
        }
        file.settle(survived);
    }
    stats.crashes += 1;
}

/// The contents of `file` after a crash that wrote back the first sectors of its unsynced bytes.
fn torn(file: &FileData, rng: &mut Rng) -> Vec<u8> {
    let (current, durable) = (file.current(), file.durable());
    let dirty_from = file.dirty_from().expect("only unsynced files are torn");
    let first_dirty_sector = dirty_from - dirty_from % SECTOR_BYTES;
    let dirty_sectors = (current.len() - first_dirty_sector).div_ceil(SECTOR_BYTES);
    let kept_sectors = rng.below(dirty_sectors as u64 + 1) as usize;
    let kept_bytes = (first_dirty_sector + kept_sectors * SECTOR_BYTES).min(current.len());
    let mut survived = current[..kept_bytes].to_vec();
    if kept_bytes < durable.len() {
        survived.extend_from_slice(&durable[kept_bytes..]);
    } else if kept_bytes < current.len() && rng.below(2) == 1 {
        survived.resize(current.len(), 0);
    }
    survived
}
