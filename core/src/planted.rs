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
}

impl PlantedBug {
    /// Every planted bug, in the order `krest-sim --planted-bugs` runs them.
    pub const ALL: [PlantedBug; 11] = [
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
        }
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
