//! Catalog writes: started on the node that took the request, proposed by the metadata leader
//! (forwarded to it over the peer protocol), answered when the entry is applied with the term
//! it was proposed in (see the module documentation of [`super`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use krest_proto::client::{server_frame, ErrorCode};
use krest_proto::peer::{peer_frame, CatalogProposal, CatalogProposed, PeerFrame};
use krest_proto::storage::{metadata_record, MetadataRecord};
use prost::Message as _;

use super::{CatalogThen, CatalogWait, Expect, FORWARD_ATTEMPTS, MAX_CATALOG_WAITS};
use crate::ids::{LogIndex, NodeId, QueueId, Term};
use crate::node::session::RequestError;
use crate::node::Node;
use crate::raft::Role;
use crate::time::Millis;
use crate::timer::Timer;

impl Node {
    /// Starts a catalog write for `then`. Fails at once when no leader is known.
    pub(in crate::node) fn catalog_write(
        &mut self,
        record: MetadataRecord,
        expect: Expect,
        then: CatalogThen,
    ) -> Result<(), RequestError> {
        self.refuse_if_fenced()?;
        let cluster = self.cluster.as_mut().expect("a cluster");
        if cluster.waits.len() >= MAX_CATALOG_WAITS {
            return Err((
                ErrorCode::LimitReached,
                format!("{MAX_CATALOG_WAITS} catalog writes already wait on this node"),
            ));
        }
        let token = cluster.next_token;
        cluster.next_token += 1;
        cluster.waits.insert(
            token,
            CatalogWait {
                record,
                expect,
                then,
                placed: None,
                sent_to: None,
                attempts: 0,
            },
        );
        let deadline = self.now.monotonic + Millis(4 * self.config.cluster.election_timeout_ms);
        self.timers.arm(deadline, Timer::CatalogWait { token });
        self.send_catalog_write(token);
        Ok(())
    }

    /// Proposes the write `token` here if this node leads, or forwards it to the leader it
    /// knows; with no leader known it waits for its deadline.
    pub(in crate::node) fn send_catalog_write(&mut self, token: u64) {
        let node_id = self.node_id;
        let cluster = self.cluster.as_mut().expect("a cluster");
        let Some(wait) = cluster.waits.get_mut(&token) else {
            return;
        };
        wait.attempts += 1;
        let record = wait.record.clone();
        match cluster.driver.group().leader() {
            Some(leader) if leader == node_id => {
                if cluster.driver.group().leads_committed() {
                    let placed = self.propose_catalog(record);
                    self.on_catalog_proposed(token, placed, Some(node_id));
                } else {
                    cluster.held.push((node_id, token, record));
                }
            }
            Some(leader) => {
                wait.sent_to = Some(leader);
                let frame = PeerFrame {
                    body: Some(peer_frame::Body::CatalogProposal(CatalogProposal {
                        token,
                        record: Some(record),
                    })),
                };
                self.send_catalog_frame(leader, &frame);
            }
            None => {} // the deadline answers, or a later attempt finds a leader
        }
    }

    /// The leader proposes a catalog write, giving a declared queue its id and placement.
    pub(in crate::node) fn propose_catalog(
        &mut self,
        mut record: MetadataRecord,
    ) -> Option<(LogIndex, Term)> {
        let cluster = self.cluster.as_mut().expect("a cluster");
        if let Some(metadata_record::Body::QueueDeclared(declared)) = record.body.as_mut() {
            let next_id = cluster
                .catalog
                .keys()
                .chain(cluster.proposed.keys())
                .map(|id| id.0 + 1)
                .max()
                .unwrap_or(1)
                .max(self.next_queue_id);
            declared.queue_id = next_id;
            let hinted = declared
                .replicas
                .first()
                .map(|id| NodeId(*id))
                .filter(|id| cluster.voters().contains(id));
            let serving = hinted.unwrap_or_else(|| {
                let mut load: BTreeMap<NodeId, usize> =
                    cluster.voters().iter().map(|id| (*id, 0)).collect();
                for queue in cluster.catalog.values() {
                    *load.entry(queue.leader()).or_default() += 1;
                }
                for node in cluster.proposed.values() {
                    *load.entry(*node).or_default() += 1;
                }
                load.iter()
                    .min_by_key(|(id, count)| (**count, **id))
                    .map(|(id, _)| *id)
                    .expect("a cluster has voters")
            });
            declared.replicas = vec![serving.0];
            cluster.proposed.insert(QueueId(next_id), serving);
        }
        let body = Bytes::from(record.encode_to_vec());
        cluster.driver.propose(body)
    }

    /// The leader answers a forwarded write (or this node's own).
    pub(in crate::node) fn answer_proposal(
        &mut self,
        origin: NodeId,
        token: u64,
        placed: Option<(LogIndex, Term)>,
        leader: Option<NodeId>,
    ) {
        if origin == self.node_id {
            self.on_catalog_proposed(token, placed, leader);
            return;
        }
        let (index, term) = placed.map_or((0, 0), |(index, term)| (index.0, term.0));
        let frame = PeerFrame {
            body: Some(peer_frame::Body::CatalogProposed(CatalogProposed {
                token,
                index,
                term,
                leader: leader.map_or(0, |id| id.0),
            })),
        };
        self.send_catalog_frame(origin, &frame);
    }

    pub(in crate::node) fn send_catalog_frame(&mut self, peer: NodeId, frame: &PeerFrame) {
        let frame = krest_proto::frame::frame_bytes(frame);
        self.counters.catalog_frames_out += 1;
        self.counters.catalog_bytes_out += frame.len() as u64;
        self.commands
            .push_back(crate::io::Command::SendToPeer { peer, frame });
    }

    /// A forwarded write arrived from `origin`.
    pub(in crate::node) fn on_catalog_proposal(
        &mut self,
        origin: NodeId,
        proposal: CatalogProposal,
    ) {
        if self.fenced.is_some() {
            return; // the origin's deadline answers its client
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(record) = proposal.record else {
            self.counters.peer_frames_malformed += 1;
            self.counters.peer_frames_dropped += 1;
            return;
        };
        let group = cluster.driver.group();
        if group.role() == Role::Leader && !group.leads_committed() {
            cluster.held.push((origin, proposal.token, record));
            return;
        }
        let leader = group.leader();
        let placed = if group.leads_committed() {
            self.propose_catalog(record)
        } else {
            None
        };
        self.answer_proposal(origin, proposal.token, placed, leader);
    }

    /// The leader said where a write of this node landed (or refused it).
    pub(in crate::node) fn on_catalog_proposed(
        &mut self,
        token: u64,
        placed: Option<(LogIndex, Term)>,
        leader: Option<NodeId>,
    ) {
        let node_id = self.node_id;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(wait) = cluster.waits.get_mut(&token) else {
            return; // answered already (deadline), or a duplicate
        };
        if let Some(placed) = placed {
            wait.placed.get_or_insert(placed);
            if crate::planted::active(crate::planted::PlantedBug::ConfirmCatalogWriteWhenPlaced) {
                // Answers as soon as the leader appended it, committed or not.
                if let Some(wait) = cluster.waits.remove(&token) {
                    if let CatalogThen::Reply { conn, request_id } = wait.then {
                        let done = server_frame::Body::Done(krest_proto::client::Done {});
                        let frame = self.encode_reply(request_id, done);
                        self.send_frame_bytes(conn, frame);
                    }
                }
                return;
            }
            // Applied already? (This node applied the entry before the answer came.)
            let applied = cluster.driver.applied();
            if placed.0 <= applied {
                let term = cluster.driver.group().term_at(placed.0);
                self.finish_wait(token, term == Some(placed.1));
            }
            return;
        }
        let retry = wait.placed.is_none()
            && wait.attempts < FORWARD_ATTEMPTS
            && leader.is_some_and(|leader| Some(leader) != wait.sent_to || leader == node_id);
        if retry {
            self.send_catalog_write(token);
        }
    }

    /// A write's deadline passed.
    pub(in crate::node) fn on_catalog_deadline(&mut self, token: u64) {
        let unplaced = self
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.waits.get(&token))
            .map(|wait| wait.placed.is_none());
        match unplaced {
            // Never proposed anywhere this node heard of: one more try, then give up.
            Some(true) => self.fail_wait(
                token,
                ErrorCode::Unavailable,
                "no metadata leader took the catalog write in time; retry".into(),
            ),
            Some(false) => self.fail_wait(
                token,
                ErrorCode::Unavailable,
                "the catalog write was not committed in time; it may still be: retry".into(),
            ),
            None => {}
        }
    }

    /// Runs the continuation of write `token`, whose entry was applied (`committed`) or
    /// replaced by another leader's.
    pub(in crate::node) fn finish_wait(&mut self, token: u64, committed: bool) {
        if !committed {
            self.fail_wait(
                token,
                ErrorCode::Unavailable,
                "the metadata leader changed before the catalog write committed; retry".into(),
            );
            return;
        }
        let cluster = self.cluster.as_mut().expect("a cluster");
        let Some(wait) = cluster.waits.remove(&token) else {
            return;
        };
        let outcome: Result<(), RequestError> = match &wait.expect {
            Expect::Declared { name, kind } => match cluster.catalog_names.get(name) {
                Some(id) if cluster.catalog[id].kind == *kind => Ok(()),
                Some(id) => Err((
                    ErrorCode::QueueKindConflict,
                    format!(
                        "queue '{name}' exists as a {} queue, not {}",
                        cluster.catalog[id].kind.as_str(),
                        kind.as_str()
                    ),
                )),
                None => Err((
                    ErrorCode::Unavailable,
                    format!("queue '{name}' was deleted meanwhile; retry"),
                )),
            },
            // A delete names the queue it saw; if the name was declared again before it
            // applied, the new queue stands and the client decides again.
            Expect::Deleted { name } => match cluster.catalog_names.contains_key(name) {
                false => Ok(()),
                true => Err((
                    ErrorCode::Unavailable,
                    format!("queue '{name}' was declared again meanwhile; retry the delete"),
                )),
            },
        };
        match (outcome, wait.then) {
            (Ok(()), CatalogThen::Reply { conn, request_id }) => {
                let frame = self.encode_reply(
                    request_id,
                    server_frame::Body::Done(krest_proto::client::Done {}),
                );
                self.send_frame_bytes(conn, frame);
            }
            (
                Ok(()),
                CatalogThen::Redispatch {
                    conn,
                    request_id,
                    body,
                },
            ) => {
                if self.connections.contains_key(&conn) {
                    if let Err((code, message)) = self.route(conn, request_id, *body, false) {
                        self.send_error(conn, request_id, code, message);
                    }
                }
            }
            (Ok(()), CatalogThen::Admin { request, name }) => {
                let body = match self.queue_names.get(&name) {
                    Some(id) => crate::node::admin::queue_info_json(&self.queue_info(*id)),
                    None => serde_json::json!({ "name": name, "done": true }),
                };
                self.respond_json(request, 200, &body);
            }
            (Ok(()), CatalogThen::Nothing) => {}
            (Err((code, message)), then) => self.fail_then(then, code, message),
        }
    }

    pub(in crate::node) fn fail_wait(&mut self, token: u64, code: ErrorCode, message: String) {
        let Some(wait) = self
            .cluster
            .as_mut()
            .and_then(|cluster| cluster.waits.remove(&token))
        else {
            return;
        };
        self.fail_then(wait.then, code, message);
    }

    pub(in crate::node) fn fail_then(
        &mut self,
        then: CatalogThen,
        code: ErrorCode,
        message: String,
    ) {
        match then {
            CatalogThen::Reply { conn, request_id }
            | CatalogThen::Redispatch {
                conn, request_id, ..
            } => self.send_error(conn, request_id, code, message),
            CatalogThen::Admin { request, .. } => self.admin_error(request, code, message),
            CatalogThen::Nothing => {}
        }
    }
}
