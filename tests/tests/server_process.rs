//! The server as a process, as an operator meets it: every exit code, `--print-config` with
//! each configuration layer, `KREST_*` variables reaching a running server, and the second
//! signal that cuts a slow shutdown short. Run against both server binaries.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use krest_proto::client::{client_frame, server_frame, OutgoingMessage, Publish, Subscribe};
use krest_tests::{RawClient, Server, ServerKind};

krest_tests::for_each_server!(krest_tests::call;
    a_usage_error_exits_2_with_a_line_naming_the_flag,
    a_locked_data_directory_exits_74,
    a_corrupt_log_exits_74_naming_the_file,
    a_port_in_use_exits_69,
    a_data_directory_of_another_node_id_exits_78,
    a_cluster_list_without_this_node_exits_78,
    print_config_shows_defaults_file_environment_and_flags_merged,
    environment_variables_configure_a_running_server,
    a_second_signal_cuts_a_slow_shutdown_short_with_exit_1,
);

/// A fresh directory for one test (removed by the test).
fn scratch(kind: ServerKind, name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "krest-process-{name}-{kind:?}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("scratch directory");
    directory
}

/// Runs the server binary to completion with `arguments` (it must exit by itself).
fn run(
    kind: ServerKind,
    data_dir: &Path,
    arguments: &[&str],
    environment: &[(&str, &str)],
) -> Output {
    Command::new(krest_tests::server::binary(kind))
        .arg("--data-dir")
        .arg(data_dir)
        .args(arguments)
        .envs(environment.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the server binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn a_usage_error_exits_2_with_a_line_naming_the_flag(kind: ServerKind) {
    let directory = scratch(kind, "usage");
    let output = run(kind, &directory, &["--no-such-flag"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--no-such-flag"),
        "{}",
        stderr(&output)
    );
    let output = run(kind, &directory, &["--node-id", "many"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(&directory);
}

fn a_locked_data_directory_exits_74(kind: ServerKind) {
    let server = Server::start(kind);
    let output = run(
        kind,
        &server.data_dir().join("data"),
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(output.status.code(), Some(74), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("lock"),
        "says why: {}",
        stderr(&output)
    );
    let (status, _) = server.admin_request("GET", "/healthz", "");
    assert_eq!(status, 200, "the first server is untouched");
}

fn a_corrupt_log_exits_74_naming_the_file(kind: ServerKind) {
    let mut server = Server::start(kind);
    let (status, body) =
        server.admin_request("PUT", "/v1/queues/orders", r#"{"kind":"persistent"}"#);
    assert_eq!(status, 200, "{body}");
    let mut client = RawClient::connect_hello(server.client);
    for number in 0..3 {
        let reply = client.request(client_frame::Body::Publish(Publish {
            queue: "orders".into(),
            messages: vec![OutgoingMessage {
                payload: Bytes::from(format!("message {number}")),
                ..Default::default()
            }],
        }));
        assert!(
            matches!(reply.body, Some(server_frame::Body::PublishOk(_))),
            "{reply:?}"
        );
    }
    drop(client);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // Flip one byte inside the first record's body: valid records follow it, so this is
    // corruption (not a torn tail) and recovery must refuse the log rather than skip it.
    let segment = find_segment(&server.data_dir().join("data"), "queue-1");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let first_body = bytes
        .windows(b"message 0".len())
        .position(|window| window == b"message 0")
        .expect("the first message is in the segment");
    bytes[first_body] ^= 0x20;
    std::fs::write(&segment, &bytes).expect("write back");
    let output = run(
        kind,
        &server.data_dir().join("data"),
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(output.status.code(), Some(74), "{}", stderr(&output));
    let file_name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        stderr(&output).contains(&file_name),
        "names the file: {}",
        stderr(&output)
    );
}

/// The one segment file of log `log` under `data_dir`.
fn find_segment(data_dir: &Path, log: &str) -> PathBuf {
    let mut found = Vec::new();
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|name| name == log)
            {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "one segment of {log}: {found:?}");
    found.remove(0)
}

fn a_data_directory_of_another_node_id_exits_78(kind: ServerKind) {
    let directory = scratch(kind, "node-id");
    let listen = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let mut server = Server::start_with(kind, &["--node-id", "2"]);
    let created = server.data_dir().join("data");
    // A signal right after the ready line is a clean stop too (the handlers are installed
    // before the line is printed).
    assert!(server.terminate().success());
    let mut arguments = vec!["--node-id", "3"];
    arguments.extend(listen);
    let output = Command::new(krest_tests::server::binary(kind))
        .arg("--data-dir")
        .arg(&created)
        .args(&arguments)
        .output()
        .expect("the server binary runs");
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("node 2") && text.contains("node 3"),
        "names both ids: {text}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

fn a_cluster_list_without_this_node_exits_78(kind: ServerKind) {
    let directory = scratch(kind, "cluster-list");
    let config = directory.join("krest.toml");
    std::fs::write(
        &config,
        "[server]\nnode_id = 4\n[cluster]\nnodes = [\n\
         { id = 1, client = \"127.0.0.1:1\", peer = \"127.0.0.1:2\" },\n\
         { id = 2, client = \"127.0.0.1:3\", peer = \"127.0.0.1:4\" } ]\n",
    )
    .expect("a config file");
    let config = config.to_string_lossy().to_string();
    let output = run(kind, &directory.join("data"), &["--config", &config], &[]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cluster.nodes"),
        "names the key: {}",
        stderr(&output)
    );
    let _ = std::fs::remove_dir_all(&directory);
}

fn a_port_in_use_exits_69(kind: ServerKind) {
    let directory = scratch(kind, "bind");
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = taken.local_addr().expect("address").to_string();
    let output = run(
        kind,
        &directory.join("data"),
        &["--listen", &address, "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(output.status.code(), Some(69), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&address),
        "names the address: {}",
        stderr(&output)
    );
    let output = run(
        kind,
        &directory.join("data"),
        &["--listen", "127.0.0.1:0", "--admin-listen", &address],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(69),
        "the admin listener too: {}",
        stderr(&output)
    );
    let _ = std::fs::remove_dir_all(&directory);
}

fn print_config_shows_defaults_file_environment_and_flags_merged(kind: ServerKind) {
    let directory = scratch(kind, "print");
    let config = directory.join("krest.toml");
    let mut file = std::fs::File::create(&config).expect("config file");
    file.write_all(b"[limits]\nmax_queues = 11\nmax_connections = 12\nmax_fetch_messages = 13\n")
        .expect("write");
    let output = run(
        kind,
        &directory.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--set",
            "limits.max_fetch_messages=15",
            "--print-config",
        ],
        &[
            ("KREST_LIMITS_MAX_CONNECTIONS", "14"),
            ("KREST_LIMITS_MAX_FETCH_MESSAGES", "16"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: toml::Table =
        toml::from_str(&String::from_utf8_lossy(&output.stdout)).expect("TOML");
    let limits = printed["limits"].as_table().expect("[limits]");
    assert_eq!(limits["max_queues"].as_integer(), Some(11), "the file");
    assert_eq!(
        limits["max_connections"].as_integer(),
        Some(14),
        "the environment beats the file"
    );
    assert_eq!(
        limits["max_fetch_messages"].as_integer(),
        Some(15),
        "a flag beats both"
    );
    assert_eq!(
        limits["max_frame_bytes"].as_integer(),
        Some(8 * 1024 * 1024),
        "a default"
    );
    assert!(
        !directory.join("data").exists(),
        "--print-config touches no data"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

fn environment_variables_configure_a_running_server(kind: ServerKind) {
    let directory = scratch(kind, "environment");
    let mut child = Command::new(krest_tests::server::binary(kind))
        .arg("--data-dir")
        .arg(directory.join("data"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("KREST_LIMITS_MAX_QUEUES", "1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server starts");
    let admin = ready_line_admin(&mut child);
    let put = |name: &str| {
        admin_request(
            &admin,
            "PUT",
            &format!("/v1/queues/{name}"),
            r#"{"kind":"temporary"}"#,
        )
    };
    let (status, body) = put("first");
    assert_eq!(status, 200, "{body}");
    let (status, body) = put("second");
    assert_eq!(status, 429, "KREST_LIMITS_MAX_QUEUES=1 holds: {body}");
    assert!(body.contains("max_queues"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&directory);
}

/// Reads the server's ready line and returns its admin address.
fn ready_line_admin(child: &mut std::process::Child) -> String {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the ready line");
    line.split_whitespace()
        .find_map(|part| part.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("no admin= in {line:?}"))
        .to_string()
}

fn admin_request(admin: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(admin).expect("admin connects");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn a_second_signal_cuts_a_slow_shutdown_short_with_exit_1(kind: ServerKind) {
    let server = Server::start(kind);
    let (status, body) = server.admin_request("PUT", "/v1/queues/big", r#"{"kind":"temporary"}"#);
    assert_eq!(status, 200, "{body}");
    let mut producer = RawClient::connect_hello(server.client);
    for _ in 0..8 {
        let reply = producer.request(client_frame::Body::Publish(Publish {
            queue: "big".into(),
            messages: vec![OutgoingMessage {
                payload: Bytes::from(vec![7u8; 3 << 20]),
                ..Default::default()
            }],
        }));
        assert!(
            matches!(reply.body, Some(server_frame::Body::PublishOk(_))),
            "{reply:?}"
        );
    }
    // A consumer that never reads: 24 MiB of deliveries fill both socket buffers, so the
    // graceful shutdown cannot finish closing it until its two-second linger runs out.
    let mut stuck = RawClient::connect_hello(server.client);
    let reply = stuck.request(client_frame::Body::Subscribe(Subscribe {
        queue: "big".into(),
        prefetch: 8,
        ..Default::default()
    }));
    assert!(
        matches!(reply.body, Some(server_frame::Body::SubscribeOk(_))),
        "{reply:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.pid().expect("running").to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal("-INT");
    let mut server = server;
    let started = Instant::now();
    let status = server.wait_for_exit(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(1),
        "the second signal exits at once with status 1 (took {:?}); stderr:\n{}",
        started.elapsed(),
        server.stderr()
    );
    assert!(
        server.stderr().contains("second signal"),
        "{}",
        server.stderr()
    );
    drop(stuck);
}
