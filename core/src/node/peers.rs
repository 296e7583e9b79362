//! Frames from peer nodes: decoded and checked, then handed to the metadata group or the
//! catalog (see `cluster`). A frame that does not decode, that a correct peer could not have
//! sent, or that this node does not expect (a single node expects none; no queue group
//! replicates yet) is dropped and counted, never trusted.

use bytes::Bytes;
use krest_proto::peer::{peer_frame, PeerFrame};
use prost::Message as _;

use super::Node;
use crate::ids::{LogIndex, NodeId, Term};
use crate::io::LogId;
use crate::raft::wire;

impl Node {
    pub(super) fn on_peer_frame(&mut self, peer: NodeId, body: Bytes) {
        self.counters.peer_frames_in += 1;
        let clustered = self.is_clustered()
            && peer != self.node_id
            && self.config.cluster.node(peer.0).is_some();
        let frame = PeerFrame::decode(body).map(|frame| frame.body);
        let (well_formed, used) = match frame {
            // The runtime completes the handshake before the link carries anything else.
            Ok(Some(peer_frame::Body::Hello(_))) | Ok(None) | Err(_) => (false, false),
            Ok(Some(peer_frame::Body::Raft(message))) => match wire::decode(message) {
                Ok((log, envelope)) if envelope.from == peer && envelope.to == self.node_id => {
                    match clustered && log == LogId::Metadata {
                        true => {
                            let possible = self.on_raft_message(peer, envelope.message);
                            (possible, possible && self.fenced.is_none())
                        }
                        false => (true, false),
                    }
                }
                _ => (false, false),
            },
            Ok(Some(peer_frame::Body::CatalogProposal(proposal))) => {
                if clustered {
                    self.on_catalog_proposal(peer, proposal);
                }
                (true, clustered)
            }
            Ok(Some(peer_frame::Body::CatalogProposed(answer))) => {
                if clustered {
                    let placed =
                        (answer.index != 0).then_some((LogIndex(answer.index), Term(answer.term)));
                    let leader = (answer.leader != 0).then_some(NodeId(answer.leader));
                    self.on_catalog_proposed(answer.token, placed, leader);
                }
                (true, clustered)
            }
        };
        if !well_formed {
            self.counters.peer_frames_malformed += 1;
        } else {
            self.peer_heard.insert(peer, self.now.monotonic);
        }
        if !used {
            self.counters.peer_frames_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use krest_proto::peer::{peer_frame, PeerFrame};
    use prost::Message as _;

    use crate::harness::Harness;
    use crate::ids::{LogIndex, NodeId, Term};
    use crate::io::{Input, LogId};
    use crate::raft::{wire, Envelope, Message};

    fn raft_frame(from: u64, to: u64) -> Bytes {
        let envelope = Envelope {
            from: NodeId(from),
            to: NodeId(to),
            message: Message::AppendResponse {
                term: Term(2),
                success: true,
                match_index: LogIndex(3),
            },
        };
        let body = Some(peer_frame::Body::Raft(wire::encode(
            LogId::Metadata,
            &envelope,
        )));
        Bytes::from(PeerFrame { body }.encode_to_vec())
    }

    /// A single node counts every peer frame, tells the malformed and the impossible apart
    /// from the well-formed, and acts on none of them.
    #[test]
    fn peer_frames_are_counted_and_never_trusted() {
        let mut harness = Harness::default_config();
        let frames = [
            (2, raft_frame(2, 1), false),
            (3, raft_frame(2, 1), true), // from a node other than the link's
            (2, raft_frame(2, 5), true), // to another node
            (2, Bytes::from_static(b"\xff\xff garbage"), true),
        ];
        for (peer, body, malformed) in &frames {
            let before = harness.node().counters();
            let peer = NodeId(*peer);
            harness.input(Input::PeerFrame {
                peer,
                body: body.clone(),
            });
            let after = harness.node().counters();
            assert_eq!(after.peer_frames_in, before.peer_frames_in + 1);
            assert_eq!(after.peer_frames_dropped, before.peer_frames_dropped + 1);
            let counted_malformed = after.peer_frames_malformed - before.peer_frames_malformed;
            assert_eq!(counted_malformed, u64::from(*malformed), "{body:?}");
        }
        let metrics = harness.admin("GET", "/metrics", "").1;
        assert!(
            metrics.contains("krest_peer_frames_dropped_total 4"),
            "{metrics}"
        );
        assert!(
            metrics.contains("krest_peer_frames_malformed_total 3"),
            "{metrics}"
        );
    }
}
