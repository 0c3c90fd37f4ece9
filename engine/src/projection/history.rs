//! A case's history: every event that touched it, with who, which device, when and what.

use rocksdb::{Direction, IteratorMode};
use serde::Serialize;

use crate::codec::keys::{case_key, parse_history_record, CF_CASE_EVENTS};
use crate::error::StoreError;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, CaseId, SpaceId};
use crate::model::membership::{Membership, MembershipOp};
use crate::model::operation::FieldValue;
use crate::model::sealing::KeySet;
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
    /// For a membership change: what it did; for an event that does not count: why (empty for
    /// the case's counted changes).
    pub note: String,
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
    let keys = db.keys();
    for (author, seq) in dots {
        let Some(event) = event(&author, seq)? else {
            return Err(StoreError::Corrupt {
                space: *space,
                author,
                seq,
                reason: "history names a missing event".into(),
            });
        };
        if let Some(item) = case_item(&event, &keys, device_name(&author)?.unwrap_or_default(), String::new()) {
            items.push(item);
        }
    }
    items.sort_by(|a, b| (a.hlc, &a.author, a.seq).cmp(&(b.hlc, &b.author, b.seq)));
    Ok(items)
}

/// The history item of a case event (`None` when its body is no operation).
fn case_item(event: &SignedEvent, keys: &KeySet, device_name: String, note: String) -> Option<HistoryItem> {
    let op = operation_of(event, keys)?;
    let h = &event.header;
    Some(HistoryItem {
        event_id: event.id.to_hex(),
        hlc: h.hlc,
        author: h.author.to_hex(),
        device: h.author.device_id(),
        device_name,
        seq: h.seq,
        operation: op.name(),
        entry_id: op.entry().map(|e| e.to_hex()),
        fields: op.fields().iter().map(|w| (w.name.to_string(), w.value.clone())).collect(),
        note,
    })
}

/// Adds to a case's history what membership did beside it: the grants and revocations of the
/// devices that wrote the case (`membership_event` reads each), and the case's events that do
/// not count (`uncounted`: written above a revocation's cut, or refused since), each with why.
pub(crate) fn add_membership(
    items: &mut Vec<HistoryItem>,
    membership: &Membership,
    keys: &KeySet,
    uncounted: Vec<SignedEvent>,
    membership_event: impl Fn(&AuthorId, u64) -> Result<Option<SignedEvent>, StoreError>,
    device_name: impl Fn(&AuthorId) -> Result<Option<String>, StoreError>,
) -> Result<(), StoreError> {
    for event in uncounted {
        let h = &event.header;
        let why = membership.judge(&h.author, h.seq, h.hlc, None).err().map(|r| r.to_string()).unwrap_or_default();
        if let Some(item) =
            case_item(&event, keys, device_name(&h.author)?.unwrap_or_default(), format!("does not count: {why}"))
        {
            items.push(item);
        }
    }
    let writers: std::collections::HashSet<String> = items.iter().map(|i| i.author.clone()).collect();
    for record in membership.records() {
        let about = match &record.op {
            MembershipOp::Grant { device, .. } | MembershipOp::Revoke { device, .. } => *device,
            MembershipOp::Admit { .. } => record.author,
            MembershipOp::Found { .. } | MembershipOp::Invite { .. } | MembershipOp::ShareKey { .. } => continue,
        };
        if !writers.contains(&about.to_hex()) {
            continue;
        }
        let Some(event) = membership_event(&record.author, record.seq)? else { continue };
        let counts = if membership.counts(&record.author, record.seq) { "" } else { " (does not count)" };
        items.push(HistoryItem {
            event_id: event.id.to_hex(),
            hlc: record.hlc,
            author: record.author.to_hex(),
            device: record.author.device_id(),
            device_name: device_name(&record.author)?.unwrap_or_default(),
            seq: record.seq,
            operation: "membership",
            entry_id: None,
            fields: Vec::new(),
            note: format!("{}{counts}", record.op),
        });
    }
    items.sort_by(|a, b| (a.hlc, &a.author, a.seq).cmp(&(b.hlc, &b.author, b.seq)));
    Ok(())
}
