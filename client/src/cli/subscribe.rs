//! `krest sub QUEUE`: consume messages, printing one body per line.
//!
//! Each body is written and flushed before it is acked (explicit mode), so a message that was
//! not printed is never acked. With `--count N` the command exits 0 after N messages; with
//! `--timeout-ms T` it fails after T milliseconds in all if N messages have not arrived by
//! then (without `--count` it simply stops after T milliseconds). Otherwise it runs until
//! Ctrl-C. At most `--count` messages are taken from the server: the prefetch is capped by it,
//! and with auto ack no credit beyond it is granted. With `--json` each message is one line,
//! `{"sequence", "delivery_count", "headers": {key: value}, "body"}` (the body as UTF-8 text,
//! invalid bytes replaced).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use krest_proto::client::{AckMode, ErrorCode, QueueSettings};
use serde_json::json;
use tokio::time::Instant;

use super::{AckArg, Globals, KindArg, ModeArg};
use crate::{ClientError, Consumer, Delivery, SubscribeOptions, DEFAULT_PREFETCH};

/// Longest single pull wait, so Ctrl-C and the timeout are noticed between fetches.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(1);
/// Pause before fetching again after a fetch failed while reconnecting.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// `krest sub`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The queue.
    pub queue: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up after this many milliseconds in all.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Ack mode.
    #[arg(long, value_enum, default_value = "explicit")]
    pub ack: AckArg,
    /// Delivery mode.
    #[arg(long, value_enum, default_value = "point")]
    pub mode: ModeArg,
    /// The competing group (point mode).
    #[arg(long)]
    pub group: Option<String>,
    /// Pull (fetch) instead of push.
    #[arg(long)]
    pub pull: bool,
    /// Unacked (explicit) or initially granted (auto) messages at most.
    #[arg(long, default_value_t = DEFAULT_PREFETCH)]
    pub prefetch: u32,
    /// Create the queue with this kind if it does not exist.
    #[arg(long, value_enum)]
    pub create: Option<KindArg>,
}

impl SubscribeArgs {
    /// The subscribe options these flags describe.
    pub fn options(&self) -> SubscribeOptions {
        let mut prefetch = self.prefetch.max(1);
        if let Some(count) = self.count {
            prefetch = prefetch.min(u32::try_from(count).unwrap_or(u32::MAX).max(1));
        }
        SubscribeOptions {
            queue: self.queue.clone(),
            mode: self.mode.to_wire(),
            group: self.group.clone().unwrap_or_default(),
            ack_mode: self.ack.to_wire(),
            prefetch,
            pull: self.pull,
            create_if_missing: self.create.map(|kind| QueueSettings {
                kind: kind.to_wire() as i32,
                ..QueueSettings::default()
            }),
        }
    }
}

/// How a subscription run ended.
enum Stop {
    /// `--count` reached, Ctrl-C, or the subscription stream ended.
    Done,
    /// `--timeout-ms` passed.
    TimedOut,
}

/// Runs `krest sub`.
pub async fn run(globals: &Globals, args: SubscribeArgs) -> anyhow::Result<()> {
    let client = globals.connect().await?;
    let mut consumer = client.subscribe(args.options()).await?;
    if let Some(count) = args.count {
        consumer.limit_auto_ack_credit(count);
    }
    let deadline = args
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let receiving = receive(globals, &args, &mut consumer, deadline);
    let outcome = tokio::select! {
        outcome = receiving => outcome,
        _ = tokio::signal::ctrl_c() => Ok(Stop::Done),
    };
    drop(consumer);
    client.close().await;
    match outcome? {
        Stop::Done => Ok(()),
        Stop::TimedOut if args.count.is_none() => Ok(()),
        Stop::TimedOut => anyhow::bail!(
            "timed out after {} ms waiting for messages",
            args.timeout_ms.unwrap_or(0)
        ),
    }
}

async fn receive(
    globals: &Globals,
    args: &SubscribeArgs,
    consumer: &mut Consumer,
    deadline: Option<Instant>,
) -> anyhow::Result<Stop> {
    let mut received: u64 = 0;
    let mut stdout = std::io::stdout();
    loop {
        if args.count.is_some_and(|count| received >= count) {
            return Ok(Stop::Done);
        }
        let batch = match next_batch(args, consumer, deadline, received).await? {
            Some(batch) => batch,
            None if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                return Ok(Stop::TimedOut)
            }
            None => anyhow::bail!("the subscription ended"),
        };
        for delivery in batch {
            if args.count.is_some_and(|count| received >= count) {
                // Not printed, not acked: the server redelivers it.
                break;
            }
            print_delivery(&mut stdout, globals.json, &delivery)?;
            if consumer.options().ack_mode == AckMode::Explicit {
                acknowledge(consumer, &delivery).await?;
            }
            received += 1;
        }
    }
}

/// The next deliveries; `None` at the deadline or when the stream ended.
async fn next_batch(
    args: &SubscribeArgs,
    consumer: &mut Consumer,
    deadline: Option<Instant>,
    received: u64,
) -> anyhow::Result<Option<Vec<Delivery>>> {
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline = deadline.unwrap_or(far_future);
    if args.pull {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let wanted = args.count.map_or(u64::MAX, |count| count - received);
        let max_messages = u64::from(consumer.options().prefetch).min(wanted) as u32;
        let wait = (deadline - now).min(FETCH_WAIT_MAX);
        return match consumer.fetch(max_messages, wait).await {
            Ok(batch) => Ok(Some(batch)),
            Err(error) if error.is_retryable() => {
                // Reconnecting: the consumer is subscribed again on the new connection.
                tracing::warn!(%error, "fetch failed, retrying");
                tokio::time::sleep(RETRY_PAUSE.min(deadline - now)).await;
                Ok(Some(Vec::new()))
            }
            Err(error) => Err(error.into()),
        };
    }
    match tokio::time::timeout_at(deadline, consumer.next()).await {
        Err(_elapsed) => Ok(None),
        Ok(None) => Ok(None),
        Ok(Some(delivery)) => Ok(Some(vec![delivery?])),
    }
}

/// Acks a printed delivery. If the connection dropped since it arrived, the ack fails and the
/// server delivers the message again (at least once): warn and go on.
async fn acknowledge(consumer: &Consumer, delivery: &Delivery) -> anyhow::Result<()> {
    match consumer.ack(delivery).await {
        Ok(()) => Ok(()),
        Err(error) if error.is_retryable() || is_stale_delivery(&error) => {
            tracing::warn!(%error, sequence = delivery.sequence(), "ack failed");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

fn is_stale_delivery(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::UnknownDelivery | ErrorCode::SubscriptionNotFound)
    )
}

fn print_delivery(out: &mut impl Write, json: bool, delivery: &Delivery) -> anyhow::Result<()> {
    if json {
        // Headers as an object; a key that repeats keeps its last value.
        let headers: serde_json::Map<String, serde_json::Value> = delivery
            .headers
            .iter()
            .map(|header| (header.key.clone(), header.value.clone().into()))
            .collect();
        let line = json!({
            "sequence": delivery.sequence(),
            "delivery_count": delivery.delivery_count(),
            "headers": headers,
            "body": String::from_utf8_lossy(&delivery.payload),
        });
        writeln!(out, "{line}")
    } else {
        out.write_all(&delivery.payload)
            .and_then(|()| out.write_all(b"\n"))
    }
    .and_then(|()| out.flush())
    .context("writing to stdout")
}
