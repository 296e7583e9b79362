//! Node behaviour through its inputs and commands, with in-memory storage.

use krest_proto::client::{self as wire, server_frame, QueueKind as WireKind};

use crate::harness::{bodies, error_code, kind, message, tag, Harness};
use crate::ids::QueueId;
use crate::io::LogId;

fn point(queue: &str, prefetch: u32) -> wire::Subscribe {
    wire::Subscribe {
        queue: queue.into(),
        prefetch,
        ..Default::default()
    }
}

#[test]
fn publishing_to_a_missing_queue_is_refused_and_stores_nothing() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    let request = harness.publish(conn, "nowhere", vec![message("a")]);
    let reply = harness.take_reply(conn, request);
    assert_eq!(error_code(&reply), Some(wire::ErrorCode::QueueNotFound));
    assert!(harness.node().queue("nowhere").is_none());
    assert_eq!(harness.synced_records(LogId::Metadata), 0);
}

#[test]
fn a_durable_publish_is_confirmed_only_after_its_sync() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    assert!(matches!(
        harness.declare(conn, "orders", kind(WireKind::Persistent)),
        Some(server_frame::Body::Done(_))
    ));
    harness.sync_automatically = false;
    let request = harness.publish(conn, "orders", vec![message("a")]);
    assert_eq!(
        harness.take_reply(conn, request),
        None,
        "confirmed before fsync"
    );
    harness.complete_syncs();
    assert!(
        matches!(harness.take_reply(conn, request), Some(server_frame::Body::PublishOk(ok)) if ok.sequences == vec![1])
    );
}

#[test]
fn a_durable_message_is_delivered_only_after_its_sync() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, "orders", kind(WireKind::Persistent));
    harness.subscribe(conn, point("orders", 10));
    harness.sync_automatically = false;
    harness.publish(conn, "orders", vec![message("a")]);
    assert!(harness.take_pushed(conn).is_empty());
    harness.complete_syncs();
    assert_eq!(bodies(&harness.take_pushed(conn)), ["a"]);
}

#[test]
fn point_consumers_compete_and_broadcast_subscribers_each_get_everything() {
    let mut harness = Harness::default_config();
    let producer = harness.connect(0);
    harness.declare(producer, "jobs", kind(WireKind::Temporary));
    let (first, second) = (harness.connect(0), harness.connect(0));
    harness.subscribe(first, point("jobs", 100));
    harness.subscribe(second, point("jobs", 100));
    let (third, fourth) = (harness.connect(0), harness.connect(0));
    for conn in [third, fourth] {
        harness.subscribe(
            conn,
            wire::Subscribe {
                mode: wire::DeliveryMode::Broadcast as i32,
                ..point("jobs", 100)
            },
        );
    }
    let messages = (0..10).map(|i| message(&i.to_string())).collect();
    harness.publish(producer, "jobs", messages);
    let mut point_bodies = bodies(&harness.take_pushed(first));
    let second_bodies = bodies(&harness.take_pushed(second));
    assert!(
        !point_bodies.is_empty() && !second_bodies.is_empty(),
        "both point consumers get work"
    );
    point_bodies.extend(second_bodies);
    point_bodies.sort_by_key(|body| body.parse::<u32>().unwrap());
    let all: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(
        point_bodies, all,
        "each message to exactly one point consumer"
    );
    assert_eq!(bodies(&harness.take_pushed(third)), all);
    assert_eq!(bodies(&harness.take_pushed(fourth)), all);
}

#[test]
fn an_unacked_message_comes_back_after_the_ack_timeout_unless_the_lease_is_extended() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    let settings = wire::QueueSettings {
        ack_timeout_ms: 1_000,
        ..kind(WireKind::Persistent)
    };
    harness.declare(conn, "q", settings);
    let subscription = harness.subscribe(conn, point("q", 10));
    harness.publish(conn, "q", vec![message("a"), message("b")]);
    let first = harness.take_pushed(conn);
    assert_eq!(bodies(&first), ["a", "b"]);
    harness.advance(600);
    let extend = wire::Settle {
        subscription_id: subscription,
        action: wire::SettleAction::Extend as i32,
        tags: vec![tag(&first[1].1)],
        delay_ms: 0,
        extend_ms: 5_000,
    };
    assert!(matches!(
        harness.call(conn, wire::client_frame::Body::Settle(extend)),
        Some(server_frame::Body::Done(_))
    ));
    harness.advance(600);
    let again = harness.take_pushed(conn);
    assert_eq!(bodies(&again), ["a"], "only the unextended lease expired");
    assert_eq!(tag(&again[0].1).delivery_count, 2);
    // The old tag is no longer valid; the new one is.
    let stale = harness.settle(
        conn,
        subscription,
        wire::SettleAction::Ack,
        vec![tag(&first[0].1)],
    );
    assert_eq!(error_code(&stale), Some(wire::ErrorCode::UnknownDelivery));
    let fresh = harness.settle(
        conn,
        subscription,
        wire::SettleAction::Ack,
        vec![tag(&again[0].1)],
    );
    assert!(matches!(fresh, Some(server_frame::Body::Done(_))));
    harness.advance(10_000);
    assert_eq!(
        bodies(&harness.take_pushed(conn)),
        ["b"],
        "b expires after its extension; a never returns"
    );
}

#[test]
fn after_max_deliveries_a_message_moves_to_the_dead_letter_queue_with_its_reason() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    let settings = wire::QueueSettings {
        max_deliveries: 2,
        ..kind(WireKind::Persistent)
    };
    harness.declare(conn, "q", settings);
    let subscription = harness.subscribe(conn, point("q", 10));
    harness.publish(conn, "q", vec![message("poison"), message("fine")]);
    for _ in 0..2 {
        let delivered = harness.take_pushed(conn);
        let poison = delivered
            .iter()
            .find(|(_, d)| &d.payload[..] == b"poison")
            .expect("redelivered")
            .1
            .clone();
        let nack = harness.settle(
            conn,
            subscription,
            wire::SettleAction::Nack,
            vec![tag(&poison)],
        );
        assert!(matches!(nack, Some(server_frame::Body::Done(_))));
    }
    assert!(harness.take_pushed(conn).is_empty());
    let dead = harness
        .node()
        .queue("q.dlq")
        .expect("dead-letter queue created");
    let letter = dead.messages.values().next().expect("one dead letter");
    assert_eq!(
        dead.payloads
            .get(letter.sequence)
            .map(|payload| &payload[..]),
        Some(&b"poison"[..])
    );
    let reason = letter
        .headers()
        .iter()
        .find(|h| h.key == "krest-dead-letter-reason")
        .unwrap();
    assert_eq!(reason.value, "max_deliveries");
    assert_eq!(
        harness.node().queue("q").unwrap().messages.len(),
        1,
        "only 'fine' is left"
    );
    let other = harness.connect(0);
    let dlq_subscription = harness.subscribe(other, point("q.dlq", 10));
    let letters = harness.take_pushed(other);
    assert_eq!(bodies(&letters), ["poison"]);
    let reject = harness.settle(
        other,
        dlq_subscription,
        wire::SettleAction::Reject,
        vec![tag(&letters[0].1)],
    );
    assert!(matches!(reject, Some(server_frame::Body::Done(_))));
    let reason = &harness
        .node()
        .queue("q.dlq.dlq")
        .unwrap()
        .messages
        .values()
        .next()
        .unwrap()
        .headers();
    assert!(reason
        .iter()
        .any(|h| h.key == "krest-dead-letter-reason" && h.value == "rejected"));
}

#[test]
fn delayed_messages_arrive_at_their_time_earliest_first_ties_by_sequence() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, "later", kind(WireKind::Delay));
    harness.subscribe(conn, point("later", 100));
    let delayed = |body: &str, delay_ms: u64| wire::OutgoingMessage {
        delay_ms,
        ..message(body)
    };
    harness.publish(
        conn,
        "later",
        vec![
            delayed("c", 3_000),
            delayed("a", 1_000),
            delayed("b1", 2_000),
            delayed("b2", 2_000),
        ],
    );
    assert!(harness.take_pushed(conn).is_empty());
    harness.advance(999);
    assert!(
        harness.take_pushed(conn).is_empty(),
        "nothing before its deliver-at"
    );
    harness.advance(1);
    assert_eq!(bodies(&harness.take_pushed(conn)), ["a"]);
    harness.advance(5_000);
    assert_eq!(bodies(&harness.take_pushed(conn)), ["b1", "b2", "c"]);
}

#[test]
fn a_delayed_message_not_yet_delivered_can_be_cancelled() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, "later", kind(WireKind::Delay));
    harness.publish(
        conn,
        "later",
        vec![wire::OutgoingMessage {
            delay_ms: 1_000,
            ..message("x")
        }],
    );
    let cancel = |sequence| {
        wire::client_frame::Body::CancelDelayed(wire::CancelDelayed {
            queue: "later".into(),
            sequence,
        })
    };
    assert!(matches!(
        harness.call(conn, cancel(1)),
        Some(server_frame::Body::Done(_))
    ));
    assert_eq!(
        error_code(&harness.call(conn, cancel(1))),
        Some(wire::ErrorCode::MessageNotFound)
    );
    harness.subscribe(conn, point("later", 10));
    harness.advance(2_000);
    assert!(harness.take_pushed(conn).is_empty());
}

#[test]
fn a_full_queue_rejects_or_drops_the_oldest_by_policy() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(
        conn,
        "strict",
        wire::QueueSettings {
            max_messages: 2,
            ..kind(WireKind::Persistent)
        },
    );
    let loose = wire::QueueSettings {
        max_messages: 2,
        overflow: wire::OverflowPolicy::DropOldest as i32,
        ..kind(WireKind::Persistent)
    };
    harness.declare(conn, "loose", loose);
    for queue in ["strict", "loose"] {
        let request = harness.publish(conn, queue, vec![message("1"), message("2")]);
        assert!(matches!(
            harness.take_reply(conn, request),
            Some(server_frame::Body::PublishOk(_))
        ));
    }
    let request = harness.publish(conn, "strict", vec![message("3")]);
    assert_eq!(
        error_code(&harness.take_reply(conn, request)),
        Some(wire::ErrorCode::QueueFull)
    );
    let request = harness.publish(conn, "loose", vec![message("3")]);
    assert!(matches!(
        harness.take_reply(conn, request),
        Some(server_frame::Body::PublishOk(_))
    ));
    let loose: Vec<_> = harness
        .node()
        .queue("loose")
        .unwrap()
        .payloads
        .values()
        .cloned()
        .collect();
    assert_eq!(loose, [&b"2"[..], &b"3"[..]]);
    harness.restart();
    let loose: Vec<_> = harness
        .node()
        .queue("loose")
        .unwrap()
        .payloads
        .values()
        .cloned()
        .collect();
    assert_eq!(loose, [&b"2"[..], &b"3"[..]], "the drop survives a restart");
}

#[test]
fn a_retried_producer_sequence_is_confirmed_again_but_stored_once_even_after_restart() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(77);
    harness.declare(conn, "q", kind(WireKind::Persistent));
    let keyed = |body: &str, producer_sequence| wire::OutgoingMessage {
        producer_sequence,
        ..message(body)
    };
    let first = harness.publish(conn, "q", vec![keyed("a", 1), keyed("b", 2)]);
    let Some(server_frame::Body::PublishOk(ok)) = harness.take_reply(conn, first) else {
        panic!()
    };
    harness.restart();
    let conn = harness.connect(77);
    let retry = harness.publish(conn, "q", vec![keyed("b", 2), keyed("c", 3)]);
    let Some(server_frame::Body::PublishOk(again)) = harness.take_reply(conn, retry) else {
        panic!()
    };
    assert_eq!(
        again.sequences[0], ok.sequences[1],
        "the retry names the original sequence"
    );
    assert_eq!(harness.node().queue("q").unwrap().messages.len(), 3);
}

#[test]
fn after_a_crash_unacked_durable_messages_return_acked_ones_do_not_and_temporary_ones_are_gone() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, "durable", kind(WireKind::Persistent));
    harness.declare(conn, "memory", kind(WireKind::Temporary));
    let subscription = harness.subscribe(conn, point("durable", 10));
    harness.publish(
        conn,
        "durable",
        vec![message("a"), message("b"), message("c")],
    );
    harness.publish(conn, "memory", vec![message("m")]);
    let delivered = harness.take_pushed(conn);
    harness.settle(
        conn,
        subscription,
        wire::SettleAction::Ack,
        vec![tag(&delivered[1].1)],
    );
    harness.restart();
    assert!(harness.node().queue("memory").is_none());
    let conn = harness.connect(0);
    harness.subscribe(conn, point("durable", 10));
    assert_eq!(bodies(&harness.take_pushed(conn)), ["a", "c"]);
    let publish = harness.publish(conn, "durable", vec![message("d")]);
    let Some(server_frame::Body::PublishOk(ok)) = harness.take_reply(conn, publish) else {
        panic!()
    };
    assert_eq!(ok.sequences, [4], "sequences continue after a restart");
}

#[test]
fn a_pull_fetch_waits_for_the_first_message_and_answers_empty_after_its_wait() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, "q", kind(WireKind::Temporary));
    let subscription = harness.subscribe(
        conn,
        wire::Subscribe {
            pull: true,
            ..point("q", 10)
        },
    );
    let fetch = |wait_ms| {
        wire::client_frame::Body::Fetch(wire::Fetch {
            subscription_id: subscription,
            max_messages: 5,
            wait_ms,
        })
    };
    let request = harness.send(conn, fetch(1_000));
    assert_eq!(harness.take_reply(conn, request), None);
    harness.publish(conn, "q", vec![message("x")]);
    let Some(server_frame::Body::Deliveries(batch)) = harness.take_reply(conn, request) else {
        panic!("fetch answered")
    };
    assert_eq!(batch.deliveries.len(), 1);
    let request = harness.send(conn, fetch(500));
    harness.advance(499);
    assert_eq!(harness.take_reply(conn, request), None);
    harness.advance(1);
    let Some(server_frame::Body::Deliveries(batch)) = harness.take_reply(conn, request) else {
        panic!("fetch answered")
    };
    assert!(batch.deliveries.is_empty());
}

#[test]
fn a_storage_failure_fences_the_node_and_nothing_more_is_confirmed() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    harness.declare(conn, "q", kind(WireKind::Persistent));
    harness.sync_automatically = false;
    let pending = harness.publish(conn, "q", vec![message("a")]);
    harness.input(crate::io::Input::StorageDone(
        crate::io::StorageDone::Failed {
            log: LogId::Queue(QueueId(1)),
            reason: "fsync: EIO".into(),
        },
    ));
    assert_eq!(
        error_code(&harness.take_reply(conn, pending)),
        Some(wire::ErrorCode::Unavailable)
    );
    harness.complete_syncs();
    let later = harness.publish(conn, "q", vec![message("b")]);
    assert_eq!(
        error_code(&harness.take_reply(conn, later)),
        Some(wire::ErrorCode::Unavailable)
    );
    assert_eq!(harness.admin("GET", "/readyz", "").0, 503);
}

#[test]
fn a_malformed_frame_gets_an_error_and_closes_only_that_connection() {
    let mut harness = Harness::default_config();
    let good = harness.connect(0);
    let bad = harness.connect(0);
    harness.input(crate::io::Input::ClientFrame {
        conn: bad,
        body: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
    });
    assert!(harness.closed.contains(&bad));
    assert!(matches!(
        harness.inbox[&bad].last().and_then(|f| f.body.clone()),
        Some(server_frame::Body::Error(_))
    ));
    assert!(matches!(
        harness.call(good, wire::client_frame::Body::Ping(wire::Ping {})),
        Some(server_frame::Body::Pong(_))
    ));
}

#[test]
fn declaring_is_idempotent_and_a_conflicting_kind_is_an_error() {
    let mut harness = Harness::default_config();
    let conn = harness.connect(0);
    assert!(matches!(
        harness.declare(conn, "q", kind(WireKind::Persistent)),
        Some(server_frame::Body::Done(_))
    ));
    assert!(matches!(
        harness.declare(conn, "q", kind(WireKind::Persistent)),
        Some(server_frame::Body::Done(_))
    ));
    assert_eq!(
        error_code(&harness.declare(conn, "q", kind(WireKind::Delay))),
        Some(wire::ErrorCode::QueueKindConflict)
    );
    assert_eq!(
        error_code(&harness.declare(conn, "bad name!", kind(WireKind::Delay))),
        Some(wire::ErrorCode::InvalidArgument)
    );
}

#[test]
fn the_admin_api_declares_lists_purges_and_deletes_queues() {
    let mut harness = Harness::default_config();
    assert_eq!(harness.admin("GET", "/healthz", "").0, 200);
    let (status, body) = harness.admin(
        "PUT",
        "/v1/queues/web",
        r#"{"kind":"persistent","max_deliveries":3}"#,
    );
    assert_eq!(status, 200, "{body}");
    let conn = harness.connect(0);
    harness.publish(conn, "web", vec![message("a")]);
    let (_, listed) = harness.admin("GET", "/v1/queues", "");
    assert!(
        listed.contains("\"web\"") && listed.contains("\"messages\": 1"),
        "{listed}"
    );
    assert!(harness
        .admin("GET", "/metrics", "")
        .1
        .contains("krest_queue_depth{queue=\"web\"} 1"));
    assert_eq!(harness.admin("POST", "/v1/queues/web/purge", "").0, 200);
    assert_eq!(harness.node().queue("web").unwrap().messages.len(), 0);
    assert_eq!(harness.admin("DELETE", "/v1/queues/web", "").0, 200);
    assert_eq!(harness.admin("GET", "/v1/queues/web", "").0, 404);
    assert_eq!(
        harness
            .admin("PUT", "/v1/queues/x", r#"{"colour":"red"}"#)
            .0,
        400
    );
}
