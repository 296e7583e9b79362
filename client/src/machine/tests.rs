//! The client machine driven by hand, in virtual time: no socket, no runtime, no sleeping.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use krest_proto::client::{
    client_frame, server_frame, ClientFrame, Deliveries, Error as WireError, ErrorCode, HelloOk,
    Ping, Pong, ServerFrame, Subscribe, SubscribeOk,
};
use krest_proto::frame::{frame_bytes, FrameDecoder};

use super::*;

fn config() -> ClientConfig {
    ClientConfig {
        servers: vec!["a:1".into(), "b:1".into()],
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        reconnect_backoff_min: Duration::from_millis(100),
        reconnect_backoff_max: Duration::from_millis(400),
        reconnect_attempts_per_request: 3,
        ..ClientConfig::default()
    }
}

/// A machine and a virtual clock.
struct Bench {
    machine: ClientMachine,
    now: Instant,
}

impl Bench {
    fn new() -> Bench {
        let now = Instant::now();
        Bench {
            machine: ClientMachine::new(config(), 42, now),
            now,
        }
    }

    fn advance_to_timeout(&mut self) -> Duration {
        let deadline = self.machine.poll_timeout().expect("a timer is armed");
        let waited = deadline.saturating_duration_since(self.now);
        self.now = deadline.max(self.now);
        self.machine.on_timeout(self.now);
        waited
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.machine.poll_action()).collect()
    }

    /// The frames written since the last look.
    fn written(&mut self) -> Vec<ClientFrame> {
        let mut bytes = BytesMut::new();
        for action in self.actions() {
            if let Action::Write(chunk) = action {
                bytes.extend_from_slice(&chunk);
            }
        }
        let mut decoder = FrameDecoder::new(u32::MAX);
        std::iter::from_fn(|| decoder.decode_message::<ClientFrame>(&mut bytes).unwrap()).collect()
    }

    /// Expects a Connect to `address`, accepts it and completes the handshake.
    fn connect_to(&mut self, address: &str) {
        let attempt = self.expect_connect(address);
        self.machine.on_connected(self.now, attempt);
        let hello = self.written();
        assert!(matches!(hello[0].body, Some(client_frame::Body::Hello(_))));
        self.server_sends(
            0,
            server_frame::Body::HelloOk(HelloOk {
                node_id: 7,
                ..HelloOk::default()
            }),
        );
    }

    fn expect_connect(&mut self, address: &str) -> AttemptId {
        let connect = self.actions().into_iter().find_map(|action| match action {
            Action::Connect { attempt, address } => Some((attempt, address)),
            _ => None,
        });
        let (attempt, to) = connect.expect("a connect action");
        assert_eq!(to, address);
        attempt
    }

    fn server_sends(&mut self, request_id: u64, body: server_frame::Body) {
        let frame = frame_bytes(&ServerFrame {
            request_id,
            body: Some(body),
        });
        self.machine.on_bytes(self.now, &frame);
    }

    fn answers(&mut self) -> Vec<(RequestKey, Result<server_frame::Body, ClientError>)> {
        std::iter::from_fn(|| self.machine.poll_event())
            .filter_map(|event| match event {
                Event::Answer { request, result } => Some((request, result)),
                _ => None,
            })
            .collect()
    }

    fn ping(&mut self) -> RequestKey {
        let body = client_frame::Body::Ping(Ping {});
        self.machine
            .start_request(self.now, body, Duration::from_secs(5), 3)
    }
}

fn refused() -> std::io::Error {
    std::io::ErrorKind::ConnectionRefused.into()
}

#[test]
fn a_request_waits_for_the_handshake_then_is_written_and_answered_once() {
    let mut bench = Bench::new();
    let key = bench.ping();
    let attempt = bench.expect_connect("a:1");
    bench.machine.on_connected(bench.now, attempt);
    let frames = bench.written();
    assert_eq!(frames.len(), 1, "only Hello before HelloOk");
    bench.server_sends(
        0,
        server_frame::Body::HelloOk(HelloOk {
            node_id: 7,
            ..HelloOk::default()
        }),
    );
    let frames = bench.written();
    assert!(matches!(
        frames[..],
        [ClientFrame {
            body: Some(client_frame::Body::Ping(_)),
            ..
        }]
    ));
    let request_id = frames[0].request_id;
    bench.server_sends(request_id, server_frame::Body::Pong(Pong {}));
    bench.server_sends(request_id, server_frame::Body::Pong(Pong {}));
    let answers = bench.answers();
    assert_eq!(answers.len(), 1, "a duplicate answer is dropped");
    assert_eq!(answers[0].0, key);
    assert!(matches!(answers[0].1, Ok(server_frame::Body::Pong(_))));
    assert_eq!(bench.machine.status().node_id, Some(7));
}

#[test]
fn failed_attempts_go_round_robin_and_back_off_between_rounds_as_timer_deadlines() {
    let mut bench = Bench::new();
    let mut waits = Vec::new();
    for expected in ["a:1", "b:1", "a:1", "b:1", "a:1", "b:1", "a:1"] {
        let attempt = bench.expect_connect(expected);
        bench
            .machine
            .on_connect_failed(bench.now, attempt, refused());
        waits.push(bench.advance_to_timeout().as_millis());
    }
    // Within a round the next server is tried at once; rounds wait 100, 200, 400 (capped) ms.
    assert_eq!(waits, vec![0, 100, 0, 200, 0, 400, 0]);
}

#[test]
fn a_waiting_request_fails_with_the_last_error_after_its_attempts() {
    let mut bench = Bench::new();
    let key = bench.ping();
    for _ in 0..3 {
        let attempt = bench.expect_connect_any();
        assert!(bench.answers().is_empty());
        bench
            .machine
            .on_connect_failed(bench.now, attempt, refused());
        bench.advance_to_timeout();
    }
    let answers = bench.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, key);
    let error = answers[0].1.as_ref().unwrap_err().to_string();
    assert!(error.contains("cannot connect to"), "{error}");
}

impl Bench {
    fn expect_connect_any(&mut self) -> AttemptId {
        self.actions()
            .into_iter()
            .find_map(|action| match action {
                Action::Connect { attempt, .. } => Some(attempt),
                _ => None,
            })
            .expect("a connect action")
    }
}

#[test]
fn a_silent_server_times_out_the_handshake_and_a_request_its_deadline_exactly() {
    let mut bench = Bench::new();
    let body = client_frame::Body::Ping(Ping {});
    let key = bench
        .machine
        .start_request(bench.now, body, Duration::from_secs(5), 1_000);
    let attempt = bench.expect_connect("a:1");
    bench.machine.on_connected(bench.now, attempt);
    let waited = bench.advance_to_timeout();
    assert_eq!(waited, Duration::from_secs(1), "the connect timeout");
    assert!(bench.actions().contains(&Action::Close));
    // Keep failing; the request's own deadline (5 s after it started) ends it.
    let started = bench.now - waited;
    while bench.answers_for(key).is_none() {
        if let Some(attempt) = bench.try_connect_any() {
            bench
                .machine
                .on_connect_failed(bench.now, attempt, refused());
        }
        bench.advance_to_timeout();
        assert!(bench.now <= started + Duration::from_secs(5));
    }
    assert_eq!(bench.now, started + Duration::from_secs(5));
}

impl Bench {
    fn try_connect_any(&mut self) -> Option<AttemptId> {
        self.actions().into_iter().find_map(|action| match action {
            Action::Connect { attempt, .. } => Some(attempt),
            _ => None,
        })
    }

    fn answers_for(&mut self, key: RequestKey) -> Option<Result<server_frame::Body, ClientError>> {
        self.answers()
            .into_iter()
            .find(|(request, _)| *request == key)
            .map(|(_, result)| result)
    }
}

#[test]
fn a_lost_link_fails_written_requests_and_resubscribes_confirmed_consumers() {
    let mut bench = Bench::new();
    bench.connect_to("a:1");
    let subscribe = Subscribe {
        queue: "orders".into(),
        ..Subscribe::default()
    };
    let (consumer, subscribing) =
        bench
            .machine
            .add_consumer(bench.now, subscribe, Duration::from_secs(5));
    let frames = bench.written();
    let ok = SubscribeOk {
        subscription_id: 10,
    };
    bench.server_sends(frames[0].request_id, server_frame::Body::SubscribeOk(ok));
    assert_eq!(bench.answers()[0].0, subscribing);
    assert_eq!(bench.machine.subscription_id(consumer).unwrap(), 10);

    let ping = bench.ping();
    bench.written();
    bench.now += Duration::from_secs(2);
    bench.machine.on_socket_closed(bench.now, None);
    assert!(matches!(
        bench.answers_for(ping),
        Some(Err(ClientError::Disconnected))
    ));
    assert!(matches!(
        bench.machine.subscription_id(consumer),
        Err(ClientError::Disconnected)
    ));

    bench.advance_to_timeout();
    bench.connect_to("b:1");
    let frames = bench.written();
    let Some(client_frame::Body::Subscribe(again)) = &frames[0].body else {
        panic!("expected a re-subscribe first, got {frames:?}");
    };
    assert_eq!(again.queue, "orders");
    let ok = SubscribeOk {
        subscription_id: 20,
    };
    bench.server_sends(frames[0].request_id, server_frame::Body::SubscribeOk(ok));
    assert!(
        bench.answers().is_empty(),
        "nobody waits for a re-subscribe"
    );
    let deliveries = Deliveries {
        subscription_id: 20,
        ..Deliveries::default()
    };
    bench.server_sends(0, server_frame::Body::Deliveries(deliveries));
    match bench.machine.poll_event() {
        Some(Event::Deliveries { consumer: to, .. }) => assert_eq!(to, consumer),
        other => panic!("expected deliveries, got {other:?}"),
    }
}

#[test]
fn not_leader_sends_the_request_again_on_a_connection_to_the_leader() {
    let mut bench = Bench::new();
    bench.connect_to("a:1");
    let key = bench.ping();
    let frames = bench.written();
    let not_leader = WireError {
        code: ErrorCode::NotLeader as i32,
        message: "queue led elsewhere".into(),
        leader_address: "c:1".into(),
    };
    bench.server_sends(
        frames[0].request_id,
        server_frame::Body::Error(not_leader.clone()),
    );
    assert!(bench.answers().is_empty(), "a redirect is not an answer");
    bench.machine.on_timeout(bench.now);
    bench.connect_to("c:1");
    let frames = bench.written();
    assert!(matches!(frames[0].body, Some(client_frame::Body::Ping(_))));
    // It gives up after MAX_REDIRECTS and returns the error.
    let mut request_id = frames[0].request_id;
    for _ in 0..MAX_REDIRECTS {
        bench.server_sends(request_id, server_frame::Body::Error(not_leader.clone()));
        bench.machine.on_timeout(bench.now);
        if let Some(attempt) = bench.try_connect_any() {
            bench.machine.on_connected(bench.now, attempt);
            bench.written();
            bench.server_sends(
                0,
                server_frame::Body::HelloOk(HelloOk {
                    node_id: 3,
                    ..HelloOk::default()
                }),
            );
            request_id = bench.written()[0].request_id;
        }
    }
    let answer = bench
        .answers_for(key)
        .expect("answered after the redirects");
    assert_eq!(answer.unwrap_err().code(), Some(ErrorCode::NotLeader));
}

#[test]
fn a_timer_ends_at_its_deadline_and_not_before() {
    let mut bench = Bench::new();
    bench.connect_to("a:1");
    let timer = bench
        .machine
        .start_timer(bench.now, Duration::from_millis(250));
    bench
        .machine
        .on_timeout(bench.now + Duration::from_millis(249));
    assert!(bench.answers().is_empty());
    assert_eq!(bench.advance_to_timeout(), Duration::from_millis(250));
    assert!(matches!(
        bench.answers_for(timer),
        Some(Err(ClientError::Timeout))
    ));
}

#[test]
fn close_fails_everything_once_and_later_requests_at_once() {
    let mut bench = Bench::new();
    bench.connect_to("a:1");
    let written = bench.ping();
    bench.machine.close();
    assert!(matches!(
        bench.answers_for(written),
        Some(Err(ClientError::Closed))
    ));
    let later = bench.ping();
    assert!(matches!(
        bench.answers_for(later),
        Some(Err(ClientError::Closed))
    ));
    assert_eq!(
        bench.machine.poll_timeout(),
        None,
        "nothing is attempted again"
    );
}
