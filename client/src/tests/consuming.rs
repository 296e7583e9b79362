//! Consuming: credit with auto ack, pull fetches, settling in batches, ended subscriptions.

use std::time::{Duration, UNIX_EPOCH};

use krest_proto::client::{
    client_frame, server_frame, AckMode, Deliveries, Delivery as WireDelivery, ErrorCode,
    SettleAction, SubscribeOk, SubscriptionEnded,
};

use super::fake_server::FakeConnection;
use super::{bounded, connected, done, wire_delivery};
use crate::{Client, ClientError, Consumer, SubscribeOptions};

/// Subscribes with `options`, answering SubscribeOk with `subscription_id`.
async fn subscribe(
    client: &Client,
    connection: &mut FakeConnection,
    options: SubscribeOptions,
    subscription_id: u64,
) -> Consumer {
    let server_side = async {
        let (request_id, body) = connection.next_request().await;
        assert!(matches!(body, client_frame::Body::Subscribe(_)), "{body:?}");
        let ok = SubscribeOk { subscription_id };
        connection
            .answer(request_id, server_frame::Body::SubscribeOk(ok))
            .await;
    };
    let (consumer, ()) = tokio::join!(client.subscribe(options), server_side);
    consumer.expect("subscribe")
}

fn deliveries(subscription_id: u64, sequences: std::ops::Range<u64>) -> server_frame::Body {
    server_frame::Body::Deliveries(Deliveries {
        subscription_id,
        queue: "events".into(),
        deliveries: sequences
            .map(|sequence| wire_delivery(sequence, 1, "body"))
            .collect(),
    })
}

#[tokio::test]
async fn an_auto_ack_consumer_grants_credit_as_the_application_takes_deliveries() {
    // Proves that credit follows consumption: half a prefetch taken, half a prefetch granted.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let mut options = SubscribeOptions::new("events");
        options.ack_mode = AckMode::Auto;
        options.prefetch = 4;
        let mut consumer = subscribe(&client, &mut connection, options, 3).await;
        connection.push(deliveries(3, 1..5)).await;
        consumer.next().await.expect("first").expect("no error");
        consumer.next().await.expect("second").expect("no error");
        let (_, body) = connection.next_request().await;
        let client_frame::Body::Credit(credit) = body else {
            panic!("expected Credit, got {body:?}");
        };
        assert_eq!((credit.subscription_id, credit.messages), (3, 2));
    })
    .await;
}

#[tokio::test]
async fn a_pull_fetch_asks_with_its_wait_and_returns_the_answered_deliveries() {
    // Proves the Fetch request fields and the conversion of the Deliveries answer.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let mut options = SubscribeOptions::new("events");
        options.pull = true;
        let mut consumer = subscribe(&client, &mut connection, options, 5).await;
        let server_side = async {
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Fetch(fetch) = body else {
                panic!("expected Fetch, got {body:?}");
            };
            assert_eq!(
                (fetch.subscription_id, fetch.max_messages, fetch.wait_ms),
                (5, 10, 250)
            );
            let mut delivery = wire_delivery(9, 2, "pulled");
            delivery.published_at_unix_ms = 1_000;
            let answer = Deliveries {
                subscription_id: 5,
                queue: "events".into(),
                deliveries: vec![delivery, WireDelivery::default()],
            };
            connection
                .answer(request_id, server_frame::Body::Deliveries(answer))
                .await;
        };
        let (fetched, ()) =
            tokio::join!(consumer.fetch(10, Duration::from_millis(250)), server_side);
        let fetched = fetched.expect("fetch");
        assert_eq!(fetched.len(), 2);
        assert_eq!(&*fetched[0].queue, "events");
        assert_eq!((fetched[0].sequence(), fetched[0].delivery_count()), (9, 2));
        assert_eq!(&fetched[0].payload[..], b"pulled");
        assert_eq!(
            fetched[0].published_at,
            Some(UNIX_EPOCH + Duration::from_secs(1))
        );
        assert_eq!(fetched[0].deliver_at, None);
        let next = consumer.next().await.expect("an answer");
        assert!(matches!(next, Err(ClientError::InvalidArgument(_))));
    })
    .await;
}

#[tokio::test]
async fn ack_many_settles_every_tag_in_one_request_and_nack_carries_its_delay() {
    // Proves the Settle frames: one batch for ack_many, the delay for nack.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let mut consumer = subscribe(&client, &mut connection, SubscribeOptions::new("e"), 8).await;
        connection.push(deliveries(8, 1..4)).await;
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(consumer.next().await.expect("delivery").expect("no error"));
        }
        let server_side = async {
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Settle(settle) = body else {
                panic!("expected Settle, got {body:?}");
            };
            let sequences: Vec<u64> = settle.tags.iter().map(|tag| tag.sequence).collect();
            assert_eq!(
                (settle.action, sequences),
                (SettleAction::Ack as i32, vec![1, 2])
            );
            connection.answer(request_id, done()).await;
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Settle(settle) = body else {
                panic!("expected Settle, got {body:?}");
            };
            assert_eq!(
                (settle.action, settle.delay_ms),
                (SettleAction::Nack as i32, 1500)
            );
            connection.answer(request_id, done()).await;
        };
        let client_side = async {
            consumer.ack_many(&taken[..2]).await.expect("ack_many");
            consumer
                .nack(&taken[2], Duration::from_millis(1500))
                .await
                .expect("nack");
        };
        tokio::join!(client_side, server_side);
    })
    .await;
}

#[tokio::test]
async fn a_subscription_the_server_ends_yields_its_reason_once_then_the_stream_ends() {
    // Proves SubscriptionEnded handling: the error, then None, and no re-subscribe later.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let mut consumer = subscribe(&client, &mut connection, SubscribeOptions::new("e"), 4).await;
        let ended = SubscriptionEnded {
            subscription_id: 4,
            reason: Some(krest_proto::client::Error {
                code: ErrorCode::QueueNotFound as i32,
                message: "queue 'e' was deleted".into(),
                leader_address: String::new(),
            }),
        };
        connection
            .push(server_frame::Body::SubscriptionEnded(ended))
            .await;
        let error = consumer.next().await.expect("the reason").unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::QueueNotFound));
        assert!(consumer.next().await.is_none());
        assert!(matches!(consumer.ack_many(&[]).await, Ok(())));
        assert!(consumer.subscription_id().is_none());
    })
    .await;
}

#[tokio::test]
async fn dropping_a_consumer_unsubscribes_it() {
    // Proves the best-effort Unsubscribe a dropped consumer sends.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let consumer = subscribe(&client, &mut connection, SubscribeOptions::new("e"), 6).await;
        drop(consumer);
        let (_, body) = connection.next_request().await;
        let client_frame::Body::Unsubscribe(unsubscribe) = body else {
            panic!("expected Unsubscribe, got {body:?}");
        };
        assert_eq!(unsubscribe.subscription_id, 6);
    })
    .await;
}
