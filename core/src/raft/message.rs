//! What the members of one Raft group say to each other, and what a group hands its driver.

use bytes::Bytes;

use crate::ids::{LogIndex, NodeId, Term};

/// One log entry: its term, its index and its body (empty for a new leader's no-op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log, from 1.
    pub index: LogIndex,
    /// What the state machine applies.
    pub body: Bytes,
}

/// The state that must be durable before a vote is sent or a term is acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this member has seen.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub voted_for: Option<NodeId>,
}

/// A message between two members of a group. Every message carries the sender's term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A candidate asks for a vote (`pre_vote`: asks whether it would get one, in `term`, the
    /// term it would stand in, without anyone changing term).
    RequestVote {
        /// The term the candidate stands in.
        term: Term,
        /// The index of its last entry.
        last_log_index: LogIndex,
        /// The term of its last entry.
        last_log_term: Term,
        /// A pre-vote: nobody changes term or vote.
        pre_vote: bool,
    },
    /// The answer to a `RequestVote`.
    VoteResponse {
        /// The voter's term (for a pre-vote: the term asked about, when granted).
        term: Term,
        /// Whether the vote is granted.
        granted: bool,
        /// Whether it answers a pre-vote.
        pre_vote: bool,
    },
    /// The leader replicates entries after `prev_log_index` (none: a heartbeat).
    AppendEntries {
        /// The leader's term.
        term: Term,
        /// The index just before the entries.
        prev_log_index: LogIndex,
        /// The term of that entry.
        prev_log_term: Term,
        /// The entries, consecutive from `prev_log_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The answer to an `AppendEntries`.
    AppendResponse {
        /// The follower's term.
        term: Term,
        /// Whether the entries matched and are durable.
        success: bool,
        /// On success: the last index known to match the leader's log, durably. On a refusal:
        /// the follower's last index, a hint where to go back to.
        match_index: LogIndex,
    },
}

impl Message {
    /// The sender's term.
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendResponse { term, .. } => *term,
        }
    }
}

/// A message with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// What it says.
    pub message: Message,
}

/// What a group asks of its driver after an input, in this order:
///
/// 1. send [`Ready::send_now`] (they promise nothing about this member's disk);
/// 2. make durable, in one step: `hard_state`, then the truncation after `truncate_after`, then
///    the `append`ed entries;
/// 3. once durable, tell the group with [`RaftGroup::on_persisted`](super::RaftGroup::on_persisted)
///    and only then send [`Ready::send_after_persist`] (votes and append acknowledgements promise
///    what is on disk);
/// 4. apply [`Ready::committed`] in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Messages that may go at once.
    pub send_now: Vec<Envelope>,
    /// The term and vote to make durable, if they changed.
    pub hard_state: Option<HardState>,
    /// Remove every entry after this index, durably, before appending.
    pub truncate_after: Option<LogIndex>,
    /// Entries to append after the truncation.
    pub append: Vec<Entry>,
    /// Messages that may go only once everything above is durable.
    pub send_after_persist: Vec<Envelope>,
    /// Entries newly committed, in index order, for the state machine.
    pub committed: Vec<Entry>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self == &Ready::default()
    }

    /// Whether anything must be made durable.
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.truncate_after.is_some() || !self.append.is_empty()
    }
}
