//! `krest pub QUEUE [BODY]`: publish BODY (`--count` times), or one message per stdin line.
//!
//! Sends keep up to [`PUBLISH_WINDOW`] messages in flight. Each message is queued for writing
//! before the next one is read, so the queue receives them in input order (unless a reconnect
//! forces retries). Prints nothing on success unless `--json`; exits with an error as soon as a
//! message cannot be confirmed (after the producer's retries).

use std::collections::VecDeque;
use std::io::BufRead;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use krest_proto::client::{Header, OutgoingMessage};
use serde_json::json;
use tokio::task::JoinHandle;

use super::Globals;
use crate::{ClientError, Producer};

/// Messages in flight at most.
pub const PUBLISH_WINDOW: usize = 256;

/// `krest pub`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The queue.
    pub queue: String,
    /// The message body; without it, every stdin line is one message.
    pub body: Option<String>,
    /// Deliver no earlier than this many milliseconds from now (delay queues).
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// Send BODY this many times.
    #[arg(long, requires = "body")]
    pub count: Option<u64>,
    /// A header KEY=VALUE for every message; repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<Header>,
}

/// Parses `KEY=VALUE`.
pub fn parse_header(text: &str) -> Result<Header, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(Header {
            key: key.to_string(),
            value: value.to_string(),
        }),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// In-flight sends, oldest first, and the sequences confirmed so far (in input order).
struct Window {
    in_flight: VecDeque<JoinHandle<Result<u64, ClientError>>>,
    sequences: Vec<u64>,
}

impl Window {
    /// Waits for the oldest send.
    async fn confirm_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(send) = self.in_flight.pop_front() {
            let sequence = send.await.context("a send task failed")??;
            self.sequences.push(sequence);
        }
        Ok(())
    }

    /// Sends one message, first making room in the window.
    async fn send(&mut self, producer: &Producer, message: OutgoingMessage) -> anyhow::Result<()> {
        if self.in_flight.len() >= PUBLISH_WINDOW {
            self.confirm_oldest().await?;
        }
        let pending = producer.start_send(message).await?;
        self.in_flight.push_back(tokio::spawn(pending.confirmed()));
        Ok(())
    }

    async fn confirm_all(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.confirm_oldest().await?;
        }
        Ok(())
    }
}

/// Runs `krest pub`.
pub async fn run(globals: &Globals, args: PublishArgs) -> anyhow::Result<()> {
    let client = globals.connect().await?;
    let mut producer = client.producer(args.queue.clone());
    for header in &args.headers {
        producer = producer.with_header(header.key.clone(), header.value.clone());
    }
    let mut window = Window {
        in_flight: VecDeque::new(),
        sequences: Vec::new(),
    };
    let outcome = match &args.body {
        Some(body) => publish_repeated(&mut window, &producer, &args, body).await,
        None => publish_stdin(&mut window, &producer, &args).await,
    };
    let outcome = match outcome {
        Ok(()) => window.confirm_all().await,
        Err(error) => Err(error),
    };
    client.close().await;
    outcome?;
    if globals.json {
        let published = window.sequences.len();
        println!(
            "{}",
            json!({ "published": published, "sequences": window.sequences })
        );
    }
    Ok(())
}

fn message(args: &PublishArgs, payload: Bytes) -> OutgoingMessage {
    OutgoingMessage {
        payload,
        delay_ms: args.delay_ms.unwrap_or(0),
        ..OutgoingMessage::default()
    }
}

async fn publish_repeated(
    window: &mut Window,
    producer: &Producer,
    args: &PublishArgs,
    body: &str,
) -> anyhow::Result<()> {
    let payload = Bytes::copy_from_slice(body.as_bytes());
    for _ in 0..args.count.unwrap_or(1) {
        window
            .send(producer, message(args, payload.clone()))
            .await?;
    }
    Ok(())
}

async fn publish_stdin(
    window: &mut Window,
    producer: &Producer,
    args: &PublishArgs,
) -> anyhow::Result<()> {
    // Stdin is read on a blocking thread (as tokio itself would), a bounded channel ahead.
    let (lines_sender, mut lines) = tokio::sync::mpsc::channel(PUBLISH_WINDOW);
    let reader = tokio::task::spawn_blocking(move || read_lines(lines_sender));
    while let Some(line) = lines.recv().await {
        window.send(producer, message(args, line)).await?;
    }
    reader.await.context("the stdin reader failed")?
}

/// Sends every stdin line (without its line ending) to `lines`, until the end of input or
/// until the receiver is gone.
fn read_lines(lines: tokio::sync::mpsc::Sender<Bytes>) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = stdin
            .read_until(b'\n', &mut line)
            .context("reading stdin")?;
        if read == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if lines.blocking_send(Bytes::copy_from_slice(&line)).is_err() {
            return Ok(());
        }
    }
}
