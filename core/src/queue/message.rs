//! A stored message and the key that orders its first deliveries.

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

/// One message of a queue, without its payload: the queue keeps payloads apart (see
/// [`crate::queue::table`]), so a message whose payload lives on disk costs only this entry.
/// Packed to 56 bytes; a test keeps it there.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its position.
    pub sequence: Sequence,
    /// Application headers (`None`: none, the usual case). Boxed on purpose: one pointer here
    /// instead of a `Vec`'s three words in every message.
    #[allow(clippy::box_collection)]
    headers: Option<Box<Vec<Header>>>,
    /// Requested deliver-at (0: none).
    pub deliver_at: UnixMillis,
    /// Wall time it was accepted.
    pub published_at: UnixMillis,
    /// Where its publish record sits in the queue's log (durable queues; 0: none, log indexes
    /// start at 1).
    log_index: u64,
    /// The due time of its order key, once `deliverable`.
    due: UnixMillis,
    /// Payload plus header bytes ([`message_size_bytes`]).
    size_bytes: u32,
    /// How many subscriptions have not acked it yet (`limits.max_subscriptions_per_queue` is
    /// at most 65,535).
    pub pending_subscriptions: u16,
    /// Whether it may be delivered (it has an order key).
    deliverable: bool,
}

impl Message {
    /// A message that is not deliverable yet. `size_bytes` is [`message_size_bytes`] of its
    /// payload and headers (a frame is far below 4 GiB, so it fits 32 bits).
    pub fn new(
        sequence: Sequence,
        headers: Vec<Header>,
        deliver_at: UnixMillis,
        published_at: UnixMillis,
        log_index: Option<LogIndex>,
        size_bytes: u64,
    ) -> Message {
        Message {
            sequence,
            headers: (!headers.is_empty()).then(|| Box::new(headers)),
            deliver_at,
            published_at,
            log_index: log_index.map_or(0, |index| {
                assert!(index.0 > 0, "log indexes start at 1");
                index.0
            }),
            due: UnixMillis(0),
            size_bytes: u32::try_from(size_bytes).expect("a message is smaller than 4 GiB"),
            pending_subscriptions: 0,
            deliverable: false,
        }
    }

    /// Its application headers.
    pub fn headers(&self) -> &[Header] {
        self.headers.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Where its publish record sits in the queue's log (durable queues).
    pub fn log_index(&self) -> Option<LogIndex> {
        (self.log_index > 0).then_some(LogIndex(self.log_index))
    }

    /// Payload plus header bytes: what limits and the payload memory budget count. Known while
    /// the payload is on disk.
    pub fn size_bytes(&self) -> u64 {
        u64::from(self.size_bytes)
    }

    /// Set once the message may be delivered: at once for temporary queues, after fsync for
    /// durable ones. Its value is the first-delivery order.
    pub fn order_key(&self) -> Option<OrderKey> {
        self.deliverable.then_some(OrderKey {
            due: self.due,
            sequence: self.sequence,
        })
    }

    /// Makes the message deliverable in the order of `due` (then sequence), or, with `None`,
    /// not deliverable.
    pub fn set_order_due(&mut self, due: Option<UnixMillis>) {
        self.deliverable = due.is_some();
        self.due = due.unwrap_or_default();
    }
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
    // keep it from growing unnoticed (issue 6 targets 64 bytes of overhead per message whose
    // payload is on disk).
    #[test]
    fn a_message_entry_stays_small() {
        let size = std::mem::size_of::<Message>();
        println!("size_of::<Message>() = {size}");
        assert!(size <= 56, "Message grew to {size} bytes");
        let slot = std::mem::size_of::<Option<Message>>();
        assert!(slot <= 56, "a table slot of a message grew to {slot} bytes");
    }
}
