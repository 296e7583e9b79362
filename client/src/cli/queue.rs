//! `krest queue create|ls|info|delete|purge|redrive`.
//!
//! Plain output is a table (`ls`) or key/value lines (`info`); with `--json`, `ls` prints an
//! array of queue objects and `info` one object, both with the fields of [`queue_json`].
//! `create`, `delete` and `purge` print nothing unless `--json` asks for a confirmation object.

use anyhow::Context;
use clap::Args;
use krest_proto::client::{OverflowPolicy, QueueInfo, QueueKind, QueueSettings};
use serde_json::{json, Value};

use super::{Globals, KindArg, OverflowArg, QueueCommand};

/// `krest queue create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The queue name.
    pub name: String,
    /// The queue kind.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Most messages the queue holds (0: server default).
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Most bytes (payloads and headers) the queue holds (0: server default).
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// What a full queue does with a publish.
    #[arg(long, value_enum)]
    pub overflow: Option<OverflowArg>,
    /// How long a delivery stays leased to its consumer without an ack.
    #[arg(long)]
    pub ack_timeout_ms: Option<u64>,
    /// Deliveries after which an unacked message is dead-lettered (0: unlimited).
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// The dead-letter queue (default: "<queue>.dlq").
    #[arg(long)]
    pub dead_letter_queue: Option<String>,
}

impl CreateArgs {
    /// The settings these flags describe; absent flags are 0, the server's defaults.
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            kind: self.kind.to_wire() as i32,
            max_messages: self.max_messages.unwrap_or(0),
            max_bytes: self.max_bytes.unwrap_or(0),
            overflow: self
                .overflow
                .map_or(0, |overflow| overflow.to_wire() as i32),
            ack_timeout_ms: self.ack_timeout_ms.unwrap_or(0),
            max_deliveries: self.max_deliveries.unwrap_or(0),
            dead_letter_queue: self.dead_letter_queue.clone().unwrap_or_default(),
        }
    }
}

/// Runs one queue subcommand.
pub async fn run(globals: &Globals, command: QueueCommand) -> anyhow::Result<()> {
    let client = globals.connect().await?;
    let outcome = match command {
        QueueCommand::Create(args) => {
            client.declare_queue(&args.name, args.settings()).await?;
            confirm(globals, &args.name, "created");
            Ok(())
        }
        QueueCommand::Ls => {
            let queues = client.list_queues().await?;
            print_list(globals, &queues)
        }
        QueueCommand::Info { name } => {
            let info = client.queue_info(&name).await?;
            print_info(globals, &info)
        }
        QueueCommand::Delete { name } => {
            client.delete_queue(&name).await?;
            confirm(globals, &name, "deleted");
            Ok(())
        }
        QueueCommand::Purge { name } => {
            client.purge_queue(&name).await?;
            confirm(globals, &name, "purged");
            Ok(())
        }
        QueueCommand::Redrive { name, max } => {
            let (moved, skipped) = client.redrive(&name, max).await?;
            if globals.json {
                println!(
                    "{}",
                    json!({ "queue": name, "moved": moved, "skipped": skipped })
                );
            } else {
                println!("{name}: moved {moved} back to their queues, skipped {skipped}");
            }
            Ok(())
        }
    };
    client.close().await;
    outcome
}

fn confirm(globals: &Globals, name: &str, action: &str) {
    if globals.json {
        println!("{}", json!({ "queue": name, "result": action }));
    }
}

fn print_list(globals: &Globals, queues: &[QueueInfo]) -> anyhow::Result<()> {
    if globals.json {
        let array: Vec<Value> = queues.iter().map(queue_json).collect();
        println!(
            "{}",
            serde_json::to_string(&array).context("encoding JSON")?
        );
        return Ok(());
    }
    let header = [
        "NAME",
        "KIND",
        "NODE",
        "MESSAGES",
        "BYTES",
        "IN_FLIGHT",
        "DELAYED",
        "SUBSCRIPTIONS",
    ];
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|queue| {
            // Counts of a queue served by another node are known only there.
            let count = |value: u64| match queue.served_here {
                true => value.to_string(),
                false => "-".to_string(),
            };
            vec![
                queue.name.clone(),
                kind_name(queue.settings.as_ref().map_or(0, |s| s.kind)).to_string(),
                queue.leader.to_string(),
                count(queue.messages),
                count(queue.bytes),
                count(queue.in_flight),
                count(queue.delayed),
                match queue.served_here {
                    true => queue.subscriptions.len().to_string(),
                    false => "-".to_string(),
                },
            ]
        })
        .collect();
    print!("{}", render_table(&header, &rows));
    Ok(())
}

fn print_info(globals: &Globals, info: &QueueInfo) -> anyhow::Result<()> {
    let object = queue_json(info);
    if globals.json {
        println!(
            "{}",
            serde_json::to_string(&object).context("encoding JSON")?
        );
        return Ok(());
    }
    let settings = info.settings.clone().unwrap_or_default();
    let lines = [
        ("name", info.name.clone()),
        ("kind", kind_name(settings.kind).to_string()),
        ("leader", info.leader.to_string()),
        (
            "replicas",
            info.replicas
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("messages", info.messages.to_string()),
        ("bytes", info.bytes.to_string()),
        ("in_flight", info.in_flight.to_string()),
        ("delayed", info.delayed.to_string()),
        ("next_sequence", info.next_sequence.to_string()),
        ("max_messages", settings.max_messages.to_string()),
        ("max_bytes", settings.max_bytes.to_string()),
        ("overflow", overflow_name(settings.overflow).to_string()),
        ("ack_timeout_ms", settings.ack_timeout_ms.to_string()),
        ("max_deliveries", settings.max_deliveries.to_string()),
        ("dead_letter_queue", settings.dead_letter_queue.clone()),
    ];
    for (key, value) in lines {
        println!("{key:<18} {value}");
    }
    if !info.subscriptions.is_empty() {
        println!();
        let header = ["SUBSCRIPTION", "MODE", "CONSUMERS", "PENDING", "IN_FLIGHT"];
        let rows: Vec<Vec<String>> = info
            .subscriptions
            .iter()
            .map(|subscription| {
                let mode = if subscription.broadcast {
                    "broadcast"
                } else {
                    "point"
                };
                vec![
                    subscription.name.clone(),
                    mode.to_string(),
                    subscription.consumers.to_string(),
                    subscription.pending.to_string(),
                    subscription.in_flight.to_string(),
                ]
            })
            .collect();
        print!("{}", render_table(&header, &rows));
    }
    Ok(())
}

/// One queue as a JSON object: name, kind, messages, bytes, in_flight, delayed, next_sequence,
/// settings {kind, max_messages, max_bytes, overflow, ack_timeout_ms, max_deliveries,
/// dead_letter_queue} and subscriptions [{name, broadcast, mode, consumers, pending,
/// in_flight}].
pub fn queue_json(info: &QueueInfo) -> Value {
    let settings = info.settings.clone().unwrap_or_default();
    let subscriptions: Vec<Value> = info
        .subscriptions
        .iter()
        .map(|subscription| {
            json!({
                "name": subscription.name,
                "broadcast": subscription.broadcast,
                "mode": if subscription.broadcast { "broadcast" } else { "point" },
                "consumers": subscription.consumers,
                "pending": subscription.pending,
                "in_flight": subscription.in_flight,
            })
        })
        .collect();
    let count = |value: u64| match info.served_here {
        true => json!(value),
        false => Value::Null,
    };
    json!({
        "name": info.name,
        "kind": kind_name(settings.kind),
        "leader": info.leader,
        "replicas": info.replicas,
        "messages": count(info.messages),
        "bytes": count(info.bytes),
        "in_flight": count(info.in_flight),
        "delayed": count(info.delayed),
        "next_sequence": count(info.next_sequence),
        "settings": {
            "kind": kind_name(settings.kind),
            "max_messages": settings.max_messages,
            "max_bytes": settings.max_bytes,
            "overflow": overflow_name(settings.overflow),
            "ack_timeout_ms": settings.ack_timeout_ms,
            "max_deliveries": settings.max_deliveries,
            "dead_letter_queue": settings.dead_letter_queue,
        },
        "subscriptions": subscriptions,
    })
}

/// The command-line name of a wire queue kind.
pub fn kind_name(kind: i32) -> &'static str {
    match QueueKind::try_from(kind) {
        Ok(QueueKind::Temporary) => "temporary",
        Ok(QueueKind::Persistent) => "persistent",
        Ok(QueueKind::Delay) => "delay",
        Ok(QueueKind::Unspecified) | Err(_) => "unspecified",
    }
}

/// The command-line name of a wire overflow policy (unspecified is the default,
/// reject-publish).
pub fn overflow_name(overflow: i32) -> &'static str {
    match OverflowPolicy::try_from(overflow) {
        Ok(OverflowPolicy::DropOldest) => "drop-oldest",
        _ => "reject-publish",
    }
}

/// Left-aligned columns, two spaces apart, one line per row.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.len());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = header.iter().map(|title| title.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
