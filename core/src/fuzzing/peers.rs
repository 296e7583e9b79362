//! The `peer_frames` target: arbitrary peer frames and sequences of well-formed-looking Raft
//! messages from up to four peers, driven into a node through the router, with time passing.
//!
//! After every input: the node's invariants hold; every peer frame is counted in and, as no
//! log replicates on a single node yet, counted dropped; the node sends nothing to any peer or
//! connection; and a Raft message that the wire decoding accepts encodes back to itself.
//!
//! Layout of the input: eight bytes of seed, then steps; each step starts with a byte choosing
//! (modulo 8): 0-2 raw bytes as a frame, 3-6 a Raft message built from the following bytes, 7
//! time passing.

use bytes::Bytes;
use krest_proto::peer::{self as wire, peer_frame, raft_message, PeerFrame};
use prost::Message as _;

use super::byte_source::ByteSource;
use crate::config::Config;
use crate::ids::NodeId;
use crate::io::{Input, Recovered};
use crate::node::Node;
use crate::raft;
use crate::router::{Event, Mailbox, MailboxRouter};
use crate::time::{Instant, Millis, Now, UnixMillis};

/// Inputs per run, whatever the length of the fuzz input.
const STEPS_MAX: usize = 1_000;

/// Drives a node with the peer frames `data` encodes and checks it after every one.
pub fn peer_frames(data: &[u8]) {
    let mut source = ByteSource::new(data);
    let seed = source.u64();
    let mut now = Now {
        monotonic: Instant(1_000),
        wall: UnixMillis(1_700_000_000_000),
    };
    let node = Node::new(Config::default(), Recovered::default(), seed, now)
        .expect("a node starts from nothing");
    let mailbox = Mailbox::default();
    let mut router = MailboxRouter::new(node);
    let _ = router.take_storage_requests();
    for peer in 1..=4 {
        let outbox = mailbox.peer_outbox(NodeId(peer));
        router.on_event(
            now,
            Event::PeerLinked {
                peer: NodeId(peer),
                outbox,
            },
        );
    }
    let mut frames = 0;
    for _ in 0..STEPS_MAX {
        if source.is_empty() {
            break;
        }
        let peer = NodeId(1 + source.below(4) as u64);
        let body = match source.below(8) {
            0..=2 => {
                let length = source.up_to(200) as usize;
                Bytes::copy_from_slice(source.take(length))
            }
            3..=6 => {
                let message = raft_message(&mut source);
                check_round_trip(&message);
                let body = Some(peer_frame::Body::Raft(message));
                Bytes::from(PeerFrame { body }.encode_to_vec())
            }
            _ => {
                now.monotonic = now.monotonic + Millis(source.up_to(5_000));
                now.wall = now.wall + Millis(source.up_to(5_000));
                router.on_timer(now);
                continue;
            }
        };
        frames += 1;
        router.on_event(now, Event::Input(Input::PeerFrame { peer, body }));
        let node = router.node();
        node.check_invariants();
        let counters = node.counters();
        assert_eq!(
            counters.peer_frames_in, frames,
            "every peer frame is counted"
        );
        assert_eq!(
            counters.peer_frames_dropped, frames,
            "nothing replicates here yet"
        );
        let mail = mailbox.take();
        assert!(
            mail.to_connections.is_empty(),
            "peer frames reach no client"
        );
        assert!(
            mail.to_peers.is_empty(),
            "a single node says nothing to peers"
        );
        assert_eq!(router.unroutable(), 0);
    }
    let _ = router.take_storage_requests();
}

/// A Raft message whose fields come from the fuzz bytes, mostly small numbers so that some
/// pass the checks.
fn raft_message(source: &mut ByteSource) -> wire::RaftMessage {
    let small = |source: &mut ByteSource| match source.chance(16) {
        true => source.u64(),
        false => source.up_to(8),
    };
    let kind = match source.below(5) {
        0 => Some(raft_message::Kind::RequestVote(wire::RequestVote {
            last_log_index: small(source),
            last_log_term: small(source),
            pre_vote: source.chance(128),
        })),
        1 => Some(raft_message::Kind::VoteResponse(wire::VoteResponse {
            granted: source.chance(128),
            pre_vote: source.chance(128),
        })),
        2 => {
            let count = source.up_to(4) as usize;
            let prev_log_index = small(source);
            let prev_log_term = small(source);
            let leader_commit = small(source);
            let entries = (0..count)
                .map(|_| wire::Entry {
                    term: small(source),
                    body: Bytes::copy_from_slice(source.take(8)),
                })
                .collect();
            Some(raft_message::Kind::AppendEntries(wire::AppendEntries {
                prev_log_index,
                prev_log_term,
                leader_commit,
                entries,
            }))
        }
        3 => Some(raft_message::Kind::AppendResponse(wire::AppendResponse {
            success: source.chance(128),
            match_index: small(source),
        })),
        _ => None,
    };
    wire::RaftMessage {
        group: small(source),
        from: small(source),
        to: small(source),
        term: small(source),
        kind,
    }
}

/// What the decoding accepts, the encoding gives back unchanged.
fn check_round_trip(message: &wire::RaftMessage) {
    if let Ok((log, envelope)) = raft::wire::decode(message.clone()) {
        assert_eq!(&raft::wire::encode(log, &envelope), message, "{envelope:?}");
    }
}
