//! A stored message and the key that orders its first deliveries.

use bytes::Bytes;
use krest_proto::client::Header;

use crate::ids::{LogIndex, Sequence};
use crate::time::UnixMillis;

/// The order of first deliveries: deliver-at (0 outside delay queues), then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct OrderKey {
    /// When the message is due (0: always).
    pub due: UnixMillis,
    /// Tie-breaker.
    pub sequence: Sequence,
}

/// One message of a queue.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its position.
    pub sequence: Sequence,
    /// The body, shared without copying; `None` while it lives only on disk (a durable
    /// message beyond `storage.payload_memory_bytes`: it is read back before delivery).
    pub payload: Option<Bytes>,
    /// Application headers.
    pub headers: Vec<Header>,
    /// Requested deliver-at (0: none).
    pub deliver_at: UnixMillis,
    /// Wall time it was accepted.
    pub published_at: UnixMillis,
    /// Where its publish record sits in the queue's log (durable queues).
    pub log_index: Option<LogIndex>,
    /// Set once the message may be delivered: at once for temporary queues, after fsync for
    /// durable ones. Its value is the first-delivery order.
    pub order_key: Option<OrderKey>,
    /// How many subscriptions have not acked it yet.
    pub pending_subscriptions: u32,
    /// Payload plus header bytes ([`message_size_bytes`]): what limits and the payload memory
    /// budget count. Kept while the payload is on disk.
    pub size_bytes: u64,
}

/// Payload plus header bytes of a message: what limits count.
pub fn message_size_bytes(payload: &[u8], headers: &[Header]) -> u64 {
    let header_bytes: usize = headers
        .iter()
        .map(|header| header.key.len() + header.value.len())
        .sum();
    (payload.len() + header_bytes) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every pending message costs at least one `Message` of memory, payload on disk or not:
    // keep it from growing unnoticed (issue 6 targets 64 bytes of overhead per message).
    #[test]
    fn a_message_entry_stays_small() {
        let size = std::mem::size_of::<Message>();
        println!("size_of::<Message>() = {size}");
        assert!(size <= 136, "Message grew to {size} bytes");
    }
}
