//! Publish and consume with the smol driver, in a program that runs only smol's executor
//! (what an async-std program moves to).
//!
//! Start a server (`cargo run -p krest-runtime-smol --bin krest-server-smol`), then:
//! `cargo run -p krest-client --no-default-features --features smol --example smol_producer_consumer -- 127.0.0.1:7654`

use krest_client::{Client, ClientConfig, QueueKind, QueueSettings, Runtime, SubscribeOptions};

fn main() -> Result<(), krest_client::ClientError> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7654".into());
    smol::block_on(async {
        let client = Client::connect_on(Runtime::Smol, ClientConfig::new([address])).await?;
        let settings = QueueSettings {
            kind: QueueKind::Persistent as i32,
            ..Default::default()
        };
        client.declare_queue("example-smol", settings).await?;

        let producer = client.producer("example-smol");
        let sends: Vec<_> = (0..10)
            .map(|number| {
                let producer = producer.clone();
                smol::spawn(async move { producer.send(format!("message {number}")).await })
            })
            .collect();
        for send in sends {
            println!("confirmed after fsync: sequence {}", send.await?);
        }

        let mut consumer = client
            .subscribe(SubscribeOptions::new("example-smol"))
            .await?;
        for _ in 0..10 {
            let delivery = consumer.next().await.expect("the client is open")?;
            println!("received {:?}", String::from_utf8_lossy(&delivery.payload));
            consumer.ack(&delivery).await?;
        }
        client.close().await;
        Ok(())
    })
}
