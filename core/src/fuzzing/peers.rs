//! The `peer_frames` target: arbitrary peer frames and sequences of well-formed-looking Raft
//! messages from up to four peers, driven into a node through the router, with time passing.
//!
//! The node is a single node or (by the seed's lowest bit) node 1 of a cluster of three, whose
//! metadata group takes the messages of peers 2 and 3 (peer 4 is not a member); its storage
//! completes at once.
//!
//! After every input: the node's invariants hold; every peer frame is counted in; a single node
//! counts every one dropped and sends nothing to peers; a clustered node sends only to its two
//! peers; nothing reaches a client; and a Raft message that the wire decoding accepts encodes
//! back to itself.
//!
//! Layout of the input: eight bytes of seed, then steps; each step starts with a byte choosing
//! (modulo 8): 0-2 raw bytes as a frame, 3-6 a Raft message built from the following bytes, 7
//! time passing.

use bytes::Bytes;
use krest_proto::peer::{self as wire, peer_frame, raft_message, PeerFrame};
use prost::Message as _;

use super::byte_source::ByteSource;
use crate::config::{ClusterNode, Config};
use crate::ids::NodeId;
use crate::io::{Input, Recovered};
use crate::memory_storage::MemoryStorage;
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
    let clustered = seed & 1 == 1;
    let mut config = Config::default();
    if clustered {
        config.cluster.nodes = (1..=3)
            .map(|id| ClusterNode {
                id,
                client: format!("10.0.0.{id}:7654"),
                peer: format!("10.0.0.{id}:7656"),
            })
            .collect();
    }
    let node =
        Node::new(config, Recovered::default(), seed, now).expect("a node starts from nothing");
    let mailbox = Mailbox::default();
    let mut router = MailboxRouter::new(node);
    let mut storage = MemoryStorage::default();
    let mut settle = |router: &mut MailboxRouter, now: Now| {
        for _ in 0..16 {
            let requests = router.take_storage_requests();
            if requests.is_empty() && !storage.has_pending() {
                return;
            }
            let done = storage.run(requests, true);
            router.on_storage_done(now, done);
        }
    };
    settle(&mut router, now);
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
                settle(&mut router, now);
                check_peers(&mailbox, clustered);
                continue;
            }
        };
        frames += 1;
        router.on_event(now, Event::Input(Input::PeerFrame { peer, body }));
        settle(&mut router, now);
        let node = router.node();
        node.check_invariants();
        let counters = node.counters();
        assert_eq!(
            counters.peer_frames_in, frames,
            "every peer frame is counted"
        );
        if !clustered {
            assert_eq!(
                counters.peer_frames_dropped, frames,
                "a single node replicates nothing"
            );
        }
        check_peers(&mailbox, clustered);
        assert_eq!(router.unroutable(), 0);
    }
}

/// Nothing reaches a client; a single node says nothing to peers; a clustered one speaks
/// only to the members of its group.
fn check_peers(mailbox: &Mailbox, clustered: bool) {
    let mail = mailbox.take();
    assert!(
        mail.to_connections.is_empty(),
        "peer frames reach no client"
    );
    for (peer, _) in &mail.to_peers {
        assert!(
            clustered && (peer.0 == 2 || peer.0 == 3),
            "node 1 sent to peer {peer} (clustered: {clustered})"
        );
    }
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
