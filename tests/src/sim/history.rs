//! The history: every operation the simulated clients invoked, and how each ended.
//!
//! An operation is invoked, then ends `Ok`, `Failed` (the server said it did not happen), or
//! stays `Unknown` (the connection dropped first: it may or may not have happened). Producers
//! retry unknown publishes with the same idempotency key until one attempt ends, so every
//! message ends confirmed or failed once the chaos is over (liveness).

use std::collections::BTreeMap;
use std::fmt;

/// A message's identity, carried in its payload as `m<producer>-<number>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// The producer id given in the Hello.
    pub producer: u64,
    /// The producer sequence, also the idempotency key.
    pub number: u64,
}

impl MessageId {
    /// The payload that carries this id.
    pub fn payload(self) -> Vec<u8> {
        format!("m{}-{}", self.producer, self.number).into_bytes()
    }

    /// The id a payload carries, if it is one of ours.
    pub fn parse(payload: &[u8]) -> Option<MessageId> {
        let text = std::str::from_utf8(payload).ok()?.strip_prefix('m')?;
        let (producer, number) = text.split_once('-')?;
        Some(MessageId {
            producer: producer.parse().ok()?,
            number: number.parse().ok()?,
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "m{}-{}", self.producer, self.number)
    }
}

/// How a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// No attempt has ended yet.
    Pending,
    /// The server confirmed it: stored durably under `sequence`.
    Confirmed {
        /// Its sequence in the queue.
        sequence: u64,
        /// Simulated time of the confirm.
        at_ms: u64,
    },
    /// The server refused it for good.
    Failed {
        /// The error code's name.
        code: String,
    },
}

/// One published message.
#[derive(Debug, Clone)]
pub struct Published {
    /// Where it went.
    pub queue: String,
    /// Its deliver-at time (delay queues), in Unix milliseconds.
    pub deliver_at_ms: Option<u64>,
    /// Simulated time of the first attempt.
    pub first_attempt_ms: u64,
    /// Attempts sent so far.
    pub attempts: u32,
    /// How it ended.
    pub outcome: PublishOutcome,
}

/// What an operation was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// A publish attempt of one message.
    Publish(MessageId),
    /// A settle of some deliveries.
    Settle {
        /// `ack`, `nack` or `reject`.
        action: &'static str,
        /// How many delivery tags.
        tags: usize,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    /// Sent, no answer yet.
    Invoked,
    /// Done.
    Ok,
    /// Refused.
    Failed,
    /// The connection dropped before the answer.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Simulated time it was invoked.
    pub invoked_ms: u64,
    /// Which client.
    pub client: usize,
    /// What.
    pub kind: OpKind,
    /// How it ended.
    pub status: OpStatus,
}

/// Every operation and every message.
#[derive(Debug, Default)]
pub struct History {
    /// In invocation order.
    pub operations: Vec<Operation>,
    /// Every message any producer made.
    pub messages: BTreeMap<MessageId, Published>,
}

impl History {
    /// Records an invocation; returns its index for [`History::end`].
    pub fn invoke(&mut self, now_ms: u64, client: usize, kind: OpKind) -> usize {
        self.operations.push(Operation {
            invoked_ms: now_ms,
            client,
            kind,
            status: OpStatus::Invoked,
        });
        self.operations.len() - 1
    }

    /// Records how operation `index` ended.
    pub fn end(&mut self, index: usize, status: OpStatus) {
        let operation = &mut self.operations[index];
        assert_eq!(
            operation.status,
            OpStatus::Invoked,
            "an operation ends once"
        );
        operation.status = status;
    }

    /// The last `count` operations, one line each, oldest first.
    pub fn tail(&self, count: usize) -> Vec<String> {
        let start = self.operations.len().saturating_sub(count);
        self.operations[start..]
            .iter()
            .map(|operation| {
                let what = match &operation.kind {
                    OpKind::Publish(id) => format!("publish {id}"),
                    OpKind::Settle { action, tags } => format!("{action} {tags} deliveries"),
                };
                format!(
                    "{:>8} ms client {:>2}: {what}: {:?}",
                    operation.invoked_ms, operation.client, operation.status
                )
            })
            .collect()
    }

    /// Counts operations by status.
    pub fn count(&self, status: OpStatus) -> usize {
        self.operations
            .iter()
            .filter(|operation| operation.status == status)
            .count()
    }
}
