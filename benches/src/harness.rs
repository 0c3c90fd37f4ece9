//! A scenario's working area: the binaries, a work directory, the space under test, preloaded
//! template logs (made once per workload, copied into each node that needs them), and node data
//! dirs introduced to each other and to the harness's probe key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use casesync_engine::ids::SpaceId;
use casesync_engine::store::{Store, StoreOptions};

use crate::casesync_bin::{copy_flat_dir, Binaries};
use crate::probe::ProbeKey;
use crate::workload::{self, PreloadReport, WorkloadSpec};

/// A node's data dir.
#[derive(Clone, Debug)]
pub struct NodeDir {
    /// Role name.
    pub name: String,
    /// The data dir.
    pub dir: PathBuf,
    /// Its device key (hex).
    pub key: String,
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
    templates: HashMap<(u64, usize), (PathBuf, PreloadReport)>,
}

impl Harness {
    /// A harness writing under `work`.
    pub fn new(bins: Binaries, work: PathBuf) -> Harness {
        let mut space = [0u8; 16];
        space.copy_from_slice(&blake3::hash(b"casesync-bench-space").as_bytes()[..16]);
        let space = SpaceId(space);
        Harness { bins, work, space, probe: ProbeKey::new(space), templates: HashMap::new() }
    }

    /// The preloaded log of a workload (made on first use; not timed by any scenario).
    pub fn template(&mut self, spec: WorkloadSpec) -> anyhow::Result<(PathBuf, PreloadReport)> {
        if let Some(found) = self.templates.get(&(spec.events, spec.authors)) {
            return Ok(found.clone());
        }
        let dir = self.work.join(format!("template-{}-{}", spec.events, spec.authors));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, StoreOptions::default()).context("opening the template store")?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let report = workload::preload(&store, self.space, spec, threads)?;
        // A settled log, as on a device that has been in use: otherwise every copy of it starts
        // with the preload's pending flushes and compactions, and the node serving it spends
        // the measured seconds compacting on the cores the receiver needs.
        store.compact().context("compacting the template store")?;
        drop(store);
        self.templates.insert((spec.events, spec.authors), (dir.clone(), report));
        Ok((dir, report))
    }

    /// Inits a data dir `scenario/name` (relay or not), optionally with a copy of a template log,
    /// and lets the probe key in.
    pub fn node(&self, scenario: &str, name: &str, relay: bool, log: Option<&Path>) -> anyhow::Result<NodeDir> {
        let dir = self.work.join(scenario).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let info = self.bins.init(&dir, name, Some(&self.space.to_hex()), relay)?;
        if let Some(template) = log {
            let db = dir.join("db");
            std::fs::remove_dir_all(&db).with_context(|| format!("removing {}", db.display()))?;
            copy_flat_dir(template, &db)?;
        }
        self.bins.device_add(&dir, &self.probe.hex(), "bench-probe")?;
        Ok(NodeDir { name: name.to_string(), dir, key: info.device_key })
    }

    /// Lets two nodes sync with each other.
    pub fn introduce(&self, a: &NodeDir, b: &NodeDir) -> anyhow::Result<()> {
        self.bins.device_add(&a.dir, &b.key, &b.name)?;
        self.bins.device_add(&b.dir, &a.key, &a.name)
    }
}
