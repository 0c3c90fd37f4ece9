//! The hand-written protobuf code held to prost's meaning on arbitrary input: the field cursor
//! (`plain_fields`), the in-place header and body readers (`header_decoding`, `body_decoding`)
//! and the register encoders (`register_encoding`).
//!
//! - Decoding, on arbitrary byte strings, on random soups of fields and on valid encodings
//!   mutated (bytes flipped, set, inserted, deleted, copied, cut; fields of any tag and wire type
//!   spliced in, whole encodings joined; and, on the fields read as a tree, a varint value
//!   replaced, a varint written overlong, a message's fields reordered): whatever a hand reader
//!   accepts, prost accepts with the same meaning (checked against prost's own decoding, never
//!   against the engine's decoders, which try the hand readers first); whatever prost accepts in
//!   its own (canonical) encoding, the hand reader accepts too (it may leave only other encodings
//!   to prost); and the decoders the engine uses (hand reader first, prost for the rest) accept
//!   exactly what prost accepts, with its meaning.
//! - Encoding, for arbitrary domain values: the hand encoders write prost's bytes, and prost
//!   reads them back as the same values.

use bytes::Bytes;
use casesync_proto::v1 as pb;
use proptest::prelude::*;
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;

use super::body_decoding::decode_plain_body;
use super::register_encoding::{encode_register, encode_register_into, encode_status_register_into};
use super::{
    decode_case_part, decode_operation, decode_operation_message, encode_operation, for_each_case_part, record_to_pb,
    register_to_pb, status_register_to_pb, PartBuffers,
};
use crate::codec::keys::{CASE_PART_ENTRY, CASE_PART_FIELD, CASE_PART_STATUS};
use crate::model::event::plain_header::decode_plain_header;
use crate::model::event::{parse_event, BodyEncoding, EventHeader};
use crate::model::ids::{AuthorId, CaseId, EntryId, EventId, SpaceId};
use crate::model::merge::{CasePart, CaseState, PendingDot, Record, Register, StatusValue, Version};
use crate::model::operation::{Dot, Dots, FieldValue, FieldWrite, Operation, Status, StatusChange, StatusWrite};
use crate::model::plain_fields::{Field, Fields};
use crate::model::vector_clock::VersionVector;

// ---- Decoding: the field cursor ----

/// A field as both cursors report it, owned.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Varint(u64),
    Bytes(Vec<u8>),
}

/// Every field of `bytes` as the hand cursor reads them, or `None` where it refuses.
fn hand_fields(bytes: &[u8]) -> Option<Vec<(u64, Value)>> {
    let mut fields = Fields::new(bytes);
    let mut out = Vec::new();
    while let Some((tag, field)) = fields.next()? {
        out.push((
            tag,
            match field {
                Field::Varint(value) => Value::Varint(value),
                Field::Bytes(bytes) => Value::Bytes(bytes.to_vec()),
            },
        ));
    }
    Some(out)
}

/// How prost's own primitives (the ones its generated code decodes with) read the same bytes.
#[derive(Debug, PartialEq)]
enum ProstFields {
    /// Every field, each a varint or length-delimited.
    Fields(Vec<(u64, Value)>),
    /// Prost reads on to a field of another wire type (fixed 32 or 64 bits, a group).
    OtherWireType,
    /// Prost refuses the bytes.
    Refused,
}

fn prost_fields(mut bytes: &[u8]) -> ProstFields {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut bytes) else { return ProstFields::Refused };
        let value = match wire_type {
            WireType::Varint => match decode_varint(&mut bytes) {
                Ok(value) => Value::Varint(value),
                Err(_) => return ProstFields::Refused,
            },
            WireType::LengthDelimited => match decode_varint(&mut bytes) {
                Ok(len) if len <= bytes.len() as u64 => {
                    let (value, rest) = bytes.split_at(len as usize);
                    bytes = rest;
                    Value::Bytes(value.to_vec())
                }
                _ => return ProstFields::Refused,
            },
            _ => return ProstFields::OtherWireType,
        };
        out.push((u64::from(tag), value));
    }
    ProstFields::Fields(out)
}

/// The cursor and prost read the same fields. The cursor takes two keys prost refuses: tag 0,
/// and keys past 32 bits (tags from 2^29); no hand reader accepts either tag.
fn assert_cursor_agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
    let hand = hand_fields(bytes);
    match prost_fields(bytes) {
        ProstFields::Fields(fields) => prop_assert_eq!(hand, Some(fields)),
        ProstFields::OtherWireType => prop_assert_eq!(hand, None),
        ProstFields::Refused => {
            if let Some(fields) = hand {
                prop_assert!(
                    fields.iter().any(|(tag, _)| *tag == 0 || *tag >= 1 << 29),
                    "the cursor read fields prost refuses: {:?}",
                    fields
                );
            }
        }
    }
    Ok(())
}

// ---- Decoding: event headers and bodies ----

/// An event's header and body as prost reads them, under the rules every event is held to
/// (sizes, seq from 1 with a zero prev at 1, a known body encoding).
fn header_by_prost(bytes: &[u8]) -> Option<(EventHeader, Bytes)> {
    let message = pb::Event::decode(bytes).ok()?;
    let prev = EventId::from_slice(&message.prev).ok()?;
    if message.seq == 0 || (message.seq == 1 && prev != EventId::ZERO) {
        return None;
    }
    let encoding = match pb::BodyEncoding::try_from(message.encoding) {
        Ok(pb::BodyEncoding::Plain) => BodyEncoding::Plain,
        Ok(pb::BodyEncoding::Sealed) => BodyEncoding::Sealed,
        Ok(pb::BodyEncoding::Membership) => BodyEncoding::Membership,
        _ => return None,
    };
    let header = EventHeader {
        space: SpaceId::from_slice(&message.space).ok()?,
        author: AuthorId::from_slice(&message.author).ok()?,
        seq: message.seq,
        prev,
        hlc: message.hlc,
        encoding,
    };
    Some((header, message.body))
}

fn assert_headers_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let by_prost = header_by_prost(bytes);
    match decode_plain_header(bytes) {
        Some((header, body)) => {
            let (prost_header, prost_body) = by_prost.clone().expect("prost reads what the hand reader read");
            prop_assert_eq!(&header, &prost_header);
            prop_assert_eq!(&bytes[body], &prost_body[..]);
        }
        None => {
            // Only an encoding other than prost's own may be left to prost.
            let canonical = pb::Event::decode(bytes).is_ok_and(|m| m.encode_to_vec() == bytes);
            prop_assert!(!(canonical && by_prost.is_some()), "the hand reader left prost's own encoding to prost");
        }
    }
    // What the engine reads (hand reader first, prost for the rest) is what prost reads.
    let engine = parse_event(Bytes::copy_from_slice(bytes)).ok();
    prop_assert_eq!(engine, by_prost);
    Ok(())
}

fn assert_bodies_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let by_prost = decode_operation_message(bytes).ok();
    match decode_plain_body(bytes) {
        Some(operation) => prop_assert_eq!(Some(operation), by_prost.clone(), "prost reads what the hand reader read"),
        None => {
            let canonical = pb::Body::decode(bytes).is_ok_and(|m| m.encode_to_vec() == bytes);
            prop_assert!(!(canonical && by_prost.is_some()), "the hand reader left prost's own encoding to prost");
        }
    }
    prop_assert_eq!(decode_operation(bytes).ok(), by_prost);
    Ok(())
}

mod inputs;
use inputs::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn on_arbitrary_bytes_every_hand_reader_agrees_with_prost(bytes in arbitrary_bytes()) {
        assert_cursor_agrees(&bytes)?;
        assert_headers_agree(&bytes)?;
        assert_bodies_agree(&bytes)?;
    }

    #[test]
    fn on_mutated_events_the_cursor_and_the_header_reader_agree_with_prost(
        event in event_bytes(),
        mutations in proptest::collection::vec(mutation(event_bytes()), 0..4),
    ) {
        let bytes = mutate(event, &mutations);
        assert_cursor_agrees(&bytes)?;
        assert_headers_agree(&bytes)?;
    }

    #[test]
    fn on_mutated_bodies_the_cursor_and_the_body_reader_agree_with_prost(
        body in body_bytes(),
        mutations in proptest::collection::vec(mutation(body_bytes()), 0..4),
    ) {
        let bytes = mutate(body, &mutations);
        assert_cursor_agrees(&bytes)?;
        assert_bodies_agree(&bytes)?;
    }

    /// Whatever prost writes for a valid operation, the hand reader reads as that operation; an
    /// invalid one both refuse.
    #[test]
    fn the_hand_reader_reads_every_operation_prost_writes(operation in operation()) {
        let bytes = encode_operation(&operation);
        let valid = operation.validate().is_ok();
        prop_assert_eq!(decode_plain_body(&bytes), valid.then(|| operation.clone()));
        prop_assert_eq!(decode_operation_message(&bytes).ok(), valid.then_some(operation));
    }
}

// ---- Encoding ----

fn register() -> impl Strategy<Value = Register<FieldValue>> {
    let version = (dot(), prop_oneof![Just(0u64), any::<u64>()], value()).prop_map(|(dot, hlc, value)| Version {
        dot,
        hlc,
        value,
    });
    (proptest::collection::vec(version, 0..4), pending_dots(4))
        .prop_map(|(current, pending)| Register { current: current.into(), pending })
}

fn pending_dots(most: usize) -> impl Strategy<Value = Vec<PendingDot>> {
    proptest::collection::vec((dot(), prop_oneof![Just(0u64), any::<u64>()]), 0..most)
        .prop_map(|dots| dots.into_iter().map(|(dot, hlc)| PendingDot { dot, hlc }).collect())
}

fn status_register() -> impl Strategy<Value = Register<StatusValue>> {
    let status = prop_oneof![
        Just(Status::Active),
        Just(Status::Archived),
        Just(Status::Deleted),
        Just(Status::Present),
        Just(Status::Removed)
    ];
    let version = (dot(), prop_oneof![Just(0u64), any::<u64>()], status, vector())
        .prop_map(|(dot, hlc, status, seen)| Version { dot, hlc, value: StatusValue { status, seen } });
    (proptest::collection::vec(version, 0..3), pending_dots(3))
        .prop_map(|(current, pending)| Register { current: current.into(), pending })
}

fn record() -> impl Strategy<Value = Record> {
    (status_register(), proptest::collection::vec((field_name(), register()), 0..4)).prop_map(|(status, fields)| {
        let mut record = Record { status, ..Record::default() };
        for (name, register) in fields {
            record.fields.insert(name.into(), register);
        }
        record
    })
}

fn case_state() -> impl Strategy<Value = CaseState> {
    (any::<[u8; 16]>(), record(), proptest::collection::vec((any::<[u8; 16]>(), record()), 0..3)).prop_map(
        |(id, record, entries)| {
            let mut state = CaseState::new(CaseId(id));
            state.record = record;
            for (entry, record) in entries {
                state.entries.insert(EntryId(entry), record);
            }
            state
        },
    )
}

/// Whether prost can read the register back as the same register (it refuses dots at seq 0 and
/// invalid values, which no fold writes).
fn decodable<T>(register: &Register<T>, valid: impl Fn(&T) -> bool) -> bool {
    register.current.iter().all(|v| v.dot.seq != 0 && valid(&v.value))
        && register.pending.iter().all(|p| p.dot.seq != 0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A field register: prost's bytes, from a clean or a used buffer; prost reads them back.
    #[test]
    fn a_register_is_encoded_as_prost_encodes_it(name in field_name(), register in register(), dirty in proptest::collection::vec(any::<u8>(), 0..8)) {
        let expected = register_to_pb(&name, &register).encode_to_vec();
        prop_assert_eq!(&encode_register(&name, &register), &expected);
        let mut buffer = dirty;
        encode_register_into(&name, &register, &mut buffer);
        prop_assert_eq!(&buffer, &expected);
        if decodable(&register, |v| v.validate().is_ok()) {
            let mut state = CaseState::new(CaseId([1; 16]));
            let part = CasePart::Field(name.clone().into());
            decode_case_part(&mut state, &part, &expected).unwrap();
            prop_assert_eq!(&state.record.fields.get(name.as_str()), &Some(&register));
        }
    }

    /// A status register: prost's bytes; prost reads them back.
    #[test]
    fn a_status_register_is_encoded_as_prost_encodes_it(register in status_register(), dirty in proptest::collection::vec(any::<u8>(), 0..8)) {
        let expected = status_register_to_pb(&register).encode_to_vec();
        let mut buffer = dirty;
        encode_status_register_into(&register, &mut buffer);
        prop_assert_eq!(&buffer, &expected);
        if decodable(&register, |_| true) {
            let mut state = CaseState::new(CaseId([1; 16]));
            decode_case_part(&mut state, &CasePart::Status, &expected).unwrap();
            prop_assert_eq!(&state.record.status, &register);
        }
    }

    /// Every stored part of a case, as the folds write them (buffers reused from case to case):
    /// prost's bytes for each.
    #[test]
    fn every_stored_part_of_a_case_is_encoded_as_prost_encodes_it(states in proptest::collection::vec(case_state(), 1..3)) {
        let space = SpaceId([9; 16]);
        let mut buffers = PartBuffers::default();
        for state in &states {
            let mut parts = Vec::new();
            for_each_case_part(&space, state, &mut buffers, |key, value| {
                parts.push((key.to_vec(), value.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap();
            let prefix_len = 16 + 16;
            let mut expected = Vec::new();
            if !state.record.status.is_empty() {
                expected.push((vec![CASE_PART_STATUS], status_register_to_pb(&state.record.status).encode_to_vec()));
            }
            for (name, register) in state.record.fields.iter().filter(|(_, r)| !r.is_empty()) {
                let key = [&[CASE_PART_FIELD][..], name.as_bytes()].concat();
                expected.push((key, register_to_pb(name, register).encode_to_vec()));
            }
            for (id, record) in &state.entries {
                let key = [&[CASE_PART_ENTRY][..], id.as_bytes()].concat();
                expected.push((key, record_to_pb(id.as_bytes(), record).encode_to_vec()));
            }
            let found: Vec<(Vec<u8>, Vec<u8>)> = parts.into_iter().map(|(key, value)| (key[prefix_len..].to_vec(), value)).collect();
            prop_assert_eq!(found, expected);
        }
    }
}
