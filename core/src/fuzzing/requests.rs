//! Well-formed client requests and admin requests built from fuzz bytes.
//!
//! Values come from small domains (a handful of queue names, small sizes and delays, the
//! subscription ids and delivery tags the client was actually given) so that most requests do
//! something, with a few out-of-range values mixed in to reach every refusal.

use bytes::Bytes;
use krest_proto::client::{self as wire, client_frame, DeliveryTag};

use super::byte_source::ByteSource;
use crate::io::AdminHttpRequest;

/// Queue names requests use: a few good ones (one is another's default dead-letter queue) and
/// a few that must be refused.
const QUEUE_NAMES: [&str; 8] = ["q", "p", "d", "q.dlq", "dl", "", ".hidden", "no spaces"];

/// Dead-letter queue settings: the default, a shared one, the queue itself, an invalid name.
const DEAD_LETTER_NAMES: [&str; 4] = ["", "dl", "q", "bad name"];

/// Consumer groups of point subscriptions.
const GROUPS: [&str; 3] = ["", "g1", "g2"];

/// What the driver knows about one client, for requests that name earlier answers.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// Subscription ids from `SubscribeOk`.
    pub subscriptions: Vec<u64>,
    /// Delivery tags received, newest last, with their subscription id.
    pub tags: Vec<(u64, DeliveryTag)>,
}

/// A `Hello`, usually with the right version.
pub(super) fn hello(source: &mut ByteSource) -> wire::Hello {
    wire::Hello {
        protocol_version: match source.chance(16) {
            true => u32::from(source.byte()),
            false => krest_proto::PROTOCOL_VERSION,
        },
        client_name: "fuzz".into(),
        producer_id: source.up_to(3),
    }
}

/// One request body of any kind (Hello included, so a second Hello is tried too).
pub(super) fn client_request(
    source: &mut ByteSource,
    known: &Known,
    sequences: &[u64],
) -> client_frame::Body {
    use client_frame::Body;
    match source.below(16) {
        0 => Body::Hello(hello(source)),
        1 | 2 => Body::DeclareQueue(wire::DeclareQueue {
            name: queue_name(source),
            settings: source.chance(224).then(|| settings(source)),
        }),
        3 => Body::DeleteQueue(wire::DeleteQueue {
            name: queue_name(source),
        }),
        4 => Body::PurgeQueue(wire::PurgeQueue {
            name: queue_name(source),
        }),
        5 => Body::ListQueues(wire::ListQueues {}),
        6 => Body::GetQueue(wire::GetQueue {
            name: queue_name(source),
        }),
        7 | 8 => Body::Publish(publish(source)),
        9 => Body::Subscribe(subscribe(source)),
        10 => Body::Unsubscribe(wire::Unsubscribe {
            subscription_id: subscription_id(source, known),
        }),
        11 => Body::Fetch(wire::Fetch {
            subscription_id: subscription_id(source, known),
            max_messages: source.up_to(6) as u32,
            wait_ms: pick_ms(source, 6_000),
        }),
        12 | 13 => Body::Settle(settle(source, known)),
        14 => Body::Credit(wire::Credit {
            subscription_id: subscription_id(source, known),
            messages: match source.chance(8) {
                true => u32::MAX,
                false => source.up_to(8) as u32,
            },
        }),
        _ => match source.below(3) {
            0 => Body::CancelDelayed(wire::CancelDelayed {
                queue: queue_name(source),
                sequence: source.pick(sequences).copied().unwrap_or(1),
            }),
            1 => Body::RedriveQueue(wire::RedriveQueue {
                name: queue_name(source),
                max_messages: source.up_to(4),
            }),
            _ => Body::Ping(wire::Ping {}),
        },
    }
}

fn queue_name(source: &mut ByteSource) -> String {
    // Mostly the good names; the last three are refused.
    let index = match source.chance(232) {
        true => source.below(5),
        false => source.below(QUEUE_NAMES.len()),
    };
    QUEUE_NAMES[index].to_string()
}

fn settings(source: &mut ByteSource) -> wire::QueueSettings {
    wire::QueueSettings {
        // 0 unspecified, 1..=3 the kinds, 4 unknown.
        kind: source.up_to(4) as i32,
        max_messages: source.up_to(6),
        max_bytes: match source.chance(64) {
            true => source.up_to(300),
            false => 0,
        },
        overflow: source.up_to(3) as i32,
        ack_timeout_ms: match source.chance(16) {
            true => source.u64(),
            false => source.up_to(3_000),
        },
        max_deliveries: source.up_to(3) as u32,
        dead_letter_queue: source
            .pick(&DEAD_LETTER_NAMES)
            .copied()
            .unwrap_or("")
            .into(),
    }
}

fn publish(source: &mut ByteSource) -> wire::Publish {
    let count = source.up_to(3) as usize;
    let messages = (0..count)
        .map(|_| {
            let payload_bytes = match source.chance(16) {
                true => 70,
                false => source.up_to(24) as usize,
            };
            let payload = Bytes::copy_from_slice(&[source.byte(); 70][..payload_bytes]);
            let headers = (0..source.up_to(2))
                .map(|number| wire::Header {
                    key: format!("h{number}"),
                    value: "v".repeat(source.up_to(12) as usize),
                })
                .collect();
            let (deliver_at_unix_ms, delay_ms) = match source.below(8) {
                0 => (source.u64(), 0),
                1 => (0, pick_ms(source, 5_000)),
                2 => (0, source.u64()),
                3 => (1, 1),
                _ => (0, 0),
            };
            wire::OutgoingMessage {
                payload,
                headers,
                deliver_at_unix_ms,
                delay_ms,
                producer_sequence: source.up_to(4),
            }
        })
        .collect();
    wire::Publish {
        queue: queue_name(source),
        messages,
    }
}

fn subscribe(source: &mut ByteSource) -> wire::Subscribe {
    wire::Subscribe {
        queue: queue_name(source),
        // 0 unspecified, 1 point, 2 broadcast, 3 unknown.
        mode: source.up_to(3) as i32,
        group: source.pick(&GROUPS).copied().unwrap_or("").into(),
        ack_mode: source.up_to(3) as i32,
        prefetch: match source.chance(16) {
            true => 40,
            false => source.up_to(6) as u32,
        },
        pull: source.chance(80),
        create_if_missing: source.chance(64).then(|| settings(source)),
    }
}

fn settle(source: &mut ByteSource, known: &Known) -> wire::Settle {
    let subscription_id = subscription_id(source, known);
    let held: Vec<DeliveryTag> = known
        .tags
        .iter()
        .filter(|(id, _)| *id == subscription_id)
        .map(|(_, tag)| *tag)
        .collect();
    let tags = (0..1 + source.up_to(2))
        .map(|_| match source.pick(&held) {
            Some(tag) if source.chance(240) => *tag,
            _ => DeliveryTag {
                sequence: source.up_to(8),
                delivery_count: source.up_to(3) as u32,
            },
        })
        .collect();
    wire::Settle {
        subscription_id,
        // 0 unspecified, 1 ack, 2 nack, 3 reject, 4 extend, 5 unknown.
        action: source.up_to(5) as i32,
        tags,
        delay_ms: pick_ms(source, 3_000),
        extend_ms: match source.chance(16) {
            true => u64::MAX,
            false => pick_ms(source, 3_000),
        },
    }
}

fn subscription_id(source: &mut ByteSource, known: &Known) -> u64 {
    match source.pick(&known.subscriptions) {
        Some(id) if source.chance(240) => *id,
        _ => source.up_to(8),
    }
}

/// Zero half of the time, otherwise up to `max` milliseconds.
fn pick_ms(source: &mut ByteSource, max: u64) -> u64 {
    match source.chance(128) {
        true => 0,
        false => source.up_to(max),
    }
}

/// An admin request: every route, with and without the right method, and odd bodies.
pub(super) fn admin_request(source: &mut ByteSource) -> AdminHttpRequest {
    const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];
    let method = source.pick(&METHODS).copied().unwrap_or("GET").to_string();
    let name = queue_name(source);
    let mut query = String::new();
    let path = match source.below(10) {
        0 => "/healthz".to_string(),
        1 => "/readyz".to_string(),
        2 => "/metrics".to_string(),
        3 => "/v1/cluster".to_string(),
        4 => "/v1/queues".to_string(),
        5 | 6 => format!("/v1/queues/{name}"),
        7 => format!("/v1/queues/{name}/purge"),
        8 => {
            query = format!("max={}", source.up_to(3));
            format!("/v1/queues/{name}/redrive")
        }
        _ => "/v1/nothing/here".to_string(),
    };
    let body = match source.below(6) {
        0 => Vec::new(),
        1 => br#"{"kind":"temporary"}"#.to_vec(),
        2 => br#"{"kind":"persistent","max_messages":3,"overflow":"drop-oldest"}"#.to_vec(),
        3 => br#"{"kind":"delay","ack_timeout_ms":500,"max_deliveries":2}"#.to_vec(),
        4 => br#"{"kind":"sideways","max_messages":-1}"#.to_vec(),
        _ => {
            let length = source.up_to(24) as usize;
            source.take(length).to_vec()
        }
    };
    AdminHttpRequest {
        method,
        path,
        query,
        body,
    }
}
