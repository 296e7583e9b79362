//! Black-box tests: real server processes on 127.0.0.1, driven through the Rust client and raw
//! sockets. Every scenario runs against every server binary (`ServerKind::ALL`).

use std::time::Duration;

use bytes::Bytes;
use krest_client::{
    AckMode, Client, ClientConfig, ConfirmPolicy, DeliveryMode, ErrorCode, OutgoingMessage,
    ProducerSettings, QueueKind, QueueSettings, SubscribeOptions,
};
use krest_proto::client::{client_frame, server_frame, Ping};
use krest_tests::deliveries::{body, next_delivery as next};
use krest_tests::{RawClient, Server, ServerKind};

krest_tests::for_each_server!(krest_tests::block_on;
    every_queue_kind_delivers_what_was_published,
    point_consumers_compete_and_broadcast_subscribers_each_get_everything,
    a_pull_consumer_fetches_and_waits,
    an_unacked_message_is_redelivered_after_the_ack_timeout,
    a_message_is_dead_lettered_after_max_deliveries,
    delayed_messages_arrive_in_deadline_order_and_not_early,
    publishing_to_a_missing_queue_fails_and_stores_nothing,
    confirmed_messages_survive_kill_9_during_load,
    a_backlog_beyond_the_payload_budget_is_read_back_from_disk_across_a_kill_9,
    garbage_and_oversized_frames_close_only_that_connection,
    sigterm_stops_the_server_cleanly,
    a_producer_built_from_environment_settings_publishes_with_its_confirm_policy,
    sigterm_under_load_answers_every_publish_and_keeps_every_confirmed_one,
);

async fn connect(server: &Server) -> Client {
    Client::connect(ClientConfig::new([server.address()]))
        .await
        .expect("client connects")
}

fn settings(kind: QueueKind) -> QueueSettings {
    QueueSettings {
        kind: kind as i32,
        ..Default::default()
    }
}

async fn every_queue_kind_delivers_what_was_published(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    for (name, queue_kind) in [
        ("temporary-q", QueueKind::Temporary),
        ("persistent-q", QueueKind::Persistent),
        ("delay-q", QueueKind::Delay),
    ] {
        client
            .declare_queue(name, settings(queue_kind))
            .await
            .expect("declare");
        let producer = client.producer(name);
        for i in 0..5 {
            producer
                .send(format!("{name}-{i}"))
                .await
                .expect("confirmed");
        }
        let mut consumer = client
            .subscribe(SubscribeOptions::new(name))
            .await
            .expect("subscribe");
        for i in 0..5 {
            let delivery = next(&mut consumer).await;
            assert_eq!(
                body(&delivery),
                format!("{name}-{i}"),
                "FIFO within a subscription"
            );
            consumer.ack(&delivery).await.expect("ack");
        }
    }
    let info = client.queue_info("persistent-q").await.expect("info");
    assert_eq!(info.messages, 0, "acked messages are removed");
}

async fn point_consumers_compete_and_broadcast_subscribers_each_get_everything(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    client
        .declare_queue("fan", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    let mut point_a = client
        .subscribe(SubscribeOptions::new("fan"))
        .await
        .expect("subscribe");
    let mut point_b = connect(&server)
        .await
        .subscribe(SubscribeOptions::new("fan"))
        .await
        .expect("subscribe");
    let broadcast = |queue: &str| SubscribeOptions {
        mode: DeliveryMode::Broadcast,
        ..SubscribeOptions::new(queue)
    };
    let mut watcher_a = client.subscribe(broadcast("fan")).await.expect("subscribe");
    let mut watcher_b = connect(&server)
        .await
        .subscribe(broadcast("fan"))
        .await
        .expect("subscribe");
    let producer = client.producer("fan");
    for i in 0..20 {
        producer.send(i.to_string()).await.expect("confirmed");
    }
    for watcher in [&mut watcher_a, &mut watcher_b] {
        for i in 0..20 {
            let delivery = next(watcher).await;
            assert_eq!(body(&delivery), i.to_string());
            watcher.ack(&delivery).await.expect("ack");
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        tokio::select! {
            Some(Ok(delivery)) = point_a.next() => { seen.push(body(&delivery)); point_a.ack(&delivery).await.expect("ack"); }
            Some(Ok(delivery)) = point_b.next() => { seen.push(body(&delivery)); point_b.ack(&delivery).await.expect("ack"); }
            _ = tokio::time::sleep(Duration::from_secs(20)) => panic!("point consumers stalled at {}", seen.len()),
        }
    }
    seen.sort_by_key(|text| text.parse::<u32>().expect("number"));
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "each message to exactly one point consumer");
}

async fn a_pull_consumer_fetches_and_waits(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    client
        .declare_queue("pulled", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    let mut consumer = client
        .subscribe(SubscribeOptions {
            pull: true,
            ..SubscribeOptions::new("pulled")
        })
        .await
        .expect("subscribe");
    let empty = consumer
        .fetch(10, Duration::from_millis(200))
        .await
        .expect("fetch");
    assert!(empty.is_empty());
    let producer = client.producer("pulled");
    for i in 0..3 {
        producer.send(i.to_string()).await.expect("confirmed");
    }
    let fetched = consumer
        .fetch(10, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(
        fetched.iter().map(body).collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    consumer.ack_many(&fetched).await.expect("ack");
}

async fn an_unacked_message_is_redelivered_after_the_ack_timeout(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    let queue = QueueSettings {
        ack_timeout_ms: 300,
        ..settings(QueueKind::Persistent)
    };
    client
        .declare_queue("leased", queue)
        .await
        .expect("declare");
    client
        .producer("leased")
        .send("once")
        .await
        .expect("confirmed");
    let mut consumer = client
        .subscribe(SubscribeOptions::new("leased"))
        .await
        .expect("subscribe");
    let first = next(&mut consumer).await;
    assert_eq!(first.delivery_count(), 1);
    let again = next(&mut consumer).await;
    assert_eq!(
        (body(&again), again.delivery_count()),
        ("once".to_string(), 2)
    );
    consumer.ack(&again).await.expect("ack");
}

async fn a_message_is_dead_lettered_after_max_deliveries(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    let queue = QueueSettings {
        max_deliveries: 2,
        ..settings(QueueKind::Persistent)
    };
    client.declare_queue("work", queue).await.expect("declare");
    client
        .producer("work")
        .send("poison")
        .await
        .expect("confirmed");
    let mut consumer = client
        .subscribe(SubscribeOptions::new("work"))
        .await
        .expect("subscribe");
    for _ in 0..2 {
        let delivery = next(&mut consumer).await;
        consumer
            .nack(&delivery, Duration::ZERO)
            .await
            .expect("nack");
    }
    let mut dead = client
        .subscribe(SubscribeOptions::new("work.dlq"))
        .await
        .expect("dead-letter queue exists");
    let letter = next(&mut dead).await;
    assert_eq!(body(&letter), "poison");
    let reason = letter
        .headers
        .iter()
        .find(|header| header.key == "krest-dead-letter-reason")
        .expect("reason header");
    assert_eq!(reason.value, "max_deliveries");
}

async fn delayed_messages_arrive_in_deadline_order_and_not_early(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    client
        .declare_queue("later", settings(QueueKind::Delay))
        .await
        .expect("declare");
    let producer = client.producer("later");
    let started = std::time::SystemTime::now();
    for (text, delay_ms) in [("third", 900), ("first", 300), ("second", 600)] {
        producer
            .send_delayed(text, Duration::from_millis(delay_ms))
            .await
            .expect("confirmed");
    }
    let mut consumer = client
        .subscribe(SubscribeOptions::new("later"))
        .await
        .expect("subscribe");
    for expected in ["first", "second", "third"] {
        let delivery = next(&mut consumer).await;
        assert_eq!(body(&delivery), expected);
        let due = delivery
            .deliver_at
            .expect("delayed messages carry deliver-at");
        assert!(
            std::time::SystemTime::now() >= due,
            "delivered before its deliver-at"
        );
        assert!(due > started);
        consumer.ack(&delivery).await.expect("ack");
    }
}

async fn publishing_to_a_missing_queue_fails_and_stores_nothing(kind: ServerKind) {
    let server = Server::start(kind);
    let client = connect(&server).await;
    let error = client
        .producer("ghost")
        .send("boo")
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::QueueNotFound), "{error}");
    assert!(client.list_queues().await.expect("list").is_empty());
}

async fn confirmed_messages_survive_kill_9_during_load(kind: ServerKind) {
    let mut server = Server::start(kind);
    let client = connect(&server).await;
    client
        .declare_queue("durable", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    let producer = client.producer("durable").with_retries(0);
    let mut confirmed = std::collections::BTreeSet::new();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..2_000u32 {
        let producer = producer.clone();
        sends.spawn(async move { producer.send(i.to_string()).await.map(|_| i) });
        if i == 1_500 {
            // Let some confirms come back, then kill while the rest are in flight.
            while confirmed.len() < 500 {
                if let Some(Ok(Ok(i))) = sends.join_next().await {
                    confirmed.insert(i);
                }
            }
            server.kill9();
        }
    }
    while let Some(result) = sends.join_next().await {
        if let Ok(Ok(i)) = result {
            confirmed.insert(i);
        }
    }
    client.close().await;
    server.restart();
    let client = connect(&server).await;
    let mut consumer = client
        .subscribe(SubscribeOptions {
            prefetch: 1_000,
            ..SubscribeOptions::new("durable")
        })
        .await
        .expect("subscribe");
    let stored = client.queue_info("durable").await.expect("info").messages;
    assert!(
        stored as usize >= confirmed.len(),
        "stored {stored} < confirmed {}",
        confirmed.len()
    );
    let mut delivered = std::collections::BTreeSet::new();
    for _ in 0..stored {
        let delivery = next(&mut consumer).await;
        delivered.insert(body(&delivery).parse::<u32>().expect("number"));
        consumer.ack(&delivery).await.expect("ack");
    }
    let lost: Vec<_> = confirmed.difference(&delivered).collect();
    assert!(
        lost.is_empty(),
        "confirmed but lost after kill -9: {lost:?}"
    );
}

/// A sample of the server's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let (status, text) = server.admin_request("GET", "/metrics", "");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

async fn a_backlog_beyond_the_payload_budget_is_read_back_from_disk_across_a_kill_9(
    kind: ServerKind,
) {
    const BUDGET: u64 = 16 * 1024;
    let budget = format!("storage.payload_memory_bytes={BUDGET}");
    let mut server = Server::start_with(kind, &["--set", &budget]);
    let client = connect(&server).await;
    client
        .declare_queue("backlog", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    let producer = client.producer("backlog");
    let body_of = |number: usize| format!("{number:04}:{}", "x".repeat(1_000));
    for number in 0..300 {
        producer.send(body_of(number)).await.expect("confirmed");
    }
    let in_memory = metric(&server, "krest_payload_memory_bytes");
    assert!(
        in_memory <= BUDGET,
        "{in_memory} bytes of payloads in memory"
    );
    let mut consumer = client
        .subscribe(SubscribeOptions {
            prefetch: 32,
            ..SubscribeOptions::new("backlog")
        })
        .await
        .expect("subscribe");
    for number in 0..100 {
        let delivery = next(&mut consumer).await;
        assert_eq!(
            body(&delivery),
            body_of(number),
            "in order, its own payload"
        );
        consumer.ack(&delivery).await.expect("ack");
    }
    assert!(
        metric(&server, "krest_payloads_read_total") > 0,
        "read back from disk"
    );
    client.close().await;
    server.restart();
    let client = connect(&server).await;
    assert!(metric(&server, "krest_payload_memory_bytes") <= BUDGET);
    let mut consumer = client
        .subscribe(SubscribeOptions {
            prefetch: 32,
            ..SubscribeOptions::new("backlog")
        })
        .await
        .expect("subscribe");
    let mut number = 100;
    while number < 300 {
        let delivery = next(&mut consumer).await;
        let text = body(&delivery);
        // Acks in flight at the kill may come back once more; never anything out of order.
        let seen: usize = text[..4].parse().expect("numbered");
        assert!(seen <= number, "{seen} before {number}: out of order");
        if seen == number {
            assert_eq!(text, body_of(number));
            number += 1;
        }
        consumer.ack(&delivery).await.expect("ack");
    }
    assert!(
        metric(&server, "krest_payloads_read_total") > 0,
        "read back after the restart"
    );
}

async fn garbage_and_oversized_frames_close_only_that_connection(kind: ServerKind) {
    let server = Server::start_with(
        kind,
        &[
            "--set",
            "limits.max_frame_bytes=65536",
            "--set",
            "limits.max_message_bytes=1024",
        ],
    );
    let client = connect(&server).await;
    client
        .declare_queue("safe", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    client
        .producer("safe")
        .send("kept")
        .await
        .expect("confirmed");

    let mut garbage = RawClient::connect_hello(server.client);
    garbage
        .send_bytes(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .expect("write");
    let error = garbage
        .read_frame()
        .expect("an error frame before the close");
    assert!(
        matches!(error.body, Some(server_frame::Body::Error(ref e)) if e.code == ErrorCode::MalformedFrame as i32),
        "{error:?}"
    );
    assert!(garbage.is_closed_by_server());

    let mut huge = RawClient::connect_hello(server.client);
    huge.send_bytes(&[0xff, 0xff, 0xff, 0xff])
        .expect("write a 4 GiB length prefix");
    let error = huge.read_frame().expect("an error frame before the close");
    assert!(
        matches!(error.body, Some(server_frame::Body::Error(ref e)) if e.message.contains("exceeds")),
        "{error:?}"
    );
    assert!(huge.is_closed_by_server());

    let too_large = OutgoingMessage {
        payload: Bytes::from(vec![7u8; 2048]),
        ..Default::default()
    };
    let error = client
        .producer("safe")
        .send_message(too_large)
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::MessageTooLarge));

    let mut healthy = RawClient::connect_hello(server.client);
    let pong = healthy.request(client_frame::Body::Ping(Ping {}));
    assert!(matches!(pong.body, Some(server_frame::Body::Pong(_))));
    let mut consumer = client
        .subscribe(SubscribeOptions::new("safe"))
        .await
        .expect("subscribe");
    assert_eq!(
        body(&next(&mut consumer).await),
        "kept",
        "confirmed data is intact"
    );
}

async fn sigterm_stops_the_server_cleanly(kind: ServerKind) {
    let mut server = Server::start(kind);
    let client = connect(&server).await;
    client
        .declare_queue("q", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    client
        .producer("q")
        .send("before")
        .await
        .expect("confirmed");
    let (status, health) = server.admin_request("GET", "/healthz", "");
    assert_eq!((status, health.trim()), (200, "ok"));
    let metrics = server.admin_request("GET", "/metrics", "").1;
    assert!(
        metrics.contains("krest_queue_depth{queue=\"q\"} 1"),
        "{metrics}"
    );
    // The confirmed publish was fsynced: the histogram counted it and the log has bytes.
    let fsyncs: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("krest_fsync_duration_seconds_count "))
        .and_then(|count| count.parse().ok())
        .expect("an fsync count");
    assert!(fsyncs >= 1, "{metrics}");
    assert!(
        metrics.contains("krest_storage_bytes{log=\"queue-"),
        "{metrics}"
    );
    client.close().await;
    let mut bystander = RawClient::connect_hello(server.client);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    // A connected client is told why before the connection closes.
    let farewell = bystander.read_frame().expect("a frame before the close");
    assert!(
        matches!(farewell.body, Some(server_frame::Body::Error(ref e))
            if e.code == ErrorCode::Unavailable as i32 && e.message.contains("shutting down")),
        "{farewell:?}"
    );
    assert!(bystander.is_closed_by_server());
    server.restart();
    let client = connect(&server).await;
    let mut consumer = client
        .subscribe(SubscribeOptions {
            ack_mode: AckMode::Auto,
            ..SubscribeOptions::new("q")
        })
        .await
        .expect("subscribe");
    assert_eq!(body(&next(&mut consumer).await), "before");
}

async fn a_producer_built_from_environment_settings_publishes_with_its_confirm_policy(
    kind: ServerKind,
) {
    let server = Server::start(kind);
    let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    };
    let address = server.address();
    let config = ClientConfig::from_env(vars(&[
        ("KREST_CLIENT_SERVERS", address.as_str()),
        ("KREST_CLIENT_NAME", "settings-test"),
    ]))
    .expect("client settings");
    let client = Client::connect(config).await.expect("client connects");
    client
        .declare_queue("configured", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    let waiting = ProducerSettings::from_toml("queue = \"configured\"\nretries = 2\n")
        .expect("producer settings");
    assert_eq!(waiting.confirm, ConfirmPolicy::Wait);
    let producer = client.producer_with(&waiting).expect("producer");
    let first = producer.send("confirmed").await.expect("send");
    assert!(first > 0, "a confirmed send returns the queue sequence");

    let no_wait = ProducerSettings::from_env(vars(&[
        ("KREST_PRODUCER_QUEUE", "configured"),
        ("KREST_PRODUCER_CONFIRM", "no-wait"),
    ]))
    .expect("producer settings");
    let producer = client.producer_with(&no_wait).expect("producer");
    for number in 0..10 {
        let sequence = producer.send(format!("unconfirmed {number}")).await;
        assert_eq!(sequence.expect("handed over"), 0, "no-wait returns at once");
    }
    // Unconfirmed sends still arrive, in order, after the confirmed one.
    let mut consumer = client
        .subscribe(SubscribeOptions::new("configured"))
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    for _ in 0..11 {
        let delivery = next(&mut consumer).await;
        seen.push(body(&delivery));
        consumer.ack(&delivery).await.expect("ack");
    }
    let mut expected = vec!["confirmed".to_string()];
    expected.extend((0..10).map(|number| format!("unconfirmed {number}")));
    assert_eq!(seen, expected);

    let nameless = ProducerSettings::default();
    let error = client.producer_with(&nameless).err().expect("no queue");
    assert!(
        error.to_string().contains("KREST_PRODUCER_QUEUE"),
        "{error}"
    );
}

async fn sigterm_under_load_answers_every_publish_and_keeps_every_confirmed_one(kind: ServerKind) {
    // Proves that SIGTERM while publishes are in flight ends with every publish answered (a
    // confirm, or an error once the server stops taking work), exit code 0, and every
    // confirmed message present after a restart.
    let mut server = Server::start(kind);
    let config = ClientConfig {
        reconnect_attempts_per_request: 1,
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(10),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::new([server.address()])
    };
    let client = Client::connect(config).await.expect("client connects");
    client
        .declare_queue("drained", settings(QueueKind::Persistent))
        .await
        .expect("declare");
    let producer = client.producer("drained").with_retries(0);
    let mut pending = std::collections::VecDeque::new();
    let mut confirmed = Vec::new();
    let mut failed = 0;
    let mut signalled = false;
    for number in 0..3_000u32 {
        let message = OutgoingMessage {
            payload: format!("m{number}").into(),
            ..Default::default()
        };
        match producer.start_send(message).await {
            Ok(send) => pending.push_back((number, send)),
            Err(_) => failed += 1,
        }
        // A window of 64: the oldest confirm is awaited before more go out.
        if pending.len() >= 64 {
            let (number, send) = pending.pop_front().expect("non-empty");
            match send.confirmed().await {
                Ok(_) => confirmed.push(number),
                Err(_) => failed += 1,
            }
        }
        if number == 500 {
            let pid = server.pid().expect("running");
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            signalled = true;
        }
    }
    assert!(signalled);
    for (number, send) in pending {
        match send.confirmed().await {
            Ok(_) => confirmed.push(number),
            Err(_) => failed += 1,
        }
    }
    let status = server.wait_for_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    assert_eq!(
        confirmed.len() + failed,
        3_000,
        "every publish is answered once"
    );
    assert!(confirmed.len() >= 400, "{} confirmed", confirmed.len());
    assert!(failed > 0, "publishes after the signal fail");
    client.close().await;

    server.restart();
    let client = connect(&server).await;
    let info = client.queue_info("drained").await.expect("info");
    let mut consumer = client
        .subscribe(SubscribeOptions {
            ack_mode: AckMode::Auto,
            ..SubscribeOptions::new("drained")
        })
        .await
        .expect("subscribe");
    let mut stored = std::collections::BTreeSet::new();
    for _ in 0..info.messages {
        let text = body(&next(&mut consumer).await);
        stored.insert(text[1..].parse::<u32>().expect("a number"));
    }
    let lost: Vec<u32> = confirmed
        .iter()
        .copied()
        .filter(|number| !stored.contains(number))
        .collect();
    assert!(lost.is_empty(), "confirmed and lost: {lost:?}");
}
