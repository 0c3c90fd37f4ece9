//! Hostile floods: a target node (a real `casesync serve`) in the bench space, an honest member
//! node that syncs a fixed workload with it, and a hostile member (this process, holding writer
//! keys the founder granted) that floods the target over real gRPC and TLS while the honest sync
//! runs. Each flood gets a fresh target and honest node, so each peak RSS is that flood's; a run
//! without a flood comes first and is the rate each flood's honest sync is compared with.
//!
//! The flood starts first; the honest node is launched once the flood is under way (its first
//! batch sent, or every connection of a connection flood opened) and dials the target, so it
//! meets the flood from its first connection on. The honest sync is timed from the honest
//! node's readiness until the target's heads hold every honest event; the flood is then told to
//! stop, and the target's views, status and (after it stops) `replay-tool verify` are read.
//!
//! The target's peak RSS is reported over its whole life (what the node's memory bound is
//! about) and, apart, from just after its start: the start-up peak is the PIN unlock's argon2id
//! (128 MiB), so the flood's own peak is read after resetting the process's VmHWM.

mod floods;
mod member;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::limits::FORK_EVIDENCE_PER_AUTHOR_MAX;
use casesync_engine::model::vector_clock::VersionVector;
use tokio::runtime::Runtime;

pub use floods::{Flood, FloodSizes};

use crate::harness::Harness;
use crate::probe::{self, HeadsProbe};
use crate::process::ChildGuard;
use crate::report::{ProcessReport, ScenarioReport};
use crate::workload::WorkloadSpec;

/// The memory bound the project promises per node, MiB (reported against, never asserted).
pub const NODE_MEMORY_BOUND_MIB: f64 = 256.0;

/// How long a flood may run at most.
const FLOOD_DEADLINE: Duration = Duration::from_secs(300);
/// How long a flood may take to get under way.
const FLOOD_START_MAX: Duration = Duration::from_secs(60);
/// How long a flood's tasks may take to end once told to stop.
const FLOOD_END_MAX: Duration = Duration::from_secs(120);
/// How long the target's views may take to catch up once the flood stopped.
const VIEWS_MAX: Duration = Duration::from_secs(300);
/// How long an honest sync may take in quick mode.
const QUICK_SYNC_MAX: Duration = Duration::from_secs(10);
/// How long an honest sync that a flood kept from completing may take once the flood stopped
/// (the honest node retries a failed session after at most 30 s).
const RECOVERY_MAX: Duration = Duration::from_secs(60);
/// How often heads are polled.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Parameters.
#[derive(Clone, Debug)]
pub struct HostileOptions {
    /// Events of the honest workload.
    pub events: u64,
    /// Its authors.
    pub authors: usize,
    /// Small floods (for tests).
    pub quick: bool,
    /// The floods to run, after the run without one.
    pub floods: Vec<Flood>,
}

impl HostileOptions {
    /// The report's parameters.
    pub fn params(&self) -> String {
        format!("events={} authors={} quick={}", self.events, self.authors, self.quick)
    }
}

/// Runs the run without a flood, then each flood; one report each (a flood that could not be
/// run reports its error).
pub fn run(h: &mut Harness, runtime: &Runtime, o: &HostileOptions) -> Vec<ScenarioReport> {
    let sizes = FloodSizes::new(o.quick);
    let mut reports = Vec::new();
    let prepared = prepare(h, o, &sizes);
    let template = match prepared {
        Ok(template) => template,
        Err(error) => {
            reports.push(ScenarioReport::failed("hostile-no-flood", o.params(), &error));
            return reports;
        }
    };
    let mut baseline = None;
    for flood in std::iter::once(None).chain(o.floods.iter().copied().map(Some)) {
        let name = format!("hostile-{}", flood.map_or("no-flood", Flood::name));
        let report = measure(h, runtime, o, &sizes, &template, flood, baseline)
            .unwrap_or_else(|e| ScenarioReport::failed(&name, o.params(), &e));
        if flood.is_none() {
            baseline = report.get("honest_events_per_s");
        }
        reports.push(report);
        let _ = std::fs::remove_dir_all(h.work.join(&name));
    }
    reports
}

/// Grants the hostile keys (before any node is made, so every node knows them) and makes the
/// honest workload's log.
fn prepare(h: &mut Harness, o: &HostileOptions, sizes: &FloodSizes) -> anyhow::Result<std::path::PathBuf> {
    let keys = Flood::ALL.iter().flat_map(|f| f.keys(sizes)).max().map_or(0, |k| k + 1);
    anyhow::ensure!(keys <= member::HOSTILE_KEYS_MAX, "at most {} hostile keys", member::HOSTILE_KEYS_MAX);
    for index in 0..keys {
        h.grant_writer(member::hostile_key(index).author(), &format!("hostile-{index}"))?;
    }
    Ok(h.template(WorkloadSpec::new(o.events, o.authors))?.0)
}

/// Every honest author and the seq the target must hold of it.
fn honest_heads(o: &HostileOptions) -> Vec<(AuthorId, u64)> {
    let spec = WorkloadSpec::new(o.events, o.authors);
    (0..spec.authors).map(|i| (spec.key(i).author(), spec.events_of(i))).collect()
}

fn holds_all(vector: &VersionVector, wanted: &[(AuthorId, u64)]) -> bool {
    wanted.iter().all(|(author, seq)| vector.get(author) >= *seq)
}

/// Polls the target's heads until they hold every honest event; fails after `timeout`.
async fn wait_for_honest(
    heads: &mut HeadsProbe,
    wanted: &[(AuthorId, u64)],
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut held = 0;
    loop {
        if let Ok(vector) = heads.heads().await {
            if holds_all(&vector, wanted) {
                return Ok(Instant::now());
            }
            held = wanted.iter().map(|(author, seq)| vector.get(author).min(*seq)).sum::<u64>();
        }
        if Instant::now() > deadline {
            let total: u64 = wanted.iter().map(|(_, seq)| seq).sum();
            anyhow::bail!("the target holds {held} of {total} honest events after {timeout:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits, polling every 10 ms up to `timeout`, until the flood is under way.
fn wait_under_way(control: &floods::Control, wanted: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while control.under_way() < wanted {
        anyhow::ensure!(Instant::now() < deadline, "the flood was not under way after {timeout:?}");
        std::thread::sleep(POLL_EVERY);
    }
    Ok(())
}

/// `replay-tool verify` of a stopped node's data dir (bounded in time): whether it found no
/// damage, and the end of what it printed.
fn verify(h: &Harness, data: &Path) -> anyhow::Result<Option<(bool, String)>> {
    let Some(tool) = &h.bins.replay_tool else { return Ok(None) };
    let mut command = Command::new(tool);
    command.arg("--json").arg("verify").arg("--data").arg(data).env("CASESYNC_PIN", crate::membership::BENCH_PIN);
    let log = data.with_extension("verify.log");
    let child = ChildGuard::spawn("replay-tool verify", command, &log)?;
    let (ok, _, _) = child.wait_sampling(Duration::from_secs(600))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = text.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
    Ok(Some((ok, tail.trim().to_string())))
}

#[allow(clippy::too_many_arguments)]
fn measure(
    h: &mut Harness,
    runtime: &Runtime,
    o: &HostileOptions,
    sizes: &FloodSizes,
    template: &Path,
    flood: Option<Flood>,
    baseline: Option<f64>,
) -> anyhow::Result<ScenarioReport> {
    let name = format!("hostile-{}", flood.map_or("no-flood", Flood::name));
    let mut report = ScenarioReport::new(&name, o.params());
    let target = h.node(&name, "target", false, None)?;
    let honest = h.node(&name, "honest", false, Some(template))?;
    h.introduce(&target, &honest)?;
    let node_t = h.bins.serve(&target.dir, "target", &[], false)?;
    // The unlock's argon2id (128 MiB) sets the start-up peak; the flood's is read apart from it.
    let t_before = node_t.guard.usage()?;
    crate::process::reset_peak_rss(node_t.guard.pid())?;
    // The harness's own connection, made before any flood, so a connection flood leaves it be.
    let mut heads = runtime.block_on(HeadsProbe::open(&node_t.sync_url(), h.probe.clone()))?;

    let control = Arc::new(floods::Control::default());
    let flood_task = flood.map(|f| {
        let deadline = Instant::now() + FLOOD_DEADLINE;
        runtime.spawn(floods::run(f, node_t.sync_url(), h.space, *sizes, control.clone(), deadline))
    });
    if let Some(f) = flood {
        let wanted = if f == Flood::Connections { sizes.connections as u64 } else { 1 };
        wait_under_way(&control, wanted, FLOOD_START_MAX)?;
    }

    let wanted = honest_heads(o);
    let timeout = if o.quick { QUICK_SYNC_MAX } else { Duration::from_secs(120 + o.events / 1_000) };
    let node_h = h.bins.serve(&honest.dir, "honest", &[node_t.sync_url()], false)?;
    let ready = Instant::now();
    let h_before = node_h.guard.usage()?;
    let synced = runtime.block_on(wait_for_honest(&mut heads, &wanted, timeout));
    let outlasted = flood_task.as_ref().map(|task| !task.is_finished());
    control.stop();
    let outcome = match flood_task {
        Some(task) => Some(
            runtime
                .block_on(async { tokio::time::timeout(FLOOD_END_MAX, task).await })
                .context("the flood did not end when told to")?
                .context("the flood's task failed")?,
        ),
        None => None,
    };
    let stopped = Instant::now();
    // A sync the flood kept from completing: how long it takes once the flood is gone.
    let recovered = synced.is_err().then(|| runtime.block_on(wait_for_honest(&mut heads, &wanted, RECOVERY_MAX)));
    let views = runtime.block_on(probe::wait_views_current(&node_t.api_url(), POLL_EVERY, VIEWS_MAX));
    let status = runtime.block_on(probe::status(&node_t.api_url()))?;
    let vector = runtime.block_on(heads.heads())?;
    let usages = [("target", node_t.guard.usage()?.since(t_before)), ("honest", node_h.guard.usage()?.since(h_before))];
    node_h.guard.stop(Duration::from_secs(10))?;
    node_t.guard.stop(Duration::from_secs(10))?;
    let verified = verify(h, &target.dir)?;

    let honest_events: u64 = wanted.iter().map(|(_, seq)| seq).sum();
    let mut notes = Vec::new();
    let mut ok = true;
    match &synced {
        Ok(done) => {
            let secs = (*done - ready).as_secs_f64();
            let rate = honest_events as f64 / secs;
            report.metric("honest_completed", 1.0, "bool");
            report.metric("honest_seconds", secs, "s");
            report.metric("honest_events_per_s", rate, "ev/s");
            if let (Some(base), Some(_)) = (baseline, flood) {
                report.metric("honest_rate_of_no_flood", rate / base, "ratio");
            }
            notes.push(format!("honest sync of {honest_events} events completed in {secs:.2} s"));
        }
        Err(error) => {
            ok = false;
            report.metric("honest_completed", 0.0, "bool");
            notes.push(format!("HONEST SYNC DID NOT COMPLETE during the flood: {error:#}"));
            match recovered {
                Some(Ok(at)) => {
                    let secs = at.saturating_duration_since(stopped).as_secs_f64();
                    report.metric("honest_seconds_after_flood_stopped", secs, "s");
                    notes.push(format!("it completed {secs:.2} s after the flood stopped"));
                }
                Some(Err(error)) => notes.push(format!("nor after the flood stopped: {error:#}")),
                None => {}
            }
        }
    }
    let mut target_usage = usages[0].1;
    let flood_peak_mib = target_usage.peak_rss_bytes as f64 / (1024.0 * 1024.0);
    target_usage.peak_rss_bytes = target_usage.peak_rss_bytes.max(t_before.peak_rss_bytes);
    let peak_mib = target_usage.peak_rss_bytes as f64 / (1024.0 * 1024.0);
    report.metric("target_peak_rss_mib", peak_mib, "MiB");
    report.metric("target_peak_rss_after_start_mib", flood_peak_mib, "MiB");
    report.metric("target_startup_peak_rss_mib", t_before.peak_rss_bytes as f64 / (1024.0 * 1024.0), "MiB");
    report.metric("node_memory_bound_mib", NODE_MEMORY_BOUND_MIB, "MiB");
    report.metric("target_peak_rss_of_bound", peak_mib / NODE_MEMORY_BOUND_MIB, "ratio");
    report.metric("target_cpu_seconds", target_usage.cpu_seconds, "s");
    report.processes.push(ProcessReport::new("target", target_usage));
    report.processes.push(ProcessReport::new("honest", usages[1].1));
    match views {
        Ok(at) => report.metric(
            "target_views_current_after_flood_s",
            at.saturating_duration_since(stopped).as_secs_f64(),
            "s",
        ),
        Err(error) => notes.push(format!("views not current: {error:#}")),
    }
    report.metric("target_events", status.events as f64, "ev");
    let evidence: u64 = status.forked.iter().map(|f| f.evidence).sum();
    report.metric("target_fork_evidence", evidence as f64, "ev");
    report.metric("target_quarantined_devices", status.forked.iter().filter(|f| f.quarantined).count() as f64, "dev");
    if let Some(f) = flood {
        let stored: u64 = floods::authors(f, sizes).iter().map(|a| vector.get(a)).sum();
        report.metric("target_flood_events_stored", stored as f64, "ev");
        ok &= describe_flood(&mut report, &mut notes, f, outcome.unwrap_or_default(), outlasted, stored, evidence);
    }
    if !status.forked.is_empty() {
        let forked: Vec<String> = status
            .forked
            .iter()
            .map(|f| {
                format!(
                    "{} from seq {} ({} evidence, quarantined {})",
                    f.device, f.first_seq, f.evidence, f.quarantined
                )
            })
            .collect();
        notes.push(format!("forked: {}", forked.join(", ")));
    }
    match verified {
        Some((true, _)) => notes.push("replay-tool verify: no damage".into()),
        Some((false, tail)) => {
            ok = false;
            notes.push(format!("REPLAY-TOOL VERIFY FAILED: {tail}"));
        }
        None => notes.push("replay-tool verify not run (no replay-tool binary)".into()),
    }
    report.note = notes.join("; ");
    report.ok = ok;
    Ok(report)
}

/// The flood's own metrics and notes; false when the target kept more than it promises (more
/// fork evidence than its bound, or a quarantined author's events).
fn describe_flood(
    report: &mut ScenarioReport,
    notes: &mut Vec<String>,
    flood: Flood,
    outcome: floods::FloodOutcome,
    outlasted: Option<bool>,
    stored: u64,
    evidence: u64,
) -> bool {
    let mut ok = true;
    report.metric("flood_seconds", outcome.seconds, "s");
    report.metric("flood_outlasted_honest_sync", f64::from(u8::from(outlasted.unwrap_or(false))), "bool");
    if flood == Flood::Connections {
        report.metric("flood_connections_opened", outcome.connections_opened as f64, "conn");
        report.metric("flood_connections_held_max", outcome.connections_held_max as f64, "conn");
        report.metric("flood_connections_closed_at_once", outcome.connections_closed_at_once as f64, "conn");
        report.metric("flood_connections_closed_later", outcome.connections_closed_later as f64, "conn");
        notes.push(format!(
            "sent: {} TCP connections opened without a handshake, {} held at once at most; the target closed {} within 1 s and {} later",
            outcome.connections_opened,
            outcome.connections_held_max,
            outcome.connections_closed_at_once,
            outcome.connections_closed_later
        ));
    } else {
        report.metric("flood_events_sent", outcome.events_sent as f64, "ev");
        report.metric("flood_mib_sent", outcome.bytes_sent as f64 / (1024.0 * 1024.0), "MiB");
        report.metric("flood_pushes", outcome.pushes as f64, "calls");
        report.metric("flood_accepted", outcome.accepted as f64, "ev");
        report.metric("flood_duplicates", outcome.duplicates as f64, "ev");
        notes.push(format!(
            "sent: {} events, {:.1} MiB in {} pushes over {:.1} s; replies counted {} accepted, {} duplicates; stored {}",
            outcome.events_sent,
            outcome.bytes_sent as f64 / (1024.0 * 1024.0),
            outcome.pushes,
            outcome.seconds,
            outcome.accepted,
            outcome.duplicates,
            stored
        ));
    }
    report.metric("flood_refusals", outcome.refusals.total() as f64, "calls");
    notes.push(format!("refusals: {}", outcome.refusals.describe()));
    if flood == Flood::Forks {
        if evidence > FORK_EVIDENCE_PER_AUTHOR_MAX as u64 {
            ok = false;
            notes.push(format!("MORE FORK EVIDENCE THAN THE BOUND: {evidence} > {FORK_EVIDENCE_PER_AUTHOR_MAX}"));
        }
        if stored > floods::FORK_CHAIN_EVENTS {
            ok = false;
            notes.push(format!("A QUARANTINED AUTHOR'S EVENTS WERE STORED: {stored} > {}", floods::FORK_CHAIN_EVENTS));
        }
    }
    ok
}
