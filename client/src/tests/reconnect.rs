//! Losing the connection: pending requests, reconnecting, re-subscribing, producer retries.

use krest_proto::client::{
    client_frame, server_frame, Deliveries, Error as WireError, ErrorCode, Pong, PublishOk,
    SettleAction, SubscribeOk,
};

use super::{bounded, connected, wire_delivery};
use crate::{ClientError, SubscribeOptions, SubscriptionId};

#[tokio::test]
async fn a_dropped_connection_fails_pending_requests_and_the_client_reconnects() {
    // Proves Disconnected for in-flight requests, then a new Hello with the same producer id.
    bounded(async {
        let (mut server, client, mut connection) = connected().await;
        let server_side = async {
            let _unanswered = connection.next_request().await;
            drop(connection);
        };
        let (outcome, ()) = tokio::join!(client.ping(), server_side);
        assert!(
            matches!(outcome, Err(ClientError::Disconnected)),
            "{outcome:?}"
        );

        let mut connection = server.accept().await;
        assert_eq!(connection.hello.producer_id, client.producer_id());
        let server_side = async {
            let (request_id, _) = connection.next_request().await;
            connection
                .answer(request_id, server_frame::Body::Pong(Pong {}))
                .await;
        };
        let (outcome, ()) = tokio::join!(client.ping(), server_side);
        outcome.expect("ping on the new connection");
    })
    .await;
}

#[tokio::test]
async fn a_consumer_is_subscribed_again_after_a_reconnect_and_settles_with_the_new_id() {
    // Proves re-subscription after a reconnect and that acks name the current subscription.
    bounded(async {
        let (mut server, client, mut connection) = connected().await;
        let subscribing = client.subscribe(SubscribeOptions::new("orders"));
        let server_side = async {
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Subscribe(subscribe) = body else {
                panic!("expected Subscribe, got {body:?}");
            };
            assert_eq!(subscribe.queue, "orders");
            let ok = SubscribeOk {
                subscription_id: 10,
            };
            connection
                .answer(request_id, server_frame::Body::SubscribeOk(ok))
                .await;
            push(&mut connection, 10, 1).await;
        };
        let (consumer, ()) = tokio::join!(subscribing, server_side);
        let mut consumer = consumer.expect("subscribe");
        let first = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("no error");
        assert_eq!(
            (first.subscription_id, first.sequence()),
            (SubscriptionId(10), 1)
        );

        drop(connection);
        let mut connection = server.accept().await;
        let (request_id, body) = connection.next_request().await;
        let client_frame::Body::Subscribe(subscribe) = body else {
            panic!("expected the re-subscribe, got {body:?}");
        };
        assert_eq!(subscribe.queue, "orders");
        let ok = SubscribeOk {
            subscription_id: 20,
        };
        connection
            .answer(request_id, server_frame::Body::SubscribeOk(ok))
            .await;
        push(&mut connection, 20, 2).await;
        let again = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("no error");
        assert_eq!(
            (again.subscription_id, again.delivery_count()),
            (SubscriptionId(20), 2)
        );

        let server_side = async {
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Settle(settle) = body else {
                panic!("expected Settle, got {body:?}");
            };
            assert_eq!(
                settle.subscription_id, 20,
                "the old delivery is acked on the new id"
            );
            assert_eq!(settle.action, SettleAction::Ack as i32);
            let error = WireError {
                code: ErrorCode::UnknownDelivery as i32,
                message: "no such delivery".into(),
                leader_address: String::new(),
            };
            connection
                .answer(request_id, server_frame::Body::Error(error))
                .await;
        };
        let (acked, ()) = tokio::join!(consumer.ack(&first), server_side);
        assert_eq!(acked.unwrap_err().code(), Some(ErrorCode::UnknownDelivery));
    })
    .await;
}

/// Pushes one delivery of sequence 1 (delivery count `delivery_count`) to `subscription_id`.
async fn push(
    connection: &mut super::fake_server::FakeConnection,
    subscription_id: u64,
    delivery_count: u32,
) {
    let deliveries = Deliveries {
        subscription_id,
        queue: "orders".into(),
        deliveries: vec![wire_delivery(1, delivery_count, "one")],
    };
    connection
        .push(server_frame::Body::Deliveries(deliveries))
        .await;
}

#[tokio::test]
async fn a_retried_publish_reuses_its_producer_sequence() {
    // Proves that a send lost to a disconnect is sent again with the same idempotency key.
    bounded(async {
        let (mut server, client, mut connection) = connected().await;
        let producer = client.producer("orders");
        let server_side = async {
            let (_, body) = connection.next_request().await;
            let client_frame::Body::Publish(first) = body else {
                panic!("expected Publish, got {body:?}");
            };
            drop(connection);
            let mut connection = server.accept().await;
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Publish(retry) = body else {
                panic!("expected the retried Publish, got {body:?}");
            };
            let first_sequence = first.messages[0].producer_sequence;
            assert_ne!(first_sequence, 0);
            assert_eq!(retry.messages[0].producer_sequence, first_sequence);
            assert_eq!(retry.messages[0].payload, first.messages[0].payload);
            let ok = PublishOk { sequences: vec![7] };
            connection
                .answer(request_id, server_frame::Body::PublishOk(ok))
                .await;
            (connection, first_sequence)
        };
        let (sent, (mut connection, first_sequence)) =
            tokio::join!(producer.send("payload"), server_side);
        assert_eq!(sent.expect("confirmed after the retry"), 7);

        let server_side = async {
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Publish(next) = body else {
                panic!("expected Publish, got {body:?}");
            };
            assert_eq!(next.messages[0].producer_sequence, first_sequence + 1);
            let ok = PublishOk { sequences: vec![8] };
            connection
                .answer(request_id, server_frame::Body::PublishOk(ok))
                .await;
        };
        let (sent, ()) = tokio::join!(producer.send("next"), server_side);
        assert_eq!(sent.expect("confirmed"), 8);
    })
    .await;
}

#[tokio::test]
async fn a_final_server_error_is_returned_without_a_retry() {
    // Proves that only retryable errors are retried: QUEUE_NOT_FOUND comes back at once.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let producer = client.producer("missing");
        let server_side = async {
            let (request_id, _) = connection.next_request().await;
            let error = WireError {
                code: ErrorCode::QueueNotFound as i32,
                message: "queue 'missing' does not exist".into(),
                leader_address: String::new(),
            };
            connection
                .answer(request_id, server_frame::Body::Error(error))
                .await;
            let (request_id, body) = connection.next_request().await;
            assert!(
                matches!(body, client_frame::Body::Ping(_)),
                "no retry came first"
            );
            connection
                .answer(request_id, server_frame::Body::Pong(Pong {}))
                .await;
        };
        let client_side = async {
            let sent = producer.send("x").await;
            client.ping().await.expect("ping");
            sent
        };
        let (sent, ()) = tokio::join!(client_side, server_side);
        assert_eq!(sent.unwrap_err().code(), Some(ErrorCode::QueueNotFound));
    })
    .await;
}

#[tokio::test]
async fn concurrent_sends_from_many_tasks_get_distinct_producer_sequences() {
    // Proves that the shared counter gives every in-flight message its own idempotency key.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let producer = client.producer("orders");
        let mut sends = tokio::task::JoinSet::new();
        for index in 0..32u64 {
            let producer = producer.clone();
            sends.spawn(async move { producer.send(index.to_string()).await });
        }
        let mut producer_sequences = std::collections::BTreeSet::new();
        for queue_sequence in 0..32u64 {
            let (request_id, body) = connection.next_request().await;
            let client_frame::Body::Publish(publish) = body else {
                panic!("expected Publish, got {body:?}");
            };
            producer_sequences.insert(publish.messages[0].producer_sequence);
            let ok = PublishOk {
                sequences: vec![queue_sequence],
            };
            connection
                .answer(request_id, server_frame::Body::PublishOk(ok))
                .await;
        }
        assert_eq!(producer_sequences.len(), 32);
        let mut confirmed = std::collections::BTreeSet::new();
        while let Some(sent) = sends.join_next().await {
            confirmed.insert(sent.expect("task").expect("confirmed"));
        }
        assert_eq!(confirmed, (0..32).collect());
    })
    .await;
}
