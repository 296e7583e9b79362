//! The throughput scenarios: confirmed publishing, consuming with acks, and a temporary queue
//! with publisher and auto-ack consumer running at once.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use krest_proto::client::{AckMode, OutgoingMessage};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{micros_histogram, record_micros, BenchArgs, LatencyReport, Scenario, ScenarioReport};
use crate::{Client, ClientError, Consumer, Delivery, Settler, SubscribeOptions};

/// Longest wait for the next delivery while consuming before the bench gives up.
const CONSUME_IDLE_MAX: Duration = Duration::from_secs(30);

/// Publishes `--count` messages to `queue` with `--window` confirms outstanding.
pub(super) async fn publish(
    client: &Client,
    args: &BenchArgs,
    queue: &str,
    scenario: Scenario,
) -> anyhow::Result<ScenarioReport> {
    let producer = client.producer(queue.to_string());
    let payload = Bytes::from(vec![b'x'; args.size]);
    let mut latency = micros_histogram()?;
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
    let mut report = ScenarioReport::new(scenario, args.count);
    report.publish_msgs_per_sec = Some(messages_per_second);
    report.publish_mb_per_sec = Some(messages_per_second * args.size as f64 / 1e6);
    report.latency_us = Some(LatencyReport::from_histogram(&latency));
    Ok(report)
}

/// Waits for one send and records its confirm latency.
async fn record(
    latency: &mut hdrhistogram::Histogram<u64>,
    send: Option<JoinHandle<Result<Duration, ClientError>>>,
) -> anyhow::Result<()> {
    if let Some(send) = send {
        let elapsed = send.await.context("a send task failed")??;
        record_micros(latency, elapsed);
    }
    Ok(())
}

/// Acks requests a consumer keeps unanswered at most (each of a quarter window).
pub(super) const ACK_REQUESTS_IN_FLIGHT_MAX: usize = 4;

/// Acks deliveries in batches of a quarter window without waiting for each answer (at most
/// [`ACK_REQUESTS_IN_FLIGHT_MAX`] batches unanswered), as an application that acks
/// asynchronously does.
pub(super) struct PipelinedAcks {
    settler: Settler,
    batch: usize,
    unacked: Vec<Delivery>,
    acks: tokio::task::JoinSet<Result<(), ClientError>>,
}

impl PipelinedAcks {
    /// Acks for a consumer whose window is `window`.
    pub(super) fn new(settler: Settler, window: u32) -> PipelinedAcks {
        let batch = (window as usize / 4).max(1);
        PipelinedAcks {
            settler,
            batch,
            unacked: Vec::with_capacity(batch),
            acks: tokio::task::JoinSet::new(),
        }
    }

    /// Takes `delivery`; sends a batch when it is full or `last` says no more will come.
    pub(super) async fn push(&mut self, delivery: Delivery, last: bool) -> anyhow::Result<()> {
        self.unacked.push(delivery);
        if self.unacked.len() < self.batch && !last {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.unacked, Vec::with_capacity(self.batch));
        let settler = self.settler.clone();
        self.acks
            .spawn(async move { settler.ack_many(&batch).await });
        while self.acks.len() >= ACK_REQUESTS_IN_FLIGHT_MAX {
            if let Some(acked) = self.acks.join_next().await {
                acked.context("an ack task failed")??;
            }
        }
        Ok(())
    }

    /// Waits for every ack sent.
    pub(super) async fn finish(mut self) -> anyhow::Result<()> {
        while let Some(acked) = self.acks.join_next().await {
            acked.context("an ack task failed")??;
        }
        Ok(())
    }
}

/// Consumes `--count` messages from `queue`, acking in batches of a quarter window. The acks
/// are pipelined (up to [`ACK_REQUESTS_IN_FLIGHT_MAX`] unanswered), as an application that
/// acks asynchronously does: the rate measured is the broker's, not one fsync round trip per
/// batch.
pub(super) async fn consume(
    client: &Client,
    args: &BenchArgs,
    queue: &str,
) -> anyhow::Result<ScenarioReport> {
    let mut options = SubscribeOptions::new(queue.to_string());
    options.prefetch = args.window;
    let mut consumer = client.subscribe(options).await?;
    let mut acks = PipelinedAcks::new(consumer.settler(), args.window);
    let started = Instant::now();
    let mut received: u64 = 0;
    while received < args.count {
        let delivery = next(&mut consumer, received, args.count).await?;
        received += 1;
        acks.push(delivery, received == args.count).await?;
    }
    acks.finish().await?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    consumer.unsubscribe().await?;
    let mut report = ScenarioReport::new(Scenario::Consume, received);
    report.consume_msgs_per_sec = Some(received as f64 / seconds);
    Ok(report)
}

/// The next delivery, or why there is none.
pub(super) async fn next(
    consumer: &mut Consumer,
    received: u64,
    count: u64,
) -> anyhow::Result<Delivery> {
    match tokio::time::timeout(CONSUME_IDLE_MAX, consumer.next()).await {
        Err(_elapsed) => anyhow::bail!(
            "no delivery for {CONSUME_IDLE_MAX:?} after {received} of {count} messages"
        ),
        Ok(None) => anyhow::bail!("the subscription ended after {received} messages"),
        Ok(Some(delivery)) => Ok(delivery?),
    }
}

/// Publishes `--count` messages to a temporary queue while an auto-ack consumer takes them.
pub(super) async fn temporary(
    client: &Client,
    args: &BenchArgs,
    queue: &str,
) -> anyhow::Result<ScenarioReport> {
    let mut options = SubscribeOptions::new(queue.to_string());
    options.ack_mode = AckMode::Auto;
    options.prefetch = args.window.max(1024);
    let mut consumer = client.subscribe(options).await?;
    let count = args.count;
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            next(&mut consumer, received, count).await?;
            received += 1;
        }
        anyhow::Ok(Instant::now())
    });
    let mut report = publish(client, args, queue, Scenario::Temporary).await?;
    let finished = consuming.await.context("the consumer task failed")??;
    let seconds = (finished - started).as_secs_f64().max(1e-9);
    report.consume_msgs_per_sec = Some(count as f64 / seconds);
    Ok(report)
}
