//! [`Consumer`]: one subscription to a queue, push or pull, and the settling of deliveries.
//!
//! A consumer outlives connections: after a reconnect the connection task subscribes it again
//! and routes the new subscription id to the same stream. Settling (`ack`, `nack`, `reject`,
//! `extend`) always names the *current* subscription id; deliveries received on an earlier
//! connection were requeued by the server when that connection dropped, so settling them fails
//! (`UNKNOWN_DELIVERY` or `SUBSCRIPTION_NOT_FOUND`) and the message is delivered again.
//!
//! With auto ack the server pushes only within the credit this consumer grants: `prefetch` at
//! first, then more as the application takes deliveries off the stream ([`CreditWindow`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use krest_proto::client::{
    client_frame, server_frame, AckMode, Credit, Deliveries, DeliveryMode, DeliveryTag, Fetch,
    Header, QueueSettings, Settle, SettleAction, Subscribe, Unsubscribe,
};

use crate::client::{expect_done, Client};
use crate::error::ClientError;
use crate::machine::ConsumerKey;
use crate::shared::ConsumerEvent;

/// The prefetch of [`SubscribeOptions::new`].
pub const DEFAULT_PREFETCH: u32 = 64;

/// A subscription id, as the server assigned it on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// What to subscribe to and how.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// The queue.
    pub queue: String,
    /// Point (consumers of a group compete) or broadcast (every subscriber gets everything).
    pub mode: DeliveryMode,
    /// The competing group of point subscriptions; empty: the server's default group.
    pub group: String,
    /// Explicit (ack each delivery) or auto (acked when sent: at most once).
    pub ack_mode: AckMode,
    /// Explicit ack: unacked deliveries at most. Auto ack: the initial credit.
    pub prefetch: u32,
    /// Pull instead of push: nothing arrives unless [`Consumer::fetch`] asks.
    pub pull: bool,
    /// Create the queue with these settings if it does not exist.
    pub create_if_missing: Option<QueueSettings>,
}

impl SubscribeOptions {
    /// Point, explicit ack, push, prefetch [`DEFAULT_PREFETCH`], default group.
    pub fn new(queue: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            queue: queue.into(),
            mode: DeliveryMode::Point,
            group: String::new(),
            ack_mode: AckMode::Explicit,
            prefetch: DEFAULT_PREFETCH,
            pull: false,
            create_if_missing: None,
        }
    }

    pub(crate) fn to_wire(&self) -> Subscribe {
        Subscribe {
            queue: self.queue.clone(),
            mode: self.mode as i32,
            group: self.group.clone(),
            ack_mode: self.ack_mode as i32,
            prefetch: self.prefetch,
            pull: self.pull,
            create_if_missing: self.create_if_missing.clone(),
        }
    }
}

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The subscription (on the connection of the time) it was delivered to.
    pub subscription_id: SubscriptionId,
    /// Queue sequence and delivery count: what settling names.
    pub tag: DeliveryTag,
    /// The message body.
    pub payload: Bytes,
    /// The message headers.
    pub headers: Vec<Header>,
    /// When it was due, for delayed messages.
    pub deliver_at: Option<SystemTime>,
    /// When the server stored it.
    pub published_at: Option<SystemTime>,
}

impl Delivery {
    /// The queue sequence of the message.
    pub fn sequence(&self) -> u64 {
        self.tag.sequence
    }

    /// 1 on the first delivery, more on redeliveries.
    pub fn delivery_count(&self) -> u32 {
        self.tag.delivery_count
    }
}

/// Converts a `Deliveries` frame into deliveries.
fn deliveries_from_wire(deliveries: Deliveries) -> Vec<Delivery> {
    let queue: Arc<str> = deliveries.queue.into();
    let subscription_id = SubscriptionId(deliveries.subscription_id);
    let unix_ms = |ms: u64| (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms));
    deliveries
        .deliveries
        .into_iter()
        .map(|delivery| Delivery {
            queue: Arc::clone(&queue),
            subscription_id,
            tag: delivery.tag.unwrap_or_else(|| {
                tracing::warn!("a delivery without a tag cannot be settled");
                DeliveryTag::default()
            }),
            payload: delivery.payload,
            headers: delivery.headers,
            deliver_at: unix_ms(delivery.deliver_at_unix_ms),
            published_at: unix_ms(delivery.published_at_unix_ms),
        })
        .collect()
}

/// Auto-ack credit bookkeeping: grants more credit after every `prefetch / 2` deliveries the
/// application took, never more in total than an optional limit.
#[derive(Debug, Clone)]
pub(crate) struct CreditWindow {
    prefetch: u32,
    /// The subscription the counters below belong to.
    subscription_id: Option<u64>,
    taken_since_grant: u32,
    granted_total: u64,
    limit_total: Option<u64>,
}

impl CreditWindow {
    pub(crate) fn new(prefetch: u32) -> CreditWindow {
        CreditWindow {
            prefetch,
            subscription_id: None,
            taken_since_grant: 0,
            granted_total: 0,
            limit_total: None,
        }
    }

    /// Records one delivery taken by the application; returns the credit to grant now, if any.
    pub(crate) fn on_taken(&mut self, subscription_id: u64) -> Option<u32> {
        if self.subscription_id != Some(subscription_id) {
            // A new subscription starts with `prefetch` credit of its own.
            self.subscription_id = Some(subscription_id);
            self.taken_since_grant = 0;
            self.granted_total += u64::from(self.prefetch);
        }
        self.taken_since_grant += 1;
        if self.taken_since_grant < (self.prefetch / 2).max(1) {
            return None;
        }
        let mut grant = u64::from(self.taken_since_grant);
        self.taken_since_grant = 0;
        if let Some(limit_total) = self.limit_total {
            grant = grant.min(limit_total.saturating_sub(self.granted_total));
        }
        self.granted_total += grant;
        (grant > 0).then_some(grant as u32)
    }
}

/// A subscription to one queue. Dropping it unsubscribes (best effort).
pub struct Consumer {
    client: Client,
    consumer_id: ConsumerKey,
    options: SubscribeOptions,
    buffered: VecDeque<Delivery>,
    credit: CreditWindow,
    ended: bool,
}

impl Consumer {
    pub(crate) fn new(
        client: Client,
        consumer_id: ConsumerKey,
        options: SubscribeOptions,
    ) -> Consumer {
        let credit = CreditWindow::new(options.prefetch);
        Consumer {
            client,
            consumer_id,
            options,
            buffered: VecDeque::new(),
            credit,
            ended: false,
        }
    }

    /// The options this consumer subscribed with.
    pub fn options(&self) -> &SubscribeOptions {
        &self.options
    }

    /// The subscription id on the current connection; `None` while reconnecting.
    pub fn subscription_id(&self) -> Option<SubscriptionId> {
        let shared = self.client.shared();
        shared
            .subscription_id(self.consumer_id)
            .ok()
            .map(SubscriptionId)
    }

    /// Auto ack: never grant credit for more than `total` deliveries in all (the initial
    /// prefetch included). For a consumer that wants exactly `total` messages and must not
    /// lose more in its buffer when it stops.
    pub fn limit_auto_ack_credit(&mut self, total: u64) {
        self.credit.limit_total = Some(total);
    }

    /// The next pushed delivery. `None` once the client is closed; `Some(Err(..))` once if the
    /// server ended the subscription (then `None`).
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        if self.options.pull {
            let reason = "a pull consumer receives nothing pushed: use fetch";
            return Some(Err(ClientError::InvalidArgument(reason.into())));
        }
        loop {
            if let Some(delivery) = self.buffered.pop_front() {
                self.after_taken(&delivery);
                return Some(Ok(delivery));
            }
            if self.ended {
                return None;
            }
            let shared = self.client.shared();
            let consumer = self.consumer_id;
            let event = std::future::poll_fn(|context| shared.poll_consumer(consumer, context));
            match event.await {
                None => return None,
                Some(ConsumerEvent::Deliveries(deliveries)) => {
                    self.buffered.extend(deliveries_from_wire(deliveries));
                }
                Some(ConsumerEvent::Ended(error)) => {
                    self.ended = true;
                    return Some(Err(error));
                }
            }
        }
    }

    fn after_taken(&mut self, delivery: &Delivery) {
        if self.options.ack_mode != AckMode::Auto {
            return;
        }
        let subscription_id = delivery.subscription_id.0;
        if let Some(messages) = self.credit.on_taken(subscription_id) {
            let Ok(current) = self.client.shared().subscription_id(self.consumer_id) else {
                return;
            };
            if current == subscription_id {
                let credit = Credit {
                    subscription_id,
                    messages,
                };
                let body = client_frame::Body::Credit(credit);
                self.client.shared().send_ignored(body);
            }
        }
    }

    /// Pull: up to `max_messages` deliveries; if none is ready, waits up to `wait` for the
    /// first one. May return an empty list.
    pub async fn fetch(
        &mut self,
        max_messages: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ClientError> {
        let fetch = Fetch {
            subscription_id: self.current_subscription_id()?,
            max_messages,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let timeout = self.client.config().request_timeout + wait;
        let attempts = self.client.config().reconnect_attempts_per_request;
        let shared = self.client.shared();
        match shared
            .start(client_frame::Body::Fetch(fetch), timeout, attempts)
            .await?
        {
            server_frame::Body::Deliveries(deliveries) => Ok(deliveries_from_wire(deliveries)),
            _ => Err(ClientError::unexpected_answer("Fetch")),
        }
    }

    /// A cheap, cloneable handle that settles this consumer's deliveries from other tasks
    /// (what [`crate::Listeners`] hands its handlers' outcomes to).
    pub fn settler(&self) -> Settler {
        Settler {
            client: self.client.clone(),
            consumer_id: self.consumer_id,
        }
    }

    /// Acknowledges one delivery: the message is done.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), ClientError> {
        self.settler().ack(delivery).await
    }

    /// Acknowledges several deliveries in one request.
    pub async fn ack_many(&self, deliveries: &[Delivery]) -> Result<(), ClientError> {
        self.settler().ack_many(deliveries).await
    }

    /// Gives the message back to the queue, to be delivered again after `delay`.
    pub async fn nack(&self, delivery: &Delivery, delay: Duration) -> Result<(), ClientError> {
        self.settler().nack(delivery, delay).await
    }

    /// Sends the message straight to the dead-letter queue.
    pub async fn reject(&self, delivery: &Delivery) -> Result<(), ClientError> {
        self.settler().reject(delivery).await
    }

    /// Keeps the delivery leased to this consumer for `lease` more.
    pub async fn extend(&self, delivery: &Delivery, lease: Duration) -> Result<(), ClientError> {
        self.settler().extend(delivery, lease).await
    }

    /// Ends the subscription and waits for the server's confirmation. Unacked deliveries go
    /// back to the queue.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let shared = self.client.shared();
        let Some(subscription_id) = shared.remove_consumer(self.consumer_id) else {
            // Not subscribed on the current connection: nothing to end on the server.
            return Ok(());
        };
        let unsubscribe = Unsubscribe { subscription_id };
        let answer = self
            .client
            .request(client_frame::Body::Unsubscribe(unsubscribe))
            .await?;
        expect_done(answer, "Unsubscribe")
    }

    fn current_subscription_id(&self) -> Result<u64, ClientError> {
        self.client.shared().subscription_id(self.consumer_id)
    }
}

/// Settles the deliveries of one consumer; see [`Consumer::settler`]. Settling names the
/// consumer's *current* subscription id.
#[derive(Clone)]
pub struct Settler {
    client: Client,
    consumer_id: ConsumerKey,
}

impl Settler {
    /// Acknowledges one delivery: the message is done.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), ClientError> {
        self.settle(SettleAction::Ack, &[delivery.tag], 0, 0).await
    }

    /// Acknowledges several deliveries in one request.
    pub async fn ack_many(&self, deliveries: &[Delivery]) -> Result<(), ClientError> {
        let tags: Vec<DeliveryTag> = deliveries.iter().map(|delivery| delivery.tag).collect();
        self.settle(SettleAction::Ack, &tags, 0, 0).await
    }

    /// Gives the message back to the queue, to be delivered again after `delay`.
    pub async fn nack(&self, delivery: &Delivery, delay: Duration) -> Result<(), ClientError> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.settle(SettleAction::Nack, &[delivery.tag], delay_ms, 0)
            .await
    }

    /// Sends the message straight to the dead-letter queue.
    pub async fn reject(&self, delivery: &Delivery) -> Result<(), ClientError> {
        self.settle(SettleAction::Reject, &[delivery.tag], 0, 0)
            .await
    }

    /// Keeps the delivery leased to this consumer for `lease` more.
    pub async fn extend(&self, delivery: &Delivery, lease: Duration) -> Result<(), ClientError> {
        let extend_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.settle(SettleAction::Extend, &[delivery.tag], 0, extend_ms)
            .await
    }

    async fn settle(
        &self,
        action: SettleAction,
        tags: &[DeliveryTag],
        delay_ms: u64,
        extend_ms: u64,
    ) -> Result<(), ClientError> {
        if tags.is_empty() {
            return Ok(());
        }
        let settle = Settle {
            subscription_id: self.client.shared().subscription_id(self.consumer_id)?,
            action: action as i32,
            tags: tags.to_vec(),
            delay_ms,
            extend_ms,
        };
        let answer = self
            .client
            .request(client_frame::Body::Settle(settle))
            .await?;
        expect_done(answer, "Settle")
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Best effort: ends the subscription on the server if there is a link now.
        let shared = self.client.shared();
        if let Some(subscription_id) = shared.remove_consumer(self.consumer_id) {
            let unsubscribe = Unsubscribe { subscription_id };
            shared.send_ignored(client_frame::Body::Unsubscribe(unsubscribe));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_granted_every_half_prefetch_and_restarts_with_a_new_subscription() {
        let mut window = CreditWindow::new(4);
        assert_eq!(window.on_taken(7), None);
        assert_eq!(window.on_taken(7), Some(2));
        assert_eq!(window.on_taken(7), None);
        assert_eq!(
            window.on_taken(9),
            None,
            "a new subscription restarts the count"
        );
        assert_eq!(window.on_taken(9), Some(2));
    }

    #[test]
    fn credit_never_exceeds_the_limit_in_total() {
        let mut window = CreditWindow::new(4);
        window.limit_total = Some(6);
        let granted: u32 = (0..20).filter_map(|_| window.on_taken(1)).sum();
        assert_eq!(u64::from(granted) + 4, 6);
    }

    #[test]
    fn a_prefetch_of_one_grants_after_every_delivery() {
        let mut window = CreditWindow::new(1);
        assert_eq!(window.on_taken(1), Some(1));
        assert_eq!(window.on_taken(1), Some(1));
    }
}
