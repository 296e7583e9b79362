//! Operations against the real servers: redriving a dead-letter queue over the client
//! protocol, the admin API and the CLI.

use std::time::Duration;

use krest_client::{Client, SubscribeOptions};
use krest_tests::deliveries::{client_with_persistent_queue, dead_letter};
use krest_tests::{cli_binary, Server, ServerKind};

krest_tests::for_each_server!(krest_tests::block_on;
    a_dead_letter_queue_is_redriven_back_to_its_source_by_api_admin_and_cli,
);

async fn depth(client: &Client, queue: &str) -> u64 {
    client.queue_info(queue).await.expect("info").messages
}

async fn a_dead_letter_queue_is_redriven_back_to_its_source_by_api_admin_and_cli(kind: ServerKind) {
    let server = Server::start(kind);
    let client = client_with_persistent_queue(&server, "orders").await;
    dead_letter(&client, "orders", &["a", "b", "c", "d"]).await;
    assert_eq!(depth(&client, "orders.dlq").await, 4);

    // The client protocol, at most one message.
    let (moved, skipped) = client.redrive("orders.dlq", 1).await.expect("redrive");
    assert_eq!((moved, skipped), (1, 0));
    // The admin API, at most two.
    let (status, body) = server.admin_request("POST", "/v1/queues/orders.dlq/redrive?max=2", "");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["moved"], 2);
    // The CLI, the rest.
    let output = std::process::Command::new(cli_binary())
        .args([
            "-s",
            &server.address(),
            "--json",
            "queue",
            "redrive",
            "orders.dlq",
        ])
        .output()
        .expect("krest runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(answer["moved"], 1);

    assert_eq!(depth(&client, "orders.dlq").await, 0);
    let mut consumer = client
        .subscribe(SubscribeOptions::new("orders"))
        .await
        .expect("subscribe");
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("delivery");
        assert!(
            delivery
                .headers
                .iter()
                .all(|header| !header.key.starts_with("krest-dead-letter")),
            "dead-letter headers are removed: {:?}",
            delivery.headers
        );
        bodies.push(String::from_utf8_lossy(&delivery.payload).into_owned());
        consumer.ack(&delivery).await.expect("ack");
    }
    assert_eq!(bodies, vec!["a", "b", "c", "d"], "oldest first");
    let (status, _) = server.admin_request("POST", "/v1/queues/nowhere.dlq/redrive", "");
    assert_eq!(status, 404);
}
