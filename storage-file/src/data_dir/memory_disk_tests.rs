//! Specifications of a data directory on the simulator's memory disk, across crashes that keep
//! any subset of the unsynced directory operations.

use std::collections::BTreeMap;

use krest_core::rng::Rng;

use super::*;
use crate::memory_disk::{CrashMode, MemoryDisk, MemoryFileSystem};

/// The seeds the crash test runs with.
const SEEDS: [u64; 16] = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    42,
    99,
    1234,
    4321,
    65_537,
    271_828,
    314_159,
    987_654_321,
];

/// Where the data directory lives on the memory disk.
const ROOT: &str = "/krest";

/// The logs the workload picks from.
const LOG_NAMES: [&str; 3] = ["meta", "queue-1", "queue-2"];

/// Crashes (and recoveries) per seed, and workload steps between two crashes.
const CRASHES_PER_SEED: u64 = 4;
const STEPS_PER_CRASH: usize = 60;

type MemoryDataDir = DataDir<MemoryFileSystem>;
type Logs = BTreeMap<String, SegmentedLog<MemoryFileSystem>>;

fn open_on(
    disk: &MemoryDisk,
) -> Result<(MemoryDataDir, Vec<RecoveredLog<MemoryFileSystem>>), StorageError> {
    let config = LogConfig { segment_bytes: 200 };
    DataDir::open_with(disk.file_system(), Path::new(ROOT), config)
}

/// A body the checks can recognise from the record's index and term.
fn body_for(index: u64, term: u64) -> Vec<u8> {
    format!("record {index} of term {term}").into_bytes()
}

/// Checks that a recovered log holds consecutive indexes, each with the body written for it.
fn check_recovered(name: &str, records: &[StoredRecord], seed: u64) {
    for pair in records.windows(2) {
        assert_eq!(
            pair[1].index,
            pair[0].index + 1,
            "seed {seed}: {name} has a gap"
        );
    }
    for record in records {
        let expected = body_for(record.index, record.term);
        assert_eq!(
            record.body, expected,
            "seed {seed}: {name} has a foreign record"
        );
    }
}

/// One step of the workload on a log drawn from `rng`: append, sync, delete old segments,
/// truncate, or destroy the log (a missing log is created first).
fn step(data_dir: &mut MemoryDataDir, logs: &mut Logs, term: u64, rng: &mut Rng) {
    let name = LOG_NAMES[rng.below(LOG_NAMES.len() as u64) as usize];
    if !logs.contains_key(name) {
        logs.insert(name.to_string(), data_dir.create_log(name).expect("create"));
    }
    let log = logs.get_mut(name).expect("present");
    let (first_index, last_index) = (
        log.first_index().unwrap_or(1),
        log.last_index().unwrap_or(0),
    );
    match rng.below(10) {
        0..=4 => {
            for index in last_index + 1..=last_index + 1 + rng.below(4) {
                log.append(term, index, &body_for(index, term))
                    .expect("append");
            }
        }
        5 | 6 => drop(log.sync().expect("sync")),
        7 => {
            let below = first_index + rng.below(last_index + 2 - first_index);
            log.delete_segments_below(below).expect("delete");
        }
        8 => {
            let after = (first_index - 1) + rng.below(last_index + 2 - first_index);
            log.truncate_after(after).expect("truncate");
        }
        _ => {
            let log = logs.remove(name).expect("present");
            log.destroy().expect("destroy");
        }
    }
}

// Whatever subset of the unsynced directory operations a crash keeps (segment files created and
// deleted, logs created and destroyed), recovery never panics: it either recovers logs of
// consecutive records that were all written, or refuses a gap between segments (left when a
// crash keeps the deletion of a segment but loses that of an older one).
#[test]
fn a_crash_keeping_some_directory_operations_never_makes_recovery_panic() {
    let (mut recoveries, mut refusals) = (0, 0);
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let disk = MemoryDisk::new(rng.fork());
        for term in 1..=CRASHES_PER_SEED {
            let (mut data_dir, recovered) = match open_on(&disk) {
                Ok(opened) => opened,
                // Only a deletion kept while an older one was lost leaves such a gap; a
                // journaling file system keeps directory operations in order.
                Err(StorageError::Corrupt { reason, .. }) => {
                    assert!(
                        reason.contains("the previous segment ends"),
                        "seed {seed}: {reason}"
                    );
                    refusals += 1;
                    break;
                }
                Err(other) => panic!("seed {seed}: recovery failed with {other}"),
            };
            recoveries += 1;
            let mut logs = Logs::new();
            for (name, log, records) in recovered {
                check_recovered(&name, &records, seed);
                logs.insert(name, log);
            }
            for _ in 0..STEPS_PER_CRASH {
                step(&mut data_dir, &mut logs, term, &mut rng);
            }
            disk.crash_with(CrashMode::KeepSomeDirectoryOperations, &mut rng);
        }
    }
    assert!(
        recoveries > 2 * refusals,
        "{recoveries} recoveries, {refusals} refusals: most crashes must be recovered from"
    );
}

// On the memory disk too, a second data directory on the same root is refused while the first
// is open, and a crash releases the lock.
#[test]
fn the_memory_disk_lock_refuses_a_second_open_until_a_crash() {
    let disk = MemoryDisk::new(Rng::from_seed(1));
    let (first, _) = open_on(&disk).expect("first open");
    assert!(matches!(open_on(&disk), Err(StorageError::Locked { .. })));
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(2));
    open_on(&disk).expect("open after the crash");
    drop(first);
}
