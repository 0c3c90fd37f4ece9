//! Event bodies decoded straight into operations, without building the `casesync.v1.Body`
//! message first. Every fold decodes one body per event (a rebuild's reader thread, a bulk
//! catch-up's ingest thread); the message held a `Bytes` (two atomic reference counts) for every
//! id and dot author and a vector of dots per field write, all dropped again at once.
//!
//! Only the plain encoding is read here: each field of its expected wire type, every singular
//! field at most once, no unknown field, and a valid operation. Anything else (a field repeated
//! that prost would merge or override, an unknown field, a malformed or invalid body) returns
//! `None` and is decoded by prost, which also words its error: so what a body means never
//! depends on which of the two read it (the property test below holds them to that).

use crate::model::ids::{AuthorId, CaseId, EntryId};
use crate::model::operation::{
    Dot, Dots, FieldName, FieldValue, FieldWrite, FieldWrites, Operation, StatusChange, StatusWrite,
};
use crate::model::vector_clock::VersionVector;

use crate::model::plain_fields::{once, Field, Fields};

fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

/// A field name: inline, no allocation, when short (nearly always).
fn field_name(bytes: &[u8]) -> Option<FieldName> {
    std::str::from_utf8(bytes).ok().map(FieldName::from)
}

/// Decodes a `Body` in the plain encoding into a valid operation, or `None` (see the module
/// documentation).
pub(crate) fn decode_plain_body(body: &[u8]) -> Option<Operation> {
    let mut fields = Fields::new(body);
    let (tag, Field::Bytes(message)) = fields.next()?? else {
        return None;
    };
    if fields.next()?.is_some() {
        return None; // A second operation: prost keeps the last (or merges the same one).
    }
    let operation = match tag {
        1 | 2 => {
            let op = op_message(message, false, Payload::FieldWrites)?;
            let (case, fields) = (case_id(op.case?)?, op.writes);
            if tag == 1 {
                Operation::CreateCase { case, fields }
            } else {
                Operation::SetFields { case, fields }
            }
        }
        3..=6 => {
            let op = op_message(message, false, Payload::StatusWrite)?;
            let change = match tag {
                3 => StatusChange::Delete,
                4 => StatusChange::Archive,
                5 => StatusChange::Unarchive,
                _ => StatusChange::Restore,
            };
            Operation::ChangeStatus { case: case_id(op.case?)?, change, write: status_write(op.status?)? }
        }
        7 | 8 => {
            let op = op_message(message, true, Payload::FieldWrites)?;
            let (case, entry, fields) = (case_id(op.case?)?, entry_id(op.entry?)?, op.writes);
            if tag == 7 {
                Operation::AddEntry { case, entry, fields }
            } else {
                Operation::UpdateEntry { case, entry, fields }
            }
        }
        9 | 10 => {
            let op = op_message(message, true, Payload::StatusWrite)?;
            let (case, entry, write) = (case_id(op.case?)?, entry_id(op.entry?)?, status_write(op.status?)?);
            if tag == 9 {
                Operation::RemoveEntry { case, entry, write }
            } else {
                Operation::RestoreEntry { case, entry, write }
            }
        }
        _ => return None,
    };
    operation.validate().ok()?;
    Some(operation)
}

/// What an operation message holds besides its ids.
#[derive(Clone, Copy, PartialEq)]
enum Payload {
    FieldWrites,
    StatusWrite,
}

/// The fields of an operation message (each `None` or empty when absent).
#[derive(Default)]
struct OpFields<'a> {
    case: Option<&'a [u8]>,
    entry: Option<&'a [u8]>,
    writes: FieldWrites,
    status: Option<&'a [u8]>,
}

/// Reads an operation message: case id (1); with `entry`, the entry id (2); then, at the next
/// tag, the field writes or the status write `payload` names.
fn op_message(message: &[u8], entry: bool, payload: Payload) -> Option<OpFields<'_>> {
    let mut op = OpFields::default();
    let payload_tag = if entry { 3 } else { 2 };
    let mut fields = Fields::new(message);
    while let Some((tag, value)) = fields.next()? {
        let Field::Bytes(bytes) = value else {
            return None;
        };
        match tag {
            1 => once(&mut op.case, bytes)?,
            2 if entry => once(&mut op.entry, bytes)?,
            tag if tag == payload_tag && payload == Payload::FieldWrites => op.writes.push(field_write(bytes)?),
            tag if tag == payload_tag => once(&mut op.status, bytes)?,
            _ => return None,
        }
    }
    Some(op)
}

fn case_id(bytes: &[u8]) -> Option<CaseId> {
    CaseId::from_slice(bytes).ok()
}

fn entry_id(bytes: &[u8]) -> Option<EntryId> {
    EntryId::from_slice(bytes).ok()
}

/// A `FieldWrite`: name (1), value (2), superseded dots (3), sorted and deduplicated.
fn field_write(message: &[u8]) -> Option<FieldWrite> {
    let (mut name, mut value, mut supersedes) = (None, None, Dots::new());
    let mut fields = Fields::new(message);
    while let Some((tag, field)) = fields.next()? {
        let Field::Bytes(bytes) = field else {
            return None;
        };
        match tag {
            1 => once(&mut name, field_name(bytes)?)?,
            2 => once(&mut value, field_value(bytes)?)?,
            3 => supersedes.push(dot(bytes)?),
            _ => return None,
        }
    }
    supersedes.sort();
    supersedes.dedup();
    Some(FieldWrite { name: name.unwrap_or_default(), value: value?, supersedes })
}

/// A `Value`: exactly one of its kinds.
fn field_value(message: &[u8]) -> Option<FieldValue> {
    let mut fields = Fields::new(message);
    let value = match fields.next()?? {
        (1, Field::Bytes(bytes)) => FieldValue::Text(text(bytes)?),
        (2, Field::Varint(raw)) => FieldValue::Integer(((raw >> 1) as i64) ^ -((raw & 1) as i64)),
        (3, Field::Bytes(bytes)) => FieldValue::Decimal(text(bytes)?),
        (4, Field::Varint(raw)) => FieldValue::Bool(raw != 0),
        (5, Field::Bytes(bytes)) => FieldValue::Date(text(bytes)?),
        (6, Field::Bytes(bytes)) => FieldValue::Bytes(bytes.to_vec()),
        _ => return None,
    };
    fields.next()?.is_none().then_some(value)
}

/// A `Dot`: author (1, 32 bytes), seq (2, at least 1).
fn dot(message: &[u8]) -> Option<Dot> {
    let (author, seq) = dot_fields(message)?;
    (seq != 0).then_some(Dot { author, seq })
}

/// A `Dot`'s author and seq (the seq may be 0: a version vector's head).
fn dot_fields(message: &[u8]) -> Option<(AuthorId, u64)> {
    let (mut author, mut seq) = (None, None);
    let mut fields = Fields::new(message);
    while let Some((tag, field)) = fields.next()? {
        match (tag, field) {
            (1, Field::Bytes(bytes)) => once(&mut author, AuthorId::from_slice(bytes).ok()?)?,
            (2, Field::Varint(value)) => once(&mut seq, value)?,
            _ => return None,
        }
    }
    Some((author?, seq.unwrap_or(0)))
}

/// A `StatusWrite`: superseded dots (1), sorted and deduplicated, and the writer's vector (2).
fn status_write(message: &[u8]) -> Option<StatusWrite> {
    let (mut supersedes, mut seen) = (Dots::new(), VersionVector::new());
    let mut fields = Fields::new(message);
    while let Some((tag, field)) = fields.next()? {
        let Field::Bytes(bytes) = field else {
            return None;
        };
        match tag {
            1 => supersedes.push(dot(bytes)?),
            2 => {
                let (author, seq) = dot_fields(bytes)?;
                seen.raise(author, seq);
            }
            _ => return None,
        }
    }
    supersedes.sort();
    supersedes.dedup();
    Some(StatusWrite { supersedes, seen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::wire::decode_operation_message;
    use bytes::Bytes;
    use casesync_proto::v1 as pb;
    use proptest::prelude::*;
    use prost::Message;

    fn id(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    fn dot() -> impl Strategy<Value = pb::Dot> {
        // Authors of 32 bytes mostly, a wrong length sometimes; seq 0 (invalid in a write) too.
        (prop_oneof![9 => Just(32usize), 1 => Just(31usize)], 0u8..3, 0u64..4)
            .prop_map(|(len, byte, seq)| pb::Dot { author: id(byte, len), seq })
    }

    fn value() -> impl Strategy<Value = Option<pb::Value>> {
        use pb::value::Kind;
        let kind = prop_oneof![
            ".{0,12}".prop_map(Kind::Text),
            any::<i64>().prop_map(Kind::Integer),
            prop_oneof![Just("12.50".to_string()), Just("1,5".to_string())].prop_map(Kind::Decimal),
            any::<bool>().prop_map(Kind::Boolean),
            prop_oneof![Just("2026-01-31".to_string()), Just("31.01.2026".to_string())].prop_map(Kind::Date),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Kind::Blob(Bytes::from(b))),
        ];
        prop_oneof![19 => kind.prop_map(|k| Some(pb::Value { kind: Some(k) })), 1 => Just(None)]
    }

    fn writes() -> impl Strategy<Value = Vec<pb::FieldWrite>> {
        let name = prop_oneof![Just("phone".to_string()), Just("name".to_string()), Just(String::new())];
        let write = (name, value(), proptest::collection::vec(dot(), 0..3))
            .prop_map(|(name, value, supersedes)| pb::FieldWrite { name, value, supersedes });
        proptest::collection::vec(write, 0..3)
    }

    fn status() -> impl Strategy<Value = Option<pb::StatusWrite>> {
        let write = (proptest::collection::vec(dot(), 0..3), proptest::collection::vec(dot(), 0..3))
            .prop_map(|(supersedes, seen)| pb::StatusWrite { supersedes, seen });
        prop_oneof![9 => write.prop_map(Some), 1 => Just(None)]
    }

    fn body() -> impl Strategy<Value = pb::Body> {
        use pb::body::Op;
        let case = prop_oneof![9 => Just(16usize), 1 => Just(15usize)].prop_map(|len| id(7, len));
        let entry = prop_oneof![9 => Just(16usize), 1 => Just(0usize)].prop_map(|len| id(8, len));
        let op = prop_oneof![
            (case.clone(), writes()).prop_map(|(case_id, fields)| Op::CreateCase(pb::CreateCase { case_id, fields })),
            (case.clone(), writes()).prop_map(|(case_id, fields)| Op::SetFields(pb::SetFields { case_id, fields })),
            (case.clone(), status()).prop_map(|(case_id, status)| Op::DeleteCase(pb::DeleteCase { case_id, status })),
            (case.clone(), status()).prop_map(|(case_id, status)| Op::ArchiveCase(pb::ArchiveCase { case_id, status })),
            (case.clone(), status())
                .prop_map(|(case_id, status)| Op::UnarchiveCase(pb::UnarchiveCase { case_id, status })),
            (case.clone(), status()).prop_map(|(case_id, status)| Op::RestoreCase(pb::RestoreCase { case_id, status })),
            (case.clone(), entry.clone(), writes())
                .prop_map(|(case_id, entry_id, fields)| Op::AddEntry(pb::AddEntry { case_id, entry_id, fields })),
            (case.clone(), entry.clone(), writes())
                .prop_map(|(case_id, entry_id, fields)| Op::UpdateEntry(pb::UpdateEntry { case_id, entry_id, fields })),
            (case.clone(), entry.clone(), status())
                .prop_map(|(case_id, entry_id, status)| Op::RemoveEntry(pb::RemoveEntry { case_id, entry_id, status })),
            (case, entry, status()).prop_map(|(case_id, entry_id, status)| Op::RestoreEntry(pb::RestoreEntry {
                case_id,
                entry_id,
                status
            })),
        ];
        prop_oneof![19 => op.prop_map(|op| pb::Body { op: Some(op) }), 1 => Just(pb::Body { op: None })]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever prost encodes (valid or not), the plain decoder reads it as prost does: the same
        /// operation when it is valid, and `None` (prost's error) when it is not.
        #[test]
        fn plain_bodies_decode_as_prost_decodes_them(body in body()) {
            let bytes = body.encode_to_vec();
            let plain = decode_plain_body(&bytes);
            match decode_operation_message(&bytes) {
                Ok(operation) => prop_assert_eq!(plain, Some(operation)),
                Err(_) => prop_assert_eq!(plain, None),
            }
        }

        /// Damaged or unusual bytes (flipped, cut, joined): when the plain decoder reads them at
        /// all, prost reads the same operation.
        #[test]
        fn damaged_bodies_never_mean_something_else(
            first in body(),
            second in body(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in any::<prop::sample::Index>(),
            join in any::<bool>(),
        ) {
            let mut bytes = first.encode_to_vec();
            if join {
                bytes.extend(second.encode_to_vec());
            }
            if !bytes.is_empty() {
                for (at, byte) in &flips {
                    let at = at.index(bytes.len());
                    bytes[at] ^= byte;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Some(operation) = decode_plain_body(&bytes) {
                prop_assert_eq!(decode_operation_message(&bytes).ok(), Some(operation));
            }
        }
    }

    #[test]
    fn a_repeated_operation_or_an_unknown_field_is_left_to_prost() {
        let case = id(7, 16);
        let set = |name: &str| pb::Body {
            op: Some(pb::body::Op::SetFields(pb::SetFields {
                case_id: case.clone(),
                fields: vec![pb::FieldWrite {
                    name: name.into(),
                    value: Some(pb::Value { kind: Some(pb::value::Kind::Text("x".into())) }),
                    supersedes: vec![],
                }],
            })),
        };
        let one = set("phone").encode_to_vec();
        assert!(decode_plain_body(&one).is_some());
        // Two operations: prost merges them into one with both writes.
        let two = [one.clone(), set("name").encode_to_vec()].concat();
        assert_eq!(decode_plain_body(&two), None);
        assert!(matches!(decode_operation_message(&two), Ok(Operation::SetFields { fields, .. }) if fields.len() == 2));
        // An unknown field (tag 15, varint) after the operation: prost skips it.
        let unknown = [one, vec![15 << 3, 1]].concat();
        assert_eq!(decode_plain_body(&unknown), None);
        assert!(decode_operation_message(&unknown).is_ok());
    }
}
