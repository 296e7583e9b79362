//! Scripted Raft runs between named members, for the states random runs reach too rarely: the
//! Raft paper's figure 8, and a response that outlives its term. Each runs once correct and
//! once with the planted bug, which it must catch.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::ids::{LogIndex, NodeId, Term};
use crate::raft::planted::RaftBug;
use crate::raft::{Entry, Envelope, HardState, Message, RaftConfig, RaftGroup, Role};
use crate::rng::Rng;
use crate::time::Instant;

/// A scripted run between named members: messages go only where `delivers` allows, every
/// write is durable at once. For the states random runs reach too rarely.
struct Script {
    groups: BTreeMap<NodeId, RaftGroup>,
    now: Instant,
}

impl Script {
    /// Members 1..=3 over the given durable logs (terms of entries 1, 2, ...) at `term`.
    fn new(logs: [&[u64]; 3], term: u64, bug: Option<RaftBug>) -> Script {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let config = RaftConfig {
            max_entries_per_append: 1,
            ..RaftConfig::default()
        };
        let mut rng = Rng::from_seed(1);
        let groups = ids
            .iter()
            .zip(logs)
            .map(|(id, terms)| {
                let entries = terms
                    .iter()
                    .enumerate()
                    .map(|(position, term)| Entry {
                        term: Term(*term),
                        index: LogIndex(position as u64 + 1),
                        body: Bytes::from(format!("{term}")),
                    })
                    .collect();
                let hard_state = HardState {
                    term: Term(term),
                    voted_for: None,
                };
                let group = RaftGroup::with_bug(
                    *id,
                    &ids,
                    hard_state,
                    entries,
                    config,
                    rng.fork(),
                    Instant(0),
                    bug,
                );
                (*id, group)
            })
            .collect();
        Script {
            groups,
            now: Instant(0),
        }
    }

    /// Lets time pass for `id` until it has sent something, delivering what `delivers`
    /// allows, until nothing is left or `stop` says so.
    fn run(
        &mut self,
        first: NodeId,
        delivers: impl Fn(&Envelope) -> bool,
        stop: impl Fn(&BTreeMap<NodeId, RaftGroup>) -> bool,
    ) {
        let group = self.groups.get_mut(&first).expect("a member");
        self.now = group.poll_timeout();
        group.tick(self.now);
        let mut queue: VecDeque<Envelope> = VecDeque::new();
        let mut active = VecDeque::from([first]);
        for _ in 0..10_000 {
            while let Some(id) = active.pop_front() {
                let group = self.groups.get_mut(&id).expect("a member");
                let ready = group.take_ready();
                if let Some(last) = group.log().last() {
                    group.on_persisted(last.index, last.term);
                }
                queue.extend(ready.send_now.into_iter().chain(ready.send_after_persist));
                if !group.take_ready().is_empty() {
                    active.push_back(id);
                }
            }
            if stop(&self.groups) {
                return;
            }
            let Some(envelope) = queue.pop_front() else {
                return;
            };
            if delivers(&envelope) {
                let group = self.groups.get_mut(&envelope.to).expect("a member");
                group.step(self.now, envelope.from, envelope.message);
                active.push_back(envelope.to);
            }
        }
    }
}

/// The Raft paper's figure 8: a leader of term 4 that has copied a term-2 entry to a majority
/// must not commit it by counting, for a member holding a term-3 entry there can still win.
fn figure_8(bug: Option<RaftBug>) -> LogIndex {
    let mut script = Script::new([&[1, 2], &[1], &[1, 3]], 3, bug);
    let (s1, s2, s3) = (NodeId(1), NodeId(2), NodeId(3));
    let between_1_and_2 = |envelope: &Envelope| envelope.from != s3 && envelope.to != s3;
    // Member 1 wins term 4 with member 2 and copies entry 2 (term 2) to it, one entry per
    // append: the run stops when its own no-op (entry 3) reaches member 2, before that is
    // acknowledged.
    script.run(s1, between_1_and_2, |groups| groups[&s2].log().len() >= 3);
    let leader = &script.groups[&s1];
    assert_eq!((leader.role(), leader.term()), (Role::Leader, Term(4)));
    leader.commit_index()
}

/// A leader counts only entries of its own term (figure 8), and the planted bug that counts
/// an older one commits an entry a later leader may overwrite.
#[test]
fn an_old_terms_entry_is_not_committed_by_counting_replicas() {
    assert_eq!(
        figure_8(None),
        LogIndex(0),
        "nothing of an older term commits by counting"
    );
    let with_bug = figure_8(Some(RaftBug::CommitOldTermByCounting));
    assert_eq!(
        with_bug,
        LogIndex(2),
        "the planted bug is caught: it commits entry 2 of term 2"
    );
}

/// A response from an older term is no evidence about the current log.
fn stale_success_raises_commit(bug: Option<RaftBug>) -> LogIndex {
    let mut script = Script::new([&[1], &[1], &[1]], 1, bug);
    let (s1, s2, s3) = (NodeId(1), NodeId(2), NodeId(3));
    // Member 1 leads term 2 with member 3; member 2 hears nothing of it.
    script.run(
        s1,
        |envelope| envelope.to != s2 && envelope.from != s2,
        |groups| groups[&s1].role() == Role::Leader,
    );
    let now = script.now;
    let leader = script.groups.get_mut(&s1).expect("a member");
    assert_eq!(leader.term(), Term(2));
    for body in ["a", "b", "c"] {
        leader.propose(Bytes::from_static(body.as_bytes()));
    }
    let _ = leader.take_ready();
    let last = leader.log().last().cloned().expect("entries");
    leader.on_persisted(last.index, last.term);
    // A success from member 2 in term 1, for an index it never had in term 2, arrives late.
    let stale = Message::AppendResponse {
        term: Term(1),
        success: true,
        match_index: last.index,
    };
    leader.step(now, s2, stale);
    let _ = s3;
    leader.commit_index()
}

/// The planted bug that lets a stale response raise a match index commits what no majority
/// holds.
#[test]
fn a_stale_response_never_raises_a_match_index() {
    assert_eq!(
        stale_success_raises_commit(None),
        LogIndex(0),
        "nothing commits"
    );
    let with_bug = stale_success_raises_commit(Some(RaftBug::StaleResponseRaisesMatch));
    assert!(
        with_bug > LogIndex(0),
        "the planted bug is caught: it commits {with_bug}"
    );
}

/// A member that voted for itself in term 2, restarted from its durable state, is asked for
/// its vote in term 2 by another candidate; returns whether it grants it.
fn grants_a_second_vote_after_restart(bug: Option<RaftBug>) -> bool {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let durable = HardState {
        term: Term(2),
        voted_for: Some(NodeId(1)),
    };
    let mut group = RaftGroup::with_bug(
        NodeId(1),
        &ids,
        durable,
        Vec::new(),
        RaftConfig::default(),
        Rng::from_seed(1),
        Instant(0),
        bug,
    );
    let request = Message::RequestVote {
        term: Term(2),
        last_log_index: LogIndex(0),
        last_log_term: Term(0),
        pre_vote: false,
    };
    group.step(Instant(1), NodeId(3), request);
    let ready = group.take_ready();
    ready.send_after_persist.iter().any(|envelope| {
        matches!(
            envelope.message,
            Message::VoteResponse { granted: true, .. }
        )
    })
}

/// A vote survives a restart: the planted bug that forgets it grants a second vote in the
/// same term (random runs reach this only when pre-votes let a second candidate stand in a
/// term the first one already claimed, which takes a partition, a crash and a heal in order).
#[test]
fn a_restarted_member_never_votes_twice_in_a_term() {
    assert!(
        !grants_a_second_vote_after_restart(None),
        "one vote per term"
    );
    let with_bug = grants_a_second_vote_after_restart(Some(RaftBug::ForgetVoteOnRestart));
    assert!(
        with_bug,
        "the planted bug is caught: it votes a second time"
    );
}

/// Messages no correct member sends are refused before they change anything: another leader
/// of the leader's own term, a log that contradicts a follower's committed entries, an
/// acknowledgement of entries the leader never had.
#[test]
fn impossible_messages_are_refused_unchanged() {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let entry = |index: u64, term: u64| Entry {
        term: Term(term),
        index: LogIndex(index),
        body: Bytes::from_static(b"e"),
    };
    // A follower in term 2 with two entries, both committed.
    let mut follower = RaftGroup::new(
        NodeId(1),
        &ids,
        HardState {
            term: Term(2),
            voted_for: None,
        },
        vec![entry(1, 1), entry(2, 2)],
        RaftConfig::default(),
        Rng::from_seed(1),
        Instant(0),
    );
    follower.restore_commit(LogIndex(2));
    let overwrite = Message::AppendEntries {
        term: Term(3),
        prev_log_index: LogIndex(1),
        prev_log_term: Term(1),
        entries: vec![entry(2, 3)],
        leader_commit: LogIndex(2),
    };
    assert!(!follower.step(Instant(1), NodeId(2), overwrite));
    let bad_previous = Message::AppendEntries {
        term: Term(3),
        prev_log_index: LogIndex(2),
        prev_log_term: Term(1),
        entries: Vec::new(),
        leader_commit: LogIndex(2),
    };
    assert!(!follower.step(Instant(1), NodeId(2), bad_previous));
    let from_nothing = Message::AppendEntries {
        term: Term(3),
        prev_log_index: LogIndex(0),
        prev_log_term: Term(2),
        entries: Vec::new(),
        leader_commit: LogIndex(0),
    };
    assert!(!follower.step(Instant(1), NodeId(2), from_nothing));
    assert_eq!(follower.term(), Term(2), "nothing changed");
    assert_eq!(follower.log(), [entry(1, 1), entry(2, 2)]);
    assert!(follower.take_ready().is_empty());

    // A member of three that wins an election with a second vote.
    let mut leader = RaftGroup::new(
        NodeId(3),
        &ids,
        HardState::default(),
        Vec::new(),
        RaftConfig::default(),
        Rng::from_seed(2),
        Instant(0),
    );
    leader.tick(Instant(10_000));
    let pre_vote_term = leader.term().0 + 1;
    let granted = |term: u64, pre_vote: bool| Message::VoteResponse {
        term: Term(term),
        granted: true,
        pre_vote,
    };
    assert!(leader.step(Instant(10_001), NodeId(2), granted(pre_vote_term, true)));
    let term = leader.term().0;
    assert!(leader.step(Instant(10_002), NodeId(2), granted(term, false)));
    assert_eq!(leader.role(), Role::Leader);
    let second_leader = Message::AppendEntries {
        term: Term(term),
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries: Vec::new(),
        leader_commit: LogIndex(0),
    };
    assert!(!leader.step(Instant(10_003), NodeId(1), second_leader));
    let beyond = Message::AppendResponse {
        term: Term(term),
        success: true,
        match_index: LogIndex(leader.last_index().0 + 5),
    };
    assert!(!leader.step(Instant(10_004), NodeId(1), beyond));
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.commit_index(), LogIndex(0));
}
