//! The admin HTTP API of the real servers, endpoint by endpoint: health and readiness, the
//! Prometheus exposition after real traffic, the cluster and queue resources, and the answers
//! to requests that are wrong (unknown queue, bad body, wrong method, unknown path, garbage).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use krest_client::{Client, ClientConfig, QueueKind, QueueSettings, SubscribeOptions};
use krest_tests::deliveries::{self, body, next_delivery as next};
use krest_tests::{Server, ServerKind};
use serde_json::{json, Value};

krest_tests::for_each_server!(krest_tests::block_on;
    healthz_and_readyz_answer_200_in_plain_text,
    metrics_are_valid_prometheus_text_with_every_queue_counter_after_traffic,
    cluster_reports_node_id_role_term_and_peers,
    a_queue_is_declared_listed_shown_purged_and_deleted,
    declare_refuses_bad_bodies_with_400_and_creates_nothing,
    a_declare_past_the_queue_limit_is_429,
    unknown_queues_are_404_with_a_json_error,
    wrong_methods_are_405_and_unknown_paths_404,
    redrive_moves_dead_letters_back_and_refuses_a_bad_max,
    garbage_and_oversized_requests_are_refused_with_400_and_413,
);

/// One admin HTTP response.
#[derive(Debug)]
struct Response {
    /// The first line, e.g. `HTTP/1.1 200 OK`.
    status_line: String,
    status: u16,
    content_type: String,
    body: String,
}

impl Response {
    /// The body as JSON (panics with the body if it is not).
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// Asserts an error answer: this status, a JSON body with this code and a message.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/json", "{self:?}");
        let error = self.json();
        assert_eq!(error["code"], code, "{self:?}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "an error says what went wrong: {self:?}"
        );
    }
}

/// Sends `request` as is to the admin listener and reads the whole answer (the server closes).
fn exchange(server: &Server, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(server.admin).expect("admin connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("admin write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("admin read");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.lines();
    let status_line = lines.next().expect("a status line").to_string();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status code");
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    Response {
        status_line,
        status,
        content_type,
        body: body.to_string(),
    }
}

/// A well-formed request with `body`.
fn http(server: &Server, method: &str, path: &str, body: &str) -> Response {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(server, request.as_bytes())
}

async fn connect(server: &Server) -> Client {
    Client::connect(ClientConfig::new([server.address()]))
        .await
        .expect("client connects")
}

fn settings(kind: QueueKind, ack_timeout_ms: u64) -> QueueSettings {
    QueueSettings {
        kind: kind as i32,
        ack_timeout_ms,
        ..Default::default()
    }
}

/// Declares persistent queue `queue`, publishes `bodies` to it and rejects each one, so they
/// all land in `<queue>.dlq`.
async fn dead_letter(client: &Client, queue: &str, bodies: &[&str]) {
    client
        .declare_queue(queue, settings(QueueKind::Persistent, 0))
        .await
        .expect("declare");
    deliveries::dead_letter(client, queue, bodies).await;
}

/// Checks `text` against the Prometheus text format 0.0.4 and returns every sample, keyed by
/// its series (`name{labels}`): a `# TYPE` (one per family, a known type) before the family's
/// samples, valid metric and label names, parseable values, no series twice, each family's
/// lines together, and counters named `_total`.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    fn is_name(name: &str, colon_allowed: bool) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|first| {
            first.is_ascii_alphabetic() || first == '_' || (colon_allowed && first == ':')
        }) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon_allowed && c == ':'))
    }
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut families_seen: Vec<String> = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(is_name(name, true), "{line}");
            assert!(!help.trim().is_empty(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(is_name(name, true), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counters end in _total: {line}");
            }
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "one TYPE per family: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "{line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("labels close")),
            None => (series, ""),
        };
        assert!(is_name(name, true), "{line}");
        for label in labels.split(',').filter(|label| !label.is_empty()) {
            let (key, quoted) = label.split_once('=').expect("label=\"value\"");
            assert!(is_name(key, false), "{line}");
            assert!(
                quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                "{line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| types.get(*base).is_some_and(|kind| kind == "histogram"))
            .unwrap_or(name);
        assert!(types.contains_key(family), "TYPE before samples: {line}");
        if families_seen.last().map(String::as_str) != Some(family) {
            assert!(
                !families_seen.iter().any(|seen| seen == family),
                "the lines of {family} are not together"
            );
            families_seen.push(family.to_string());
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "series twice: {line}"
        );
    }
    samples
}

/// Reads `/metrics` until `ready` holds for its samples (counters that follow a sync lag the
/// client's confirm by a moment); panics with the last exposition if it never does.
async fn metrics_when(
    server: &Server,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let response = http(server, "GET", "/metrics", "");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(
            response.content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{response:?}"
        );
        let samples = parse_exposition(&response.body);
        if ready(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < give_up,
            "the metrics never reached the expected values:\n{}",
            response.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn queue_sample(samples: &BTreeMap<String, f64>, metric: &str, queue: &str) -> f64 {
    let series = format!("{metric}{{queue=\"{queue}\"}}");
    *samples
        .get(&series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

async fn healthz_and_readyz_answer_200_in_plain_text(kind: ServerKind) {
    // Proves a fresh node is healthy and ready, in plain text, and that the probes are GET only.
    let server = Server::start(kind);
    let health = http(&server, "GET", "/healthz", "");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert!(health.content_type.starts_with("text/plain"), "{health:?}");
    let ready = http(&server, "GET", "/readyz", "");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert!(ready.content_type.starts_with("text/plain"), "{ready:?}");
    http(&server, "POST", "/healthz", "").assert_error(405, "METHOD_NOT_ALLOWED");
    http(&server, "DELETE", "/readyz", "").assert_error(405, "METHOD_NOT_ALLOWED");
}

async fn metrics_are_valid_prometheus_text_with_every_queue_counter_after_traffic(
    kind: ServerKind,
) {
    // Proves /metrics is valid Prometheus text and counts what traffic did: per-queue counters
    // (published, delivered, redelivered, acked, nacked, expired, dead-lettered), the depth,
    // in-flight and delayed gauges, the fsync histogram, storage bytes and connections.
    let server = Server::start(kind);
    let empty = metrics_when(&server, |_| true).await;
    assert_eq!(empty.get("krest_connections"), Some(&0.0));

    let client = connect(&server).await;
    // "work": one message acked, one nacked then acked, one rejected to "work.dlq".
    client
        .declare_queue("work", settings(QueueKind::Persistent, 0))
        .await
        .expect("declare");
    let producer = client.producer("work");
    for text in ["ack", "nack", "reject"] {
        producer.send(text).await.expect("confirmed");
    }
    let mut consumer = client
        .subscribe(SubscribeOptions::new("work"))
        .await
        .expect("subscribe");
    for expected in ["ack", "nack", "reject"] {
        let delivery = next(&mut consumer).await;
        assert_eq!(body(&delivery), expected, "first deliveries in order");
        match expected {
            "ack" => consumer.ack(&delivery).await.expect("ack"),
            "nack" => consumer
                .nack(&delivery, Duration::ZERO)
                .await
                .expect("nack"),
            _ => consumer.reject(&delivery).await.expect("reject"),
        }
    }
    let again = next(&mut consumer).await;
    assert_eq!((body(&again), again.delivery_count()), ("nack".into(), 2));
    consumer.ack(&again).await.expect("ack");

    // "lease": a delivery nobody acks comes back after its 100 ms lease.
    client
        .declare_queue("lease", settings(QueueKind::Temporary, 100))
        .await
        .expect("declare");
    client.producer("lease").send("slow").await.expect("sent");
    let mut slow = client
        .subscribe(SubscribeOptions::new("lease"))
        .await
        .expect("subscribe");
    let first = next(&mut slow).await;
    let redelivered = next(&mut slow).await;
    assert_eq!(first.sequence(), redelivered.sequence());
    assert!(redelivered.delivery_count() >= 2);

    // "held": two stored, one of them in flight; "later": two delayed by an hour.
    client
        .declare_queue("held", settings(QueueKind::Persistent, 0))
        .await
        .expect("declare");
    for text in ["one", "two"] {
        client.producer("held").send(text).await.expect("confirmed");
    }
    let mut holder = client
        .subscribe(SubscribeOptions {
            prefetch: 1,
            ..SubscribeOptions::new("held")
        })
        .await
        .expect("subscribe");
    let _held = next(&mut holder).await;
    client
        .declare_queue("later", settings(QueueKind::Delay, 0))
        .await
        .expect("declare");
    for text in ["a", "b"] {
        client
            .producer("later")
            .send_delayed(text, Duration::from_secs(3600))
            .await
            .expect("confirmed");
    }

    let samples = metrics_when(&server, |samples| {
        let work = |metric| samples.get(&format!("{metric}{{queue=\"work\"}}")).copied();
        work("krest_queue_dead_lettered_total") == Some(1.0)
            && work("krest_queue_depth") == Some(0.0)
            && samples.get("krest_queue_in_flight{queue=\"held\"}") == Some(&1.0)
    })
    .await;
    let work = |metric| queue_sample(&samples, metric, "work");
    assert_eq!(work("krest_queue_published_total"), 3.0);
    assert_eq!(work("krest_queue_delivered_total"), 4.0);
    assert_eq!(work("krest_queue_redelivered_total"), 1.0);
    assert_eq!(work("krest_queue_acked_total"), 2.0);
    assert_eq!(work("krest_queue_nacked_total"), 1.0);
    assert_eq!(work("krest_queue_expired_total"), 0.0);
    assert_eq!(work("krest_queue_in_flight"), 0.0);
    assert_eq!(
        queue_sample(&samples, "krest_queue_published_total", "work.dlq"),
        1.0
    );
    assert_eq!(queue_sample(&samples, "krest_queue_depth", "work.dlq"), 1.0);
    let lease = |metric| queue_sample(&samples, metric, "lease");
    assert!(lease("krest_queue_expired_total") >= 1.0);
    assert!(lease("krest_queue_redelivered_total") >= 1.0);
    let held = |metric| queue_sample(&samples, metric, "held");
    assert_eq!(
        (held("krest_queue_depth"), held("krest_queue_in_flight")),
        (2.0, 1.0)
    );
    assert_eq!(held("krest_queue_subscriptions"), 1.0);
    let shown = http(&server, "GET", "/v1/queues/held", "").json();
    assert_eq!(
        shown["subscriptions"],
        json!([{"name": "default", "mode": "point", "broadcast": false, "consumers": 1,
                "pending": 2, "in_flight": 1}]),
        "the queue resource agrees with the gauges"
    );
    assert!(held("krest_queue_bytes") >= 6.0);
    let later = |metric| queue_sample(&samples, metric, "later");
    assert_eq!(
        (later("krest_queue_depth"), later("krest_queue_delayed")),
        (2.0, 2.0)
    );
    assert_eq!(held("krest_queue_delayed"), 0.0);

    // One client connection, and the sixteen-odd fsyncs of the persistent traffic.
    assert_eq!(samples.get("krest_connections"), Some(&1.0));
    assert!(samples["krest_connections_opened_total"] >= 1.0);
    let fsyncs = samples["krest_fsync_duration_seconds_count"];
    assert!(fsyncs >= 1.0, "{samples:#?}");
    assert_eq!(
        samples["krest_fsync_duration_seconds_bucket{le=\"+Inf\"}"],
        fsyncs
    );
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(series, count)| {
            let bound = series
                .strip_prefix("krest_fsync_duration_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().expect("a numeric bound")
            };
            Some((bound, *count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 2, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "buckets are cumulative: {buckets:?}"
    );
    assert!(samples["krest_fsync_duration_seconds_sum"] >= 0.0);
    assert!(samples["krest_storage_bytes{log=\"meta\"}"] > 0.0);
    assert!(
        samples.iter().any(|(series, bytes)| series
            .starts_with("krest_storage_bytes{log=\"queue-")
            && *bytes > 0.0),
        "{samples:#?}"
    );
    assert_eq!(samples.get("krest_fenced"), Some(&0.0));
    client.close().await;
}

async fn cluster_reports_node_id_role_term_and_peers(kind: ServerKind) {
    // Proves /v1/cluster describes this node as JSON: its configured id, leader of itself, a
    // term, itself the only node (reachable), not fenced.
    let server = Server::start_with(kind, &["--node-id", "7"]);
    let response = http(&server, "GET", "/v1/cluster", "");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.content_type, "application/json");
    let cluster = response.json();
    assert_eq!(cluster["node_id"], 7);
    assert_eq!(cluster["role"], "leader");
    assert_eq!(cluster["leader"], 7);
    assert!(cluster["term"].as_u64().is_some_and(|term| term >= 1));
    let nodes = cluster["nodes"].as_array().expect("a list of nodes");
    assert_eq!(nodes.len(), 1, "{cluster}");
    assert_eq!(nodes[0]["id"], 7);
    assert_eq!(nodes[0]["reachable"], true);
    assert_eq!(cluster["fenced"], Value::Null);
    http(&server, "POST", "/v1/cluster", "").assert_error(405, "METHOD_NOT_ALLOWED");
}

async fn a_queue_is_declared_listed_shown_purged_and_deleted(kind: ServerKind) {
    // Proves the queue resource's life cycle over HTTP: PUT declares with every setting
    // (idempotently; another kind is 409), GET lists and shows, POST purge empties, DELETE
    // removes.
    let server = Server::start(kind);
    let declared = http(
        &server,
        "PUT",
        "/v1/queues/orders",
        r#"{"kind":"persistent","max_messages":100,"max_bytes":65536,"overflow":"drop-oldest",
            "ack_timeout_ms":5000,"max_deliveries":3,"dead_letter_queue":"orders.failed"}"#,
    );
    assert_eq!(declared.status, 200, "{declared:?}");
    let info = declared.json();
    assert_eq!(info["name"], "orders");
    assert_eq!(info["kind"], "persistent");
    assert_eq!(info["messages"], 0);
    assert_eq!(
        info["settings"],
        json!({
            "kind": "persistent",
            "max_messages": 100,
            "max_bytes": 65536,
            "overflow": "drop-oldest",
            "ack_timeout_ms": 5000,
            "max_deliveries": 3,
            "dead_letter_queue": "orders.failed",
        })
    );
    let again = http(
        &server,
        "PUT",
        "/v1/queues/orders",
        r#"{"kind":"persistent"}"#,
    );
    assert_eq!(
        again.status, 200,
        "declaring again is idempotent: {again:?}"
    );
    assert_eq!(again.json()["settings"]["max_messages"], 100);
    http(&server, "PUT", "/v1/queues/orders", r#"{"kind":"delay"}"#)
        .assert_error(409, "QUEUE_KIND_CONFLICT");
    let defaults = http(
        &server,
        "PUT",
        "/v1/queues/scratch",
        r#"{"kind":"temporary"}"#,
    );
    assert_eq!(defaults.status, 200, "{defaults:?}");
    assert_eq!(
        defaults.json()["settings"]["dead_letter_queue"],
        "scratch.dlq"
    );

    let client = connect(&server).await;
    for text in ["a", "b", "c"] {
        client
            .producer("orders")
            .send(text)
            .await
            .expect("confirmed");
    }
    let list = http(&server, "GET", "/v1/queues", "");
    assert_eq!(list.status, 200, "{list:?}");
    let names: Vec<Value> = list
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|queue| queue["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("orders"), json!("scratch")]);
    let shown = http(&server, "GET", "/v1/queues/orders", "");
    assert_eq!(shown.status, 200, "{shown:?}");
    let shown = shown.json();
    assert_eq!(
        (shown["messages"].clone(), shown["bytes"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(shown["next_sequence"], 4);
    assert_eq!(shown["subscriptions"], json!([]));

    let purged = http(&server, "POST", "/v1/queues/orders/purge", "");
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json(), json!({ "purged": 3 }));
    assert_eq!(
        http(&server, "GET", "/v1/queues/orders", "").json()["messages"],
        0
    );
    let deleted = http(&server, "DELETE", "/v1/queues/orders", "");
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.json(), json!({ "deleted": "orders" }));
    http(&server, "GET", "/v1/queues/orders", "").assert_error(404, "QUEUE_NOT_FOUND");
    let names = http(&server, "GET", "/v1/queues", "").json();
    assert_eq!(names.as_array().map(Vec::len), Some(1), "{names}");
    client.close().await;
}

async fn declare_refuses_bad_bodies_with_400_and_creates_nothing(kind: ServerKind) {
    // Proves every malformed declare body is a 400 INVALID_ARGUMENT that names the problem,
    // and that none of them creates a queue.
    let server = Server::start(kind);
    let cases = [
        ("/v1/queues/q", "not json", "not JSON"),
        ("/v1/queues/q", r#"["persistent"]"#, "JSON object"),
        ("/v1/queues/q", "{}", "kind is required"),
        ("/v1/queues/q", r#"{"kind":"durable"}"#, "durable"),
        ("/v1/queues/q", r#"{"kind":7}"#, "'kind'"),
        (
            "/v1/queues/q",
            r#"{"kind":"temporary","colour":"red"}"#,
            "colour",
        ),
        (
            "/v1/queues/q",
            r#"{"kind":"temporary","max_messages":-1}"#,
            "max_messages",
        ),
        (
            "/v1/queues/q",
            r#"{"kind":"temporary","max_bytes":"big"}"#,
            "max_bytes",
        ),
        (
            "/v1/queues/q",
            r#"{"kind":"temporary","overflow":"wrap"}"#,
            "wrap",
        ),
        (
            "/v1/queues/q",
            r#"{"kind":"temporary","max_deliveries":5000000000}"#,
            "max_deliveries",
        ),
        (
            "/v1/queues/q",
            r#"{"kind":"temporary","ack_timeout_ms":999999999999}"#,
            "ack_timeout_ms",
        ),
        ("/v1/queues/bad!name", r#"{"kind":"temporary"}"#, "bad!name"),
        ("/v1/queues/.hidden", r#"{"kind":"temporary"}"#, "dot"),
    ];
    for (path, body, named) in cases {
        let response = http(&server, "PUT", path, body);
        response.assert_error(400, "INVALID_ARGUMENT");
        let message = response.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(named), "{body}: {message}");
    }
    let list = http(&server, "GET", "/v1/queues", "");
    assert_eq!(list.json(), json!([]), "nothing was created");
}

async fn a_declare_past_the_queue_limit_is_429(kind: ServerKind) {
    // Proves a declare past limits.max_queues is refused with 429 LIMIT_REACHED and a proper
    // reason phrase, while re-declaring the existing queue still works.
    let server = Server::start_with(kind, &["--set", "limits.max_queues=1"]);
    let first = http(&server, "PUT", "/v1/queues/one", r#"{"kind":"temporary"}"#);
    assert_eq!(first.status, 200, "{first:?}");
    let refused = http(&server, "PUT", "/v1/queues/two", r#"{"kind":"temporary"}"#);
    refused.assert_error(429, "LIMIT_REACHED");
    assert_eq!(refused.status_line, "HTTP/1.1 429 Too Many Requests");
    let again = http(&server, "PUT", "/v1/queues/one", r#"{"kind":"temporary"}"#);
    assert_eq!(again.status, 200, "{again:?}");
}

async fn unknown_queues_are_404_with_a_json_error(kind: ServerKind) {
    // Proves show, delete, purge and redrive of a queue that does not exist answer 404
    // QUEUE_NOT_FOUND with a JSON error naming the queue.
    let server = Server::start(kind);
    for (method, path) in [
        ("GET", "/v1/queues/ghost"),
        ("DELETE", "/v1/queues/ghost"),
        ("POST", "/v1/queues/ghost/purge"),
        ("POST", "/v1/queues/ghost/redrive"),
    ] {
        let response = http(&server, method, path, "");
        response.assert_error(404, "QUEUE_NOT_FOUND");
        assert!(
            response.json()["message"]
                .as_str()
                .is_some_and(|message| message.contains("ghost")),
            "{method} {path}: {response:?}"
        );
    }
}

async fn wrong_methods_are_405_and_unknown_paths_404(kind: ServerKind) {
    // Proves a known path with a method it does not serve is 405 METHOD_NOT_ALLOWED and a path
    // that names nothing is 404 NOT_FOUND, both as JSON.
    let server = Server::start(kind);
    http(&server, "PUT", "/v1/queues/q", r#"{"kind":"temporary"}"#);
    for (method, path) in [
        ("PUT", "/metrics"),
        ("DELETE", "/v1/cluster"),
        ("POST", "/v1/queues"),
        ("DELETE", "/v1/queues"),
        ("POST", "/v1/queues/q"),
        ("PATCH", "/v1/queues/q"),
        ("GET", "/v1/queues/q/purge"),
        ("DELETE", "/v1/queues/q/purge"),
        ("GET", "/v1/queues/q/redrive"),
        ("PUT", "/v1/queues/q/redrive"),
    ] {
        let response = http(&server, method, path, "");
        response.assert_error(405, "METHOD_NOT_ALLOWED");
        assert!(
            response.body.contains(method),
            "{method} {path}: {response:?}"
        );
    }
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v2/queues"),
        ("GET", "/v1"),
        ("GET", "/v1/queues/q/messages"),
        ("POST", "/v1/queues/q/purge/now"),
        ("GET", "/metrics/extra"),
    ] {
        http(&server, method, path, "").assert_error(404, "NOT_FOUND");
    }
    assert_eq!(
        http(&server, "GET", "/v1/queues/q", "").status,
        200,
        "the queue was untouched"
    );
}

async fn redrive_moves_dead_letters_back_and_refuses_a_bad_max(kind: ServerKind) {
    // Proves POST .../redrive moves at most `max` dead letters back to their source, that a
    // `max` that is not a number is a 400 that moves nothing, and that a queue whose messages
    // have no source reports them as skipped.
    let server = Server::start(kind);
    let client = connect(&server).await;
    dead_letter(&client, "orders", &["a", "b", "c"]).await;
    let depth = |name: &str| {
        http(&server, "GET", &format!("/v1/queues/{name}"), "").json()["messages"]
            .as_u64()
            .expect("a depth")
    };
    assert_eq!(depth("orders.dlq"), 3);

    http(&server, "POST", "/v1/queues/orders.dlq/redrive?max=two", "")
        .assert_error(400, "INVALID_ARGUMENT");
    assert_eq!(depth("orders.dlq"), 3, "a refused redrive moves nothing");

    let some = http(&server, "POST", "/v1/queues/orders.dlq/redrive?max=2", "");
    assert_eq!(some.status, 200, "{some:?}");
    assert_eq!(some.json(), json!({ "moved": 2, "skipped": 0 }));
    assert_eq!((depth("orders.dlq"), depth("orders")), (1, 2));
    let rest = http(&server, "POST", "/v1/queues/orders.dlq/redrive", "");
    assert_eq!(rest.json(), json!({ "moved": 1, "skipped": 0 }));
    assert_eq!((depth("orders.dlq"), depth("orders")), (0, 3));

    // Messages published straight into a queue carry no source: they stay and are skipped.
    client
        .producer("orders.dlq")
        .send("orphan")
        .await
        .expect("confirmed");
    let orphan = http(&server, "POST", "/v1/queues/orders.dlq/redrive", "");
    assert_eq!(orphan.json(), json!({ "moved": 0, "skipped": 1 }));
    assert_eq!(depth("orders.dlq"), 1);
    client.close().await;
}

async fn garbage_and_oversized_requests_are_refused_with_400_and_413(kind: ServerKind) {
    // Proves bytes that are not HTTP get 400, a body over the 1 MiB limit gets 413 before it
    // is sent, and the listener keeps serving afterwards.
    let server = Server::start(kind);
    let garbage = exchange(&server, b"\x00\x01\x02 not http\r\n\r\n");
    assert_eq!(garbage.status, 400, "{garbage:?}");
    let chunked = exchange(
        &server,
        b"PUT /v1/queues/q HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 400, "{chunked:?}");
    let huge = exchange(
        &server,
        b"PUT /v1/queues/q HTTP/1.1\r\ncontent-length: 2000000\r\n\r\n",
    );
    assert_eq!(huge.status, 413, "{huge:?}");
    assert_eq!(http(&server, "GET", "/healthz", "").status, 200);
    assert_eq!(http(&server, "GET", "/v1/queues", "").json(), json!([]));
}
