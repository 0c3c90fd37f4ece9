//! `replay-tool verify`: every hash link, the range signatures (or all with `--full`), the heads,
//! and that the stored projections equal a fresh replay. Names the first bad event of each chain.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::path::Path;

use std::sync::Arc;

use casesync_engine::model::event::BodyEncoding;
use casesync_engine::model::ids::{AuthorId, CaseId, SpaceId};
use casesync_engine::model::merge::CaseState;
use casesync_engine::model::sealing::KeySet;
use casesync_engine::model::state_hash::StateHasher;
use casesync_engine::model::vector_clock::Head;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::model::verify::{ChainFault, ChainReport, ChainVerifier, SignatureCheck};
use casesync_engine::projection::fold::Fold;
use casesync_engine::store::Store;
use serde_json::json;

use crate::data_dir::{self, OpenFailure};
use crate::outcome::{Outcome, EXIT_VIEWS_BEHIND};
use crate::progress;
use crate::source::{self, Scanned, Source};
use crate::vector_arg::vector_json;

struct SpaceCheck {
    verifier: ChainVerifier,
    fold: Fold,
    /// Sealed bodies seen, and those that did not open with the keys held (with a PIN).
    sealed: u64,
    unopened: u64,
}

impl SpaceCheck {
    fn new(space: SpaceId, mode: SignatureCheck, keys: &Arc<KeySet>) -> SpaceCheck {
        SpaceCheck {
            verifier: ChainVerifier::new(space, mode),
            fold: Fold::new(VersionVector::new()).with_keys(keys.clone()),
            sealed: 0,
            unopened: 0,
        }
    }
}

/// Runs the command.
pub fn run(data: &Path, full: bool) -> anyhow::Result<Outcome> {
    let config = data_dir::read_config(data)?;
    let mode = if full { SignatureCheck::Every } else { SignatureCheck::Range };
    match data_dir::open_store(data, false)? {
        Ok(store) => {
            let relay = config.is_some_and(|c| c.relay);
            let mut spaces = store.spaces();
            if let Some(config) = config {
                if !spaces.contains(&config.space) {
                    spaces.push(config.space);
                }
            }
            let source = Source::Store(store);
            let total = match &source {
                Source::Store(store) => spaces.iter().map(|s| store.vector(s).total()).sum(),
                Source::Raw { .. } => 0,
            };
            let keys = match &source {
                Source::Store(store) => store.keys(),
                Source::Raw { .. } => Arc::default(),
            };
            let (checks, regions) = check_chains(&source, mode, &spaces, total, &keys)?;
            let Source::Store(store) = &source else { anyhow::bail!("internal: the store source changed kind") };
            let mut reports = Vec::new();
            let mut ok = regions.is_empty();
            for (space, check) in checks {
                let (report, space_ok) = finish_space(store, space, check, relay)?;
                ok &= space_ok;
                reports.push(report);
            }
            Ok(outcome(data, ok, None, &source, mode, reports, regions))
        }
        Err(OpenFailure::Damaged(error)) => {
            // Name the bad events anyway, reading RocksDB directly (never writing to it).
            let open_error = format!("{:#}", anyhow::Error::new(error));
            let source = match source::open_raw(&data_dir::db_path(data), None) {
                Ok(source) => source,
                Err(raw_error) => {
                    let json = json!({ "data": data.display().to_string(), "open_error": open_error,
                        "raw_open_error": format!("{raw_error:#}"), "spaces": [] });
                    let text = format!(
                        "DAMAGED: {open_error}\nRocksDB cannot open it even read-only: {raw_error:#}\nrun `replay-tool salvage --data {} --out NEWDIR` to recover what still verifies",
                        data.display()
                    );
                    return Ok(Outcome::new(false, json, text));
                }
            };
            let (heads, _) = source.heads();
            let mut spaces: Vec<SpaceId> = heads.keys().map(|(s, _)| *s).collect();
            spaces.dedup();
            let (checks, regions) = check_chains(&source, mode, &spaces, 0, &Arc::default())?;
            let mut reports = Vec::new();
            for (space, mut check) in checks {
                check.verifier.expect_heads(heads.iter().filter(|((s, _), _)| *s == space).map(|((_, a), h)| (*a, *h)));
                let chains = check.verifier.finish();
                reports.push(space_json(
                    space,
                    &chains,
                    json!({ "checked": false, "reason": "the store does not open" }),
                ));
            }
            Ok(outcome(data, false, Some(open_error), &source, mode, reports, regions))
        }
        Err(other) => Err(anyhow::Error::new(other)),
    }
}

/// Streams every readable event through one verifier and one fold per space.
fn check_chains(
    source: &Source,
    mode: SignatureCheck,
    spaces: &[SpaceId],
    total: u64,
    keys: &Arc<KeySet>,
) -> anyhow::Result<(BTreeMap<SpaceId, SpaceCheck>, Vec<String>)> {
    let mut checks: BTreeMap<SpaceId, SpaceCheck> =
        spaces.iter().map(|s| (*s, SpaceCheck::new(*s, mode, keys))).collect();
    let mut regions = Vec::new();
    let bar = progress::bar(total, "verify");
    source.scan(&mut |item| {
        match item {
            Scanned::Event { space, author, seq, stored } => {
                bar.inc(1);
                let check = checks.entry(space).or_insert_with(|| SpaceCheck::new(space, mode, keys));
                if let Ok(Some(event)) = check.verifier.push_stored((author, seq), &stored) {
                    if event.header.encoding == BodyEncoding::Sealed {
                        check.sealed += 1;
                        if !keys.is_empty() && keys.open(&event.header, &event.body).is_err() {
                            check.unopened += 1;
                        }
                    }
                    let _ = check.fold.apply(&event, |_| Ok::<_, Infallible>(None));
                }
            }
            Scanned::Unreadable { space, author, seq, reason } => {
                if let Some(check) = checks.get_mut(&space) {
                    check.verifier.record_fault(ChainFault::Unreadable { author, seq, reason });
                }
            }
            Scanned::UnreadableRegion { reason } => regions.push(reason),
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok((checks, regions))
}

fn case_hash(state: &CaseState) -> String {
    StateHasher::of([state])
}

/// Heads, the signatures left to check, and the projections of one space.
fn finish_space(
    store: &Store,
    space: SpaceId,
    mut check: SpaceCheck,
    relay: bool,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let vector = store.vector(&space);
    let heads: Vec<(AuthorId, Head)> = vector.iter().filter_map(|(a, _)| Some((*a, store.head(&space, a)?))).collect();
    check.verifier.expect_heads(heads);
    let chains = check.verifier.finish();
    let mut ok = chains.faults.is_empty();
    let locked = check.sealed > 0 && store.keys().is_empty();
    let bodies = if locked {
        json!({ "sealed": check.sealed, "opened": null })
    } else {
        ok &= check.unopened == 0;
        json!({ "sealed": check.sealed, "opened": check.sealed - check.unopened })
    };
    let projections = if relay {
        json!({ "checked": false, "reason": "relay: no projections" })
    } else if locked {
        json!({ "checked": false, "reason": "its bodies are sealed: with the PIN (CASESYNC_PIN) the views are compared with a replay" })
    } else {
        let replayed: BTreeMap<CaseId, CaseState> = check.fold.into_cases().collect();
        let replayed_hash = StateHasher::of(replayed.values());
        let watermark = store.projection_watermark(&space)?;
        let mut differences: Vec<String> = Vec::new();
        let mut stored_ids: HashSet<CaseId> = HashSet::new();
        let mut stored_hasher = StateHasher::new();
        let stored = store.for_each_case(&space, |state| {
            stored_hasher.add(&state);
            stored_ids.insert(state.id);
            if differences.len() < 10 {
                match replayed.get(&state.id) {
                    None => {
                        differences.push(format!("case {} is in the projections but no event creates it", state.id))
                    }
                    Some(fresh) if case_hash(fresh) != case_hash(&state) => {
                        differences.push(format!("case {} differs from a fresh replay", state.id))
                    }
                    Some(_) => {}
                }
            }
        });
        if let Some(missing) = replayed.keys().find(|id| !stored_ids.contains(id)) {
            differences.push(format!("case {missing} is missing from the projections"));
        }
        let stored_hash = match stored {
            Ok(()) => Some(stored_hasher.finish()),
            Err(e) => {
                differences.push(format!("stored projections unreadable: {e}"));
                None
            }
        };
        let watermark_ok = watermark == vector;
        let equal = stored_hash.as_deref() == Some(replayed_hash.as_str()) && differences.is_empty();
        if watermark_ok {
            ok &= equal;
            json!({
                "checked": true,
                "equal": equal,
                "lagging": false,
                "stored_hash": stored_hash,
                "replayed_hash": replayed_hash,
                "watermark_matches_log": true,
                "differences": differences,
            })
        } else {
            // The views say they lack events (a bulk catch-up or a rebuild was interrupted):
            // not damage, since the next open of the node rebuilds them. What they hold is
            // compared with a replay of the events their watermark names.
            let at_watermark = store.fold_log(&space, |h| watermark.contains(&h.author, h.seq))?.into_sorted_cases();
            let at_watermark_hash = StateHasher::of(&at_watermark);
            json!({
                "checked": true,
                "equal": false,
                "lagging": true,
                "events_behind": vector.total().saturating_sub(watermark.total()),
                "equal_at_watermark": stored_hash.as_deref() == Some(at_watermark_hash.as_str()),
                "stored_hash": stored_hash,
                "replayed_hash": replayed_hash,
                "watermark_matches_log": false,
                "differences": [],
            })
        }
    };
    let mut report = space_json(space, &chains, projections);
    report["bodies"] = bodies;
    Ok((report, ok))
}

fn space_json(space: SpaceId, chains: &ChainReport, projections: serde_json::Value) -> serde_json::Value {
    let faults: Vec<serde_json::Value> = chains
        .faults
        .iter()
        .map(|f| {
            json!({
                "space": space.to_hex(),
                "author": f.author().to_hex(),
                "device": f.author().device_id(),
                "seq": f.seq(),
                "kind": f.kind(),
                "message": f.to_string(),
            })
        })
        .collect();
    json!({
        "space": space.to_hex(),
        "events": chains.events,
        "authors": chains.verified.len() + chains.faults.len(),
        "vector": vector_json(&chains.vector()),
        "faults": faults,
        "projections": projections,
    })
}

fn outcome(
    data: &Path,
    ok: bool,
    open_error: Option<String>,
    source: &Source,
    mode: SignatureCheck,
    spaces: Vec<serde_json::Value>,
    regions: Vec<String>,
) -> Outcome {
    let signatures = match mode {
        SignatureCheck::Range => "range",
        SignatureCheck::Every => "every",
    };
    let lagging = spaces.iter().any(|space| space["projections"]["lagging"] == true);
    let mut text = String::new();
    let verdict = match (ok, lagging) {
        (false, _) => "DAMAGED",
        (true, true) => "OK, VIEWS BEHIND",
        (true, false) => "OK",
    };
    text.push_str(&format!("verify {}: {verdict}\n", data.display()));
    if let Some(e) = &open_error {
        text.push_str(&format!("  the store does not open: {e}\n  (events read directly from RocksDB, read-only)\n"));
    }
    for space in &spaces {
        let get = |k: &str| space.get(k).cloned().unwrap_or_default();
        text.push_str(&format!(
            "  space {}: {} events from {} authors, hash links and {} signatures checked\n",
            get("space").as_str().unwrap_or(""),
            get("events"),
            get("authors"),
            signatures
        ));
        for fault in get("faults").as_array().into_iter().flatten() {
            text.push_str(&format!(
                "  FIRST BAD EVENT: space {} author {} ({}) seq {}: {}\n",
                fault["space"].as_str().unwrap_or(""),
                fault["device"].as_str().unwrap_or(""),
                fault["author"].as_str().unwrap_or(""),
                fault["seq"],
                fault["message"].as_str().unwrap_or("")
            ));
        }
        let bodies = get("bodies");
        match (bodies["sealed"].as_u64(), bodies["opened"].as_u64()) {
            (Some(0) | None, _) => {}
            (Some(sealed), None) => text.push_str(&format!(
                "  {sealed} sealed bodies, not opened (no PIN: set CASESYNC_PIN to check that each opens)\n"
            )),
            (Some(sealed), Some(opened)) if opened == sealed => {
                text.push_str(&format!("  {sealed} sealed bodies, every one opens with this device's keys\n"))
            }
            (Some(sealed), Some(opened)) => text.push_str(&format!(
                "  SEALED BODIES THAT DO NOT OPEN: {} of {sealed} (damaged, or under a key this device was never given)\n",
                sealed - opened
            )),
        }
        let projections = get("projections");
        if projections["lagging"] == true {
            text.push_str(&format!(
                "  projections lag the log by {} events (an interrupted bulk catch-up or rebuild): the next\n  \
                 `casesync serve` or `casesync` command rebuilds them from the log, or run `replay-tool rebuild`\n",
                projections["events_behind"]
            ));
        } else if projections["checked"] == true {
            if projections["equal"] == true && projections["watermark_matches_log"] == true {
                text.push_str(&format!(
                    "  projections equal a fresh replay (state hash {})\n",
                    projections["replayed_hash"].as_str().unwrap_or("")
                ));
            } else {
                text.push_str(&format!(
                    "  PROJECTIONS DIFFER from a fresh replay: stored {} replayed {}{}\n",
                    projections["stored_hash"],
                    projections["replayed_hash"],
                    if projections["watermark_matches_log"] == true { "" } else { " (watermark lags the log)" }
                ));
                for d in projections["differences"].as_array().into_iter().flatten() {
                    text.push_str(&format!("    {}\n", d.as_str().unwrap_or("")));
                }
                text.push_str("  `replay-tool rebuild` rebuilds them from the log\n");
            }
        } else {
            text.push_str(&format!("  projections not checked: {}\n", projections["reason"].as_str().unwrap_or("")));
        }
    }
    for region in &regions {
        text.push_str(&format!("  UNREADABLE REGION: {region}\n"));
    }
    if !ok {
        text.push_str(&format!(
            "  run `replay-tool salvage --data {} --out NEWDIR` to recover what still verifies\n",
            data.display()
        ));
    }
    let json = json!({
        "data": data.display().to_string(),
        "access": source.access(),
        "signatures": signatures,
        "open_error": open_error,
        "spaces": spaces,
        "unreadable_regions": regions,
    });
    let mut outcome = Outcome::new(ok, json, text.trim_end().to_string());
    if ok && lagging {
        outcome.code = EXIT_VIEWS_BEHIND;
    }
    outcome
}
