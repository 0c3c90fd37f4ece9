//! A cursor over protobuf bytes for the plain readers (event headers, event bodies): each field
//! read in place, no message built. It takes only varints and length-delimited fields, the two
//! wire types casesync's messages use; anything else is left to prost by its callers.

const VARINT: u8 = 0;
const DELIMITED: u8 = 2;

/// A cursor over protobuf bytes.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

/// One field's value.
pub(crate) enum Field<'a> {
    /// A varint (wire type 0).
    Varint(u64),
    /// A length-delimited value (wire type 2).
    Bytes(&'a [u8]),
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { rest: bytes }
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Option<u64> {
        // Nearly every tag and length fits one byte.
        if let Some((&byte, rest)) = self.rest.split_first() {
            if byte < 0x80 {
                self.rest = rest;
                return Some(u64::from(byte));
            }
        }
        let mut value: u64 = 0;
        for (index, byte) in self.rest.iter().enumerate().take(10) {
            let bits = u64::from(byte & 0x7f);
            if index == 9 && bits > 1 {
                return None; // Past 64 bits.
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[index + 1..];
                return Some(value);
            }
        }
        None
    }

    /// The next field (tag, value); `Some(None)` at the end; `None` if it is malformed or of a
    /// wire type this reader does not take.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.rest.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let (tag, wire_type) = (key >> 3, (key & 7) as u8);
        let value = match wire_type {
            VARINT => Field::Varint(self.varint()?),
            DELIMITED => {
                let len = usize::try_from(self.varint()?).ok()?;
                if len > self.rest.len() {
                    return None;
                }
                let (bytes, rest) = self.rest.split_at(len);
                self.rest = rest;
                Field::Bytes(bytes)
            }
            _ => return None,
        };
        Some(Some((tag, value)))
    }
}

/// Sets a singular field once; a second occurrence is not the plain encoding.
pub(crate) fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}
