//! One member of one Raft group: terms, pre-vote, votes, check-quorum, log replication and the
//! commit index, as a sans-IO state machine. See the module documentation of [`crate::raft`].

use std::collections::BTreeMap;

use bytes::Bytes;

use super::message::{Entry, Envelope, HardState, Message, Ready};
use super::planted::RaftBug;
use super::quorum::{majority, majority_index, vote_result, VoteResult};
use crate::ids::{LogIndex, NodeId, Term};
use crate::rng::Rng;
use crate::time::{Instant, Millis};

/// Timing and batching of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftConfig {
    /// A follower that hears nothing from a leader for about this long starts an election;
    /// a leader that hears from no majority for this long steps down.
    pub election_timeout_ms: u64,
    /// How often a leader sends heartbeats (and retries appends).
    pub heartbeat_interval_ms: u64,
    /// Entries per `AppendEntries` message, at most.
    pub max_entries_per_append: usize,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            election_timeout_ms: 300,
            heartbeat_interval_ms: 50,
            max_entries_per_append: 64,
        }
    }
}

/// What a member is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks whether it would win, without changing term.
    PreCandidate,
    /// Stands for election in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The highest index known to match, durably, on the follower.
    match_index: LogIndex,
    /// The next index to send.
    next_index: LogIndex,
    /// Heard from since the last quorum check.
    active: bool,
}

/// One member of one group. See the module documentation.
#[derive(Debug)]
pub struct RaftGroup {
    id: NodeId,
    voters: Vec<NodeId>,
    /// The voters but this member, in id order.
    peers: Vec<NodeId>,
    config: RaftConfig,
    rng: Rng,
    hard_state: HardState,
    /// `log[i]` has index `i + 1`.
    log: Vec<Entry>,
    persisted_index: LogIndex,
    commit_index: LogIndex,
    applied_index: LogIndex,
    role: Role,
    leader: Option<NodeId>,
    last_leader_contact: Option<Instant>,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    election_deadline: Instant,
    heartbeat_deadline: Instant,
    quorum_check_deadline: Instant,
    now: Instant,
    ready: Ready,
    bug: Option<RaftBug>,
    /// Elections this member started (not counting pre-votes) and won, for metrics.
    elections: (u64, u64),
}

impl RaftGroup {
    /// A member `id` of the group of `voters`, restarted from what it made durable (`hard_state`
    /// and `entries`, consecutive from index 1), at `now`.
    pub fn new(
        id: NodeId,
        voters: &[NodeId],
        hard_state: HardState,
        entries: Vec<Entry>,
        config: RaftConfig,
        rng: Rng,
        now: Instant,
    ) -> RaftGroup {
        RaftGroup::with_bug(id, voters, hard_state, entries, config, rng, now, None)
    }

    /// [`RaftGroup::new`] with a planted bug (tests of the checkers only).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_bug(
        id: NodeId,
        voters: &[NodeId],
        mut hard_state: HardState,
        entries: Vec<Entry>,
        config: RaftConfig,
        rng: Rng,
        now: Instant,
        bug: Option<RaftBug>,
    ) -> RaftGroup {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        assert!(voters.contains(&id), "a member votes in its group");
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index.0,
                position as u64 + 1,
                "entries are consecutive from 1"
            );
        }
        if bug == Some(RaftBug::ForgetVoteOnRestart) {
            hard_state.voted_for = None;
        }
        let persisted_index = LogIndex(entries.len() as u64);
        let peers = voters
            .iter()
            .copied()
            .filter(|voter| *voter != id)
            .collect();
        let mut group = RaftGroup {
            id,
            voters,
            peers,
            config,
            rng,
            hard_state,
            log: entries,
            persisted_index,
            commit_index: LogIndex(0),
            applied_index: LogIndex(0),
            role: Role::Follower,
            leader: None,
            last_leader_contact: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            election_deadline: now,
            heartbeat_deadline: now,
            quorum_check_deadline: now,
            now,
            ready: Ready::default(),
            bug,
            elections: (0, 0),
        };
        group.reset_election_deadline();
        group
    }

    /// Plants `bug` in a group just built (tests of the checkers only): as if it had been
    /// built [`RaftGroup::with_bug`].
    pub(crate) fn plant(&mut self, bug: RaftBug) {
        if bug == RaftBug::ForgetVoteOnRestart {
            self.hard_state.voted_for = None;
        }
        self.bug = Some(bug);
    }

    /// Starts from a commit index this member saved earlier (capped at its log): the entries
    /// up to it were applied from the log at recovery and are not handed out again.
    pub fn restore_commit(&mut self, commit: LogIndex) {
        let commit = commit.min(self.last_index());
        assert!(
            self.commit_index == LogIndex(0),
            "restored once, before any step"
        );
        self.commit_index = commit;
        self.applied_index = commit;
    }

    /// Whether this member leads and has committed an entry of its own term: every entry of
    /// earlier terms is committed, so what it applied is the whole committed log.
    pub fn leads_committed(&self) -> bool {
        self.role == Role::Leader && self.term_at(self.commit_index) == Some(self.hard_state.term)
    }

    /// Elections started (past the pre-vote) and won by this member since it started.
    pub fn elections(&self) -> (u64, u64) {
        self.elections
    }

    /// The voters.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its current term.
    pub fn term(&self) -> Term {
        self.hard_state.term
    }

    /// The leader it knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Its commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// Its log, durable or not.
    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// The index of its last entry.
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.log.len() as u64)
    }

    /// The term of the entry at `index` (term 0 at index 0), if it has one.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        match index.0 {
            0 => Some(Term(0)),
            index => self.log.get(index as usize - 1).map(|entry| entry.term),
        }
    }

    fn last_term(&self) -> Term {
        self.term_at(self.last_index())
            .expect("the last entry exists")
    }

    /// When [`RaftGroup::tick`] is next needed.
    pub fn poll_timeout(&self) -> Instant {
        match self.role {
            Role::Leader => self.heartbeat_deadline.min(self.quorum_check_deadline),
            _ => self.election_deadline,
        }
    }

    /// Time passes: elections start, heartbeats go, a leader without a quorum steps down.
    pub fn tick(&mut self, now: Instant) {
        assert!(now >= self.now, "time never goes backwards");
        self.now = now;
        if self.role == Role::Leader {
            if now >= self.quorum_check_deadline {
                self.check_quorum();
            }
            if self.role == Role::Leader && now >= self.heartbeat_deadline {
                self.heartbeat_deadline = now + Millis(self.config.heartbeat_interval_ms);
                self.broadcast_append();
            }
        } else if now >= self.election_deadline {
            self.campaign(true);
        }
    }

    /// Appends `body` as a new entry if this member leads; returns its index.
    pub fn propose(&mut self, body: Bytes) -> Option<LogIndex> {
        if self.role != Role::Leader {
            return None;
        }
        let index = self.append_own(body);
        self.broadcast_append();
        Some(index)
    }

    /// Everything up to `index`, whose entry has `term`, is durable (a report about an entry
    /// since truncated is ignored).
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        if index > self.persisted_index && self.term_at(index) == Some(term) {
            self.persisted_index = index;
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
    }

    /// What the driver must do now; see [`Ready`].
    pub fn take_ready(&mut self) -> Ready {
        let applicable = self.commit_index.min(self.persisted_index);
        while self.applied_index < applicable {
            self.applied_index = self.applied_index.next();
            let entry = &self.log[self.applied_index.0 as usize - 1];
            self.ready.committed.push(entry.clone());
        }
        std::mem::take(&mut self.ready)
    }

    /// A message from `from`, at `now` (leases and election deadlines are measured from it).
    /// Returns `false` for a message no correct member could have sent (another leader of this
    /// member's term, a log that contradicts what this member knows to be committed, an
    /// acknowledgement of entries this leader never had): it is dropped before it changes
    /// anything, and the driver counts it. With correct peers it never happens; the simulator
    /// checks that.
    pub fn step(&mut self, now: Instant, from: NodeId, message: Message) -> bool {
        assert!(now >= self.now, "time never goes backwards");
        self.now = now;
        if from == self.id || !self.voters.contains(&from) {
            return false; // not from a member: dropped, never trusted
        }
        if self.bug.is_none() && !self.possible(&message) {
            return false;
        }
        let term = message.term();
        if term > self.term() {
            match &message {
                Message::RequestVote { pre_vote: true, .. } => {}
                Message::VoteResponse {
                    pre_vote: true,
                    granted: true,
                    ..
                } => {}
                // A member in a leader's lease does not let a newcomer disrupt it.
                Message::RequestVote {
                    pre_vote: false, ..
                } if self.in_lease() => return true,
                Message::AppendEntries { .. } => self.become_follower(term, Some(from)),
                _ => self.become_follower(term, None),
            }
        } else if term < self.term() {
            let stale_append_accepted = self.bug == Some(RaftBug::AcceptStaleTermAppend);
            let stale_response_accepted = self.bug == Some(RaftBug::StaleResponseRaisesMatch);
            match message {
                Message::AppendEntries { .. } if stale_append_accepted => {}
                Message::AppendResponse { .. } if stale_response_accepted => {}
                Message::AppendEntries { .. } => {
                    // Tells the stale leader there is a newer term.
                    let refusal = Message::AppendResponse {
                        term: self.term(),
                        success: false,
                        match_index: self.last_index(),
                    };
                    self.send_now(from, refusal);
                    return true;
                }
                Message::RequestVote { pre_vote, .. } => {
                    let refusal = Message::VoteResponse {
                        term: self.term(),
                        granted: false,
                        pre_vote,
                    };
                    self.send_now(from, refusal);
                    return true;
                }
                _ => return true,
            }
        }
        match message {
            Message::RequestVote {
                term,
                last_log_index,
                last_log_term,
                pre_vote,
            } => self.on_request_vote(from, term, last_log_index, last_log_term, pre_vote),
            Message::VoteResponse {
                term,
                granted,
                pre_vote,
            } => self.on_vote_response(from, term, granted, pre_vote),
            Message::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => {
                self.on_append_entries(from, prev_log_index, prev_log_term, entries, leader_commit)
            }
            Message::AppendResponse {
                success,
                match_index,
                ..
            } => self.on_append_response(from, success, match_index),
        }
        true
    }

    /// Whether a correct member could have sent `message` to this one now (see `step`).
    fn possible(&self, message: &Message) -> bool {
        // No cluster counts terms or indexes this far (a term a millisecond for a hundred
        // million years stays below): a number beyond would only overflow the arithmetic.
        const LIMIT: u64 = 1 << 62;
        let numbers_in_range = match message {
            Message::RequestVote {
                term,
                last_log_index,
                last_log_term,
                ..
            } => [term.0, last_log_index.0, last_log_term.0]
                .iter()
                .all(|n| *n < LIMIT),
            Message::VoteResponse { term, .. } => term.0 < LIMIT,
            Message::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                [term.0, prev_log_index.0, prev_log_term.0, leader_commit.0]
                    .iter()
                    .all(|n| *n < LIMIT)
                    && entries
                        .iter()
                        .all(|entry| entry.index.0 < LIMIT && entry.term.0 < LIMIT)
            }
            Message::AppendResponse {
                term, match_index, ..
            } => term.0 < LIMIT && match_index.0 < LIMIT,
        };
        if !numbers_in_range {
            return false;
        }
        match message {
            Message::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                if *term == self.term() && self.role == Role::Leader {
                    return false; // a second leader in this member's term
                }
                if *term < self.term() {
                    return true; // refused as stale anyway
                }
                if prev_log_index.0 == 0 && prev_log_term.0 != 0 {
                    return false;
                }
                // Every leader's log holds this member's committed entries.
                let committed = self.commit_index;
                let contradicts = |index: LogIndex, term: Term| {
                    index <= committed && self.term_at(index).is_some_and(|held| held != term)
                };
                !contradicts(*prev_log_index, *prev_log_term)
                    && !entries
                        .iter()
                        .any(|entry| contradicts(entry.index, entry.term))
            }
            Message::AppendResponse {
                term,
                success: true,
                match_index,
            } => {
                *term != self.term()
                    || self.role != Role::Leader
                    || *match_index <= self.last_index()
            }
            _ => true,
        }
    }

    fn on_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        pre_vote: bool,
    ) {
        let mut up_to_date =
            (last_log_term, last_log_index) >= (self.last_term(), self.last_index());
        match self.bug {
            Some(RaftBug::GrantVoteWithoutLogCheck) => up_to_date = true,
            Some(RaftBug::HighestIdWins) => up_to_date = from > self.id,
            _ => {}
        }
        if pre_vote {
            // Would vote in `term`: it is ahead of ours, the log is up to date, and no leader
            // is in its lease here.
            let granted = term > self.term() && up_to_date && !self.in_lease();
            let answer_term = if granted { term } else { self.term() };
            let answer = Message::VoteResponse {
                term: answer_term,
                granted,
                pre_vote: true,
            };
            return self.send_now(from, answer);
        }
        // A real vote: the term is ours now.
        let free = self.hard_state.voted_for.is_none_or(|voted| voted == from);
        let granted = free && up_to_date && self.role != Role::Leader;
        if granted && self.hard_state.voted_for != Some(from) {
            self.hard_state.voted_for = Some(from);
            self.ready.hard_state = Some(self.hard_state);
            self.reset_election_deadline();
        }
        let answer = Message::VoteResponse {
            term: self.term(),
            granted,
            pre_vote: false,
        };
        // The vote promises what is on disk: it goes after the vote is durable.
        self.send_after_persist(from, answer);
    }

    fn on_vote_response(&mut self, from: NodeId, term: Term, granted: bool, pre_vote: bool) {
        let expected = match pre_vote {
            true => self.role == Role::PreCandidate && term == Term(self.term().0 + 1),
            false => self.role == Role::Candidate && term == self.term(),
        };
        // A refused pre-vote counts whatever term it carries; anything else must answer this
        // very candidacy.
        let refused_pre_vote = pre_vote && !granted && self.role == Role::PreCandidate;
        if !(expected || refused_pre_vote) {
            return;
        }
        self.votes.insert(from, granted);
        let granted_count = self.votes.values().filter(|granted| **granted).count();
        let rejected_count = self.votes.len() - granted_count;
        match vote_result(self.voters.len(), granted_count, rejected_count) {
            VoteResult::Won if pre_vote => self.campaign(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                let term = self.term();
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    fn on_append_entries(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        // One leader per term: `possible` dropped an append from another leader of this term.
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.term();
            self.become_follower(term, Some(from));
        }
        self.last_leader_contact = Some(self.now);
        self.reset_election_deadline();
        if prev_log_index > self.last_index() {
            return self.refuse_append(from, self.last_index());
        }
        if self.term_at(prev_log_index) != Some(prev_log_term) {
            // Committed entries match every leader's log (`possible` checked it).
            return self.refuse_append(from, LogIndex(prev_log_index.0 - 1));
        }
        let matched = LogIndex(prev_log_index.0 + entries.len() as u64);
        if self.bug == Some(RaftBug::StaleAppendTruncates) && matched < self.last_index() {
            self.truncate_after(matched);
        }
        for entry in entries {
            match self.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    // Never a committed entry (`possible` checked it).
                    self.truncate_after(LogIndex(entry.index.0 - 1));
                }
                None => {}
            }
            self.log.push(entry.clone());
            self.ready.append.push(entry);
        }
        let commit = leader_commit.min(matched);
        if commit > self.commit_index {
            self.commit_index = commit;
        }
        let answer = Message::AppendResponse {
            term: self.term(),
            success: true,
            match_index: matched,
        };
        // The acknowledgement promises the entries are durable: it goes after the fsync.
        match self.bug {
            Some(RaftBug::AckBeforeFsync) => self.send_now(from, answer),
            _ => self.send_after_persist(from, answer),
        }
    }

    fn on_append_response(&mut self, from: NodeId, success: bool, match_index: LogIndex) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.last_index();
        let progress = self
            .progress
            .get_mut(&from)
            .expect("a leader tracks every voter");
        progress.active = true;
        if success {
            progress.match_index = progress.match_index.max(match_index);
            progress.next_index = progress.next_index.max(progress.match_index.next());
            self.maybe_commit();
        } else {
            // Go back, but never below what is known to match.
            let back = LogIndex(progress.next_index.0.saturating_sub(1)).min(match_index.next());
            progress.next_index = back.max(progress.match_index.next()).max(LogIndex(1));
        }
        let progress = self.progress[&from];
        if !success || progress.next_index <= last_index {
            self.send_append(from);
        }
    }

    /// Starts a pre-vote (`pre_vote`) or an election.
    fn campaign(&mut self, pre_vote: bool) {
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline();
        let term = if pre_vote {
            self.role = Role::PreCandidate;
            Term(self.term().0 + 1)
        } else {
            self.role = Role::Candidate;
            self.elections.0 += 1;
            self.hard_state.term = Term(self.term().0 + 1);
            self.hard_state.voted_for = Some(self.id);
            self.ready.hard_state = Some(self.hard_state);
            self.term()
        };
        if vote_result(self.voters.len(), 1, 0) == VoteResult::Won {
            return match pre_vote {
                true => self.campaign(false),
                false => self.become_leader(),
            };
        }
        let request = Message::RequestVote {
            term,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
            pre_vote,
        };
        // Term and vote are durable before a real request goes out.
        let from = self.id;
        let requests = self.peers.iter().map(|&to| Envelope {
            from,
            to,
            message: request.clone(),
        });
        match pre_vote {
            true => self.ready.send_now.extend(requests),
            false => self.ready.send_after_persist.extend(requests),
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term() {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.ready.hard_state = Some(self.hard_state);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_deadline();
    }

    fn become_leader(&mut self) {
        self.elections.1 += 1;
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        let next_index = self.last_index().next();
        self.progress = self
            .peers
            .iter()
            .map(|&voter| {
                let progress = Progress {
                    match_index: LogIndex(0),
                    next_index,
                    active: true,
                };
                (voter, progress)
            })
            .collect();
        self.heartbeat_deadline = self.now + Millis(self.config.heartbeat_interval_ms);
        self.quorum_check_deadline = self.now + Millis(self.config.election_timeout_ms);
        // A no-op of the new term: entries of older terms commit with it.
        self.append_own(Bytes::new());
        self.broadcast_append();
        self.maybe_commit();
    }

    /// A leader that heard from no majority since the last check steps down.
    fn check_quorum(&mut self) {
        let active = 1 + self
            .progress
            .values()
            .filter(|progress| progress.active)
            .count();
        for progress in self.progress.values_mut() {
            progress.active = false;
        }
        self.quorum_check_deadline = self.now + Millis(self.config.election_timeout_ms);
        if active < majority(self.voters.len()) {
            let term = self.term();
            self.become_follower(term, None);
        }
    }

    fn maybe_commit(&mut self) {
        let matches: Vec<LogIndex> = self
            .voters
            .iter()
            .map(|voter| match *voter == self.id {
                true => self.persisted_index,
                false => self.progress[voter].match_index,
            })
            .collect();
        let candidate = match self.bug {
            Some(RaftBug::CommitOnMinority) => matches.iter().copied().max().unwrap_or_default(),
            _ => majority_index(&matches),
        };
        if candidate <= self.commit_index {
            return;
        }
        // Only entries of the leader's own term commit by counting (the Raft paper's figure 8).
        let own_term = self.term_at(candidate) == Some(self.term());
        if own_term || self.bug == Some(RaftBug::CommitOldTermByCounting) {
            // Followers learn it with the next append or heartbeat.
            self.commit_index = candidate;
        }
    }

    /// Refuses an append whose previous entry does not match; `hint` is where to go back to.
    fn refuse_append(&mut self, to: NodeId, hint: LogIndex) {
        let refusal = Message::AppendResponse {
            term: self.term(),
            success: false,
            match_index: hint,
        };
        self.send_now(to, refusal);
    }

    fn append_own(&mut self, body: Bytes) -> LogIndex {
        let entry = Entry {
            term: self.term(),
            index: self.last_index().next(),
            body,
        };
        let index = entry.index;
        self.log.push(entry.clone());
        self.ready.append.push(entry);
        index
    }

    fn truncate_after(&mut self, index: LogIndex) {
        self.log.truncate(index.0 as usize);
        self.persisted_index = self.persisted_index.min(index);
        let truncation = self
            .ready
            .truncate_after
            .map_or(index, |earlier| earlier.min(index));
        self.ready.truncate_after = Some(truncation);
        self.ready.append.retain(|entry| entry.index <= index);
    }

    fn broadcast_append(&mut self) {
        for index in 0..self.peers.len() {
            self.send_append(self.peers[index]);
        }
    }

    fn send_append(&mut self, to: NodeId) {
        let next_index = self.progress[&to].next_index;
        let prev_log_index = LogIndex(next_index.0 - 1);
        let start = prev_log_index.0 as usize;
        let end = self
            .log
            .len()
            .min(start + self.config.max_entries_per_append);
        let append = Message::AppendEntries {
            term: self.term(),
            prev_log_index,
            prev_log_term: self
                .term_at(prev_log_index)
                .expect("next index within the log"),
            entries: self.log[start..end].to_vec(),
            leader_commit: self.commit_index,
        };
        self.send_now(to, append);
    }

    fn in_lease(&self) -> bool {
        let timeout = Millis(self.config.election_timeout_ms);
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self
                        .last_leader_contact
                        .is_some_and(|contact| self.now < contact + timeout)
            }
        }
    }

    /// Among up-to-date candidates the higher id times out first (the original Krest-MQ's
    /// "Kid" rule), with seeded jitter below a quarter of the step between two ranks, so that
    /// rank decides even when heartbeats reached the members some ms apart. Even the first rank
    /// waits one step past the election timeout, the lease the others grant their leader, so
    /// its pre-vote does not meet members whose lease has a few milliseconds left.
    fn reset_election_deadline(&mut self) {
        let base = self.config.election_timeout_ms;
        let rank = self.voters.iter().filter(|voter| **voter > self.id).count() as u64;
        let step = (base / self.voters.len() as u64).max(4);
        let timeout = base + (rank + 1) * step + self.rng.below(step / 4);
        self.election_deadline = self.now + Millis(timeout);
    }

    fn send_now(&mut self, to: NodeId, message: Message) {
        let from = self.id;
        self.ready.send_now.push(Envelope { from, to, message });
    }

    fn send_after_persist(&mut self, to: NodeId, message: Message) {
        let from = self.id;
        self.ready
            .send_after_persist
            .push(Envelope { from, to, message });
    }
}
