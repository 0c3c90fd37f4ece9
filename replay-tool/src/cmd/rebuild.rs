//! `replay-tool rebuild`: drops a space's projections and rebuilds them from the log.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use crate::data_dir;
use crate::outcome::{rate, Outcome};

/// Runs the command.
pub fn run(data: &Path) -> anyhow::Result<Outcome> {
    let config = data_dir::read_config(data)?;
    if config.is_some_and(|c| c.relay) {
        bail!("{} is a relay: it keeps no projections to rebuild", data.display());
    }
    // Opened without projections so the open itself never rebuilds (that is done once, below).
    let store = data_dir::open_store(data, false)??;
    let space = data_dir::space_of(config.as_ref(), &store)?;
    if store.keys().is_empty() && !store.membership(&space).keys().is_empty() {
        bail!(
            "the space's bodies are sealed: rebuilding without the PIN would leave the views empty; set CASESYNC_PIN (or CASESYNC_PIN_FILE) to the practice PIN"
        );
    }
    let events = store.vector(&space).total();
    let started = Instant::now();
    let state_hash = store.rebuild_projections(&space)?;
    let folded = started.elapsed().as_secs_f64();
    // The fold's deltas are joined before the tool exits (`data_dir::settle`).
    let settled = data_dir::settle(&store);
    let seconds = started.elapsed().as_secs_f64();
    let json = json!({
        "data": data.display().to_string(),
        "space": space.to_hex(),
        "events": events,
        "state_hash": state_hash,
        "seconds": seconds,
        "fold_seconds": folded,
        "settle_seconds": seconds - folded,
        "settled": settled,
        "events_per_s": rate(events, seconds),
    });
    let text = format!(
        "rebuilt the projections of space {} from {events} events in {seconds:.2} s ({folded:.2} s folding, the rest compacting)\nstate hash {state_hash}",
        space.to_hex()
    );
    Ok(Outcome::new(true, json, text))
}
