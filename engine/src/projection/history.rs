//! A case's history: every event that touched it, with who, which device, when and what.

use rocksdb::{Direction, IteratorMode};
use serde::Serialize;

use crate::codec::keys::{case_key, parse_history_record, CF_CASE_EVENTS};
use crate::error::StoreError;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, CaseId, SpaceId};
use crate::model::operation::FieldValue;
use crate::projection::operation_of;
use crate::storage::Db;

/// One event in a case's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryItem {
    /// The event id (hex): verifiable against the log.
    pub event_id: String,
    /// Hybrid logical clock of the event.
    pub hlc: u64,
    /// Author key (hex).
    pub author: String,
    /// Short device id.
    pub device: String,
    /// Device name, when the device is known.
    pub device_name: String,
    /// The author's seq.
    pub seq: u64,
    /// Operation name.
    pub operation: &'static str,
    /// The entry, for entry operations.
    pub entry_id: Option<String>,
    /// Fields written.
    pub fields: Vec<(String, FieldValue)>,
}

/// The history of a case, ordered by (hlc, author, seq): its events from the history index,
/// each read with `event` and its device named by `device_name`.
pub(crate) fn history(
    db: &Db,
    space: &SpaceId,
    case: &CaseId,
    event: impl Fn(&AuthorId, u64) -> Result<Option<SignedEvent>, StoreError>,
    device_name: impl Fn(&AuthorId) -> Result<Option<String>, StoreError>,
) -> Result<Vec<HistoryItem>, StoreError> {
    let prefix = case_key(space, case);
    let mut dots = Vec::new();
    let iter = db.rocks().iterator_cf(db.cf(CF_CASE_EVENTS), IteratorMode::From(&prefix, Direction::Forward));
    for item in iter {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let entries = parse_history_record(&key, &value).ok_or_else(|| StoreError::Corrupt {
            space: *space,
            author: AuthorId::default(),
            seq: 0,
            reason: format!("case {}: a history record is malformed", case.short()),
        })?;
        dots.extend(entries.into_iter().map(|(author, seq, _)| (author, seq)));
    }
    let mut items = Vec::with_capacity(dots.len());
    for (author, seq) in dots {
        let Some(event) = event(&author, seq)? else {
            return Err(StoreError::Corrupt {
                space: *space,
                author,
                seq,
                reason: "history names a missing event".into(),
            });
        };
        let Some(op) = operation_of(&event) else { continue };
        items.push(HistoryItem {
            event_id: event.id.to_hex(),
            hlc: event.header.hlc,
            author: author.to_hex(),
            device: author.device_id(),
            device_name: device_name(&author)?.unwrap_or_default(),
            seq,
            operation: op.name(),
            entry_id: op.entry().map(|e| e.to_hex()),
            fields: op.fields().iter().map(|w| (w.name.to_string(), w.value.clone())).collect(),
        });
    }
    items.sort_by(|a, b| (a.hlc, &a.author, a.seq).cmp(&(b.hlc, &b.author, b.seq)));
    Ok(items)
}
