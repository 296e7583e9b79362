//! The cluster simulation's checkers: what every step keeps, what a confirmed answer
//! promises, and what must hold once the faults heal (see the module documentation of
//! [`super`]).

use std::collections::BTreeMap;

use super::{Event, Report, Simulation, ANSWER_WITHIN_MS, FINISH_MS, LEADER_WITHIN_MS};
use crate::ids::LogIndex;
use crate::io::LogId;
use crate::raft::Role;

impl Simulation {
    /// A confirmed declare (delete) of `label` through node `index`: the queue was in (out of)
    /// the committed catalog at some point of what the node applied during this input.
    pub(super) fn check_answer(&mut self, index: usize, label: &str) -> Result<(), String> {
        self.observe_committed(index)?;
        let node = self.nodes[index].node.as_ref().expect("running");
        let applied = node.cluster_status().expect("a cluster").applied;
        let (name, deleting) = match label.strip_prefix('-') {
            Some(name) => (name, true),
            None => (label, false),
        };
        let (present, absent) = self.presence_between(name, self.applied_before, applied);
        let held = if deleting { absent } else { present };
        if !held {
            return Err(format!(
                "seed {}: node {} confirmed {} queue {name}, but the committed catalog did not \
                 have it so between entries {} and {applied}",
                self.seed,
                index + 1,
                if deleting { "deleting" } else { "declaring" },
                self.applied_before
            ));
        }
        Ok(())
    }

    /// Every node's committed entries agree with one history (kept in `canonical`).
    pub(super) fn observe_committed(&mut self, index: usize) -> Result<(), String> {
        let seed = self.seed;
        let sim_node = &self.nodes[index];
        let id = sim_node.id;
        let Some(node) = sim_node.node.as_ref() else {
            return Ok(());
        };
        let commit = node.cluster_status().expect("a cluster").commit_index;
        for entry in node.metadata_entries() {
            if entry.index > commit {
                break;
            }
            match self.canonical.get(&entry.index) {
                Some((term, body)) if *term != entry.term || *body != entry.body => {
                    return Err(format!(
                        "seed {seed}: node {id} committed entry {} of term {} where another \
                         node committed one of term {term}",
                        entry.index, entry.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.canonical
                        .insert(entry.index, (entry.term, entry.body.clone()));
                }
            }
        }
        Ok(())
    }

    /// Whether queue `name` is in the committed catalog (folded from the history) at some
    /// point from entry `from` to entry `to`: `(present at some point, absent at some point)`.
    pub(super) fn presence_between(
        &self,
        name: &str,
        from: LogIndex,
        to: LogIndex,
    ) -> (bool, bool) {
        use krest_proto::storage::{metadata_record, MetadataRecord};
        use prost::Message as _;
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        let (mut present, mut absent) = (false, false);
        let mut note = |names: &BTreeMap<String, u64>| {
            if names.contains_key(name) {
                present = true;
            } else {
                absent = true;
            }
        };
        if from.0 == 0 {
            note(&names);
        }
        for at in 1..=to.0 {
            let Some((_, body)) = self.canonical.get(&LogIndex(at)) else {
                break; // not committed anywhere the simulation saw: the answer is early
            };
            let record = MetadataRecord::decode(body.clone()).unwrap_or_default();
            match record.body {
                Some(metadata_record::Body::QueueDeclared(declared)) => {
                    let known = names.contains_key(&declared.name)
                        || names.values().any(|id| *id == declared.queue_id);
                    if !known && !declared.replicas.is_empty() && declared.queue_id != 0 {
                        names.insert(declared.name, declared.queue_id);
                    }
                }
                Some(metadata_record::Body::QueueDeleted(deleted)) => {
                    names.retain(|_, id| *id != deleted.queue_id);
                }
                _ => {}
            }
            if at >= from.0 {
                note(&names);
            }
        }
        (present, absent)
    }

    /// The rules every step keeps.
    pub(super) fn check(&mut self, index: usize) -> Result<(), String> {
        let seed = self.seed;
        let sim_node = &self.nodes[index];
        let id = sim_node.id;
        let Some(node) = sim_node.node.as_ref() else {
            return Ok(());
        };
        let status = node.cluster_status().expect("a cluster");
        let malformed = node.counters().peer_frames_malformed;
        if malformed > 0 && self.bug.is_none() {
            return Err(format!(
                "seed {seed}: node {id} refused {malformed} peer frame(s) no correct peer sends"
            ));
        }
        let mut crash_now = false;
        if status.role == Role::Leader {
            match self.leaders.insert(status.term, id) {
                Some(other) if other != id => {
                    return Err(format!(
                        "seed {seed}: nodes {other} and {id} both lead term {}",
                        status.term
                    ));
                }
                _ => {}
            }
            for at in 1..=status.commit_index.0 {
                self.commit_terms.entry(LogIndex(at)).or_insert(status.term);
            }
            if sim_node.led != Some(status.term) {
                // A new leader holds every entry committed in earlier terms.
                let log = node.metadata_entries();
                for (at, committed_in) in &self.commit_terms {
                    if *committed_in >= status.term {
                        continue;
                    }
                    let held = log
                        .get(at.0 as usize - 1)
                        .map(|entry| (entry.term, &entry.body));
                    let committed = self.canonical.get(at).map(|(term, body)| (*term, body));
                    if committed.is_some() && held != committed {
                        return Err(format!(
                            "seed {seed}: node {id} leads term {} without entry {at} committed \
                             in term {committed_in}",
                            status.term
                        ));
                    }
                }
                crash_now = self.chaos && self.rng.below(100) < self.faults.crash_new_leader;
            }
        }
        self.observe_committed(index)?;
        let sim_node = &self.nodes[index];
        if let Some(state) = sim_node.storage.raft_states.get(&LogId::Metadata) {
            let vote = state.voted_for.map(|candidate| (state.term, candidate));
            if vote.is_some() && vote != sim_node.last_vote && self.chaos {
                // The worst moment: right after a vote is durable.
                crash_now |= self.rng.below(100) < self.faults.crash_after_vote;
            }
            if let Some(candidate) = state.voted_for {
                match self.votes.insert((id, state.term), candidate) {
                    Some(earlier) if earlier != candidate => {
                        return Err(format!(
                            "seed {seed}: node {id} voted for {earlier} and then {candidate} \
                             in term {}",
                            state.term
                        ));
                    }
                    _ => {}
                }
            }
        }
        let vote = sim_node
            .storage
            .raft_states
            .get(&LogId::Metadata)
            .and_then(|state| state.voted_for.map(|candidate| (state.term, candidate)));
        let term = status.term;
        let leads = status.role == Role::Leader;
        let sim_node = &mut self.nodes[index];
        sim_node.last_vote = vote;
        if leads {
            sim_node.led = Some(term);
        }
        if crash_now {
            let after = self.rng.below(60);
            self.schedule(after, Event::Crash(index));
        }
        let sim_node = &self.nodes[index];
        for (request, (name, sent)) in &sim_node.outstanding {
            if self.now_ms > sent + ANSWER_WITHIN_MS {
                return Err(format!(
                    "seed {seed}: node {id} has not answered request {request} (declare \
                     {name}) sent at {sent} ms, {} ms later",
                    self.now_ms - sent
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_leader_known(&self) -> Result<(), String> {
        for sim_node in &self.nodes {
            let node = sim_node.node.as_ref().expect("all run after the heal");
            if node.cluster_status().expect("a cluster").leader.is_none() {
                return Err(format!(
                    "seed {}: node {} knows no leader {LEADER_WITHIN_MS} ms after the faults \
                     healed",
                    self.seed, sim_node.id
                ));
            }
        }
        Ok(())
    }

    /// After the faults: every client gets its queues, and every node agrees on them.
    pub(super) fn finish(mut self) -> Result<Report, String> {
        let seed = self.seed;
        let first = self.nodes[0].node.as_ref().expect("running").catalog();
        for sim_node in &self.nodes {
            let node = sim_node.node.as_ref().expect("running");
            let catalog = node.catalog();
            if catalog != first {
                return Err(format!(
                    "seed {seed}: node {} has catalog {catalog:?}, node 1 has {first:?}",
                    sim_node.id
                ));
            }
            for (_, queue) in &catalog {
                let served_here = node.queue(&queue.name).is_some();
                if served_here != (queue.leader() == sim_node.id) {
                    return Err(format!(
                        "seed {seed}: queue {} is placed on node {} but node {} serves it: {}",
                        queue.name,
                        queue.leader(),
                        sim_node.id,
                        served_here
                    ));
                }
            }
        }
        for name in &self.confirmed {
            if !first.iter().any(|(_, queue)| queue.name == *name) {
                return Err(format!(
                    "seed {seed}: queue {name} was confirmed but is not in the catalog"
                ));
            }
        }
        if let Some(name) = self
            .names
            .iter()
            .find(|name| !self.confirmed.contains(*name))
        {
            return Err(format!(
                "seed {seed}: queue {name} was never confirmed, {FINISH_MS} ms after the \
                 faults healed"
            ));
        }
        for (index, sim_node) in self.nodes.iter().enumerate() {
            if let Some((request, (name, sent))) = sim_node.outstanding.iter().next() {
                return Err(format!(
                    "seed {seed}: node {} never answered request {request} (declare {name}, \
                     sent at {sent} ms)",
                    index + 1
                ));
            }
        }
        self.check_published("before the final restart")?;
        // Every node crashes (losing what it did not sync) and restarts: each rebuilds the
        // same catalog from its log and saved commit index, and its queues from their logs.
        for index in 0..self.nodes.len() {
            let rng = &mut self.rng;
            let node = &mut self.nodes[index];
            node.node = None;
            node.epoch += 1;
            node.storage
                .crash(|unsynced| rng.below(unsynced as u64 + 1) as usize);
            self.start(index)?;
        }
        let again = self.nodes[0].node.as_ref().expect("restarted").catalog();
        if again != first {
            return Err(format!(
                "seed {seed}: after a restart node 1 has catalog {again:?}, before {first:?}"
            ));
        }
        for sim_node in &self.nodes[1..] {
            let catalog = sim_node.node.as_ref().expect("restarted").catalog();
            if catalog != first {
                return Err(format!(
                    "seed {seed}: after a restart node {} has catalog {catalog:?}",
                    sim_node.id
                ));
            }
        }
        self.check_published("after the final restart")?;
        self.report.publishes_confirmed = self.published.values().map(Vec::len).sum();
        self.report.redirects = self.redirects;
        self.report.confirmed = self.confirmed.len();
        self.report.events = self.events_handled;
        self.report.trace_hash = self.trace;
        self.report.virtual_ms = self.now_ms;
        self.report.terms_with_leader = self.leaders.len();
        Ok(std::mem::take(&mut self.report))
    }
    /// Every confirmed publish is held by the node serving its queue.
    pub(super) fn check_published(&self, when: &str) -> Result<(), String> {
        for (queue, sequences) in &self.published {
            let serving = self.nodes.iter().find_map(|sim_node| {
                let node = sim_node.node.as_ref()?;
                node.queue(queue).map(|state| (sim_node.id, state))
            });
            let Some((id, state)) = serving else {
                return Err(format!(
                    "seed {}: {when}, no node serves {queue}, which confirmed {} publishes",
                    self.seed,
                    sequences.len()
                ));
            };
            if let Some(missing) = sequences.iter().find(|s| state.messages.get(**s).is_none()) {
                return Err(format!(
                    "seed {}: {when}, node {id} lost confirmed message {missing:?} of {queue}",
                    self.seed
                ));
            }
        }
        Ok(())
    }
}
