//! Event headers read in place from the event bytes, without building the `casesync.v1.Event`
//! message: every event read from the log (a rebuild's or an export's reader) or received from a
//! peer has its header parsed, and the message held a `Bytes` (reference-counted, from a copy of
//! the stored record) for each of space, author, prev and body.
//!
//! Only the plain encoding is read here: fields 1-7 each at most once and of their wire type, no
//! unknown field, and a header that is valid as it stands (sizes, seq, encoding). Anything else
//! returns `None` and is parsed by prost, which also words the error: what an event's header is
//! never depends on which of the two read it (the property test below holds them to that).

use std::ops::Range;

use crate::model::event::{BodyEncoding, EventHeader};
use crate::model::ids::{AuthorId, EventId, SpaceId};
use crate::model::plain_fields::{once, Field, Fields};

/// The header of event bytes in the plain encoding and where its body lies in them, or `None`
/// (see the module documentation).
pub(crate) fn decode_plain_header(event: &[u8]) -> Option<(EventHeader, Range<usize>)> {
    let (mut space, mut author, mut seq, mut prev, mut hlc, mut encoding, mut body) =
        (None, None, None, None, None, None, None);
    let mut fields = Fields::new(event);
    while let Some((tag, field)) = fields.next()? {
        match (tag, field) {
            (1, Field::Bytes(bytes)) => once(&mut space, SpaceId::from_slice(bytes).ok()?)?,
            (2, Field::Bytes(bytes)) => once(&mut author, AuthorId::from_slice(bytes).ok()?)?,
            (3, Field::Varint(value)) => once(&mut seq, value)?,
            (4, Field::Bytes(bytes)) => once(&mut prev, EventId::from_slice(bytes).ok()?)?,
            (5, Field::Varint(value)) => once(&mut hlc, value)?,
            (6, Field::Varint(value)) => once(&mut encoding, value)?,
            (7, Field::Bytes(bytes)) => once(&mut body, bytes)?,
            _ => return None,
        }
    }
    let (seq, prev) = (seq?, prev?);
    if seq == 0 || (seq == 1 && prev != EventId::ZERO) {
        return None;
    }
    let encoding = match encoding? {
        1 => BodyEncoding::Plain,
        2 => BodyEncoding::Sealed,
        3 => BodyEncoding::Membership,
        _ => return None,
    };
    // The body is a slice of `event`: its place is the distance between their starts.
    let body = body.map_or(0..0, |body| {
        let start = body.as_ptr() as usize - event.as_ptr() as usize;
        start..start + body.len()
    });
    let header = EventHeader { space: space?, author: author?, seq, prev, hlc: hlc.unwrap_or(0), encoding };
    Some((header, body))
}

/// Whether `event` is exactly the canonical encoding of `header` with `body`, the bytes
/// [`crate::model::event::SignedEvent::build`] writes (prost's): fields 1-7 in order, each once,
/// defaults (a zero clock, an empty body) left out, varints and lengths in their fewest bytes.
/// Any other encoding of the same header decodes to the same event under another id: a peer
/// could offer one event in many byte forms, so only this one is accepted from the network.
pub(crate) fn is_canonical(event: &[u8], header: &EventHeader, body: &[u8]) -> bool {
    let mut expect = Canonical { rest: event };
    expect.bytes(1, header.space.as_bytes())
        && expect.bytes(2, header.author.as_bytes())
        && expect.varint_field(3, header.seq)
        && expect.bytes(4, header.prev.as_bytes())
        && expect.varint_field(5, header.hlc)
        && expect.varint_field(6, header.encoding.wire() as u64)
        && expect.bytes(7, body)
        && expect.rest.is_empty()
}

/// Matches expected fields against the front of the bytes.
struct Canonical<'a> {
    rest: &'a [u8],
}

impl Canonical<'_> {
    fn varint(&mut self, mut value: u64) -> bool {
        loop {
            let byte = (value & 0x7f) as u8 | if value >= 0x80 { 0x80 } else { 0 };
            match self.rest.split_first() {
                Some((&first, rest)) if first == byte => self.rest = rest,
                _ => return false,
            }
            value >>= 7;
            if value == 0 {
                return true;
            }
        }
    }

    fn varint_field(&mut self, tag: u64, value: u64) -> bool {
        value == 0 || (self.varint(tag << 3) && self.varint(value))
    }

    fn bytes(&mut self, tag: u64, value: &[u8]) -> bool {
        if value.is_empty() {
            return true;
        }
        if !(self.varint((tag << 3) | 2) && self.varint(value.len() as u64)) {
            return false;
        }
        match self.rest.strip_prefix(value) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{parse_event, parse_event_message};
    use bytes::Bytes;
    use casesync_proto::v1 as pb;
    use proptest::prelude::*;
    use prost::Message;

    fn id(len: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    /// Events as prost encodes them: mostly valid, sometimes with a wrong size, a zero or
    /// first seq, a zero hlc, or an unknown encoding.
    fn event() -> impl Strategy<Value = pb::Event> {
        let size = |len: usize| prop_oneof![9 => Just(len), 1 => Just(len - 1)];
        (
            (size(16), size(32), prop_oneof![Just(0u64), Just(1), 2u64..1 << 40]),
            (size(32), 0u8..2, prop_oneof![Just(0u64), any::<u64>()], -1i32..4),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|((space, author, seq), (prev, prev_byte, hlc, encoding), body)| pb::Event {
                space: id(space, 1),
                author: id(author, 2),
                seq,
                prev: id(prev, prev_byte),
                hlc,
                encoding,
                body: Bytes::from(body),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Whatever prost encodes, the plain reader gives prost's header and body, or leaves it
        /// to prost (never a header prost would refuse or read differently).
        #[test]
        fn the_plain_reader_agrees_with_prost(message in event()) {
            let bytes = Bytes::from(message.encode_to_vec());
            let by_prost = parse_event_message(bytes.clone());
            match decode_plain_header(&bytes) {
                Some((header, body)) => {
                    let (prost_header, prost_body) = by_prost.expect("prost reads what the plain reader read");
                    prop_assert_eq!(header, prost_header);
                    prop_assert_eq!(&bytes[body], &prost_body[..]);
                }
                // Only an event prost refuses is left to it here (every one of these is plain).
                None => prop_assert!(by_prost.is_err(), "the plain reader left a valid plain event to prost"),
            }
        }

        /// What prost encodes is canonical; any other byte form of a valid event is not.
        #[test]
        fn only_prosts_own_encoding_is_canonical(message in event(), how in 0u8..4) {
            let bytes = Bytes::from(message.encode_to_vec());
            let Ok((header, body)) = parse_event(bytes.clone()) else { return Ok(()) };
            prop_assert!(is_canonical(&bytes, &header, &body));
            let mut other = bytes.to_vec();
            match how {
                // An unknown field, or a repeated one (prost keeps the last).
                0 => other.extend_from_slice(&[0x40, 1]),
                1 => other.extend_from_slice(&pb::Event { seq: header.seq, ..Default::default() }.encode_to_vec()),
                // A zero clock written out, where prost leaves it out.
                2 => other.extend_from_slice(&[0x28, 0]),
                // Fields in another order: one moved to the end.
                _ => {
                    let first = 2 + usize::from(other[1]);
                    let moved: Vec<u8> = other.drain(..first).collect();
                    other.extend_from_slice(&moved);
                }
            }
            if let Ok((h, b)) = parse_event(Bytes::from(other.clone())) {
                prop_assert!(!is_canonical(&other, &h, &b), "{:?}", how);
            }
        }

        /// Damaged bytes (a flipped byte, cut short, two events joined) never give a header
        /// prost reads differently.
        #[test]
        fn damaged_bytes_never_read_differently(message in event(), at in any::<prop::sample::Index>(), flip in 1u8..=255, how in 0u8..3) {
            let mut bytes = message.encode_to_vec();
            match how {
                0 if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes[i] ^= flip; }
                1 => { let cut = at.index(bytes.len() + 1); bytes.truncate(cut); }
                _ => { let again = bytes.clone(); bytes.extend_from_slice(&again); }
            }
            let bytes = Bytes::from(bytes);
            if let Some((header, body)) = decode_plain_header(&bytes) {
                let (prost_header, prost_body) = parse_event_message(bytes.clone()).expect("prost reads what the plain reader read");
                prop_assert_eq!(header, prost_header);
                prop_assert_eq!(&bytes[body], &prost_body[..]);
            }
        }
    }

    /// A valid event with seq 3 and the body encoding `encoding`.
    fn sample(encoding: i32) -> pb::Event {
        pb::Event {
            space: id(16, 1),
            author: id(32, 2),
            seq: 3,
            prev: id(32, 4),
            hlc: 5,
            encoding,
            body: Bytes::from_static(b"body"),
        }
    }

    #[test]
    fn a_padded_varint_is_not_canonical() {
        let message = sample(2);
        let bytes = message.encode_to_vec();
        let (header, body) = parse_event(Bytes::from(bytes.clone())).unwrap();
        assert!(is_canonical(&bytes, &header, &body));
        // seq 3 as two bytes (0x83 0x00): the same number, another byte form.
        let at = 2 + 16 + 2 + 32;
        assert_eq!(&bytes[at..at + 2], &[0x18, 3]);
        let mut padded = bytes[..at + 1].to_vec();
        padded.extend_from_slice(&[0x83, 0x00]);
        padded.extend_from_slice(&bytes[at + 2..]);
        let (h, b) = parse_event(Bytes::from(padded.clone())).unwrap();
        assert_eq!(h, header);
        assert!(!is_canonical(&padded, &h, &b));
    }

    #[test]
    fn a_repeated_or_unknown_field_is_left_to_prost() {
        let message = sample(1);
        let bytes = message.encode_to_vec();
        assert!(decode_plain_header(&bytes).is_some());
        // prost keeps the last of a repeated singular field: the plain reader does not guess.
        let mut repeated = bytes.clone();
        repeated.extend_from_slice(&pb::Event { seq: 9, ..Default::default() }.encode_to_vec());
        assert_eq!(parse_event(Bytes::from(repeated.clone())).unwrap().0.seq, 9);
        assert!(decode_plain_header(&repeated).is_none());
        let mut unknown = bytes;
        unknown.extend_from_slice(&[8 << 3, 1]); // field 8, varint 1
        assert!(parse_event(Bytes::from(unknown.clone())).is_ok());
        assert!(decode_plain_header(&unknown).is_none());
    }
}
