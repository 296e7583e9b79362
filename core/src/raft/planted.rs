//! Deliberate consensus bugs that prove the Raft checkers can fail. Each is a small, realistic
//! mistake compiled into the handler it would live in, switched on per group by the tests of
//! [`super::tests`] only ([`super::RaftGroup::with_bug`] is crate-private); production groups
//! carry `None`. They join `krest_core::planted` when the simulator runs clusters.

/// A consensus bug the Raft checkers must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RaftBug {
    /// A vote is granted without checking that the candidate's log is up to date.
    GrantVoteWithoutLogCheck,
    /// The leader commits what any one member holds, not a majority.
    CommitOnMinority,
    /// An entry of an older term commits by counting replicas (the Raft paper's figure 8).
    CommitOldTermByCounting,
    /// An append from a stale term is accepted as if current.
    AcceptStaleTermAppend,
    /// A restart forgets the vote of the current term.
    ForgetVoteOnRestart,
    /// A follower acknowledges an append before its fsync.
    AckBeforeFsync,
    /// An append shorter than the follower's log truncates the matching entries after it.
    StaleAppendTruncates,
    /// A response from a stale term raises a leader's match index.
    StaleResponseRaisesMatch,
    /// The original's election: a higher id wins the vote whatever its log.
    HighestIdWins,
}

impl RaftBug {
    /// Every planted Raft bug.
    pub const ALL: [RaftBug; 9] = [
        RaftBug::GrantVoteWithoutLogCheck,
        RaftBug::CommitOnMinority,
        RaftBug::CommitOldTermByCounting,
        RaftBug::AcceptStaleTermAppend,
        RaftBug::ForgetVoteOnRestart,
        RaftBug::AckBeforeFsync,
        RaftBug::StaleAppendTruncates,
        RaftBug::StaleResponseRaisesMatch,
        RaftBug::HighestIdWins,
    ];
}
