//! Storage: the RocksDB database of a store, its column families and format, and the one way
//! everything above writes to it: whole write batches, durable as asked, with a failed write
//! poisoning the database until it is reopened. Knows nothing of events or folds beyond their
//! keys.

pub mod families;
#[cfg(any(test, feature = "testkit"))]
pub(crate) mod fault_plan;
pub mod format;
pub mod memory;

use crate::model::sealing::KeySet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use crate::codec::keys::{prefix_end, ALL_CFS, CF_CASES_LEGACY};
use crate::error::{OpenError, StoreError};
use families::{known_families, tuned_family_options};
use memory::MemoryBudget;

/// Bound on the WAL files kept (see [`Db::open`]), in bytes.
pub const WAL_BYTES_MAX: u64 = 128 << 20;

/// Table files RocksDB keeps open at once (the rest are opened as read, through its table
/// cache): well under the usual limit of 1024 descriptors per process, leaving room for sockets.
pub const OPEN_FILES_MAX: i32 = 512;

/// How commits reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Durability {
    /// Every commit waits for its WAL sync (the default).
    Synced = 0,
    /// Commits go to the WAL without waiting for the disk until [`Db::sync`]: each is still
    /// atomic and in order, so a crash loses at most a suffix of them.
    DeferredSync = 1,
    /// Commits skip the WAL until [`Db::persist`]: for a store built aside and thrown away unless
    /// finished.
    NoWal = 2,
}

/// A store's RocksDB database.
pub struct Db {
    db: DB,
    path: PathBuf,
    /// The bounds of its caches and buffers.
    memory: MemoryBudget,
    poisoned: AtomicBool,
    durability: AtomicU8,
    /// The data keys this process unlocked, which every fold opens sealed bodies with (empty on
    /// a relay and while locked). Replaced whole when a key arrives.
    keys: std::sync::RwLock<std::sync::Arc<KeySet>>,
    /// Tests only: the named step at which the next [`Db::fault_point`] fails.
    #[cfg(test)]
    fail_at: std::sync::Mutex<Option<&'static str>>,
    /// Tests only: the plan of failures by position attached to this directory when it opened.
    #[cfg(any(test, feature = "testkit"))]
    plan: Option<std::sync::Arc<fault_plan::FaultPlan>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if needed) the database in `path` with every column family, checks (and
    /// upgrades) its format version, and drops the family older formats kept projections in.
    pub fn open(path: &Path, memory: MemoryBudget) -> Result<Db, OpenError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);
        // Memory: all memtables together stay under this budget (RocksDB flushes the largest when
        // it is reached), so a node stays well under 256 MiB even during a million-event sync.
        db_options.set_db_write_buffer_size(memory.memtables_bytes);
        // WAL files live until every family with data in them has flushed; small families (meta,
        // heads) flush rarely, so without a bound the WAL grew to hundreds of MiB in a 1M-event
        // sync and an open after a crash replayed all of it. Past this total RocksDB flushes
        // the families that hold the oldest WAL.
        db_options.set_max_total_wal_size(WAL_BYTES_MAX);
        // File descriptors: RocksDB keeps every table file open by default, so a large store
        // (and a node's sockets beside it) could exhaust the process's limit, failing writes.
        db_options.set_max_open_files(OPEN_FILES_MAX);
        // No readahead buffer per input file of a compaction (RocksDB's default is 2 MiB each):
        // the compaction after a bulk catch-up of 10M events joins its several hundred spill
        // files at once, and their buffers took the node from 193 MiB to 920. The files are
        // read sequentially, which the kernel's own readahead serves.
        db_options.set_compaction_readahead_size(0);
        // One block cache for every column family (RocksDB's default is a cache per family).
        let cache = rocksdb::Cache::new_lru_cache(memory.block_cache_bytes);
        let existing = known_families(path)?;
        let has_legacy_cases = existing.iter().any(|name| name == CF_CASES_LEGACY);
        let descriptors = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, tuned_family_options(name, Some(&cache), &memory)));
        // Formats 1 and 2: opened only to be dropped once the format is upgraded.
        let legacy = has_legacy_cases.then(|| ColumnFamilyDescriptor::new(CF_CASES_LEGACY, Options::default()));
        let mut db = DB::open_cf_descriptors(&db_options, path, descriptors.chain(legacy))?;
        // `Db::cf` relies on every family being open: checked here, once, against the disk.
        if let Some(missing) = ALL_CFS.iter().find(|name| db.cf_handle(name).is_none()) {
            return Err(OpenError::Damaged(format!("column family {missing} did not open")));
        }
        format::check(&db)?;
        if has_legacy_cases {
            // After the upgrade (or its crash-interrupted rest): the old records are unused.
            db.drop_cf(CF_CASES_LEGACY)?;
        }
        Ok(Db {
            db,
            path: path.to_path_buf(),
            memory,
            poisoned: AtomicBool::new(false),
            durability: AtomicU8::new(Durability::Synced as u8),
            keys: std::sync::RwLock::default(),
            #[cfg(test)]
            fail_at: std::sync::Mutex::new(None),
            #[cfg(any(test, feature = "testkit"))]
            plan: fault_plan::FaultPlan::attached(path),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bounds of its caches and buffers.
    pub fn memory(&self) -> MemoryBudget {
        self.memory
    }

    /// The data keys folds open sealed bodies with.
    pub fn keys(&self) -> std::sync::Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the data keys.
    pub(crate) fn set_keys(&self, keys: std::sync::Arc<KeySet>) {
        match self.keys.write() {
            Ok(mut held) => *held = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// A column family opened by [`Db::open`].
    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Every name in ALL_CFS is opened (or created) and checked by `Db::open`; callers only
        // pass those constants, so no input or disk state reaches this expect.
        #[allow(clippy::expect_used)]
        self.db.cf_handle(name).expect("column family created at open")
    }

    /// The database, for reads.
    pub(crate) fn rocks(&self) -> &DB {
        &self.db
    }

    /// How commits reach the disk now.
    pub fn durability(&self) -> Durability {
        match self.durability.load(Ordering::Acquire) {
            1 => Durability::DeferredSync,
            2 => Durability::NoWal,
            _ => Durability::Synced,
        }
    }

    /// Changes how later commits reach the disk (see [`Durability`]).
    pub fn set_durability(&self, durability: Durability) {
        self.durability.store(durability as u8, Ordering::Release);
    }

    /// Writes a batch as [`Db::durability`] says (by default durably: WAL synced). A failure
    /// poisons the database.
    pub(crate) fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut write = WriteOptions::default();
        match self.durability() {
            Durability::Synced => write.set_sync(true),
            Durability::DeferredSync => {}
            Durability::NoWal => write.disable_wal(true),
        }
        self.write(batch, &write)
    }

    /// Writes a batch to the WAL without waiting for the disk, whatever the durability: the
    /// caller syncs ([`Db::sync_wal`]) before it reports the batch durable.
    pub(crate) fn write_unsynced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.write(batch, &WriteOptions::default())
    }

    /// Flushes every family to SST files and waits for it: every write so far is durable and
    /// consistent. Ends [`Durability::NoWal`] and [`Durability::DeferredSync`].
    pub fn persist(&self) -> Result<(), StoreError> {
        self.flush_families(&ALL_CFS).map_err(|e| self.poison("flush", e))?;
        self.sync()
    }

    /// Makes every commit so far durable (syncs the WAL) and ends [`Durability::DeferredSync`].
    pub fn sync(&self) -> Result<(), StoreError> {
        self.set_durability(Durability::Synced);
        self.sync_wal()
    }

    /// Waits until every write so far is on disk (syncs the WAL). A failure poisons the database.
    pub(crate) fn sync_wal(&self) -> Result<(), StoreError> {
        self.injected("WAL sync").map_err(|e| self.poison("WAL sync", e))?;
        self.db.flush_wal(true).map_err(|e| self.poison("WAL sync", e))
    }

    /// Marks the database unusable after a failed write, WAL sync or flush: it refuses writes
    /// until reopened (the open replays or rebuilds what is consistent).
    fn poison(&self, what: &str, error: impl Into<StoreError>) -> StoreError {
        let error = error.into();
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %error, "{what} failed: the store refuses writes until reopened");
        error
    }

    /// Writes one record durably (the format version, as it is), to learn whether the disk takes
    /// writes now. A failure poisons the database, as every failed write does.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        let meta = self.cf(crate::codec::keys::CF_META);
        let key = crate::codec::keys::META_FORMAT_VERSION;
        // An open checks the version is there: a store without one does not get this far.
        let version = self.db.get_cf(meta, key)?.unwrap_or_default();
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, key, version);
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.write(batch, &synced)
    }

    /// Whether a failed write poisoned the database (it refuses writes until reopened).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn write(&self, batch: WriteBatch, options: &WriteOptions) -> Result<(), StoreError> {
        if self.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        self.injected("write").map_err(|e| self.poison("write", e))?;
        self.db.write_opt(batch, options).map_err(|e| self.poison("write", e))
    }

    /// Flushes the memtables of these column families to SST files and waits for it.
    pub(crate) fn flush_families(&self, names: &[&str]) -> Result<(), StoreError> {
        self.injected("flush")?;
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(true);
        let families: Vec<&ColumnFamily> = names.iter().map(|name| self.cf(name)).collect();
        Ok(self.db.flush_cfs_opt(&families, &flush)?)
    }

    /// Flushes every column family and waits until RocksDB has no compaction pending or running
    /// (at most `timeout`): the shape a store in use settles into, without rewriting every file
    /// as [`Db::compact`] does.
    pub fn settle(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.flush_families(&ALL_CFS)?;
        let mut options = rocksdb::WaitForCompactOptions::default();
        options.set_flush(true);
        options.set_timeout(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX));
        Ok(self.db.wait_for_compact(&options)?)
    }

    /// Flushes every column family and compacts each to its last level, waiting for both: the
    /// database is left settled (no pending flush or compaction).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.flush_families(&ALL_CFS)?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_exclusive_manual_compaction(true);
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for name in ALL_CFS {
            self.db.compact_range_cf_opt(self.cf(name), None::<&[u8]>, None::<&[u8]>, &options);
        }
        Ok(())
    }

    /// Drops the SST files of these column families whose keys all start with `prefix` (their
    /// records vanish without a compaction). Records of the prefix in other files, memtables or
    /// the WAL stay: callers delete those with [`Db::delete_prefix`] afterwards.
    pub(crate) fn drop_files_within(&self, names: &[&str], prefix: &[u8]) -> Result<(), StoreError> {
        self.injected("drop of files")?;
        let end = prefix_end(prefix);
        for name in names {
            self.db.delete_file_in_range_cf(self.cf(name), prefix, end.as_slice())?;
        }
        Ok(())
    }

    /// Whether a column family holds any record whose key starts with `prefix`.
    pub(crate) fn holds_prefix(&self, cf: &str, prefix: &[u8]) -> Result<bool, StoreError> {
        let mut read = rocksdb::ReadOptions::default();
        read.set_iterate_upper_bound(prefix_end(prefix));
        read.fill_cache(false);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf), read);
        iter.seek(prefix);
        let holds = iter.valid();
        iter.status()?;
        Ok(holds)
    }

    /// Deletes every record of a column family whose key starts with `prefix` (in `batch`).
    pub(crate) fn delete_prefix(&self, batch: &mut WriteBatch, cf: &str, prefix: &[u8]) {
        batch.delete_range_cf(self.cf(cf), prefix, prefix_end(prefix).as_slice());
    }

    /// Moves finished SST files into a column family (their records become visible and durable
    /// together).
    pub(crate) fn ingest_files(&self, cf: &str, files: Vec<PathBuf>) -> Result<(), StoreError> {
        self.injected("ingest of external files")?;
        let mut options = rocksdb::IngestExternalFileOptions::default();
        options.set_move_files(true);
        self.db.ingest_external_file_cf_opts(self.cf(cf), &options, files)?;
        Ok(())
    }

    /// A named step of a multi-step write (a bulk catch-up, a rebuild). Tests make the step fail
    /// once ([`Db::fail_at`]), or count it as an operation of a workload's [`fault_plan`], to show
    /// that a failure at any step leaves nothing the next commit or open could take for done;
    /// elsewhere this is nothing.
    #[inline]
    pub(crate) fn fault_point(&self, _step: &'static str) -> Result<(), StoreError> {
        self.injected(_step)?;
        #[cfg(test)]
        {
            let mut fail_at = self.fail_at.lock().unwrap_or_else(|poison| poison.into_inner());
            if *fail_at == Some(_step) {
                *fail_at = None;
                return Err(StoreError::Io(std::io::Error::other(format!("injected fault: {_step}"))));
            }
        }
        Ok(())
    }

    /// Counts a storage operation in the fault plan attached to this database (tests only) and
    /// fails it when the plan says so; elsewhere this is nothing.
    #[inline]
    fn injected(&self, _operation: &'static str) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "testkit"))]
        if let Some(plan) = &self.plan {
            plan.check(_operation).map_err(StoreError::Io)?;
        }
        Ok(())
    }

    /// Makes the next [`Db::fault_point`] named `step` fail.
    #[cfg(test)]
    pub(crate) fn fail_at(&self, step: &'static str) {
        *self.fail_at.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(step);
    }

    /// One record.
    pub(crate) fn get(&self, cf: &str, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }
}

/// Whether another process holds the lock RocksDB takes on a database's `LOCK` file (a store in
/// use by a running `casesync`). Asked only after an open failed, so this process holds no lock
/// there that closing the probe could drop.
#[cfg(target_os = "linux")]
pub fn held_by_another_process(db: &Path) -> bool {
    use rustix::fs::{fcntl_lock, FlockOperation};
    use rustix::io::Errno;
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(db.join("LOCK")) else { return false };
    // Granted, the probe's lock ends when `file` closes.
    matches!(fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive), Err(Errno::AGAIN | Errno::ACCESS))
}

/// Whether another process holds a database's lock: not known on this platform.
#[cfg(not(target_os = "linux"))]
pub fn held_by_another_process(_db: &Path) -> bool {
    false
}

/// Read options for iterating across cases in the `case_parts` family, past its prefix filter.
/// What a scan of a whole family may hold in readahead buffers, all files together.
pub const SCAN_READAHEAD_BYTES_MAX: usize = 16 << 20;

/// Readahead per file of a scan, at most (with few files) and at least (with thousands).
const SCAN_READAHEAD_PER_FILE_MAX: usize = 2 << 20;
/// See [`SCAN_READAHEAD_PER_FILE_MAX`].
const SCAN_READAHEAD_PER_FILE_MIN: usize = 4 << 10;

impl Db {
    /// The readahead for each file a scan of family `cf` reads: a scan reads every file of the
    /// family at once, each with a buffer of this size, so it is [`SCAN_READAHEAD_BYTES_MAX`]
    /// shared among the files (right after a bulk catch-up of 10M events, several hundred spill
    /// files wait for their compaction: at 2 MiB each, a state hash scan then took 700 MiB).
    pub(crate) fn scan_readahead(&self, cf: &str) -> usize {
        let files: u64 = (0..7)
            .filter_map(|level| {
                self.db.property_int_value_cf(self.cf(cf), &format!("rocksdb.num-files-at-level{level}")).ok().flatten()
            })
            .sum();
        let files = usize::try_from(files).unwrap_or(usize::MAX).max(1);
        // Never 0: RocksDB takes that for its automatic readahead, up to 256 KiB a file.
        (SCAN_READAHEAD_BYTES_MAX / files).clamp(SCAN_READAHEAD_PER_FILE_MIN, SCAN_READAHEAD_PER_FILE_MAX)
    }
}

pub(crate) fn total_order() -> rocksdb::ReadOptions {
    let mut read = rocksdb::ReadOptions::default();
    read.set_total_order_seek(true);
    read
}
