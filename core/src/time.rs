//! Time as the core sees it: only what it is given.
//!
//! The runtime passes [`Now`] into every call. The monotonic part drives timers and must never go
//! backwards (asserted); the wall part stamps messages and decides when delayed messages are due,
//! and may jump in either direction.

use std::fmt;
use std::ops::{Add, Sub};

/// Milliseconds on this node's monotonic clock. Meaningless across nodes or restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

/// Milliseconds since the Unix epoch on this node's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

/// A span of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

/// Both clocks at the moment of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For timers.
    pub monotonic: Instant,
    /// For message timestamps and deliver-at deadlines.
    pub wall: UnixMillis,
}

impl Add<Millis> for Instant {
    type Output = Instant;
    fn add(self, span: Millis) -> Instant {
        Instant(self.0.saturating_add(span.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Millis;
    fn sub(self, earlier: Instant) -> Millis {
        Millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Millis> for UnixMillis {
    type Output = UnixMillis;
    fn add(self, span: Millis) -> UnixMillis {
        UnixMillis(self.0.saturating_add(span.0))
    }
}

impl Now {
    /// The monotonic instant at which the wall clock is expected to show `deadline`, assuming
    /// it keeps pace with the monotonic clock. Never earlier than now.
    pub fn monotonic_at(&self, deadline: UnixMillis) -> Instant {
        self.monotonic + Millis(deadline.0.saturating_sub(self.wall.0))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ms", self.0)
    }
}
