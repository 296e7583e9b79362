//! Publish and consume with the tokio driver, on tokio's multi-threaded runtime.
//!
//! Start a server (`cargo run -p krest-runtime-tokio --bin krest-server`), then:
//! `cargo run -p krest-client --example tokio_producer_consumer -- 127.0.0.1:7654`

use krest_client::{Client, ClientConfig, QueueKind, QueueSettings, SubscribeOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), krest_client::ClientError> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7654".into());
    let client = Client::connect(ClientConfig::new([address])).await?;
    let settings = QueueSettings {
        kind: QueueKind::Persistent as i32,
        ..Default::default()
    };
    client.declare_queue("example-tokio", settings).await?;

    let producer = client.producer("example-tokio");
    // Many sends in flight at once, from many tasks: the producer is cheap to clone.
    let mut sends = Vec::new();
    for number in 0..10 {
        let producer = producer.clone();
        sends.push(tokio::spawn(async move {
            producer.send(format!("message {number}")).await
        }));
    }
    for send in sends {
        let sequence = send.await.expect("the task ran")?;
        println!("confirmed after fsync: sequence {sequence}");
    }

    let mut consumer = client
        .subscribe(SubscribeOptions::new("example-tokio"))
        .await?;
    for _ in 0..10 {
        let delivery = consumer.next().await.expect("the client is open")?;
        println!("received {:?}", String::from_utf8_lossy(&delivery.payload));
        consumer.ack(&delivery).await?;
    }
    client.close().await;
    Ok(())
}
