//! A minimal one-queue broker on top of [`FakeConnection`], enough for `krest bench`: it stores
//! publishes in memory, pushes them to one explicit-ack subscriber within its prefetch, and
//! answers every other request with Done.

use std::collections::VecDeque;

use bytes::Bytes;
use krest_proto::client::{
    client_frame, server_frame, Deliveries, Delivery, DeliveryTag, PublishOk, SubscribeOk,
};

use super::done;
use super::fake_server::FakeConnection;

/// The one subscription id the broker hands out.
const SUBSCRIPTION_ID: u64 = 1;

#[derive(Default)]
struct MiniBroker {
    ready: VecDeque<(u64, Bytes)>,
    next_sequence: u64,
    prefetch: u64,
    unacked: u64,
    subscribed: bool,
}

/// Serves `connection` until the client closes it; returns how many messages were acked.
pub(crate) async fn serve(mut connection: FakeConnection) -> u64 {
    let mut broker = MiniBroker::default();
    let mut acked = 0;
    while let Some(frame) = connection.next_frame().await {
        let Some(body) = frame.body else { continue };
        let answer = match body {
            client_frame::Body::Publish(publish) => {
                let sequences = broker.store(publish.messages.into_iter().map(|m| m.payload));
                server_frame::Body::PublishOk(PublishOk { sequences })
            }
            client_frame::Body::Subscribe(subscribe) => {
                broker.subscribed = true;
                broker.prefetch = u64::from(subscribe.prefetch.max(1));
                let ok = SubscribeOk {
                    subscription_id: SUBSCRIPTION_ID,
                };
                server_frame::Body::SubscribeOk(ok)
            }
            client_frame::Body::Settle(settle) => {
                broker.unacked -= settle.tags.len() as u64;
                acked += settle.tags.len() as u64;
                done()
            }
            _ => done(),
        };
        connection.answer(frame.request_id, answer).await;
        if let Some(deliveries) = broker.deliverable() {
            connection
                .push(server_frame::Body::Deliveries(deliveries))
                .await;
        }
    }
    acked
}

impl MiniBroker {
    fn store(&mut self, payloads: impl Iterator<Item = Bytes>) -> Vec<u64> {
        payloads
            .map(|payload| {
                self.next_sequence += 1;
                self.ready.push_back((self.next_sequence, payload));
                self.next_sequence
            })
            .collect()
    }

    /// The messages the subscriber has room for, if any.
    fn deliverable(&mut self) -> Option<Deliveries> {
        if !self.subscribed {
            return None;
        }
        let mut deliveries = Vec::new();
        while self.unacked < self.prefetch {
            let Some((sequence, payload)) = self.ready.pop_front() else {
                break;
            };
            self.unacked += 1;
            deliveries.push(Delivery {
                tag: Some(DeliveryTag {
                    sequence,
                    delivery_count: 1,
                }),
                payload,
                ..Delivery::default()
            });
        }
        (!deliveries.is_empty()).then(|| Deliveries {
            subscription_id: SUBSCRIPTION_ID,
            queue: "bench".into(),
            deliveries,
        })
    }
}
