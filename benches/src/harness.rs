//! A scenario's working area: the binaries, a work directory, the space under test, preloaded
//! template logs (made once per workload, copied into each node that needs them), and node data
//! dirs introduced to each other and to the harness's probe key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::store::{Store, StoreOptions};

use crate::casesync_bin::{copy_flat_dir, Binaries};
use crate::membership::BenchAdmin;
use crate::probe::ProbeKey;
use crate::workload::{self, PreloadReport, WorkloadSpec};

/// Case states a preload holds in memory while it folds, as `replay-tool import` does (the
/// engine's byte bound on a fold applies as well).
const PRELOAD_CASES_IN_MEMORY: usize = 16_384;

/// A node's data dir.
#[derive(Clone, Debug)]
pub struct NodeDir {
    /// Role name.
    pub name: String,
    /// The data dir.
    pub dir: PathBuf,
    /// Its device key (hex).
    pub key: String,
    /// Whether it runs as a relay.
    pub relay: bool,
}

/// Shared state of a run.
pub struct Harness {
    /// The binaries.
    pub bins: Binaries,
    /// Root of every data dir of the run.
    pub work: PathBuf,
    /// The space every node serves.
    pub space: SpaceId,
    /// The harness's own device key.
    pub probe: ProbeKey,
    /// The space's founder, who grants every node.
    admin: BenchAdmin,
    templates: HashMap<(u64, usize), (PathBuf, PreloadReport)>,
}

impl Harness {
    /// A harness writing under `work`.
    pub fn new(bins: Binaries, work: PathBuf) -> anyhow::Result<Harness> {
        let admin = BenchAdmin::new(&work.join("bench-founder"))?;
        let space = admin.space();
        Ok(Harness { bins, work, space, probe: ProbeKey::new(space), admin, templates: HashMap::new() })
    }

    /// The preloaded log of a workload (made on first use; not timed by any scenario).
    pub fn template(&mut self, spec: WorkloadSpec) -> anyhow::Result<(PathBuf, PreloadReport)> {
        if let Some(found) = self.templates.get(&(spec.events, spec.authors)) {
            return Ok(found.clone());
        }
        let dir = self.template_dir(spec);
        // A template a run before left complete (same workload, same store format) in a work
        // dir kept with `--work-dir`: reused, which saves its preload (20-30 s at 1M events).
        let marker = dir.with_extension("json");
        if let Some(report) = complete_template(&marker, spec) {
            self.templates.insert((spec.events, spec.authors), (dir.clone(), report));
            return Ok((dir, report));
        }
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_dir_all(&dir);
        let store =
            Store::open_unlocked(&dir, StoreOptions::default(), crate::membership::bench_recipients(self.space))
                .context("opening the template store")?;
        self.admin.prepare_template(&store, spec)?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        // Loaded as `replay-tool import` loads a new data dir: no WAL (a template left unfinished
        // has no marker and is made again), the views folded in memory while storing and written
        // out as table files, every family flushed at the end.
        store.write_without_wal();
        store.begin_bulk_catch_up_holding(PRELOAD_CASES_IN_MEMORY, true);
        let mut report = workload::preload(&store, self.space, spec, threads)?;
        let views_started = std::time::Instant::now();
        store.end_bulk_catch_up().context("completing the template's views")?;
        report.views = views_started.elapsed();
        let settle_started = std::time::Instant::now();
        store.persist().context("flushing the template store")?;
        // A settled log, as on a device that has been in use: otherwise every copy of it starts
        // with the preload's pending flushes and compactions, and the node serving it spends
        // the measured seconds compacting on the cores the receiver needs.
        // Waiting for RocksDB's own compactions is enough: a full rewrite took minutes at 10M.
        store.settle(std::time::Duration::from_secs(1800)).context("settling the template store")?;
        drop(store);
        report.settle = settle_started.elapsed();
        let described = TemplateMarker::of(spec, &report);
        std::fs::write(&marker, serde_json::to_vec(&described)?)
            .with_context(|| format!("writing {}", marker.display()))?;
        self.templates.insert((spec.events, spec.authors), (dir.clone(), report));
        Ok((dir, report))
    }

    fn template_dir(&self, spec: WorkloadSpec) -> PathBuf {
        self.work.join(format!("template-{}-{}", spec.events, spec.authors))
    }

    /// Removes the preloaded template of a workload (and its marker), to free its disk.
    pub fn remove_template(&mut self, spec: WorkloadSpec) -> anyhow::Result<()> {
        self.templates.remove(&(spec.events, spec.authors));
        let dir = self.template_dir(spec);
        let _ = std::fs::remove_file(dir.with_extension("json"));
        remove_dir_if_present(&dir)
    }

    /// Removes the data dirs of a scenario's nodes (`work/scenario`).
    pub fn remove_scenario_dirs(&self, scenario: &str) -> anyhow::Result<()> {
        remove_dir_if_present(&self.work.join(scenario))
    }

    /// Inits a data dir `scenario/name` (relay or not), optionally with a copy of a template log,
    /// and lets the probe key in.
    pub fn node(&mut self, scenario: &str, name: &str, relay: bool, log: Option<&Path>) -> anyhow::Result<NodeDir> {
        let dir = self.work.join(scenario).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let info = self.bins.init(&dir, name, Some(&self.space.to_hex()), relay)?;
        if let Some(template) = log {
            let db = dir.join("db");
            std::fs::remove_dir_all(&db).with_context(|| format!("removing {}", db.display()))?;
            copy_flat_dir(template, &db)?;
        }
        self.admin.grant_node(&info.device_key, name, relay)?;
        self.admin.deliver_to(&dir, relay)?;
        Ok(NodeDir { name: name.to_string(), dir, key: info.device_key, relay })
    }

    /// Grants a device that runs no node (a writer): made before the nodes that must know it.
    pub fn grant_writer(&mut self, device: AuthorId, name: &str) -> anyhow::Result<()> {
        self.admin.grant_node(&device.to_hex(), name, false)
    }

    /// Membership events each node of a scenario holds once it is introduced to the others
    /// (the founder's chain so far): what node totals hold besides the workload's events.
    pub fn membership_events(&self) -> u64 {
        self.admin.head()
    }

    /// Lets two nodes sync with each other: each holds the grant of the other.
    pub fn introduce(&self, a: &NodeDir, b: &NodeDir) -> anyhow::Result<()> {
        self.admin.deliver_to(&a.dir, a.relay)?;
        self.admin.deliver_to(&b.dir, b.relay)
    }
}

/// Removes `dir` and everything in it; a directory that is not there is no error.
fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// What a complete template holds, written beside it once it is compacted.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct TemplateMarker {
    format_version: u32,
    /// The membership the template starts with (a template made before it is made again).
    membership: u32,
    events: u64,
    authors: usize,
    seed: u64,
    text_bytes: usize,
    bytes: u64,
    preload_seconds: f64,
}

impl TemplateMarker {
    fn of(spec: WorkloadSpec, report: &PreloadReport) -> TemplateMarker {
        TemplateMarker {
            format_version: casesync_engine::storage::format::FORMAT_VERSION,
            membership: 1,
            events: spec.events,
            authors: spec.authors,
            seed: spec.seed,
            text_bytes: spec.text_bytes,
            bytes: report.bytes,
            preload_seconds: report.elapsed.as_secs_f64(),
        }
    }
}

/// The preload report of the template `marker` describes, if it is complete and of this workload
/// and store format.
fn complete_template(marker: &Path, spec: WorkloadSpec) -> Option<PreloadReport> {
    let found: TemplateMarker = serde_json::from_slice(&std::fs::read(marker).ok()?).ok()?;
    let wanted = TemplateMarker::of(spec, &PreloadReport::default());
    let same = (found.format_version, found.membership, found.events, found.authors, found.seed, found.text_bytes)
        == (wanted.format_version, wanted.membership, wanted.events, wanted.authors, wanted.seed, wanted.text_bytes);
    let elapsed = std::time::Duration::try_from_secs_f64(found.preload_seconds).ok()?;
    same.then_some(PreloadReport { events: found.events, bytes: found.bytes, elapsed, ..PreloadReport::default() })
}
