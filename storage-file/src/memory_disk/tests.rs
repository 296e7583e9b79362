//! Specifications of the memory disk itself: what is durable when, what a crash keeps, locks,
//! dead views, and the faults it injects.

use std::path::Path;

use krest_core::rng::Rng;

use super::*;
use crate::file_system::{AppendFile, EntryKind, FileSystem};

/// Seeds every randomised test here runs with.
const SEEDS: [u64; 6] = [1, 2, 3, 42, 1234, 987_654_321];

/// A disk whose root holds the synced directory `/data`.
fn disk_with_data_directory() -> (MemoryDisk, MemoryFileSystem) {
    let disk = MemoryDisk::new(Rng::from_seed(0));
    let file_system = disk.file_system();
    file_system
        .create_directory(Path::new("/data"))
        .expect("create");
    file_system.sync_directory(Path::new("/")).expect("sync");
    (disk, file_system)
}

/// Creates `path` holding `bytes`, synced, with its name synced too.
fn write_durably(file_system: &MemoryFileSystem, path: &Path, bytes: &[u8]) -> MemoryAppendFile {
    let mut file = file_system.create_for_append(path).expect("create");
    file.append(bytes).expect("append");
    file.sync_data().expect("sync");
    let parent = path.parent().expect("a parent");
    file_system.sync_directory(parent).expect("sync");
    file
}

// A file whose data was synced but whose directory was not is gone after a crash; once the
// directory is synced, the file and its synced bytes survive every crash mode.
#[test]
fn a_name_is_durable_only_once_its_directory_is_synced() {
    let (disk, file_system) = disk_with_data_directory();
    let path = Path::new("/data/a.seg");
    let mut file = file_system.create_for_append(path).expect("create");
    file.append(b"hello").expect("append");
    file.sync_data().expect("sync");
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(1));
    assert_eq!(
        disk.file_system()
            .read(path)
            .map_err(|error| error.kind())
            .unwrap_err(),
        io::ErrorKind::NotFound
    );
    for mode in CrashMode::ALL {
        let file_system = disk.file_system();
        write_durably(&file_system, Path::new("/data/b.seg"), b"kept");
        disk.crash_with(mode, &mut Rng::from_seed(2));
        let after = disk.file_system();
        assert_eq!(after.read(Path::new("/data/b.seg")).expect("read"), b"kept");
        after.remove_file(Path::new("/data/b.seg")).expect("remove");
        after.sync_directory(Path::new("/data")).expect("sync");
    }
}

// A crash that loses unsynced writes brings every file back to its last sync, truncations
// included.
#[test]
fn a_crash_losing_unsynced_writes_restores_the_last_sync() {
    let (disk, file_system) = disk_with_data_directory();
    let path = Path::new("/data/a.seg");
    let mut file = write_durably(&file_system, path, b"synced");
    file.append(b" and not synced").expect("append");
    assert_eq!(
        file_system.read(path).expect("read"),
        b"synced and not synced"
    );
    file.set_len(3).expect("cut");
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(3));
    assert_eq!(disk.file_system().read(path).expect("read"), b"synced");
}

// A torn write keeps whole sectors of the unsynced bytes (none, some, or all of them), and never
// changes a durable byte; past the cut it may keep the new length, with zeros.
#[test]
fn a_torn_write_keeps_a_sector_aligned_prefix_of_the_unsynced_bytes() {
    let durable: Vec<u8> = (0..700u32).map(|byte| byte as u8).collect();
    let unsynced = vec![0xAB; 3000];
    let mut whole = durable.clone();
    whole.extend_from_slice(&unsynced);
    for seed in SEEDS {
        let (disk, file_system) = disk_with_data_directory();
        let path = Path::new("/data/a.seg");
        let mut file = write_durably(&file_system, path, &durable);
        file.append(&unsynced).expect("append");
        disk.crash_with(CrashMode::TornWrites, &mut Rng::from_seed(seed));
        let survived = disk.file_system().read(path).expect("read");
        let kept_bytes = survived
            .iter()
            .zip(&whole)
            .take_while(|(left, right)| left == right)
            .count();
        assert!(
            kept_bytes >= durable.len(),
            "seed {seed}: durable bytes lost"
        );
        let whole_sectors = kept_bytes % SECTOR_BYTES == 0
            || kept_bytes == durable.len()
            || kept_bytes == whole.len();
        assert!(whole_sectors, "seed {seed}: kept {kept_bytes} bytes");
        let rest = &survived[kept_bytes..];
        let zero_filled = survived.len() == whole.len() && rest.iter().all(|byte| *byte == 0);
        assert!(
            rest.is_empty() || zero_filled,
            "seed {seed}: garbage after the cut"
        );
    }
}

// A rename is atomic: after a crash the directory holds the old name or the new one, the new
// one for certain once the directory was synced.
#[test]
fn a_rename_is_atomic_and_durable_once_its_directory_is_synced() {
    for seed in SEEDS {
        let (disk, file_system) = disk_with_data_directory();
        file_system
            .create_directory(Path::new("/data/q"))
            .expect("create");
        file_system
            .sync_directory(Path::new("/data"))
            .expect("sync");
        write_durably(&file_system, Path::new("/data/q/1.seg"), b"one");
        file_system
            .rename(Path::new("/data/q"), Path::new("/data/q.deleting"))
            .expect("rename");
        disk.crash_with(
            CrashMode::KeepSomeDirectoryOperations,
            &mut Rng::from_seed(seed),
        );
        let after = disk.file_system();
        let names = names_in(&after, Path::new("/data"));
        assert!(
            names == ["q"] || names == ["q.deleting"],
            "seed {seed}: {names:?}"
        );
        let renamed = Path::new("/data").join(&names[0]);
        after
            .rename(&renamed, Path::new("/data/r"))
            .expect("rename");
        after.sync_directory(Path::new("/data")).expect("sync");
        disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(seed));
        let after = disk.file_system();
        assert_eq!(names_in(&after, Path::new("/data")), ["r"]);
        assert_eq!(
            after.read(Path::new("/data/r/1.seg")).expect("read"),
            b"one"
        );
    }
}

fn names_in(file_system: &MemoryFileSystem, directory: &Path) -> Vec<String> {
    let entries = file_system.list_directory(directory).expect("list");
    let names = entries.iter().map(|entry| {
        assert_eq!(entry.kind, EntryKind::Directory);
        crate::files::entry_name(&entry.path).expect("utf-8")
    });
    names.collect()
}

// A lock is exclusive, released when dropped, and released by a crash; a lock dropped after a
// crash does not release the lock of the next process.
#[test]
fn a_lock_is_exclusive_until_dropped_or_a_crash() {
    let (disk, file_system) = disk_with_data_directory();
    let path = Path::new("/data/LOCK");
    let first = file_system.try_lock(path).expect("lock").expect("free");
    assert!(disk.file_system().try_lock(path).expect("lock").is_none());
    drop(first);
    let second = file_system
        .try_lock(path)
        .expect("lock")
        .expect("free again");
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(4));
    let after = disk.file_system();
    let third = after
        .try_lock(path)
        .expect("lock")
        .expect("released by the crash");
    drop(second);
    assert!(after.try_lock(path).expect("lock").is_none(), "still held");
    drop(third);
}

// A view taken before a crash, and the files opened through it, can no longer read or change
// anything.
#[test]
fn a_crashed_process_can_no_longer_touch_the_disk() {
    let (disk, file_system) = disk_with_data_directory();
    let path = Path::new("/data/a.seg");
    let mut file = write_durably(&file_system, path, b"durable");
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(5));
    assert!(file.append(b"from the dead").is_err());
    assert!(file.sync_data().is_err());
    assert!(file_system.read(path).is_err());
    assert!(file_system.remove_file(path).is_err());
    assert_eq!(disk.file_system().read(path).expect("read"), b"durable");
}

// Every fault of the plan fires, fails its operation with an error, and is counted; a failed
// sync makes nothing durable.
#[test]
fn every_fault_fires_and_is_counted() {
    let (disk, file_system) = disk_with_data_directory();
    let path = Path::new("/data/a.seg");
    let mut file = write_durably(&file_system, path, b"durable");
    let always = FaultPlan {
        read_errors_per_million: PER_MILLION,
        write_errors_per_million: PER_MILLION,
        sync_errors_per_million: PER_MILLION,
        disk_bytes_max: None,
    };
    disk.set_fault_plan(always);
    assert!(file_system.read(path).is_err());
    assert!(file.append(b"x").is_err());
    disk.set_fault_plan(FaultPlan {
        write_errors_per_million: 0,
        ..always
    });
    file.append(b" unsynced").expect("append");
    assert!(file.sync_data().is_err());
    disk.set_fault_plan(FaultPlan {
        disk_bytes_max: Some(disk.used_bytes() + 4),
        ..FaultPlan::default()
    });
    let full = file.append(b"123456").expect_err("full");
    assert_eq!(full.kind(), io::ErrorKind::StorageFull);
    let flipped = disk
        .flip_random_bit(&mut Rng::from_seed(6))
        .expect("a file");
    assert_eq!(flipped.path, path);
    disk.crash_with(CrashMode::LoseUnsynced, &mut Rng::from_seed(7));
    let survived = disk.file_system().read(path).expect("read");
    assert_eq!(
        survived.len(),
        b"durable".len(),
        "the failed sync made nothing durable"
    );
    assert_ne!(survived, b"durable", "one bit is flipped");
    let stats = disk.stats();
    assert_eq!(
        (stats.read_errors, stats.write_errors, stats.sync_errors),
        (1, 1, 1)
    );
    assert_eq!(
        (stats.disk_full_errors, stats.bit_flips, stats.crashes),
        (1, 1, 1)
    );
}

// The same seeds and the same calls leave the same disk, byte for byte.
#[test]
fn the_same_seed_leaves_the_same_disk() {
    let run = |seed: u64| {
        let (disk, file_system) = disk_with_data_directory();
        disk.set_fault_plan(FaultPlan {
            write_errors_per_million: PER_MILLION / 4,
            ..FaultPlan::default()
        });
        let mut file = write_durably(&file_system, Path::new("/data/a.seg"), b"start");
        for round in 0..50u8 {
            let _ = file.append(&[round; 300]);
        }
        let mode = disk.crash(&mut Rng::from_seed(seed));
        let contents = disk
            .file_system()
            .read(Path::new("/data/a.seg"))
            .expect("read");
        (mode, contents, disk.stats())
    };
    for seed in SEEDS {
        assert_eq!(run(seed), run(seed), "seed {seed}");
    }
}
