//! After a crash: dead letters whose copy is durable but whose source never let them go.
//!
//! A dead letter is copied to the dead-letter queue first, and its source lets it go only once
//! the copy is durable, so a crash never loses it. A crash between the two leaves the message in
//! both places; without this step the source would deliver it again and dead-letter it a second
//! time (the simulator found this: seed 1500). At recovery, every copy still in a dead-letter
//! queue's log, acked or not, names its source queue, subscription, sequence and publish time.
//! When the source still holds that very message (same publish time and, if its payload is in
//! memory, the same payload, so not one of a queue re-created under the same name) for that
//! subscription, the subscription is done with it, as the interrupted move would have recorded;
//! the ack is logged like any other. A copy keeps a digest of its payload, not the payload, so
//! a dead-letter queue's backlog is not held in memory until the end of recovery.

use krest_proto::client::Header;

use super::publish::{
    HEADER_DEAD_LETTER_PUBLISHED_AT, HEADER_DEAD_LETTER_SEQUENCE, HEADER_DEAD_LETTER_SOURCE,
    HEADER_DEAD_LETTER_SUBSCRIPTION,
};
use super::Node;
use crate::ids::Sequence;
use crate::time::UnixMillis;

/// A dead-letter copy found in a log at recovery: where it came from.
#[derive(Debug, Clone)]
pub(super) struct DeadLetterCopy {
    source: String,
    subscription: String,
    sequence: Sequence,
    published_at: UnixMillis,
    payload_digest: u64,
}

/// FNV-1a, 64 bits: a digest to tell payloads apart, not a defence against forgery.
pub(crate) fn payload_digest(payload: &[u8]) -> u64 {
    payload.iter().fold(0xcbf2_9ce4_8422_2325, |digest, byte| {
        (digest ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl DeadLetterCopy {
    /// The origin a stored message names, if it is a dead-letter copy that names all of it.
    pub(super) fn from_stored(headers: &[Header], payload: &[u8]) -> Option<DeadLetterCopy> {
        let header = |key: &str| {
            headers
                .iter()
                .find(|header| header.key == key)
                .map(|header| header.value.as_str())
        };
        Some(DeadLetterCopy {
            source: header(HEADER_DEAD_LETTER_SOURCE)?.to_string(),
            subscription: header(HEADER_DEAD_LETTER_SUBSCRIPTION)?.to_string(),
            sequence: Sequence(header(HEADER_DEAD_LETTER_SEQUENCE)?.parse().ok()?),
            published_at: UnixMillis(header(HEADER_DEAD_LETTER_PUBLISHED_AT)?.parse().ok()?),
            payload_digest: payload_digest(payload),
        })
    }
}

impl Node {
    /// Lets the sources of `copies` go of the messages they still hold (see the module).
    pub(super) fn settle_moved_dead_letters(&mut self, copies: Vec<DeadLetterCopy>) {
        for copy in copies {
            let Some(&source) = self.queue_names.get(&copy.source) else {
                continue;
            };
            self.with_queue(source, |queue, effects| {
                queue.settle_moved_dead_letter(
                    &copy.subscription,
                    copy.sequence,
                    copy.published_at,
                    copy.payload_digest,
                    effects,
                );
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use krest_proto::client::{self as wire, QueueKind as WireKind};

    use crate::harness::{bodies, kind, message, tag, Harness};
    use crate::io::LogId;

    // A crash after the dead-letter copy was synced but before the source logged that it let
    // the message go: after the restart the source does not deliver it again, and the
    // dead-letter queue holds it once.
    #[test]
    fn a_dead_letter_whose_copy_is_durable_is_not_delivered_again_after_a_crash() {
        let mut harness = Harness::default_config();
        let conn = harness.connect(0);
        harness.declare(conn, "q", kind(WireKind::Persistent));
        harness.declare(conn, "q.dlq", kind(WireKind::Persistent));
        let subscribe = wire::Subscribe {
            queue: "q".into(),
            group: "workers".into(),
            prefetch: 10,
            ..Default::default()
        };
        let subscription = harness.subscribe(conn, subscribe.clone());
        harness.publish(conn, "q", vec![message("poison"), message("fine")]);
        let delivered = harness.take_pushed(conn);
        assert_eq!(bodies(&delivered), ["poison", "fine"]);
        let dead_letter_log = LogId::Queue(harness.node().queue("q.dlq").unwrap().id);
        harness.sync_automatically = false;
        harness.send(
            conn,
            wire::client_frame::Body::Settle(wire::Settle {
                subscription_id: subscription,
                action: wire::SettleAction::Reject as i32,
                tags: vec![tag(&delivered[0].1)],
                ..Default::default()
            }),
        );
        harness.complete_syncs_of(&[dead_letter_log, LogId::Metadata]);
        assert_eq!(harness.node().queue("q.dlq").unwrap().messages.len(), 1);

        harness.restart();
        let conn = harness.connect(0);
        harness.subscribe(conn, subscribe);
        assert_eq!(
            bodies(&harness.take_pushed(conn)),
            ["fine"],
            "the dead letter stays moved"
        );
        assert_eq!(harness.node().queue("q.dlq").unwrap().messages.len(), 1);
        harness.node().check_invariants();
    }
}
