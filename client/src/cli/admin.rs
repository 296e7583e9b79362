//! `krest cluster info` and `krest server check`: commands that ask a node's admin HTTP API
//! (`--admin HOST:PORT`) rather than the client protocol, so they work even when the client
//! listener is saturated or refusing connections.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::Globals;

/// Longest a whole admin exchange may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin response read.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// An admin response: status and body.
#[derive(Debug)]
pub struct AdminResponse {
    /// HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// One request to the admin API at `address`.
pub async fn request(address: &str, method: &str, path: &str) -> anyhow::Result<AdminResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot reach the admin API at {address}"))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {address}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut response)
            .await?;
        parse_response(&response)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .with_context(|| {
            format!("the admin API at {address} did not answer within {ADMIN_TIMEOUT:?}")
        })?
}

/// Splits a `connection: close` HTTP/1.1 response into status and body.
fn parse_response(response: &[u8]) -> anyhow::Result<AdminResponse> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the admin API sent an incomplete HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .context("the admin API sent no HTTP status")?;
    Ok(AdminResponse {
        status,
        body: body.to_string(),
    })
}

/// `krest cluster info`: node id, role, term, leader and every node as this one sees it.
pub async fn cluster_info(globals: &Globals) -> anyhow::Result<()> {
    let response = request(&globals.admin, "GET", "/v1/cluster").await?;
    anyhow::ensure!(
        response.status == 200,
        "the admin API answered {}: {}",
        response.status,
        response.body.trim()
    );
    let cluster: Value =
        serde_json::from_str(&response.body).context("the admin API sent invalid JSON")?;
    if globals.json {
        println!("{cluster}");
        return Ok(());
    }
    for key in ["node_id", "role", "term", "leader"] {
        if let Some(value) = cluster.get(key) {
            println!("{key:<8} {}", plain(value));
        }
    }
    for node in cluster["nodes"].as_array().into_iter().flatten() {
        let reachable = match node["reachable"].as_bool() {
            Some(true) => "reachable",
            _ => "unreachable",
        };
        println!(
            "node {:<3} client {:<21} peer {:<21} {reachable}",
            plain(&node["id"]),
            plain(&node["client"]),
            plain(&node["peer"])
        );
    }
    Ok(())
}

/// `krest server check`: healthy (`/healthz`) and ready (`/readyz`); fails otherwise.
pub async fn server_check(globals: &Globals) -> anyhow::Result<()> {
    let healthy = request(&globals.admin, "GET", "/healthz").await;
    let ready = request(&globals.admin, "GET", "/readyz").await;
    let verdict = |outcome: &anyhow::Result<AdminResponse>| match outcome {
        Ok(response) if response.status == 200 => (true, "ok".to_string()),
        Ok(response) => (
            false,
            format!("{} {}", response.status, response.body.trim()),
        ),
        Err(error) => (false, format!("{error:#}")),
    };
    let (is_healthy, health_text) = verdict(&healthy);
    let (is_ready, ready_text) = verdict(&ready);
    if globals.json {
        let report = serde_json::json!({
            "admin": globals.admin,
            "healthy": is_healthy,
            "ready": is_ready,
            "health": health_text,
            "readiness": ready_text,
        });
        println!("{report}");
    } else {
        println!("healthy  {health_text}");
        println!("ready    {ready_text}");
    }
    anyhow::ensure!(
        is_healthy && is_ready,
        "the server at {} is not healthy and ready",
        globals.admin
    );
    Ok(())
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_splits_into_status_and_body() {
        let response = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nx: y\r\n\r\nfenced\n")
            .expect("parses");
        assert_eq!(response.status, 503);
        assert_eq!(response.body, "fenced\n");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n").is_err(),
            "no end of head"
        );
    }
}
