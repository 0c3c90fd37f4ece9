//! `replay-tool salvage`: recovers every event of a damaged data dir that still verifies into a
//! fresh data dir, rebuilds its projections, and reports exactly what was lost per author chain
//! (everything from the first event that fails to read or verify, up to the recorded head).
//!
//! Reading tries the store first, then RocksDB read-only with paranoid checks off, then RocksDB's
//! repair on a copy; the damaged dir itself is never written by the latter two. Events go
//! through `Store::ingest`, so nothing lands that ingest would refuse.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::store::{Store, StoreOptions};
use casesync_proto::v1 as pb;
use serde_json::json;

use crate::data_dir::{self, CONFIG_FILE, DEVICE_FILES, INSTANCE_FILE};
use crate::outcome::Outcome;
use crate::progress;
use crate::source::{self, decode_record, Scanned, Source};
use crate::vector_arg::vector_json;

const BATCH_EVENTS: usize = 1000;

/// Where one chain stopped.
#[derive(Clone, Debug)]
struct Stop {
    seq: u64,
    reason: String,
}

#[derive(Default)]
struct ChainState {
    next: u64,
    max_seen: u64,
    stop: Option<Stop>,
}

struct Salvager<'a> {
    store: &'a Store,
    chains: BTreeMap<(SpaceId, AuthorId), ChainState>,
    batch_space: Option<SpaceId>,
    batch: Vec<pb::SignedEvent>,
    regions: Vec<String>,
}

impl Salvager<'_> {
    fn chain(&mut self, space: SpaceId, author: AuthorId) -> &mut ChainState {
        self.chains.entry((space, author)).or_insert_with(|| ChainState { next: 1, ..ChainState::default() })
    }

    fn stop(&mut self, space: SpaceId, author: AuthorId, seq: u64, reason: String) {
        let chain = self.chain(space, author);
        if chain.stop.as_ref().is_none_or(|s| seq < s.seq) {
            chain.stop = Some(Stop { seq, reason });
        }
    }

    fn visit(&mut self, item: Scanned) -> anyhow::Result<()> {
        match item {
            Scanned::Event { space, author, seq, stored } => {
                let chain = self.chain(space, author);
                chain.max_seen = chain.max_seen.max(seq);
                if chain.stop.is_some() {
                    return Ok(());
                }
                if seq != chain.next {
                    let expected = chain.next;
                    self.stop(space, author, expected, format!("missing (found seq {seq} next)"));
                    return Ok(());
                }
                match decode_record(&author, seq, &stored) {
                    Ok(event) => {
                        self.chain(space, author).next = seq + 1;
                        if self.batch_space.is_some_and(|s| s != space) || self.batch.len() >= BATCH_EVENTS {
                            self.flush()?;
                        }
                        self.batch_space = Some(space);
                        self.batch.push(event.to_wire());
                    }
                    Err(reason) => self.stop(space, author, seq, reason),
                }
            }
            Scanned::Unreadable { space, author, seq, reason } => self.stop(space, author, seq, reason),
            Scanned::UnreadableRegion { reason } => self.regions.push(reason),
        }
        Ok(())
    }

    /// Starts another pass over another copy of the same data: chains start again at seq 1
    /// (already stored events are skipped by ingest); what was seen is kept.
    fn reset(&mut self) {
        for chain in self.chains.values_mut() {
            chain.next = 1;
            chain.stop = None;
        }
        self.regions.clear();
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let Some(space) = self.batch_space else { return Ok(()) };
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return Ok(());
        }
        let report = self.store.ingest(&space, batch).context("writing the salvaged events")?;
        for rejection in report.rejected {
            if let Some(author) = rejection.author {
                self.stop(space, author, rejection.seq, rejection.reason.to_string());
            }
        }
        Ok(())
    }
}

fn open_source(data: &Path, work: &Path) -> anyhow::Result<(Source, Option<String>)> {
    let db = data_dir::db_path(data);
    if db.join("CURRENT").exists() {
        match data_dir::open_store(data, false)? {
            Ok(store) => return Ok((Source::Store(store), None)),
            Err(data_dir::OpenFailure::InUse(e)) => {
                bail!("the store is in use by another process (stop casesync first): {e}")
            }
            Err(other) => {
                let why = other.to_string();
                return Ok((source::open_raw(&db, Some(work))?, Some(why)));
            }
        }
    }
    Ok((source::open_raw(&db, Some(work))?, Some("the store has no CURRENT file".into())))
}

/// Runs the command.
pub fn run(data: &Path, out: &Path) -> anyhow::Result<Outcome> {
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: salvage writes into a fresh data dir", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let work = out.join(".salvage-work");
    let config = data_dir::read_config(data);
    let config_problem = config.as_ref().err().map(|e| format!("{e:#}"));
    let config = config.ok().flatten();
    let relay = config.is_some_and(|c| c.relay);

    let (source, open_error) = open_source(data, &work)?;
    let (heads, head_problems) = source.heads();
    let new_db = data_dir::db_path(out);
    std::fs::create_dir_all(&new_db)?;
    let store = Store::open(&new_db, StoreOptions { projections: !relay, ..StoreOptions::compatible() })
        .context("creating the new store")?;
    let mut salvager =
        Salvager { store: &store, chains: BTreeMap::new(), batch_space: None, batch: Vec::new(), regions: Vec::new() };
    for key in heads.keys() {
        salvager.chain(key.0, key.1);
    }
    let bar = progress::bar(heads.values().map(|h| h.seq).sum(), "salvage");
    source.scan(&mut |item| {
        bar.inc(1);
        salvager.visit(item)
    })?;
    salvager.flush()?;
    bar.finish_and_clear();
    // When a chain stopped early and the files were read as they are, a repaired copy may
    // reach further (RocksDB's repair drops unreadable files instead of failing every read).
    // Ingest is idempotent: the second pass only adds what the first could not read.
    let mut access = source.access();
    let incomplete = !salvager.regions.is_empty() || salvager.chains.values().any(|c| c.stop.is_some());
    let db_dir = data_dir::db_path(data);
    if incomplete && access != source::Access::RepairedCopy && db_dir.join("CURRENT").exists() {
        match source::open_repaired(&db_dir, &work) {
            Ok(repaired) => {
                salvager.reset();
                repaired.scan(&mut |item| salvager.visit(item))?;
                salvager.flush()?;
                access = repaired.access();
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "repairing a copy did not help"),
        }
    }
    let Salvager { chains, regions, .. } = salvager;

    // What was lost: per chain, from the first seq not recovered up to the head (or the highest
    // seq seen when the head is unreadable).
    let members = source.members();
    let names: BTreeMap<(SpaceId, AuthorId), String> = members.iter().map(|(s, a, n)| ((*s, *a), n.clone())).collect();
    let mut lost = Vec::new();
    let mut spaces: Vec<SpaceId> = chains.keys().map(|(s, _)| *s).collect();
    spaces.extend(config.map(|c| c.space));
    spaces.sort();
    spaces.dedup();
    for ((space, author), chain) in &chains {
        let recovered = store.vector(space).get(author);
        let head = heads.get(&(*space, *author)).map(|h| h.seq);
        let end = head.unwrap_or(0).max(chain.max_seen);
        let stopped = chain.stop.as_ref().filter(|s| s.seq <= end || head.is_none());
        if end > recovered || stopped.is_some() {
            lost.push(json!({
                "space": space.to_hex(),
                "author": author.to_hex(),
                "device": author.device_id(),
                "device_name": names.get(&(*space, *author)).cloned().unwrap_or_default(),
                "recovered_up_to": recovered,
                "lost_from": recovered + 1,
                "lost_to": if head.is_some() || end > recovered { Some(end) } else { None },
                "lost_to_known": head.is_some(),
                "reason": stopped.map(|s| s.reason.clone()).unwrap_or_else(|| "missing".into()),
            }));
        }
    }
    for (space, author, name) in &members {
        store.add_member(space, author, name)?;
    }
    let mut space_reports = Vec::new();
    let mut recovered_events = 0;
    for space in &spaces {
        let vector = store.vector(space);
        recovered_events += vector.total();
        let state_hash = if relay { None } else { Some(store.rebuild_projections(space)?) };
        space_reports
            .push(json!({ "space": space.to_hex(), "vector": vector_json(&vector), "state_hash": state_hash }));
    }
    drop(store);
    drop(source);
    let _ = std::fs::remove_dir_all(&work);

    // The device files. The key is copied only when this device lost none of its own events:
    // writing on from a shorter chain would fork it (peers may hold the lost events).
    let mut copied = Vec::new();
    let mut skipped = Vec::new();
    match (&config, std::fs::copy(data.join(CONFIG_FILE), out.join(CONFIG_FILE))) {
        (Some(_), Ok(_)) => copied.push(CONFIG_FILE.to_string()),
        _ => {
            let _ = std::fs::remove_file(out.join(CONFIG_FILE));
            if let [space] = spaces.as_slice() {
                data_dir::write_minimal_config(out, space)?;
                copied.push(format!("{CONFIG_FILE} (rewritten: the original was unreadable)"));
            } else {
                skipped.push(format!("{CONFIG_FILE}: unreadable and the space is ambiguous"));
            }
        }
    }
    let own_author = std::fs::read(data.join(DEVICE_FILES[0]))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(|secret| DeviceKey::from_secret(secret).author());
    let own_lost = own_author.is_some_and(|a| lost.iter().any(|l| l["author"] == a.to_hex()));
    for file in DEVICE_FILES.iter().chain([&INSTANCE_FILE]) {
        if *file == DEVICE_FILES[0] && own_lost {
            skipped.push(format!(
                "{file}: this device lost some of its own events; run `casesync init --data {}` to continue as a new device",
                out.display()
            ));
            continue;
        }
        match std::fs::copy(data.join(file), out.join(file)) {
            Ok(_) => copied.push(file.to_string()),
            Err(e) => skipped.push(format!("{file}: {e}")),
        }
    }

    let ok = lost.is_empty() && regions.is_empty();
    let mut text = format!(
        "salvaged {recovered_events} events from {} into {} (read via {:?})\n",
        data.display(),
        out.display(),
        access
    );
    if let Some(e) = &open_error {
        text.push_str(&format!("  the store did not open: {e}\n"));
    }
    for l in &lost {
        text.push_str(&format!(
            "  LOST: space {} author {} ({}{}) seq {} to {}: {}\n",
            l["space"].as_str().unwrap_or(""),
            l["device"].as_str().unwrap_or(""),
            l["author"].as_str().unwrap_or(""),
            l["device_name"].as_str().filter(|n| !n.is_empty()).map(|n| format!(", {n}")).unwrap_or_default(),
            l["lost_from"],
            if l["lost_to"].is_null() { "the unknown end".to_string() } else { l["lost_to"].to_string() },
            l["reason"].as_str().unwrap_or("")
        ));
    }
    for r in &regions {
        text.push_str(&format!("  UNREADABLE REGION (chain unknown): {r}\n"));
    }
    for p in &head_problems {
        text.push_str(&format!("  heads: {p}\n"));
    }
    for s in &space_reports {
        text.push_str(&format!(
            "  space {}: state hash {}\n",
            s["space"].as_str().unwrap_or(""),
            s["state_hash"].as_str().unwrap_or("(relay)")
        ));
    }
    for s in &skipped {
        text.push_str(&format!("  not copied: {s}\n"));
    }
    text.push_str(if ok { "  nothing lost" } else { "  peers may still hold the lost events: sync with them" });
    let json = json!({
        "data": data.display().to_string(),
        "out": out.display().to_string(),
        "access": access,
        "open_error": open_error,
        "config_problem": config_problem,
        "recovered_events": recovered_events,
        "spaces": space_reports,
        "lost": lost,
        "unreadable_regions": regions,
        "head_problems": head_problems,
        "copied": copied,
        "not_copied": skipped,
    });
    Ok(Outcome::new(ok, json, text.trim_end().to_string()))
}
