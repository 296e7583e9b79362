//! [`Client`]: the handle to one logical connection to a Krest-MQ cluster.
//!
//! A `Client` is cheap to clone; all clones share one connection task. The task lives while any
//! clone, producer or consumer of the client lives, or until [`Client::close`].

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use krest_proto::client::{
    client_frame, server_frame, CancelDelayed, DeclareQueue, DeleteQueue, GetQueue, ListQueues,
    OutgoingMessage, Ping, Publish, PurgeQueue, QueueInfo, QueueSettings,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::connection::{self, InFlight, Shared};
use crate::consumer::{Consumer, SubscribeOptions};
use crate::error::ClientError;
use crate::producer::Producer;

/// A connection to a Krest-MQ server, reconnecting on its own. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shared.mark_closed();
        self.shutdown.send_replace(true);
    }
}

impl Client {
    /// Connects to the first reachable server of `config.servers` (each is tried once) and
    /// starts the background connection task.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no server address given".into(),
            ));
        }
        let server_count = config.servers.len() as u64;
        let shared = Arc::new(Shared::new(config, random_producer_id()));
        let mut status = shared.status.subscribe();
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let task = tokio::spawn(connection::task::run(
            Arc::clone(&shared),
            shutdown_receiver,
        ));
        let client = Client {
            inner: Arc::new(ClientInner {
                shared,
                shutdown,
                task: Mutex::new(Some(task)),
            }),
        };
        loop {
            {
                let current = status.borrow_and_update();
                if current.sessions > 0 {
                    break;
                }
                if current.failed_attempts >= server_count {
                    let error = current.last_error.as_ref().map(|error| error.duplicate());
                    drop(current);
                    client.close().await;
                    return Err(error.unwrap_or(ClientError::Disconnected));
                }
            }
            if status.changed().await.is_err() {
                return Err(ClientError::Closed);
            }
        }
        Ok(client)
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
        let answer = self
            .start_publish(queue, messages)
            .await?
            .response()
            .await?;
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
        self.inner.shared.mark_closed();
        self.inner.shutdown.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            let _finished_or_panicked = task.await;
        }
    }

    /// A producer for `queue` with the default options (5 retries, no headers).
    pub fn producer(&self, queue: impl Into<String>) -> Producer {
        Producer::new(self.clone(), queue.into())
    }

    /// Subscribes to a queue; see [`SubscribeOptions`].
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Consumer, ClientError> {
        let subscribe = options.to_wire();
        let (events_sender, events) = mpsc::unbounded_channel();
        let consumer_id = self.shared().add_consumer(subscribe.clone(), events_sender);
        // Built before subscribing so that dropping it (on error or cancellation) forgets the
        // consumer and ends a subscription that succeeded anyway.
        let consumer = Consumer::new(self.clone(), consumer_id, options, events);
        let timeout = self.config().request_timeout;
        let answer = self
            .shared()
            .subscribe_consumer(consumer_id, subscribe, timeout)
            .await?;
        match answer {
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
        let timeout = self.config().request_timeout;
        self.shared().request(body, timeout).await
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
        let timeout = self.config().request_timeout;
        self.shared()
            .start(client_frame::Body::Publish(publish), timeout)
            .await
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
