//! The `krest` argument interface, which other tools script: flags, defaults, usage errors.

use clap::error::ErrorKind;
use clap::Parser;
use krest_proto::client::{AckMode, DeliveryMode, OverflowPolicy, QueueKind};

use super::{Cli, Command, KindArg, QueueCommand};
use crate::cli::bench::Scenario;

fn parse(arguments: &[&str]) -> Cli {
    let mut all = vec!["krest"];
    all.extend_from_slice(arguments);
    Cli::try_parse_from(all).unwrap_or_else(|error| panic!("{arguments:?}: {error}"))
}

fn usage_error(arguments: &[&str]) -> ErrorKind {
    let mut all = vec!["krest"];
    all.extend_from_slice(arguments);
    Cli::try_parse_from(all).expect_err("a usage error").kind()
}

#[test]
fn servers_repeat_default_to_localhost_and_json_is_accepted_anywhere() {
    // Proves the global flags: -s/--server repeatable and comma separated, --json after a verb.
    let cli = parse(&["-s", "a:1", "--server", "b:2,c:3", "queue", "ls", "--json"]);
    assert_eq!(cli.servers, ["a:1", "b:2", "c:3"]);
    assert!(cli.json);
    assert!(matches!(
        cli.command,
        Command::Queue {
            command: QueueCommand::Ls
        }
    ));
    if std::env::var_os("KREST_SERVER").is_none() {
        assert_eq!(parse(&["queue", "ls"]).servers, ["127.0.0.1:7654"]);
    }
}

#[test]
fn queue_create_maps_every_flag_to_the_queue_settings() {
    // Proves the create flags and their conversion, absent flags being the server defaults.
    let cli = parse(&[
        "queue",
        "create",
        "orders",
        "--kind",
        "delay",
        "--max-messages",
        "10",
        "--max-bytes",
        "2048",
        "--overflow",
        "drop-oldest",
        "--ack-timeout-ms",
        "500",
        "--max-deliveries",
        "3",
        "--dead-letter-queue",
        "orders.dead",
    ]);
    let Command::Queue {
        command: QueueCommand::Create(create),
    } = cli.command
    else {
        panic!("expected queue create");
    };
    let settings = create.settings();
    assert_eq!(create.name, "orders");
    assert_eq!(settings.kind, QueueKind::Delay as i32);
    assert_eq!((settings.max_messages, settings.max_bytes), (10, 2048));
    assert_eq!(settings.overflow, OverflowPolicy::DropOldest as i32);
    assert_eq!((settings.ack_timeout_ms, settings.max_deliveries), (500, 3));
    assert_eq!(settings.dead_letter_queue, "orders.dead");

    let cli = parse(&["queue", "create", "plain", "--kind", "temporary"]);
    let Command::Queue {
        command: QueueCommand::Create(create),
    } = cli.command
    else {
        panic!("expected queue create");
    };
    let settings = create.settings();
    assert_eq!((settings.max_messages, settings.overflow), (0, 0));
}

#[test]
fn queue_create_without_a_valid_kind_is_a_usage_error() {
    // Proves that --kind is required and limited to the three kinds.
    assert_eq!(
        usage_error(&["queue", "create", "q"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["queue", "create", "q", "--kind", "x"]),
        ErrorKind::InvalidValue
    );
}

#[test]
fn the_other_queue_verbs_take_a_name() {
    // Proves info, delete and purge parse their NAME.
    let names = [("info", "a"), ("delete", "b"), ("purge", "c")];
    for (verb, name) in names {
        let Command::Queue { command } = parse(&["queue", verb, name]).command else {
            panic!("expected a queue command");
        };
        let parsed = match command {
            QueueCommand::Info { name } | QueueCommand::Delete { name } => name,
            QueueCommand::Purge { name } => name,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(parsed, name);
    }
}

#[test]
fn pub_takes_an_optional_body_count_delay_and_repeated_headers() {
    // Proves the pub flags, and that a header must be KEY=VALUE.
    let cli = parse(&[
        "pub",
        "q",
        "hello",
        "--count",
        "3",
        "--delay-ms",
        "250",
        "--header",
        "a=1",
        "--header",
        "b=x=y",
    ]);
    let Command::Pub(publish) = cli.command else {
        panic!("expected pub");
    };
    assert_eq!(
        (publish.queue.as_str(), publish.body.as_deref()),
        ("q", Some("hello"))
    );
    assert_eq!((publish.count, publish.delay_ms), (Some(3), Some(250)));
    let headers: Vec<(&str, &str)> = publish
        .headers
        .iter()
        .map(|header| (header.key.as_str(), header.value.as_str()))
        .collect();
    assert_eq!(headers, [("a", "1"), ("b", "x=y")]);

    let Command::Pub(from_stdin) = parse(&["pub", "q"]).command else {
        panic!("expected pub");
    };
    assert_eq!(from_stdin.body, None);
    assert_eq!(
        usage_error(&["pub", "q", "--header", "novalue"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        usage_error(&["pub", "q", "--count", "2"]),
        ErrorKind::MissingRequiredArgument
    );
}

#[test]
fn sub_defaults_to_point_explicit_push_and_caps_prefetch_by_count() {
    // Proves the sub defaults and their conversion to subscribe options.
    let Command::Sub(subscribe) = parse(&["sub", "q", "--count", "5"]).command else {
        panic!("expected sub");
    };
    let options = subscribe.options();
    assert_eq!(
        (options.mode, options.ack_mode),
        (DeliveryMode::Point, AckMode::Explicit)
    );
    assert_eq!((options.pull, options.prefetch), (false, 5));
    assert_eq!(options.create_if_missing, None);
    assert_eq!(subscribe.timeout_ms, None);
}

#[test]
fn sub_accepts_every_consumption_flag() {
    // Proves --ack, --mode, --group, --pull, --prefetch, --timeout-ms and --create.
    let cli = parse(&[
        "sub",
        "q",
        "--ack",
        "auto",
        "--mode",
        "broadcast",
        "--group",
        "g",
        "--pull",
        "--prefetch",
        "7",
        "--timeout-ms",
        "900",
        "--create",
        "persistent",
    ]);
    let Command::Sub(subscribe) = cli.command else {
        panic!("expected sub");
    };
    assert_eq!(subscribe.create, Some(KindArg::Persistent));
    let options = subscribe.options();
    assert_eq!(
        (options.mode, options.ack_mode),
        (DeliveryMode::Broadcast, AckMode::Auto)
    );
    assert_eq!(
        (options.group.as_str(), options.pull, options.prefetch),
        ("g", true, 7)
    );
    let settings = options.create_if_missing.expect("create settings");
    assert_eq!(settings.kind, QueueKind::Persistent as i32);
    assert_eq!(subscribe.timeout_ms, Some(900));
}

#[test]
fn bench_has_defaults_takes_scenarios_and_refuses_a_zero_window_or_rate() {
    // Proves the bench flags: no scenario means durable then consume; windows and rates >= 1.
    let Command::Bench(bench) = parse(&["bench"]).command else {
        panic!("expected bench");
    };
    assert!(bench.scenarios.is_empty());
    assert_eq!(
        (bench.window, bench.size, bench.rate, bench.secs),
        (256, 1024, 5_000, 5)
    );
    let cli = parse(&[
        "bench",
        "latency",
        "delay",
        "--count",
        "10",
        "--size",
        "4",
        "--window",
        "2",
        "--rate",
        "100",
        "--secs",
        "2",
        "--server-pid",
        "42",
    ]);
    let Command::Bench(bench) = cli.command else {
        panic!("expected bench");
    };
    assert_eq!(bench.scenarios, vec![Scenario::Latency, Scenario::Delay]);
    assert_eq!((bench.count, bench.size, bench.window), (10, 4, 2));
    assert_eq!(
        (bench.rate, bench.secs, bench.server_pid),
        (100, 2, Some(42))
    );
    assert_eq!(
        usage_error(&["bench", "--window", "0"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        usage_error(&["bench", "--rate", "0"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(usage_error(&["bench", "sideways"]), ErrorKind::InvalidValue);
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    // Proves that typos fail with a usage error (exit status 2) rather than doing anything.
    assert_eq!(usage_error(&["queues"]), ErrorKind::InvalidSubcommand);
}

/// Commands run against the fake server; they print little or nothing.
mod against_a_fake_server {
    use krest_proto::client::{
        client_frame, server_frame, Deliveries, Error as WireError, ErrorCode, PublishOk,
        SettleAction, SubscribeOk,
    };

    use super::parse;
    use crate::cli::run;
    use crate::tests::fake_server::FakeServer;
    use crate::tests::{bounded, done, wire_delivery};

    #[tokio::test]
    async fn queue_create_declares_the_queue_with_its_settings() {
        // Proves the create command's request and its silent success.
        bounded(async {
            let mut server = FakeServer::start().await;
            let cli = parse(&[
                "-s",
                &server.address,
                "queue",
                "create",
                "q",
                "--kind",
                "persistent",
            ]);
            let server_side = async {
                let mut connection = server.accept().await;
                let (request_id, body) = connection.next_request().await;
                let client_frame::Body::DeclareQueue(declare) = body else {
                    panic!("expected DeclareQueue, got {body:?}");
                };
                assert_eq!(declare.name, "q");
                assert_eq!(declare.settings.expect("settings").kind, 2);
                connection.answer(request_id, done()).await;
            };
            let (outcome, ()) = tokio::join!(run(cli), server_side);
            outcome.expect("queue create");
        })
        .await;
    }

    #[tokio::test]
    async fn pub_with_count_sends_the_body_that_many_times_in_order() {
        // Proves the repeated publish: same body, increasing producer sequences, in order.
        bounded(async {
            let mut server = FakeServer::start().await;
            let cli = parse(&["-s", &server.address, "pub", "q", "hi", "--count", "3"]);
            let server_side = async {
                let mut connection = server.accept().await;
                let mut producer_sequences = Vec::new();
                for queue_sequence in 0..3 {
                    let (request_id, body) = connection.next_request().await;
                    let client_frame::Body::Publish(publish) = body else {
                        panic!("expected Publish, got {body:?}");
                    };
                    assert_eq!(&publish.messages[0].payload[..], b"hi");
                    producer_sequences.push(publish.messages[0].producer_sequence);
                    let ok = PublishOk {
                        sequences: vec![queue_sequence],
                    };
                    connection
                        .answer(request_id, server_frame::Body::PublishOk(ok))
                        .await;
                }
                assert!(producer_sequences.windows(2).all(|pair| pair[0] < pair[1]));
            };
            let (outcome, ()) = tokio::join!(run(cli), server_side);
            outcome.expect("pub");
        })
        .await;
    }

    #[tokio::test]
    async fn pub_fails_with_the_server_error_as_its_one_line_message() {
        // Proves that an unconfirmed message makes the command fail with the server's error.
        bounded(async {
            let mut server = FakeServer::start().await;
            let cli = parse(&["-s", &server.address, "pub", "missing", "hi"]);
            let server_side = async {
                let mut connection = server.accept().await;
                let (request_id, _) = connection.next_request().await;
                let error = WireError {
                    code: ErrorCode::QueueNotFound as i32,
                    message: "queue 'missing' does not exist".into(),
                    leader_address: String::new(),
                };
                connection
                    .answer(request_id, server_frame::Body::Error(error))
                    .await;
            };
            let (outcome, ()) = tokio::join!(run(cli), server_side);
            let message = format!("{:#}", outcome.unwrap_err());
            assert_eq!(message, "QUEUE_NOT_FOUND: queue 'missing' does not exist");
        })
        .await;
    }

    #[tokio::test]
    async fn sub_with_count_acks_each_message_and_stops_at_the_count() {
        // Proves explicit acks after printing and a clean exit once --count messages arrived.
        bounded(async {
            let mut server = FakeServer::start().await;
            let cli = parse(&["-s", &server.address, "sub", "q", "--count", "2"]);
            let server_side = async {
                let mut connection = server.accept().await;
                let (request_id, body) = connection.next_request().await;
                let client_frame::Body::Subscribe(subscribe) = body else {
                    panic!("expected Subscribe, got {body:?}");
                };
                assert_eq!(subscribe.prefetch, 2, "the prefetch is capped by --count");
                let ok = SubscribeOk { subscription_id: 1 };
                connection
                    .answer(request_id, server_frame::Body::SubscribeOk(ok))
                    .await;
                let deliveries = Deliveries {
                    subscription_id: 1,
                    queue: "q".into(),
                    deliveries: vec![wire_delivery(1, 1, "first"), wire_delivery(2, 1, "second")],
                };
                connection
                    .push(server_frame::Body::Deliveries(deliveries))
                    .await;
                for sequence in 1..=2 {
                    let (request_id, body) = connection.next_request().await;
                    let client_frame::Body::Settle(settle) = body else {
                        panic!("expected Settle, got {body:?}");
                    };
                    assert_eq!(settle.action, SettleAction::Ack as i32);
                    assert_eq!(settle.tags[0].sequence, sequence);
                    connection.answer(request_id, done()).await;
                }
            };
            let (outcome, ()) = tokio::join!(run(cli), server_side);
            outcome.expect("sub");
        })
        .await;
    }

    #[tokio::test]
    async fn sub_fails_when_the_timeout_passes_before_the_count() {
        // Proves the --timeout-ms failure and its message.
        bounded(async {
            let mut server = FakeServer::start().await;
            let arguments = [
                "-s",
                &server.address,
                "sub",
                "q",
                "--count",
                "1",
                "--timeout-ms",
                "100",
            ];
            let cli = parse(&arguments);
            let server_side = async {
                let mut connection = server.accept().await;
                let (request_id, _) = connection.next_request().await;
                let ok = SubscribeOk { subscription_id: 1 };
                connection
                    .answer(request_id, server_frame::Body::SubscribeOk(ok))
                    .await;
                connection
            };
            let (outcome, _connection) = tokio::join!(run(cli), server_side);
            let message = format!("{:#}", outcome.unwrap_err());
            assert_eq!(message, "timed out after 100 ms waiting for messages");
        })
        .await;
    }

    #[tokio::test]
    async fn bench_publishes_and_consumes_every_message_with_a_window_in_flight() {
        // Proves the bench end to end: thousands of pipelined sends, then every one acked.
        bounded(async {
            let mut server = FakeServer::start().await;
            let arguments = [
                "-s",
                &server.address,
                "--json",
                "bench",
                "--count",
                "3000",
                "--size",
                "16",
                "--window",
                "64",
            ];
            let cli = parse(&arguments);
            let server_side = async {
                let connection = server.accept().await;
                crate::tests::mini_broker::serve(connection).await
            };
            let (outcome, acked) = tokio::join!(run(cli), server_side);
            outcome.expect("bench");
            assert_eq!(acked, 3000);
        })
        .await;
    }
}
