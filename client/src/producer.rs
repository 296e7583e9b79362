//! [`Producer`]: confirmed, idempotent publishing to one queue.
//!
//! Each message gets the next producer sequence of its [`Client`] (a shared counter, so
//! sequences are unique per producer id however many producers and tasks send). A send that
//! fails in a way a retry may cure (disconnect, timeout, `UNAVAILABLE`) is sent again with the
//! same producer sequence, so the server confirms it with the original queue sequence and
//! stores it once. Other errors are returned at once. Retries are bounded per message.
//!
//! What `send` waits for is the producer's [`ConfirmPolicy`]: the confirm (the default), or
//! only the hand-over to the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use krest_proto::client::{Header, OutgoingMessage};

use crate::client::{publish_sequences, Client};
use crate::error::ClientError;
use crate::shared::next_producer_sequence;
use crate::shared::InFlight;

/// Retries per message unless [`Producer::with_retries`] says otherwise.
pub const DEFAULT_PRODUCER_RETRIES: u32 = 5;

/// What [`Producer::send`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfirmPolicy {
    /// The server's confirm: the message is stored (after fsync, for a persistent or delay
    /// queue), and `send` returns its queue sequence. Failures a retry may cure are retried.
    #[default]
    Wait,
    /// Only the hand-over to the connection: `send` returns `0` (no stored message has that
    /// sequence) as soon as the message is queued for writing. The request still goes out,
    /// after a reconnect too, but its answer is dropped unread, so a failure after the
    /// hand-over (`QUEUE_FULL`, a timeout) goes unreported: at most once, for data that may be
    /// lost. Use [`Producer::start_send`] to keep sends in flight and still check them.
    NoWait,
}

/// A producer's defaults, from code, the environment ([`ProducerSettings::from_env`]) or TOML
/// ([`ProducerSettings::from_toml`]); [`Client::producer_with`] builds the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSettings {
    /// The queue it publishes to.
    pub queue: String,
    /// What `send` waits for.
    pub confirm: ConfirmPolicy,
    /// Retries per message.
    pub retries: u32,
}

impl Default for ProducerSettings {
    fn default() -> ProducerSettings {
        ProducerSettings {
            queue: String::new(),
            confirm: ConfirmPolicy::Wait,
            retries: DEFAULT_PRODUCER_RETRIES,
        }
    }
}

impl ProducerSettings {
    /// Defaults overridden by `KREST_PRODUCER_QUEUE`, `KREST_PRODUCER_CONFIRM` (`wait` or
    /// `no-wait`) and `KREST_PRODUCER_RETRIES` among `vars` (pass `std::env::vars()`); other
    /// `KREST_PRODUCER_*` names and values that do not parse are errors naming the variable.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ProducerSettings, ClientError> {
        crate::settings::from_env(vars)
    }

    /// Settings from a TOML table (`queue = "orders"`, `confirm = "wait"`, `retries = 5`);
    /// unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<ProducerSettings, ClientError> {
        crate::settings::from_toml(text, "producer settings")
    }
}

/// Publishes to one queue with confirms and idempotent retries. Cheap to clone; `send` takes
/// `&self`, so many sends can be in flight at once, from one task or many.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    queue: Arc<str>,
    retries_max: u32,
    confirm: ConfirmPolicy,
    headers: Arc<[Header]>,
}

/// A message that was queued for writing and waits for its confirm; see
/// [`Producer::start_send`].
pub struct PendingSend {
    producer: Producer,
    message: OutgoingMessage,
    request: InFlight,
    retries_used: u32,
}

impl Producer {
    pub(crate) fn new(client: Client, queue: String) -> Producer {
        Producer {
            client,
            queue: queue.into(),
            retries_max: DEFAULT_PRODUCER_RETRIES,
            confirm: ConfirmPolicy::Wait,
            headers: Arc::new([]),
        }
    }

    /// The same producer, with `send` waiting for what `confirm` says.
    pub fn with_confirm(mut self, confirm: ConfirmPolicy) -> Producer {
        self.confirm = confirm;
        self
    }

    /// The same producer, retrying each message at most `retries_max` times.
    pub fn with_retries(mut self, retries_max: u32) -> Producer {
        self.retries_max = retries_max;
        self
    }

    /// The same producer, adding this header to every message (before the message's own).
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Producer {
        let mut headers = self.headers.to_vec();
        headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
        self.headers = headers.into();
        self
    }

    /// The queue this producer publishes to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Publishes one payload; returns its queue sequence once the server confirmed it (`0`
    /// at once with [`ConfirmPolicy::NoWait`]).
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<u64, ClientError> {
        self.send_message(message_with_payload(payload.into()))
            .await
    }

    /// Publishes one payload to be delivered no earlier than `delay` from now (delay queues).
    pub async fn send_delayed(
        &self,
        payload: impl Into<Bytes>,
        delay: Duration,
    ) -> Result<u64, ClientError> {
        let mut message = message_with_payload(payload.into());
        message.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.send_message(message).await
    }

    /// Publishes one message as given (its `producer_sequence`, if 0, is assigned here); what
    /// it waits for is the producer's [`ConfirmPolicy`].
    pub async fn send_message(&self, message: OutgoingMessage) -> Result<u64, ClientError> {
        let pending = self.start_send(message).await?;
        match self.confirm {
            ConfirmPolicy::Wait => pending.confirmed().await,
            ConfirmPolicy::NoWait => {
                pending.request.detach();
                Ok(0)
            }
        }
    }

    /// Queues one message for writing and returns without waiting for its confirm. Messages
    /// started one after another (each `start_send` awaited before the next) go on the wire in
    /// that order; retries after a disconnect may reorder them.
    pub async fn start_send(
        &self,
        mut message: OutgoingMessage,
    ) -> Result<PendingSend, ClientError> {
        if message.producer_sequence == 0 {
            message.producer_sequence = next_producer_sequence(self.client.shared());
        }
        if !self.headers.is_empty() {
            let own_headers = std::mem::take(&mut message.headers);
            message.headers = self.headers.iter().cloned().chain(own_headers).collect();
        }
        let mut retries_used = 0;
        loop {
            match self
                .client
                .start_publish(&self.queue, vec![message.clone()])
                .await
            {
                Ok(request) => {
                    return Ok(PendingSend {
                        producer: self.clone(),
                        message,
                        request,
                        retries_used,
                    })
                }
                Err(error) => retries_used = self.before_retry(error, retries_used).await?,
            }
        }
    }

    /// Returns the error if it is final; otherwise waits the retry backoff and returns the
    /// incremented retry count.
    async fn before_retry(
        &self,
        error: ClientError,
        retries_used: u32,
    ) -> Result<u32, ClientError> {
        if !error.is_retryable() || retries_used >= self.retries_max {
            return Err(error);
        }
        tracing::debug!(%error, queue = %self.queue, retries_used, "retrying a publish");
        let backoff = self.client.config().backoff(retries_used);
        self.client.shared().sleep(backoff).await;
        Ok(retries_used + 1)
    }
}

impl PendingSend {
    /// The idempotency sequence this message carries on every attempt.
    pub fn producer_sequence(&self) -> u64 {
        self.message.producer_sequence
    }

    /// Waits for the confirm, sending the message again (same producer sequence) after a
    /// failure a retry may cure; returns the message's queue sequence.
    pub async fn confirmed(self) -> Result<u64, ClientError> {
        let PendingSend {
            producer,
            message,
            mut request,
            mut retries_used,
        } = self;
        loop {
            let outcome = request
                .await
                .and_then(|answer| publish_sequences(answer, 1));
            match outcome {
                Ok(sequences) => return Ok(sequences[0]),
                Err(error) => retries_used = producer.before_retry(error, retries_used).await?,
            }
            request = loop {
                let queue = &producer.queue;
                match producer
                    .client
                    .start_publish(queue, vec![message.clone()])
                    .await
                {
                    Ok(request) => break request,
                    Err(error) => retries_used = producer.before_retry(error, retries_used).await?,
                }
            };
        }
    }
}

fn message_with_payload(payload: Bytes) -> OutgoingMessage {
    OutgoingMessage {
        payload,
        ..OutgoingMessage::default()
    }
}
