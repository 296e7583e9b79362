//! The `krest` command-line tool against a real server: output and exit codes are what scripts
//! rely on.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use krest_tests::{cli_binary, Server, ServerKind};
use serde_json::{json, Value};

/// `krest -s <server> --admin <admin> ARGUMENTS`, ready to run.
fn command(server: &Server, arguments: &[&str]) -> Command {
    let mut command = Command::new(cli_binary());
    command.args(["-s", &server.address()]);
    if !arguments.contains(&"--admin") {
        command.args(["--admin", &server.admin.to_string()]);
    }
    command.args(arguments);
    command
}

fn krest(server: &Server, arguments: &[&str], stdin: Option<&str>) -> Output {
    let mut child = command(server, arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("krest runs");
    let mut input = child.stdin.take().expect("piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("stdin");
    }
    drop(input);
    child.wait_with_output().expect("krest exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `krest` (no stdin), asserts exit status 0, and returns its stdout.
fn succeed(server: &Server, arguments: &[&str]) -> String {
    let output = krest(server, arguments, None);
    assert!(
        output.status.success(),
        "krest {arguments:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs `krest --json ARGUMENTS`, asserts exit status 0, and parses stdout as one JSON value.
fn succeed_json(server: &Server, arguments: &[&str]) -> Value {
    let arguments: Vec<&str> = std::iter::once("--json")
        .chain(arguments.iter().copied())
        .collect();
    let stdout = succeed(server, &arguments);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

/// Runs `krest`, asserts it failed with exit status 1 and one line `krest: ...` on stderr,
/// and returns that line.
fn fail(server: &Server, arguments: &[&str]) -> String {
    let output = krest(server, arguments, None);
    let message = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "krest {arguments:?}: {message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.starts_with("krest: "), "{message}");
    message
}

/// Splits plain output into lines of whitespace-separated cells.
fn cells(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Polls the admin API until queue `name` satisfies `ready` (a subscriber started by another
/// process is registered a moment after it starts).
fn wait_for_queue(server: &Server, name: &str, ready: impl Fn(&Value) -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.admin_request("GET", &format!("/v1/queues/{name}"), "");
        let info: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if ready(&info) {
            return;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "queue {name} never got there: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `krest` process running in the background; killed if the test ends without waiting.
struct Background(Option<Child>);

impl Background {
    fn start(server: &Server, arguments: &[&str]) -> Background {
        let child = command(server, arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("krest runs");
        Background(Some(child))
    }

    /// Waits for the exit, asserts success, and returns stdout.
    fn finish(mut self) -> String {
        let output = self
            .0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("krest exits");
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

krest_tests::for_each_server!(krest_tests::call;
    stdin_lines_are_published_and_sub_prints_then_acks_them,
    queue_commands_report_as_json,
    queue_ls_and_info_print_a_table_and_key_value_lines,
    create_purge_redrive_and_delete_confirm_as_json_and_fail_on_a_missing_queue,
    pub_and_sub_carry_json_headers_delays_pull_auto_ack_and_groups,
    broadcast_subscribers_each_print_every_message,
    failures_exit_1_with_one_line_and_usage_errors_exit_2,
    cluster_info_and_server_check_ask_the_admin_api,
    a_fenced_node_fails_readyz_and_server_check_and_keeps_what_it_confirmed,
);

fn cluster_info_and_server_check_ask_the_admin_api(kind: ServerKind) {
    // Proves `cluster info` reports the node (plain and JSON) and `server check` exits 0 for a
    // healthy node and non-zero when nothing answers at the admin address.
    let server = Server::start_with(kind, &["--node-id", "7"]);
    let info = krest(&server, &["cluster", "info"], None);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(
        text(&info.stdout).contains("node_id  7"),
        "{}",
        text(&info.stdout)
    );
    let info = krest(&server, &["--json", "cluster", "info"], None);
    let cluster: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(cluster["node_id"], 7);
    let check = krest(&server, &["server", "check"], None);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("ready    ok"),
        "{}",
        text(&check.stdout)
    );

    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let nowhere = unused.local_addr().expect("address").to_string();
    drop(unused);
    let check = krest(
        &server,
        &["--admin", &nowhere, "--json", "server", "check"],
        None,
    );
    assert!(!check.status.success());
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(report["healthy"], false);
    assert!(
        text(&check.stderr).starts_with("krest: "),
        "{}",
        text(&check.stderr)
    );
    assert_eq!(check.status.code(), Some(1));
    let check = krest(&server, &["--admin", &nowhere, "server", "check"], None);
    assert_eq!(check.status.code(), Some(1));
    let report = cells(&text(&check.stdout));
    assert_eq!(
        (report[0][0].as_str(), report[1][0].as_str()),
        ("healthy", "ready")
    );
    assert!(text(&check.stdout).contains("cannot reach the admin API"));
    let message = fail(&server, &["--admin", &nowhere, "cluster", "info"]);
    assert!(message.contains("cannot reach the admin API"), "{message}");
}

fn stdin_lines_are_published_and_sub_prints_then_acks_them(kind: ServerKind) {
    // Proves `pub` without a body sends one message per stdin line, in order, and `sub`
    // prints each body on its own line and acks it.
    let server = Server::start(kind);
    let created = krest(
        &server,
        &["queue", "create", "orders", "--kind", "persistent"],
        None,
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let published = krest(&server, &["pub", "orders"], Some("one\ntwo\nthree\n"));
    assert!(published.status.success(), "{}", text(&published.stderr));
    let received = krest(
        &server,
        &["sub", "orders", "--count", "3", "--timeout-ms", "10000"],
        None,
    );
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert_eq!(text(&received.stdout), "one\ntwo\nthree\n");
    let (_, info) = server.admin_request("GET", "/v1/queues/orders", "");
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["messages"], 0, "sub acked what it printed: {info}");
}

fn queue_commands_report_as_json(kind: ServerKind) {
    // Proves `ls` and `info` with --json print the queue objects (kind, depth, delayed) and
    // that purge and delete succeed and leave an empty list.
    let server = Server::start(kind);
    krest(
        &server,
        &[
            "queue",
            "create",
            "later",
            "--kind",
            "delay",
            "--max-deliveries",
            "3",
        ],
        None,
    );
    let published = krest(
        &server,
        &[
            "pub",
            "later",
            "soon",
            "--delay-ms",
            "60000",
            "--count",
            "2",
        ],
        None,
    );
    assert!(published.status.success(), "{}", text(&published.stderr));
    let listed = krest(&server, &["--json", "queue", "ls"], None);
    let listed: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("ls --json is JSON");
    assert_eq!(listed[0]["name"], "later");
    let info = krest(&server, &["--json", "queue", "info", "later"], None);
    let info: serde_json::Value =
        serde_json::from_slice(&info.stdout).expect("info --json is JSON");
    assert_eq!(
        (
            info["kind"].as_str(),
            info["messages"].as_u64(),
            info["delayed"].as_u64()
        ),
        (Some("delay"), Some(2), Some(2))
    );
    assert!(krest(&server, &["queue", "purge", "later"], None)
        .status
        .success());
    assert!(krest(&server, &["queue", "delete", "later"], None)
        .status
        .success());
    let listed = krest(&server, &["--json", "queue", "ls"], None);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).expect("json"),
        serde_json::json!([])
    );
}

fn failures_exit_1_with_one_line_and_usage_errors_exit_2(kind: ServerKind) {
    // Proves a failed command exits 1 with one `krest: ...` line naming the error code, and a
    // command line clap cannot parse exits 2 before contacting the server.
    let server = Server::start(kind);
    let message = fail(&server, &["pub", "nowhere", "hi"]);
    assert!(message.contains("QUEUE_NOT_FOUND"), "{message}");
    succeed(
        &server,
        &["queue", "create", "empty", "--kind", "temporary"],
    );
    let message = fail(
        &server,
        &["sub", "empty", "--count", "1", "--timeout-ms", "300"],
    );
    assert!(message.contains("timed out"), "{message}");
    let message = fail(
        &server,
        &["queue", "create", "empty", "--kind", "persistent"],
    );
    assert!(message.contains("QUEUE_KIND_CONFLICT"), "{message}");
    let message = fail(&server, &["sub", "nowhere", "--count", "1"]);
    assert!(message.contains("QUEUE_NOT_FOUND"), "{message}");
    for usage in [
        &["queue", "create", "orders"][..],
        &["queue", "create", "orders", "--kind", "forever"],
        &["queue", "frobnicate"],
        &["pub", "empty", "x", "--header", "no-equals-sign"],
        &["pub", "empty", "--count", "2"],
        &["sub", "empty", "--ack", "sometimes"],
        &["sub", "empty", "--mode", "multicast"],
    ] {
        let output = krest(&server, usage, None);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{usage:?}: {}",
            text(&output.stderr)
        );
    }
    assert_eq!(
        succeed_json(&server, &["queue", "ls"])
            .as_array()
            .map(Vec::len),
        Some(1),
        "no usage error created anything"
    );
}

fn queue_ls_and_info_print_a_table_and_key_value_lines(kind: ServerKind) {
    // Proves `queue ls` prints one table row per queue and `queue info` prints every setting
    // as a key/value line and the subscriptions as a table; `create` prints nothing plain.
    let server = Server::start(kind);
    let created = succeed(
        &server,
        &[
            "queue",
            "create",
            "orders",
            "--kind",
            "persistent",
            "--max-messages",
            "100",
            "--max-bytes",
            "4096",
            "--overflow",
            "drop-oldest",
            "--ack-timeout-ms",
            "5000",
            "--max-deliveries",
            "3",
            "--dead-letter-queue",
            "orders.failed",
        ],
    );
    assert_eq!(created, "");
    succeed(
        &server,
        &["queue", "create", "alerts", "--kind", "temporary"],
    );
    succeed(&server, &["pub", "orders", "ab", "--count", "2"]);
    // The "billing" group takes and acks one; its subscription stays with one message pending.
    let got = succeed(
        &server,
        &["sub", "orders", "--group", "billing", "--count", "1"],
    );
    assert_eq!(got, "ab\n");

    let table = cells(&succeed(&server, &["queue", "ls"]));
    assert_eq!(
        table,
        vec![
            vec![
                "NAME",
                "KIND",
                "NODE",
                "MESSAGES",
                "BYTES",
                "IN_FLIGHT",
                "DELAYED",
                "SUBSCRIPTIONS"
            ],
            vec!["alerts", "temporary", "1", "0", "0", "0", "0", "0"],
            vec!["orders", "persistent", "1", "1", "2", "0", "0", "1"],
        ]
    );
    let info = succeed(&server, &["queue", "info", "orders"]);
    let (settings, subscriptions) = info.split_once("\n\n").expect("a subscription table");
    let settings: Vec<Vec<String>> = cells(settings);
    let value = |key: &str| {
        settings
            .iter()
            .find(|line| line[0] == key)
            .map(|line| line[1..].join(" "))
            .unwrap_or_else(|| panic!("no {key} in {info}"))
    };
    for (key, expected) in [
        ("name", "orders"),
        ("kind", "persistent"),
        ("messages", "1"),
        ("bytes", "2"),
        ("in_flight", "0"),
        ("delayed", "0"),
        ("next_sequence", "3"),
        ("max_messages", "100"),
        ("max_bytes", "4096"),
        ("overflow", "drop-oldest"),
        ("ack_timeout_ms", "5000"),
        ("max_deliveries", "3"),
        ("dead_letter_queue", "orders.failed"),
    ] {
        assert_eq!(value(key), expected, "{key}");
    }
    assert_eq!(
        cells(subscriptions),
        vec![
            vec!["SUBSCRIPTION", "MODE", "CONSUMERS", "PENDING", "IN_FLIGHT"],
            vec!["billing", "point", "0", "1", "0"],
        ]
    );
    let info = succeed_json(&server, &["queue", "info", "orders"]);
    assert_eq!(
        info["subscriptions"],
        json!([{"name": "billing", "broadcast": false, "mode": "point", "consumers": 0,
                "pending": 1, "in_flight": 0}])
    );
}

fn create_purge_redrive_and_delete_confirm_as_json_and_fail_on_a_missing_queue(kind: ServerKind) {
    // Proves create, purge, redrive and delete do what they say, print a confirmation object
    // with --json (nothing plain, except redrive's summary), and exit 1 with QUEUE_NOT_FOUND
    // for a queue that does not exist.
    let server = Server::start(kind);
    let depth = |name: &str| {
        succeed_json(&server, &["queue", "info", name])["messages"]
            .as_u64()
            .expect("a depth")
    };
    assert_eq!(
        succeed_json(
            &server,
            &["queue", "create", "jobs", "--kind", "persistent"]
        ),
        json!({"queue": "jobs", "result": "created"})
    );
    succeed(&server, &["pub", "jobs", "x", "--count", "3"]);
    assert_eq!(succeed(&server, &["queue", "purge", "jobs"]), "");
    assert_eq!(depth("jobs"), 0);
    succeed(&server, &["pub", "jobs", "y"]);
    assert_eq!(
        succeed_json(&server, &["queue", "purge", "jobs"]),
        json!({"queue": "jobs", "result": "purged"})
    );
    assert_eq!(depth("jobs"), 0);

    // Two dead letters that name their source, as the broker writes them.
    succeed(
        &server,
        &["queue", "create", "jobs.dlq", "--kind", "persistent"],
    );
    let published = krest(
        &server,
        &[
            "pub",
            "jobs.dlq",
            "--header",
            "krest-dead-letter-source=jobs",
        ],
        Some("first\nsecond\n"),
    );
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(
        succeed(&server, &["queue", "redrive", "jobs.dlq", "--max", "1"]),
        "jobs.dlq: moved 1 back to their queues, skipped 0\n"
    );
    assert_eq!((depth("jobs.dlq"), depth("jobs")), (1, 1));
    assert_eq!(
        succeed_json(&server, &["queue", "redrive", "jobs.dlq"]),
        json!({"queue": "jobs.dlq", "moved": 1, "skipped": 0})
    );
    assert_eq!((depth("jobs.dlq"), depth("jobs")), (0, 2));
    let redriven = succeed(&server, &["sub", "jobs", "--count", "2"]);
    assert_eq!(redriven, "first\nsecond\n", "oldest first");

    assert_eq!(succeed(&server, &["queue", "delete", "jobs"]), "");
    assert_eq!(
        succeed_json(&server, &["queue", "delete", "jobs.dlq"]),
        json!({"queue": "jobs.dlq", "result": "deleted"})
    );
    assert_eq!(succeed_json(&server, &["queue", "ls"]), json!([]));
    for verb in ["info", "delete", "purge", "redrive"] {
        let message = fail(&server, &["queue", verb, "ghost"]);
        assert!(
            message.contains("QUEUE_NOT_FOUND") && message.contains("'ghost'"),
            "{verb}: {message}"
        );
    }
}

fn pub_and_sub_carry_json_headers_delays_pull_auto_ack_and_groups(kind: ServerKind) {
    // Proves `pub --json` reports the stored sequences, headers travel to `sub --json`, a
    // delayed message is not handed out before its time, `sub --create` declares the queue,
    // and point groups (push or pull, explicit or auto ack) each get every message.
    let server = Server::start(kind);
    let message = fail(
        &server,
        &[
            "sub",
            "events",
            "--create",
            "persistent",
            "--count",
            "1",
            "--timeout-ms",
            "300",
        ],
    );
    assert!(message.contains("timed out"), "{message}");
    assert_eq!(
        succeed_json(&server, &["queue", "info", "events"])["kind"],
        "persistent",
        "sub --create declared the queue"
    );
    assert_eq!(
        succeed_json(
            &server,
            &[
                "pub",
                "events",
                "hello",
                "--count",
                "2",
                "--header",
                "trace=abc"
            ]
        ),
        json!({"published": 2, "sequences": [1, 2]})
    );
    let line = succeed_json(&server, &["sub", "events", "--count", "1"]);
    assert_eq!(
        line,
        json!({"sequence": 1, "delivery_count": 1, "headers": {"trace": "abc"}, "body": "hello"})
    );
    assert_eq!(
        succeed(&server, &["sub", "events", "--pull", "--count", "1"]),
        "hello\n"
    );

    // A second group exists once it has subscribed; from then on both get every message.
    let message = fail(
        &server,
        &[
            "sub",
            "events",
            "--group",
            "audit",
            "--count",
            "1",
            "--timeout-ms",
            "300",
        ],
    );
    assert!(message.contains("timed out"), "{message}");
    let published = krest(&server, &["pub", "events"], Some("p\nq\n"));
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(
        succeed(
            &server,
            &["sub", "events", "--group", "audit", "--ack", "auto", "--count", "2"]
        ),
        "p\nq\n"
    );
    assert_eq!(
        succeed(&server, &["sub", "events", "--pull", "--count", "2"]),
        "p\nq\n"
    );
    assert_eq!(
        succeed_json(&server, &["queue", "info", "events"])["messages"],
        0,
        "both groups acked everything"
    );

    // Delays: only on a delay queue, and a message due in an hour is not handed out now.
    let message = fail(&server, &["pub", "events", "x", "--delay-ms", "1000"]);
    assert!(message.contains("INVALID_ARGUMENT"), "{message}");
    succeed(&server, &["queue", "create", "later", "--kind", "delay"]);
    succeed(
        &server,
        &["pub", "later", "in an hour", "--delay-ms", "3600000"],
    );
    let info = succeed_json(&server, &["queue", "info", "later"]);
    assert_eq!(
        (info["messages"].clone(), info["delayed"].clone()),
        (json!(1), json!(1))
    );
    let message = fail(
        &server,
        &["sub", "later", "--count", "1", "--timeout-ms", "300"],
    );
    assert!(message.contains("timed out"), "{message}");
    succeed(&server, &["pub", "later", "soon", "--delay-ms", "100"]);
    assert_eq!(
        succeed(
            &server,
            &["sub", "later", "--count", "1", "--timeout-ms", "30000"]
        ),
        "soon\n"
    );
}

fn broadcast_subscribers_each_print_every_message(kind: ServerKind) {
    // Proves two `sub --mode broadcast` processes each receive every message published while
    // they are subscribed, where point consumers would share them.
    let server = Server::start(kind);
    succeed(&server, &["queue", "create", "news", "--kind", "temporary"]);
    let arguments = [
        "sub",
        "news",
        "--mode",
        "broadcast",
        "--count",
        "2",
        "--timeout-ms",
        "60000",
    ];
    let first = Background::start(&server, &arguments);
    let second = Background::start(&server, &arguments);
    wait_for_queue(&server, "news", |info| {
        info["subscriptions"]
            .as_array()
            .is_some_and(|subscriptions| {
                subscriptions
                    .iter()
                    .filter(|subscription| subscription["broadcast"] == true)
                    .count()
                    == 2
            })
    });
    let published = krest(&server, &["pub", "news"], Some("extra\nedition\n"));
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(first.finish(), "extra\nedition\n");
    assert_eq!(second.finish(), "extra\nedition\n");
}

fn a_fenced_node_fails_readyz_and_server_check_and_keeps_what_it_confirmed(kind: ServerKind) {
    // Proves a storage failure on a real server (its next segment file cannot be created)
    // fences the node: publishes fail with UNAVAILABLE, `/readyz` answers 503 with the reason,
    // `server check` exits non-zero, `/metrics` shows `krest_fenced 1`; and after a restart
    // on a healthy disk every message that was confirmed is still there.
    let mut server = Server::start_with(kind, &["--set", "storage.segment_bytes=4096"]);
    let created = krest(
        &server,
        &["queue", "create", "doomed", "--kind", "persistent"],
        None,
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let line = "x".repeat(1000);
    let first = krest(&server, &["pub", "doomed", &line], None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // Block every name the next segments could take: creating one fails.
    let log_dir = find_dir(&server.data_dir().join("data"), "queue-").expect("the queue's log");
    let mut blocked = Vec::new();
    for index in 2..200u64 {
        let path = log_dir.join(format!("{index:020}.seg"));
        if !path.exists() {
            std::fs::create_dir(&path).expect("block a segment name");
            blocked.push(path);
        }
    }
    let mut confirmed = 1;
    let mut refusal = None;
    for _ in 0..40 {
        let published = krest(&server, &["pub", "doomed", &line], None);
        if published.status.success() {
            confirmed += 1;
        } else {
            refusal = Some(text(&published.stderr));
            break;
        }
    }
    let refusal = refusal.expect("a publish fails once the segment is full");
    assert!(refusal.contains("UNAVAILABLE"), "{refusal}");

    let (status, body) = server.admin_request("GET", "/readyz", "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("fenced"), "{body}");
    let check = krest(&server, &["--json", "server", "check"], None);
    assert!(!check.status.success(), "{}", text(&check.stdout));
    let report: Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(report["healthy"], true, "the process answers: {report}");
    assert_eq!(report["ready"], false, "{report}");
    let (_, metrics) = server.admin_request("GET", "/metrics", "");
    assert!(
        metrics.lines().any(|line| line == "krest_fenced 1"),
        "{metrics}"
    );

    server.kill9();
    for path in blocked {
        std::fs::remove_dir(&path).expect("unblock");
    }
    server.restart();
    let received = krest(
        &server,
        &[
            "sub",
            "doomed",
            "--count",
            &confirmed.to_string(),
            "--timeout-ms",
            "10000",
        ],
        None,
    );
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert_eq!(text(&received.stdout).lines().count(), confirmed);
}

/// The first directory under `root` (depth first) whose name starts with `prefix`.
fn find_dir(root: &std::path::Path, prefix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(root).ok()? {
        let path = entry.ok()?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name()?.to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            return Some(path);
        }
        if let Some(found) = find_dir(&path, prefix) {
            return Some(found);
        }
    }
    None
}
