//! The latency scenarios: end-to-end latency at a fixed publish rate, and the lateness of
//! delayed messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use krest_proto::client::OutgoingMessage;
use tokio::time::Instant;

use super::throughput::{next, PipelinedAcks};
use super::{micros_histogram, record_micros, BenchArgs, LatencyReport, Scenario, ScenarioReport};
use crate::{Client, SubscribeOptions};

/// Bytes at the start of each latency payload: the send time, in nanoseconds since the start.
const STAMP_BYTES: usize = 16;

/// Publishes `--rate` messages a second for `--secs` while a consumer acks each; records the
/// time from the publish call to the delivery.
pub(super) async fn end_to_end(
    client: &Client,
    args: &BenchArgs,
    queue: &str,
) -> anyhow::Result<ScenarioReport> {
    let count = args.rate * args.secs;
    let mut options = SubscribeOptions::new(queue.to_string());
    options.prefetch = args.window;
    let mut consumer = client.subscribe(options).await?;
    let origin = Instant::now();
    let acks_in_flight_max = args.window as usize;
    let consuming = tokio::spawn(async move {
        let mut latency = micros_histogram()?;
        let mut received = 0;
        // One ack per message, pipelined: the consumer takes the next delivery without waiting
        // for the previous ack's durable answer (as an application that acks asynchronously
        // does), so the measured rate is the broker's, not one fsync round trip per message.
        let settler = consumer.settler();
        let mut acks = tokio::task::JoinSet::new();
        while received < count {
            let delivery = next(&mut consumer, received, count).await?;
            let stamp = delivery
                .payload
                .get(..8)
                .context("a payload without its stamp")?;
            let sent = Duration::from_nanos(u64::from_be_bytes(stamp.try_into()?));
            record_micros(&mut latency, origin.elapsed().saturating_sub(sent));
            let settler = settler.clone();
            acks.spawn(async move { settler.ack(&delivery).await });
            while let Some(acked) = acks.try_join_next() {
                acked.context("an ack task failed")??;
            }
            if acks.len() >= acks_in_flight_max {
                if let Some(acked) = acks.join_next().await {
                    acked.context("an ack task failed")??;
                }
            }
            received += 1;
        }
        while let Some(acked) = acks.join_next().await {
            acked.context("an ack task failed")??;
        }
        consumer.unsubscribe().await?;
        anyhow::Ok(latency)
    });
    let producer = client.producer(queue.to_string());
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut confirms = tokio::task::JoinSet::new();
    for number in 0..count {
        tokio::time::sleep_until(origin + interval.mul_f64(number as f64)).await;
        let mut payload = BytesMut::with_capacity(args.size.max(STAMP_BYTES));
        payload.put_u64(origin.elapsed().as_nanos() as u64);
        payload.resize(args.size.max(STAMP_BYTES), b'x');
        let message = OutgoingMessage {
            payload: payload.freeze(),
            ..OutgoingMessage::default()
        };
        let pending = producer.start_send(message).await?;
        confirms.spawn(pending.confirmed());
        while let Some(confirmed) = confirms.try_join_next() {
            confirmed.context("a send task failed")??;
        }
    }
    while let Some(confirmed) = confirms.join_next().await {
        confirmed.context("a send task failed")??;
    }
    let latency = consuming.await.context("the consumer task failed")??;
    let seconds = origin.elapsed().as_secs_f64().max(1e-9);
    let mut report = ScenarioReport::new(Scenario::Latency, count);
    report.publish_msgs_per_sec = Some(count as f64 / seconds);
    report.publish_mb_per_sec = Some(count as f64 * args.size as f64 / seconds / 1e6);
    report.latency_us = Some(LatencyReport::from_histogram(&latency));
    Ok(report)
}

/// Publishes `--count` messages to a delay queue, due evenly over `--secs` starting a second
/// from now, then consumes them; records how late each arrived after its deliver-at.
pub(super) async fn delay(
    client: &Client,
    args: &BenchArgs,
    queue: &str,
) -> anyhow::Result<ScenarioReport> {
    let unix_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    };
    let span_ms = args.secs * 1_000;
    let first_due_ms = unix_ms() + 1_000 + args.count / 50; // time to publish them all first
    let producer = client.producer(queue.to_string());
    let payload = Bytes::from(vec![b'x'; args.size]);
    let mut confirms = tokio::task::JoinSet::new();
    for number in 0..args.count {
        let message = OutgoingMessage {
            payload: payload.clone(),
            deliver_at_unix_ms: first_due_ms + span_ms * number / args.count.max(1),
            ..OutgoingMessage::default()
        };
        let pending = producer.start_send(message).await?;
        confirms.spawn(pending.confirmed());
        if confirms.len() >= args.window as usize {
            if let Some(confirmed) = confirms.join_next().await {
                confirmed.context("a send task failed")??;
            }
        }
    }
    while let Some(confirmed) = confirms.join_next().await {
        confirmed.context("a send task failed")??;
    }
    let mut options = SubscribeOptions::new(queue.to_string());
    options.prefetch = args.window;
    let mut consumer = client.subscribe(options).await?;
    let mut lateness = micros_histogram()?;
    let mut received = 0;
    let mut first_delivery: Option<Instant> = None;
    // Acks are pipelined as in `consume`: the delivery rate is the broker's, not one fsync
    // round trip per batch.
    let mut acks = PipelinedAcks::new(consumer.settler(), args.window);
    while received < args.count {
        let delivery = next(&mut consumer, received, args.count).await?;
        first_delivery.get_or_insert_with(Instant::now);
        let due_ms = delivery
            .deliver_at
            .and_then(|due| due.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |due| due.as_millis() as u64);
        let late_ms = unix_ms().saturating_sub(due_ms);
        record_micros(&mut lateness, Duration::from_millis(late_ms));
        received += 1;
        acks.push(delivery, received == args.count).await?;
    }
    acks.finish().await?;
    consumer.unsubscribe().await?;
    let seconds = first_delivery
        .map_or(0.0, |first| first.elapsed().as_secs_f64())
        .max(1e-9);
    let mut report = ScenarioReport::new(Scenario::Delay, received);
    report.consume_msgs_per_sec = Some(received as f64 / seconds);
    report.latency_us = Some(LatencyReport::from_histogram(&lateness));
    Ok(report)
}
