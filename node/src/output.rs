//! Printing results: human tables on a terminal, `--json` for scripts.

use std::io::IsTerminal;

use casesync_proto::v1 as pb;
use serde::Serialize;

use crate::views_pb::value_text;

/// Prints a value as one line of JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` UTC of milliseconds since the epoch (a clock past what a calendar can
/// show, year 9999, prints as its milliseconds).
pub fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

/// One device of `casesync device list`: id, name, role, and where the role comes from.
pub fn device_line(d: &pb::DeviceInfo) -> String {
    let role = if d.role.is_empty() { "-" } else { d.role.as_str() };
    let mut origin = if d.founder {
        "founded the space".to_string()
    } else if d.granted_by.is_empty() {
        "not a member".to_string()
    } else {
        format!("{} granted by {} at {}", d.granted_role, d.granted_by, utc(d.granted_at_ms))
    };
    if d.until_ms != 0 {
        origin.push_str(&format!(", until {}", utc(d.until_ms)));
    }
    if d.revoked {
        origin.push_str(&format!(
            "; revoked by {} at {} (its events after seq {} do not count)",
            d.revoked_by,
            utc(d.revoked_at_ms),
            d.cut
        ));
    }
    let this = if d.this_device { "  (this device)" } else { "" };
    format!("{}  {:<16} {:<7} {}{this}", d.device, short_id(&d.name, 16), role, origin)
}

/// This device's fence, and what clearing it risks.
/// `casesync status` as text.
pub fn status_text(status: &pb::NodeStatus) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("device  {} ({}){}", status.device, status.device_name, if status.relay { "  relay" } else { "" }));
    line(format!("space   {}", status.space));
    if status.role.is_empty() {
        line(format!("role    none: {}", status.role_refusal));
    } else {
        line(format!("role    {}", status.role));
    }
    line(format!("events  {}", status.events));
    if !status.relay {
        line(format!("state   {}", status.state_hash));
    }
    if status.projections_behind > 0 {
        line(format!("views   catching up: {} events not yet in the case views", status.projections_behind));
    }
    if status.peers.is_empty() {
        line("peers   not configured (add --peer to `casesync serve`, or peers in casesync.toml)".into());
    }
    for p in &status.peers {
        let last = if p.last_sync_ms == 0 { "never".to_string() } else { utc(p.last_sync_ms) };
        line(format!(
            "peer    {}  {}  last sync {}  waiting to send {}  {}",
            p.url, p.state, last, p.events_to_send, p.last_error
        ));
    }
    for r in &status.refused {
        line(format!(
            "refused {}  {} times, the last at seq {} from {} at {}: {}",
            r.device,
            r.times,
            r.seq,
            r.peer,
            utc(r.last_ms),
            r.reason
        ));
    }
    for f in &status.forked {
        let decision = if f.quarantined {
            "quarantined: its new events wait until an admin revokes it (`casesync device revoke`) or grants it a role again (`casesync device grant`)"
        } else {
            "an admin granted it a role again since"
        };
        line(format!(
            "forked  {}  signed two chains from seq {} ({} signed events kept as evidence): {}",
            f.device, f.first_seq, f.evidence, decision
        ));
    }
    out
}

/// `casesync fence` as text.
pub fn fence_text(reply: &pb::FenceReply) -> String {
    let mut out = String::new();
    if reply.cleared_seq > 0 {
        out.push_str(&format!("fence at seq {} cleared: this device writes again\n", reply.cleared_seq));
    }
    if reply.blocks_writes {
        out.push_str(&format!(
            "fence: a peer holds this device's own events up to seq {} (local head {}); local writes \
             wait until a sync fetches them.\n`casesync fence --clear` lets this device write now: only \
             if those events are lost for good, since if they exist anywhere the next write forks \
             this device's chain and other devices refuse its writes from seq {} on",
            reply.fence_seq,
            reply.local_seq,
            reply.local_seq + 1
        ));
    } else if reply.cleared_seq == 0 {
        out.push_str(&format!("no fence: this device writes at seq {}", reply.local_seq + 1));
    }
    out.trim_end().to_string()
}

/// Time of a hybrid logical clock value.
pub fn hlc_time(hlc: u64) -> String {
    utc(casesync_engine::model::hlc::millis(hlc))
}

fn version_line(v: &pb::VersionView) -> String {
    let value = if v.status.is_empty() { format!("{:?}", value_text(v.value.as_ref())) } else { v.status.clone() };
    format!("{value} by {} at {}", v.device, hlc_time(v.hlc))
}

/// A case, as text lines.
pub fn case_text(view: &pb::CaseView) -> String {
    let mut out = format!("case {}  {}", view.case_id, view.status);
    if view.deleted_with_concurrent_changes {
        out.push_str("  (deleted with concurrent changes: restore or delete again)");
    }
    out.push_str(&format!("  updated {}\n", hlc_time(view.updated_hlc)));
    for v in &view.status_conflict {
        out.push_str(&format!("  ! status conflict: {}\n", version_line(v)));
    }
    let fields = |out: &mut String, indent: &str, fields: &[pb::FieldView]| {
        for f in fields {
            out.push_str(&format!("{indent}{:<16} {}\n", f.name, value_text(f.value.as_ref())));
            if !f.conflict.is_empty() {
                out.push_str(&format!("{indent}  ! conflict, {} values:\n", f.conflict.len()));
                for v in &f.conflict {
                    out.push_str(&format!("{indent}    {}\n", version_line(v)));
                }
            }
        }
    };
    fields(&mut out, "  ", &view.fields);
    for entry in &view.entries {
        let flag = if entry.removed_with_concurrent_changes { "  (removed with concurrent changes)" } else { "" };
        out.push_str(&format!("  entry {}{flag}\n", entry.entry_id));
        fields(&mut out, "    ", &entry.fields);
    }
    out
}

/// Characters of a case or entry id shown in lists.
pub const ID_SHORT_CHARS: usize = 8;
/// Characters of an event id shown in history lines.
pub const EVENT_ID_SHORT_CHARS: usize = 16;

/// The first `chars` characters of an id (all of it when shorter). Ids come from the daemon as
/// text: a short, empty or non-ASCII one is shown as it is, never cut inside a character.
pub fn short_id(id: &str, chars: usize) -> &str {
    match id.char_indices().nth(chars) {
        Some((end, _)) => id.get(..end).unwrap_or(id),
        None => id,
    }
}

/// One line of a case's history.
pub fn history_line(item: &pb::HistoryItem) -> String {
    let mut fields: Vec<String> =
        item.fields.iter().map(|f| format!("{}={}", f.name, value_text(f.value.as_ref()))).collect();
    if !item.note.is_empty() {
        fields.push(format!("[{}]", item.note));
    }
    format!(
        "{}  {} ({})  #{}  {:<13} {}  event {}",
        hlc_time(item.hlc),
        item.device,
        if item.device_name.is_empty() { "?" } else { &item.device_name },
        item.seq,
        item.operation,
        fields.join(" "),
        short_id(&item.event_id, EVENT_ID_SHORT_CHARS)
    )
}

/// A conflict, as text lines: where, then each current version.
pub fn conflict_text(conflict: &pb::ConflictItem) -> String {
    let place = if conflict.entry_id.is_empty() {
        String::new()
    } else {
        format!(" entry {}", short_id(&conflict.entry_id, ID_SHORT_CHARS))
    };
    let mut out = format!("case {}{place} field {}:\n", short_id(&conflict.case_id, ID_SHORT_CHARS), conflict.field);
    for v in &conflict.versions {
        out.push_str(&format!("    {:?} by {} at {}\n", value_text(v.value.as_ref()), v.device, hlc_time(v.hlc)));
    }
    out
}

/// A one-line summary of a case, for lists.
pub fn case_row(view: &pb::CaseView) -> String {
    let summary: Vec<String> =
        view.fields.iter().take(4).map(|f| format!("{}={}", f.name, value_text(f.value.as_ref()))).collect();
    let conflict = view.fields.iter().any(|f| !f.conflict.is_empty()) || !view.status_conflict.is_empty();
    format!(
        "{}  {:<8} {}{}{}",
        short_id(&view.case_id, ID_SHORT_CHARS),
        view.status,
        summary.join("  "),
        if conflict { "  [conflict]" } else { "" },
        if view.deleted_with_concurrent_changes { "  [deleted with concurrent changes]" } else { "" },
    )
}

/// A progress bar on a terminal; hidden otherwise.
pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::{short_id, utc};

    #[test]
    fn short_id_cuts_at_characters_and_keeps_short_ids() {
        assert_eq!(short_id("0123456789abcdef", 8), "01234567");
        assert_eq!(short_id("0123", 8), "0123");
        assert_eq!(short_id("", 8), "");
        assert_eq!(short_id(&"ä".repeat(10), 8), "ä".repeat(8));
        assert_eq!(short_id("abcdefgé", 8), "abcdefgé");
        assert_eq!(short_id("abcdefg\u{1F600}x", 8), "abcdefg\u{1F600}");
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_435_200_000), "2026-11-23 12:00:00");
        assert_eq!(utc(u64::MAX), format!("{} ms since the epoch", u64::MAX));
    }
}
