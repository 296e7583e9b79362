//! The node in a cluster of several: the metadata group, the catalog every node applies from
//! it, catalog writes forwarded to the metadata leader, and queues served by one node each.
//!
//! - **One apply path.** A catalog write is an entry of the metadata log. Every node applies
//!   the committed entries in order ([`Node::apply_metadata_entry`]); a restarted node applies
//!   its log up to the commit index it saved, through the same replay as a single node's
//!   recovery, and the rest as the leader commits it. The saved commit index is handed to
//!   storage before the node acts on what it applied (a queue log is created after it), so a
//!   queue log on disk always has its declaration among the entries a restart applies.
//! - **Catalog writes go to the leader.** A declare or delete that reaches any node becomes a
//!   [`CatalogWait`]: the metadata leader proposes it (forwarded over the peer protocol when
//!   this node does not lead) and says where it landed; the node that took the request answers
//!   its client when it applies that entry, if the entry there has the term it was proposed in.
//!   A leader proposes only once it has committed in its term, so its catalog is the whole
//!   committed one when it gives out queue ids and placements.
//! - **Placement.** The leader places a new queue on the node serving the fewest queues (ties:
//!   the lowest id), or where the request asks (a dead-letter queue next to its source). The
//!   placement is a list of replicas, the serving node first, for replicated queues later. A
//!   publish, subscribe, fetch or other request for a queue served elsewhere is answered
//!   `NOT_LEADER` with that node's client address.
//! - **Subscription groups** of a queue live in the queue's own log on the serving node (see
//!   `requests.rs`), next to their acks.
//! - **Temporary queues** are not in the catalog: memory only, served where declared.

use std::collections::BTreeMap;

use krest_proto::client::{client_frame, ErrorCode};
use krest_proto::storage::{metadata_record, MetadataRecord, QueueDeclared, QueueDeleted};
use prost::Message as _;

use super::session::RequestError;
use super::Node;
use crate::cluster::GroupDriver;
use crate::ids::{AdminRequestId, ConnId, LogIndex, NodeId, QueueId, Term};
use crate::io::{LogId, LogRecord, RaftState};
use crate::queue::{Queue, QueueKind, QueueSettings};
use crate::raft::{Entry, RaftConfig, RaftGroup, Role};
use crate::time::Millis;

/// How many times a forwarded catalog write follows a leader hint before giving up.
const FORWARD_ATTEMPTS: u8 = 3;
/// Catalog writes waiting at once, per node.
const MAX_CATALOG_WAITS: usize = 4_096;

/// A queue of the cluster's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogQueue {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: QueueKind,
    /// Its settings, as declared.
    pub settings: krest_proto::client::QueueSettings,
    /// The nodes holding its log, the serving node first.
    pub replicas: Vec<NodeId>,
}

impl CatalogQueue {
    /// The node serving it.
    pub fn leader(&self) -> NodeId {
        self.replicas[0]
    }
}

/// What a catalog write is for, checked against the catalog once its entry is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    Declared { name: String, kind: QueueKind },
    Deleted { name: String },
}

/// Who waits for a catalog write.
#[derive(Debug, Clone)]
pub(super) enum CatalogThen {
    /// A client's declare or delete: `Done` or an error.
    Reply { conn: ConnId, request_id: u64 },
    /// A request that needed the write first (a subscribe that declares its queue): handled
    /// again, once, when the write is applied.
    Redispatch {
        conn: ConnId,
        request_id: u64,
        body: Box<client_frame::Body>,
    },
    /// An admin declare or delete.
    Admin {
        request: AdminRequestId,
        name: String,
    },
    /// Nobody (a dead-letter queue declared on the way).
    Nothing,
}

#[derive(Debug)]
struct CatalogWait {
    record: MetadataRecord,
    expect: Expect,
    then: CatalogThen,
    /// Where the leader proposed it.
    placed: Option<(LogIndex, Term)>,
    /// The node it was forwarded to, and how many times.
    sent_to: Option<NodeId>,
    attempts: u8,
}

/// The node's part in a cluster. See the module documentation.
#[derive(Debug)]
pub(super) struct ClusterState {
    pub driver: GroupDriver,
    /// Every durable queue of the cluster, by id.
    pub catalog: BTreeMap<QueueId, CatalogQueue>,
    pub catalog_names: BTreeMap<String, QueueId>,
    waits: BTreeMap<u64, CatalogWait>,
    next_token: u64,
    /// Writes forwarded to this leader before it committed in its term.
    held: Vec<(NodeId, u64, MetadataRecord)>,
    /// Queue ids and placements this leader proposed and has not applied yet.
    proposed: BTreeMap<QueueId, NodeId>,
    /// Client addresses by node id.
    addresses: BTreeMap<NodeId, String>,
}

impl ClusterState {
    /// Whether `log` is replicated by a group of this node.
    pub fn replicates(&self, log: LogId) -> bool {
        self.driver.log() == log
    }

    fn voters(&self) -> &[NodeId] {
        self.driver.group().voters()
    }
}

/// What the catalog looks like from this node, for tests and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's role in the metadata group.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// The metadata leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit_index: LogIndex,
    /// How far it applied.
    pub applied: LogIndex,
}

impl Node {
    /// Whether this node is one of a cluster of several.
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// The metadata group as this node sees it (`None` on a single node).
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let cluster = self.cluster.as_ref()?;
        let group = cluster.driver.group();
        Some(ClusterStatus {
            role: group.role(),
            term: group.term(),
            leader: group.leader(),
            commit_index: group.commit_index(),
            applied: cluster.driver.applied(),
        })
    }

    /// The cluster's metrics (none on a single node): term, role, leader, elections, the
    /// metadata commit index, peer frames sent.
    pub(super) fn cluster_metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let Some(cluster) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let group = cluster.driver.group();
        let role = match group.role() {
            Role::Follower => 0,
            Role::PreCandidate | Role::Candidate => 1,
            Role::Leader => 2,
        };
        let (started, won) = group.elections();
        vec![
            (
                "krest_raft_term",
                "gauge",
                "The metadata group's current term.",
                group.term().0,
            ),
            (
                "krest_raft_role",
                "gauge",
                "This node's role: 0 follower, 1 candidate, 2 leader.",
                role,
            ),
            (
                "krest_raft_leader",
                "gauge",
                "The metadata leader's node id (0: none known).",
                group.leader().map_or(0, |id| id.0),
            ),
            (
                "krest_raft_elections_started_total",
                "counter",
                "Elections this node started (past the pre-vote).",
                started,
            ),
            (
                "krest_raft_elections_won_total",
                "counter",
                "Elections this node won.",
                won,
            ),
            (
                "krest_raft_commit_index",
                "gauge",
                "The metadata group's commit index.",
                group.commit_index().0,
            ),
            (
                "krest_peer_frames_out_total",
                "counter",
                "Frames sent to peer nodes.",
                cluster.driver.messages_sent + self.counters.catalog_frames_out,
            ),
            (
                "krest_peer_bytes_out_total",
                "counter",
                "Bytes of the frames sent to peer nodes, length prefixes included.",
                cluster.driver.bytes_sent + self.counters.catalog_bytes_out,
            ),
        ]
    }

    /// `GET /v1/cluster`: this node's view of the cluster.
    pub(super) fn cluster_json(&self) -> serde_json::Value {
        use serde_json::json;
        let Some(status) = self.cluster_status() else {
            let listen = &self.config.server.listen;
            return json!({
                "node_id": self.node_id.0,
                "role": "leader",
                "term": self.term.0,
                "leader": self.node_id.0,
                "commit_index": null,
                "nodes": [{ "id": self.node_id.0, "client": listen, "peer": null,
                            "reachable": true }],
                "fenced": self.fenced,
            });
        };
        let role = match status.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
        };
        // Linked, or heard from within three election timeouts.
        let window = Millis(3 * self.config.cluster.election_timeout_ms);
        let nodes: Vec<serde_json::Value> = self
            .config
            .cluster
            .nodes
            .iter()
            .map(|node| {
                let id = NodeId(node.id);
                let reachable = id == self.node_id
                    || self.peer_links.contains(&id)
                    || self
                        .peer_heard
                        .get(&id)
                        .is_some_and(|heard| *heard + window >= self.now.monotonic);
                json!({ "id": node.id, "client": node.client, "peer": node.peer,
                        "reachable": reachable })
            })
            .collect();
        json!({
            "node_id": self.node_id.0,
            "role": role,
            "term": status.term.0,
            "leader": status.leader.map(|id| id.0),
            "commit_index": status.commit_index.0,
            "nodes": nodes,
            "fenced": self.fenced,
        })
    }

    /// Every queue this node knows: its own (served here) and, in a cluster, the catalog's
    /// served elsewhere (without counts), by name.
    pub(super) fn all_queue_infos(&self) -> Vec<krest_proto::client::QueueInfo> {
        let mut infos: BTreeMap<String, krest_proto::client::QueueInfo> = self
            .queue_names
            .values()
            .map(|id| {
                let info = self.queue_info(*id);
                (info.name.clone(), info)
            })
            .collect();
        if let Some(cluster) = self.cluster.as_ref() {
            for queue in cluster.catalog.values() {
                infos
                    .entry(queue.name.clone())
                    .or_insert_with(|| krest_proto::client::QueueInfo {
                        name: queue.name.clone(),
                        settings: Some(queue.settings.clone()),
                        leader: queue.leader().0,
                        replicas: queue.replicas.iter().map(|id| id.0).collect(),
                        served_here: false,
                        ..Default::default()
                    });
            }
        }
        infos.into_values().collect()
    }

    /// The catalog as this node applied it: every durable queue of the cluster.
    pub fn catalog(&self) -> Vec<(QueueId, CatalogQueue)> {
        self.cluster.as_ref().map_or_else(Vec::new, |cluster| {
            cluster
                .catalog
                .iter()
                .map(|(id, queue)| (*id, queue.clone()))
                .collect()
        })
    }

    /// Plants a consensus bug in the metadata group of a node just built: the simulator's
    /// proof that its checkers fail (see [`crate::planted`]). No-op on a single node.
    #[doc(hidden)]
    pub fn plant_raft_bug(&mut self, bug: crate::raft::planted::RaftBug) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.driver.plant(bug);
        }
    }

    /// The metadata log entries this node holds (for the simulator's checkers).
    pub fn metadata_entries(&self) -> &[Entry] {
        self.cluster
            .as_ref()
            .map_or(&[], |cluster| cluster.driver.group().log())
    }

    /// Starts the cluster part at the end of recovery: the group from its saved state and the
    /// entries on disk, of which those up to `saved.commit` were applied by the replay.
    pub(super) fn start_cluster(
        &mut self,
        saved: RaftState,
        records: Vec<LogRecord>,
        catalog: BTreeMap<QueueId, CatalogQueue>,
    ) {
        let voters = self.config.cluster.voters(self.node_id.0);
        let config = RaftConfig {
            election_timeout_ms: self.config.cluster.election_timeout_ms,
            heartbeat_interval_ms: self.config.cluster.heartbeat_interval_ms,
            ..RaftConfig::default()
        };
        let entries = records
            .into_iter()
            .map(|record| Entry {
                term: record.term,
                index: record.index,
                body: record.body,
            })
            .collect();
        let hard_state = crate::raft::HardState {
            term: saved.term,
            voted_for: saved.voted_for,
        };
        let group = RaftGroup::new(
            self.node_id,
            &voters,
            hard_state,
            entries,
            config,
            self.rng.fork(),
            self.now.monotonic,
        );
        let driver = GroupDriver::new(LogId::Metadata, group, saved);
        let catalog_names = catalog
            .iter()
            .map(|(id, queue)| (queue.name.clone(), *id))
            .collect();
        let addresses = self
            .config
            .cluster
            .nodes
            .iter()
            .map(|node| (NodeId(node.id), node.client.clone()))
            .collect();
        let applied = driver.applied();
        self.cluster = Some(Box::new(ClusterState {
            driver,
            catalog,
            catalog_names,
            waits: BTreeMap::new(),
            next_token: 1,
            held: Vec::new(),
            proposed: BTreeMap::new(),
            addresses,
        }));
        let state = self.logs.get_mut(&LogId::Metadata).expect("recovered");
        state.synced_index = applied;
    }

    /// Time passes for the metadata group.
    pub(super) fn tick_cluster(&mut self) {
        let now = self.now.monotonic;
        if self.fenced.is_some() {
            return;
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.driver.tick(now);
        }
    }

    /// When the metadata group next needs time (never once fenced).
    pub(super) fn cluster_timeout(&self) -> Option<crate::time::Instant> {
        if self.fenced.is_some() {
            return None;
        }
        self.cluster
            .as_ref()
            .map(|cluster| cluster.driver.poll_timeout())
    }

    /// A storage failure: the node leaves its group's work for good (until restarted). It can
    /// make nothing durable, so it must not lead, vote or acknowledge; falling silent lets the
    /// others elect a leader that can. Its catalog writes fail.
    pub(super) fn fence_cluster(&mut self, reason: &str) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let tokens: Vec<u64> = cluster.waits.keys().copied().collect();
        cluster.held.clear();
        for token in tokens {
            self.fail_wait(token, ErrorCode::Unavailable, reason.to_string());
        }
    }

    /// End of a `handle`: the group's work goes out, committed entries are applied, writes
    /// held for a leader that now may propose are proposed.
    pub(super) fn drain_cluster(&mut self) {
        if self.fenced.is_some() {
            return;
        }
        // Applying may propose (a dead-letter queue) and proposing makes more to drain.
        for _ in 0..4 {
            let Some(cluster) = self.cluster.as_mut() else {
                return;
            };
            let committed = cluster.driver.drain(&mut self.commands);
            let mut applied_any = false;
            for entry in committed {
                applied_any = true;
                self.apply_metadata_entry(entry);
            }
            let cluster = self.cluster.as_mut().expect("checked");
            if !cluster.driver.group().leads_committed() {
                if cluster.driver.group().role() != Role::Leader && !cluster.held.is_empty() {
                    let leader = cluster.driver.group().leader();
                    for (origin, token, _) in std::mem::take(&mut cluster.held) {
                        self.answer_proposal(origin, token, None, leader);
                    }
                }
                if !applied_any {
                    return;
                }
                continue;
            }
            let held = std::mem::take(&mut cluster.held);
            let proposed_any = !held.is_empty();
            for (origin, token, record) in held {
                let placed = self.propose_catalog(record);
                let leader = Some(self.node_id);
                self.answer_proposal(origin, token, placed, leader);
            }
            if !applied_any && !proposed_any {
                return;
            }
        }
    }

    /// Storage answered a `Persist` barrier.
    pub(super) fn on_group_persisted(&mut self, log: LogId, token: u64) {
        if self.fenced.is_some() {
            return;
        }
        if let Some(cluster) = self.cluster.as_mut() {
            if cluster.replicates(log) {
                cluster.driver.on_persisted(token, &mut self.commands);
            }
        }
    }

    /// A Raft message of the metadata group from `peer`; `false` if no correct peer could
    /// have sent it (the group dropped it).
    pub(super) fn on_raft_message(&mut self, peer: NodeId, message: crate::raft::Message) -> bool {
        // A leader appends only records it encoded: an entry that does not decode is refused
        // before it can reach the log (applying it would have nothing to go on).
        if let crate::raft::Message::AppendEntries { entries, .. } = &message {
            let undecodable = entries.iter().any(|entry| {
                !entry.body.is_empty() && MetadataRecord::decode(entry.body.clone()).is_err()
            });
            if undecodable {
                return false;
            }
        }
        let now = self.now.monotonic;
        if self.fenced.is_some() {
            return true; // well formed; a fenced node takes no part
        }
        match self.cluster.as_mut() {
            Some(cluster) => cluster.driver.step(now, peer, message),
            None => false,
        }
    }

    // --- applying ---------------------------------------------------------------------------

    /// Applies one committed entry of the metadata log: the one path every node takes (a
    /// restarted node's replay of what it had committed is the same rules, in `recovery`).
    fn apply_metadata_entry(&mut self, entry: Entry) {
        let index = entry.index;
        if !entry.body.is_empty() {
            match MetadataRecord::decode(entry.body.clone()) {
                Ok(record) => self.apply_catalog_record(index, record),
                // The leader encoded it and every member checked the frame: a programmer error.
                Err(error) => panic!("metadata entry {index} does not decode: {error}"),
            }
        }
        let state = self
            .logs
            .get_mut(&LogId::Metadata)
            .expect("the metadata log");
        state.next_index = state.next_index.max(index.next());
        self.mark_durable(LogId::Metadata, index);
        // Writes of this node placed at this index are answered now.
        let cluster = self.cluster.as_ref().expect("a cluster");
        let finished: Vec<(u64, bool)> = cluster
            .waits
            .iter()
            .filter_map(|(token, wait)| {
                let (placed, term) = wait.placed?;
                (placed == index).then_some((*token, term == entry.term))
            })
            .collect();
        for (token, committed) in finished {
            self.finish_wait(token, committed);
        }
    }

    fn apply_catalog_record(&mut self, index: LogIndex, record: MetadataRecord) {
        let node_id = self.node_id;
        let cluster = self.cluster.as_mut().expect("a cluster");
        match record.body {
            Some(metadata_record::Body::QueueDeclared(declared)) => {
                let id = QueueId(declared.queue_id);
                cluster.proposed.remove(&id);
                self.next_queue_id = self.next_queue_id.max(id.0 + 1);
                if cluster.catalog.contains_key(&id)
                    || cluster.catalog_names.contains_key(&declared.name)
                    || declared.replicas.is_empty()
                    || id.0 == 0
                {
                    return; // a second declare of one name: the first stands
                }
                let Ok(settings) = QueueSettings::resolve(
                    &declared.name,
                    &declared.settings.clone().unwrap_or_default(),
                    &self.config.queue_defaults,
                    u64::MAX,
                    None,
                ) else {
                    return;
                };
                let replicas: Vec<NodeId> =
                    declared.replicas.iter().map(|id| NodeId(*id)).collect();
                cluster.catalog_names.insert(declared.name.clone(), id);
                cluster.catalog.insert(
                    id,
                    CatalogQueue {
                        name: declared.name.clone(),
                        kind: settings.kind,
                        settings: settings.to_wire(),
                        replicas: replicas.clone(),
                    },
                );
                let serve_all =
                    crate::planted::active(crate::planted::PlantedBug::ServeQueuesPlacedElsewhere);
                if (replicas[0] == node_id || serve_all) && !self.queues.contains_key(&id) {
                    // A temporary queue of the same name here gives way to the cluster's.
                    if let Some(local) = self.queue_names.get(&declared.name).copied() {
                        let _ = self.delete_local_queue(local);
                    }
                    let mut queue = Queue::new(id, declared.name.clone(), settings);
                    queue.declared_at = Some(index);
                    self.queue_names.insert(declared.name, id);
                    self.queues.insert(id, queue);
                    self.create_log(LogId::Queue(id));
                }
            }
            Some(metadata_record::Body::QueueDeleted(deleted)) => {
                let id = QueueId(deleted.queue_id);
                if let Some(queue) = cluster.catalog.remove(&id) {
                    cluster.catalog_names.remove(&queue.name);
                }
                if self.queues.contains_key(&id) {
                    let _ = self.delete_local_queue(id);
                }
            }
            // Subscription groups live in their queue's log in a cluster.
            Some(metadata_record::Body::SubscriptionDeclared(_))
            | Some(metadata_record::Body::SubscriptionDeleted(_))
            | None => {}
        }
    }

    // --- routing ----------------------------------------------------------------------------

    /// The answer for a request naming queue `name` when another node serves it.
    pub(super) fn served_elsewhere(&self, name: &str) -> Option<RequestError> {
        let cluster = self.cluster.as_ref()?;
        let id = cluster.catalog_names.get(name)?;
        let leader = cluster.catalog[id].leader();
        if leader == self.node_id {
            return None;
        }
        let address = cluster.addresses.get(&leader).cloned().unwrap_or_default();
        Some((
            ErrorCode::NotLeader,
            format!("queue '{name}' is served by node {leader}{NOT_LEADER_SEPARATOR}{address}"),
        ))
    }

    /// The answer for a queue this node does not know, when another node leads the metadata
    /// group: that leader's catalog is the whole committed one.
    pub(super) fn unknown_here(&self, name: &str) -> Option<RequestError> {
        let cluster = self.cluster.as_ref()?;
        let leader = cluster.driver.group().leader()?;
        if leader == self.node_id {
            return None;
        }
        let address = cluster.addresses.get(&leader).cloned().unwrap_or_default();
        Some((
            ErrorCode::NotLeader,
            format!(
                "queue '{name}' is not known here yet; the metadata leader, node {leader}, \
                 knows every queue{NOT_LEADER_SEPARATOR}{address}"
            ),
        ))
    }

    /// A declare in a cluster: temporary queues stay here; durable ones go through the catalog.
    pub(super) fn cluster_declare(
        &mut self,
        name: &str,
        settings: &krest_proto::client::QueueSettings,
        kind_if_unspecified: Option<QueueKind>,
        then: CatalogThen,
    ) -> Result<ClusterDeclare, RequestError> {
        let resolved = self.resolve_declared(name, settings, kind_if_unspecified)?;
        let cluster = self.cluster.as_ref().expect("a cluster");
        if let Some(id) = cluster.catalog_names.get(name) {
            let existing = cluster.catalog[id].kind;
            if QueueKind::from_wire(settings.kind).is_some_and(|kind| kind != existing) {
                return Err((
                    ErrorCode::QueueKindConflict,
                    format!(
                        "queue '{name}' exists as a {} queue, not {}",
                        existing.as_str(),
                        resolved.kind.as_str()
                    ),
                ));
            }
            return Ok(ClusterDeclare::Exists);
        }
        if !resolved.kind.is_durable() {
            return Ok(ClusterDeclare::Here);
        }
        let record = MetadataRecord {
            body: Some(metadata_record::Body::QueueDeclared(QueueDeclared {
                queue_id: 0,
                name: name.to_string(),
                settings: Some(resolved.to_wire()),
                replicas: Vec::new(),
            })),
        };
        let expect = Expect::Declared {
            name: name.to_string(),
            kind: resolved.kind,
        };
        self.catalog_write(record, expect, then)?;
        Ok(ClusterDeclare::Waiting)
    }

    /// A delete in a cluster of a queue in the catalog; `false` if it is not in it.
    pub(super) fn cluster_delete(
        &mut self,
        name: &str,
        then: CatalogThen,
    ) -> Result<bool, RequestError> {
        let cluster = self.cluster.as_ref().expect("a cluster");
        let Some(id) = cluster.catalog_names.get(name).copied() else {
            return Ok(false);
        };
        let record = MetadataRecord {
            body: Some(metadata_record::Body::QueueDeleted(QueueDeleted {
                queue_id: id.0,
            })),
        };
        let expect = Expect::Deleted {
            name: name.to_string(),
        };
        self.catalog_write(record, expect, then)?;
        Ok(true)
    }

    /// Declares a dead-letter queue next to its source (served here), through the catalog.
    pub(super) fn cluster_declare_dead_letter_queue(
        &mut self,
        name: &str,
        settings: krest_proto::client::QueueSettings,
    ) {
        let cluster = self.cluster.as_ref().expect("a cluster");
        if cluster.catalog_names.contains_key(name)
            || cluster.waits.values().any(|wait| {
                matches!(&wait.expect, Expect::Declared { name: waiting, .. } if waiting == name)
            })
        {
            return;
        }
        let record = MetadataRecord {
            body: Some(metadata_record::Body::QueueDeclared(QueueDeclared {
                queue_id: 0,
                name: name.to_string(),
                settings: Some(settings),
                replicas: vec![self.node_id.0],
            })),
        };
        let expect = Expect::Declared {
            name: name.to_string(),
            kind: QueueKind::Persistent,
        };
        let _ = self.catalog_write(record, expect, CatalogThen::Nothing);
    }
}

/// What became of a declare in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClusterDeclare {
    /// The catalog has the queue already (committed): nothing to write.
    Exists,
    /// A temporary queue: the caller declares it here, as a single node does.
    Here,
    /// A catalog write started; its continuation answers.
    Waiting,
}

mod writes;

/// Between a `NOT_LEADER` error's sentence and the address the client should use (also in the
/// error's `leader_address` field).
pub(super) const NOT_LEADER_SEPARATOR: &str = " at ";
