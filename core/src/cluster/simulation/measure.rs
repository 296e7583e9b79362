//! Figures from calm clusters: how long a crashed leader takes to replace, and how much an
//! idle cluster says.

use super::{Faults, Simulation};
use crate::ids::Term;
use crate::node::Node;
use crate::raft::Role;

impl Simulation {
    /// Handles events up to `until_ms` or until `done` says so; returns whether it did.
    pub(super) fn run_until(
        &mut self,
        until_ms: u64,
        done: impl Fn(&Simulation) -> bool,
    ) -> Result<bool, String> {
        while let Some((&(at, sequence), _)) = self.events.first_key_value() {
            if done(self) {
                return Ok(true);
            }
            if at > until_ms {
                break;
            }
            let event = self.events.remove(&(at, sequence)).expect("just seen");
            self.now_ms = at;
            self.on_event(event)?;
        }
        self.now_ms = self.now_ms.max(until_ms);
        Ok(done(self))
    }

    /// The node that leads, as every running node agrees, if one does.
    pub(super) fn agreed_leader(&self) -> Option<(usize, Term)> {
        let mut agreed = None;
        for sim_node in &self.nodes {
            let Some(node) = sim_node.node.as_ref() else {
                continue;
            };
            let status = node.cluster_status()?;
            let leader = status.leader?;
            match agreed {
                None => agreed = Some((leader, status.term)),
                Some(known) if known == (leader, status.term) => {}
                Some(_) => return None,
            }
        }
        let (leader, term) = agreed?;
        let index = self.nodes.iter().position(|node| node.id == leader)?;
        let leads = self.nodes[index]
            .node
            .as_ref()
            .and_then(Node::cluster_status)
            .is_some_and(|status| status.role == Role::Leader);
        leads.then_some((index, term))
    }

    /// A calm cluster (no faults, no clients) with the given timing, every node started.
    pub(super) fn calm(
        seed: u64,
        size: usize,
        election_ms: u64,
        heartbeat_ms: u64,
    ) -> Result<Simulation, String> {
        let mut simulation = Simulation::new(seed, size);
        simulation.faults = Faults::default();
        simulation.chaos = false;
        for config in &mut simulation.configs {
            config.cluster.election_timeout_ms = election_ms;
            config.cluster.heartbeat_interval_ms = heartbeat_ms;
        }
        for node in &mut simulation.nodes {
            node.skew_ms = 0;
        }
        for index in 0..size {
            simulation.start(index)?;
        }
        Ok(simulation)
    }
}

/// Virtual milliseconds from the crash of a calm cluster's leader to a new leader every
/// surviving node agrees on (the cluster's timing: `election_ms`, `heartbeat_ms`).
pub fn failover_ms(
    seed: u64,
    size: usize,
    election_ms: u64,
    heartbeat_ms: u64,
) -> Result<u64, String> {
    let mut simulation = Simulation::calm(seed, size, election_ms, heartbeat_ms)?;
    let settle = 20 * election_ms;
    if !simulation.run_until(settle, |simulation| simulation.agreed_leader().is_some())? {
        return Err(format!("seed {seed}: no leader after {settle} ms"));
    }
    // Let it lead a while, then kill it for good.
    let steady = simulation.now_ms + simulation.rng.below(5 * election_ms) + election_ms;
    simulation.run_until(steady, |_| false)?;
    let (leader, term) = simulation
        .agreed_leader()
        .ok_or_else(|| format!("seed {seed}: the leader was lost while calm"))?;
    let crashed_at = simulation.now_ms;
    simulation.nodes[leader].node = None;
    simulation.nodes[leader].epoch += 1;
    simulation.nodes[leader].tick_at = None;
    let deadline = crashed_at + 20 * election_ms;
    let replaced = simulation.run_until(deadline, |simulation| {
        simulation
            .agreed_leader()
            .is_some_and(|(index, new_term)| index != leader && new_term > term)
    })?;
    match replaced {
        true => Ok(simulation.now_ms - crashed_at),
        false => Err(format!(
            "seed {seed}: no new leader within {} ms",
            20 * election_ms
        )),
    }
}

/// Peer frames per second of a calm cluster of `size` with the given timing, measured over
/// `seconds` of virtual time once a leader is agreed.
pub fn idle_peer_frames_per_second(
    seed: u64,
    size: usize,
    election_ms: u64,
    heartbeat_ms: u64,
    seconds: u64,
) -> Result<f64, String> {
    let mut simulation = Simulation::calm(seed, size, election_ms, heartbeat_ms)?;
    let settle = 20 * election_ms;
    if !simulation.run_until(settle, |simulation| simulation.agreed_leader().is_some())? {
        return Err(format!("seed {seed}: no leader after {settle} ms"));
    }
    let before = simulation.report.peer_frames;
    let end = simulation.now_ms + seconds * 1_000;
    simulation.run_until(end, |_| false)?;
    Ok((simulation.report.peer_frames - before) as f64 / seconds as f64)
}
