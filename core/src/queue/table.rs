//! Values indexed by sequence number: a ring of fixed-size chunks.
//!
//! A queue's messages are numbered by a strictly increasing sequence, inserted at the end and
//! mostly removed near the front. A `BTreeMap` pays for generality it does not need here: a
//! node per entry's share of half-full leaves (about 290 bytes per message for a 136-byte
//! value) and a search on every lookup. A [`SeqRing`] finds a value by arithmetic: chunk
//! `(sequence - base) / CHUNK`, slot `(sequence - base) % CHUNK`, and costs one slot per value
//! plus one pointer per chunk.
//!
//! A chunk is freed as soon as its last value is removed, and empty chunks at either end are
//! dropped, so a straggler (a message nacked with a long delay, a far deliver-at) keeps only
//! its own chunk alive, not the run of consumed messages around it: a gap of `n` sequences
//! costs `n / CHUNK` pointers.
//!
//! One freed chunk is kept as a spare for the next one needed: a queue consumed as fast as it
//! is filled (the front chunk empties as the back one fills) allocates nothing in the steady
//! state, and a queue that goes from empty to one message and back does not allocate a chunk
//! per message. The price is one idle chunk per ring.

use std::collections::VecDeque;
use std::fmt;
use std::ops::RangeFrom;

use crate::ids::Sequence;

const CHUNK_BITS: u32 = 5;
/// Slots per chunk. (128 was tried for the message rings of delay queues, whose fires read
/// the ring at random places: no gain beyond this machine's noise, and slower in-flight
/// tables.)
pub const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Clone)]
struct Chunk<T> {
    slots: [Option<T>; CHUNK],
    live: u32,
    /// Every `Some` slot is within `low..=high` (when `live > 0`): iterations and the
    /// first/last lookups skip the empty run of a chunk being consumed from its front or
    /// filled towards its back, instead of scanning it on every call.
    low: u32,
    high: u32,
}

impl<T> Chunk<T> {
    fn boxed() -> Box<Chunk<T>> {
        Box::new(Chunk {
            slots: std::array::from_fn(|_| None),
            live: 0,
            low: 0,
            high: 0,
        })
    }

    /// The occupied span of slots, as `(first slot, slots)`.
    fn span(&self) -> (usize, &[Option<T>]) {
        let (low, high) = (self.low as usize, self.high as usize);
        (low, &self.slots[low..=high])
    }

    /// [`Chunk::span`], to change.
    fn span_mut(&mut self) -> (usize, &mut [Option<T>]) {
        let (low, high) = (self.low as usize, self.high as usize);
        (low, &mut self.slots[low..=high])
    }
}

/// Values by sequence. Invariants: `base` is a multiple of `CHUNK`; the first chunk is present
/// (non-empty) unless the ring is empty, when there are no chunks (empty chunks may trail); a present
/// chunk's `live` counts its `Some` slots, and is never 0; `len` is the sum of `live`.
#[derive(Clone)]
pub struct SeqRing<T> {
    base: u64,
    chunks: VecDeque<Option<Box<Chunk<T>>>>,
    len: usize,
    /// A freed chunk (every slot `None`) for the next one needed.
    spare: Option<Box<Chunk<T>>>,
}

impl<T> Default for SeqRing<T> {
    fn default() -> Self {
        SeqRing::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for SeqRing<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_map()
            .entries(self.iter().map(|(sequence, value)| (sequence.0, value)))
            .finish()
    }
}

impl<T> SeqRing<T> {
    /// An empty ring.
    pub fn new() -> SeqRing<T> {
        SeqRing {
            base: 0,
            chunks: VecDeque::new(),
            len: 0,
            spare: None,
        }
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunk and slot of a sequence, if it falls inside the chunks.
    fn position(&self, sequence: Sequence) -> Option<(usize, usize)> {
        let offset = sequence.0.checked_sub(self.base)?;
        let chunk = usize::try_from(offset >> CHUNK_BITS).ok()?;
        (chunk < self.chunks.len()).then_some((chunk, (offset as usize) & (CHUNK - 1)))
    }

    /// The value at `sequence`.
    pub fn get(&self, sequence: Sequence) -> Option<&T> {
        let (chunk, slot) = self.position(sequence)?;
        self.chunks[chunk].as_ref()?.slots[slot].as_ref()
    }

    /// The value at `sequence`, to change.
    pub fn get_mut(&mut self, sequence: Sequence) -> Option<&mut T> {
        let (chunk, slot) = self.position(sequence)?;
        self.chunks[chunk].as_mut()?.slots[slot].as_mut()
    }

    /// Whether a value sits at `sequence`.
    pub fn contains_key(&self, sequence: Sequence) -> bool {
        self.get(sequence).is_some()
    }

    /// Puts `value` at `sequence`; returns the value it replaces.
    pub fn insert(&mut self, sequence: Sequence, value: T) -> Option<T> {
        let chunk_base = sequence.0 & !(CHUNK as u64 - 1);
        if self.chunks.is_empty() {
            self.base = chunk_base;
        }
        while chunk_base < self.base {
            self.chunks.push_front(None);
            self.base -= CHUNK as u64;
        }
        let chunk = usize::try_from((chunk_base - self.base) >> CHUNK_BITS)
            .expect("a ring spans less than the address space");
        while self.chunks.len() <= chunk {
            self.chunks.push_back(None);
        }
        let slot = (sequence.0 as usize) & (CHUNK - 1);
        let spare = &mut self.spare;
        let present =
            self.chunks[chunk].get_or_insert_with(|| spare.take().unwrap_or_else(Chunk::boxed));
        let replaced = present.slots[slot].replace(value);
        if replaced.is_none() {
            let slot = slot as u32;
            if present.live == 0 {
                (present.low, present.high) = (slot, slot);
            } else {
                present.low = present.low.min(slot);
                present.high = present.high.max(slot);
            }
            present.live += 1;
            self.len += 1;
        }
        replaced
    }

    /// Takes the value at `sequence` out.
    pub fn remove(&mut self, sequence: Sequence) -> Option<T> {
        let (chunk, slot) = self.position(sequence)?;
        let present = self.chunks[chunk].as_mut()?;
        let value = present.slots[slot].take()?;
        present.live -= 1;
        self.len -= 1;
        if present.live > 0 {
            // Keep the span tight; each slot is stepped over once per fill of the chunk.
            while present.slots[present.low as usize].is_none() {
                present.low += 1;
            }
            while present.slots[present.high as usize].is_none() {
                present.high -= 1;
            }
        }
        if present.live == 0 {
            let freed = self.chunks[chunk].take();
            if self.spare.is_none() {
                self.spare = freed;
            }
            while matches!(self.chunks.front(), Some(None)) {
                self.chunks.pop_front();
                self.base += CHUNK as u64;
            }
            // Empty chunks at the back stay until the ring is empty: with a straggler at the
            // front and traffic that empties the back chunk again and again (a consumer that
            // keeps up), trimming them would drop and re-add the whole gap every time.
            if self.len == 0 {
                self.chunks.clear();
            }
        }
        Some(value)
    }

    /// Every value, by increasing sequence.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (Sequence, &T)> + '_ {
        self.iter_chunks(0)
    }

    fn iter_chunks(&self, first: usize) -> impl DoubleEndedIterator<Item = (Sequence, &T)> + '_ {
        let base = self.base;
        self.chunks
            .range(first.min(self.chunks.len())..)
            .enumerate()
            .filter_map(|(index, chunk)| chunk.as_ref().map(|chunk| (index, chunk)))
            .flat_map(move |(index, chunk)| {
                let chunk_base = base + ((first + index) as u64) * CHUNK as u64;
                let (low, slots) = chunk.span();
                slots
                    .iter()
                    .enumerate()
                    .map(move |(slot, value)| (low + slot, value))
                    .filter_map(move |(slot, value)| {
                        value
                            .as_ref()
                            .map(|value| (Sequence(chunk_base + slot as u64), value))
                    })
            })
    }

    /// Every value, by increasing sequence, to change.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (Sequence, &mut T)> + '_ {
        let base = self.base;
        self.chunks
            .iter_mut()
            .enumerate()
            .filter_map(|(index, chunk)| chunk.as_mut().map(|chunk| (index, chunk)))
            .flat_map(move |(index, chunk)| {
                let chunk_base = base + (index as u64) * CHUNK as u64;
                let (low, slots) = chunk.span_mut();
                slots
                    .iter_mut()
                    .enumerate()
                    .map(move |(slot, value)| (low + slot, value))
                    .filter_map(move |(slot, value)| {
                        value
                            .as_mut()
                            .map(|value| (Sequence(chunk_base + slot as u64), value))
                    })
            })
    }

    /// The values at `from` and after, by increasing sequence.
    pub fn range_from(
        &self,
        from: Sequence,
    ) -> impl DoubleEndedIterator<Item = (Sequence, &T)> + '_ {
        let first =
            usize::try_from(from.0.saturating_sub(self.base) >> CHUNK_BITS).unwrap_or(usize::MAX);
        self.iter_chunks(first)
            .filter(move |(sequence, _)| *sequence >= from)
    }

    /// The values from `range.start` on, as with a map.
    pub fn range(
        &self,
        range: RangeFrom<Sequence>,
    ) -> impl DoubleEndedIterator<Item = (Sequence, &T)> + '_ {
        self.range_from(range.start)
    }

    /// Every value, by increasing sequence.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// Every value, by increasing sequence, to change.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> + '_ {
        self.iter_mut().map(|(_, value)| value)
    }

    /// Every sequence that holds a value, increasing.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = Sequence> + '_ {
        self.iter().map(|(sequence, _)| sequence)
    }

    /// The value with the lowest sequence.
    pub fn first(&self) -> Option<(Sequence, &T)> {
        self.iter().next()
    }

    /// The value with the highest sequence.
    pub fn last(&self) -> Option<(Sequence, &T)> {
        self.iter().next_back()
    }

    /// Bytes of memory the ring itself holds (slots and chunk pointers), for measurements.
    pub fn footprint_bytes(&self) -> usize {
        let present = self.chunks.iter().filter(|chunk| chunk.is_some()).count()
            + usize::from(self.spare.is_some());
        present * std::mem::size_of::<Chunk<T>>()
            + self.chunks.capacity() * std::mem::size_of::<Option<Box<Chunk<T>>>>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(u64),
        RemoveFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..600).prop_map(Op::Insert),
            2 => (0u64..600).prop_map(Op::Remove),
            1 => Just(Op::RemoveFirst),
        ]
    }

    proptest! {
        // The ring behaves as a BTreeMap from sequence to value, whatever the order of inserts
        // and removals, and frees what it no longer needs.
        #[test]
        fn the_ring_behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut ring = SeqRing::new();
            let mut model = BTreeMap::new();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(sequence) => {
                        prop_assert_eq!(
                            ring.insert(Sequence(sequence), step),
                            model.insert(sequence, step)
                        );
                    }
                    Op::Remove(sequence) => {
                        prop_assert_eq!(ring.remove(Sequence(sequence)), model.remove(&sequence));
                    }
                    Op::RemoveFirst => {
                        let first = ring.first().map(|(sequence, _)| sequence);
                        prop_assert_eq!(first.map(|s| s.0), model.keys().next().copied());
                        if let Some(sequence) = first {
                            ring.remove(sequence);
                            model.remove(&sequence.0);
                        }
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
                let listed: Vec<(u64, usize)> = ring.iter().map(|(s, v)| (s.0, *v)).collect();
                let expected: Vec<(u64, usize)> = model.iter().map(|(s, v)| (*s, *v)).collect();
                prop_assert_eq!(&listed, &expected);
                let backwards: Vec<u64> = ring.iter().rev().map(|(s, _)| s.0).collect();
                let expected_backwards: Vec<u64> = model.keys().rev().copied().collect();
                prop_assert_eq!(backwards, expected_backwards);
                for probe in [0u64, 31, 32, 33, 63, 64, 65, 130, 299, 599, 600, 10_000] {
                    prop_assert_eq!(ring.get(Sequence(probe)), model.get(&probe));
                    let from: Vec<u64> = ring.range_from(Sequence(probe)).map(|(s, _)| s.0).collect();
                    let expected_from: Vec<u64> = model.range(probe..).map(|(s, _)| *s).collect();
                    prop_assert_eq!(from, expected_from);
                }
                prop_assert_eq!(ring.last().map(|(s, _)| s.0), model.keys().next_back().copied());
                // The front is a present chunk; an empty ring keeps no chunk.
                prop_assert!(ring.chunks.front().is_none_or(|chunk| chunk.is_some()));
                prop_assert_eq!(ring.chunks.is_empty(), ring.is_empty());
                let spare_is_clean = ring
                    .spare
                    .as_ref()
                    .is_none_or(|spare| spare.live == 0 && spare.slots.iter().all(Option::is_none));
                prop_assert!(spare_is_clean, "the spare chunk is empty");
                for chunk in ring.chunks.iter().flatten() {
                    prop_assert!(chunk.live > 0);
                    prop_assert_eq!(
                        chunk.live as usize,
                        chunk.slots.iter().filter(|slot| slot.is_some()).count()
                    );
                    // The span is tight: it starts and ends at a value, and holds them all.
                    prop_assert!(chunk.slots[chunk.low as usize].is_some());
                    prop_assert!(chunk.slots[chunk.high as usize].is_some());
                    prop_assert_eq!(
                        chunk.live as usize,
                        chunk.span().1.iter().filter(|slot| slot.is_some()).count()
                    );
                }
            }
        }
    }

    #[test]
    fn a_straggler_keeps_only_its_own_chunk() {
        let mut ring = SeqRing::new();
        for sequence in 0..100_000u64 {
            ring.insert(Sequence(sequence), sequence);
        }
        for sequence in 1..99_999u64 {
            ring.remove(Sequence(sequence));
        }
        assert_eq!(ring.len(), 2);
        let present = ring.chunks.iter().filter(|chunk| chunk.is_some()).count();
        assert_eq!(present, 2, "only the chunks of the two stragglers stay");
        assert_eq!(
            ring.keys().map(|s| s.0).collect::<Vec<_>>(),
            vec![0, 99_999]
        );
        ring.remove(Sequence(0));
        assert_eq!(
            ring.chunks.len(),
            1,
            "the gap before the last value is dropped"
        );
        assert_eq!(ring.range_from(Sequence(5)).count(), 1);
    }
}
