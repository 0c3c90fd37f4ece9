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
use crate::model::merge::{CasePart, CaseState, Record, Register, StatusValue, Version};
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

// ---- Inputs ----

fn author() -> impl Strategy<Value = AuthorId> {
    // A few authors often (so dots collide and sort), any author sometimes.
    prop_oneof![3 => (0u8..3).prop_map(|b| AuthorId([b; 32])), 1 => any::<[u8; 32]>().prop_map(AuthorId)]
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..300, Just(u64::MAX), 1u64..=u64::MAX]
}

fn dot() -> impl Strategy<Value = Dot> {
    (author(), seq()).prop_map(|(author, seq)| Dot { author, seq })
}

fn dots() -> impl Strategy<Value = Dots> {
    proptest::collection::vec(dot(), 0..4).prop_map(|mut dots| {
        // As every decoder returns them.
        dots.sort();
        dots.dedup();
        dots.into()
    })
}

fn vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((author(), prop_oneof![Just(0u64), seq()]), 0..4).prop_map(|heads| {
        let mut vector = VersionVector::new();
        for (author, seq) in heads {
            vector.raise(author, seq);
        }
        vector
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z ]{0,12}", "(?s).{0,24}"]
}

/// Values of every kind; decimals and dates mostly valid, sometimes not.
fn value() -> impl Strategy<Value = FieldValue> {
    let date = (1000u32..3000, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    prop_oneof![
        text().prop_map(FieldValue::Text),
        any::<i64>().prop_map(FieldValue::Integer),
        prop_oneof![4 => "-?[0-9]{1,8}(\\.[0-9]{1,4})?", 1 => text()].prop_map(FieldValue::Decimal),
        any::<bool>().prop_map(FieldValue::Bool),
        prop_oneof![4 => date, 1 => text()].prop_map(FieldValue::Date),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(FieldValue::Bytes),
    ]
}

/// Field names: mostly short and valid, sometimes any text (empty, long, control characters).
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z_]{1,10}", 1 => "(?s).{0,40}"]
}

fn writes() -> impl Strategy<Value = Vec<FieldWrite>> {
    proptest::collection::vec(
        (field_name(), value(), dots()).prop_map(|(name, value, supersedes)| FieldWrite {
            name: name.into(),
            value,
            supersedes,
        }),
        0..4,
    )
}

fn status_write() -> impl Strategy<Value = StatusWrite> {
    (dots(), vector()).prop_map(|(supersedes, seen)| StatusWrite { supersedes, seen })
}

/// Operations of every kind, with any ids and dots; mostly valid.
fn operation() -> impl Strategy<Value = Operation> {
    let case = any::<[u8; 16]>().prop_map(CaseId);
    let entry = any::<[u8; 16]>().prop_map(EntryId);
    let change = prop_oneof![
        Just(StatusChange::Delete),
        Just(StatusChange::Archive),
        Just(StatusChange::Unarchive),
        Just(StatusChange::Restore)
    ];
    prop_oneof![
        (case.clone(), writes()).prop_map(|(case, fields)| Operation::CreateCase { case, fields: fields.into() }),
        (case.clone(), writes()).prop_map(|(case, fields)| Operation::SetFields { case, fields: fields.into() }),
        (case.clone(), change, status_write()).prop_map(|(case, change, write)| Operation::ChangeStatus {
            case,
            change,
            write
        }),
        (case.clone(), entry.clone(), writes()).prop_map(|(case, entry, fields)| Operation::AddEntry {
            case,
            entry,
            fields: fields.into()
        }),
        (case.clone(), entry.clone(), writes()).prop_map(|(case, entry, fields)| Operation::UpdateEntry {
            case,
            entry,
            fields: fields.into()
        }),
        (case, entry, status_write()).prop_map(|(case, entry, write)| Operation::RemoveEntry { case, entry, write }),
    ]
}

/// Event bytes as prost encodes them, with any header and body (mostly valid).
fn event_bytes() -> impl Strategy<Value = Vec<u8>> {
    let id = |len: usize| proptest::collection::vec(any::<u8>(), len..=len);
    let size = |len: usize| prop_oneof![19 => Just(len), 1 => 0..len + 2];
    (
        (size(16).prop_flat_map(id), size(32).prop_flat_map(id), prop_oneof![Just(0u64), Just(1), seq()]),
        (prop_oneof![3 => Just(None), 1 => size(32).prop_flat_map(id).prop_map(Some)], any::<u64>()),
        (prop_oneof![Just(1i32), Just(2), any::<i32>()], proptest::collection::vec(any::<u8>(), 0..60)),
    )
        .prop_map(|((space, author, seq), (prev, hlc), (encoding, body))| {
            // A first event's prev is zero; a later one's any 32 bytes (or of a wrong size).
            let prev = prev.unwrap_or_else(|| if seq == 1 { vec![0; 32] } else { vec![seq as u8; 32] });
            pb::Event {
                space: space.into(),
                author: author.into(),
                seq,
                prev: prev.into(),
                hlc,
                encoding,
                body: body.into(),
            }
            .encode_to_vec()
        })
}

/// A field of any tag and wire type, with a short payload (its bytes need not be well formed).
fn any_field() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![4 => 1u64..10, 1 => Just(0u64), 1 => 10u64..20, 1 => Just(1 << 29), 1 => any::<u64>()];
    (tag, 0u64..8, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(tag, wire_type, payload)| {
        let mut out = Vec::new();
        put_varint(tag.wrapping_shl(3) | wire_type, &mut out);
        match wire_type {
            0 => {
                put_varint(payload.iter().fold(0u64, |v, b| v.wrapping_mul(251).wrapping_add(u64::from(*b))), &mut out)
            }
            2 => {
                put_varint(payload.len() as u64, &mut out);
                out.extend_from_slice(&payload);
            }
            _ => out.extend_from_slice(&payload),
        }
        out
    })
}

fn put_varint(value: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(value, out);
}

/// One change to a valid encoding: to its bytes blindly, or to its fields (read as a tree, see
/// [`Node`]) in ways that keep it well formed but may change its meaning or make it unusual.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    /// Copies a range of the bytes to another place (a field repeated, a length duplicated).
    Copy(prop::sample::Index, usize, prop::sample::Index),
    Cut(prop::sample::Index),
    Splice(prop::sample::Index, Vec<u8>),
    Join(Vec<u8>),
    /// A varint field's value replaced (a bool of 2, an enum past its values, a huge seq...).
    Value(prop::sample::Index, u64),
    /// A varint (key, length or value) written with redundant continuation bytes.
    Overlong(prop::sample::Index, usize),
    /// The first field of a message moved to its end.
    Rotate(prop::sample::Index),
}

fn mutation(join: impl Strategy<Value = Vec<u8>> + 'static) -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    let value = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(0x7f),
        Just(0x80),
        Just(u64::from(u32::MAX) + 2),
        Just(u64::MAX),
        any::<u64>()
    ];
    prop_oneof![
        1 => (at(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => (at(), prop_oneof![Just(0u8), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()])
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (at(), proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (at(), 1usize..6).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (at(), 1usize..40, at()).prop_map(|(i, n, to)| Mutation::Copy(i, n, to)),
        1 => at().prop_map(Mutation::Cut),
        1 => (at(), any_field()).prop_map(|(i, f)| Mutation::Splice(i, f)),
        1 => join.prop_map(Mutation::Join),
        3 => (at(), value).prop_map(|(i, v)| Mutation::Value(i, v)),
        2 => (at(), 1usize..4).prop_map(|(i, n)| Mutation::Overlong(i, n)),
        1 => at().prop_map(Mutation::Rotate),
    ]
}

/// The fields of encoded bytes as a tree: a length-delimited value whose bytes read as fields is
/// taken for a nested message (an id or a text may be read so by chance: a change there changes
/// the same bytes for both readers).
#[derive(Clone, Debug)]
enum Node {
    Varint(u64),
    Bytes(Vec<u8>),
    Message(Vec<(u64, Node)>),
}

fn tree(bytes: &[u8], depth: usize) -> Option<Vec<(u64, Node)>> {
    let fields = hand_fields(bytes)?;
    let node = |value| match value {
        Value::Varint(value) => Node::Varint(value),
        Value::Bytes(bytes) if depth < 6 && !bytes.is_empty() => match tree(&bytes, depth + 1) {
            Some(fields) => Node::Message(fields),
            None => Node::Bytes(bytes),
        },
        Value::Bytes(bytes) => Node::Bytes(bytes),
    };
    Some(fields.into_iter().map(|(tag, value)| (tag, node(value))).collect())
}

/// Every varint field value of a tree, depth first.
fn varint_values<'a>(fields: &'a mut [(u64, Node)], out: &mut Vec<&'a mut u64>) {
    for (_, node) in fields {
        match node {
            Node::Varint(value) => out.push(value),
            Node::Message(fields) => varint_values(fields, out),
            Node::Bytes(_) => {}
        }
    }
}

/// Moves the first field of the `target`-th message of a tree (depth first) to its end.
fn rotate(fields: &mut [(u64, Node)], target: usize, seen: &mut usize) {
    if *seen == target && !fields.is_empty() {
        fields.rotate_left(1);
    }
    *seen += 1;
    for (_, node) in fields {
        if let Node::Message(inner) = node {
            rotate(inner, target, seen);
        }
    }
}

/// Writes a tree as bytes; the varint written `overlong.0`-th (keys, lengths and values, in the
/// order written) gets `overlong.1` redundant continuation bytes (as many as fit in 10 bytes).
struct TreeWriter {
    written: usize,
    overlong: Option<(usize, usize)>,
}

impl TreeWriter {
    fn varint(&mut self, value: u64, out: &mut Vec<u8>) {
        let start = out.len();
        put_varint(value, out);
        if let Some((_, extra)) = self.overlong.filter(|(at, _)| *at == self.written) {
            let extra = extra.min(10 - (out.len() - start));
            if extra > 0 {
                *out.last_mut().expect("a varint has a byte") |= 0x80;
                out.extend(std::iter::repeat_n(0x80, extra - 1));
                out.push(0);
            }
        }
        self.written += 1;
    }

    fn fields(&mut self, fields: &[(u64, Node)], out: &mut Vec<u8>) {
        for (tag, node) in fields {
            match node {
                Node::Varint(value) => {
                    self.varint(tag << 3, out);
                    self.varint(*value, out);
                }
                Node::Bytes(bytes) => {
                    self.varint(tag << 3 | 2, out);
                    self.varint(bytes.len() as u64, out);
                    out.extend_from_slice(bytes);
                }
                Node::Message(fields) => {
                    let mut inner = Vec::new();
                    self.fields(fields, &mut inner);
                    self.varint(tag << 3 | 2, out);
                    self.varint(inner.len() as u64, out);
                    out.extend_from_slice(&inner);
                }
            }
        }
    }
}

/// Changes the fields of `bytes` read as a tree and writes them back (nothing when they do not
/// read as fields).
fn mutate_tree(bytes: &mut Vec<u8>, change: impl FnOnce(&mut Vec<(u64, Node)>, &mut TreeWriter)) {
    let Some(mut fields) = tree(bytes, 0) else { return };
    let mut writer = TreeWriter { written: 0, overlong: None };
    change(&mut fields, &mut writer);
    bytes.clear();
    writer.fields(&fields, bytes);
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Flip(i, x) if len > 0 => bytes[i.index(len)] ^= x,
            Mutation::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Mutation::Insert(i, new) | Mutation::Splice(i, new) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Copy(i, n, to) if len > 0 => {
                let from = i.index(len);
                let copied = bytes[from..(from + n).min(len)].to_vec();
                let at = to.index(len + 1);
                bytes.splice(at..at, copied);
            }
            Mutation::Cut(i) => bytes.truncate(i.index(len + 1)),
            Mutation::Join(more) => bytes.extend_from_slice(more),
            Mutation::Value(i, new) => mutate_tree(&mut bytes, |fields, _| {
                let mut values = Vec::new();
                varint_values(fields, &mut values);
                if !values.is_empty() {
                    let pick = i.index(values.len());
                    *values[pick] = *new;
                }
            }),
            // Fewer varints are written than there are bytes (a field takes two bytes or more).
            Mutation::Overlong(i, extra) => {
                let at = i.index(len.max(1) / 2 + 1);
                mutate_tree(&mut bytes, |_, writer| writer.overlong = Some((at, *extra)));
            }
            Mutation::Rotate(i) => {
                let target = i.index(len.max(1) / 4 + 1);
                mutate_tree(&mut bytes, |fields, _| rotate(fields, target, &mut 0));
            }
            _ => {}
        }
    }
    bytes
}

/// Bytes of no structure, or a soup of fields of any tag and wire type.
fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::collection::vec(any_field(), 0..8).prop_map(|fields| fields.concat()),
    ]
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    operation().prop_map(|operation| encode_operation(&operation))
}

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
    (proptest::collection::vec(version, 0..4), proptest::collection::vec(dot(), 0..4))
        .prop_map(|(current, pending)| Register { current: current.into(), pending })
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
    (proptest::collection::vec(version, 0..3), proptest::collection::vec(dot(), 0..3))
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
    register.current.iter().all(|v| v.dot.seq != 0 && valid(&v.value)) && register.pending.iter().all(|d| d.seq != 0)
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
