//! Deliberate bugs that prove the simulator's checkers can fail (feature `planted-bugs`).
//!
//! Each [`PlantedBug`] is a small, realistic mistake compiled into the code it would live in,
//! behind [`active`]. Without the feature, [`active`] is a constant `false` and the compiler
//! removes every planted branch, so a release build carries none of them. With the feature, the
//! simulator chooses at most one bug at run time with [`set_active`] and checks that some
//! checker catches it (`krest-sim --planted-bugs`).

/// A bug the simulator must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// A publish is confirmed as soon as it is appended, before its fsync.
    ConfirmBeforeSync,
    /// An ack is confirmed as soon as it is applied, before its record is durable.
    AckBeforeSync,
    /// A lease that runs out is forgotten: the message is neither redelivered nor released.
    SkipRedeliveryAfterLeaseExpiry,
    /// A lease runs out after half the ack timeout.
    ExpireLeaseEarly,
    /// A delayed message may be delivered up to a second before its deliver-at time.
    DeliverDelayedEarly,
    /// Now and then the next two first deliveries of a subscription go out swapped.
    SwapFirstDeliveries,
    /// Recovery skips a corrupt record followed by valid ones instead of refusing the log.
    SkipCorruptRecord,
    /// Recovery ignores ack records: acked messages come back after a restart.
    ForgetAcksAfterRestart,
    /// Recovery does not rebuild the idempotency table: a retried publish is stored twice.
    ForgetIdempotencyAfterRestart,
    /// Drop-oldest counts one message too many and drops while the queue still has room.
    MiscountDropOldest,
    /// A payload read back from disk is put into the next message on disk, not its own.
    MixUpPayloadsReadBack,
    /// Raft: a vote is granted without checking that the candidate's log is up to date.
    RaftGrantVoteWithoutLogCheck,
    /// Raft: the leader commits what any one member holds, not a majority.
    RaftCommitOnMinority,
    /// Raft: an append from a stale term is accepted as if current.
    RaftAcceptStaleTermAppend,
    /// Raft: a follower acknowledges an append before its fsync.
    RaftAckBeforeFsync,
    /// Raft: an append shorter than the follower's log truncates the matching entries after it.
    RaftStaleAppendTruncates,
    /// Raft: the original's election, a higher id wins the vote whatever its log.
    RaftHighestIdWins,
    /// A node applies metadata entries as they are appended, before they commit.
    ApplyBeforeCommit,
    /// A catalog write is confirmed as soon as the metadata leader appended it, before it
    /// commits.
    ConfirmCatalogWriteWhenPlaced,
    /// Every node serves every queue it applies, wherever the leader placed it.
    ServeQueuesPlacedElsewhere,
}

impl PlantedBug {
    /// Every planted bug, in the order `krest-sim --planted-bugs` runs them.
    pub const ALL: [PlantedBug; 20] = [
        PlantedBug::ConfirmBeforeSync,
        PlantedBug::AckBeforeSync,
        PlantedBug::SkipRedeliveryAfterLeaseExpiry,
        PlantedBug::ExpireLeaseEarly,
        PlantedBug::DeliverDelayedEarly,
        PlantedBug::SwapFirstDeliveries,
        PlantedBug::SkipCorruptRecord,
        PlantedBug::ForgetAcksAfterRestart,
        PlantedBug::ForgetIdempotencyAfterRestart,
        PlantedBug::MiscountDropOldest,
        PlantedBug::MixUpPayloadsReadBack,
        PlantedBug::RaftGrantVoteWithoutLogCheck,
        PlantedBug::RaftCommitOnMinority,
        PlantedBug::RaftAcceptStaleTermAppend,
        PlantedBug::RaftAckBeforeFsync,
        PlantedBug::RaftStaleAppendTruncates,
        PlantedBug::RaftHighestIdWins,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::ConfirmCatalogWriteWhenPlaced,
        PlantedBug::ServeQueuesPlacedElsewhere,
    ];

    /// The bug's name on the command line, in kebab case.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::ConfirmBeforeSync => "confirm-before-sync",
            PlantedBug::AckBeforeSync => "ack-before-sync",
            PlantedBug::SkipRedeliveryAfterLeaseExpiry => "skip-redelivery-after-lease-expiry",
            PlantedBug::ExpireLeaseEarly => "expire-lease-early",
            PlantedBug::DeliverDelayedEarly => "deliver-delayed-early",
            PlantedBug::SwapFirstDeliveries => "swap-first-deliveries",
            PlantedBug::SkipCorruptRecord => "skip-corrupt-record",
            PlantedBug::ForgetAcksAfterRestart => "forget-acks-after-restart",
            PlantedBug::ForgetIdempotencyAfterRestart => "forget-idempotency-after-restart",
            PlantedBug::MiscountDropOldest => "miscount-drop-oldest",
            PlantedBug::MixUpPayloadsReadBack => "mix-up-payloads-read-back",
            PlantedBug::RaftGrantVoteWithoutLogCheck => "raft-grant-vote-without-log-check",
            PlantedBug::RaftCommitOnMinority => "raft-commit-on-minority",
            PlantedBug::RaftAcceptStaleTermAppend => "raft-accept-stale-term-append",
            PlantedBug::RaftAckBeforeFsync => "raft-ack-before-fsync",
            PlantedBug::RaftStaleAppendTruncates => "raft-stale-append-truncates",
            PlantedBug::RaftHighestIdWins => "raft-highest-id-wins",
            PlantedBug::ApplyBeforeCommit => "apply-before-commit",
            PlantedBug::ConfirmCatalogWriteWhenPlaced => "confirm-catalog-write-when-placed",
            PlantedBug::ServeQueuesPlacedElsewhere => "serve-queues-placed-elsewhere",
        }
    }

    /// The consensus bug this is, for the Raft groups (planted per group, not per thread).
    /// Three more consensus bugs (committing an old term's entry by counting, forgetting the
    /// vote on restart, a stale response raising a match index) need scripted schedules to
    /// show; `raft::tests::scripted` proves their checkers.
    pub fn raft_bug(self) -> Option<crate::raft::planted::RaftBug> {
        use crate::raft::planted::RaftBug;
        Some(match self {
            PlantedBug::RaftGrantVoteWithoutLogCheck => RaftBug::GrantVoteWithoutLogCheck,
            PlantedBug::RaftCommitOnMinority => RaftBug::CommitOnMinority,
            PlantedBug::RaftAcceptStaleTermAppend => RaftBug::AcceptStaleTermAppend,
            PlantedBug::RaftAckBeforeFsync => RaftBug::AckBeforeFsync,
            PlantedBug::RaftStaleAppendTruncates => RaftBug::StaleAppendTruncates,
            PlantedBug::RaftHighestIdWins => RaftBug::HighestIdWins,
            _ => return None,
        })
    }

    /// Whether only a cluster of several nodes can show it.
    pub fn needs_cluster(self) -> bool {
        self.raft_bug().is_some()
            || matches!(
                self,
                PlantedBug::ApplyBeforeCommit
                    | PlantedBug::ConfirmCatalogWriteWhenPlaced
                    | PlantedBug::ServeQueuesPlacedElsewhere
            )
    }

    /// The bug called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

#[cfg(feature = "planted-bugs")]
mod switch {
    use std::cell::Cell;

    use super::PlantedBug;

    std::thread_local! {
        /// The bug switched on for this thread, if any. Per thread (not state of the node)
        /// because the bugs live in code that has no node at hand, such as segment recovery;
        /// per thread, not per process, because `krest-sim --jobs N` runs seeds on N threads
        /// at once, each with its own bug (or none), and one seed's end must not switch off
        /// the bug of a seed still running on another thread.
        static ACTIVE: Cell<Option<PlantedBug>> = const { Cell::new(None) };
    }

    pub fn set_active(bug: Option<PlantedBug>) {
        ACTIVE.with(|active| active.set(bug));
    }

    pub fn active(bug: PlantedBug) -> bool {
        ACTIVE.with(|active| active.get() == Some(bug))
    }
}

/// Switches `bug` on for the calling thread (`None`: every bug off). The simulator runs each
/// seed on one thread, so this is the switch of one run.
#[cfg(feature = "planted-bugs")]
pub fn set_active(bug: Option<PlantedBug>) {
    switch::set_active(bug)
}

/// Whether `bug` is switched on. Always `false` without the `planted-bugs` feature.
#[inline]
pub fn active(bug: PlantedBug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        switch::active(bug)
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// Whether this build has the planted bugs compiled in.
pub const COMPILED_IN: bool = cfg!(feature = "planted-bugs");
