//! The JSON form of a case view, for scripts: one schema for every tool that prints a case
//! (`casesync case show/list --json`, `replay-tool at --json`), documented in
//! `docs/case-json.md`.
//!
//! A field value is an object with one key naming its type, as the proto3 JSON mapping spells
//! the gRPC API's `casesync.v1.Value`: `{"text": "Anna"}`, `{"date": "1980-02-01"}`,
//! `{"integer": 42}`, `{"decimal": "12.50"}`, `{"boolean": true}`, `{"blob": "AP8="}`
//! (base64). Integers are JSON numbers; a proto3 JSON parser accepts them as well as the
//! strings it writes itself. Fields are an object keyed by name; a field with concurrent
//! values lists every current version under `conflicts`.
//!
//! A case view reaches this module in two forms, the engine's [`CaseView`] (the replay tool
//! folds the log itself) and the case service's message (the CLI asks the daemon); both come
//! out the same.

use std::collections::BTreeMap;

use casesync_proto::v1 as pb;
use serde::Serialize;

use crate::codec::wire::value_from_pb;
use crate::model::error::OperationError;
use crate::model::operation::{FieldValue, Status};
use crate::model::views::{CaseView, EntryView, FieldView, VersionView};

/// A field value: one key naming its type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueJson {
    /// Free text.
    Text(String),
    /// A signed 64-bit integer, as a JSON number.
    Integer(i64),
    /// A decimal in canonical text form (`"-12.50"`).
    Decimal(String),
    /// True or false.
    Boolean(bool),
    /// A calendar date, `"YYYY-MM-DD"`.
    Date(String),
    /// Raw bytes, base64 (standard alphabet, padded), as in the proto3 JSON mapping.
    Blob(String),
}

impl From<&FieldValue> for ValueJson {
    fn from(value: &FieldValue) -> ValueJson {
        match value {
            FieldValue::Text(t) => ValueJson::Text(t.clone()),
            FieldValue::Integer(i) => ValueJson::Integer(*i),
            FieldValue::Decimal(d) => ValueJson::Decimal(d.clone()),
            FieldValue::Bool(b) => ValueJson::Boolean(*b),
            FieldValue::Date(d) => ValueJson::Date(d.clone()),
            FieldValue::Bytes(b) => ValueJson::Blob(base64(b)),
        }
    }
}

/// One current version of a field (`value` is a [`ValueJson`]) or of a status (`value` is
/// `"active"`, `"archived"`, ...), with who wrote it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionJson<T> {
    /// The value of this version.
    pub value: T,
    /// The writing device's key (hex).
    pub author: String,
    /// The writing device's short id.
    pub device: String,
    /// The writing event's seq.
    pub seq: u64,
    /// The writing event's hybrid logical clock.
    pub hlc: u64,
}

/// An entry of a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryJson {
    /// Entry id (hex).
    pub entry_id: String,
    /// `"present"`, or `"removed"` when it was removed with concurrent changes.
    pub status: String,
    /// Removed, but changed concurrently with the removal: kept until someone decides.
    pub removed_with_concurrent_changes: bool,
    /// The shown value of each field, by name.
    pub fields: BTreeMap<String, ValueJson>,
    /// Every current version of each field with concurrent values, by name; empty otherwise.
    pub conflicts: BTreeMap<String, Vec<VersionJson<ValueJson>>>,
}

/// A case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseJson {
    /// Case id (hex).
    pub case_id: String,
    /// `"active"`, `"archived"` or `"deleted"`.
    pub status: String,
    /// Every current status version when concurrent writes set different statuses; empty
    /// otherwise.
    pub status_conflict: Vec<VersionJson<String>>,
    /// Deleted, but changed concurrently with the delete: kept until someone restores or deletes
    /// again.
    pub deleted_with_concurrent_changes: bool,
    /// The shown value of each field, by name.
    pub fields: BTreeMap<String, ValueJson>,
    /// Every current version of each field with concurrent values, by name; empty otherwise.
    pub conflicts: BTreeMap<String, Vec<VersionJson<ValueJson>>>,
    /// Present entries, and removed ones with concurrent changes.
    pub entries: Vec<EntryJson>,
    /// Highest hybrid logical clock of any current version.
    pub updated_hlc: u64,
}

/// A list of cases (`casesync case list --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseListJson {
    /// The cases, in case id order.
    pub cases: Vec<CaseJson>,
}

type Fields = (BTreeMap<String, ValueJson>, BTreeMap<String, Vec<VersionJson<ValueJson>>>);

fn version<T, U>(v: &VersionView<T>, value: U) -> VersionJson<U> {
    VersionJson { value, author: v.author.clone(), device: v.device.clone(), seq: v.seq, hlc: v.hlc }
}

fn fields(views: &[FieldView]) -> Fields {
    let mut shown = BTreeMap::new();
    let mut conflicts = BTreeMap::new();
    for f in views {
        shown.insert(f.name.clone(), ValueJson::from(&f.value));
        if !f.conflict.is_empty() {
            let versions = f.conflict.iter().map(|v| version(v, ValueJson::from(&v.value))).collect();
            conflicts.insert(f.name.clone(), versions);
        }
    }
    (shown, conflicts)
}

fn entry(e: &EntryView) -> EntryJson {
    let (fields, conflicts) = fields(&e.fields);
    EntryJson {
        entry_id: e.entry_id.clone(),
        status: e.status.as_str().to_string(),
        removed_with_concurrent_changes: e.removed_with_concurrent_changes,
        fields,
        conflicts,
    }
}

impl From<&CaseView> for CaseJson {
    fn from(view: &CaseView) -> CaseJson {
        let (fields, conflicts) = fields(&view.fields);
        CaseJson {
            case_id: view.case_id.clone(),
            status: view.status.as_str().to_string(),
            status_conflict: view
                .status_conflict
                .iter()
                .map(|v: &VersionView<Status>| version(v, v.value.as_str().to_string()))
                .collect(),
            deleted_with_concurrent_changes: view.deleted_with_concurrent_changes,
            fields,
            conflicts,
            entries: view.entries.iter().map(entry).collect(),
            updated_hlc: view.updated_hlc,
        }
    }
}

fn value_pb(value: Option<&pb::Value>) -> Result<ValueJson, OperationError> {
    Ok(ValueJson::from(&value_from_pb(value)?))
}

fn version_pb<U>(v: &pb::VersionView, value: U) -> VersionJson<U> {
    VersionJson { value, author: v.author.clone(), device: v.device.clone(), seq: v.seq, hlc: v.hlc }
}

fn fields_pb(views: &[pb::FieldView]) -> Result<Fields, OperationError> {
    let mut shown = BTreeMap::new();
    let mut conflicts = BTreeMap::new();
    for f in views {
        shown.insert(f.name.clone(), value_pb(f.value.as_ref())?);
        if !f.conflict.is_empty() {
            let versions = f
                .conflict
                .iter()
                .map(|v| Ok(version_pb(v, value_pb(v.value.as_ref())?)))
                .collect::<Result<_, OperationError>>()?;
            conflicts.insert(f.name.clone(), versions);
        }
    }
    Ok((shown, conflicts))
}

impl TryFrom<&pb::CaseView> for CaseJson {
    type Error = OperationError;

    /// The case service's message in the same form; fails on a field without a valid value.
    fn try_from(view: &pb::CaseView) -> Result<CaseJson, OperationError> {
        let (fields, conflicts) = fields_pb(&view.fields)?;
        let entries = view
            .entries
            .iter()
            .map(|e| {
                let (fields, conflicts) = fields_pb(&e.fields)?;
                Ok(EntryJson {
                    entry_id: e.entry_id.clone(),
                    status: e.status.clone(),
                    removed_with_concurrent_changes: e.removed_with_concurrent_changes,
                    fields,
                    conflicts,
                })
            })
            .collect::<Result<_, OperationError>>()?;
        Ok(CaseJson {
            case_id: view.case_id.clone(),
            status: view.status.clone(),
            status_conflict: view.status_conflict.iter().map(|v| version_pb(v, v.status.clone())).collect(),
            deleted_with_concurrent_changes: view.deleted_with_concurrent_changes,
            fields,
            conflicts,
            entries,
            updated_hlc: view.updated_hlc,
        })
    }
}

impl TryFrom<&pb::CaseList> for CaseListJson {
    type Error = OperationError;

    fn try_from(list: &pb::CaseList) -> Result<CaseListJson, OperationError> {
        Ok(CaseListJson { cases: list.cases.iter().map(CaseJson::try_from).collect::<Result<_, _>>()? })
    }
}

/// One event in a case's history (`casesync case history --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryItemJson {
    /// The event id (hex).
    pub event_id: String,
    /// The event's hybrid logical clock.
    pub hlc: u64,
    /// The writing device's key (hex).
    pub author: String,
    /// The writing device's short id.
    pub device: String,
    /// The writing device's name, when known.
    pub device_name: String,
    /// The event's seq.
    pub seq: u64,
    /// What it did: `create`, `set`, `delete`, ..., `entry-restore`.
    pub operation: String,
    /// The entry, for entry operations.
    pub entry_id: Option<String>,
    /// The fields written, by name.
    pub fields: BTreeMap<String, ValueJson>,
    /// A membership change (`operation` "membership"): what it did; an event that does not
    /// count: why. Absent for the case's counted changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A case's history (`casesync case history --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryJson {
    /// Its events, in (hlc, author, seq) order.
    pub items: Vec<HistoryItemJson>,
}

impl TryFrom<&pb::HistoryReply> for HistoryJson {
    type Error = OperationError;

    fn try_from(reply: &pb::HistoryReply) -> Result<HistoryJson, OperationError> {
        let items = reply
            .items
            .iter()
            .map(|item| {
                let fields = item
                    .fields
                    .iter()
                    .map(|f| Ok((f.name.clone(), value_pb(f.value.as_ref())?)))
                    .collect::<Result<_, OperationError>>()?;
                Ok(HistoryItemJson {
                    event_id: item.event_id.clone(),
                    hlc: item.hlc,
                    author: item.author.clone(),
                    device: item.device.clone(),
                    device_name: item.device_name.clone(),
                    seq: item.seq,
                    operation: item.operation.clone(),
                    entry_id: (!item.entry_id.is_empty()).then(|| item.entry_id.clone()),
                    fields,
                    note: (!item.note.is_empty()).then(|| item.note.clone()),
                })
            })
            .collect::<Result<_, OperationError>>()?;
        Ok(HistoryJson { items })
    }
}

/// One conflict: a field (or a case's status, as `"status"`) with concurrent current versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictJson {
    /// The case (hex).
    pub case_id: String,
    /// The entry, for a field of an entry.
    pub entry_id: Option<String>,
    /// The field's name, or `status`.
    pub field: String,
    /// Every current version.
    pub versions: Vec<VersionJson<ValueJson>>,
}

/// Conflicts of a space or a case (`casesync case conflicts --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictListJson {
    /// The conflicts, by case.
    pub conflicts: Vec<ConflictJson>,
}

impl TryFrom<&pb::ConflictList> for ConflictListJson {
    type Error = OperationError;

    fn try_from(list: &pb::ConflictList) -> Result<ConflictListJson, OperationError> {
        let conflicts = list
            .conflicts
            .iter()
            .map(|c| {
                let versions = c
                    .versions
                    .iter()
                    .map(|v| Ok(version_pb(v, value_pb(v.value.as_ref())?)))
                    .collect::<Result<_, OperationError>>()?;
                Ok(ConflictJson {
                    case_id: c.case_id.clone(),
                    entry_id: (!c.entry_id.is_empty()).then(|| c.entry_id.clone()),
                    field: c.field.clone(),
                    versions,
                })
            })
            .collect::<Result<_, OperationError>>()?;
        Ok(ConflictListJson { conflicts })
    }
}

/// Standard base64 with padding (RFC 4648 section 4), as the proto3 JSON mapping spells bytes.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::wire::value_to_pb;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0x00, 0xff]), "AP8=");
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn a_field_value_in_any_json_is_spelled_as_in_the_case_json() {
        for value in [
            FieldValue::Text("Anna".into()),
            FieldValue::Integer(-7),
            FieldValue::Decimal("12.50".into()),
            FieldValue::Bool(true),
            FieldValue::Date("1980-02-01".into()),
            FieldValue::Bytes(vec![0, 255]),
        ] {
            let plain = serde_json::to_value(&value).unwrap();
            assert_eq!(plain, serde_json::to_value(ValueJson::from(&value)).unwrap(), "{value:?}");
        }
    }

    #[test]
    fn engine_view_and_service_message_give_the_same_json() {
        let values = [
            FieldValue::Text("Anna".into()),
            FieldValue::Integer(-7),
            FieldValue::Decimal("12.50".into()),
            FieldValue::Bool(true),
            FieldValue::Date("1980-02-01".into()),
            FieldValue::Bytes(vec![0, 255]),
        ];
        let version =
            |value: FieldValue, seq| VersionView { value, author: "ab".into(), device: "d".into(), seq, hlc: 9 };
        let view = CaseView {
            case_id: "c1".into(),
            status: Status::Archived,
            status_conflict: vec![VersionView {
                value: Status::Deleted,
                author: "ab".into(),
                device: "d".into(),
                seq: 1,
                hlc: 9,
            }],
            deleted_with_concurrent_changes: true,
            fields: values
                .iter()
                .enumerate()
                .map(|(i, v)| FieldView {
                    name: format!("f{i}"),
                    value: v.clone(),
                    conflict: if i == 0 {
                        vec![version(v.clone(), 2), version(FieldValue::Text("Ann".into()), 3)]
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            entries: vec![EntryView {
                entry_id: "e1".into(),
                status: Status::Present,
                removed_with_concurrent_changes: false,
                fields: vec![FieldView {
                    name: "note".into(),
                    value: FieldValue::Text("x".into()),
                    conflict: Vec::new(),
                }],
            }],
            updated_hlc: 42,
        };
        let pb_version = |v: &VersionView<FieldValue>| pb::VersionView {
            value: Some(value_to_pb(&v.value)),
            status: String::new(),
            author: v.author.clone(),
            device: v.device.clone(),
            seq: v.seq,
            hlc: v.hlc,
        };
        let pb_field = |f: &FieldView| pb::FieldView {
            name: f.name.clone(),
            value: Some(value_to_pb(&f.value)),
            conflict: f.conflict.iter().map(pb_version).collect(),
        };
        let message = pb::CaseView {
            case_id: "c1".into(),
            status: "archived".into(),
            status_conflict: view
                .status_conflict
                .iter()
                .map(|v| pb::VersionView {
                    value: None,
                    status: v.value.as_str().into(),
                    author: v.author.clone(),
                    device: v.device.clone(),
                    seq: v.seq,
                    hlc: v.hlc,
                })
                .collect(),
            deleted_with_concurrent_changes: true,
            fields: view.fields.iter().map(pb_field).collect(),
            entries: vec![pb::EntryView {
                entry_id: "e1".into(),
                status: "present".into(),
                removed_with_concurrent_changes: false,
                fields: view.entries[0].fields.iter().map(pb_field).collect(),
            }],
            updated_hlc: 42,
        };
        let from_view = CaseJson::from(&view);
        assert_eq!(CaseJson::try_from(&message).ok(), Some(from_view.clone()));
        assert_eq!(from_view.fields["f0"], ValueJson::Text("Anna".into()));
        assert_eq!(from_view.fields["f1"], ValueJson::Integer(-7));
        assert_eq!(from_view.fields["f3"], ValueJson::Boolean(true));
        assert_eq!(from_view.fields["f5"], ValueJson::Blob("AP8=".into()));
        assert_eq!(from_view.conflicts.len(), 1);
        assert_eq!(from_view.conflicts["f0"].len(), 2);
        assert_eq!(from_view.status_conflict[0].value, "deleted");
    }

    #[test]
    fn a_message_field_without_a_value_is_an_error() {
        let message = pb::CaseView {
            fields: vec![pb::FieldView { name: "x".into(), value: None, conflict: Vec::new() }],
            ..pb::CaseView::default()
        };
        assert!(CaseJson::try_from(&message).is_err());
    }
}
