//! A node's data dir: creating it (`casesync init`), opening it, and detecting a copied one.
//!
//! Layout: `casesync.toml` (config), `device.key` + `device.name` (identity), `instance` (where
//! this identity lives), `db/` (RocksDB), `daemon.json` (while a daemon runs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use casesync_engine::error::StorageFault;
use casesync_engine::identity::DeviceIdentity;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::storage::memory::MemoryBudget;
use casesync_engine::store::{Store, StoreOptions};
use rand::RngCore;
use serde::Serialize;

use crate::config::FileConfig;

/// File recording which machine and path the identity belongs to.
pub const INSTANCE_FILE: &str = "instance";

/// The RocksDB directory inside a data dir.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("db")
}

use crate::shared::fresh_secret;

/// Where this data dir lives: machine id, host name and canonical path, hashed.
fn fingerprint(data: &Path) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let path = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let mut hasher = blake3::Hasher::new();
    hasher.update(machine.trim().as_bytes());
    hasher.update(b"\0");
    hasher.update(host.trim().as_bytes());
    hasher.update(b"\0");
    hasher.update(path.to_string_lossy().as_bytes());
    hasher.finalize().to_hex().to_string()
}

/// What `init` made.
#[derive(Clone, Debug, Serialize)]
pub struct InitReport {
    /// The data dir.
    pub data: String,
    /// Short device id.
    pub device: String,
    /// Device key (hex): an admin grants it a role (`casesync device grant`).
    pub device_key: String,
    /// Device name.
    pub device_name: String,
    /// The space (hex): give it to devices that join.
    pub space: String,
    /// Relay mode.
    pub relay: bool,
    /// Whether the data dir was new.
    pub created: bool,
}

/// Creates (or completes) a data dir. Without `space`, a new space is created.
pub fn init(
    data: &Path,
    name: &str,
    space: Option<SpaceId>,
    relay: bool,
    listen: Option<String>,
) -> anyhow::Result<InitReport> {
    casesync_engine::identity::secure_data_dir(data)?;
    let existing = FileConfig::load(data).ok();
    let space = match (&existing, space) {
        (Some(config), Some(wanted)) if SpaceId::from_hex(&config.space).ok() != Some(wanted) => {
            bail!("{} already serves space {}, not {}", data.display(), config.space, wanted)
        }
        (Some(config), _) => Some(SpaceId::from_hex(&config.space).context("casesync.toml has a malformed space")?),
        (None, Some(space)) => Some(space),
        (None, None) => None,
    };
    let created = existing.is_none();
    let pin = crate::pin::current(&format!("practice PIN for {}: ", data.display()))?;
    let (identity, _) = crate::pin::guarded(data, || DeviceIdentity::load_or_create(data, name, fresh_secret, &pin))?;
    std::fs::write(data.join(INSTANCE_FILE), fingerprint(data)).context("writing the instance file")?;
    let store = Store::open_unlocked(
        &db_path(data),
        StoreOptions { projections: !relay, ..StoreOptions::default() },
        identity.recipients(),
    )?;
    let space = match space {
        Some(space) => space,
        // A new space: this device founds it and is its first admin.
        None => {
            let mut nonce = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let space = store.found_space(&identity.key, &identity.name, nonce, crate::shared::now_ms())?;
            // Its first data key: what the space's devices write is sealed under it.
            store.maintain_keys(&space, &identity.key, crate::shared::now_ms(), fresh_secret())?;
            space
        }
    };
    if created {
        FileConfig { space: space.to_hex(), listen, relay, ..FileConfig::default() }.save(data)?;
    }
    store.add_member(&space, &identity.author(), &identity.name)?;
    Ok(InitReport {
        data: data.display().to_string(),
        device: identity.author().device_id(),
        device_key: identity.author().to_hex(),
        device_name: identity.name.clone(),
        space: space.to_hex(),
        relay,
        created,
    })
}

/// An open data dir.
pub struct OpenDataDir {
    /// The config file.
    pub config: FileConfig,
    /// The first space.
    pub space: SpaceId,
    /// Every space the node holds, the first first.
    pub spaces: Vec<crate::config::NodeSpace>,
    /// This device.
    pub identity: DeviceIdentity,
    /// The store.
    pub store: Arc<Store>,
}

/// Opens a data dir (blocking). A data dir copied to another machine or path continues as a new
/// device with a new key, so the copy can never fork the original's chain.
pub fn open(data: &Path, relay_flag: bool) -> anyhow::Result<OpenDataDir> {
    open_within(data, relay_flag, None)
}

/// [`open`], with the store's caches and buffers within `memory_mib` MiB (else the data dir's
/// `memory_mib`, else the engine's default).
pub fn open_within(data: &Path, relay_flag: bool, memory_mib: Option<usize>) -> anyhow::Result<OpenDataDir> {
    let config = FileConfig::load(data)?;
    let memory = match memory_mib.or(config.memory_mib) {
        Some(mib) => MemoryBudget::within_mib(mib).context("the memory budget (--memory-mib, memory_mib)")?,
        None => MemoryBudget::default(),
    };
    casesync_engine::identity::secure_data_dir(data)?;
    let spaces = config.node_spaces()?;
    let space = spaces[0].space;
    let mut identity = crate::pin::unlock(data)?.with_context(|| {
        format!("{} has no device key (run `casesync init --data {}`)", data.display(), data.display())
    })?;
    let here = fingerprint(data);
    let recorded = std::fs::read_to_string(data.join(INSTANCE_FILE)).unwrap_or_default();
    let copied = !recorded.trim().is_empty() && recorded.trim() != here;
    if copied {
        let old = identity.author().device_id();
        let pin = crate::pin::current(&format!("practice PIN for {}: ", data.display()))?;
        identity = DeviceIdentity::create(data, &identity.name, fresh_secret(), &pin)?;
        crate::freed_memory::give_back();
        tracing::warn!(
            old = %old,
            new = %identity.author().device_id(),
            "this data dir was copied or moved: continuing as a new device with a new key (add it on the other devices)"
        );
    }
    std::fs::write(data.join(INSTANCE_FILE), &here).context("writing the instance file")?;
    let relay = relay_flag || config.relay;
    let options = StoreOptions { projections: !relay, memory, ..StoreOptions::default() };
    let store = Store::open_unlocked(&db_path(data), options, identity.recipients()).map_err(|e| {
        let context = if e.fault() == Some(StorageFault::NoSpace) {
            crate::grpc_status::DISK_FULL
        } else if casesync_engine::storage::held_by_another_process(&db_path(data)) {
            "the data dir is in use by another casesync process"
        } else {
            "cannot open the log store"
        };
        anyhow::Error::new(e).context(context)
    })?;
    if store.member(&space, &identity.author())?.is_none() {
        store.add_member(&space, &identity.author(), &identity.name)?;
    }
    // An admin's device keeps each space's keys right: introduces the first one in a space
    // written before sealing, rotates after a revocation, shares with members who lack one.
    for node_space in &spaces {
        let written = store.maintain_keys(&node_space.space, &identity.key, crate::shared::now_ms(), fresh_secret())?;
        if written > 0 {
            tracing::info!(space = %node_space.space.short(), shares = written, "data keys shared");
        }
    }
    Ok(OpenDataDir { config, space, spaces, identity, store: Arc::new(store) })
}

/// Adds a space to a node's data dir under `name` (a colleague's practice this device covers,
/// another practice a relay serves), with its peers. The daemon takes it up at its next start.
pub fn add_space(data: &Path, name: &str, space: SpaceId, peers: Vec<String>) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("{name:?} is not a space name (1-64 characters, no spaces)");
    }
    let mut config = FileConfig::load(data)?;
    let known = config.node_spaces()?;
    if let Some(same) = known.iter().find(|s| s.space == space) {
        bail!("this node holds space {} already, as {:?}", space.to_hex(), same.name);
    }
    if known.iter().any(|s| s.name == name) {
        bail!("this node has a space named {name:?} already");
    }
    config.spaces.push(crate::config::SpaceConfig { name: name.to_string(), space: space.to_hex(), peers });
    config.save(data)
}
