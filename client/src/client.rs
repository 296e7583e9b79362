//! [`Client`]: the handle to one logical connection to a Krest-MQ cluster.
//!
//! A `Client` is cheap to clone; all clones share one driver task (tokio or smol) around one
//! [`crate::machine::ClientMachine`]. The task lives while any clone, producer or consumer of
//! the client lives, or until [`Client::close`].

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use krest_proto::client::{
    client_frame, server_frame, CancelDelayed, DeclareQueue, DeleteQueue, GetQueue, ListQueues,
    OutgoingMessage, Ping, Publish, PurgeQueue, QueueInfo, QueueSettings, RedriveQueue,
};

use crate::config::ClientConfig;
use crate::consumer::{Consumer, SubscribeOptions};
use crate::error::ClientError;
use crate::producer::{Producer, ProducerSettings};
use crate::runtime::DriverTask;
use crate::shared::{InFlight, Shared};

/// Which async runtime drives a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// tokio (feature `tokio`, on by default); current-thread or multi-threaded.
    #[cfg(feature = "tokio")]
    Tokio,
    /// smol's global executor (feature `smol`).
    #[cfg(feature = "smol")]
    Smol,
}

#[cfg(any(feature = "tokio", feature = "smol"))]
impl Default for Runtime {
    /// tokio when the `tokio` feature is on, else smol.
    fn default() -> Runtime {
        #[cfg(feature = "tokio")]
        return Runtime::Tokio;
        #[cfg(all(feature = "smol", not(feature = "tokio")))]
        return Runtime::Smol;
    }
}

/// A connection to a Krest-MQ server, reconnecting on its own. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    shared: Arc<Shared>,
    task: Mutex<Option<DriverTask>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // The driver sees the machine closed and ends.
        self.shared.close();
    }
}

impl Client {
    /// Connects to the first reachable server of `config.servers` (each is tried once) and
    /// starts the driver task on the default [`Runtime`] (tokio if enabled). Must be called
    /// from within that runtime.
    #[cfg(any(feature = "tokio", feature = "smol"))]
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        Client::connect_on(Runtime::default(), config).await
    }

    /// [`Client::connect`] with the driver on `runtime`.
    pub async fn connect_on(runtime: Runtime, config: ClientConfig) -> Result<Client, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no server address given".into(),
            ));
        }
        let server_count = config.servers.len() as u64;
        let shared = Arc::new(Shared::new(
            config,
            random_producer_id(),
            crate::shared::system_clock(),
        ));
        let task = match runtime {
            #[cfg(feature = "tokio")]
            Runtime::Tokio => crate::runtime::tokio::spawn(Arc::clone(&shared)),
            #[cfg(feature = "smol")]
            Runtime::Smol => crate::runtime::smol::spawn(Arc::clone(&shared)),
        };
        Client::start(shared, task, server_count).await
    }

    /// A client around `shared`, driven by `task`; waits for the first session (each of
    /// `attempts` connection attempts may fail).
    pub(crate) async fn start(
        shared: Arc<Shared>,
        task: DriverTask,
        server_count: u64,
    ) -> Result<Client, ClientError> {
        let client = Client {
            inner: Arc::new(ClientInner {
                shared,
                task: Mutex::new(Some(task)),
            }),
        };
        // Each server gets one attempt.
        match client.shared().connected(server_count).await {
            Ok(()) => Ok(client),
            Err(error) => {
                client.close().await;
                Err(error)
            }
        }
    }

    /// The server (`HOST:PORT`) and node id the client is connected to, if it is now.
    pub fn connected_to(&self) -> Option<(String, u64)> {
        self.inner.shared.connected_to()
    }

    /// The producer id this client announces on every connection (random, never 0).
    pub fn producer_id(&self) -> u64 {
        self.inner.shared.producer_id
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.shared.config
    }

    /// Creates the queue, or checks that it exists with the same kind (`QUEUE_KIND_CONFLICT`
    /// otherwise).
    pub async fn declare_queue(
        &self,
        name: &str,
        settings: QueueSettings,
    ) -> Result<(), ClientError> {
        let declare = DeclareQueue {
            name: name.to_string(),
            settings: Some(settings),
        };
        let answer = self
            .request(client_frame::Body::DeclareQueue(declare))
            .await?;
        expect_done(answer, "DeclareQueue")
    }

    /// Deletes the queue and everything in it.
    pub async fn delete_queue(&self, name: &str) -> Result<(), ClientError> {
        let delete = DeleteQueue {
            name: name.to_string(),
        };
        let answer = self
            .request(client_frame::Body::DeleteQueue(delete))
            .await?;
        expect_done(answer, "DeleteQueue")
    }

    /// Removes every message of the queue; the queue stays.
    pub async fn purge_queue(&self, name: &str) -> Result<(), ClientError> {
        let purge = PurgeQueue {
            name: name.to_string(),
        };
        let answer = self.request(client_frame::Body::PurgeQueue(purge)).await?;
        expect_done(answer, "PurgeQueue")
    }

    /// Moves the messages of dead-letter queue `name` back to the queues they came from
    /// (oldest first, at most `max_messages`, 0: all, of those no consumer holds); returns
    /// (moved, skipped). Skipped messages have no source, or their source is gone or full.
    pub async fn redrive(&self, name: &str, max_messages: u64) -> Result<(u64, u64), ClientError> {
        let redrive = RedriveQueue {
            name: name.to_string(),
            max_messages,
        };
        match self
            .request(client_frame::Body::RedriveQueue(redrive))
            .await?
        {
            server_frame::Body::RedriveOk(ok) => Ok((ok.moved, ok.skipped)),
            _ => Err(ClientError::unexpected_answer("RedriveQueue")),
        }
    }

    /// Every queue with its counters.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>, ClientError> {
        match self
            .request(client_frame::Body::ListQueues(ListQueues {}))
            .await?
        {
            server_frame::Body::QueueList(list) => Ok(list.queues),
            _ => Err(ClientError::unexpected_answer("ListQueues")),
        }
    }

    /// One queue with its counters and subscriptions.
    pub async fn queue_info(&self, name: &str) -> Result<QueueInfo, ClientError> {
        let get = GetQueue {
            name: name.to_string(),
        };
        match self.request(client_frame::Body::GetQueue(get)).await? {
            server_frame::Body::QueueInfo(info) => Ok(info),
            _ => Err(ClientError::unexpected_answer("GetQueue")),
        }
    }

    /// Publishes `messages` to `queue` in one request, once, without retrying; returns the
    /// queue sequence of each message. [`Producer`] adds idempotent retries on top.
    pub async fn publish(
        &self,
        queue: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<u64>, ClientError> {
        let count = messages.len();
        let answer = self.start_publish(queue, messages).await?.await?;
        publish_sequences(answer, count)
    }

    /// Cancels a delayed message that was not delivered yet (`MESSAGE_NOT_FOUND` otherwise).
    pub async fn cancel_delayed(&self, queue: &str, sequence: u64) -> Result<(), ClientError> {
        let cancel = CancelDelayed {
            queue: queue.to_string(),
            sequence,
        };
        let answer = self
            .request(client_frame::Body::CancelDelayed(cancel))
            .await?;
        expect_done(answer, "CancelDelayed")
    }

    /// Asks the server for a Pong; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        match self.request(client_frame::Body::Ping(Ping {})).await? {
            server_frame::Body::Pong(_) => Ok(started.elapsed()),
            _ => Err(ClientError::unexpected_answer("Ping")),
        }
    }

    /// Closes the connection and stops the task. Pending requests fail with
    /// [`ClientError::Closed`], consumers' streams end, and later requests fail at once.
    pub async fn close(&self) {
        self.inner.shared.close();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            task.join().await;
        }
    }

    /// A producer for `queue` with the default options (5 retries, no headers).
    pub fn producer(&self, queue: impl Into<String>) -> Producer {
        Producer::new(self.clone(), queue.into())
    }

    /// A producer with `settings` as its defaults (its queue, confirm policy and retries);
    /// settings without a queue are an error.
    pub fn producer_with(&self, settings: &ProducerSettings) -> Result<Producer, ClientError> {
        if settings.queue.is_empty() {
            return Err(ClientError::InvalidArgument(
                "producer settings name no queue (queue, KREST_PRODUCER_QUEUE)".into(),
            ));
        }
        Ok(Producer::new(self.clone(), settings.queue.clone())
            .with_confirm(settings.confirm)
            .with_retries(settings.retries))
    }

    /// Subscribes to a queue; see [`SubscribeOptions`].
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Consumer, ClientError> {
        let subscribe = options.to_wire();
        let timeout = self.config().request_timeout;
        let (consumer_key, answer) = self.shared().add_consumer(subscribe, timeout);
        // Built before waiting so that dropping it (on error or cancellation) forgets the
        // consumer and ends a subscription that succeeded anyway.
        let consumer = Consumer::new(self.clone(), consumer_key, options);
        match answer.await? {
            server_frame::Body::SubscribeOk(_) => Ok(consumer),
            _ => Err(ClientError::unexpected_answer("Subscribe")),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) async fn request(
        &self,
        body: client_frame::Body,
    ) -> Result<server_frame::Body, ClientError> {
        self.shared().request(body).await
    }

    /// Queues a publish and returns the handle to its answer.
    pub(crate) async fn start_publish(
        &self,
        queue: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<InFlight, ClientError> {
        let publish = Publish {
            queue: queue.to_string(),
            messages,
        };
        self.shared().write_room().await;
        let timeout = self.config().request_timeout;
        let attempts = self.config().reconnect_attempts_per_request;
        Ok(self
            .shared()
            .start(client_frame::Body::Publish(publish), timeout, attempts))
    }
}

/// The sequences of a PublishOk answer for `count` messages.
pub(crate) fn publish_sequences(
    answer: server_frame::Body,
    count: usize,
) -> Result<Vec<u64>, ClientError> {
    match answer {
        server_frame::Body::PublishOk(ok) if ok.sequences.len() == count => Ok(ok.sequences),
        server_frame::Body::PublishOk(ok) => Err(ClientError::Protocol(format!(
            "{} sequences confirmed for {count} messages",
            ok.sequences.len()
        ))),
        _ => Err(ClientError::unexpected_answer("Publish")),
    }
}

pub(crate) fn expect_done(answer: server_frame::Body, request: &str) -> Result<(), ClientError> {
    match answer {
        server_frame::Body::Done(_) => Ok(()),
        _ => Err(ClientError::unexpected_answer(request)),
    }
}

/// A random, non-zero producer id: the std hasher's random keys mixed with the time and pid.
fn random_producer_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}
