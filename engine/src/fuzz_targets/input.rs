//! The fuzzer's bytes read as a sequence of choices: a byte, a number, a slice. Past the end
//! every read answers `None`, so a body stops where its input does.

/// A cursor over the fuzzer's bytes.
pub(super) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(super) fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    /// The next byte.
    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    /// The next two bytes, big-endian.
    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    /// An index below `len` (at least 1) from the next byte.
    pub(super) fn index(&mut self, len: usize) -> Option<usize> {
        Some(usize::from(self.byte()?) % len.max(1))
    }

    /// The next `len` bytes (fewer at the end).
    pub(super) fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        taken
    }

    /// A slice whose length the next two bytes give.
    pub(super) fn sized(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        Some(self.take(usize::from(len)))
    }
}
