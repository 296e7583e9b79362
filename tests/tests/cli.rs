//! The `krest` command-line tool against a real server: output and exit codes are what scripts
//! rely on.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use krest_tests::{cli_binary, Server, ServerKind};

fn krest(server: &Server, arguments: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(cli_binary());
    command.args(["-s", &server.address()]);
    if !arguments.contains(&"--admin") {
        command.args(["--admin", &server.admin.to_string()]);
    }
    let mut child = command
        .args(arguments)
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

krest_tests::for_each_server!(krest_tests::call;
    stdin_lines_are_published_and_sub_prints_then_acks_them,
    queue_commands_report_as_json,
    failures_print_one_line_and_exit_non_zero,
    cluster_info_and_server_check_ask_the_admin_api,
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
}

fn stdin_lines_are_published_and_sub_prints_then_acks_them(kind: ServerKind) {
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

fn failures_print_one_line_and_exit_non_zero(kind: ServerKind) {
    let server = Server::start(kind);
    let missing = krest(&server, &["pub", "nowhere", "hi"], None);
    assert!(!missing.status.success());
    let message = text(&missing.stderr);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("QUEUE_NOT_FOUND"), "{message}");
    krest(
        &server,
        &["queue", "create", "empty", "--kind", "temporary"],
        None,
    );
    let timed_out = krest(
        &server,
        &["sub", "empty", "--count", "1", "--timeout-ms", "300"],
        None,
    );
    assert!(!timed_out.status.success());
    assert!(text(&timed_out.stderr).contains("timed out"));
    let conflict = krest(
        &server,
        &["queue", "create", "empty", "--kind", "persistent"],
        None,
    );
    assert!(!conflict.status.success());
    assert!(text(&conflict.stderr).contains("QUEUE_KIND_CONFLICT"));
}
