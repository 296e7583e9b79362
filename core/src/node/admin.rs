//! The admin HTTP API, routed here so every runtime serves the same thing: health, readiness,
//! Prometheus metrics, cluster and queue resources. Bodies are JSON.

use std::fmt::Write as _;

use krest_proto::client::{ErrorCode, QueueInfo};
use serde_json::{json, Value};

use super::persistence::WaiterAction;
use super::session::RequestError;
use super::Node;
use crate::ids::AdminRequestId;
use crate::io::{AdminHttpRequest, Command};
use crate::queue::QueueKind;

const JSON: &str = "application/json";

impl Node {
    pub(super) fn on_admin_request(&mut self, request: AdminRequestId, http: AdminHttpRequest) {
        let segments: Vec<&str> = http.path.trim_matches('/').split('/').collect();
        let result = match (http.method.as_str(), segments.as_slice()) {
            ("GET", ["healthz"]) => {
                self.respond(request, 200, "text/plain; charset=utf-8", b"ok\n".to_vec());
                Ok(())
            }
            ("GET", ["readyz"]) => {
                let no_leader = self
                    .cluster_status()
                    .is_some_and(|status| status.leader.is_none())
                    .then(|| "no metadata leader is known yet".to_string());
                match self.fenced.clone().or(no_leader) {
                    None => self.respond(
                        request,
                        200,
                        "text/plain; charset=utf-8",
                        b"ready\n".to_vec(),
                    ),
                    Some(reason) => self.respond(
                        request,
                        503,
                        "text/plain; charset=utf-8",
                        format!("{reason}\n").into_bytes(),
                    ),
                }
                Ok(())
            }
            ("GET", ["metrics"]) => {
                let text = self.metrics_text();
                self.respond(
                    request,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.into_bytes(),
                );
                Ok(())
            }
            ("GET", ["v1", "cluster"]) => {
                let body = self.cluster_json();
                self.respond_json(request, 200, &body);
                Ok(())
            }
            ("GET", ["v1", "queues"]) => {
                let list: Vec<Value> = self
                    .list_queue_infos()
                    .queues
                    .iter()
                    .map(queue_info_json)
                    .collect();
                self.respond_json(request, 200, &Value::Array(list));
                Ok(())
            }
            ("GET", ["v1", "queues", name]) => {
                // A queue served by another node: what the catalog says (where, not how full).
                let elsewhere = self
                    .all_queue_infos()
                    .into_iter()
                    .find(|info| info.name == *name && !info.served_here);
                match elsewhere {
                    Some(info) => {
                        self.respond_json(request, 200, &queue_info_json(&info));
                        Ok(())
                    }
                    None => self.queue_info_by_name(name).map(|info| {
                        self.respond_json(request, 200, &queue_info_json(&info));
                    }),
                }
            }
            ("PUT", ["v1", "queues", name]) => self.admin_declare(request, name, &http.body),
            ("DELETE", ["v1", "queues", name]) if self.is_clustered() => {
                let then = super::cluster::CatalogThen::Admin {
                    request,
                    name: name.to_string(),
                };
                match self.cluster_delete(name, then) {
                    Ok(true) => Ok(()),
                    Ok(false) => self.delete_queue(name).map(|need| {
                        self.admin_when_durable(request, need, 200, json!({ "deleted": name }));
                    }),
                    Err(error) => Err(error),
                }
            }
            ("DELETE", ["v1", "queues", name]) => self.delete_queue(name).map(|need| {
                self.admin_when_durable(request, need, 200, json!({ "deleted": name }));
            }),
            ("POST", ["v1", "queues", name, "redrive"]) => query_number(&http.query, "max")
                .and_then(|max_messages| {
                    let reply = super::redrive::RedriveReply::Admin { request };
                    self.start_redrive(reply, name, max_messages.unwrap_or(0))
                }),
            ("POST", ["v1", "queues", name, "purge"]) => {
                self.purge_queue(name).map(|(removed, need)| {
                    self.admin_when_durable(request, need, 200, json!({ "purged": removed }));
                })
            }
            _ if known_path(&segments) => {
                let message = format!("method {} is not allowed on {}", http.method, http.path);
                self.respond_json(
                    request,
                    405,
                    &json!({"code": "METHOD_NOT_ALLOWED", "message": message}),
                );
                Ok(())
            }
            _ => {
                self.respond_json(request, 404, &json!({"code": "NOT_FOUND", "message": format!("no resource at {}", http.path)}));
                Ok(())
            }
        };
        if let Err((code, message)) = result {
            self.admin_error(request, code, message);
        }
    }

    fn admin_declare(
        &mut self,
        request: AdminRequestId,
        name: &str,
        body: &[u8],
    ) -> Result<(), RequestError> {
        let value: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|error| {
                (
                    ErrorCode::InvalidArgument,
                    format!("body is not JSON: {error}"),
                )
            })?
        };
        let settings = settings_from_json(&value)?;
        if self.is_clustered() {
            let then = super::cluster::CatalogThen::Admin {
                request,
                name: name.to_string(),
            };
            match self.cluster_declare(name, &settings, None, then)? {
                super::cluster::ClusterDeclare::Waiting => return Ok(()), // answered once applied
                super::cluster::ClusterDeclare::Exists => {
                    let body = match self.queue_names.get(name) {
                        Some(id) => queue_info_json(&self.queue_info(*id)),
                        None => json!({ "name": name }),
                    };
                    self.respond_json(request, 200, &body);
                    return Ok(());
                }
                super::cluster::ClusterDeclare::Here => {}
            }
        }
        let (id, need) = self.declare_queue(name, &settings, None, true)?;
        let info = queue_info_json(&self.queue_info(id));
        self.admin_when_durable(request, need, 200, info);
        Ok(())
    }

    fn admin_when_durable(
        &mut self,
        request: AdminRequestId,
        need: Option<(crate::io::LogId, crate::ids::LogIndex)>,
        status: u16,
        body: Value,
    ) {
        let body = serde_json::to_vec_pretty(&body).expect("JSON values serialise");
        self.when_durable(
            need.as_slice(),
            WaiterAction::Admin {
                request,
                status,
                body,
            },
        );
    }

    fn respond(
        &mut self,
        request: AdminRequestId,
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    ) {
        self.commands.push_back(Command::AdminResponse {
            request,
            status,
            content_type,
            body,
        });
    }

    pub(super) fn respond_json(&mut self, request: AdminRequestId, status: u16, body: &Value) {
        let mut bytes = serde_json::to_vec_pretty(body).expect("JSON values serialise");
        bytes.push(b'\n');
        self.respond(request, status, JSON, bytes);
    }

    /// Answers an admin request whose result became durable.
    pub(super) fn admin_respond(
        &mut self,
        request: AdminRequestId,
        status: u16,
        mut body: Vec<u8>,
    ) {
        body.push(b'\n');
        self.respond(request, status, JSON, body);
    }

    /// Answers an admin request with an error.
    pub(super) fn admin_error(
        &mut self,
        request: AdminRequestId,
        code: ErrorCode,
        message: String,
    ) {
        let status = match code {
            ErrorCode::QueueNotFound
            | ErrorCode::MessageNotFound
            | ErrorCode::SubscriptionNotFound => 404,
            ErrorCode::QueueKindConflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::LimitReached | ErrorCode::QueueFull => 429,
            _ => 400,
        };
        self.respond_json(
            request,
            status,
            &json!({ "code": code.as_str_name(), "message": message }),
        );
    }

    /// Prometheus text exposition of node and queue metrics.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let counters = &self.counters;
        let node_metrics: [(&str, &str, &str, u64); 15] = [
            (
                "krest_waiting_for_sync",
                "gauge",
                "Replies waiting for storage to sync.",
                self.waiters.len() as u64,
            ),
            (
                "krest_idempotency_entries",
                "gauge",
                "Remembered (producer, sequence) pairs.",
                self.idempotency.len() as u64,
            ),
            (
                "krest_connections",
                "gauge",
                "Client connections open.",
                self.connections.len() as u64,
            ),
            (
                "krest_connections_opened_total",
                "counter",
                "Client connections accepted.",
                counters.connections_opened,
            ),
            (
                "krest_malformed_frames_total",
                "counter",
                "Frames that could not be decoded.",
                counters.malformed_frames,
            ),
            (
                "krest_request_errors_total",
                "counter",
                "Requests answered with an error.",
                counters.request_errors,
            ),
            (
                "krest_peer_frames_in_total",
                "counter",
                "Frames received from peer nodes.",
                counters.peer_frames_in,
            ),
            (
                "krest_peer_frames_malformed_total",
                "counter",
                "Peer frames that do not decode or that no correct peer sends.",
                counters.peer_frames_malformed,
            ),
            (
                "krest_peer_frames_dropped_total",
                "counter",
                "Peer frames dropped: malformed, impossible, or unexpected.",
                counters.peer_frames_dropped,
            ),
            (
                "krest_storage_syncs_total",
                "counter",
                "Storage syncs completed.",
                counters.syncs_completed,
            ),
            (
                "krest_fenced",
                "gauge",
                "1 if the node is fenced after a storage failure.",
                u64::from(self.fenced.is_some()),
            ),
            (
                "krest_payload_memory_bytes",
                "gauge",
                "Payload and header bytes of durable messages held in memory.",
                self.payload_resident_bytes(),
            ),
            (
                "krest_payload_reads_total",
                "counter",
                "Reads of payloads back from disk (storage.payload_memory_bytes).",
                self.payload_reads.reads,
            ),
            (
                "krest_payloads_read_total",
                "counter",
                "Payloads read back from disk.",
                self.payload_reads.payloads,
            ),
            (
                "krest_payload_read_bytes_total",
                "counter",
                "Bytes of the payloads read back from disk.",
                self.payload_reads.bytes,
            ),
        ];
        for (name, kind, help, value) in node_metrics.into_iter().chain(self.cluster_metrics()) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        self.storage_metrics
            .write_text(&mut out, |log| self.logs.contains_key(log));
        type Field = fn(&crate::queue::Queue, crate::time::Now) -> u64;
        let queue_metrics: [(&str, &str, &str, Field); 13] = [
            (
                "krest_queue_published_total",
                "counter",
                "Messages accepted.",
                |q, _| q.counters.published,
            ),
            (
                "krest_queue_delivered_total",
                "counter",
                "Deliveries, first and repeated.",
                |q, _| q.counters.delivered,
            ),
            (
                "krest_queue_redelivered_total",
                "counter",
                "Deliveries after the first.",
                |q, _| q.counters.redelivered,
            ),
            ("krest_queue_acked_total", "counter", "Acks.", |q, _| {
                q.counters.acked
            }),
            ("krest_queue_nacked_total", "counter", "Nacks.", |q, _| {
                q.counters.nacked
            }),
            (
                "krest_queue_expired_total",
                "counter",
                "Leases that ran out.",
                |q, _| q.counters.expired,
            ),
            (
                "krest_queue_dead_lettered_total",
                "counter",
                "Messages moved to the dead-letter queue.",
                |q, _| q.counters.dead_lettered,
            ),
            (
                "krest_queue_dropped_total",
                "counter",
                "Messages dropped by the drop-oldest policy.",
                |q, _| q.counters.dropped,
            ),
            ("krest_queue_depth", "gauge", "Messages stored.", |q, _| {
                q.messages.len() as u64
            }),
            (
                "krest_queue_bytes",
                "gauge",
                "Bytes stored (payloads and headers).",
                |q, _| q.bytes,
            ),
            (
                "krest_queue_in_flight",
                "gauge",
                "Deliveries waiting for an ack.",
                |q, _| q.in_flight_count(),
            ),
            (
                "krest_queue_delayed",
                "gauge",
                "Messages not yet due.",
                |q, now| q.delayed_count(now),
            ),
            (
                "krest_queue_subscriptions",
                "gauge",
                "Subscriptions.",
                |q, _| q.subscriptions.len() as u64,
            ),
        ];
        for (name, kind, help, field) in queue_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for queue in self.queues.values() {
                let _ = writeln!(
                    out,
                    "{name}{{queue=\"{}\"}} {}",
                    queue.name,
                    field(queue, self.now)
                );
            }
        }
        out
    }
}

fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["healthz"]
            | ["readyz"]
            | ["metrics"]
            | ["v1", "cluster"]
            | ["v1", "queues"]
            | ["v1", "queues", _]
            | ["v1", "queues", _, "purge"]
            | ["v1", "queues", _, "redrive"]
    )
}

/// A queue description as JSON (the admin API and `krest --json` use the same field names).
pub fn queue_info_json(info: &QueueInfo) -> Value {
    let settings = info.settings.clone().unwrap_or_default();
    let kind = QueueKind::from_wire(settings.kind)
        .map(QueueKind::as_str)
        .unwrap_or("unknown");
    let overflow = match settings.overflow {
        2 => "drop-oldest",
        _ => "reject-publish",
    };
    // A queue served by another node has no counts here.
    let count = |value: u64| match info.served_here {
        true => json!(value),
        false => Value::Null,
    };
    json!({
        "name": info.name,
        "kind": kind,
        "leader": info.leader,
        "replicas": info.replicas,
        "messages": count(info.messages),
        "bytes": count(info.bytes),
        "in_flight": count(info.in_flight),
        "delayed": count(info.delayed),
        "next_sequence": count(info.next_sequence),
        "settings": {
            "kind": kind,
            "max_messages": settings.max_messages,
            "max_bytes": settings.max_bytes,
            "overflow": overflow,
            "ack_timeout_ms": settings.ack_timeout_ms,
            "max_deliveries": settings.max_deliveries,
            "dead_letter_queue": settings.dead_letter_queue,
        },
        "subscriptions": info.subscriptions.iter().map(|subscription| json!({
            "name": subscription.name,
            "mode": if subscription.broadcast { "broadcast" } else { "point" },
            "broadcast": subscription.broadcast,
            "consumers": subscription.consumers,
            "pending": subscription.pending,
            "in_flight": subscription.in_flight,
        })).collect::<Vec<_>>(),
    })
}

/// Queue settings from an admin JSON body (`kind`, `max_messages`, `max_bytes`, `overflow`,
/// `ack_timeout_ms`, `max_deliveries`, `dead_letter_queue`); unknown keys are errors.
fn settings_from_json(value: &Value) -> Result<krest_proto::client::QueueSettings, RequestError> {
    let object = value.as_object().ok_or_else(|| {
        (
            ErrorCode::InvalidArgument,
            "body must be a JSON object".to_string(),
        )
    })?;
    let mut settings = krest_proto::client::QueueSettings::default();
    for (key, field) in object {
        let number = || {
            field.as_u64().ok_or_else(|| {
                (
                    ErrorCode::InvalidArgument,
                    format!("'{key}' must be a whole number"),
                )
            })
        };
        let text = || {
            field.as_str().ok_or_else(|| {
                (
                    ErrorCode::InvalidArgument,
                    format!("'{key}' must be a string"),
                )
            })
        };
        match key.as_str() {
            "kind" => {
                settings.kind = match text()? {
                    "temporary" => QueueKind::Temporary,
                    "persistent" => QueueKind::Persistent,
                    "delay" => QueueKind::Delay,
                    other => {
                        return Err((
                            ErrorCode::InvalidArgument,
                            format!("unknown kind '{other}'"),
                        ))
                    }
                }
                .to_wire() as i32
            }
            "max_messages" => settings.max_messages = number()?,
            "max_bytes" => settings.max_bytes = number()?,
            "ack_timeout_ms" => settings.ack_timeout_ms = number()?,
            "max_deliveries" => {
                settings.max_deliveries = u32::try_from(number()?).map_err(|_| {
                    (
                        ErrorCode::InvalidArgument,
                        "'max_deliveries' is too large".to_string(),
                    )
                })?
            }
            "overflow" => {
                settings.overflow = match text()? {
                    "reject-publish" => 1,
                    "drop-oldest" => 2,
                    other => {
                        return Err((
                            ErrorCode::InvalidArgument,
                            format!("unknown overflow '{other}'"),
                        ))
                    }
                }
            }
            "dead_letter_queue" => settings.dead_letter_queue = text()?.to_string(),
            other => {
                return Err((
                    ErrorCode::InvalidArgument,
                    format!("unknown setting '{other}'"),
                ))
            }
        }
    }
    Ok(settings)
}

/// The number `key=N` in a query string: `None` when absent, an error when it is not a whole
/// number (a typo must not silently mean "no limit").
fn query_number(query: &str, key: &str) -> Result<Option<u64>, RequestError> {
    let Some((_, value)) = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        (
            ErrorCode::InvalidArgument,
            format!("query parameter '{key}' must be a whole number, not '{value}'"),
        )
    })
}
