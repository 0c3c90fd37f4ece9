//! The only place that converts between domain types and protobuf messages (event bodies,
//! stored projection state, version vectors).

use bytes::Bytes;
use casesync_proto::v1 as pb;
use casesync_proto::v1::store as st;
use prost::Message;

use crate::codec::keys::{case_key, CASE_PART_ENTRY, CASE_PART_FIELD, CASE_PART_STATUS};
use crate::model::error::OperationError;
use crate::model::ids::SpaceId;
use crate::model::ids::{AuthorId, CaseId, EntryId};
use crate::model::merge::{CasePart, CaseState, PendingDot, Record, Register, StatusValue, Version};
use crate::model::operation::{
    Dot, Dots, FieldValue, FieldWrite, FieldWrites, Operation, Status, StatusChange, StatusWrite,
};
use crate::model::vector_clock::VersionVector;

mod body_decoding;
#[cfg(test)]
mod prost_agreement_tests;
mod register_encoding;

fn bytes(slice: &[u8]) -> Bytes {
    Bytes::copy_from_slice(slice)
}

/// Domain dot to message.
pub fn dot_to_pb(dot: &Dot) -> pb::Dot {
    pb::Dot { author: bytes(dot.author.as_bytes()), seq: dot.seq }
}

/// Message to domain dot.
pub fn dot_from_pb(dot: &pb::Dot) -> Result<Dot, OperationError> {
    let author =
        AuthorId::from_slice(&dot.author).map_err(|_| OperationError::Malformed("dot author must be 32 bytes"))?;
    if dot.seq == 0 {
        return Err(OperationError::Malformed("dot seq must be at least 1"));
    }
    Ok(Dot { author, seq: dot.seq })
}

fn dots_from_pb(dots: &[pb::Dot]) -> Result<Dots, OperationError> {
    let mut out = dots.iter().map(dot_from_pb).collect::<Result<Dots, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Version vector to message.
pub fn vector_to_pb(vector: &VersionVector) -> pb::VersionVector {
    pb::VersionVector {
        heads: vector.iter().map(|(author, seq)| pb::Dot { author: bytes(author.as_bytes()), seq: *seq }).collect(),
    }
}

/// Message to version vector.
pub fn vector_from_pb(vector: &pb::VersionVector) -> Result<VersionVector, OperationError> {
    let mut out = VersionVector::new();
    for head in &vector.heads {
        let author = AuthorId::from_slice(&head.author)
            .map_err(|_| OperationError::Malformed("vector author must be 32 bytes"))?;
        out.raise(author, head.seq);
    }
    Ok(out)
}

/// Field value to message.
pub fn value_to_pb(value: &FieldValue) -> pb::Value {
    use pb::value::Kind;
    let kind = match value {
        FieldValue::Text(t) => Kind::Text(t.clone()),
        FieldValue::Integer(i) => Kind::Integer(*i),
        FieldValue::Decimal(d) => Kind::Decimal(d.clone()),
        FieldValue::Bool(b) => Kind::Boolean(*b),
        FieldValue::Date(d) => Kind::Date(d.clone()),
        FieldValue::Bytes(b) => Kind::Blob(bytes(b)),
    };
    pb::Value { kind: Some(kind) }
}

/// Message to field value (validated).
pub fn value_from_pb(value: Option<&pb::Value>) -> Result<FieldValue, OperationError> {
    value_from_pb_owned(value.cloned())
}

/// [`value_from_pb`] moving the text out of the message (the hot paths: decoding bodies and
/// stored registers).
fn value_from_pb_owned(value: Option<pb::Value>) -> Result<FieldValue, OperationError> {
    use pb::value::Kind;
    let kind = value.and_then(|v| v.kind).ok_or(OperationError::Malformed("field without a value"))?;
    let value = match kind {
        Kind::Text(t) => FieldValue::Text(t),
        Kind::Integer(i) => FieldValue::Integer(i),
        Kind::Decimal(d) => FieldValue::Decimal(d),
        Kind::Boolean(b) => FieldValue::Bool(b),
        Kind::Date(d) => FieldValue::Date(d),
        Kind::Blob(b) => FieldValue::Bytes(b.to_vec()),
    };
    value.validate()?;
    Ok(value)
}

fn writes_to_pb(writes: &[FieldWrite]) -> Vec<pb::FieldWrite> {
    writes
        .iter()
        .map(|w| pb::FieldWrite {
            name: w.name.to_string(),
            value: Some(value_to_pb(&w.value)),
            supersedes: w.supersedes.iter().map(dot_to_pb).collect(),
        })
        .collect()
}

fn writes_from_pb(writes: Vec<pb::FieldWrite>) -> Result<FieldWrites, OperationError> {
    writes
        .into_iter()
        .map(|w| {
            Ok(FieldWrite {
                supersedes: dots_from_pb(&w.supersedes)?,
                value: value_from_pb_owned(w.value)?,
                name: w.name.into(),
            })
        })
        .collect()
}

fn status_write_to_pb(write: &StatusWrite) -> pb::StatusWrite {
    pb::StatusWrite {
        supersedes: write.supersedes.iter().map(dot_to_pb).collect(),
        seen: vector_to_pb(&write.seen).heads,
    }
}

fn status_write_from_pb(write: Option<&pb::StatusWrite>) -> Result<StatusWrite, OperationError> {
    let write = write.ok_or(OperationError::Malformed("status change without a status write"))?;
    Ok(StatusWrite {
        supersedes: dots_from_pb(&write.supersedes)?,
        seen: vector_from_pb(&pb::VersionVector { heads: write.seen.clone() })?,
    })
}

fn case_id(bytes: &[u8]) -> Result<CaseId, OperationError> {
    CaseId::from_slice(bytes).map_err(|_| OperationError::Malformed("case id must be 16 bytes"))
}

fn entry_id(bytes: &[u8]) -> Result<EntryId, OperationError> {
    EntryId::from_slice(bytes).map_err(|_| OperationError::Malformed("entry id must be 16 bytes"))
}

/// Encodes an operation as `Body` bytes.
pub fn encode_operation(operation: &Operation) -> Vec<u8> {
    use pb::body::Op;
    let op = match operation {
        Operation::CreateCase { case, fields } => {
            Op::CreateCase(pb::CreateCase { case_id: bytes(case.as_bytes()), fields: writes_to_pb(fields) })
        }
        Operation::SetFields { case, fields } => {
            Op::SetFields(pb::SetFields { case_id: bytes(case.as_bytes()), fields: writes_to_pb(fields) })
        }
        Operation::ChangeStatus { case, change, write } => {
            let case_id = bytes(case.as_bytes());
            let status = Some(status_write_to_pb(write));
            match change {
                StatusChange::Delete => Op::DeleteCase(pb::DeleteCase { case_id, status }),
                StatusChange::Archive => Op::ArchiveCase(pb::ArchiveCase { case_id, status }),
                StatusChange::Unarchive => Op::UnarchiveCase(pb::UnarchiveCase { case_id, status }),
                StatusChange::Restore => Op::RestoreCase(pb::RestoreCase { case_id, status }),
            }
        }
        Operation::AddEntry { case, entry, fields } => Op::AddEntry(pb::AddEntry {
            case_id: bytes(case.as_bytes()),
            entry_id: bytes(entry.as_bytes()),
            fields: writes_to_pb(fields),
        }),
        Operation::UpdateEntry { case, entry, fields } => Op::UpdateEntry(pb::UpdateEntry {
            case_id: bytes(case.as_bytes()),
            entry_id: bytes(entry.as_bytes()),
            fields: writes_to_pb(fields),
        }),
        Operation::RemoveEntry { case, entry, write } => Op::RemoveEntry(pb::RemoveEntry {
            case_id: bytes(case.as_bytes()),
            entry_id: bytes(entry.as_bytes()),
            status: Some(status_write_to_pb(write)),
        }),
        Operation::RestoreEntry { case, entry, write } => Op::RestoreEntry(pb::RestoreEntry {
            case_id: bytes(case.as_bytes()),
            entry_id: bytes(entry.as_bytes()),
            status: Some(status_write_to_pb(write)),
        }),
    };
    pb::Body { op: Some(op) }.encode_to_vec()
}

/// Decodes and validates `Body` bytes.
pub fn decode_operation(body: &[u8]) -> Result<Operation, OperationError> {
    // The plain encoding without building the message; anything else through prost.
    if let Some(operation) = body_decoding::decode_plain_body(body) {
        return Ok(operation);
    }
    decode_operation_message(body)
}

/// [`decode_operation`] through the generated message: every encoding prost reads, and the
/// error of a body that is not a valid operation.
fn decode_operation_message(body: &[u8]) -> Result<Operation, OperationError> {
    use pb::body::Op;
    let message = pb::Body::decode(body).map_err(|_| OperationError::Malformed("body does not decode"))?;
    let operation = match message.op.ok_or(OperationError::Malformed("body names no operation"))? {
        Op::CreateCase(m) => Operation::CreateCase { case: case_id(&m.case_id)?, fields: writes_from_pb(m.fields)? },
        Op::SetFields(m) => Operation::SetFields { case: case_id(&m.case_id)?, fields: writes_from_pb(m.fields)? },
        Op::DeleteCase(m) => status_op(&m.case_id, StatusChange::Delete, m.status.as_ref())?,
        Op::ArchiveCase(m) => status_op(&m.case_id, StatusChange::Archive, m.status.as_ref())?,
        Op::UnarchiveCase(m) => status_op(&m.case_id, StatusChange::Unarchive, m.status.as_ref())?,
        Op::RestoreCase(m) => status_op(&m.case_id, StatusChange::Restore, m.status.as_ref())?,
        Op::AddEntry(m) => Operation::AddEntry {
            case: case_id(&m.case_id)?,
            entry: entry_id(&m.entry_id)?,
            fields: writes_from_pb(m.fields)?,
        },
        Op::UpdateEntry(m) => Operation::UpdateEntry {
            case: case_id(&m.case_id)?,
            entry: entry_id(&m.entry_id)?,
            fields: writes_from_pb(m.fields)?,
        },
        Op::RemoveEntry(m) => Operation::RemoveEntry {
            case: case_id(&m.case_id)?,
            entry: entry_id(&m.entry_id)?,
            write: status_write_from_pb(m.status.as_ref())?,
        },
        Op::RestoreEntry(m) => Operation::RestoreEntry {
            case: case_id(&m.case_id)?,
            entry: entry_id(&m.entry_id)?,
            write: status_write_from_pb(m.status.as_ref())?,
        },
    };
    operation.validate()?;
    Ok(operation)
}

fn status_op(case: &[u8], change: StatusChange, write: Option<&pb::StatusWrite>) -> Result<Operation, OperationError> {
    Ok(Operation::ChangeStatus { case: case_id(case)?, change, write: status_write_from_pb(write)? })
}

fn status_to_pb(status: Status) -> st::Status {
    match status {
        Status::Active => st::Status::Active,
        Status::Archived => st::Status::Archived,
        Status::Deleted => st::Status::Deleted,
        Status::Present => st::Status::Present,
        Status::Removed => st::Status::Removed,
    }
}

fn status_from_pb(status: i32) -> Result<Status, OperationError> {
    match st::Status::try_from(status) {
        Ok(st::Status::Active) => Ok(Status::Active),
        Ok(st::Status::Archived) => Ok(Status::Archived),
        Ok(st::Status::Deleted) => Ok(Status::Deleted),
        Ok(st::Status::Present) => Ok(Status::Present),
        Ok(st::Status::Removed) => Ok(Status::Removed),
        _ => Err(OperationError::Malformed("unknown stored status")),
    }
}

fn status_register_to_pb(status: &Register<StatusValue>) -> st::StatusRegister {
    st::StatusRegister {
        current: status
            .current
            .iter()
            .map(|v| st::StatusVersion {
                dot: Some(dot_to_pb(&v.dot)),
                hlc: v.hlc,
                status: status_to_pb(v.value.status) as i32,
                seen: vector_to_pb(&v.value.seen).heads,
            })
            .collect(),
        pending: status.pending.iter().map(|p| dot_to_pb(&p.dot)).collect(),
        pending_hlc: status.pending.iter().map(|p| p.hlc).collect(),
    }
}

fn register_to_pb(name: &str, register: &Register<FieldValue>) -> st::Register {
    st::Register {
        name: name.to_string(),
        current: register
            .current
            .iter()
            .map(|v| st::Version { dot: Some(dot_to_pb(&v.dot)), hlc: v.hlc, value: Some(value_to_pb(&v.value)) })
            .collect(),
        pending: register.pending.iter().map(|p| dot_to_pb(&p.dot)).collect(),
        pending_hlc: register.pending.iter().map(|p| p.hlc).collect(),
    }
}

fn record_to_pb(id: &[u8], record: &Record) -> st::Record {
    st::Record {
        id: bytes(id),
        status: Some(status_register_to_pb(&record.status)),
        fields: record.fields.iter().map(|(name, register)| register_to_pb(name, register)).collect(),
    }
}

fn required_dot(dot: Option<&pb::Dot>) -> Result<Dot, OperationError> {
    dot_from_pb(dot.ok_or(OperationError::Malformed("stored version without a dot"))?)
}

/// A register from its stored versions and pending dots (with the clock of each: one per dot).
fn register_from_parts<P, T>(
    current: impl IntoIterator<Item = P>,
    (pending, pending_hlc): (&[pb::Dot], &[u64]),
    version: impl FnMut(P) -> Result<Version<T>, OperationError>,
) -> Result<Register<T>, OperationError> {
    if pending.len() != pending_hlc.len() {
        return Err(OperationError::Malformed("stored pending dots without their clocks"));
    }
    Ok(Register {
        current: current.into_iter().map(version).collect::<Result<_, _>>()?,
        pending: pending
            .iter()
            .zip(pending_hlc)
            .map(|(dot, hlc)| Ok(PendingDot { dot: dot_from_pb(dot)?, hlc: *hlc }))
            .collect::<Result<_, OperationError>>()?,
    })
}

fn status_register_from_pb(status: &st::StatusRegister) -> Result<Register<StatusValue>, OperationError> {
    register_from_parts(&status.current, (&status.pending, &status.pending_hlc), |v: &st::StatusVersion| {
        Ok(Version {
            dot: required_dot(v.dot.as_ref())?,
            hlc: v.hlc,
            value: StatusValue {
                status: status_from_pb(v.status)?,
                seen: vector_from_pb(&pb::VersionVector { heads: v.seen.clone() })?,
            },
        })
    })
}

fn register_from_pb(register: st::Register) -> Result<Register<FieldValue>, OperationError> {
    // The versions are moved out of the message: their texts are not copied.
    register_from_parts(register.current, (&register.pending, &register.pending_hlc), |v| {
        Ok(Version { dot: required_dot(v.dot.as_ref())?, hlc: v.hlc, value: value_from_pb_owned(v.value)? })
    })
}

fn record_from_pb(record: st::Record) -> Result<Record, OperationError> {
    let mut out = Record::default();
    if let Some(status) = &record.status {
        out.status = status_register_from_pb(status)?;
    }
    for mut register in record.fields {
        let name = std::mem::take(&mut register.name);
        out.fields.insert(name.into(), register_from_pb(register)?);
    }
    Ok(out)
}

/// Encodes one stored part of a case state (`None` when the state has no such part).
pub fn encode_case_part(state: &CaseState, part: &CasePart) -> Option<Vec<u8>> {
    match part {
        CasePart::Status => {
            let mut value = Vec::new();
            register_encoding::encode_status_register_into(&state.record.status, &mut value);
            Some(value)
        }
        CasePart::Field(name) => state.record.fields.get(name).map(|r| register_encoding::encode_register(name, r)),
        CasePart::Entry(id) => state.entries.get(id).map(|r| record_to_pb(id.as_bytes(), r).encode_to_vec()),
    }
}

/// Buffers [`for_each_case_part`] builds keys and values in, reused from case to case.
#[derive(Default)]
pub struct PartBuffers {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Encodes every stored part of a case state that holds something (the parts of [`case_parts`],
/// in key order), handing `f` each part's key and value, both built in `buffers`: a bulk fold
/// writes about nine parts per case, and a new key and value for each were a tenth of a spill
/// writer's time. Returns whether there was any part.
pub fn for_each_case_part<E>(
    space: &SpaceId,
    state: &CaseState,
    buffers: &mut PartBuffers,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
) -> Result<bool, E> {
    let PartBuffers { key, value } = buffers;
    let mut any = false;
    let mut part = |tag: u8, suffix: &[u8], value: &[u8]| {
        key.clear();
        key.extend_from_slice(&case_key(space, &state.id));
        key.push(tag);
        key.extend_from_slice(suffix);
        any = true;
        f(key, value)
    };
    if !state.record.status.is_empty() {
        register_encoding::encode_status_register_into(&state.record.status, value);
        part(CASE_PART_STATUS, &[], value)?;
    }
    for (name, register) in state.record.fields.iter().filter(|(_, register)| !register.is_empty()) {
        register_encoding::encode_register_into(name, register, value);
        part(CASE_PART_FIELD, name.as_bytes(), value)?;
    }
    for (id, record) in &state.entries {
        value.clear();
        record_to_pb(id.as_bytes(), record).encode_raw(value);
        part(CASE_PART_ENTRY, id.as_bytes(), value)?;
    }
    Ok(any)
}

/// Every stored part of a case state that holds something, in key order. An empty register or
/// entry is the identity of the merge, so writing it would change nothing (a delta state only
/// holds the parts its events touched: its status register is empty unless one of them wrote it).
pub fn case_parts(state: &CaseState) -> Vec<CasePart> {
    let mut parts = Vec::with_capacity(1 + state.record.fields.len() + state.entries.len());
    if !state.record.status.is_empty() {
        parts.push(CasePart::Status);
    }
    let fields = state.record.fields.iter().filter(|(_, register)| !register.is_empty());
    parts.extend(fields.map(|(name, _)| CasePart::Field(name.clone())));
    parts.extend(state.entries.keys().map(|id| CasePart::Entry(*id)));
    parts
}

/// One stored part of a case, decoded.
pub enum StoredPart {
    /// The case's status register.
    Status(Register<StatusValue>),
    /// One field register (named by the part's key).
    Field(Register<FieldValue>),
    /// One entry's record.
    Entry(Record),
}

/// Decodes one stored part of a case.
pub fn decode_part(part: &CasePart, value: &[u8]) -> Result<StoredPart, OperationError> {
    Ok(match part {
        CasePart::Status => {
            let message = st::StatusRegister::decode(value)
                .map_err(|_| OperationError::Malformed("stored status register does not decode"))?;
            StoredPart::Status(status_register_from_pb(&message)?)
        }
        CasePart::Field(_) => {
            let message = st::Register::decode(value)
                .map_err(|_| OperationError::Malformed("stored register does not decode"))?;
            StoredPart::Field(register_from_pb(message)?)
        }
        CasePart::Entry(_) => {
            let message =
                st::Record::decode(value).map_err(|_| OperationError::Malformed("stored entry does not decode"))?;
            StoredPart::Entry(record_from_pb(message)?)
        }
    })
}

/// Folds one stored part into the case state being assembled from its parts.
pub fn decode_case_part(state: &mut CaseState, part: &CasePart, value: &[u8]) -> Result<(), OperationError> {
    match (part, decode_part(part, value)?) {
        (_, StoredPart::Status(status)) => state.record.status = status,
        (CasePart::Field(name), StoredPart::Field(register)) => {
            state.record.fields.insert(name.clone(), register);
        }
        (CasePart::Entry(id), StoredPart::Entry(record)) => {
            state.entries.insert(*id, record);
        }
        _ => {} // `decode_part` returns the kind of part it is given.
    }
    Ok(())
}

/// Encodes a case state for the `cases` column family.
pub fn encode_case_state(state: &CaseState) -> Vec<u8> {
    st::CaseState {
        record: Some(record_to_pb(state.id.as_bytes(), &state.record)),
        entries: state.entries.iter().map(|(id, record)| record_to_pb(id.as_bytes(), record)).collect(),
    }
    .encode_to_vec()
}

/// Decodes a stored case state.
pub fn decode_case_state(value: &[u8]) -> Result<CaseState, OperationError> {
    let message = st::CaseState::decode(value).map_err(|_| OperationError::Malformed("stored case does not decode"))?;
    let record = message.record.ok_or(OperationError::Malformed("stored case without a record"))?;
    let mut state = CaseState::new(case_id(&record.id)?);
    state.record = record_from_pb(record)?;
    for entry in message.entries {
        state.entries.insert(entry_id(&entry.id)?, record_from_pb(entry)?);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::operation::smallvec;

    #[test]
    fn parts_encoded_through_buffers_are_the_parts_encoded_one_by_one() {
        use crate::codec::keys::case_part_key;
        let (space, case, author) = (SpaceId([9; 16]), CaseId([1; 16]), AuthorId([3; 32]));
        let write = |name: &str, text: &str, supersedes: Vec<Dot>| FieldWrite {
            name: name.into(),
            value: FieldValue::Text(text.into()),
            supersedes: supersedes.into(),
        };
        let mut state = CaseState::new(case);
        let never = |_: &Dot| false;
        let ops = [
            Operation::CreateCase { case, fields: smallvec![write("b", "1", vec![]), write("a", "2", vec![])] },
            Operation::SetFields { case, fields: smallvec![write("b", "3", vec![Dot { author, seq: 1 }])] },
            Operation::AddEntry { case, entry: EntryId([5; 16]), fields: smallvec![write("x", "4", vec![])] },
            Operation::AddEntry { case, entry: EntryId([2; 16]), fields: smallvec![] },
            // A pending dot only: a register with no current version still holds something.
            Operation::SetFields { case, fields: smallvec![write("c", "5", vec![Dot { author, seq: 9 }])] },
        ];
        for (seq, op) in ops.into_iter().enumerate() {
            state.apply(op, Dot { author, seq: seq as u64 + 1 }, 10 + seq as u64, &never);
        }
        let one_by_one: Vec<(Vec<u8>, Vec<u8>)> = case_parts(&state)
            .iter()
            .filter_map(|part| encode_case_part(&state, part).map(|value| (case_part_key(&space, &case, part), value)))
            .collect();
        let mut buffered = Vec::new();
        let mut buffers = PartBuffers::default();
        let any = for_each_case_part(&space, &state, &mut buffers, |key, value| {
            buffered.push((key.to_vec(), value.to_vec()));
            Ok::<_, ()>(())
        });
        assert_eq!(any, Ok(true));
        assert_eq!(one_by_one.len(), 6, "status, fields a b c, two entries");
        assert_eq!(buffered, one_by_one);
        let empty = for_each_case_part(&space, &CaseState::new(case), &mut buffers, |_, _| Err(()));
        assert_eq!(empty, Ok(false));
    }

    #[test]
    fn operation_round_trip() {
        let author = AuthorId([3; 32]);
        let dot = Dot { author, seq: 4 };
        let ops = vec![
            Operation::CreateCase {
                case: CaseId([1; 16]),
                fields: smallvec![FieldWrite {
                    name: "name".into(),
                    value: FieldValue::Text("Ann".into()),
                    supersedes: smallvec![],
                }],
            },
            Operation::ChangeStatus {
                case: CaseId([1; 16]),
                change: StatusChange::Delete,
                write: StatusWrite { supersedes: smallvec![dot], seen: [(author, 4)].into_iter().collect() },
            },
            Operation::RemoveEntry {
                case: CaseId([1; 16]),
                entry: EntryId([2; 16]),
                write: StatusWrite { supersedes: smallvec![dot], seen: VersionVector::new() },
            },
            Operation::RestoreEntry {
                case: CaseId([1; 16]),
                entry: EntryId([2; 16]),
                write: StatusWrite { supersedes: smallvec![Dot { author, seq: 5 }], seen: VersionVector::new() },
            },
        ];
        for op in ops {
            assert_eq!(decode_operation(&encode_operation(&op)).unwrap(), op);
        }
        assert!(decode_operation(b"\xff\xff").is_err());
        assert!(matches!(decode_operation(&[]), Err(OperationError::Malformed("body names no operation"))));
        // An operation that sets no field is not valid, however it is encoded.
        for empty in [
            Operation::SetFields { case: CaseId([1; 16]), fields: smallvec![] },
            Operation::UpdateEntry { case: CaseId([1; 16]), entry: EntryId([2; 16]), fields: smallvec![] },
        ] {
            assert!(decode_operation(&encode_operation(&empty)).is_err(), "{empty:?}");
            assert!(decode_operation_message(&encode_operation(&empty)).is_err(), "{empty:?}");
        }
    }
}
