//! The bench space's membership. A fixed founder key founds the space and, in a deterministic
//! first part of its chain, grants the harness's probe (reader) and a pool of workload authors
//! (writers): every template log of every run holds that same part. The nodes a run makes are
//! granted after it, and each node receives the founder's chain before it starts, so every
//! sync the benchmarks time runs with membership judged as in production.

use std::path::Path;

use anyhow::{bail, Context};
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::membership::{NewGrant, Role};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::{Store, StoreOptions};
use casesync_proto::v1 as pb;

use crate::probe::ProbeKey;
use crate::workload::{bench_data_secret, WorkloadSpec};

/// Workload authors the founder grants: `--authors` may not exceed it.
pub const AUTHORS_MAX: usize = 64;

const NONCE: [u8; 16] = *b"casesync-bench-1";

/// The PIN every bench node's device key is sealed under.
pub const BENCH_PIN: &str = "casesync bench pin";

/// What in-process bench stores open with: the probe's key (a reader, so the data key is
/// wrapped for it), so that their folds open the sealed bodies as a member's node does.
pub fn bench_recipients(space: SpaceId) -> Vec<DeviceKey> {
    vec![ProbeKey::new(space).key]
}

/// The founder of the bench space, with its chain in a store of its own.
pub struct BenchAdmin {
    key: DeviceKey,
    space: SpaceId,
    store: Store,
    /// Founder events every template holds (the founding and the pool's grants).
    prefix: u64,
    clock: u64,
}

impl BenchAdmin {
    /// Founds the bench space in `dir` (made afresh) and grants the probe and the author pool,
    /// at fixed clock values: the same events on every run.
    pub fn new(dir: &Path) -> anyhow::Result<BenchAdmin> {
        BenchAdmin::founding(dir, NONCE)
    }

    /// Founds another space as [`BenchAdmin::new`] does (the same founder, probe and author pool):
    /// the `index`th (from 1) of the other practices a relay holds.
    pub fn other_space(dir: &Path, index: u32) -> anyhow::Result<BenchAdmin> {
        let mut nonce = NONCE;
        nonce[12..].copy_from_slice(&index.to_be_bytes());
        if nonce == NONCE {
            bail!("space index {index} gives the bench space's own nonce");
        }
        BenchAdmin::founding(dir, nonce)
    }

    fn founding(dir: &Path, nonce: [u8; 16]) -> anyhow::Result<BenchAdmin> {
        let _ = std::fs::remove_dir_all(dir);
        let store = Store::open(dir, StoreOptions { projections: false, ..StoreOptions::default() })
            .context("opening the bench founder's store")?;
        let key = DeviceKey::from_secret(*blake3::hash(b"casesync-bench-founder").as_bytes());
        let space = store.found_space(&key, "bench-founder", nonce, 1)?;
        let mut admin = BenchAdmin { key, space, store, prefix: 0, clock: 1 };
        let probe = ProbeKey::new(space).key.author();
        admin.grant(probe, Role::Reader, "bench-probe")?;
        let pool = WorkloadSpec::new(0, AUTHORS_MAX);
        for index in 0..AUTHORS_MAX {
            admin.grant(pool.key(index).author(), Role::Writer, &format!("author-{index}"))?;
        }
        // The space's data key, wrapped for the probe and every author.
        admin.clock += 1;
        admin.store.maintain_keys(&admin.space, &admin.key, admin.clock, bench_data_secret())?;
        admin.prefix = admin.head();
        Ok(admin)
    }

    /// The bench space.
    pub fn space(&self) -> SpaceId {
        self.space
    }

    /// Events of the founder's chain (membership events): after every `Harness::introduce`
    /// of a scenario, each of its nodes holds them all besides the workload.
    pub fn head(&self) -> u64 {
        self.store.head(&self.space, &self.key.author()).map_or(0, |h| h.seq)
    }

    fn grant(&mut self, device: AuthorId, role: Role, name: &str) -> anyhow::Result<()> {
        self.clock += 1;
        let grant = NewGrant { device, role, name: name.to_string(), until_ms: None };
        self.store.grant(&self.space, &self.key, self.clock, grant)?;
        if self.prefix > 0 {
            // A node granted after the template part: the data key wrapped for it too.
            self.store.maintain_keys(&self.space, &self.key, self.clock, bench_data_secret())?;
        }
        Ok(())
    }

    /// Grants a node's device key (writer, or relay).
    pub fn grant_node(&mut self, key_hex: &str, name: &str, relay: bool) -> anyhow::Result<()> {
        let device = AuthorId::from_hex(key_hex).context("a node's device key")?;
        self.grant(device, if relay { Role::Relay } else { Role::Writer }, name)
    }

    /// The founder's chain: whole, or only what every template holds.
    fn chain(&self, whole: bool) -> anyhow::Result<Vec<pb::SignedEvent>> {
        let mut events = Vec::new();
        for item in self.store.events_after(&self.space, &VersionVector::new()) {
            let (_, seq, event) = item?;
            if whole || seq <= self.prefix {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Stores the first part of the founder's chain in a template store, before its workload
    /// (whose authors must be at most [`AUTHORS_MAX`], of the pool's seed).
    pub fn prepare_template(&self, store: &Store, spec: WorkloadSpec) -> anyhow::Result<()> {
        if spec.authors > AUTHORS_MAX || spec.seed != WorkloadSpec::new(0, 1).seed {
            bail!("a bench workload has at most {AUTHORS_MAX} authors of the default seed");
        }
        deliver(store, self.space, self.chain(false)?)
    }

    /// Stores the founder's whole chain in a node's data dir (its daemon not running).
    pub fn deliver_to(&self, data: &Path, relay: bool) -> anyhow::Result<()> {
        let options = StoreOptions { projections: !relay, ..StoreOptions::default() };
        let store = Store::open_unlocked(&data.join("db"), options, bench_recipients(self.space))
            .context("opening a node's store")?;
        deliver(&store, self.space, self.chain(true)?)
    }
}

fn deliver(store: &Store, space: SpaceId, events: Vec<pb::SignedEvent>) -> anyhow::Result<()> {
    let report = store.ingest(&space, events)?;
    if let Some(refused) = report.rejected.first() {
        bail!("the bench founder's chain was refused: {}", refused.reason);
    }
    Ok(())
}
