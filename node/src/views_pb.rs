//! Engine read models to the case service's messages.

use casesync_engine::codec::wire::value_to_pb;
use casesync_engine::model::operation::{FieldValue, Status};
use casesync_engine::model::views::{CaseView, ConflictView, EntryView, FieldView, VersionView};
use casesync_engine::projection::history::HistoryItem;
use casesync_proto::v1 as pb;

fn version(v: &VersionView<FieldValue>) -> pb::VersionView {
    pb::VersionView {
        value: Some(value_to_pb(&v.value)),
        status: String::new(),
        author: v.author.clone(),
        device: v.device.clone(),
        seq: v.seq,
        hlc: v.hlc,
    }
}

fn status_version(v: &VersionView<Status>) -> pb::VersionView {
    pb::VersionView {
        value: None,
        status: v.value.as_str().to_string(),
        author: v.author.clone(),
        device: v.device.clone(),
        seq: v.seq,
        hlc: v.hlc,
    }
}

fn field(f: &FieldView) -> pb::FieldView {
    pb::FieldView {
        name: f.name.clone(),
        value: Some(value_to_pb(&f.value)),
        conflict: f.conflict.iter().map(version).collect(),
    }
}

fn entry(e: &EntryView) -> pb::EntryView {
    pb::EntryView {
        entry_id: e.entry_id.clone(),
        status: e.status.as_str().to_string(),
        removed_with_concurrent_changes: e.removed_with_concurrent_changes,
        fields: e.fields.iter().map(field).collect(),
    }
}

/// A case view.
pub fn case(view: &CaseView) -> pb::CaseView {
    pb::CaseView {
        case_id: view.case_id.clone(),
        status: view.status.as_str().to_string(),
        status_conflict: view.status_conflict.iter().map(status_version).collect(),
        deleted_with_concurrent_changes: view.deleted_with_concurrent_changes,
        fields: view.fields.iter().map(field).collect(),
        entries: view.entries.iter().map(entry).collect(),
        updated_hlc: view.updated_hlc,
    }
}

/// A history item.
pub fn history(item: &HistoryItem) -> pb::HistoryItem {
    pb::HistoryItem {
        event_id: item.event_id.clone(),
        hlc: item.hlc,
        author: item.author.clone(),
        device: item.device.clone(),
        device_name: item.device_name.clone(),
        seq: item.seq,
        operation: item.operation.to_string(),
        entry_id: item.entry_id.clone().unwrap_or_default(),
        fields: item
            .fields
            .iter()
            .map(|(name, value)| pb::NamedValue { name: name.clone(), value: Some(value_to_pb(value)) })
            .collect(),
        note: item.note.clone(),
    }
}

/// A conflict.
pub fn conflict(c: &ConflictView) -> pb::ConflictItem {
    pb::ConflictItem {
        case_id: c.case_id.clone(),
        entry_id: c.entry_id.clone().unwrap_or_default(),
        field: c.field.clone(),
        versions: c
            .versions
            .iter()
            .map(|v| pb::VersionView {
                value: Some(value_to_pb(&FieldValue::Text(v.value.clone()))),
                status: String::new(),
                author: v.author.clone(),
                device: v.device.clone(),
                seq: v.seq,
                hlc: v.hlc,
            })
            .collect(),
    }
}

/// Display text of a message value.
pub fn value_text(value: Option<&pb::Value>) -> String {
    use pb::value::Kind;
    match value.and_then(|v| v.kind.as_ref()) {
        None => String::new(),
        Some(Kind::Text(t) | Kind::Decimal(t) | Kind::Date(t)) => t.clone(),
        Some(Kind::Integer(i)) => i.to_string(),
        Some(Kind::Boolean(b)) => b.to_string(),
        Some(Kind::Blob(b)) => format!("0x{}", hex::encode(b)),
    }
}
