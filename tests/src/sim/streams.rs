//! The simulator's randomness and its trace.
//!
//! One seed makes one root [`Rng`]; each component draws from its own fork of it, taken in a
//! fixed order, so a component that draws more numbers (a new fault kind, a longer workload)
//! never shifts what another component sees. The [`Trace`] hashes every input the node is given
//! and every command it emits, so two runs of one seed can be compared by a single number.

use krest_core::rng::Rng;

/// Independent random streams, one per component.
pub struct Streams {
    /// What the clients do: which queue, which payload, ack or nack, when to give up.
    pub workload: Rng,
    /// Network latency and its outliers.
    pub network: Rng,
    /// Storage latency, and what a crash keeps of the unsynced data.
    pub disk: Rng,
    /// When crashes, disk faults, bit flips and clock jumps happen.
    pub faults: Rng,
    /// The node's seed and its clocks (offset, skew).
    pub clocks: Rng,
}

impl Streams {
    /// The streams of `seed`.
    pub fn new(seed: u64) -> Streams {
        let mut root = Rng::from_seed(seed);
        Streams {
            workload: root.fork(),
            network: root.fork(),
            disk: root.fork(),
            faults: root.fork(),
            clocks: root.fork(),
        }
    }
}

/// Whether an event with `per_thousand` chances in a thousand happens.
pub fn chance(rng: &mut Rng, per_thousand: u64) -> bool {
    rng.below(1000) < per_thousand
}

/// A number in `low..=high`.
pub fn between(rng: &mut Rng, low: u64, high: u64) -> u64 {
    low + rng.below(high - low + 1)
}

/// A running FNV-1a hash of everything that happened, in order.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    hash: u64,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Trace {
    /// Adds `bytes` to the trace.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.hash ^= u64::from(*byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Adds a number to the trace.
    pub fn number(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}
