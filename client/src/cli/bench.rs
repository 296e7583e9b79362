//! `krest bench`: end-to-end publish and consume throughput, and confirm latency.
//!
//! Declares (and purges) the queue, publishes `--count` messages of `--size` bytes keeping
//! `--window` sends in flight, then consumes them with explicit acks (prefetch = window, acks
//! batched by a quarter window), and deletes the queue. Reports one scenario per phase: the
//! publish ("durable" for a persistent queue, "temporary" otherwise) with msgs/s, MB/s and the
//! confirm latency percentiles, and "consume" with msgs/s. `--json` prints each as one object.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use krest_proto::client::{OutgoingMessage, QueueKind, QueueSettings};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Globals;
use crate::{Client, ClientError, Delivery, SubscribeOptions};

/// Longest wait for the next delivery while consuming before the bench gives up.
const CONSUME_IDLE_MAX: Duration = Duration::from_secs(30);

/// `krest bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages to publish and consume.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Sends in flight (and consumer prefetch).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub window: u32,
    /// The queue to use (declared, purged, and deleted at the end).
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// The queue kind.
    #[arg(long, value_enum, default_value = "persistent")]
    pub kind: BenchKind,
}

/// Queue kinds the bench supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    /// On disk: every confirm waits for fsync.
    Persistent,
    /// Memory only.
    Temporary,
}

/// One scenario's results, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    /// "durable", "temporary" or "consume".
    pub scenario: &'static str,
    /// Messages measured.
    pub messages: u64,
    /// Confirmed publishes per second.
    pub publish_msgs_per_sec: Option<f64>,
    /// Confirmed payload megabytes (10^6 bytes) per second.
    pub publish_mb_per_sec: Option<f64>,
    /// Consumed (and acked) messages per second.
    pub consume_msgs_per_sec: Option<f64>,
    /// Publish-to-confirm latency.
    pub latency_us: Option<LatencyReport>,
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

/// Runs `krest bench`.
pub async fn run(globals: &Globals, args: BenchArgs) -> anyhow::Result<()> {
    let client = globals.connect().await?;
    let kind = match args.kind {
        BenchKind::Persistent => QueueKind::Persistent,
        BenchKind::Temporary => QueueKind::Temporary,
    };
    let settings = QueueSettings {
        kind: kind as i32,
        ..QueueSettings::default()
    };
    client.declare_queue(&args.queue, settings).await?;
    client.purge_queue(&args.queue).await?;
    let outcome = run_phases(globals, &client, &args).await;
    let deleted = client.delete_queue(&args.queue).await;
    client.close().await;
    outcome?;
    deleted.context("deleting the bench queue")?;
    Ok(())
}

async fn run_phases(globals: &Globals, client: &Client, args: &BenchArgs) -> anyhow::Result<()> {
    let publish = publish_phase(client, args).await?;
    print_report(globals, args, &publish)?;
    let consume = consume_phase(client, args).await?;
    print_report(globals, args, &consume)
}

async fn publish_phase(client: &Client, args: &BenchArgs) -> anyhow::Result<ScenarioReport> {
    let producer = client.producer(args.queue.clone());
    let payload = Bytes::from(vec![b'x'; args.size]);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .context("creating the latency histogram")?;
    let mut in_flight: VecDeque<JoinHandle<Result<Duration, ClientError>>> = VecDeque::new();
    let started = Instant::now();
    for _ in 0..args.count {
        if in_flight.len() >= args.window as usize {
            record(&mut latency, in_flight.pop_front()).await?;
        }
        let message = OutgoingMessage {
            payload: payload.clone(),
            ..OutgoingMessage::default()
        };
        let sent_at = Instant::now();
        let pending = producer.start_send(message).await?;
        in_flight.push_back(tokio::spawn(async move {
            pending.confirmed().await.map(|_| sent_at.elapsed())
        }));
    }
    while !in_flight.is_empty() {
        record(&mut latency, in_flight.pop_front()).await?;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let messages_per_second = args.count as f64 / seconds;
    Ok(ScenarioReport {
        scenario: match args.kind {
            BenchKind::Persistent => "durable",
            BenchKind::Temporary => "temporary",
        },
        messages: args.count,
        publish_msgs_per_sec: Some(messages_per_second),
        publish_mb_per_sec: Some(messages_per_second * args.size as f64 / 1e6),
        consume_msgs_per_sec: None,
        latency_us: Some(LatencyReport {
            p50: latency.value_at_quantile(0.5),
            p99: latency.value_at_quantile(0.99),
            p999: latency.value_at_quantile(0.999),
            max: latency.max(),
        }),
    })
}

/// Waits for one send and records its confirm latency.
async fn record(
    latency: &mut Histogram<u64>,
    send: Option<JoinHandle<Result<Duration, ClientError>>>,
) -> anyhow::Result<()> {
    if let Some(send) = send {
        let elapsed = send.await.context("a send task failed")??;
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(micros.max(1));
    }
    Ok(())
}

async fn consume_phase(client: &Client, args: &BenchArgs) -> anyhow::Result<ScenarioReport> {
    let mut options = SubscribeOptions::new(args.queue.clone());
    options.prefetch = args.window;
    let mut consumer = client.subscribe(options).await?;
    let ack_batch = (args.window as usize / 4).max(1);
    let mut unacked: Vec<Delivery> = Vec::with_capacity(ack_batch);
    let started = Instant::now();
    let mut received: u64 = 0;
    while received < args.count {
        let delivery = match tokio::time::timeout(CONSUME_IDLE_MAX, consumer.next()).await {
            Err(_elapsed) => anyhow::bail!(
                "no delivery for {CONSUME_IDLE_MAX:?} after {received} of {} messages",
                args.count
            ),
            Ok(None) => anyhow::bail!("the subscription ended after {received} messages"),
            Ok(Some(delivery)) => delivery?,
        };
        received += 1;
        unacked.push(delivery);
        if unacked.len() >= ack_batch || received == args.count {
            consumer.ack_many(&unacked).await?;
            unacked.clear();
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    consumer.unsubscribe().await?;
    Ok(ScenarioReport {
        scenario: "consume",
        messages: received,
        publish_msgs_per_sec: None,
        publish_mb_per_sec: None,
        consume_msgs_per_sec: Some(received as f64 / seconds),
        latency_us: None,
    })
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
            " of {} bytes, window {}: {messages:.0} msgs/s, {megabytes:.1} MB/s",
            args.size, args.window
        );
    }
    if let Some(latency) = &report.latency_us {
        line += &format!(
            "; confirm latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            latency.p50, latency.p99, latency.p999, latency.max
        );
    }
    if let Some(messages) = report.consume_msgs_per_sec {
        line += &format!(": {messages:.0} msgs/s");
    }
    println!("{line}");
    Ok(())
}
