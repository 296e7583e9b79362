//! Benchmarks of the file storage on a real directory (the system's temporary directory, or
//! `KREST_BENCH_DIR`): what the storage thread does for the core.
//!
//! - `append_group_commit/{1KiB,64KiB}`: one batch as the core sends it under load (an
//!   `Append` of a window of records, then a `Sync`) through [`StorageExecutor::execute_batch`]:
//!   the writes and one fdatasync. 256 records of 1 KiB, or 16 of 64 KiB (1 MiB) per fsync.
//! - `recovery`: reopening a data directory holding `KREST_BENCH_RECOVERY_MIB` MiB (default 64)
//!   of 1 KiB records, every record read back and checked. The files are in the page cache;
//!   scale the figure for a target per GiB.
//!
//! Run with `cargo bench -p krest-storage-file`; each bench runs a few seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use krest_core::ids::{LogIndex, QueueId, Term};
use krest_core::{LogId, LogRecord, StorageDone, StorageRequest};
use krest_storage_file::StorageExecutor;

/// Segment size used by the benches (the server's default is 64 MiB).
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// A directory removed when dropped.
struct BenchDirectory(PathBuf);

impl BenchDirectory {
    fn new(name: &str) -> BenchDirectory {
        let base = std::env::var_os("KREST_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("krest-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the bench directory can be created");
        BenchDirectory(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BenchDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends batches of records to one log and syncs each batch, as the core asks.
struct Appender {
    executor: StorageExecutor,
    log: LogId,
    next_index: u64,
    payload: Bytes,
    records_per_batch: u64,
}

impl Appender {
    fn new(directory: &Path, payload_bytes: usize, records_per_batch: u64) -> Appender {
        let (mut executor, _) =
            StorageExecutor::open(directory, SEGMENT_BYTES).expect("the data directory opens");
        let log = LogId::Queue(QueueId(1));
        let done = executor.execute_batch(vec![StorageRequest::CreateLog { log }]);
        assert!(done.is_empty(), "{done:?}");
        Appender {
            executor,
            log,
            next_index: 1,
            payload: Bytes::from(vec![b'x'; payload_bytes]),
            records_per_batch,
        }
    }

    /// One batch: append, sync, and now and then let go of old segments (so the bench's disk
    /// use stays bounded, as a consumed queue's does).
    fn batch(&mut self) {
        let log = self.log;
        let first = self.next_index;
        self.next_index += self.records_per_batch;
        let records = (first..self.next_index)
            .map(|index| LogRecord {
                term: Term(1),
                index: LogIndex(index),
                body: self.payload.clone(),
            })
            .collect();
        let mut requests = vec![
            StorageRequest::Append { log, records },
            StorageRequest::Sync { log },
        ];
        let keep_bytes = 2 * SEGMENT_BYTES;
        let keep_records = keep_bytes / self.payload.len() as u64;
        if first % (keep_records / 2).max(1) < self.records_per_batch && first > keep_records {
            requests.push(StorageRequest::DeleteSegmentsBelow {
                log,
                index: LogIndex(first - keep_records),
            });
        }
        let done = self.executor.execute_batch(requests);
        assert!(
            matches!(done.first(), Some(StorageDone::Synced { through, .. }) if through.0 == self.next_index - 1),
            "{done:?}"
        );
    }
}

fn append_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("append_group_commit");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for (label, payload_bytes, records_per_batch) in [("1KiB", 1024, 256), ("64KiB", 65_536, 16)] {
        let directory = BenchDirectory::new(&format!("append-{label}"));
        let mut appender = Appender::new(directory.path(), payload_bytes, records_per_batch);
        group.throughput(Throughput::Bytes(payload_bytes as u64 * records_per_batch));
        group.bench_function(label, |bencher| bencher.iter(|| appender.batch()));
        drop(appender);
    }
    group.finish();
}

fn recovery_benches(criterion: &mut Criterion) {
    let mebibytes: u64 = std::env::var("KREST_BENCH_RECOVERY_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64);
    let directory = BenchDirectory::new("recovery");
    let payload_bytes = 1024;
    let records_per_batch = 1024;
    {
        let mut appender = Appender::new(directory.path(), payload_bytes, records_per_batch);
        let batches = mebibytes * 1024 * 1024 / (payload_bytes as u64 * records_per_batch);
        for _ in 0..batches {
            appender.batch();
        }
    }
    let mut group = criterion.benchmark_group("recovery");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(mebibytes * 1024 * 1024));
    group.bench_function(format!("{mebibytes}MiB_of_1KiB_records"), |bencher| {
        bencher.iter(|| {
            let (executor, recovered) =
                StorageExecutor::open(directory.path(), SEGMENT_BYTES).expect("reopens");
            assert_eq!(recovered.logs.len(), 1);
            drop(executor);
            recovered
        })
    });
    group.finish();
}

criterion_group!(benches, append_benches, recovery_benches);
criterion_main!(benches);
