//! Rebuild, export and import of N events. The rebuild is measured in process through the engine
//! (`Store::rebuild_projections`) and, with export and import, through the `replay-tool` binary
//! when it is built next to `casesync`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use casesync_engine::model::state_hash::StateHasher;
use casesync_engine::store::{Store, StoreOptions};

use crate::casesync_bin::copy_flat_dir;
use crate::harness::Harness;
use crate::membership::bench_recipients;
use crate::process::ChildGuard;
use crate::report::{ProcessReport, ScenarioReport};
use crate::workload::WorkloadSpec;

/// Parameters.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Events in the log.
    pub events: u64,
    /// Authors.
    pub authors: usize,
}

/// Runs the scenario.
pub fn run(h: &mut Harness, o: ReplayOptions) -> anyhow::Result<ScenarioReport> {
    let mut report = ScenarioReport::new("replay", format!("events={} authors={}", o.events, o.authors));
    let (template, preload) = h.template(WorkloadSpec::new(o.events, o.authors))?;
    let mb = preload.bytes as f64 / 1e6;

    // In process: the engine's rebuild over a copy of the log.
    let copy = h.work.join("replay").join("engine-db");
    let _ = std::fs::remove_dir_all(&copy);
    copy_flat_dir(&template, &copy)?;
    let (expected, secs) = {
        let store = Store::open_unlocked(&copy, StoreOptions::compatible(), bench_recipients(h.space))
            .context("opening the copy")?;
        let before = store.state_hash(&h.space)?;
        // The fold of a rebuild on its own: read the log in place and fold it in memory (one
        // core, no writes), then check the views it gives against the stored ones.
        let started = Instant::now();
        let fold = store.fold_log(&h.space, |_| true)?;
        let fold_secs = started.elapsed().as_secs_f64();
        let cases = fold.into_sorted_cases();
        let folded = StateHasher::of(&cases);
        if folded != before {
            bail!("the fold of the log gives another state hash: {folded}, stored {before}");
        }
        drop(cases);
        report.metric("engine_fold_from_log_seconds", fold_secs, "s");
        report.metric("engine_fold_from_log_events_per_s", o.events as f64 / fold_secs, "ev/s");
        let started = Instant::now();
        let rebuilt = store.rebuild_projections(&h.space)?;
        let secs = started.elapsed().as_secs_f64();
        if rebuilt != before {
            bail!("rebuild changed the state hash: {before} -> {rebuilt}");
        }
        (before, secs)
    };
    report.metric("engine_rebuild_seconds", secs, "s");
    report.metric("engine_rebuild_events_per_s", o.events as f64 / secs, "ev/s");
    report.metric("engine_rebuild_mb_per_s", mb / secs, "MB/s");

    let Some(tool) = h.bins.replay_tool.clone() else {
        report.ok = true;
        report.note = "replay-tool is not built next to casesync: only the in-process rebuild was measured".into();
        return Ok(report);
    };
    let a = h.node("replay", "a", false, Some(&template))?;
    // The migration path (docs/backup-format.md): import into the new computer's empty data dir,
    // and, for comparison, into a node's store that holds no events yet (`casesync init` first).
    let c = h.work.join("replay").join("c");
    let _ = std::fs::remove_dir_all(&c);
    let d = h.node("replay", "d", false, None)?;
    let backup = h.work.join("replay").join("backup.bin");
    let _ = std::fs::remove_file(&backup);
    let timeout = Duration::from_secs(120 + o.events / 2_000);
    let steps: [(&str, Vec<String>); 4] = [
        ("rebuild", vec!["--json".into(), "rebuild".into(), "--data".into(), a.dir.display().to_string()]),
        (
            "export",
            vec![
                "export".into(),
                "--data".into(),
                a.dir.display().to_string(),
                "--out".into(),
                backup.display().to_string(),
            ],
        ),
        ("import", vec!["import".into(), "--data".into(), c.display().to_string(), backup.display().to_string()]),
        (
            "import_into_init",
            vec!["import".into(), "--data".into(), d.dir.display().to_string(), backup.display().to_string()],
        ),
    ];
    for (step, args) in steps {
        let mut command = Command::new(&tool);
        command.args(&args).env("CASESYNC_PIN", crate::membership::BENCH_PIN);
        let log = h.work.join("replay").join(format!("{step}.log"));
        let guard = ChildGuard::spawn(&format!("replay-tool {step}"), command, &log)?;
        let (success, usage, elapsed) = guard.wait_sampling(timeout)?;
        if !success {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("replay-tool {step} failed: {}", text.trim());
        }
        let secs = elapsed.as_secs_f64();
        report.metric(&format!("tool_{step}_seconds"), secs, "s");
        report.metric(&format!("tool_{step}_events_per_s"), o.events as f64 / secs, "ev/s");
        report.metric(&format!("tool_{step}_mb_per_s"), mb / secs, "MB/s");
        report.processes.push(ProcessReport::new(&format!("replay-tool {step}"), usage));
        // The rebuild as the tool times it: after starting, unlocking the device key with the
        // PIN (argon2id, a fixed ~0.4 s) and opening the store.
        if let Some(own) = reported_seconds(&log).filter(|s| *s > 0.0) {
            report.metric(&format!("tool_{step}_own_seconds"), own, "s");
            report.metric(&format!("tool_{step}_own_events_per_s"), o.events as f64 / own, "ev/s");
        }
    }
    if let Ok(meta) = std::fs::metadata(&backup) {
        report.metric("backup_mb", meta.len() as f64 / 1e6, "MB");
    }
    for (dir, what) in [(&a.dir, "rebuilt"), (&c, "imported"), (&d.dir, "imported into an initialised node")] {
        let (events, hash) = open_and_hash(&dir.join("db"), h)?;
        if events != o.events || hash != expected {
            bail!("the {what} log holds {events} events, state hash {hash}; expected {} and {expected}", o.events);
        }
    }
    report.ok = true;
    report.note = format!(
        "rebuilt and imported logs match: {} events, state hash {}",
        o.events,
        expected.get(..16).unwrap_or("")
    );
    Ok(report)
}

/// The `seconds` of the JSON document a `replay-tool --json` run printed into `log`.
fn reported_seconds(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let document = text.get(text.find('{')?..=text.rfind('}')?)?;
    serde_json::from_str::<serde_json::Value>(document).ok()?.get("seconds")?.as_f64()
}

fn open_and_hash(db: &Path, h: &Harness) -> anyhow::Result<(u64, String)> {
    // With the probe's key: an import without the data dir's key folds no sealed body and
    // marks the key it missed, so this open folds them (as a node's first unlocked open does).
    let store = Store::open_unlocked(db, StoreOptions::compatible(), bench_recipients(h.space))
        .with_context(|| format!("opening {}", db.display()))?;
    // Scanned: the stored projections themselves, not the hash a bulk load remembered. The
    // workload's events: membership events (a node's grants differ) not counted.
    let membership = store.membership(&h.space).records().count() as u64;
    Ok((store.vector(&h.space).total() - membership, store.scanned_state_hash(&h.space)?))
}
