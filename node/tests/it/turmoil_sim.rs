//! A seeded simulation of real nodes over turmoil's simulated network: 3 to 5 nodes (a founding
//! admin, writers, maybe a relay and a reader), each a real `Node` on a data dir of its own
//! with its sync server, TLS between device keys, live sessions, scheduled heads checks and
//! backoff as it runs them, but every connection on turmoil's network in simulated time. Case
//! commands go to random nodes through their local API; partitions (two-way and one-way) and
//! holds come and heal; nodes crash (their runtime and every task dropped, the data dir kept)
//! and restart.
//!
//! After the final heal (liveness) every node must hold one version vector, with current views
//! and one state hash, within [`world::LIVENESS_BOUND`] of simulated time; then (safety) every
//! command a node acknowledged is on every node, and no reader's or relay's command was
//! acknowledged. turmoil drops a partitioned link's segments for good (there is no
//! retransmission): a connection that lost one is stuck until something notices, as a real
//! connection through a healed partition stays stuck for most of a minute. HTTP/2 keep-alive
//! is what notices; [`without_http2_keep_alive_a_channel_stays_stuck_after_a_one_way_partition_heals`]
//! shows the liveness check fails without it.
//!
//! Every choice of the simulation comes from the run's seed (turmoil's too). A failure prints
//! its seed; `CASESYNC_TURMOIL_SEED=<seed>` replays one with its trace printed;
//! `CASESYNC_TURMOIL_SEEDS=<n>` (from `CASESYNC_TURMOIL_FIRST`, default 0) runs n seeds as a
//! soak. A replay is not exact: each node's ingest thread and disk syncs run in real time while
//! simulated time goes on, so a command can find its case already synced in one run and not yet
//! in another. The same seed gives the same commands, faults and verdict (measured with
//! `CASESYNC_TURMOIL_REPEAT=<k>`, which runs each seed k times and counts the seeds whose
//! traces differ); device keys, case ids and clocks are not seeded, so state hashes differ
//! between runs. `CASESYNC_TURMOIL_KEEP_ALIVE=off` runs the seeds with the sync channels'
//! keep-alive off.

mod host;
mod network;
mod world;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use host::Order;
use world::{CutKind, Settings, Stats, World};

/// Seeds a suite run takes.
const SUITE_SEEDS: u64 = 80;
/// Random steps in a run, before the final heal.
const STEPS: std::ops::RangeInclusive<u64> = 30..=60;

/// What a run did and its trace (compared between two runs of one seed).
struct Outcome {
    stats: Stats,
    trace: Vec<String>,
}

fn run(seed: u64, settings: Settings, verbose: bool) -> Outcome {
    let mut world = World::new(seed, settings, verbose);
    let steps = STEPS.start() + world.rng.below(STEPS.end() - STEPS.start() + 1);
    for _ in 0..steps {
        world.random_step();
    }
    if let Err(why) = world.heal_and_converge() {
        panic!("{why}");
    }
    world.check_safety();
    Outcome { stats: world.stats.clone(), trace: world.trace.clone() }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// [`run`]; a failure names its seed and how to replay it.
fn run_seed(seed: u64, settings: Settings, verbose: bool) -> Result<Outcome, String> {
    let keep_alive = if settings.keep_alive { "" } else { "CASESYNC_TURMOIL_KEEP_ALIVE=off " };
    catch_unwind(AssertUnwindSafe(|| run(seed, settings, verbose))).map_err(|panic| {
        format!(
            "turmoil simulation seed {seed} failed: {}\nreplay it: {keep_alive}CASESYNC_TURMOIL_SEED={seed} cargo test -p casesync-node --test it turmoil_sim::seeded -- --nocapture",
            panic_message(panic)
        )
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is not a number: {v:?}")))
}

/// What runs of many seeds did.
#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    hosts: usize,
    orders: u64,
    acknowledged: u64,
    refused: u64,
    partitions: u64,
    one_way: u64,
    holds: u64,
    crashes: u64,
    simulated: std::time::Duration,
    /// The longest time from a final heal to agreement (simulated).
    slowest_agreement: std::time::Duration,
}

impl Totals {
    fn add(&mut self, s: &Stats) {
        self.seeds += 1;
        self.hosts += s.hosts;
        self.orders += s.orders;
        self.acknowledged += s.acknowledged;
        self.refused += s.refused;
        self.partitions += s.partitions;
        self.one_way += s.one_way;
        self.holds += s.holds;
        self.crashes += s.crashes;
        self.simulated += s.simulated;
        self.slowest_agreement = self.slowest_agreement.max(s.converged_after);
    }
}

/// Seeded runs of real nodes over a simulated network with partitions (one-way ones too),
/// holds, crashes and restarts converge after the final heal within a bounded simulated time,
/// and keep every acknowledged command. (`CASESYNC_TURMOIL_KEEP_ALIVE=off` runs them with the
/// sync channels' keep-alive off, to see which seeds then fail.)
#[test]
fn seeded_runs_of_real_nodes_over_a_simulated_network_converge_and_keep_every_acknowledged_command() {
    let (seeds, verbose) = match (env_u64("CASESYNC_TURMOIL_SEED"), env_u64("CASESYNC_TURMOIL_SEEDS")) {
        (Some(seed), _) => (seed..seed + 1, true),
        (None, Some(count)) => {
            let first = env_u64("CASESYNC_TURMOIL_FIRST").unwrap_or(0);
            (first..first + count, false)
        }
        (None, None) => (0..SUITE_SEEDS, false),
    };
    let keep_alive = std::env::var("CASESYNC_TURMOIL_KEEP_ALIVE").map_or(true, |v| v != "off");
    let settings = Settings { keep_alive, ..Settings::default() };
    // Runs each seed this many times and counts the seeds whose traces differ (the nodes' own
    // threads and disk syncs run in real time, so a seed need not replay exactly).
    let repeat = env_u64("CASESYNC_TURMOIL_REPEAT").unwrap_or(1).max(1);
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    let mut differing = 0;
    for seed in seeds.clone() {
        let runs: Vec<Result<Outcome, String>> = (0..repeat).map(|_| run_seed(seed, settings, verbose)).collect();
        let traces: Vec<Option<&Vec<String>>> = runs.iter().map(|r| r.as_ref().ok().map(|o| &o.trace)).collect();
        if traces.iter().any(|t| *t != traces[0]) {
            differing += 1;
            let verdicts: Vec<bool> = runs.iter().map(|r| r.is_ok()).collect();
            let other = traces.iter().find(|t| **t != traces[0]).copied().flatten();
            let first = traces[0].zip(other).and_then(|(a, b)| a.iter().zip(b).find(|(x, y)| x != y));
            println!("seed {seed}: the runs' traces differ (passed: {verdicts:?}), first at {first:?}");
        }
        for run in runs {
            match run {
                Ok(outcome) => totals.add(&outcome.stats),
                Err(failure) => {
                    eprintln!("{failure}");
                    failures.push(failure);
                }
            }
        }
    }
    if repeat > 1 {
        println!("{differing} of {} seeds gave differing traces in {repeat} runs", seeds.end - seeds.start);
    }
    println!(
        "turmoil simulation, seeds {}..{} (keep-alive {}): {:.1} s; {} failed; passed: {totals:?}",
        seeds.start,
        seeds.end,
        if keep_alive { "on" } else { "off" },
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} of the seeds failed:\n{}", failures.len(), failures.join("\n"));
}

/// One scripted run: a reader whose only peer is a writer; the link from the writer to the
/// reader is cut one way while the writer writes, then healed. The reader writes nothing and
/// has no scheduled heads check, so only its channel's keep-alive can notice that the
/// connection lost segments for good.
fn one_way_cut_then_quiet(keep_alive: bool) -> Result<Stats, String> {
    const SEED: u64 = 7;
    let settings = Settings { keep_alive, scheduled_pulls: false };
    let mut world =
        World::scripted(SEED, settings, &[("admin", None), ("writer1", Some("admin")), ("reader", Some("writer1"))]);
    world.advance(std::time::Duration::from_secs(1));
    world.command(1, Order::Create { name: "before the cut".into() });
    world.advance(std::time::Duration::from_secs(5));
    world.cut(1, 2, CutKind::OneWay);
    for n in 0..3 {
        world.advance(std::time::Duration::from_secs(4));
        world.command(1, Order::Create { name: format!("during the cut {n}") });
    }
    world.advance(std::time::Duration::from_secs(4));
    world.heal_and_converge()?;
    world.check_safety();
    Ok(world.stats.clone())
}

/// The liveness check has teeth: with the sync channels' HTTP/2 keep-alive off, a reader whose
/// connection lost segments to a one-way partition never hears of the writes after the heal;
/// with it on, the same script converges.
#[test]
fn without_http2_keep_alive_a_channel_stays_stuck_after_a_one_way_partition_heals() {
    let with = one_way_cut_then_quiet(true);
    assert!(with.is_ok(), "with keep-alive the script should converge: {with:?}");
    let without = one_way_cut_then_quiet(false);
    let Err(why) = without else { panic!("without keep-alive the script converged: {without:?}") };
    assert!(why.contains("no agreement"), "it failed for another reason: {why}");
    println!("without keep-alive: {why}");
}
