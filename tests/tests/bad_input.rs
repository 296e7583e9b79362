//! Bad input against the running servers (issue 5): for each kind of malformed or hostile
//! input, the offending connection gets a clear error (or is refused), the server keeps serving
//! other clients, and a message confirmed before the attack is still delivered after it.

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use krest_proto::client::{
    client_frame, server_frame, DeclareQueue, ErrorCode, Fetch, OutgoingMessage, Ping, Publish,
    QueueKind, QueueSettings, ServerFrame, Settle, SettleAction, Subscribe,
};
use krest_proto::frame::frame_bytes;
use krest_tests::{RawClient, Server, ServerKind};

krest_tests::for_each_server!(krest_tests::call;
    a_truncated_frame_and_a_hang_up_lose_nothing,
    a_length_prefix_shorter_than_the_body_is_a_malformed_frame,
    a_frame_of_an_unknown_type_gets_invalid_argument_and_the_connection_stays,
    a_four_gib_length_prefix_is_refused_before_any_allocation,
    half_a_frame_then_silence_is_closed_after_the_idle_timeout,
    connections_over_the_limit_are_refused_with_limit_reached,
    invalid_queue_names_are_refused_and_nothing_is_created,
    a_payload_over_the_message_limit_is_refused_and_one_over_the_frame_limit_closes,
    broken_config_files_exit_78_naming_the_key_and_the_reason,
);

/// The limits every scenario runs under: small, so each is quick to reach.
const LIMITS: &[&str] = &[
    "--set",
    "limits.max_frame_bytes=65536",
    "--set",
    "limits.max_message_bytes=4096",
    "--set",
    "limits.max_connections=8",
    "--set",
    "limits.idle_timeout_ms=700",
];

fn start(kind: ServerKind) -> Server {
    Server::start_with(kind, LIMITS)
}

fn error_code(frame: &ServerFrame) -> Option<ErrorCode> {
    match &frame.body {
        Some(server_frame::Body::Error(error)) => ErrorCode::try_from(error.code).ok(),
        _ => None,
    }
}

fn error_message(frame: &ServerFrame) -> String {
    match &frame.body {
        Some(server_frame::Body::Error(error)) => error.message.clone(),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn persistent() -> QueueSettings {
    QueueSettings {
        kind: QueueKind::Persistent as i32,
        ..Default::default()
    }
}

/// A message confirmed before the attack, on a connection of its own.
fn plant_witness(server: &Server) {
    let mut client = RawClient::connect_hello(server.client);
    let declare = DeclareQueue {
        name: "witness".into(),
        settings: Some(persistent()),
    };
    let reply = client.request(client_frame::Body::DeclareQueue(declare));
    assert!(error_code(&reply).is_none(), "{reply:?}");
    let publish = Publish {
        queue: "witness".into(),
        messages: vec![OutgoingMessage {
            payload: "kept".into(),
            ..Default::default()
        }],
    };
    let reply = client.request(client_frame::Body::Publish(publish));
    assert!(
        matches!(reply.body, Some(server_frame::Body::PublishOk(_))),
        "{reply:?}"
    );
}

/// After the attack: a new connection is served, and the witness is delivered (and acked).
fn check_witness(server: &Server) {
    let mut client = RawClient::connect_hello(server.client);
    let pong = client.request(client_frame::Body::Ping(Ping {}));
    assert!(matches!(pong.body, Some(server_frame::Body::Pong(_))));
    let subscribe = Subscribe {
        queue: "witness".into(),
        pull: true,
        prefetch: 10,
        ..Default::default()
    };
    let reply = client.request(client_frame::Body::Subscribe(subscribe));
    let Some(server_frame::Body::SubscribeOk(ok)) = reply.body else {
        panic!("subscribe failed: {reply:?}");
    };
    let fetch = Fetch {
        subscription_id: ok.subscription_id,
        max_messages: 10,
        wait_ms: 5_000,
    };
    let reply = client.request(client_frame::Body::Fetch(fetch));
    let Some(server_frame::Body::Deliveries(deliveries)) = reply.body else {
        panic!("fetch failed: {reply:?}");
    };
    let payloads: Vec<&[u8]> = deliveries
        .deliveries
        .iter()
        .map(|delivery| &delivery.payload[..])
        .collect();
    assert_eq!(
        payloads,
        vec![b"kept".as_slice()],
        "the confirmed message is still there"
    );
    let settle = Settle {
        subscription_id: ok.subscription_id,
        action: SettleAction::Ack as i32,
        tags: vec![deliveries.deliveries[0].tag.unwrap_or_default()],
        ..Default::default()
    };
    let reply = client.request(client_frame::Body::Settle(settle));
    assert!(error_code(&reply).is_none(), "{reply:?}");
}

fn a_truncated_frame_and_a_hang_up_lose_nothing(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut attacker = RawClient::connect_hello(server.client);
    let frame = frame_bytes(&krest_proto::client::ClientFrame {
        request_id: 9,
        body: Some(client_frame::Body::Ping(Ping {})),
    });
    // Length prefix and half the body, then the client goes away.
    attacker.send_bytes(&[0, 0, 0, 100]).expect("write");
    attacker
        .send_bytes(&frame[..frame.len() / 2])
        .expect("write");
    drop(attacker);
    check_witness(&server);
}

fn a_length_prefix_shorter_than_the_body_is_a_malformed_frame(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut attacker = RawClient::connect_hello(server.client);
    let publish = Publish {
        queue: "witness".into(),
        messages: vec![OutgoingMessage {
            payload: "should not be stored".into(),
            ..Default::default()
        }],
    };
    let frame = frame_bytes(&krest_proto::client::ClientFrame {
        request_id: 5,
        body: Some(client_frame::Body::Publish(publish)),
    });
    let mut lying = frame.to_vec();
    lying[..4].copy_from_slice(&3u32.to_be_bytes()); // the body is much longer than 3 bytes
    attacker.send_bytes(&lying).expect("write");
    let reply = attacker
        .read_frame()
        .expect("an error frame before the close");
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::MalformedFrame),
        "{reply:?}"
    );
    assert!(attacker.is_closed_by_server());
    check_witness(&server);
}

fn a_frame_of_an_unknown_type_gets_invalid_argument_and_the_connection_stays(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut client = RawClient::connect_hello(server.client);
    // request_id = 7 (field 1, varint), then field 99 (varint 1): a request type from the future.
    let body = [0x08, 0x07, 0x98, 0x06, 0x01];
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    client.send_bytes(&frame).expect("write");
    let reply = client.read_frame().expect("an answer");
    assert_eq!(reply.request_id, 7);
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::InvalidArgument),
        "{reply:?}"
    );
    let pong = client.request(client_frame::Body::Ping(Ping {}));
    assert!(
        matches!(pong.body, Some(server_frame::Body::Pong(_))),
        "still served"
    );
    check_witness(&server);
}

fn a_four_gib_length_prefix_is_refused_before_any_allocation(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut attacker = RawClient::connect_hello(server.client);
    attacker
        .send_bytes(&[0xff, 0xff, 0xff, 0xff])
        .expect("write");
    let reply = attacker
        .read_frame()
        .expect("an error frame before the close");
    let message = error_message(&reply);
    assert!(
        message.contains("exceeds the maximum of 65536"),
        "{message}"
    );
    assert!(attacker.is_closed_by_server());
    check_witness(&server);
}

fn half_a_frame_then_silence_is_closed_after_the_idle_timeout(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut staller = RawClient::connect_hello(server.client);
    staller.send_bytes(&[0, 0]).expect("half a length prefix");
    let started = Instant::now();
    // While it stalls, another client is served.
    check_witness(&server);
    let reply = staller
        .read_frame()
        .expect("an error frame before the close");
    let message = error_message(&reply);
    assert!(message.contains("limits.idle_timeout_ms"), "{message}");
    assert!(staller.is_closed_by_server());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not closed before the idle timeout"
    );
}

fn connections_over_the_limit_are_refused_with_limit_reached(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut held: Vec<RawClient> = (0..8)
        .map(|_| RawClient::connect_hello(server.client))
        .collect();
    let mut refused = RawClient::connect(server.client);
    let reply = refused.read_frame().expect("a refusal frame");
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::LimitReached),
        "{reply:?}"
    );
    assert!(error_message(&reply).contains("limits.max_connections"));
    assert!(refused.is_closed_by_server());
    // The held connections still work; freeing one makes room again.
    let pong = held[0].request(client_frame::Body::Ping(Ping {}));
    assert!(matches!(pong.body, Some(server_frame::Body::Pong(_))));
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = RawClient::connect(server.client);
        let hello = client_frame::Body::Hello(krest_proto::client::Hello {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            client_name: "probe".into(),
            producer_id: 0,
        });
        let reply = probe.request_or_close(hello);
        if matches!(
            reply.as_ref().and_then(|frame| frame.body.as_ref()),
            Some(server_frame::Body::HelloOk(_))
        ) {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
    held.clear();
    check_witness(&server);
}

fn invalid_queue_names_are_refused_and_nothing_is_created(kind: ServerKind) {
    let server = start(kind);
    plant_witness(&server);
    let mut client = RawClient::connect_hello(server.client);
    let long = "q".repeat(201);
    for name in [
        "",
        "has space",
        "slash/name",
        ".hidden",
        "ünïcode",
        long.as_str(),
    ] {
        let declare = DeclareQueue {
            name: name.into(),
            settings: Some(persistent()),
        };
        let reply = client.request(client_frame::Body::DeclareQueue(declare));
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::InvalidArgument),
            "{name:?}: {reply:?}"
        );
    }
    let (status, body) = server.admin_request("GET", "/v1/queues", "");
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|queue| queue["name"].as_str())
        .collect();
    assert_eq!(names, vec!["witness"], "{body}");
    check_witness(&server);
}

fn a_payload_over_the_message_limit_is_refused_and_one_over_the_frame_limit_closes(
    kind: ServerKind,
) {
    let server = start(kind);
    plant_witness(&server);
    let mut client = RawClient::connect_hello(server.client);
    let publish = |bytes: usize| {
        client_frame::Body::Publish(Publish {
            queue: "witness".into(),
            messages: vec![OutgoingMessage {
                payload: vec![b'x'; bytes].into(),
                ..Default::default()
            }],
        })
    };
    let reply = client.request(publish(5_000));
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::MessageTooLarge),
        "{reply:?}"
    );
    let pong = client.request(client_frame::Body::Ping(Ping {}));
    assert!(
        matches!(pong.body, Some(server_frame::Body::Pong(_))),
        "still served"
    );
    let frame = frame_bytes(&krest_proto::client::ClientFrame {
        request_id: 99,
        body: Some(publish(70_000)),
    });
    client.send_bytes(&frame).expect("write");
    let reply = client
        .read_frame()
        .expect("an error frame before the close");
    assert!(
        error_message(&reply).contains("exceeds the maximum"),
        "{reply:?}"
    );
    assert!(client.is_closed_by_server());
    check_witness(&server);
}

fn broken_config_files_exit_78_naming_the_key_and_the_reason(kind: ServerKind) {
    let directory =
        std::env::temp_dir().join(format!("krest-config-test-{}-{kind:?}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("directory");
    let cases = [
        ("[limits]\nmax_frame_bytez = 10\n", "max_frame_bytez"),
        ("[limits]\nmax_connections = \"many\"\n", "max_connections"),
        ("[limits]\nmax_frame_bytes = 0\n", "max_frame_bytes"),
        ("[server\nlisten = 1\n", "TOML"),
        ("[nonsense]\nkey = 1\n", "nonsense"),
    ];
    for (number, (text, named)) in cases.iter().enumerate() {
        let path = directory.join(format!("krest-{number}.toml"));
        let mut file = std::fs::File::create(&path).expect("config file");
        file.write_all(text.as_bytes()).expect("write");
        let output = Command::new(krest_tests::server::binary(kind))
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(directory.join("data"))
            .output()
            .expect("the server runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{text:?}: {stderr}");
        assert!(
            stderr.to_lowercase().contains(&named.to_lowercase()),
            "{text:?}: the message must name {named:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&directory);
}
