//! A node's data dir as this tool sees it: `casesync.toml` (for the space and relay flag),
//! `device.key`/`device.name`/`instance` (copied by salvage) and `db/` (the RocksDB store).
//! The layout is the node's (`node/src/data_dir.rs`); this tool never creates a device key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use casesync_engine::error::{OpenError, StorageFault};
use casesync_engine::model::ids::SpaceId;
use casesync_engine::store::{Store, StoreOptions};
use serde::Deserialize;

/// The node's configuration file.
pub const CONFIG_FILE: &str = "casesync.toml";
/// Files describing the device, copied by salvage when readable.
pub const DEVICE_FILES: [&str; 2] = ["device.key", "device.name"];
/// The file recording which machine and path the identity belongs to.
pub const INSTANCE_FILE: &str = "instance";

/// The RocksDB directory of a data dir.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("db")
}

/// What this tool needs from `casesync.toml` (other keys are the node's business).
#[derive(Clone, Debug, Deserialize)]
struct ConfigFile {
    space: String,
    #[serde(default)]
    relay: bool,
}

/// The parts of the node's configuration this tool uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The space the node serves.
    pub space: SpaceId,
    /// Relay mode: no projections.
    pub relay: bool,
}

/// Reads `casesync.toml`, if there is one.
pub fn read_config(data: &Path) -> anyhow::Result<Option<Config>> {
    let path = data.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file: ConfigFile = toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let space = SpaceId::from_hex(&file.space).with_context(|| format!("{} has a malformed space", path.display()))?;
    Ok(Some(Config { space, relay: file.relay }))
}

/// Writes the smallest `casesync.toml` the node accepts, so `casesync init --data DIR` can later
/// add a device key to a data dir this tool created.
pub fn write_minimal_config(data: &Path, space: &SpaceId) -> anyhow::Result<()> {
    let path = data.join(CONFIG_FILE);
    std::fs::write(&path, format!("space = \"{}\"\nrelay = false\n", space.to_hex()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Why a store did not open, sorted for the exit code and the advice.
#[derive(Debug)]
pub enum OpenFailure {
    /// Another process (a running casesync) holds the store.
    InUse(OpenError),
    /// The store is damaged: corrupt or missing files (exit 3, salvage).
    Damaged(OpenError),
    /// The disk is full: nothing is damaged, the open could not write.
    NoSpace(OpenError),
    /// This user may not read or write the store's files (or the file system is read-only).
    Denied {
        /// The first file or directory found out of reach.
        path: PathBuf,
        /// What the file system said about it.
        cause: std::io::Error,
        /// The store's error.
        error: OpenError,
    },
    /// Anything else.
    Other(OpenError),
}

impl OpenFailure {
    /// Whether the failure is damage to the store (exit code 3), not a failure to run.
    pub fn is_damage(&self) -> bool {
        matches!(self, OpenFailure::Damaged(_))
    }
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::InUse(e) => write!(f, "the store is in use by another process (stop casesync first): {e}"),
            OpenFailure::Damaged(e) => write!(f, "the store is damaged: {e}"),
            OpenFailure::NoSpace(e) => {
                write!(f, "disk full: free space on the store's disk and run the command again (the store is not damaged): {e}")
            }
            OpenFailure::Denied { path, cause, error } => write!(
                f,
                "permission denied: {}: {cause} (this user must be able to read and write the store's directory and files): {error}",
                path.display()
            ),
            OpenFailure::Other(e) => write!(f, "cannot open the store: {e}"),
        }
    }
}

impl std::error::Error for OpenFailure {}

/// Opens the store of an existing data dir. `projections: false` never touches the projections
/// (no catch-up rebuild on open), which is what every read-only command wants.
pub fn open_store(data: &Path, projections: bool) -> anyhow::Result<Result<Store, OpenFailure>> {
    let db = db_path(data);
    if !db.join("CURRENT").exists() {
        bail!("no casesync store in {} (expected {})", data.display(), db.display());
    }
    let recipients = crate::unlock::recipients(data)?;
    Ok(Store::open_unlocked(&db, StoreOptions { projections, ..StoreOptions::compatible() }, recipients)
        .map_err(|error| classify(&db, error)))
}

/// Sorts an open failure of the existing store in `db` by the engine's [`StorageFault`], never by
/// the words of the message. An I/O fault without a sub-code is told apart by asking the file
/// system: who holds RocksDB's lock, and what this user may access.
fn classify(db: &Path, error: OpenError) -> OpenFailure {
    match error.fault() {
        // In a store that exists (`CURRENT` is there), a missing file is one its manifest names.
        Some(StorageFault::Corruption | StorageFault::MissingFile) => OpenFailure::Damaged(error),
        Some(StorageFault::NoSpace) => OpenFailure::NoSpace(error),
        Some(StorageFault::Io) if casesync_engine::storage::held_by_another_process(db) => OpenFailure::InUse(error),
        Some(StorageFault::Io) => match access_denied(db) {
            Some((path, cause)) => OpenFailure::Denied { path, cause, error },
            None => OpenFailure::Other(error),
        },
        _ => OpenFailure::Other(error),
    }
}

/// The first of `db` (read, write, search) and its files (read; `LOCK` also write) that this
/// user may not access, with the file system's reason (permission, read-only file system).
#[cfg(target_os = "linux")]
fn access_denied(db: &Path) -> Option<(PathBuf, std::io::Error)> {
    use rustix::fs::{access, Access};
    use rustix::io::Errno;
    let denied = |path: &Path, mode: Access| match access(path, mode) {
        Err(errno @ (Errno::ACCESS | Errno::PERM | Errno::ROFS)) => Some((path.to_path_buf(), errno.into())),
        _ => None,
    };
    if let Some(found) = denied(db, Access::READ_OK | Access::WRITE_OK | Access::EXEC_OK) {
        return Some(found);
    }
    let entries = std::fs::read_dir(db).ok()?;
    entries.flatten().map(|entry| entry.path()).find_map(|path| {
        let write = path.file_name().is_some_and(|name| name == "LOCK");
        denied(&path, if write { Access::READ_OK | Access::WRITE_OK } else { Access::READ_OK })
    })
}

#[cfg(not(target_os = "linux"))]
fn access_denied(_db: &Path) -> Option<(PathBuf, std::io::Error)> {
    None
}

/// The space a command works on: the config's, else the store's only one.
pub fn space_of(config: Option<&Config>, store: &Store) -> anyhow::Result<SpaceId> {
    if let Some(config) = config {
        return Ok(config.space);
    }
    match store.spaces().as_slice() {
        [one] => Ok(*one),
        [] => bail!("the store holds no events and there is no {CONFIG_FILE} naming a space"),
        many => bail!("the store holds {} spaces and there is no {CONFIG_FILE} naming one", many.len()),
    }
}

/// How long a command that wrote many files waits for RocksDB to join them. A fold that cannot
/// hold the cases an author's chain cycles over (10M events: 125k cases a chain) writes most
/// events out as deltas of their own, and their compaction is a large share of the work (a
/// quarter of a 10M rebuild). Left running, it was cancelled when the tool exited, and the node
/// that opened the store next paid for it. Past this the command's work still stands; the
/// compaction goes on at the next open.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Waits until RocksDB has no flush or compaction pending or running in `store` (at most
/// [`SETTLE_MAX`]); returns whether it got there.
pub fn settle(store: &Store) -> bool {
    match store.settle(SETTLE_MAX) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "what was written stands; RocksDB goes on joining its files at the next open");
            false
        }
    }
}
