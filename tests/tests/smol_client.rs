//! The smol client in a program that runs only smol's executor (no tokio runtime anywhere in
//! this test), against both server binaries.

use std::time::Duration;

use krest_client::{Client, ClientConfig, QueueKind, QueueSettings, Runtime, SubscribeOptions};
use krest_tests::{Server, ServerKind};
use smol::future::FutureExt as _;

#[test]
fn smol_client_publishes_consumes_and_fetches_against_the_tokio_server() {
    publishes_consumes_and_fetches(ServerKind::Tokio);
}

#[test]
fn smol_client_publishes_consumes_and_fetches_against_the_smol_server() {
    publishes_consumes_and_fetches(ServerKind::Smol);
}

/// Proves the smol driver end to end: concurrent confirmed publishes from smol tasks, push
/// consumption with acks, and a pull fetch, all inside `smol::block_on`.
fn publishes_consumes_and_fetches(kind: ServerKind) {
    let server = Server::start(kind);
    let scenario = async {
        let config = ClientConfig::new([server.address()]);
        let client = Client::connect_on(Runtime::Smol, config)
            .await
            .expect("connects");
        let settings = QueueSettings {
            kind: QueueKind::Persistent as i32,
            ..Default::default()
        };
        client
            .declare_queue("smol", settings.clone())
            .await
            .expect("declare");
        let producer = client.producer("smol");
        let sends: Vec<_> = (0..100)
            .map(|number| {
                let producer = producer.clone();
                smol::spawn(async move { producer.send(format!("m{number}")).await })
            })
            .collect();
        let mut sequences = Vec::new();
        for send in sends {
            sequences.push(send.await.expect("confirmed"));
        }
        sequences.sort_unstable();
        sequences.dedup();
        assert_eq!(sequences.len(), 100, "every publish got its own sequence");

        let mut consumer = client
            .subscribe(SubscribeOptions::new("smol"))
            .await
            .expect("subscribe");
        let mut bodies = Vec::new();
        for _ in 0..100 {
            let delivery = consumer.next().await.expect("open").expect("delivery");
            bodies.push(String::from_utf8_lossy(&delivery.payload).into_owned());
            consumer.ack(&delivery).await.expect("ack");
        }
        bodies.sort();
        let mut expected: Vec<String> = (0..100).map(|number| format!("m{number}")).collect();
        expected.sort();
        assert_eq!(bodies, expected);
        consumer.unsubscribe().await.expect("unsubscribe");

        client
            .declare_queue("smol-pull", settings)
            .await
            .expect("declare");
        client
            .producer("smol-pull")
            .send("pulled")
            .await
            .expect("send");
        let mut options = SubscribeOptions::new("smol-pull");
        options.pull = true;
        let mut puller = client.subscribe(options).await.expect("subscribe");
        let fetched = puller
            .fetch(10, Duration::from_secs(5))
            .await
            .expect("fetch");
        assert_eq!(fetched.len(), 1);
        assert_eq!(&fetched[0].payload[..], b"pulled");
        puller.ack(&fetched[0]).await.expect("ack");
        client.close().await;
    };
    smol::block_on(scenario.or(async {
        smol::Timer::after(Duration::from_secs(60)).await;
        panic!("the scenario did not finish within a minute");
    }));
}
