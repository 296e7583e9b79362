//! Specifications of the log on the simulator's memory disk: what a crash leaves, and how every
//! injected fault surfaces. Each test runs with several fixed seeds.

use krest_core::rng::Rng;

use super::tests::{append_all, body};
use super::*;
use crate::file_system::FileSystem;
use crate::memory_disk::{CrashMode, FaultPlan, MemoryDisk, MemoryFileSystem, PER_MILLION};
use crate::record::Header;

/// The seeds every test here runs with.
const SEEDS: [u64; 8] = [1, 2, 3, 7, 42, 1234, 65_537, 987_654_321];

/// Where the log lives on the memory disk.
const DIRECTORY: &str = "/krest/logs/queue-1";

/// Small segments, so that a few dozen records span several of them.
const SEGMENT_BYTES: u64 = 400;

type MemoryLog = SegmentedLog<MemoryFileSystem>;

fn open_on(disk: &MemoryDisk) -> Result<(MemoryLog, Vec<StoredRecord>), StorageError> {
    let config = LogConfig {
        segment_bytes: SEGMENT_BYTES,
    };
    SegmentedLog::open_with(disk.file_system(), Path::new(DIRECTORY), config)
}

/// Appends `count` records after the log's last one, with bodies of 0 to 99 bytes drawn from
/// `rng`, and returns them.
fn append_some(log: &mut MemoryLog, count: u64, rng: &mut Rng) -> Vec<StoredRecord> {
    let first_index = log.last_index().map_or(1, |last| last + 1);
    let mut appended = Vec::new();
    for index in first_index..first_index + count {
        let size = rng.below(100) as usize;
        appended.extend(append_all(log, index..=index, size));
    }
    appended
}

/// The last index a crash cannot lose: the last synced one, or the last of the segments older
/// than the newest (the log syncs a segment before it starts the next).
fn durable_through(log: &MemoryLog) -> u64 {
    let newest_first_index = log.segments.last().map_or(1, |newest| newest.first_index);
    let synced_index = log.synced_index().unwrap_or(0);
    synced_index.max(newest_first_index - 1)
}

/// A log on a fresh disk holding synced records, then unsynced ones; returns the log, every
/// record appended, and how many of them a crash cannot lose.
fn synced_then_unsynced(rng: &mut Rng) -> (MemoryDisk, MemoryLog, Vec<StoredRecord>, usize) {
    let disk = MemoryDisk::new(rng.fork());
    let (mut log, recovered) = open_on(&disk).expect("open");
    assert!(recovered.is_empty());
    let synced_count = 1 + rng.below(30);
    let mut appended = append_some(&mut log, synced_count, rng);
    log.sync().expect("sync");
    let unsynced_count = 1 + rng.below(20);
    appended.extend(append_some(&mut log, unsynced_count, rng));
    let durable_count = durable_through(&log) as usize;
    assert!(durable_count >= synced_count as usize);
    (disk, log, appended, durable_count)
}

/// Checks that `recovered` is the first records of `appended`, at least `durable_count` of them,
/// and that the log takes and keeps the next record.
fn check_recovered_prefix(
    disk: &MemoryDisk,
    mut log: MemoryLog,
    recovered: &[StoredRecord],
    appended: &[StoredRecord],
    durable_count: usize,
) {
    assert!(
        recovered.len() >= durable_count,
        "a durable record was lost"
    );
    assert_eq!(recovered, &appended[..recovered.len()]);
    let next_index = recovered.len() as u64 + 1;
    log.append(2, next_index, b"after the crash")
        .expect("append after recovery");
    log.sync().expect("sync");
    drop(log);
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(0));
    let (_, reopened) = open_on(disk).expect("reopen");
    assert_eq!(reopened.len() as u64, next_index);
    assert_eq!(reopened.last().map(|record| record.term), Some(2));
}

// Every synced record (and every record of a segment the log moved past) survives a crash, and
// a crash that loses unsynced writes loses every other record.
#[test]
fn synced_records_survive_a_crash_and_unsynced_ones_are_lost() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let (disk, log, appended, durable_count) = synced_then_unsynced(&mut rng);
        drop(log);
        disk.crash_with(CrashMode::LoseUnsynced, &mut rng);
        let (log, recovered) = open_on(&disk).expect("reopen");
        assert_eq!(recovered, appended[..durable_count], "seed {seed}");
        check_recovered_prefix(&disk, log, &recovered, &appended, durable_count);
    }
}

// Opening a log creates its directory and every missing parent durably (each entry synced in
// its parent), so a crash right after the first sync loses none of them.
#[test]
fn every_directory_created_at_open_survives_a_crash() {
    let disk = MemoryDisk::new(Rng::from_seed(1));
    let (mut log, _) = open_on(&disk).expect("open");
    let appended = append_all(&mut log, 1..=3, 10);
    log.sync().expect("sync");
    drop(log);
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(2));
    let (_, recovered) = open_on(&disk).expect("reopen");
    assert_eq!(recovered, appended);
}

// A crash that tears the unsynced tail at a sector boundary (or zero-fills it) recovers a
// prefix of what was appended, never less than what was durable, and never reports corruption.
#[test]
fn a_torn_tail_recovers_a_prefix_never_corruption() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let (disk, log, appended, durable_count) = synced_then_unsynced(&mut rng);
        drop(log);
        disk.crash_with(CrashMode::TornWrites, &mut rng);
        let (log, recovered) = open_on(&disk).unwrap_or_else(|error| {
            panic!("seed {seed}: a torn tail is not corruption: {error}");
        });
        check_recovered_prefix(&disk, log, &recovered, &appended, durable_count);
    }
}

/// The byte offsets at which the records of `data` (a clean segment) start.
fn record_offsets(data: &[u8]) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        offsets.push(offset as u64);
        let header = Header::parse(data[offset..].first_chunk().expect("whole header"));
        offset += header.record_bytes() as usize;
    }
    offsets
}

// A bit flipped at rest inside a record of a segment that is not the newest is reported as
// corruption naming that file and the record's offset: on a read before the restart, and by
// recovery after it. It is never skipped.
#[test]
fn a_bit_flip_in_an_older_segment_is_corruption_at_its_file_and_offset() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let disk = MemoryDisk::new(rng.fork());
        let (mut log, _) = open_on(&disk).expect("open");
        append_some(&mut log, 40, &mut rng);
        log.sync().expect("sync");
        let older_count = log.segments.len() - 1;
        assert!(
            older_count >= 2,
            "seed {seed}: the records span several segments"
        );
        let segment = log.segments[1 + rng.below(older_count as u64 - 1) as usize].clone();
        let data = disk.file_system().read(&segment.path).expect("read");
        let offsets = record_offsets(&data);
        let chosen = rng.below(offsets.len() as u64) as usize;
        let record_end = offsets
            .get(chosen + 1)
            .copied()
            .unwrap_or(data.len() as u64);
        let record_start = offsets[chosen];
        let byte = record_start + rng.below(record_end - record_start);
        let bit = rng.below(8) as u8;
        disk.flip_bit(&segment.path, byte, bit).expect("flip");
        let index = segment.first_index + chosen as u64;
        let expect_corrupt = |result: Result<(), StorageError>| match result {
            Err(StorageError::Corrupt { path, offset, .. }) => {
                assert_eq!(
                    (path, offset),
                    (segment.path.clone(), record_start),
                    "seed {seed}"
                );
            }
            Err(other) => panic!("seed {seed}: expected corruption, got {other}"),
            Ok(_) => panic!("seed {seed}: expected corruption, the bad record was served"),
        };
        expect_corrupt(log.read_range(index, index, u64::MAX).map(drop));
        drop(log);
        disk.crash_with(CrashMode::LoseUnsynced, &mut rng);
        expect_corrupt(open_on(&disk).map(drop));
        assert_eq!(disk.stats().bit_flips, 1);
    }
}

// A flipped high bit in a record's length field makes a read report corruption without
// allocating what the length claims (up to 4 GiB): the length is checked against the segment.
#[test]
fn a_flipped_length_bit_is_corruption_before_any_allocation() {
    let mut rng = Rng::from_seed(SEEDS[0]);
    let disk = MemoryDisk::new(rng.fork());
    let (mut log, _) = open_on(&disk).expect("open");
    append_some(&mut log, 40, &mut rng);
    log.sync().expect("sync");
    let segment = log.segments[0].clone();
    let data = disk.file_system().read(&segment.path).expect("read");
    let second_record = record_offsets(&data)[1];
    // The length is the record's first four bytes, little-endian: bit 7 of byte 3 is 2^31.
    disk.flip_bit(&segment.path, second_record + 3, 7)
        .expect("flip");
    let index = segment.first_index + 1;
    match log.read_range(index, index, u64::MAX) {
        Err(StorageError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, second_record);
            assert!(reason.contains("announces a 2147483"), "{reason}");
        }
        other => panic!(
            "expected corruption, got {:?}",
            other.map(|records| records.len())
        ),
    }
}

// A failed fsync is an error from sync (and the log refuses more work), and the records it
// should have made durable are gone after a crash that loses unsynced writes.
#[test]
fn a_failed_fsync_is_an_error_and_its_records_are_not_durable() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let (disk, mut log, appended, durable_count) = synced_then_unsynced(&mut rng);
        disk.set_fault_plan(FaultPlan {
            sync_errors_per_million: PER_MILLION,
            ..FaultPlan::default()
        });
        match log.sync() {
            Err(StorageError::Io { operation, .. }) => assert_eq!(operation, "fsync"),
            other => panic!("seed {seed}: expected the fsync to fail, got {other:?}"),
        }
        assert!(matches!(
            log.append(1, appended.len() as u64 + 1, b"more"),
            Err(StorageError::Unusable { .. })
        ));
        assert_eq!(disk.stats().sync_errors, 1);
        drop(log);
        disk.set_fault_plan(FaultPlan::default());
        disk.crash_with(CrashMode::LoseUnsynced, &mut rng);
        let (log, recovered) = open_on(&disk).expect("reopen");
        assert_eq!(recovered, appended[..durable_count], "seed {seed}");
        check_recovered_prefix(&disk, log, &recovered, &appended, durable_count);
    }
}

// A full disk fails the append with an error saying the disk is full; the half-written record
// is cut back, so once there is room again the same record goes in and survives a crash.
#[test]
fn a_full_disk_is_an_error_saying_so_and_the_log_carries_on() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let disk = MemoryDisk::new(rng.fork());
        let (mut log, _) = open_on(&disk).expect("open");
        let mut appended = append_some(&mut log, 5, &mut rng);
        let room_bytes = 100 + rng.below(2_000);
        disk.set_fault_plan(FaultPlan {
            disk_bytes_max: Some(disk.used_bytes() + room_bytes),
            ..FaultPlan::default()
        });
        let (index, body) = loop {
            let index = appended.len() as u64 + 1;
            let body = body(index, 1 + rng.below(99) as usize);
            match log.append(1, index, &body) {
                Ok(()) => appended.push(StoredRecord {
                    term: 1,
                    index,
                    body: Bytes::from(body),
                }),
                Err(error) => {
                    let message = error.to_string();
                    assert!(
                        message.contains("the disk is full"),
                        "seed {seed}: {message}"
                    );
                    break (index, body);
                }
            }
        };
        assert_eq!(disk.stats().disk_full_errors, 1);
        disk.set_fault_plan(FaultPlan::default());
        log.append(1, index, &body)
            .expect("append once there is room");
        appended.push(StoredRecord {
            term: 1,
            index,
            body: Bytes::from(body),
        });
        log.sync().expect("sync");
        drop(log);
        disk.crash_with(CrashMode::LoseUnsynced, &mut rng);
        let (_, recovered) = open_on(&disk).expect("reopen");
        assert_eq!(recovered, appended, "seed {seed}");
    }
}

// A read error while recovering is an I/O error naming the file, never taken for corruption.
#[test]
fn a_read_error_at_open_is_an_io_error_not_corruption() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let (disk, log, _, _) = synced_then_unsynced(&mut rng);
        drop(log);
        disk.set_fault_plan(FaultPlan {
            read_errors_per_million: PER_MILLION,
            ..FaultPlan::default()
        });
        match open_on(&disk) {
            Err(StorageError::Io { operation, .. }) => assert_eq!(operation, "read"),
            Err(other) => panic!("seed {seed}: expected an I/O error, got {other}"),
            Ok(_) => panic!("seed {seed}: expected an I/O error, the log opened"),
        }
    }
}

// A write error fails the append with an I/O error; the records it did not write never come
// back, and a crash loses only what was not durable.
#[test]
fn a_write_error_fails_the_append_and_loses_only_unsynced_records() {
    for seed in SEEDS {
        let mut rng = Rng::from_seed(seed);
        let (disk, mut log, mut appended, _) = synced_then_unsynced(&mut rng);
        disk.set_fault_plan(FaultPlan {
            write_errors_per_million: PER_MILLION / 2,
            ..FaultPlan::default()
        });
        let attempt = |_| {
            let index = appended.len() as u64 + 1;
            let body = body(index, 10);
            let result = log.append(1, index, &body);
            if result.is_ok() {
                let body = Bytes::from(body);
                appended.push(StoredRecord {
                    term: 1,
                    index,
                    body,
                });
            }
            result.err()
        };
        match (0..1_000)
            .find_map(attempt)
            .expect("one write in two fails")
        {
            StorageError::Io { operation, .. } => assert_eq!(operation, "append a record to"),
            other => panic!("seed {seed}: expected a write error, got {other}"),
        }
        assert!(disk.stats().write_errors >= 1);
        let durable_count = durable_through(&log) as usize;
        drop(log);
        disk.set_fault_plan(FaultPlan::default());
        disk.crash_with(CrashMode::LoseUnsynced, &mut rng);
        let (_, recovered) = open_on(&disk).expect("reopen");
        assert_eq!(recovered, appended[..durable_count], "seed {seed}");
    }
}
