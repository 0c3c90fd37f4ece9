//! `replay-tool audit`: who (device id and name), when (UTC from the hybrid logical clock), what
//! operation on which case and fields, in (hlc, author, seq) order; each line names the event id.

use std::collections::HashMap;
use std::path::Path;

use anyhow::bail;
use casesync_engine::log::membership::membership_op;
use casesync_engine::model::event::{BodyEncoding, SignedEvent};
use casesync_engine::model::hlc;
use casesync_engine::model::ids::{AuthorId, CaseId, SpaceId};
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::projection::operation_of;
use casesync_engine::store::Store;
use serde::Serialize;
use serde_json::json;

use crate::data_dir;
use crate::outcome::Outcome;
use crate::time_arg::{format_utc, TimeArg};

/// The filters.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// A case id or unique prefix (4+ hex digits).
    pub case: Option<String>,
    /// A device: `d-...` id, author hex (or prefix), or device name.
    pub device: Option<String>,
    /// From this time on.
    pub since: Option<TimeArg>,
    /// Up to this time (a bare date includes the whole day).
    pub until: Option<TimeArg>,
}

#[derive(Clone, Debug, Serialize)]
struct AuditLine {
    time: String,
    hlc: u64,
    device: String,
    device_name: String,
    author: String,
    seq: u64,
    operation: String,
    case_id: Option<String>,
    entry_id: Option<String>,
    fields: Vec<String>,
    values: serde_json::Value,
    event_id: String,
    /// Whether the space's membership lets the event count (a reader's, a revoked device's
    /// after its cut, an expired grant's do not).
    counts: bool,
}

fn resolve_devices(store: &Store, space: &SpaceId, text: &str) -> anyhow::Result<Vec<AuthorId>> {
    let wanted = text.trim().to_ascii_lowercase();
    let members = store.members(space)?;
    let mut authors: Vec<AuthorId> = store.vector(space).iter().map(|(a, _)| *a).collect();
    authors.extend(members.iter().map(|(a, _)| *a));
    authors.sort();
    authors.dedup();
    let names: HashMap<AuthorId, String> = members.into_iter().collect();
    let matched: Vec<AuthorId> = authors
        .into_iter()
        .filter(|a| {
            a.device_id() == wanted
                || (wanted.len() >= 4 && a.to_hex().starts_with(&wanted))
                || names.get(a).is_some_and(|n| n.to_ascii_lowercase() == wanted)
        })
        .collect();
    if matched.is_empty() {
        bail!("no device of this space matches {text:?} (use a d-... id, a key prefix or a device name)");
    }
    Ok(matched)
}

/// Runs the command.
pub fn run(data: &Path, filter: &AuditFilter) -> anyhow::Result<Outcome> {
    let config = data_dir::read_config(data)?;
    let store = data_dir::open_store(data, false)??;
    let space = data_dir::space_of(config.as_ref(), &store)?;
    let devices = filter.device.as_deref().map(|d| resolve_devices(&store, &space, d)).transpose()?;
    let case: Option<CaseId> = filter.case.as_deref().map(|c| store.resolve_case(&space, c)).transpose()?;
    let (from, to) = (filter.since.map_or(0, TimeArg::start), filter.until.map_or(u64::MAX, TimeArg::end));
    let mut names: HashMap<AuthorId, String> = store.members(&space)?.into_iter().collect();
    let membership = store.membership(&space);
    for device in membership.devices(0, &HashMap::new()) {
        names.entry(device.device).or_insert(device.name);
    }
    let mut lines = Vec::new();
    // With the PIN, sealed bodies open: who changed what; without it, who and when only.
    let keys = store.keys();
    for item in store.events_held(&space, &VersionVector::new()) {
        let (author, seq, message) = item?;
        if devices.as_ref().is_some_and(|d| !d.contains(&author)) {
            continue;
        }
        let event = SignedEvent::from_wire(message)
            .map_err(|e| anyhow::anyhow!("author {} seq {seq} does not decode: {e}", author.device_id()))?;
        let ms = hlc::millis(event.header.hlc);
        if ms < from || ms > to {
            continue;
        }
        let op = operation_of(&event, &keys);
        if let Some(case) = case {
            if op.as_ref().is_none_or(|op| op.case() != case) {
                continue;
            }
        }
        let (operation, case_id, entry_id, fields, values) = match &op {
            Some(op) => (
                op.name().to_string(),
                Some(op.case().to_hex()),
                op.entry().map(|e| e.to_hex()),
                op.fields().iter().map(|w| w.name.to_string()).collect(),
                serde_json::Value::Object(
                    op.fields()
                        .iter()
                        .map(|w| (w.name.to_string(), serde_json::to_value(&w.value).unwrap_or_default()))
                        .collect(),
                ),
            ),
            None => {
                let kind = match (event.header.encoding, membership_op(&event)) {
                    (_, Some(Ok(change))) => format!("membership: {change}"),
                    (BodyEncoding::Membership, _) => "membership: unreadable".to_string(),
                    (BodyEncoding::Sealed, _) => "sealed (give the PIN to read it)".to_string(),
                    (BodyEncoding::Plain, _) => "unreadable".to_string(),
                };
                (kind, None, None, Vec::new(), json!({}))
            }
        };
        let counts = if event.header.encoding == BodyEncoding::Membership {
            membership.counts(&author, seq)
        } else {
            store.counts(&space, &author, seq, event.header.hlc)
        };
        lines.push(AuditLine {
            time: format_utc(ms),
            hlc: event.header.hlc,
            device: author.device_id(),
            device_name: names.get(&author).cloned().unwrap_or_default(),
            author: author.to_hex(),
            seq,
            operation,
            case_id,
            entry_id,
            fields,
            values,
            event_id: event.id.to_hex(),
            counts,
        });
    }
    lines.sort_by(|a, b| (a.hlc, &a.author, a.seq).cmp(&(b.hlc, &b.author, b.seq)));
    let mut text = String::new();
    for l in &lines {
        let who = if l.device_name.is_empty() { l.device.clone() } else { format!("{} ({})", l.device, l.device_name) };
        let mut what = l.operation.clone();
        if let Some(case) = &l.case_id {
            what.push_str(&format!(" case {case}"));
        }
        if let Some(entry) = &l.entry_id {
            what.push_str(&format!(" entry {entry}"));
        }
        if !l.fields.is_empty() {
            what.push_str(&format!(" fields {}", l.fields.join(",")));
        }
        if !l.counts {
            what.push_str("  (does not count)");
        }
        text.push_str(&format!("{}  {who}  seq {}  {what}  event {}\n", l.time, l.seq, l.event_id));
    }
    text.push_str(&format!("{} events", lines.len()));
    let json = json!({
        "data": data.display().to_string(),
        "space": space.to_hex(),
        "count": lines.len(),
        "events": lines,
    });
    Ok(Outcome::new(true, json, text))
}
