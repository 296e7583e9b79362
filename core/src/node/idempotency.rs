//! The idempotency table: which (producer, producer sequence) pairs were stored, and where.
//!
//! Bounded twice: a window of the most recent sequences per producer, and a number of producers
//! (the least recently used producer is forgotten first). It is rebuilt at recovery from the
//! publish records still in the logs, so a retry after a restart is still recognised.

use std::collections::BTreeMap;

use crate::ids::{LogIndex, ProducerId, QueueId, Sequence};

/// Where a producer's message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    pub queue: QueueId,
    pub sequence: Sequence,
    pub log_index: Option<LogIndex>,
}

#[derive(Debug, Default)]
struct Window {
    entries: BTreeMap<u64, Stored>,
    last_used: u64,
}

/// The table.
#[derive(Debug)]
pub(super) struct Idempotency {
    producers: BTreeMap<ProducerId, Window>,
    by_use: BTreeMap<u64, ProducerId>,
    clock: u64,
    window: usize,
    max_producers: usize,
}

impl Idempotency {
    pub fn new(window: u32, max_producers: u32) -> Idempotency {
        Idempotency {
            producers: BTreeMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            window: window as usize,
            max_producers: max_producers as usize,
        }
    }

    /// Where `(producer, producer_sequence)` was stored, if it is remembered.
    pub fn lookup(&self, producer: ProducerId, producer_sequence: u64) -> Option<Stored> {
        self.producers
            .get(&producer)?
            .entries
            .get(&producer_sequence)
            .copied()
    }

    /// Remembers a stored message.
    pub fn record(&mut self, producer: ProducerId, producer_sequence: u64, stored: Stored) {
        self.clock += 1;
        let clock = self.clock;
        if !self.producers.contains_key(&producer) && self.producers.len() >= self.max_producers {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.producers.remove(&oldest);
            }
        }
        let window = self.producers.entry(producer).or_default();
        // The producer that published last is usually the one publishing now: it is already
        // the most recently used, and its place in the eviction order stays as it is.
        let most_recent = window.last_used != 0
            && self
                .by_use
                .last_key_value()
                .is_some_and(|(_, last)| *last == producer);
        if !most_recent {
            if window.last_used != 0 {
                self.by_use.remove(&window.last_used);
            }
            window.last_used = clock;
            self.by_use.insert(clock, producer);
        }
        window.entries.insert(producer_sequence, stored);
        while window.entries.len() > self.window {
            window.entries.pop_first();
        }
    }

    /// Forgets every entry of a deleted queue.
    pub fn forget_queue(&mut self, queue: QueueId) {
        for window in self.producers.values_mut() {
            window.entries.retain(|_, stored| stored.queue != queue);
        }
    }

    /// The log index of the oldest publish record of `queue` that an entry still points at:
    /// the log must keep it, since recovery rebuilds the table from those records. Costs
    /// O(entries); the node asks only when it is about to let storage delete segments.
    pub fn oldest_log_index(&self, queue: QueueId) -> Option<LogIndex> {
        self.producers
            .values()
            .flat_map(|window| window.entries.values())
            .filter(|stored| stored.queue == queue)
            .filter_map(|stored| stored.log_index)
            .min()
    }

    /// Entries remembered.
    pub fn len(&self) -> usize {
        self.producers
            .values()
            .map(|window| window.entries.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sequence: u64) -> Stored {
        Stored {
            queue: QueueId(1),
            sequence: Sequence(sequence),
            log_index: None,
        }
    }

    #[test]
    fn the_window_keeps_the_most_recent_sequences_of_each_producer() {
        let mut table = Idempotency::new(3, 10);
        for sequence in 1..=5 {
            table.record(ProducerId(9), sequence, stored(sequence));
        }
        assert_eq!(table.lookup(ProducerId(9), 2), None);
        assert_eq!(table.lookup(ProducerId(9), 3), Some(stored(3)));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn the_least_recently_used_producer_is_forgotten_first() {
        let mut table = Idempotency::new(10, 2);
        table.record(ProducerId(1), 1, stored(1));
        table.record(ProducerId(2), 1, stored(2));
        table.record(ProducerId(1), 2, stored(3));
        table.record(ProducerId(3), 1, stored(4));
        assert!(table.lookup(ProducerId(2), 1).is_none());
        assert!(table.lookup(ProducerId(1), 2).is_some());
        assert!(table.lookup(ProducerId(3), 1).is_some());
    }

    // Publishing again while already the most recent producer keeps that place: the one used
    // before it is still the first forgotten.
    #[test]
    fn a_producer_publishing_in_a_row_stays_the_most_recent() {
        let mut table = Idempotency::new(10, 2);
        table.record(ProducerId(1), 1, stored(1));
        table.record(ProducerId(2), 1, stored(2));
        table.record(ProducerId(2), 2, stored(3));
        table.record(ProducerId(2), 3, stored(4));
        table.record(ProducerId(3), 1, stored(5));
        assert!(table.lookup(ProducerId(1), 1).is_none());
        assert!(table.lookup(ProducerId(2), 3).is_some());
        table.record(ProducerId(2), 4, stored(6));
        table.record(ProducerId(1), 2, stored(7));
        assert!(
            table.lookup(ProducerId(3), 1).is_none(),
            "3 was the least recent"
        );
        assert!(table.lookup(ProducerId(2), 4).is_some());
    }
}
