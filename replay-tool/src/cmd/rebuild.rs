//! `replay-tool rebuild`: drops a space's projections and rebuilds them from the log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::data_dir;
use crate::outcome::{rate, Outcome};

/// How long a rebuild waits for RocksDB to join what it wrote. A fold that cannot hold the cases
/// an author's chain cycles over (10M events: 125k cases a chain) writes most events out as
/// deltas of their own, and their compaction is most of the rebuild's work (70-100 s of ~140 at
/// 10M). Left running, it was cancelled when the tool exited, and the node that opened the store
/// next paid for it. Past this the rebuild still stands; the compaction goes on at the next open.
const SETTLE_MAX: Duration = Duration::from_secs(3600);

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
    let settled = match store.settle(SETTLE_MAX) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "the rebuild stands; RocksDB goes on joining its files at the next open");
            false
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let json = json!({
        "data": data.display().to_string(),
        "space": space.to_hex(),
        "events": events,
        "state_hash": state_hash,
        "seconds": seconds,
        "fold_seconds": folded,
        "settled": settled,
        "events_per_s": rate(events, seconds),
    });
    let text = format!(
        "rebuilt the projections of space {} from {events} events in {seconds:.2} s ({folded:.2} s folding, the rest compacting)\nstate hash {state_hash}",
        space.to_hex()
    );
    Ok(Outcome::new(true, json, text))
}
