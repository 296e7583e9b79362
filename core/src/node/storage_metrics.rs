//! Storage metrics: a histogram of fsync durations and the bytes of each log on disk, fed by
//! `StorageDone::Measured` and written as Prometheus text by the admin `/metrics` route.
//!
//! The histogram has fixed buckets (cumulative, as Prometheus expects), so its memory is
//! bounded and its output order is stable.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::io::LogId;

/// Upper bounds of the fsync histogram's buckets, in microseconds (then `+Inf`).
const FSYNC_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct StorageMetrics {
    /// Syncs per bucket (not cumulative); the last slot counts those above every bound.
    fsync_counts: [u64; FSYNC_BUCKETS_MICROS.len() + 1],
    fsync_sum_micros: u64,
    /// The latest size of each log.
    log_bytes: BTreeMap<LogId, u64>,
}

impl StorageMetrics {
    /// One sync of `log` took `sync_micros`; the log now holds `log_bytes`.
    pub(super) fn record(&mut self, log: LogId, sync_micros: u64, log_bytes: u64) {
        let bucket = FSYNC_BUCKETS_MICROS
            .iter()
            .position(|bound| sync_micros <= *bound)
            .unwrap_or(FSYNC_BUCKETS_MICROS.len());
        self.fsync_counts[bucket] += 1;
        self.fsync_sum_micros = self.fsync_sum_micros.saturating_add(sync_micros);
        self.log_bytes.insert(log, log_bytes);
    }

    /// Appends the metrics; `live` says which logs still exist (a deleted log is not shown).
    pub(super) fn write_text(&self, out: &mut String, live: impl Fn(&LogId) -> bool) {
        let name = "krest_fsync_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time one log fsync took.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in FSYNC_BUCKETS_MICROS.iter().zip(&self.fsync_counts) {
            cumulative += count;
            let seconds = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{seconds}\"}} {cumulative}");
        }
        cumulative += self.fsync_counts[FSYNC_BUCKETS_MICROS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.fsync_sum_micros as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
        let name = "krest_storage_bytes";
        let _ = writeln!(out, "# HELP {name} Bytes of each log's segment files.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (log, bytes) in self.log_bytes.iter().filter(|(log, _)| live(log)) {
            let _ = writeln!(out, "{name}{{log=\"{}\"}} {bytes}", log.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::QueueId;

    #[test]
    fn the_histogram_is_cumulative_and_only_live_logs_are_shown() {
        let mut metrics = StorageMetrics::default();
        metrics.record(LogId::Metadata, 80, 100);
        metrics.record(LogId::Queue(QueueId(1)), 3_000, 4_096);
        metrics.record(LogId::Queue(QueueId(2)), 5_000_000, 1);
        let mut out = String::new();
        metrics.write_text(&mut out, |log| *log != LogId::Queue(QueueId(2)));
        assert!(
            out.contains("krest_fsync_duration_seconds_bucket{le=\"0.00005\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("krest_fsync_duration_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("krest_fsync_duration_seconds_bucket{le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("krest_fsync_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("krest_fsync_duration_seconds_count 3\n"),
            "{out}"
        );
        assert!(
            out.contains("krest_storage_bytes{log=\"queue-1\"} 4096\n"),
            "{out}"
        );
        assert!(
            !out.contains("queue-2"),
            "a deleted log is not shown: {out}"
        );
    }
}
