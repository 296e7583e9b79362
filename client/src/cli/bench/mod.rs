//! `krest bench`: end-to-end scenarios against a running server.
//!
//! - `durable`: confirmed publishes to a persistent queue (confirm after fsync), `--window`
//!   in flight; msgs/s, MB/s and confirm latency.
//! - `consume`: consume `--count` messages with explicit acks (prefetch = window, acks batched
//!   by a quarter window and pipelined, up to four batches unanswered); the queue is filled
//!   first, untimed, if `durable` did not run before.
//! - `latency`: publish at a fixed `--rate` for `--secs` to a persistent queue while a consumer
//!   acks each message (acks pipelined, up to `--window` unanswered); end-to-end latency
//!   (publish call to delivery) percentiles.
//! - `temporary`: publish to a temporary queue while an auto-ack consumer takes everything;
//!   both rates.
//! - `delay`: `--count` messages to a delay queue, due spread over `--secs`; how late each
//!   arrives after its deliver-at, and the delivery rate (acks pipelined as in `consume`).
//!
//! With `--server-pid PID` (same machine) each scenario also reports the server's CPU time per
//! message, read from `/proc/PID/stat`. `--json` prints one object per scenario.

mod latency;
mod throughput;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use krest_proto::client::{QueueKind, QueueSettings};
use serde::Serialize;

use super::Globals;
use crate::Client;

/// `krest bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run, in order [default: durable consume].
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Messages per scenario (latency: ignored, see --rate and --secs).
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Payload bytes per message (at least 16 for latency).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Sends in flight (and consumer prefetch).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub window: u32,
    /// Messages per second for `latency`.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Seconds `latency` runs, and the span over which `delay` messages fall due.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub secs: u64,
    /// Prefix of the queues used (declared, purged, and deleted at the end).
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// The server's process id, to report its CPU time per message.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Leave the bench queues and their messages behind (to measure a restart with a backlog,
    /// for example); by default they are deleted at the end.
    #[arg(long)]
    pub keep: bool,
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Confirmed publishes to a persistent queue.
    Durable,
    /// Consume with one ack per message.
    Consume,
    /// End-to-end latency at a fixed rate.
    Latency,
    /// Temporary queue, auto ack, publish and consume at once.
    Temporary,
    /// Lateness of delayed messages.
    Delay,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Durable => "durable",
            Scenario::Consume => "consume",
            Scenario::Latency => "latency",
            Scenario::Temporary => "temporary",
            Scenario::Delay => "delay",
        }
    }
}

/// One scenario's results, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Messages measured.
    pub messages: u64,
    /// Confirmed publishes per second.
    pub publish_msgs_per_sec: Option<f64>,
    /// Confirmed payload megabytes (10^6 bytes) per second.
    pub publish_mb_per_sec: Option<f64>,
    /// Consumed messages per second.
    pub consume_msgs_per_sec: Option<f64>,
    /// durable: publish to confirm; latency: publish to delivery; delay: deliver-at to
    /// delivery (lateness).
    pub latency_us: Option<LatencyReport>,
    /// The server's CPU time (user + system) per message, with `--server-pid`.
    pub server_cpu_us_per_message: Option<f64>,
}

impl ScenarioReport {
    fn new(scenario: Scenario, messages: u64) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.name(),
            messages,
            publish_msgs_per_sec: None,
            publish_mb_per_sec: None,
            consume_msgs_per_sec: None,
            latency_us: None,
            server_cpu_us_per_message: None,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencyReport {
    fn from_histogram(histogram: &Histogram<u64>) -> LatencyReport {
        LatencyReport {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// A histogram of microseconds from 1 µs to an hour, 3 significant digits.
fn micros_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a latency histogram")
}

fn record_micros(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Runs `krest bench`.
pub async fn run(globals: &Globals, args: BenchArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        vec![Scenario::Durable, Scenario::Consume]
    } else {
        args.scenarios.clone()
    };
    let client = globals.connect().await?;
    let mut declared = Vec::new();
    let outcome = run_scenarios(globals, &client, &args, &scenarios, &mut declared).await;
    if !args.keep {
        for queue in declared {
            let _ = client.delete_queue(&queue).await;
        }
    }
    client.close().await;
    outcome
}

async fn run_scenarios(
    globals: &Globals,
    client: &Client,
    args: &BenchArgs,
    scenarios: &[Scenario],
    declared: &mut Vec<String>,
) -> anyhow::Result<()> {
    // `consume` right after `durable` consumes what it published.
    let mut filled = false;
    for &scenario in scenarios {
        let (kind, queue) = match scenario {
            Scenario::Temporary => (QueueKind::Temporary, format!("{}-temporary", args.queue)),
            Scenario::Delay => (QueueKind::Delay, format!("{}-delay", args.queue)),
            Scenario::Latency => (QueueKind::Persistent, format!("{}-latency", args.queue)),
            Scenario::Durable | Scenario::Consume => (QueueKind::Persistent, args.queue.clone()),
        };
        if !declared.contains(&queue) {
            let settings = QueueSettings {
                kind: kind as i32,
                ..QueueSettings::default()
            };
            client.declare_queue(&queue, settings).await?;
            client.purge_queue(&queue).await?;
            declared.push(queue.clone());
        }
        if scenario == Scenario::Consume && !filled {
            throughput::publish(client, args, &queue, Scenario::Durable).await?;
        }
        let cpu_before = args.server_pid.map(server_cpu_time).transpose()?;
        let mut report = match scenario {
            Scenario::Durable => throughput::publish(client, args, &queue, scenario).await?,
            Scenario::Consume => throughput::consume(client, args, &queue).await?,
            Scenario::Temporary => throughput::temporary(client, args, &queue).await?,
            Scenario::Latency => latency::end_to_end(client, args, &queue).await?,
            Scenario::Delay => latency::delay(client, args, &queue).await?,
        };
        filled = scenario == Scenario::Durable;
        if let (Some(pid), Some(before)) = (args.server_pid, cpu_before) {
            let used = server_cpu_time(pid)?.saturating_sub(before);
            let messages = report.messages.max(1) as f64;
            report.server_cpu_us_per_message = Some(used.as_secs_f64() * 1e6 / messages);
        }
        print_report(globals, args, &report)?;
    }
    Ok(())
}

/// User plus system CPU time of process `pid` so far, from `/proc/PID/stat`.
fn server_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{path} has no CPU time field"))
    };
    let total_ticks = ticks(11)? + ticks(12)?;
    // The kernel's USER_HZ is 100 on every Linux architecture Rust targets.
    Ok(Duration::from_millis(total_ticks * 10))
}

fn print_report(
    globals: &Globals,
    args: &BenchArgs,
    report: &ScenarioReport,
) -> anyhow::Result<()> {
    if globals.json {
        println!(
            "{}",
            serde_json::to_string(report).context("encoding JSON")?
        );
        return Ok(());
    }
    let mut line = format!("{:<10} {} messages", report.scenario, report.messages);
    if let (Some(messages), Some(megabytes)) =
        (report.publish_msgs_per_sec, report.publish_mb_per_sec)
    {
        line += &format!(
            " of {} bytes, window {}: publish {messages:.0} msgs/s, {megabytes:.1} MB/s",
            args.size, args.window
        );
    }
    if let Some(messages) = report.consume_msgs_per_sec {
        line += &format!("; consume {messages:.0} msgs/s");
    }
    if let Some(latency) = &report.latency_us {
        line += &format!(
            "; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            latency.p50, latency.p99, latency.p999, latency.max
        );
    }
    if let Some(cpu) = report.server_cpu_us_per_message {
        line += &format!("; server CPU {cpu:.2} us/msg");
    }
    println!("{line}");
    Ok(())
}
