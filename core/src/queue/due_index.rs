//! The delay index: the order keys (due time, then sequence) of a delay queue's deliverable
//! messages, in order.
//!
//! Schedules land at random due times, while fires take keys in order near the cursors. A
//! sorted structure pays for the randomness on every schedule: with ten million pending, a
//! `BTreeSet` of 16-byte keys is 270 MB deep in eight levels, and an insert misses the cache at
//! four or five of them (0.7M schedules a second here; sorted chunks of 64 keys under a smaller
//! tree did no better: the binary search in a cold chunk misses as often). So sorting waits
//! until it is needed: keys go into buckets of [`BUCKET_MILLIS`] of due time, appended
//! unsorted; a bucket is sorted the first time a lookup reaches it (a cursor, the next due
//! time, a removal) and from then on keeps its order by inserting in place. An insert is one
//! descent of a small tree of buckets (one per 64 ms that holds a key: a few MB at ten million
//! keys, in the last-level cache) and an append at the bucket's end; the sort of a bucket,
//! when a cursor comes to it, reads memory in order.
//!
//! Keys must be unique (they are: each carries its message's sequence).
//!
//! Invariants (checked by [`DueIndex::check`]): no bucket is empty; each key is in the bucket
//! of its due time; a bucket marked sorted is sorted; keys are unique; `len` counts them.

use std::collections::{BTreeMap, VecDeque};

use super::message::OrderKey;

/// The due time a bucket spans is `2^BUCKET_SHIFT` milliseconds.
const BUCKET_SHIFT: u32 = 6;

/// The due time a bucket spans. Small enough that sorting one bucket stays short (at 100k
/// messages falling due a second, 6,400 keys: a few hundred microseconds), large enough that
/// ten million keys spread over hours make a tree of buckets that fits in the cache.
pub const BUCKET_MILLIS: u64 = 1 << BUCKET_SHIFT;

/// The keys due within one bucket's span.
#[derive(Debug, Clone, Default)]
struct Bucket {
    keys: VecDeque<OrderKey>,
    /// `keys` is in order.
    sorted: bool,
    /// A lookup has come here: keep the order on insert instead of sorting again later.
    reached: bool,
}

impl Bucket {
    fn sort(&mut self) -> &VecDeque<OrderKey> {
        if !self.sorted {
            self.keys.make_contiguous().sort_unstable();
            self.sorted = true;
        }
        &self.keys
    }
}

fn bucket_of(key: &OrderKey) -> u64 {
    key.due.0 >> BUCKET_SHIFT
}

/// The set of order keys of a delay queue's deliverable messages.
#[derive(Debug, Clone, Default)]
pub struct DueIndex {
    /// Non-empty buckets by due time divided by [`BUCKET_MILLIS`].
    buckets: BTreeMap<u64, Bucket>,
    /// Keys in all buckets.
    len: usize,
}

impl DueIndex {
    /// An empty index.
    pub fn new() -> DueIndex {
        DueIndex::default()
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `key` is in the index (without sorting: a linear search in an unsorted bucket).
    pub fn contains(&self, key: &OrderKey) -> bool {
        self.buckets
            .get(&bucket_of(key))
            .is_some_and(|bucket| match bucket.sorted {
                true => bucket.keys.binary_search(key).is_ok(),
                false => bucket.keys.contains(key),
            })
    }

    /// Adds `key`, which must not be in the index.
    pub fn insert(&mut self, key: OrderKey) {
        let bucket = self.buckets.entry(bucket_of(&key)).or_default();
        match bucket.keys.back() {
            None => bucket.sorted = true,
            Some(back) if *back < key => {}
            Some(_) if bucket.reached => {
                bucket.sort();
                let position = bucket.keys.partition_point(|probe| *probe < key);
                bucket.keys.insert(position, key);
                self.len += 1;
                return;
            }
            Some(_) => bucket.sorted = false,
        }
        bucket.keys.push_back(key);
        self.len += 1;
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &OrderKey) -> bool {
        let id = bucket_of(key);
        let Some(bucket) = self.buckets.get_mut(&id) else {
            return false;
        };
        bucket.reached = true;
        let Ok(position) = bucket.sort().binary_search(key) else {
            return false;
        };
        bucket.keys.remove(position);
        self.len -= 1;
        if bucket.keys.is_empty() {
            self.buckets.remove(&id);
        }
        true
    }

    /// The smallest key above `cursor`.
    pub fn first_after(&mut self, cursor: &OrderKey) -> Option<OrderKey> {
        self.first_where(cursor, |probe| probe <= cursor)
    }

    /// The smallest key at or above `from`.
    pub fn first_from(&mut self, from: &OrderKey) -> Option<OrderKey> {
        self.first_where(from, |probe| probe < from)
    }

    /// The first key, from `near`'s bucket on, for which `before` is false.
    fn first_where(
        &mut self,
        near: &OrderKey,
        before: impl Fn(&OrderKey) -> bool,
    ) -> Option<OrderKey> {
        // Past the first bucket every key is above `near`: at most two buckets are looked at.
        for bucket in self
            .buckets
            .range_mut(bucket_of(near)..)
            .map(|(_, bucket)| bucket)
        {
            bucket.reached = true;
            let keys = bucket.sort();
            if let Some(key) = keys.get(keys.partition_point(&before)) {
                return Some(*key);
            }
        }
        None
    }

    /// The keys at or above `from`, in order (sorting the buckets it passes).
    pub fn iter_from(&mut self, from: OrderKey) -> impl Iterator<Item = OrderKey> + '_ {
        self.buckets
            .range_mut(bucket_of(&from)..)
            .flat_map(|(_, bucket)| bucket.sort().iter().copied())
            .skip_while(move |key| *key < from)
    }

    /// Every key, in order (sorting every bucket).
    pub fn iter(&mut self) -> impl Iterator<Item = OrderKey> + '_ {
        self.iter_from(OrderKey::default())
    }

    /// How many keys are below `to`. Walks the buckets below it: for a delay queue, those of
    /// messages already due and not yet removed.
    pub fn count_below(&self, to: &OrderKey) -> usize {
        let id = bucket_of(to);
        let below: usize = self
            .buckets
            .range(..id)
            .map(|(_, bucket)| bucket.keys.len())
            .sum();
        let within = self.buckets.get(&id).map_or(0, |bucket| {
            bucket.keys.iter().filter(|key| *key < to).count()
        });
        below + within
    }

    /// Asserts the invariants in the module's documentation.
    pub fn check(&self) {
        let mut counted = 0;
        for (id, bucket) in &self.buckets {
            assert!(!bucket.keys.is_empty(), "an empty bucket {id}");
            assert!(
                bucket.keys.iter().all(|key| bucket_of(key) == *id),
                "a key out of its bucket {id}"
            );
            let mut keys: Vec<OrderKey> = bucket.keys.iter().copied().collect();
            if bucket.sorted {
                assert!(keys.is_sorted(), "bucket {id} is marked sorted but is not");
            }
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), bucket.keys.len(), "a key twice in bucket {id}");
            counted += keys.len();
        }
        assert_eq!(counted, self.len, "len counts the keys");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ops::Bound;

    use proptest::prelude::*;

    use super::*;
    use crate::ids::Sequence;
    use crate::time::UnixMillis;

    fn key(due: u64, sequence: u64) -> OrderKey {
        OrderKey {
            due: UnixMillis(due),
            sequence: Sequence(sequence),
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A new key due at this time (its sequence is the next one).
        Insert(u64),
        /// Removes the key of this sequence (taken modulo the sequences given so far), if any.
        Remove(u64),
        /// Removes the smallest key, as a delay queue does when it fires.
        PopFirst,
        /// Looks up the first key after this one, as a cursor does: the bucket is then kept
        /// sorted on insert.
        FirstAfter(u64, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Due times over a few buckets, so that ties, runs and unsorted buckets happen.
        let due = 0..BUCKET_MILLIS * 5;
        prop_oneof![
            6 => due.clone().prop_map(Step::Insert),
            2 => any::<u64>().prop_map(Step::Remove),
            1 => Just(Step::PopFirst),
            1 => (due, 0..500u64).prop_map(|(due, sequence)| Step::FirstAfter(due, sequence)),
        ]
    }

    proptest! {
        /// Every operation answers as a `BTreeSet` does, and the invariants hold after each.
        #[test]
        fn it_behaves_as_a_sorted_set(steps in prop::collection::vec(step(), 1..1_500)) {
            let mut index = DueIndex::new();
            let mut model = BTreeSet::new();
            let mut given: Vec<OrderKey> = Vec::new();
            for step in steps {
                match step {
                    Step::Insert(due) => {
                        let new = key(due, given.len() as u64);
                        given.push(new);
                        index.insert(new);
                        model.insert(new);
                    }
                    Step::Remove(pick) => {
                        if !given.is_empty() {
                            let old = given[(pick % given.len() as u64) as usize];
                            prop_assert_eq!(index.remove(&old), model.remove(&old));
                        }
                    }
                    Step::PopFirst => {
                        let first = model.pop_first();
                        prop_assert_eq!(index.first_from(&key(0, 0)), first);
                        if let Some(first) = first {
                            prop_assert!(index.remove(&first));
                        }
                    }
                    Step::FirstAfter(due, sequence) => {
                        let cursor = key(due, sequence);
                        prop_assert_eq!(
                            index.first_after(&cursor),
                            model.range((Bound::Excluded(cursor), Bound::Unbounded)).next().copied()
                        );
                    }
                }
                index.check();
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.is_empty(), model.is_empty());
            }
            for due in 0..BUCKET_MILLIS * 5 + 1 {
                for sequence in [0, 7, 200, 1_499] {
                    let probe = key(due, sequence);
                    prop_assert_eq!(index.contains(&probe), model.contains(&probe));
                    prop_assert_eq!(index.count_below(&probe), model.range(..probe).count());
                    prop_assert_eq!(
                        index.first_after(&probe),
                        model.range((Bound::Excluded(probe), Bound::Unbounded)).next().copied()
                    );
                    prop_assert_eq!(index.first_from(&probe), model.range(probe..).next().copied());
                    prop_assert!(index.iter_from(probe).eq(model.range(probe..).copied()));
                }
            }
            prop_assert!(index.iter().eq(model.iter().copied()));
            index.check();
        }
    }

    #[test]
    fn far_buckets_stay_unsorted_until_a_lookup_reaches_them() {
        let mut index = DueIndex::new();
        // Due in the same bucket, inserted out of order.
        for (due, sequence) in [
            (BUCKET_MILLIS + 9, 1),
            (BUCKET_MILLIS + 2, 2),
            (BUCKET_MILLIS + 5, 3),
        ] {
            index.insert(key(due, sequence));
        }
        index.check();
        let bucket = &index.buckets[&1];
        assert!(!bucket.sorted && !bucket.reached, "appended as they came");
        assert!(index.contains(&key(BUCKET_MILLIS + 2, 2)));
        assert_eq!(
            index.first_after(&key(0, 0)),
            Some(key(BUCKET_MILLIS + 2, 2))
        );
        assert!(index.buckets[&1].sorted, "sorted once reached");
        // From now on an insert keeps the order.
        index.insert(key(BUCKET_MILLIS + 3, 4));
        index.check();
        assert!(index.buckets[&1].sorted);
        let keys: Vec<u64> = index.iter().map(|key| key.sequence.0).collect();
        assert_eq!(keys, [2, 4, 3, 1]);
        for sequence_and_due in [(2, 2), (4, 3), (3, 5), (1, 9)] {
            let (sequence, due) = sequence_and_due;
            assert!(index.remove(&key(BUCKET_MILLIS + due, sequence)));
        }
        assert!(
            index.is_empty() && index.buckets.is_empty(),
            "empty buckets go"
        );
        assert!(!index.remove(&key(BUCKET_MILLIS + 2, 2)), "already gone");
    }
}
