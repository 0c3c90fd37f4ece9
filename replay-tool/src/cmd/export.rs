//! `replay-tool export`: streams the events of a space (all, or beyond `--since`) into a portable
//! backup file, checking every hash link and each chain's last signature on the way. The file is
//! written under a `.partial` name and renamed only when complete and synced.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use casesync_engine::codec::backup_format::{BackupHeader, BackupWriter, BACKUP_FORMAT_VERSION};
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::vector_clock::Head;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::model::verify::{ChainVerifier, SignatureCheck};
use serde_json::json;

use crate::data_dir;
use crate::outcome::{rate, Damage, Outcome};
use crate::progress;
use crate::vector_arg::{vector_json, vector_text};

/// Runs the command.
pub fn run(data: &Path, out: &Path, since: VersionVector) -> anyhow::Result<Outcome> {
    let config = data_dir::read_config(data)?;
    let store = data_dir::open_store(data, false)??;
    let space = data_dir::space_of(config.as_ref(), &store)?;
    let started = Instant::now();
    let held = store.vector(&space);

    // The chains continue from the events at `since`, which must be stored here.
    let mut anchors = Vec::new();
    for (author, seq) in since.iter() {
        let seq = (*seq).min(held.get(author));
        if seq == 0 {
            continue;
        }
        let event = store
            .get_event(&space, author, seq)?
            .with_context(|| format!("--since names seq {seq} of {} but it is not stored", author.device_id()))?;
        anchors.push((*author, Head { seq, link: event.link }));
    }
    let mut verifier = ChainVerifier::with_anchors(space, SignatureCheck::Range, anchors);

    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let header =
        BackupHeader { version: BACKUP_FORMAT_VERSION, space, base: since.clone(), members: store.members(&space)? };
    let result = (|| -> anyhow::Result<_> {
        let mut writer = BackupWriter::new(BufWriter::with_capacity(1 << 20, file), &header)?;
        let bar = progress::bar(held.missing_in(&since).iter().map(|r| r.len()).sum(), "export");
        for item in store.events_after(&space, &since) {
            let (_, _, message) =
                item.map_err(|e| Damage(format!("the log is damaged ({e}); run `replay-tool verify`")))?;
            writer.event(&message.signature, &message.event)?;
            let event = SignedEvent::from_wire(message)
                .map_err(|e| Damage(format!("a stored event does not decode ({e}); run `replay-tool verify`")))?;
            verifier.push(&event).map_err(|e| Damage(format!("the log is damaged ({e}); run `replay-tool verify`")))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (summary, buffered) = writer.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(summary)
    })();
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let chains = verifier.finish();
    if let Some(fault) = chains.faults.first() {
        let _ = std::fs::remove_file(&partial);
        return Err(Damage(format!("the log is damaged ({fault}); nothing exported; run `replay-tool verify`")).into());
    }
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut until = since.clone();
    until.merge(&held);
    let json = json!({
        "file": out.display().to_string(),
        "space": space.to_hex(),
        "events": summary.events,
        "bytes": summary.bytes,
        "blake3": summary.blake3,
        "since": vector_json(&since),
        "vector": vector_json(&until),
        "seconds": seconds,
        "events_per_s": rate(summary.events, seconds),
    });
    let text = format!(
        "exported {} events of space {} to {} ({} bytes, blake3 {})\nnext incremental export: --since {}",
        summary.events,
        space.to_hex(),
        out.display(),
        summary.bytes,
        summary.blake3,
        if until.is_empty() { "''".to_string() } else { vector_text(&until) }
    );
    Ok(Outcome::new(true, json, text))
}
