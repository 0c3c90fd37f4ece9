//! `replay-tool at`: the case views as they were at a time (events with hlc at or before it) or
//! at a version vector, folded in memory beside the live projections, which stay untouched.

use std::path::Path;

use casesync_engine::codec::case_json::CaseJson;
use casesync_engine::model::hlc;
use casesync_engine::model::state_hash::StateHasher;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::model::views::CaseView;
use serde_json::json;

use crate::data_dir;
use crate::outcome::Outcome;
use crate::progress;
use crate::time_arg::{format_utc, TimeArg};
use crate::vector_arg::vector_json;

/// Which point in the past.
#[derive(Clone, Debug)]
pub enum Point {
    /// Every event whose hlc time is at or before this (a bare date includes the whole day).
    Time(TimeArg),
    /// Every event the vector includes.
    Vector(VersionVector),
}

/// Runs the command.
pub fn run(data: &Path, point: &Point) -> anyhow::Result<Outcome> {
    let config = data_dir::read_config(data)?;
    let store = data_dir::open_store(data, false)??;
    let space = data_dir::space_of(config.as_ref(), &store)?;
    if store.keys().is_empty() && !store.membership(&space).keys().is_empty() {
        anyhow::bail!("the space's bodies are sealed: set CASESYNC_PIN (or CASESYNC_PIN_FILE) to the practice PIN to see its cases");
    }
    let held = store.vector(&space);
    let bar = progress::bar(held.total(), "replay");
    let mut events = 0u64;
    let fold = store.fold_log(&space, |header| {
        bar.inc(1);
        let included = match point {
            Point::Vector(vector) => vector.contains(&header.author, header.seq),
            // An author's hlc only grows, but a cut per event is just as cheap and simpler.
            Point::Time(time) => hlc::millis(header.hlc) <= time.end(),
        };
        events += u64::from(included);
        included
    })?;
    bar.finish_and_clear();
    let cut = fold.seen.clone();
    let cases = fold.into_sorted_cases();
    let state_hash = StateHasher::of(&cases);
    let views: Vec<CaseView> = cases.iter().map(CaseView::of).collect();
    let point_json = match point {
        Point::Time(t) => json!({ "time": format_utc(t.end()), "time_ms": t.end() }),
        Point::Vector(v) => json!({ "vector": vector_json(v) }),
    };
    let mut text = match point {
        Point::Time(t) => format!("space {} at {}:\n", space.to_hex(), format_utc(t.end())),
        Point::Vector(_) => format!("space {} at the given vector:\n", space.to_hex()),
    };
    for view in &views {
        let fields: Vec<String> = view
            .fields
            .iter()
            .map(|f| {
                let conflict = if f.conflict.is_empty() { "" } else { " (conflict)" };
                format!("{}={}{conflict}", f.name, f.value.display())
            })
            .collect();
        text.push_str(&format!(
            "  {} {} {} entries={}{}\n",
            view.case_id,
            view.status.as_str(),
            fields.join(" "),
            view.entries.len(),
            if view.has_conflicts() { " CONFLICTS" } else { "" }
        ));
    }
    text.push_str(&format!("{} cases from {events} events\nstate hash {state_hash}", views.len()));
    let json = json!({
        "data": data.display().to_string(),
        "space": space.to_hex(),
        "point": point_json,
        "events": events,
        "included": vector_json(&cut),
        "state_hash": state_hash,
        "cases": views.iter().map(CaseJson::from).collect::<Vec<_>>(),
    });
    Ok(Outcome::new(true, json, text))
}
