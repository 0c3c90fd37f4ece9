//! Catch-up: node A holds N events, node B none; B syncs them all, directly from A (`full`) or
//! through a relay (`relay`). Timed from the moment the last process started is ready (it has
//! unlocked its key with the PIN, opened its store and announced itself in `daemon.json`) until
//! B holds N events and its views are current; that start-up is reported beside, and the rate
//! counted from launching the process too.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::runtime::Runtime;

use crate::harness::Harness;
use crate::probe::{self, HeadsProbe};
use crate::report::{ProcessReport, ScenarioReport};
use crate::workload::WorkloadSpec;

/// Parameters.
#[derive(Clone, Copy, Debug)]
pub struct CatchUpOptions {
    /// Events on A.
    pub events: u64,
    /// Authors of those events.
    pub authors: usize,
    /// Through a relay.
    pub relay: bool,
}

/// Runs the scenario.
pub fn run(h: &mut Harness, runtime: &Runtime, o: CatchUpOptions) -> anyhow::Result<ScenarioReport> {
    let name = if o.relay { "relay" } else { "full" };
    let params = format!("events={} authors={}", o.events, o.authors);
    let spec = WorkloadSpec::new(o.events, o.authors);
    let (template, preload) = h.template(spec)?;
    let mut report = ScenarioReport::new(name, params);
    report.metric("preload_engine_ingest_events_per_s", preload.events as f64 / preload.elapsed.as_secs_f64(), "ev/s");
    report.metric("preload_seconds", preload.elapsed.as_secs_f64(), "s");
    report.metric("preload_views_seconds", preload.views.as_secs_f64(), "s");
    report.metric("preload_settle_seconds", preload.settle.as_secs_f64(), "s");

    let a = h.node(name, "a", false, Some(&template))?;
    let b = h.node(name, "b", false, None)?;
    let timeout = Duration::from_secs(120 + o.events / 5_000);
    // How often B's heads, then its views, are polled: the end of the sync is known to within
    // this (polling every 50 ms overstated every run by up to two intervals).
    let every = Duration::from_millis(10);

    let (elapsed, usages, hashes) = if o.relay {
        let r = h.node(name, "relay", true, None)?;
        h.introduce(&r, &a)?;
        h.introduce(&r, &b)?;
        let total = o.events + h.membership_events();
        let relay = h.bins.serve(&r.dir, "relay", &[], true)?;
        let node_b = h.bins.serve(&b.dir, "node-b", &[relay.sync_url()], false)?;
        let mut heads = runtime.block_on(HeadsProbe::open(&node_b.sync_url(), h.probe.clone()))?;
        let (relay_before, b_before) = (relay.guard.usage()?, node_b.guard.usage()?);
        let launched = Instant::now();
        let node_a = h.bins.serve(&a.dir, "node-a", &[relay.sync_url()], false)?;
        let ready = Instant::now();
        let done = runtime.block_on(heads.wait_for_events(total, every, timeout))?;
        let done = done.max(runtime.block_on(probe::wait_views_current(&node_b.api_url(), every, timeout))?);
        let elapsed = Window { launched, ready, done };
        let usages = vec![
            ("node-a", node_a.guard.usage()?),
            ("relay", relay.guard.usage()?.since(relay_before)),
            ("node-b", node_b.guard.usage()?.since(b_before)),
        ];
        let hashes = runtime.block_on(both_statuses(&node_a.api_url(), &node_b.api_url()))?;
        let relay_events = runtime.block_on(async {
            let mut probe = HeadsProbe::open(&relay.sync_url(), h.probe.clone()).await?;
            anyhow::Ok(probe.heads().await?.total())
        })?;
        if relay_events != total {
            bail!("the relay holds {relay_events} of {total} events");
        }
        for daemon in [node_a, node_b, relay] {
            daemon.guard.stop(Duration::from_secs(10))?;
        }
        (elapsed, usages, hashes)
    } else {
        h.introduce(&a, &b)?;
        let total = o.events + h.membership_events();
        let node_a = h.bins.serve(&a.dir, "node-a", &[], false)?;
        let a_before = node_a.guard.usage()?;
        let launched = Instant::now();
        let node_b = h.bins.serve(&b.dir, "node-b", &[node_a.sync_url()], false)?;
        let ready = Instant::now();
        let b_before = node_b.guard.usage()?;
        let mut heads = runtime.block_on(HeadsProbe::open(&node_b.sync_url(), h.probe.clone()))?;
        let done = runtime.block_on(heads.wait_for_events(total, every, timeout))?;
        let done = done.max(runtime.block_on(probe::wait_views_current(&node_b.api_url(), every, timeout))?);
        let elapsed = Window { launched, ready, done };
        let usages =
            vec![("node-a", node_a.guard.usage()?.since(a_before)), ("node-b", node_b.guard.usage()?.since(b_before))];
        let hashes = runtime.block_on(both_statuses(&node_a.api_url(), &node_b.api_url()))?;
        for daemon in [node_a, node_b] {
            daemon.guard.stop(Duration::from_secs(10))?;
        }
        (elapsed, usages, hashes)
    };

    let (status_a, status_b) = hashes;
    let secs = (elapsed.done - elapsed.ready).as_secs_f64();
    let with_startup = (elapsed.done - elapsed.launched).as_secs_f64();
    report.metric("seconds", secs, "s");
    report.metric("events_per_s", o.events as f64 / secs, "ev/s");
    report.metric("startup_seconds", (elapsed.ready - elapsed.launched).as_secs_f64(), "s");
    report.metric("events_per_s_with_startup", o.events as f64 / with_startup, "ev/s");
    report.metric("mb_per_s", preload.bytes as f64 / secs / 1e6, "MB/s");
    report.metric("event_bytes_avg", preload.bytes as f64 / preload.events.max(1) as f64, "B");
    for (name, usage) in &usages {
        report.processes.push(ProcessReport::new(name, *usage));
    }
    let peak = usages.iter().map(|(_, u)| u.peak_rss_bytes).max().unwrap_or(0);
    report.metric("peak_rss_max_mib", peak as f64 / (1024.0 * 1024.0), "MiB");
    let cpu_b: f64 = usages.iter().filter(|(n, _)| *n == "node-b").map(|(_, u)| u.cpu_seconds).sum();
    report.metric("node_b_cpu_us_per_event", cpu_b * 1e6 / o.events.max(1) as f64, "us");
    check_agree(&mut report, o.events + h.membership_events(), &status_a, &status_b)?;
    Ok(report)
}

/// The status of two nodes, asked at once: each hashes its whole state (15 s at 10M events),
/// on a core of its own.
async fn both_statuses(
    a: &probe::Api,
    b: &probe::Api,
) -> anyhow::Result<(casesync_proto::v1::NodeStatus, casesync_proto::v1::NodeStatus)> {
    tokio::try_join!(probe::status(a), probe::status(b))
}

/// When the last process was launched, when it was ready, and when B held every event.
struct Window {
    launched: Instant,
    ready: Instant,
    done: Instant,
}

/// Both nodes hold `events` events (the workload's and the membership's) and the same state
/// hash.
pub fn check_agree(
    report: &mut ScenarioReport,
    events: u64,
    a: &casesync_proto::v1::NodeStatus,
    b: &casesync_proto::v1::NodeStatus,
) -> anyhow::Result<()> {
    if a.events != events || b.events != events {
        bail!("event counts differ: expected {events}, A has {}, B has {}", a.events, b.events);
    }
    if a.state_hash != b.state_hash || a.state_hash.is_empty() {
        bail!("state hashes differ: A {} B {}", a.state_hash, b.state_hash);
    }
    report.note = format!("{} events on both, state hash {}", events, a.state_hash.get(..16).unwrap_or(""));
    report.ok = true;
    Ok(())
}
