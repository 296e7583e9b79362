//! Client-side helpers the black-box suites share: wait for a delivery, read its body, and
//! dead-letter messages on purpose.

use std::time::Duration;

use krest_client::{
    Client, ClientConfig, Consumer, Delivery, QueueKind, QueueSettings, SubscribeOptions,
};

use crate::Server;

/// A client of `server` that has declared persistent queue `queue`.
pub async fn client_with_persistent_queue(server: &Server, queue: &str) -> Client {
    let client = Client::connect(ClientConfig::new([server.address()]))
        .await
        .expect("connects");
    let settings = QueueSettings {
        kind: QueueKind::Persistent as i32,
        ..Default::default()
    };
    client
        .declare_queue(queue, settings)
        .await
        .expect("declare");
    client
}

/// The consumer's next delivery; fails the test after 20 s without one.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("delivery ok")
}

/// A delivery's payload as text.
pub fn body(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.payload).into_owned()
}

/// Publishes `bodies` to the existing queue `queue` and rejects each one, so they all land in
/// its dead-letter queue.
pub async fn dead_letter(client: &Client, queue: &str, bodies: &[&str]) {
    let producer = client.producer(queue.to_string());
    for body in bodies {
        producer.send(body.to_string()).await.expect("confirmed");
    }
    let mut consumer = client
        .subscribe(SubscribeOptions::new(queue.to_string()))
        .await
        .expect("subscribe");
    for _ in bodies {
        let delivery = next_delivery(&mut consumer).await;
        consumer.reject(&delivery).await.expect("reject");
    }
    consumer.unsubscribe().await.expect("unsubscribe");
}
