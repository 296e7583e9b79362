//! [`Listeners`]: handlers registered per queue, run with bounded concurrency, whose result
//! decides what happens to each message (feature `tokio`).
//!
//! A handler returns an [`Outcome`]: `Ack` (done), `Retry` (nack: delivered again after a
//! delay, by default an exponential backoff of the delivery count), or `DeadLetter` (reject:
//! moved to the queue's dead-letter queue at once). A handler that panics counts as `Retry`.
//! Each listener runs at most `concurrency` handlers at once and subscribes with a prefetch of
//! twice that, so the broker never pushes more than the listener can hold. On shutdown the
//! registry stops taking new deliveries, lets running handlers finish and settle (graceful
//! drain), then unsubscribes, so unhandled deliveries go back to the queue at once.
//!
//! Settings ([`ListenerSettings`]) come from code, from `KREST_LISTENER_*` environment
//! variables ([`ListenerSettings::from_env`]) or from a TOML table ([`ListenerSettings::from_toml`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::consumer::{Delivery, Settler, SubscribeOptions};
use crate::error::ClientError;

/// What a handler decided about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Try again later: nack with this delay (`None`: the listener's backoff for the delivery
    /// count).
    Retry(Option<Duration>),
    /// Give up: reject it to the dead-letter queue.
    DeadLetter,
}

/// How one listener runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// Handlers running at once.
    pub concurrency: u32,
    /// Retry delay after the first failed delivery; doubles with each delivery after it.
    pub retry_backoff_min_ms: u64,
    /// Cap of the retry delay.
    pub retry_backoff_max_ms: u64,
    /// Longest a drain waits for running handlers at shutdown.
    pub drain_timeout_ms: u64,
}

impl crate::settings::Settings for ListenerSettings {
    const ENV_PREFIX: &'static str = "KREST_LISTENER_";

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        use crate::settings::parse;
        match key {
            "concurrency" => self.concurrency = parse(value)?,
            "retry_backoff_min_ms" => self.retry_backoff_min_ms = parse(value)?,
            "retry_backoff_max_ms" => self.retry_backoff_max_ms = parse(value)?,
            "drain_timeout_ms" => self.drain_timeout_ms = parse(value)?,
            _ => return Err(format!("unknown listener setting {key:?}")),
        }
        Ok(())
    }

    fn validate(self) -> Result<ListenerSettings, String> {
        if self.concurrency == 0 {
            return Err("listener concurrency must be at least 1".into());
        }
        Ok(self)
    }
}

impl Default for ListenerSettings {
    fn default() -> ListenerSettings {
        ListenerSettings {
            concurrency: 4,
            retry_backoff_min_ms: 1_000,
            retry_backoff_max_ms: 300_000,
            drain_timeout_ms: 30_000,
        }
    }
}

impl ListenerSettings {
    /// Defaults overridden by `KREST_LISTENER_CONCURRENCY`, `KREST_LISTENER_RETRY_BACKOFF_MIN_MS`,
    /// `KREST_LISTENER_RETRY_BACKOFF_MAX_MS` and `KREST_LISTENER_DRAIN_TIMEOUT_MS` among `vars`
    /// (pass `std::env::vars()`); a value that is not a number is an error naming the variable.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ListenerSettings, ClientError> {
        crate::settings::from_env(vars)
    }

    /// Settings from a TOML table (`concurrency = 8` ...); unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<ListenerSettings, ClientError> {
        crate::settings::from_toml(text, "listener settings")
    }

    /// The retry delay before delivery number `delivery_count + 1`: the minimum after the
    /// first delivery, doubling after each further one, capped at the maximum.
    pub fn retry_delay(&self, delivery_count: u32) -> Duration {
        let doublings = delivery_count.saturating_sub(1).min(40);
        let delay_ms = self
            .retry_backoff_min_ms
            .saturating_mul(1u64 << doublings)
            .min(self.retry_backoff_max_ms);
        Duration::from_millis(delay_ms)
    }
}

type Handler = Arc<dyn Fn(Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

struct Listener {
    options: SubscribeOptions,
    settings: ListenerSettings,
    handler: Handler,
}

/// A registry of listeners on one client; see the module documentation.
pub struct Listeners {
    client: Client,
    listeners: Vec<Listener>,
}

impl Listeners {
    /// An empty registry on `client`.
    pub fn new(client: Client) -> Listeners {
        Listeners {
            client,
            listeners: Vec::new(),
        }
    }

    /// Registers `handler` for the queue of `options` (explicit ack is forced: the outcome
    /// settles each delivery).
    pub fn listen<F, Fut>(
        mut self,
        mut options: SubscribeOptions,
        settings: ListenerSettings,
        handler: F,
    ) -> Listeners
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        options.ack_mode = krest_proto::client::AckMode::Explicit;
        options.pull = false;
        options.prefetch = settings.concurrency.saturating_mul(2);
        let handler: Handler = Arc::new(move |delivery| Box::pin(handler(delivery)));
        self.listeners.push(Listener {
            options,
            settings,
            handler,
        });
        self
    }

    /// Runs every listener until `shutdown` completes, then drains them. Fails at once if a
    /// subscription cannot be made; a listener whose subscription ends (queue deleted) stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut running = JoinSet::new();
        for listener in self.listeners {
            let consumer = self.client.subscribe(listener.options.clone()).await?;
            running.spawn(run_listener(consumer, listener, stopped.clone()));
        }
        shutdown.await;
        let _ = stop.send(true);
        while running.join_next().await.is_some() {}
        Ok(())
    }
}

async fn run_listener(
    mut consumer: crate::Consumer,
    listener: Listener,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(listener.settings.concurrency as usize));
    let settler = consumer.settler();
    let mut handlers = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let delivery = tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => {
                    tracing::warn!(%error, queue = %listener.options.queue, "the listener's subscription ended");
                    break;
                }
                None => break,
            },
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let handler = Arc::clone(&listener.handler);
        let settler = settler.clone();
        let settings = listener.settings.clone();
        handlers.spawn(async move {
            handle_one(handler, settler, settings, delivery).await;
            drop(permit);
        });
        while handlers.try_join_next().is_some() {}
    }
    // Graceful drain: running handlers finish and settle; then the subscription ends.
    let drain = async { while handlers.join_next().await.is_some() {} };
    let limit = Duration::from_millis(listener.settings.drain_timeout_ms);
    if tokio::time::timeout(limit, drain).await.is_err() {
        tracing::warn!(queue = %listener.options.queue, "handlers still running after the drain timeout");
        handlers.abort_all();
    }
    if let Err(error) = consumer.unsubscribe().await {
        tracing::debug!(%error, "unsubscribing a drained listener failed");
    }
}

async fn handle_one(
    handler: Handler,
    settler: Settler,
    settings: ListenerSettings,
    delivery: Delivery,
) {
    // A panicking handler is a failed attempt: catch it by running it as a task.
    let outcome = tokio::spawn(handler(delivery.clone()))
        .await
        .unwrap_or(Outcome::Retry(None));
    let settled = match outcome {
        Outcome::Ack => settler.ack(&delivery).await,
        Outcome::Retry(delay) => {
            let delay = delay.unwrap_or_else(|| settings.retry_delay(delivery.delivery_count()));
            settler.nack(&delivery, delay).await
        }
        Outcome::DeadLetter => settler.reject(&delivery).await,
    };
    if let Err(error) = settled {
        // The lease runs out and the message comes back: at least once still holds.
        tracing::warn!(%error, sequence = delivery.sequence(), "settling a handled delivery failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_per_delivery_from_the_minimum_up_to_the_cap() {
        let settings = ListenerSettings {
            retry_backoff_min_ms: 100,
            retry_backoff_max_ms: 1_000,
            ..ListenerSettings::default()
        };
        let delays: Vec<u128> = (1..=6)
            .map(|count| settings.retry_delay(count).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(settings.retry_delay(u32::MAX).as_millis(), 1_000);
    }

    #[test]
    fn settings_come_from_the_environment_and_toml_and_bad_values_name_the_key() {
        let vars = [
            ("KREST_LISTENER_CONCURRENCY".to_string(), "8".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        assert_eq!(ListenerSettings::from_env(vars).unwrap().concurrency, 8);
        let bad = [(
            "KREST_LISTENER_DRAIN_TIMEOUT_MS".to_string(),
            "soon".to_string(),
        )];
        let error = ListenerSettings::from_env(bad).unwrap_err().to_string();
        assert!(error.contains("KREST_LISTENER_DRAIN_TIMEOUT_MS"), "{error}");
        let settings = ListenerSettings::from_toml("concurrency = 2\nretry_backoff_min_ms = 5\n");
        assert_eq!(settings.unwrap().retry_backoff_min_ms, 5);
        let error = ListenerSettings::from_toml("concurency = 2")
            .unwrap_err()
            .to_string();
        assert!(error.contains("concurency"), "{error}");
        assert!(ListenerSettings::from_toml("concurrency = 0").is_err());
    }
}
