//! `sync-bench`: runs casesync nodes as separate processes on 127.0.0.1 and measures full sync,
//! sync through a relay, live incremental sync, many small syncs, rebuild/export/import, and the
//! raw limits of this machine. Build the node first: `cargo build --release -p casesync-node`.

use std::path::PathBuf;

use anyhow::Context;
use casesync_benches::casesync_bin::Binaries;
use casesync_benches::harness::Harness;
use casesync_benches::machine::{git_revision, Machine};
use casesync_benches::report::{Bound, RunReport, ScenarioReport};
use casesync_benches::scenario::catch_up::{self, CatchUpOptions};
use casesync_benches::scenario::growth::{self, GrowthOptions};
use casesync_benches::scenario::hostile::{self, Flood, HostileOptions};
use casesync_benches::scenario::incremental::{self, IncrementalOptions};
use casesync_benches::scenario::limits::{self, LimitsOptions};
use casesync_benches::scenario::replay::{self, ReplayOptions};
use casesync_benches::scenario::small_syncs::{self, SmallSyncOptions};
use casesync_benches::scenario::spaces::{self, SpacesOptions};
use clap::Parser;

/// mimalloc, not glibc malloc: a fold frees its case states several times faster (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process (Linux, inherited by children): with THP
/// "always", mimalloc's arenas were backed by 2 MiB pages and the relay peaked at 247 MiB, not 210.
fn small_pages_only() {
    // A kernel without the flag keeps its default: nothing to report.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Measure casesync sync performance with real `casesync` processes.
#[derive(Parser, Debug)]
#[command(name = "sync-bench")]
struct Args {
    /// Scenarios to run, comma-separated: limits, full, relay, incremental, small-syncs, replay, all;
    /// and, only when named: hostile (floods from a hostile member), growth (full sync at
    /// several log sizes and author counts) and spaces (a relay holding many spaces serves one).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Events on node A (full, relay, replay).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Authors of those events.
    #[arg(long, default_value_t = 8)]
    authors: usize,
    /// Incremental: creates per second on A.
    #[arg(long, default_value_t = 1000)]
    incr_rate: u64,
    /// Incremental: seconds of load.
    #[arg(long, default_value_t = 10)]
    incr_seconds: u64,
    /// Small syncs: rounds.
    #[arg(long, default_value_t = 1000)]
    small_rounds: u64,
    /// Small syncs: events appended on A per round.
    #[arg(long, default_value_t = 10)]
    small_per_round: u64,
    /// Hostile: events of the honest workload synced during each flood.
    #[arg(long, default_value_t = 20_000)]
    hostile_events: u64,
    /// Hostile: the floods, comma-separated: large-events, fields, forks, replays, connections.
    #[arg(long, default_value = "large-events,fields,forks,replays,connections", value_delimiter = ',')]
    hostile_floods: Vec<String>,
    /// Hostile: small floods (for tests).
    #[arg(long)]
    hostile_quick: bool,
    /// Growth: the log sizes, comma-separated.
    #[arg(long, default_value = "100000,1000000,10000000", value_delimiter = ',')]
    growth_sizes: Vec<u64>,
    /// Growth: the author counts, comma-separated.
    #[arg(long, default_value = "1,8,64", value_delimiter = ',')]
    growth_authors: Vec<usize>,
    /// Spaces: the spaces the relay holds (the reference run holds one).
    #[arg(long, default_value_t = 100)]
    spaces_count: usize,
    /// Spaces: events in each space (8 authors, or `--authors`).
    #[arg(long, default_value_t = 100_000)]
    spaces_events: u64,
    /// Keep every preloaded template in the work dir (growth removes each once used, so that one
    /// 10M-event log at a time is on disk), for a later run with `--work-dir` to reuse.
    #[arg(long)]
    keep_templates: bool,
    /// Start every node with its caches and buffers within this many MiB (`casesync serve
    /// --memory-mib`); default: the node's own.
    #[arg(long)]
    memory_mib: Option<usize>,
    /// Limits: fewer iterations.
    #[arg(long)]
    quick_limits: bool,
    /// The casesync binary (default: next to this executable).
    #[arg(long)]
    casesync: Option<PathBuf>,
    /// The replay-tool binary (default: next to this executable, when built).
    #[arg(long)]
    replay_tool: Option<PathBuf>,
    /// Where data dirs go (default: a temporary directory, removed at the end). A preloaded log
    /// an earlier run left complete there (same workload, same store format) is used again.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn wanted(args: &Args, name: &str) -> bool {
    args.scenarios.iter().any(|s| s == name || s == "all")
}

fn main() -> anyhow::Result<()> {
    small_pages_only();
    let args = Args::parse();
    let mut bins = Binaries::locate(args.casesync.clone(), args.replay_tool.clone())?;
    bins.memory_mib = args.memory_mib;
    let temp = tempfile::Builder::new().prefix("sync-bench-").tempdir().context("creating a work dir")?;
    let work = args.work_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let mut h = Harness::new(bins, work)?;
    let mut scenarios = Vec::new();
    let progress = |name: &str| {
        if !args.json {
            eprintln!("sync-bench: running {name} ...");
        }
    };

    if wanted(&args, "limits") {
        progress("limits");
        let params = format!("quick={}", args.quick_limits);
        scenarios.push(
            limits::run(&runtime, LimitsOptions { quick: args.quick_limits })
                .unwrap_or_else(|e| ScenarioReport::failed("limits", params, &e)),
        );
    }
    for relay in [false, true] {
        let name = if relay { "relay" } else { "full" };
        if wanted(&args, name) {
            progress(name);
            let options = CatchUpOptions { events: args.events, authors: args.authors, relay };
            let params = format!("events={} authors={}", args.events, args.authors);
            scenarios.push(
                catch_up::run(&mut h, &runtime, options).unwrap_or_else(|e| ScenarioReport::failed(name, params, &e)),
            );
        }
    }
    if wanted(&args, "incremental") {
        progress("incremental");
        let options = IncrementalOptions { rate: args.incr_rate, seconds: args.incr_seconds };
        let params = format!("rate={}/s seconds={}", args.incr_rate, args.incr_seconds);
        scenarios.push(
            incremental::run(&mut h, &runtime, options)
                .unwrap_or_else(|e| ScenarioReport::failed("incremental", params, &e)),
        );
    }
    if wanted(&args, "small-syncs") {
        progress("small-syncs");
        let options = SmallSyncOptions { rounds: args.small_rounds, per_round: args.small_per_round };
        let params = format!("rounds={} per_round={}", args.small_rounds, args.small_per_round);
        scenarios.push(
            small_syncs::run(&mut h, &runtime, options)
                .unwrap_or_else(|e| ScenarioReport::failed("small-syncs", params, &e)),
        );
    }
    if wanted(&args, "replay") {
        progress("replay");
        let options = ReplayOptions { events: args.events, authors: args.authors };
        let params = format!("events={} authors={}", args.events, args.authors);
        scenarios.push(replay::run(&mut h, options).unwrap_or_else(|e| ScenarioReport::failed("replay", params, &e)));
    }
    if args.scenarios.iter().any(|s| s == "hostile") {
        progress("hostile");
        let floods = args
            .hostile_floods
            .iter()
            .map(|name| {
                Flood::ALL.into_iter().find(|f| f.name() == name).with_context(|| format!("no flood named {name}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options =
            HostileOptions { events: args.hostile_events, authors: args.authors, quick: args.hostile_quick, floods };
        scenarios.extend(hostile::run(&mut h, &runtime, &options));
    }
    if args.scenarios.iter().any(|s| s == "growth") {
        progress("growth");
        if args.growth_sizes.contains(&0) || args.growth_authors.contains(&0) {
            anyhow::bail!("--growth-sizes and --growth-authors take counts above zero");
        }
        let options = GrowthOptions {
            sizes: args.growth_sizes.clone(),
            authors: args.growth_authors.clone(),
            keep_templates: args.keep_templates,
        };
        scenarios.extend(growth::run(&mut h, &runtime, &options));
    }
    if args.scenarios.iter().any(|s| s == "spaces") {
        progress("spaces");
        if args.spaces_count == 0 || args.spaces_events == 0 {
            anyhow::bail!("--spaces-count and --spaces-events take counts above zero");
        }
        let options = SpacesOptions { spaces: args.spaces_count, events: args.spaces_events, authors: args.authors };
        scenarios.extend(spaces::run(&mut h, &runtime, options));
    }
    attach_bounds(&mut scenarios);

    let report = RunReport {
        revision: git_revision(),
        machine: Machine::describe(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        scenarios,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    drop(h);
    drop(temp);
    if report.scenarios.iter().any(|s| !s.ok && !s.skipped) {
        anyhow::bail!("at least one scenario failed");
    }
    Ok(())
}

/// Compares each scenario with the raw limit that bounds it (when `limits` ran).
fn attach_bounds(scenarios: &mut [ScenarioReport]) {
    let Some(limits) = scenarios.iter().find(|s| s.name == "limits" && s.ok).cloned() else { return };
    let get = |name: &str| limits.get(name).unwrap_or(0.0);
    let throughput = |limit: &str, value: f64, measured: f64| Bound {
        limit: limit.to_string(),
        limit_value: value,
        measured,
        fraction: if value > 0.0 { measured / value } else { 0.0 },
    };
    for s in scenarios.iter_mut() {
        s.bound = match s.name.as_str() {
            // A node far behind a peer takes the bulk path (store, fold in memory, write views
            // as SST files), which beats one in-process writer with per-batch folds; what it
            // cannot beat is RocksDB taking the events in synced batches.
            "full" | "relay" => s.get("events_per_s").map(|measured| {
                throughput(
                    "RocksDB batches of 1000 x 300 B, WAL synced (ev/s)",
                    get("rocksdb_batch_1000x300b_sync_events_per_s"),
                    measured,
                )
            }),
            "incremental" => s.get("latency_p99_ms").map(|measured| {
                // A's synced append and two hops: B shows another device's event before its own
                // WAL sync, so one durable write is on the path, not two.
                let floor = get("rocksdb_sync_write_1_event_us") / 1e3 + 2.0 * get("grpc_unary_rtt_us") / 1e3;
                Bound {
                    limit: "1 synced 1-event write + 2 gRPC round trips (ms)".into(),
                    limit_value: floor,
                    measured,
                    fraction: if measured > 0.0 { floor / measured } else { 0.0 },
                }
            }),
            "small-syncs" => s.get("sync_mean_ms").map(|measured| {
                // One synced ingest on B and four round trips (hello, heads, push, pull).
                let floor = get("rocksdb_sync_write_1_event_us") / 1e3 + 4.0 * get("grpc_unary_rtt_us") / 1e3;
                Bound {
                    limit: "1 synced write + 4 gRPC round trips (ms)".into(),
                    limit_value: floor,
                    measured,
                    fraction: if measured > 0.0 { floor / measured } else { 0.0 },
                }
            }),
            // A rebuild decodes and folds on two threads and writes through two more, so one
            // core's decode + fold is no bound; RocksDB taking the views without the WAL is.
            "replay" => s.get("engine_rebuild_events_per_s").map(|measured| {
                throughput(
                    "RocksDB batches of 1000 x 300 B without sync (ev/s)",
                    get("rocksdb_batch_1000x300b_nosync_events_per_s"),
                    measured,
                )
            }),
            _ => None,
        };
    }
}
