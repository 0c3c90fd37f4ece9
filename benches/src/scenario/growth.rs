//! Growth: the full sync at several log sizes and author counts, to show whether the cost per
//! event depends on the size of the log. For each author count, each size runs the `full`
//! catch-up (node A holds N events, node B none) and reports its rate, node B's CPU per event
//! and every node's peak RSS, with the rate at the reference size (1M when measured) beside it
//! as a ratio. Each template is removed once its size ran (unless kept), so the disk holds one
//! large log at a time.

use std::time::Instant;

use tokio::runtime::Runtime;

use crate::harness::Harness;
use crate::report::ScenarioReport;
use crate::scenario::catch_up::{self, CatchUpOptions};
use crate::workload::WorkloadSpec;

/// The size whose rate every other size is compared with, when it is among the sizes.
pub const REFERENCE_EVENTS: u64 = 1_000_000;

/// Parameters.
#[derive(Clone, Debug)]
pub struct GrowthOptions {
    /// Log sizes (events on node A).
    pub sizes: Vec<u64>,
    /// Author counts.
    pub authors: Vec<usize>,
    /// Keep each preloaded template in the work dir (reused by a later run with `--work-dir`).
    pub keep_templates: bool,
}

/// Runs every (authors, size) pair, author count by author count, smallest size first.
pub fn run(h: &mut Harness, runtime: &Runtime, o: &GrowthOptions) -> Vec<ScenarioReport> {
    let mut sizes = o.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let mut reports = Vec::new();
    for &authors in &o.authors {
        let first = reports.len();
        for &events in &sizes {
            reports.push(one(h, runtime, events, authors, o.keep_templates));
        }
        let ours = &mut reports[first..];
        let reference = ours
            .iter()
            .find(|r| r.ok && r.get("events").is_some_and(|n| n as u64 == REFERENCE_EVENTS))
            .and_then(|r| r.get("events_per_s"));
        if let Some(reference) = reference {
            for report in ours.iter_mut().filter(|r| r.ok) {
                if let Some(rate) = report.get("events_per_s") {
                    report.metric("rate_ratio_to_1m", rate / reference, "x");
                }
            }
        }
    }
    reports
}

fn one(h: &mut Harness, runtime: &Runtime, events: u64, authors: usize, keep: bool) -> ScenarioReport {
    let params = format!("events={events} authors={authors}");
    let started = Instant::now();
    let outcome = catch_up::run(h, runtime, CatchUpOptions { events, authors, relay: false });
    let mut report = match outcome {
        Ok(mut report) => {
            report.name = "growth".to_string();
            report.params = params;
            report.metric("events", events as f64, "ev");
            report.metric("wall_seconds_with_preload", started.elapsed().as_secs_f64(), "s");
            report
        }
        Err(e) => ScenarioReport::failed("growth", params, &e),
    };
    let spec = WorkloadSpec::new(events, authors);
    let removed = h.remove_scenario_dirs("full").and_then(|()| if keep { Ok(()) } else { h.remove_template(spec) });
    if let Err(e) = removed {
        report.note = format!("{} (cleaning up: {e:#})", report.note);
    }
    report
}
