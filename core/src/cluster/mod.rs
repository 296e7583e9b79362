//! Raft groups inside the node: what turns a [`RaftGroup`]'s [`Ready`] into the node's commands,
//! and storage's answers back into the group.
//!
//! One [`GroupDriver`] per replicated log. After every input the node calls
//! [`GroupDriver::drain`], which, in the order [`Ready`] prescribes:
//!
//! 1. sends the messages that promise nothing about this member's disk (`SendToPeer`);
//! 2. asks storage for the truncation, the appends and one `Persist` barrier carrying the
//!    term and vote when they changed; the messages that promise what is on disk (votes,
//!    append acknowledgements) wait for that barrier's answer ([`GroupDriver::on_persisted`]);
//! 3. returns the newly committed entries, for the node to apply in order.
//!
//! The commit index rides along in the saved state (lagging is harmless): a restarted member
//! applies its log up to it at once, and the rest when a leader says it is committed.

#[cfg(any(test, feature = "testing"))]
pub mod simulation;

use std::collections::VecDeque;

use bytes::Bytes;
use krest_proto::peer::{peer_frame, PeerFrame};

use crate::ids::{LogIndex, NodeId, Term};
use crate::io::{Command, LogId, LogRecord, RaftState, StorageRequest};
use crate::raft::{wire, Entry, Envelope, HardState, Message, RaftGroup};
use crate::time::Instant;

/// A persistence barrier in flight.
#[derive(Debug)]
struct Barrier {
    token: u64,
    /// The last entry written before it, with its term.
    last: (LogIndex, Term),
    /// Messages that may go once it is answered.
    messages: Vec<Envelope>,
}

/// One group of the node, with its persistence in flight. See the module documentation.
#[derive(Debug)]
pub struct GroupDriver {
    log: LogId,
    group: RaftGroup,
    barriers: VecDeque<Barrier>,
    next_token: u64,
    /// The state last handed to storage.
    saved: RaftState,
    /// Entries applied by the node (handed out by `drain`, or at recovery).
    applied: LogIndex,
    /// Messages sent, for metrics.
    pub messages_sent: u64,
    /// Their bytes, length prefixes included.
    pub bytes_sent: u64,
}

impl GroupDriver {
    /// Drives `group`, the group of `log`, whose state on disk is `saved` and whose entries up
    /// to `saved.commit` were applied at recovery.
    pub fn new(log: LogId, mut group: RaftGroup, saved: RaftState) -> GroupDriver {
        group.restore_commit(saved.commit);
        let applied = group.commit_index();
        GroupDriver {
            log,
            group,
            barriers: VecDeque::new(),
            next_token: 1,
            saved,
            applied,
            messages_sent: 0,
            bytes_sent: 0,
        }
    }

    /// The group.
    pub fn group(&self) -> &RaftGroup {
        &self.group
    }

    /// Plants a consensus bug (tests of the checkers only).
    pub(crate) fn plant(&mut self, bug: crate::raft::planted::RaftBug) {
        self.group.plant(bug);
    }

    /// The log it replicates.
    pub fn log(&self) -> LogId {
        self.log
    }

    /// How far the node applied.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Time passes.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.group.poll_timeout() {
            self.group.tick(now);
        }
    }

    /// When `tick` is next needed.
    pub fn poll_timeout(&self) -> Instant {
        self.group.poll_timeout()
    }

    /// A message from a peer; `false` if no correct peer could have sent it (dropped).
    pub fn step(&mut self, now: Instant, from: NodeId, message: Message) -> bool {
        self.group.step(now, from, message)
    }

    /// Proposes `body` if this member leads and has committed in its term (so its applied state
    /// is the whole committed log); returns the entry's index and term.
    pub fn propose(&mut self, body: Bytes) -> Option<(LogIndex, Term)> {
        if !self.group.leads_committed() {
            return None;
        }
        let index = self.group.propose(body)?;
        Some((index, self.group.term()))
    }

    /// Carries out what the group asks (see the module documentation); returns the entries
    /// newly committed, to apply in order.
    pub fn drain(&mut self, commands: &mut VecDeque<Command>) -> Vec<Entry> {
        let mut ready = self.group.take_ready();
        for envelope in &ready.send_now {
            self.send(envelope, commands);
        }
        let log = self.log;
        if let Some(after) = ready.truncate_after {
            commands.push_back(Command::Storage(StorageRequest::TruncateAfter {
                log,
                index: after,
            }));
        }
        if !ready.append.is_empty() {
            let records = ready
                .append
                .iter()
                .map(|entry| LogRecord {
                    term: entry.term,
                    index: entry.index,
                    body: entry.body.clone(),
                })
                .collect();
            commands.push_back(Command::Storage(StorageRequest::Append { log, records }));
        }
        let mut committed = std::mem::take(&mut ready.committed);
        if crate::planted::active(crate::planted::PlantedBug::ApplyBeforeCommit) {
            // Applies what it appends, as if it had committed.
            let early: Vec<Entry> = ready
                .append
                .iter()
                .filter(|entry| entry.index > self.applied)
                .cloned()
                .collect();
            committed.retain(|entry| entry.index > self.applied);
            if let Some(last) = early.last() {
                committed.retain(|entry| entry.index > last.index);
                let mut all = early;
                all.append(&mut committed);
                committed = all;
            }
        }
        if let Some(last) = committed.last() {
            self.applied = self.applied.max(last.index);
        }
        let state_changed = ready.hard_state.is_some_and(|state| {
            state.term != self.saved.term || state.voted_for != self.saved.voted_for
        });
        // The commit index is saved when it moved; it costs a state file write, which the
        // metadata group's rare writes afford.
        let commit_moved = self.applied > self.saved.commit;
        if ready.needs_persist() || !ready.send_after_persist.is_empty() || commit_moved {
            let hard_state: HardState = ready.hard_state.unwrap_or(HardState {
                term: self.saved.term,
                voted_for: self.saved.voted_for,
            });
            let raft_state = (state_changed || commit_moved).then_some(RaftState {
                term: hard_state.term,
                voted_for: hard_state.voted_for,
                commit: self.applied,
            });
            if let Some(state) = raft_state {
                self.saved = state;
            }
            let token = self.next_token;
            self.next_token += 1;
            commands.push_back(Command::Storage(StorageRequest::Persist {
                log,
                raft_state,
                token,
            }));
            let last_index = self.group.last_index();
            let last_term = self.group.term_at(last_index).expect("the last entry");
            self.barriers.push_back(Barrier {
                token,
                last: (last_index, last_term),
                messages: ready.send_after_persist,
            });
        }
        committed
    }

    /// Storage answered the barrier `token`: what it covered is durable; its messages go.
    /// Barriers are answered in order.
    pub fn on_persisted(&mut self, token: u64, commands: &mut VecDeque<Command>) {
        while self
            .barriers
            .front()
            .is_some_and(|barrier| barrier.token <= token)
        {
            let barrier = self.barriers.pop_front().expect("checked");
            let (index, term) = barrier.last;
            self.group.on_persisted(index, term);
            for envelope in &barrier.messages {
                self.send(envelope, commands);
            }
        }
    }

    fn send(&mut self, envelope: &Envelope, commands: &mut VecDeque<Command>) {
        self.messages_sent += 1;
        let frame = PeerFrame {
            body: Some(peer_frame::Body::Raft(wire::encode(self.log, envelope))),
        };
        let frame = krest_proto::frame::frame_bytes(&frame);
        self.bytes_sent += frame.len() as u64;
        commands.push_back(Command::SendToPeer {
            peer: envelope.to,
            frame,
        });
    }
}
