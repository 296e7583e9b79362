//! krest-client: an async Rust client for Krest-MQ on tokio or smol, and the `krest`
//! command-line tool.
//!
//! ```no_run
//! # async fn example() -> Result<(), krest_client::ClientError> {
//! use krest_client::{Client, ClientConfig, QueueKind, QueueSettings, SubscribeOptions};
//!
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7654"])).await?;
//! let settings = QueueSettings { kind: QueueKind::Persistent as i32, ..Default::default() };
//! client.declare_queue("orders", settings).await?;
//!
//! let producer = client.producer("orders");
//! let sequence = producer.send("hello").await?; // confirmed after fsync
//!
//! let mut consumer = client.subscribe(SubscribeOptions::new("orders")).await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     consumer.ack(&delivery).await?;
//! #   let _ = sequence;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - [`Client`]: one connection (cheap to clone) driven by a background task that pipelines
//!   requests, matches answers by request id, and reconnects with backoff, re-sending the
//!   handshake with the same producer id and re-subscribing every live consumer. The logic is
//!   the sans-IO [`machine::ClientMachine`]; the task only moves bytes and sleeps, on tokio
//!   (feature `tokio`, default) or smol (feature `smol`, [`Runtime::Smol`]).
//! - [`Producer`]: confirmed publishing with bounded, idempotent retries.
//! - [`Consumer`]: push ([`Consumer::next`]) or pull ([`Consumer::fetch`]) consumption and
//!   settling (`ack`, `nack`, `reject`, `extend`).
//! - [`ClientError`]: every failure, with the server's stable code when it has one.
//! - `Listeners` (feature `listeners`, default): handlers per queue whose [`Outcome`] acks,
//!   retries with backoff or dead-letters each delivery, with bounded concurrency and a
//!   graceful drain.
//! - [`cli`]: the `krest` tool.
//! - `embedded` (feature `embedded`): a broker in the test process, in virtual time, for
//!   testing applications ("deliver in 3 days" in one call).

// A loom build has no runtime, so the connection code is compiled but never used.
#![cfg_attr(loom, allow(dead_code, unused_variables, unreachable_code))]

#[cfg(feature = "cli")]
pub mod cli;
mod client;
mod config;
mod consumer;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;
#[cfg(feature = "listeners")]
mod listeners;
pub mod machine;
mod producer;
mod runtime;
mod settings;
mod shared;

#[cfg(all(test, feature = "tokio"))]
mod tests;

/// The README's Rust examples, compiled by `cargo test --doc -p krest-client --all-features`
/// so that what the user guide shows keeps building.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

// A loom build (model checks of `shared`) runs without a runtime.
#[cfg(not(any(feature = "tokio", feature = "smol", loom)))]
compile_error!("krest-client needs a runtime: enable the `tokio` (default) or `smol` feature");

pub use crate::client::{Client, Runtime};
pub use crate::config::ClientConfig;
pub use crate::consumer::{
    Consumer, Delivery, Settler, SubscribeOptions, SubscriptionId, DEFAULT_PREFETCH,
};
pub use crate::error::ClientError;
#[cfg(feature = "listeners")]
pub use crate::listeners::{ListenerSettings, Listeners, Outcome};
pub use crate::producer::{
    ConfirmPolicy, PendingSend, Producer, ProducerSettings, DEFAULT_PRODUCER_RETRIES,
};
pub use krest_proto::client::{
    AckMode, DeliveryMode, DeliveryTag, ErrorCode, Header, OutgoingMessage, OverflowPolicy,
    QueueInfo, QueueKind, QueueSettings, SubscriptionInfo,
};
