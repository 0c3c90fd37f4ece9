//! Spaces: a relay that holds many practices' spaces serves a full sync of one of them. The
//! relay's store is preloaded directly (untimed) with `spaces` spaces of `events` events each,
//! every space founded by a founder of its own that grants the relay; node B, a member of the
//! first space only, then syncs it from the relay. The same sync from a relay that holds only
//! that space runs first, as the reference: the rate over it (`rate_ratio_to_one_space`), the
//! relay's CPU per event and every process's peak RSS show whether serving one practice costs
//! more when the relay holds many.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use casesync_engine::store::{Store, StoreOptions};
use casesync_node::config::{FileConfig, SpaceConfig};
use tokio::runtime::Runtime;

use crate::harness::Harness;
use crate::membership::BenchAdmin;
use crate::probe::{self, HeadsProbe};
use crate::report::{ProcessReport, ScenarioReport};
use crate::workload::{self, WorkloadSpec};

/// Parameters.
#[derive(Clone, Copy, Debug)]
pub struct SpacesOptions {
    /// Spaces the relay holds in the measured run (the reference holds one).
    pub spaces: usize,
    /// Events in each space.
    pub events: u64,
    /// Authors of each space's events.
    pub authors: usize,
}

/// Runs the reference (one space) and then the relay holding `spaces`; both reports carry the
/// ratio of their rate to the reference's.
pub fn run(h: &mut Harness, runtime: &Runtime, o: SpacesOptions) -> Vec<ScenarioReport> {
    let mut reports = Vec::new();
    for held in [1, o.spaces.max(1)] {
        let params = format!("spaces={held} events={} authors={}", o.events, o.authors);
        let report = measure(h, runtime, o, held).unwrap_or_else(|e| ScenarioReport::failed("spaces", params, &e));
        let cleaned = h.remove_scenario_dirs("spaces");
        reports.push(report);
        if let (Err(e), Some(last)) = (cleaned, reports.last_mut()) {
            last.note = format!("{} (cleaning up: {e:#})", last.note);
        }
        if o.spaces <= 1 {
            break;
        }
    }
    let reference = reports.first().filter(|r| r.ok).and_then(|r| r.get("events_per_s"));
    if let Some(reference) = reference {
        for report in reports.iter_mut().filter(|r| r.ok) {
            if let Some(rate) = report.get("events_per_s") {
                report.metric("rate_ratio_to_one_space", rate / reference, "x");
            }
        }
    }
    reports
}

fn measure(h: &mut Harness, runtime: &Runtime, o: SpacesOptions, held: usize) -> anyhow::Result<ScenarioReport> {
    let params = format!("spaces={held} events={} authors={}", o.events, o.authors);
    let setup = Instant::now();
    let relay = h.node("spaces", "relay", true, None)?;
    let spec = WorkloadSpec::new(o.events, o.authors);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    // The other practices: each founded by a founder of its own, who grants the relay.
    let mut config = FileConfig::load(&relay.dir)?;
    let mut others = Vec::with_capacity(held.saturating_sub(1));
    for index in 1..held {
        let index = u32::try_from(index).context("too many spaces")?;
        let founder = h.work.join("spaces").join(format!("founder-{index}"));
        let mut admin = BenchAdmin::other_space(&founder, index)?;
        admin.grant_node(&relay.key, "relay", true)?;
        admin.deliver_to(&relay.dir, true)?;
        config.spaces.push(SpaceConfig {
            name: format!("practice-{index}"),
            space: admin.space().to_hex(),
            peers: Vec::new(),
        });
        others.push(admin);
    }
    config.save(&relay.dir)?;

    // Every space's events, straight into the relay's store, as a relay that has served them.
    let mut preloaded = 0u64;
    {
        let store = Store::open(&relay.dir.join("db"), StoreOptions { projections: false, ..StoreOptions::default() })
            .context("opening the relay's store")?;
        store.write_without_wal();
        let spaces = std::iter::once(h.space).chain(others.iter().map(BenchAdmin::space));
        for space in spaces {
            preloaded += workload::preload(&store, space, spec, threads)?.events;
        }
        store.persist().context("flushing the relay's store")?;
        store.settle(Duration::from_secs(1800)).context("settling the relay's store")?;
    }
    let b = h.node("spaces", "b", false, None)?;
    h.introduce(&relay, &b)?;
    let total = o.events + h.membership_events();
    let mut report = ScenarioReport::new("spaces", params);
    report.metric("setup_seconds", setup.elapsed().as_secs_f64(), "s");
    report.metric("relay_events_held", preloaded as f64, "ev");

    let timeout = Duration::from_secs(120 + o.events / 5_000);
    let every = Duration::from_millis(10);
    let relay_daemon = h.bins.serve(&relay.dir, "relay", &[], true)?;
    let relay_before = relay_daemon.guard.usage()?;
    let launched = Instant::now();
    let node_b = h.bins.serve(&b.dir, "node-b", &[relay_daemon.sync_url()], false)?;
    let ready = Instant::now();
    let b_before = node_b.guard.usage()?;
    let mut heads = runtime.block_on(HeadsProbe::open(&node_b.sync_url(), h.probe.clone()))?;
    let done = runtime.block_on(heads.wait_for_events(total, every, timeout))?;
    let done = done.max(runtime.block_on(probe::wait_views_current(&node_b.api_url(), every, timeout))?);
    let usages =
        [("relay", relay_daemon.guard.usage()?.since(relay_before)), ("node-b", node_b.guard.usage()?.since(b_before))];
    let relay_events = runtime.block_on(async {
        let mut probe = HeadsProbe::open(&relay_daemon.sync_url(), h.probe.clone()).await?;
        anyhow::Ok(probe.heads().await?.total())
    })?;
    let status_b = runtime.block_on(probe::status(&node_b.api_url()))?;
    for daemon in [node_b, relay_daemon] {
        daemon.guard.stop(Duration::from_secs(10))?;
    }

    let secs = (done - ready).as_secs_f64();
    report.metric("seconds", secs, "s");
    report.metric("events_per_s", o.events as f64 / secs, "ev/s");
    report.metric("startup_seconds", (ready - launched).as_secs_f64(), "s");
    for (name, usage) in &usages {
        report.processes.push(ProcessReport::new(name, *usage));
        report.metric(
            &format!("{}_cpu_us_per_event", name.replace('-', "_")),
            usage.cpu_seconds * 1e6 / o.events.max(1) as f64,
            "us",
        );
    }
    let peak = usages.iter().map(|(_, u)| u.peak_rss_bytes).max().unwrap_or(0);
    report.metric("peak_rss_max_mib", peak as f64 / (1024.0 * 1024.0), "MiB");
    if relay_events != total || status_b.events != total {
        bail!("the relay holds {relay_events} and node B {} of the space's {total} events", status_b.events);
    }
    report.note = format!(
        "node B holds the space's {total} events; the relay {preloaded} preloaded events in {held} spaces; state hash {}",
        status_b.state_hash.get(..16).unwrap_or("")
    );
    report.ok = true;
    Ok(report)
}
