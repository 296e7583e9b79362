//! The timer table: every deadline the core is waiting for, ordered by when it falls due.
//!
//! Entries are removed when what they guard is settled (an ack removes its lease timer), and
//! every handler re-checks its condition when a timer fires, so a stale entry is harmless.

use std::collections::BTreeSet;

use crate::ids::{ConsumerId, QueueId, Sequence, SubscriptionId};
use crate::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The earliest lease of a subscription's deliveries runs out (one timer per
    /// subscription: see `queue::subscription::Leases`).
    Lease {
        /// Queue of the deliveries.
        queue: QueueId,
        /// Subscription holding them.
        subscription: SubscriptionId,
    },
    /// A nack's delay is over; the message may be redelivered.
    Redelivery {
        /// Queue of the message.
        queue: QueueId,
        /// Subscription that nacked it.
        subscription: SubscriptionId,
        /// Which message.
        sequence: Sequence,
    },
    /// The earliest delayed message of a delay queue falls due.
    DelayDue {
        /// Which queue.
        queue: QueueId,
    },
    /// A fetch has waited as long as it asked to.
    FetchWait {
        /// Whose fetch.
        consumer: ConsumerId,
    },
    /// Periodic work: catches wall-clock jumps for delay queues.
    Housekeeping,
    /// A catalog write of this node waited as long as it may.
    CatalogWait {
        /// Which write.
        token: u64,
    },
}

/// Deadlines in monotonic time.
#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    entries: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Arms `timer` at `deadline` (arming the same pair twice is one entry).
    pub fn arm(&mut self, deadline: Instant, timer: Timer) {
        self.entries.insert((deadline, timer));
    }

    /// Disarms `timer` at `deadline`, if armed.
    pub fn disarm(&mut self, deadline: Instant, timer: Timer) {
        self.entries.remove(&(deadline, timer));
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.first().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (deadline, _) = self.entries.first()?;
        if *deadline > now {
            return None;
        }
        self.entries.pop_first().map(|(_, timer)| timer)
    }

    /// Armed timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
