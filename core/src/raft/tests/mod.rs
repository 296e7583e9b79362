//! Raft proven in a small deterministic cluster: N members, each over a disk that loses what
//! was not synced when its member crashes, a network that loses, duplicates, delays and
//! reorders messages and is cut by partitions of several shapes, all from one seed.
//!
//! Checkers, after every step: at most one leader per term; every member's committed entries
//! agree with one canonical history; a new leader holds every committed entry; no member votes
//! for two candidates in one term, across restarts; no member comes back from a crash behind
//! what it acknowledged. At the end, after the faults heal: a leader is elected and a new entry
//! commits on every member within a bounded time. Each checker is proven by planted bugs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::planted::RaftBug;
use super::{Entry, Envelope, HardState, Message, RaftConfig, RaftGroup, Ready, Role};
use crate::ids::{LogIndex, NodeId, Term};
use crate::rng::Rng;
use crate::time::Instant;

/// Simulated time with faults, then time to heal.
const CHAOS_MS: u64 = 20_000;
const HEAL_MS: u64 = 6_000;
/// After healing, a proposal must commit everywhere within this.
const COMMIT_WITHIN_MS: u64 = 4_000;

/// One member's disk: what is written and what of it is durable.
#[derive(Debug, Clone, Default)]
struct Disk {
    hard_state: HardState,
    log: Vec<Entry>,
}

impl Disk {
    fn apply(&mut self, ready: &Ready) {
        if let Some(hard_state) = ready.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(after) = ready.truncate_after {
            self.log.truncate(after.0 as usize);
        }
        for entry in &ready.append {
            assert_eq!(
                entry.index.0,
                self.log.len() as u64 + 1,
                "appends are consecutive"
            );
            self.log.push(entry.clone());
        }
    }
}

/// An fsync under way: the writes it makes durable (applied in order, as the syncs before it
/// were), and the messages that wait for it.
struct Sync {
    writes: Ready,
    messages: Vec<Envelope>,
    at_ms: u64,
}

struct Member {
    id: NodeId,
    group: Option<RaftGroup>,
    written: Disk,
    durable: Disk,
    syncs: VecDeque<Sync>,
    epoch: u64,
    tick_at_ms: Option<u64>,
    /// Acknowledged appends: index -> term, dropped when truncated.
    acknowledged: BTreeMap<LogIndex, Term>,
    /// The term it last led, to see it become leader.
    led: Option<Term>,
}

#[derive(Debug, Clone)]
enum Event {
    Deliver(Envelope),
    Tick(usize, u64),
    Sync(usize, u64),
    /// Crash a member; `chain`: its restart schedules the next crash.
    Crash(usize, bool),
    Restart(usize, bool),
    Partition,
    Heal,
    Propose,
}

/// How hard this seed's faults hit (drawn per seed: swarm testing finds more than one fixed
/// mix, since some bugs need much of one fault and none of another).
#[derive(Debug, Clone, Copy)]
struct Faults {
    loss_percent: u64,
    duplicate_percent: u64,
    late_percent: u64,
    late_ms_max: u64,
    crash_every_ms_max: u64,
    restart_after_ms_max: u64,
    crash_after_vote: u64,
    crash_new_leader: u64,
}

impl Faults {
    fn draw(rng: &mut Rng) -> Faults {
        Faults {
            loss_percent: rng.below(20),
            duplicate_percent: rng.below(10),
            late_percent: rng.below(6),
            late_ms_max: 100 + rng.below(3_000),
            crash_every_ms_max: 500 + rng.below(6_000),
            restart_after_ms_max: 20 + rng.below(1_500),
            crash_after_vote: rng.below(30),
            crash_new_leader: rng.below(40),
        }
    }
}

struct Cluster {
    rng: Rng,
    faults: Faults,
    now_ms: u64,
    members: Vec<Member>,
    events: BTreeMap<(u64, u64), Event>,
    next_event: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    chaos: bool,
    config: RaftConfig,
    bug: Option<RaftBug>,
    // What the checkers remember.
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<LogIndex, Entry>,
    /// The term of the leader that committed each index first.
    commit_terms: BTreeMap<LogIndex, Term>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
    next_body: u64,
    /// Messages handed to the network.
    messages_sent: u64,
}

impl Cluster {
    fn new(seed: u64, size: usize, bug: Option<RaftBug>) -> Cluster {
        let mut rng = Rng::from_seed(seed);
        let ids: Vec<NodeId> = (1..=size as u64).map(NodeId).collect();
        let faults = Faults::draw(&mut rng);
        // Small batches reach states that large ones skip (an old term's entries acknowledged
        // before the new leader's no-op, as in the Raft paper's figure 8).
        let config = RaftConfig {
            max_entries_per_append: [1, 2, 4, 64][rng.below(4) as usize],
            ..RaftConfig::default()
        };
        let members = ids
            .iter()
            .map(|id| Member {
                id: *id,
                group: Some(RaftGroup::with_bug(
                    *id,
                    &ids,
                    HardState::default(),
                    Vec::new(),
                    config,
                    rng.fork(),
                    Instant(0),
                    bug,
                )),
                written: Disk::default(),
                durable: Disk::default(),
                syncs: VecDeque::new(),
                epoch: 1,
                tick_at_ms: None,
                acknowledged: BTreeMap::new(),
                led: None,
            })
            .collect();
        let mut cluster = Cluster {
            rng,
            faults,
            now_ms: 0,
            members,
            events: BTreeMap::new(),
            next_event: 0,
            cut: BTreeSet::new(),
            chaos: true,
            config,
            bug,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            commit_terms: BTreeMap::new(),
            votes: BTreeMap::new(),
            next_body: 1,
            messages_sent: 0,
        };
        for member in 0..size {
            cluster.schedule_tick(member);
        }
        let first_partition = cluster.between(200, 2_000);
        cluster.schedule(first_partition, Event::Partition);
        let first_crash = cluster.between(300, 3_000);
        cluster.schedule(first_crash, Event::Crash(0, true));
        let first_proposal = cluster.between(10, 200);
        cluster.schedule(first_proposal, Event::Propose);
        cluster
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.now_ms + low + self.rng.below(high - low + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.events.insert((at_ms, self.next_event), event);
        self.next_event += 1;
    }

    fn schedule_tick(&mut self, member: usize) {
        let Some(group) = &self.members[member].group else {
            return;
        };
        let at_ms = group.poll_timeout().0.max(self.now_ms);
        if self.members[member].tick_at_ms != Some(at_ms) {
            self.members[member].tick_at_ms = Some(at_ms);
            let epoch = self.members[member].epoch;
            self.schedule(at_ms, Event::Tick(member, epoch));
        }
    }

    /// Runs to the end; returns the first violation.
    fn run(&mut self) -> Result<(), String> {
        while let Some(entry) = self.events.first_entry() {
            let at_ms = entry.key().0;
            if at_ms > CHAOS_MS + HEAL_MS {
                break;
            }
            let event = entry.remove();
            self.now_ms = at_ms;
            if self.chaos && at_ms >= CHAOS_MS {
                self.heal_everything();
            }
            self.on_event(event)?;
        }
        self.check_progress()
    }

    fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver(envelope) => {
                let member = self.index_of(envelope.to);
                if let Some(group) = self.members[member].group.as_mut() {
                    let from = envelope.from;
                    if !group.step(Instant(self.now_ms), from, envelope.message) {
                        // Correct members send only possible messages; a bug may not.
                        return Err(format!(
                            "member {} refused a message from {from} no correct member sends",
                            envelope.to
                        ));
                    }
                    return self.drive(member);
                }
            }
            Event::Tick(member, epoch) => {
                if self.members[member].epoch == epoch {
                    self.members[member].tick_at_ms = None;
                    let now = Instant(self.now_ms);
                    if let Some(group) = self.members[member].group.as_mut() {
                        group.tick(now);
                        return self.drive(member);
                    }
                }
            }
            Event::Sync(member, epoch) => {
                if self.members[member].epoch == epoch {
                    return self.finish_sync(member);
                }
            }
            Event::Crash(member, chain) => {
                if self.chaos && self.members[member].group.is_some() {
                    self.crash(member)?;
                    let at = self.between(5, self.faults.restart_after_ms_max);
                    self.schedule(at, Event::Restart(member, chain));
                }
            }
            Event::Restart(member, chain) => self.restart(member, chain),
            Event::Partition => {
                if self.chaos {
                    self.partition();
                    let at = self.between(300, 3_000);
                    self.schedule(at, Event::Heal);
                }
            }
            Event::Heal => {
                self.cut.clear();
                if self.chaos {
                    let at = self.between(200, 2_500);
                    self.schedule(at, Event::Partition);
                }
            }
            Event::Propose => {
                let member = self.rng.below(self.members.len() as u64) as usize;
                let body = Bytes::from(self.next_body.to_string());
                if let Some(group) = self.members[member].group.as_mut() {
                    if group.propose(body).is_some() {
                        self.next_body += 1;
                        self.drive(member)?;
                    }
                }
                let at = self.between(5, 150);
                self.schedule(at, Event::Propose);
            }
        }
        Ok(())
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.members
            .iter()
            .position(|member| member.id == id)
            .expect("a member")
    }

    /// Carries out a member's ready, then checks what can be checked.
    fn drive(&mut self, member: usize) -> Result<(), String> {
        let group = self.members[member].group.as_mut().expect("running");
        let ready = group.take_ready();
        let (role, term, id) = (group.role(), group.term(), group.id());
        let commit_index = group.commit_index();
        for envelope in &ready.send_now {
            self.note_acknowledgement(member, envelope);
        }
        for envelope in ready.send_now.clone() {
            self.send(envelope);
        }
        if let Some(after) = ready.truncate_after {
            let acknowledged = &mut self.members[member].acknowledged;
            acknowledged.retain(|index, _| *index <= after);
        }
        self.members[member].written.apply(&ready);
        if ready.needs_persist() || !ready.send_after_persist.is_empty() {
            let last_at = self.members[member]
                .syncs
                .back()
                .map_or(0, |sync| sync.at_ms);
            let at_ms = (self.now_ms + self.rng.below(8)).max(last_at);
            let writes = Ready {
                hard_state: ready.hard_state,
                truncate_after: ready.truncate_after,
                append: ready.append.clone(),
                ..Ready::default()
            };
            let sync = Sync {
                writes,
                messages: ready.send_after_persist.clone(),
                at_ms,
            };
            self.members[member].syncs.push_back(sync);
            let epoch = self.members[member].epoch;
            self.schedule(at_ms, Event::Sync(member, epoch));
        }
        self.check_committed(id, &ready.committed)?;
        if role == Role::Leader {
            self.check_leader(member, term, commit_index)?;
        }
        self.schedule_tick(member);
        Ok(())
    }

    /// An fsync finished: the disk holds what it covered; the group hears so; its messages go.
    fn finish_sync(&mut self, member: usize) -> Result<(), String> {
        let Some(sync) = self.members[member].syncs.pop_front() else {
            return Ok(());
        };
        let id = self.members[member].id;
        let before = self.members[member].durable.hard_state;
        self.members[member].durable.apply(&sync.writes);
        let HardState { term, voted_for } = self.members[member].durable.hard_state;
        if let Some(candidate) = voted_for {
            match self.votes.insert((id, term), candidate) {
                Some(earlier) if earlier != candidate => {
                    return Err(format!(
                        "member {id} voted for {earlier} and then for {candidate} in term {term}"
                    ));
                }
                _ => {}
            }
        }
        if self.chaos && voted_for != before.voted_for && self.chance(self.faults.crash_after_vote)
        {
            // The worst moment: right after a vote is durable (and before or after it is sent).
            let at = self.between(0, 3);
            self.schedule(at, Event::Crash(member, false));
        }
        let last = self.members[member]
            .durable
            .log
            .last()
            .map(|entry| (entry.index, entry.term));
        let group = self.members[member].group.as_mut().expect("running");
        if let Some((index, term)) = last {
            group.on_persisted(index, term);
        }
        for envelope in &sync.messages {
            self.note_acknowledgement(member, envelope);
        }
        for envelope in sync.messages {
            self.send(envelope);
        }
        self.drive(member)
    }

    /// Remembers what a member acknowledged, to hold it to that after a crash.
    fn note_acknowledgement(&mut self, member: usize, envelope: &Envelope) {
        let Message::AppendResponse {
            success: true,
            match_index,
            ..
        } = envelope.message
        else {
            return;
        };
        let group = self.members[member].group.as_ref().expect("running");
        if let Some(term) = group.term_at(match_index).filter(|_| match_index.0 > 0) {
            self.members[member].acknowledged.insert(match_index, term);
        }
    }

    fn send(&mut self, envelope: Envelope) {
        self.messages_sent += 1;
        if self.cut.contains(&(envelope.from, envelope.to)) {
            return;
        }
        let (loss, duplicate) = match self.chaos {
            true => (self.faults.loss_percent, self.faults.duplicate_percent),
            false => (0, 0),
        };
        if self.chance(loss) {
            return;
        }
        let copies = if self.chance(duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            // Delays from 1 to 20 ms reorder messages; a few are very late.
            let late = self.faults.late_percent;
            let delay = match self.chaos && self.chance(late) {
                true => self.rng.below(self.faults.late_ms_max),
                false => 1 + self.rng.below(20),
            };
            self.schedule(self.now_ms + delay, Event::Deliver(envelope.clone()));
        }
    }

    fn crash(&mut self, member: usize) -> Result<(), String> {
        let id = self.members[member].id;
        let state = &mut self.members[member];
        if state.group.is_none() {
            return Ok(());
        }
        state.group = None;
        state.epoch += 1;
        state.syncs.clear();
        state.written = state.durable.clone();
        state.tick_at_ms = None;
        for (index, term) in &state.acknowledged {
            let held = state
                .durable
                .log
                .get(index.0 as usize - 1)
                .map(|entry| entry.term);
            if held != Some(*term) {
                return Err(format!(
                    "member {id} acknowledged entry {index} of term {term} but came back without it"
                ));
            }
        }
        Ok(())
    }

    fn restart(&mut self, member: usize, chain: bool) {
        let ids: Vec<NodeId> = self.members.iter().map(|member| member.id).collect();
        let rng = self.rng.fork();
        let state = &mut self.members[member];
        if state.group.is_some() {
            return;
        }
        state.group = Some(RaftGroup::with_bug(
            state.id,
            &ids,
            state.durable.hard_state,
            state.durable.log.clone(),
            self.config,
            rng,
            Instant(self.now_ms),
            self.bug,
        ));
        self.schedule_tick(member);
        if self.chaos && chain {
            let victim = self.rng.below(self.members.len() as u64) as usize;
            let at = self.between(100, self.faults.crash_every_ms_max);
            self.schedule(at, Event::Crash(victim, true));
        }
    }

    /// Cuts the network in one of several shapes.
    fn partition(&mut self) {
        let ids: Vec<NodeId> = self.members.iter().map(|member| member.id).collect();
        let size = ids.len() as u64;
        let cut = |from: NodeId, to: NodeId, links: &mut BTreeSet<(NodeId, NodeId)>| {
            links.insert((from, to));
        };
        let mut links = BTreeSet::new();
        match self.rng.below(4) {
            0 => {
                // Two halves.
                let split = 1 + self.rng.below(size.max(2) - 1);
                for from in &ids {
                    for to in &ids {
                        if (from.0 <= split) != (to.0 <= split) {
                            cut(*from, *to, &mut links);
                        }
                    }
                }
            }
            1 => {
                // One member isolated.
                let alone = ids[self.rng.below(size) as usize];
                for other in ids.iter().filter(|other| **other != alone) {
                    cut(alone, *other, &mut links);
                    cut(*other, alone, &mut links);
                }
            }
            2 => {
                // One way: a member hears everyone, nobody hears it.
                let mute = ids[self.rng.below(size) as usize];
                for other in ids.iter().filter(|other| **other != mute) {
                    cut(mute, *other, &mut links);
                }
            }
            _ => {
                // A bridge: two sides that only one member sees both of.
                let bridge = ids[self.rng.below(size) as usize];
                for from in &ids {
                    for to in &ids {
                        let sides_differ = (from.0 % 2) != (to.0 % 2);
                        if sides_differ && *from != bridge && *to != bridge {
                            cut(*from, *to, &mut links);
                        }
                    }
                }
            }
        }
        self.cut = links;
    }

    fn heal_everything(&mut self) {
        self.chaos = false;
        self.cut.clear();
        for member in 0..self.members.len() {
            if self.members[member].group.is_none() {
                self.restart(member, false);
            }
        }
    }

    fn check_committed(&mut self, id: NodeId, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            match self.committed.get(&entry.index) {
                Some(canonical) if canonical != entry => {
                    return Err(format!(
                        "member {id} committed {entry:?} where {canonical:?} was committed"
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(entry.index, entry.clone());
                }
            }
        }
        Ok(())
    }

    /// At most one leader per term; a new leader holds every entry committed in earlier terms.
    fn check_leader(&mut self, member: usize, term: Term, commit: LogIndex) -> Result<(), String> {
        let id = self.members[member].id;
        let known = *self.leaders.entry(term).or_insert(id);
        if known != id {
            return Err(format!("two leaders in term {term}: {known} and {id}"));
        }
        for index in 1..=commit.0 {
            self.commit_terms.entry(LogIndex(index)).or_insert(term);
        }
        if self.members[member].led == Some(term) {
            return Ok(());
        }
        self.members[member].led = Some(term);
        if self.chaos && self.chance(self.faults.crash_new_leader) {
            // Short terms with half-replicated logs: the Raft paper's figure 8.
            let at = self.between(0, 60);
            self.schedule(at, Event::Crash(member, false));
        }
        let group = self.members[member].group.as_ref().expect("running");
        let earlier = self
            .commit_terms
            .iter()
            .filter(|(_, committed_in)| **committed_in < term);
        for (index, _) in earlier {
            let held = group.log().get(index.0 as usize - 1);
            let committed = self.committed.get(index);
            if committed.is_some() && held != committed {
                return Err(format!(
                    "leader {id} of term {term} lacks entry {index} committed before: has {held:?}"
                ));
            }
        }
        Ok(())
    }

    /// After the faults healed: one leader, and a new entry commits everywhere in time.
    fn check_progress(&mut self) -> Result<(), String> {
        let deadline = self.now_ms + COMMIT_WITHIN_MS;
        let body = Bytes::from_static(b"final");
        let mut proposed: Option<LogIndex> = None;
        self.events
            .retain(|_, event| !matches!(event, Event::Propose | Event::Crash(..)));
        while self.now_ms < deadline {
            if proposed.is_none() {
                let leader = self.members.iter().position(|member| {
                    member
                        .group
                        .as_ref()
                        .is_some_and(|group| group.role() == Role::Leader)
                });
                if let Some(leader) = leader {
                    let group = self.members[leader].group.as_mut().expect("running");
                    proposed = group.propose(body.clone());
                    self.drive(leader)?;
                }
            }
            if let Some(index) = proposed {
                let everywhere = self.members.iter().all(|member| {
                    let group = member.group.as_ref().expect("healed");
                    group.commit_index() >= index
                        && group
                            .log()
                            .get(index.0 as usize - 1)
                            .map(|entry| &entry.body)
                            == Some(&body)
                });
                if everywhere {
                    return Ok(());
                }
            }
            let Some(((at_ms, _), event)) = self.events.pop_first() else {
                break;
            };
            self.now_ms = at_ms;
            self.on_event(event)?;
        }
        Err(format!(
            "no commit on every member within {COMMIT_WITHIN_MS} ms after healing (proposed at {proposed:?})"
        ))
    }
}

/// Runs one seed; a panic counts as a failure too.
fn run_seed(seed: u64, size: usize, bug: Option<RaftBug>) -> Result<(), String> {
    let outcome = std::panic::catch_unwind(|| Cluster::new(seed, size, bug).run());
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(match panic.downcast_ref::<String>() {
            Some(message) => format!("panic: {message}"),
            None => format!("panic: {:?}", panic.downcast_ref::<&str>()),
        }),
    }
}

fn size_of(seed: u64) -> usize {
    [1, 3, 5][(seed % 3) as usize]
}

/// Every checker holds over many seeds of 1, 3 and 5 members, and every run makes progress
/// after the faults heal.
#[test]
fn raft_keeps_its_promises_under_partitions_loss_and_crashes() {
    let seeds = 150;
    for seed in 0..seeds {
        if let Err(violation) = run_seed(seed, size_of(seed), None) {
            panic!("seed {seed} ({} members): {violation}", size_of(seed));
        }
    }
}

/// The same seed gives the same run.
#[test]
fn a_seed_replays_the_same_run() {
    let summary = |seed| {
        let mut cluster = Cluster::new(seed, 3, None);
        cluster.run().expect("passes");
        (
            cluster.leaders.clone(),
            cluster.committed.len(),
            cluster.now_ms,
        )
    };
    assert_eq!(summary(7), summary(7));
}

/// Each planted bug is caught by some checker within 200 seeds, but for the three whose states
/// random runs reach too rarely (figure 8, a response that outlives its term, a second
/// candidate in a term a restarted member voted in), which the scripted tests catch.
#[test]
fn every_planted_raft_bug_is_caught() {
    let mut missed = Vec::new();
    let seeds: u64 = std::env::var("KREST_RAFT_BUG_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let only = std::env::var("KREST_RAFT_BUG").ok();
    let scripted = [
        RaftBug::CommitOldTermByCounting,
        RaftBug::StaleResponseRaisesMatch,
        RaftBug::ForgetVoteOnRestart,
    ];
    for bug in RaftBug::ALL {
        if only.is_none() && scripted.contains(&bug) {
            continue;
        }
        if only
            .as_ref()
            .is_some_and(|only| *only != format!("{bug:?}"))
        {
            continue;
        }
        let caught = (0..seeds).find_map(|seed| {
            let size = [3, 5][(seed % 2) as usize];
            run_seed(seed, size, Some(bug))
                .err()
                .map(|violation| (seed, violation))
        });
        match caught {
            Some((seed, violation)) => println!("caught {bug:?} at seed {seed}: {violation}"),
            None => missed.push(bug),
        }
    }
    assert!(
        missed.is_empty(),
        "planted bugs no checker caught: {missed:?}"
    );
}

impl Cluster {
    /// A cluster with no faults: no loss, no partitions, no crashes but the ones a test makes.
    fn calm(seed: u64, size: usize) -> Cluster {
        let mut cluster = Cluster::new(seed, size, None);
        cluster.chaos = false;
        cluster
            .events
            .retain(|_, event| matches!(event, Event::Tick(..) | Event::Propose));
        cluster
    }

    /// Runs the events due by `until_ms`.
    fn run_until(&mut self, until_ms: u64) -> Result<(), String> {
        while let Some(entry) = self.events.first_entry() {
            let at_ms = entry.key().0;
            if at_ms > until_ms {
                break;
            }
            let event = entry.remove();
            self.now_ms = at_ms;
            self.on_event(event)?;
        }
        self.now_ms = until_ms;
        Ok(())
    }

    /// The member that leads the highest term, if any.
    fn leader(&self) -> Option<(usize, Term)> {
        let leading = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(index, member)| {
                let group = member.group.as_ref()?;
                (group.role() == Role::Leader).then_some((index, group.term()))
            });
        leading.max_by_key(|(_, term)| *term)
    }
}

/// Virtual time from a leader's crash to a new leader, over 100 calm runs of 3 and 5 members:
/// detection (a follower's lease and election timeout) plus one pre-vote and one vote round.
#[test]
fn a_new_leader_follows_a_crashed_one_within_bounded_virtual_time() {
    let mut failovers = Vec::new();
    for seed in 0..100 {
        let size = [3, 5][(seed % 2) as usize];
        let mut cluster = Cluster::calm(seed, size);
        cluster
            .run_until(2_000)
            .expect("a calm run keeps every promise");
        let (leader, term) = cluster.leader().expect("a calm cluster elects a leader");
        cluster
            .crash(leader)
            .expect("the leader comes back as it acknowledged");
        let crashed_at = cluster.now_ms;
        let mut elected_at = None;
        while elected_at.is_none() && cluster.now_ms < crashed_at + 10_000 {
            let next = cluster.now_ms + 1;
            cluster
                .run_until(next)
                .expect("a calm run keeps every promise");
            elected_at = cluster
                .leader()
                .filter(|(index, new_term)| *index != leader && *new_term > term)
                .map(|_| cluster.now_ms);
        }
        let elected_at = elected_at.unwrap_or_else(|| panic!("seed {seed}: no new leader"));
        failovers.push(elected_at - crashed_at);
    }
    failovers.sort_unstable();
    let percentile =
        |share: usize| failovers[(failovers.len() * share / 100).min(failovers.len() - 1)];
    let (p50, p99, max) = (
        percentile(50),
        percentile(99),
        failovers[failovers.len() - 1],
    );
    println!("failover after a leader crash, virtual ms: p50 {p50}, p99 {p99}, max {max}");
    // Detection is one election timeout after the last heartbeat, plus rank steps and jitter;
    // three timeouts leave room for a split vote.
    let bound = 3 * RaftConfig::default().election_timeout_ms;
    assert!(
        max <= bound,
        "a failover took {max} ms of virtual time (bound {bound})"
    );
}

/// An idle group costs the leader's heartbeats and their answers, nothing more: 3 members
/// with no proposals exchange 2 x 2 messages per heartbeat interval (this found followers
/// that measured their election timeout from a stale clock and pre-voted every few hundred ms).
#[test]
fn an_idle_group_sends_only_heartbeats_and_their_answers() {
    let mut cluster = Cluster::calm(1, 3);
    cluster
        .events
        .retain(|_, event| !matches!(event, Event::Propose));
    cluster
        .run_until(2_000)
        .expect("a calm run keeps every promise");
    let before = cluster.messages_sent;
    cluster
        .run_until(12_000)
        .expect("a calm run keeps every promise");
    let sent = cluster.messages_sent - before;
    println!(
        "an idle 3-member group: {} messages per second",
        sent as f64 / 10.0
    );
    let rounds = 10_000 / RaftConfig::default().heartbeat_interval_ms;
    // Heartbeats to 2 peers and their 2 answers per round; a round may straddle either end.
    let expected = 2 * 2 * rounds;
    assert!(
        sent.abs_diff(expected) <= 4,
        "{sent} messages in 10 s, {expected} expected"
    );
}

mod scripted;
