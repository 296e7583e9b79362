//! The bytes of one file on the memory disk: what processes read, and what a crash leaves.
//!
//! Invariants kept by [`FileData`]: when `dirty_from` is `None`, `current == durable`; when it is
//! `Some(offset)`, the two agree on every byte before `offset` (the bytes from there on may
//! differ, and so may the lengths). A sync copies only the bytes from `dirty_from` on, so syncing
//! a long file after a short append costs the append, not the file.

/// One file's contents.
#[derive(Debug, Default)]
pub(super) struct FileData {
    /// What reads return: every write so far, synced or not.
    current: Vec<u8>,
    /// What the disk holds: what the last successful sync saw, less bits flipped at rest.
    durable: Vec<u8>,
    /// Where `current` may start to differ from `durable`; `None` when they are equal.
    dirty_from: Option<usize>,
}

impl FileData {
    /// What reads return.
    pub(super) fn current(&self) -> &[u8] {
        &self.current
    }

    /// What would survive a crash that kept none of the unsynced writes.
    pub(super) fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// The offset from which `current` may differ from `durable`; `None` when nothing is unsynced.
    pub(super) fn dirty_from(&self) -> Option<usize> {
        self.dirty_from
    }

    /// The bytes the file takes on the disk: its unsynced and its durable contents share space.
    pub(super) fn footprint_bytes(&self) -> u64 {
        self.current.len().max(self.durable.len()) as u64
    }

    /// Writes `bytes` at the end of `current`.
    pub(super) fn append(&mut self, bytes: &[u8]) {
        self.mark_dirty_from(self.current.len());
        self.current.extend_from_slice(bytes);
    }

    /// Cuts `current` to `length_bytes`, or extends it with zeros.
    pub(super) fn set_len(&mut self, length_bytes: usize) {
        self.mark_dirty_from(self.current.len().min(length_bytes));
        self.current.resize(length_bytes, 0);
    }

    /// Makes `current` durable.
    pub(super) fn sync(&mut self) {
        let Some(dirty_from) = self.dirty_from.take() else {
            return;
        };
        self.durable.truncate(dirty_from);
        self.durable.extend_from_slice(&self.current[dirty_from..]);
    }

    /// Flips bit `bit` of the durable byte at `offset` (which must exist). Reads see the flip too
    /// unless the byte has an unsynced write over it.
    pub(super) fn flip_durable_bit(&mut self, offset: usize, bit: u8) {
        let mask = 1u8 << bit;
        self.durable[offset] ^= mask;
        let clean = self.dirty_from.is_none_or(|dirty_from| offset < dirty_from);
        if clean && offset < self.current.len() {
            self.current[offset] ^= mask;
        }
    }

    /// After a crash: the disk holds `survived`, and so does the page cache of the next process.
    pub(super) fn settle(&mut self, survived: Vec<u8>) {
        self.current.clone_from(&survived);
        self.durable = survived;
        self.dirty_from = None;
    }

    fn mark_dirty_from(&mut self, offset: usize) {
        self.dirty_from = Some(
            self.dirty_from
                .map_or(offset, |earlier| earlier.min(offset)),
        );
    }
}
