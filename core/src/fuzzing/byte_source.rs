//! Turns fuzz bytes into small decisions. Once the bytes run out every answer is zero, so a
//! short input is a valid input and the driver's loop ends when [`ByteSource::is_empty`] says so.

/// A cursor over the fuzz input.
pub(super) struct ByteSource<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> ByteSource<'a> {
    pub(super) fn new(data: &'a [u8]) -> ByteSource<'a> {
        ByteSource { data, position: 0 }
    }

    /// Whether every byte was used.
    pub(super) fn is_empty(&self) -> bool {
        self.position >= self.data.len()
    }

    /// The next byte, or 0.
    pub(super) fn byte(&mut self) -> u8 {
        let byte = self.data.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        byte
    }

    /// A number in `0..bound` (`bound` at least 1), from one byte or two.
    pub(super) fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0, "an empty range has no number in it");
        if bound <= 256 {
            usize::from(self.byte()) % bound
        } else {
            usize::from(self.u16()) % bound
        }
    }

    /// A number in `0..=max`.
    pub(super) fn up_to(&mut self, max: u64) -> u64 {
        match max {
            0..=255 => u64::from(self.byte()) % (max + 1),
            256..=65_535 => u64::from(self.u16()) % (max + 1),
            _ => self.u64() % max.saturating_add(1).max(1),
        }
    }

    /// True about `numerator` times in 256.
    pub(super) fn chance(&mut self, numerator: u8) -> bool {
        self.byte() < numerator
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(super) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub(super) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `count` of the next bytes (fewer at the end).
    pub(super) fn take(&mut self, count: usize) -> &'a [u8] {
        let start = self.position.min(self.data.len());
        let end = start.saturating_add(count).min(self.data.len());
        self.position = start.saturating_add(count);
        &self.data[start..end]
    }

    /// One of `items`, or `None` if there are none.
    pub(super) fn pick<'b, T>(&mut self, items: &'b [T]) -> Option<&'b T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len()))
    }
}
