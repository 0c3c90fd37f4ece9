//! The append-only RocksDB log: events, heads, the arrival index, metadata and projections, all
//! changed together in one synced write batch.
//!
//! Writes (local appends and ingests) are serialised by one mutex that also owns the cached heads;
//! reads go straight to RocksDB. After a failed write the store is poisoned and refuses further
//! writes until it is reopened.

mod append;
pub(crate) use append::next_hlc;
mod ingest;
pub mod key_layout;
mod reader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

pub use ingest::{IngestReport, PreparedBatch, RejectReason, Rejection};
pub use reader::{Arrival, EventsAfter};

use crate::error::{OpenError, StoreError};
use crate::event::SignedEvent;
use crate::ids::{AuthorId, CaseId, EventId, SpaceId};
use crate::projection;
use crate::signing::VerifyingKey;
use crate::vector_clock::VersionVector;
use key_layout::*;

/// The on-disk format this build writes and reads. See `docs/log-format.md`.
pub const FORMAT_VERSION: u32 = 5;

/// Column family options any direct open of a store's RocksDB (tools, tests) must use: the
/// `case_parts` family needs its merge operator. Without it RocksDB cannot read, flush or compact the
/// case records, and replaying the WAL at open stops at the first batch with a merge (silently
/// dropping every later write), so never open a store with plain options.
pub fn column_family_options(name: &str) -> Options {
    let mut options = Options::default();
    if name == CF_CASES {
        options.set_merge_operator_associative(projection::CASE_PART_MERGE, projection::merge_case_part);
    }
    options
}

/// A column family's options as a store opens it: [`column_family_options`] plus compression,
/// table format, filters and memtable sizes. The SST files a bulk load writes itself use the
/// same (`cache`: none), so they read like the files RocksDB writes.
pub(crate) fn tuned_family_options(name: &str, cache: Option<&rocksdb::Cache>) -> Options {
    let mut cf_options = column_family_options(name);
    // Events are not compressed: each holds a signature, hashes and (once bodies are
    // sealed) ciphertext, which LZ4 barely shrinks (16 MiB memtables flushed to 11 MiB
    // files) while it was the largest share of every flush of a bulk catch-up.
    cf_options.set_compression_type(if name == CF_EVENTS {
        rocksdb::DBCompressionType::None
    } else {
        rocksdb::DBCompressionType::Lz4
    });
    if name == CF_CASES {
        // Case parts have random keys, so every flushed file overlaps all the others and
        // each L0 -> L1 compaction rewrites the whole family (through the merge operator).
        // Compacting 12 files at a time instead of 4 rewrites it a third as often; a case
        // read still touches one file per L0 file only where its prefix Bloom filter says so.
        cf_options.set_level_zero_file_num_compaction_trigger(CASE_PARTS_L0_FILES_TO_COMPACT);
    }
    if matches!(name, CF_CASES | CF_CASE_EVENTS) {
        // A bulk fold ingests its spills as L0 files all at once (one per 4096 cases it wrote
        // out: 25 for 1M events, 250 for 10M). RocksDB's write stalls for many L0 files (20
        // slow down, 36 stop) apply to the whole database, so they would hold up every write
        // until the compaction after the ingest is done; these families are small merge
        // operands otherwise, and reads skip files by their Bloom filters. Past these, writes
        // still wait for compactions.
        cf_options.set_level_zero_slowdown_writes_trigger(PROJECTION_L0_FILES_SLOWDOWN);
        cf_options.set_level_zero_stop_writes_trigger(PROJECTION_L0_FILES_STOP);
    }
    let mut table = rocksdb::BlockBasedOptions::default();
    if let Some(cache) = cache {
        table.set_block_cache(cache);
    }
    if name == CF_CASES {
        // A case is read as all records under space(16) case(16): a prefix Bloom filter
        // lets that seek skip every file without the case (most reads are of cases in
        // no or one file). Iterators across cases must ask for total order.
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(false);
        cf_options.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(CASE_PREFIX_BYTES));
        cf_options.set_memtable_prefix_bloom_ratio(0.05);
    }
    cf_options.set_block_based_table_factory(&table);
    let big = matches!(name, CF_EVENTS | CF_CASES | CF_CASE_EVENTS | CF_ARRIVAL);
    cf_options.set_write_buffer_size(if big { 16 << 20 } else { 2 << 20 });
    cf_options.set_max_write_buffer_number(2);
    cf_options
}

/// Database options for a direct open or a repair: with the `cases` merge operator as the
/// default for every family (only merge records call it).
pub fn direct_open_options() -> Options {
    column_family_options(CF_CASES)
}

/// Opens a closed store's RocksDB directly, read-write, with every column family and its options
/// (tools and tests that need to reach below the [`Store`] API).
pub fn open_direct(path: &Path) -> Result<DB, rocksdb::Error> {
    let descriptors = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, column_family_options(name)));
    DB::open_cf_descriptors(&direct_open_options(), path, descriptors)
}

/// Checks the column families of an existing store before opening it: a family this build
/// does not know means a newer format, whose records it must not replay.
fn known_families(path: &Path) -> Result<Vec<String>, OpenError> {
    let Ok(listed) = DB::list_cf(&Options::default(), path) else {
        return Ok(Vec::new()); // No store yet (or no manifest): open creates or reports it.
    };
    let unknown: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|name| *name != "default" && *name != CF_CASES_LEGACY && !ALL_CFS.contains(name))
        .collect();
    if !unknown.is_empty() {
        return Err(OpenError::UnknownColumnFamilies(unknown.join(", ")));
    }
    Ok(listed)
}

/// Budget for all memtables of a store together, in bytes.
pub const MEMTABLES_BYTES_MAX: usize = 64 << 20;

/// Bound on the WAL files kept (see `Store::open`), in bytes.
pub const WAL_BYTES_MAX: u64 = 128 << 20;

/// L0 files of the `case_parts` family that start a compaction (RocksDB's default is 4; its
/// slowdown trigger, 20, stays above it). Measured with the full-sync benchmark together with
/// uncompressed events: node B 10.4-10.9 -> 8.4 CPU s for 1M events.
pub const CASE_PARTS_L0_FILES_TO_COMPACT: i32 = 12;

/// L0 files of a projection family past which RocksDB slows (stops) writes: far above the
/// default 20 (36), since a bulk fold ingests its spills as L0 files at once.
pub const PROJECTION_L0_FILES_SLOWDOWN: i32 = 400;
/// See [`PROJECTION_L0_FILES_SLOWDOWN`].
pub const PROJECTION_L0_FILES_STOP: i32 = 1000;

/// Block cache shared by all column families, in bytes.
pub const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Maintain case projections (false for a relay, which only stores and forwards).
    pub projections: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { projections: true }
    }
}

/// The head of one author's chain in one space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Highest contiguous seq stored.
    pub seq: u64,
    /// Link hash of the event at that seq: what the next event's `prev` must be.
    pub link: EventId,
}

/// State owned by the single writer.
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) heads: HashMap<SpaceId, HashMap<AuthorId, Head>>,
    pub(crate) next_position: u64,
    pub(crate) max_hlc: u64,
    pub(crate) fences: HashMap<(SpaceId, AuthorId), u64>,
    pub(crate) keys: HashMap<AuthorId, VerifyingKey>,
    /// Bulk catch-ups in progress ([`Store::defer_projections`]); while above zero, ingests
    /// fold events into in-memory deltas instead of the views and commands are refused.
    pub(crate) deferrals: u32,
    /// Per space, the deltas folded during the bulk catch-up.
    pub(crate) deferred: HashMap<SpaceId, projection::DeferredFold>,
    /// Case states the deferred folds hold before writing the least recently touched out.
    pub(crate) deferred_cases_max: usize,
    /// Whether a bulk catch-up into empty projections digests the cases it writes out, to commit
    /// the state hash with the watermark ([`Store::defer_projections_holding`]).
    pub(crate) deferred_digests: bool,
}

impl WriterState {
    pub(crate) fn head(&self, space: &SpaceId, author: &AuthorId) -> Option<Head> {
        self.heads.get(space).and_then(|h| h.get(author)).copied()
    }

    pub(crate) fn vector(&self, space: &SpaceId) -> VersionVector {
        self.heads.get(space).map(|h| h.iter().map(|(author, head)| (*author, head.seq)).collect()).unwrap_or_default()
    }
}

/// What one commit changed, for subscribers.
#[derive(Clone, Debug, Default)]
pub struct CommitSummary {
    /// Events stored.
    pub events: u64,
    /// Arrival position after the last stored event (the next position to be used).
    pub next_position: u64,
}

/// Events staged in a write batch by [`Store::stage_events`], and the writer state after them.
struct StagedEvents {
    batch: WriteBatch,
    after: StateAfter,
}

/// What the writer state of a space becomes once staged events are committed.
struct StateAfter {
    heads: HashMap<AuthorId, Head>,
    next_position: u64,
    max_hlc: u64,
    events: u64,
}

impl StateAfter {
    /// Moves the writer state to this, after the commit.
    fn apply(self, state: &mut WriterState, space: &SpaceId) -> CommitSummary {
        state.heads.entry(*space).or_default().extend(self.heads);
        state.next_position = self.next_position;
        state.max_hlc = self.max_hlc;
        CommitSummary { events: self.events, next_position: self.next_position }
    }
}

/// The log store.
pub struct Store {
    db: DB,
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<WriterState>,
    poisoned: AtomicBool,
    /// Whether commits skip waiting for the disk until [`Store::sync`] ([`Store::defer_syncs`]).
    syncs_deferred: AtomicBool,
    /// Whether writes skip the WAL until [`Store::persist`] ([`Store::write_without_wal`]).
    wal_skipped: AtomicBool,
    /// Commands waiting for the writer (see [`Store::execute`]).
    pub(crate) queued: Mutex<Vec<std::sync::Arc<crate::commands::QueuedCommand>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `path`, checks its format version and that heads
    /// match the stored events, and brings projections up to date if they lag (never on a clean
    /// open).
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, OpenError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);
        // Memory: all memtables together stay under this budget (RocksDB flushes the largest when
        // it is reached), so a node stays well under 256 MiB even during a million-event sync.
        db_options.set_db_write_buffer_size(MEMTABLES_BYTES_MAX);
        // WAL files live until every family with data in them has flushed; small families (meta,
        // heads) flush rarely, so without a bound the WAL grew to hundreds of MiB in a 1M-event
        // sync and an open after a crash replayed all of it. Past this total RocksDB flushes
        // the families that hold the oldest WAL.
        db_options.set_max_total_wal_size(WAL_BYTES_MAX);
        // One block cache for every column family (RocksDB's default is a cache per family).
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let existing = known_families(path)?;
        let has_legacy_cases = existing.iter().any(|name| name == CF_CASES_LEGACY);
        let descriptors =
            ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, tuned_family_options(name, Some(&cache))));
        // Formats 1 and 2: opened only to be dropped once the format is upgraded.
        let legacy = has_legacy_cases.then(|| ColumnFamilyDescriptor::new(CF_CASES_LEGACY, Options::default()));
        let db = DB::open_cf_descriptors(&db_options, path, descriptors.chain(legacy))?;
        // Only once the store is ours (RocksDB's lock): spill files a crash left are not wanted.
        projection::spill_files::remove_stale(path)?;
        // `Store::cf` relies on every family being open: checked here, once, against the disk.
        if let Some(missing) = ALL_CFS.iter().find(|name| db.cf_handle(name).is_none()) {
            return Err(OpenError::Damaged(format!("column family {missing} did not open")));
        }
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            options,
            writer: Mutex::new(WriterState::default()),
            poisoned: AtomicBool::new(false),
            syncs_deferred: AtomicBool::new(false),
            wal_skipped: AtomicBool::new(false),
            queued: Mutex::new(Vec::new()),
        };
        store.check_format()?;
        if has_legacy_cases {
            // After the upgrade (or its crash-interrupted rest): the old records are unused.
            store.db.drop_cf(CF_CASES_LEGACY)?;
        }
        let state = store.load_writer_state()?;
        *store.lock_writer() = state;
        store.check_heads()?;
        if options.projections {
            store.catch_up_projections().map_err(OpenError::CatchUp)?;
        }
        Ok(store)
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this store maintains case projections.
    pub fn has_projections(&self) -> bool {
        self.options.projections
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Every name in ALL_CFS is opened (or created) and checked by `Store::open`; callers only
        // pass those constants, so no input or disk state reaches this expect.
        #[allow(clippy::expect_used)]
        self.db.cf_handle(name).expect("column family created at open")
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock cannot leave RocksDB half-written (writes are one
        // batch), so a poisoned mutex's state is still the last committed one.
        self.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn check_format(&self) -> Result<(), OpenError> {
        let meta = self.cf(CF_META);
        match self.db.get_cf(meta, META_FORMAT_VERSION)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
                let mut write = WriteOptions::default();
                write.set_sync(true);
                self.db.write_opt(batch, &write)?;
                Ok(())
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| OpenError::Damaged("format version record is not 4 bytes".into()))?;
                if found > FORMAT_VERSION {
                    return Err(OpenError::FormatTooNew { found, supported: FORMAT_VERSION });
                }
                if found < FORMAT_VERSION {
                    self.upgrade_format(found)?;
                }
                Ok(())
            }
        }
    }

    /// Upgrades an older format. Version 1 kept each case's projection as one record; version 2
    /// one record per register; version 3 writes those records as merge operands into a new
    /// column family (the old one is dropped after this): from 1 and 2 only derived data changed,
    /// so the watermarks are dropped (in the synced batch with the new version) and the
    /// projections rebuilt from the log. Version 4 writes arrival records per run of events, and
    /// version 5 history records of several entries; the readers still read the single-event
    /// records before them, so from 3 and 4 only the version moves (an older build refuses the
    /// newer version instead of misreading its records).
    fn upgrade_format(&self, found: u32) -> Result<(), OpenError> {
        let mut batch = WriteBatch::default();
        let meta = self.cf(CF_META);
        if found < 3 {
            tracing::info!(from = found, to = FORMAT_VERSION, "upgrading the store format: projections are rebuilt");
            // The old projections are in the legacy family (dropped after this); `case_parts` is
            // new and empty, and the rebuild fills it.
            for item in self.db.prefix_iterator_cf(meta, b"watermark/") {
                let (key, _) = item?;
                if !key.starts_with(b"watermark/") {
                    break;
                }
                batch.delete_cf(meta, key);
            }
        } else {
            tracing::info!(from = found, to = FORMAT_VERSION, "upgrading the store format");
        }
        batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
        let mut write = WriteOptions::default();
        write.set_sync(true);
        self.db.write_opt(batch, &write)?;
        Ok(())
    }

    fn load_writer_state(&self) -> Result<WriterState, OpenError> {
        let mut state = WriterState::default();
        for item in self.db.iterator_cf(self.cf(CF_HEADS), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let parsed = (key.len() == 48 && value.len() == 40)
                .then(|| {
                    Some((
                        SpaceId::from_slice(&key[..16]).ok()?,
                        AuthorId::from_slice(&key[16..]).ok()?,
                        be_u64(&value[..8])?,
                        EventId::from_slice(&value[8..]).ok()?,
                    ))
                })
                .flatten();
            let (space, author, seq, id) =
                parsed.ok_or_else(|| OpenError::Damaged("a head record is malformed".into()))?;
            state.heads.entry(space).or_default().insert(author, Head { seq, link: id });
        }
        let meta = self.cf(CF_META);
        let read_u64 = |key: &[u8]| -> Result<u64, OpenError> {
            match self.db.get_cf(meta, key)? {
                None => Ok(0),
                Some(v) => be_u64(&v).ok_or_else(|| OpenError::Damaged("a meta counter is not 8 bytes".into())),
            }
        };
        state.next_position = read_u64(META_NEXT_POSITION)?.max(1);
        state.max_hlc = read_u64(META_MAX_HLC)?;
        for item in self.db.prefix_iterator_cf(meta, b"fence/") {
            let (key, value) = item?;
            if !key.starts_with(b"fence/") {
                break;
            }
            let rest = &key[6..];
            if let (Some(seq), Ok(space), Ok(author)) = (
                be_u64(&value),
                SpaceId::from_slice(rest.get(..16).unwrap_or(&[])),
                AuthorId::from_slice(rest.get(16..).unwrap_or(&[])),
            ) {
                state.fences.insert((space, author), seq);
            }
        }
        Ok(state)
    }

    /// Heads must name the last stored event of each chain, and that event must hash to the
    /// head's id (a crash can never leave them apart: they are written in one batch).
    fn check_heads(&self) -> Result<(), OpenError> {
        let state = self.lock_writer();
        let events = self.cf(CF_EVENTS);
        for (space, heads) in &state.heads {
            for (author, head) in heads {
                let stored = self.db.get_cf(events, event_key(space, author, head.seq))?;
                let matches = stored
                    .as_deref()
                    .and_then(|v| SignedEvent::from_stored(v).ok())
                    .is_some_and(|e| e.link == head.link);
                if !matches {
                    return Err(OpenError::Damaged(format!(
                        "head of {} in space {} names seq {} but that event is missing or differs",
                        author.device_id(),
                        space.short(),
                        head.seq
                    )));
                }
                if self.db.get_cf(events, event_key(space, author, head.seq + 1))?.is_some() {
                    return Err(OpenError::Damaged(format!(
                        "events of {} in space {} exist beyond its head seq {}",
                        author.device_id(),
                        space.short(),
                        head.seq
                    )));
                }
            }
        }
        Ok(())
    }

    fn catch_up_projections(&self) -> Result<(), StoreError> {
        let spaces: Vec<(SpaceId, VersionVector)> = {
            let state = self.lock_writer();
            state.heads.keys().map(|space| (*space, state.vector(space))).collect()
        };
        for (space, vector) in spaces {
            if self.projection_watermark(&space)? != vector {
                tracing::info!(space = %space.short(), "projections lag the log: rebuilding");
                self.rebuild_projections(&space)?;
            }
        }
        Ok(())
    }

    /// The version vector the stored projections of a space include.
    pub fn projection_watermark(&self, space: &SpaceId) -> Result<VersionVector, StoreError> {
        match self.db.get_cf(self.cf(CF_META), meta_watermark(space))? {
            None => Ok(VersionVector::new()),
            Some(bytes) => decode_vector(&bytes).ok_or_else(|| StoreError::Corrupt {
                space: *space,
                author: AuthorId::default(),
                seq: 0,
                reason: "projection watermark does not decode".into(),
            }),
        }
    }

    /// Writes a batch durably (WAL synced). A failure poisons the store.
    pub(crate) fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut write = WriteOptions::default();
        if self.wal_skipped.load(Ordering::Acquire) {
            write.disable_wal(true);
        } else {
            write.set_sync(!self.syncs_deferred.load(Ordering::Acquire));
        }
        self.write(batch, &write)
    }

    /// For a bulk load that is reported only at its end and can simply be run again (`replay-tool
    /// import`): until [`Store::sync`], commits go to the WAL without waiting for the disk. Each
    /// commit is still atomic and in order, so a crash or power cut loses at most a suffix of
    /// them (RocksDB recovers to a consistent point) and never leaves the store inconsistent.
    pub fn defer_syncs(&self) {
        self.syncs_deferred.store(true, Ordering::Release);
    }

    /// For a store built aside and thrown away unless it is finished (`replay-tool import` into a
    /// new data dir builds `db.importing` and renames it to `db` only at the end): until
    /// [`Store::persist`], nothing is written to the WAL at all (as with [`Store::defer_syncs`],
    /// commits are reported only at the end). A crash before `persist` leaves families at
    /// different points, a store that must not be used: its builder discards it.
    pub fn write_without_wal(&self) {
        self.syncs_deferred.store(true, Ordering::Release);
        self.wal_skipped.store(true, Ordering::Release);
    }

    /// Flushes every family to SST files and waits for it: every write so far is durable and
    /// consistent. Ends [`Store::write_without_wal`] and [`Store::defer_syncs`].
    pub fn persist(&self) -> Result<(), StoreError> {
        self.flush_families(&ALL_CFS).map_err(|e| self.poison("flush", e))?;
        self.wal_skipped.store(false, Ordering::Release);
        self.sync()
    }

    /// Makes every commit so far durable (syncs the WAL) and ends [`Store::defer_syncs`].
    pub fn sync(&self) -> Result<(), StoreError> {
        self.syncs_deferred.store(false, Ordering::Release);
        self.sync_wal()
    }

    /// Waits until every write so far is on disk (syncs the WAL). A failure poisons the store.
    fn sync_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.poison("WAL sync", e))
    }

    /// Marks the store unusable after a failed write, WAL sync or flush: it refuses writes until
    /// reopened (the open replays or rebuilds what is consistent).
    fn poison(&self, what: &str, error: rocksdb::Error) -> StoreError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %error, "{what} failed: the store refuses writes until reopened");
        StoreError::Rocks(error)
    }

    fn write(&self, batch: WriteBatch, options: &WriteOptions) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        self.db.write_opt(batch, options).map_err(|e| self.poison("write", e))
    }

    /// Flushes the memtables of these column families to SST files and waits for it.
    pub(crate) fn flush_families(&self, names: &[&str]) -> Result<(), rocksdb::Error> {
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(true);
        let families: Vec<&ColumnFamily> = names.iter().map(|name| self.cf(name)).collect();
        self.db.flush_cfs_opt(&families, &flush)
    }

    /// Stages accepted events (already verified, contiguous per author), their arrival records,
    /// heads, projections and metadata into one batch, commits it durably, then updates the
    /// writer state.
    ///
    /// With `announce` (and commits not deferred), the batch is written without waiting for the
    /// disk, `announce` is told the commit once the events are readable, and the WAL is synced
    /// before this returns: durable on return either way, but announced one disk sync sooner.
    /// Only for events some other node already holds durably (see
    /// [`Store::ingest_prepared_announcing`]). A bulk catch-up announces after its sync.
    pub(crate) fn stage_and_commit(
        &self,
        state: &mut WriterState,
        space: &SpaceId,
        events: &[SignedEvent],
        announce: Option<&mut dyn FnMut(&CommitSummary)>,
    ) -> Result<CommitSummary, StoreError> {
        if events.is_empty() {
            return Ok(CommitSummary { next_position: state.next_position, ..CommitSummary::default() });
        }
        let deferring = self.options.projections && state.deferrals > 0;
        if deferring {
            projection::begin_deferred(self, state, space)?;
            return self.stage_and_commit_deferring(state, space, events);
        }
        let StagedEvents { mut batch, after } = self.stage_events(state, space, events);
        if self.options.projections {
            projection::fold_into_batch(self, &mut batch, space, events)?;
            let mut vector_after = state.vector(space);
            for (author, head) in &after.heads {
                vector_after.set(*author, head.seq);
            }
            batch.put_cf(self.cf(CF_META), meta_watermark(space), encode_vector(&vector_after));
        }
        match announce {
            Some(announce) if !self.syncs_deferred.load(Ordering::Acquire) => {
                // Written and readable first, announced, then durable before this returns.
                self.write(batch, &WriteOptions::default())?;
                let summary = after.apply(state, space);
                announce(&summary);
                self.sync_wal()?;
                Ok(summary)
            }
            _ => {
                self.commit(batch)?;
                Ok(after.apply(state, space))
            }
        }
    }

    /// [`Store::stage_and_commit`] during a bulk catch-up: the events are committed without
    /// their projections, which are folded into the space's deferred deltas instead.
    fn stage_and_commit_deferring(
        &self,
        state: &mut WriterState,
        space: &SpaceId,
        events: &[SignedEvent],
    ) -> Result<CommitSummary, StoreError> {
        let StagedEvents { batch, after } = self.stage_events(state, space, events);
        let cases_max = state.deferred_cases_max;
        let deferred = state.deferred.get_mut(space).filter(|d| d.usable);
        let fold = || deferred.map_or(Ok(()), |d| projection::fold_deferred(d, cases_max, events));
        let (committed, folded) = if self.syncs_deferred.load(Ordering::Acquire) {
            // A bulk load that waits for no disk (`replay-tool import`): its thread is the
            // bottleneck of its own pipeline, so the fold stays on it. (On a scoped thread
            // beside the write it gained nothing measurable: 166k vs 173k events/s.)
            let committed = self.commit(batch);
            let folded = if committed.is_ok() { fold() } else { Ok(()) };
            (committed, folded)
        } else {
            // A bulk catch-up: the events are written without waiting for the disk, then a
            // scoped thread waits for the WAL sync while this one folds them into the deferred
            // deltas. The fold stays on this long-lived thread: on a new scoped thread for each
            // batch (beside the staging and the write) node B took 0.7-0.9 CPU s more and
            // peaked 30-40 MiB higher (each new thread starts a fresh allocator heap). The sync
            // thread allocates nothing (with the write itself on a new thread each time, glibc
            // spread RocksDB's memtable blocks over its per-thread arenas and node B peaked 50
            // MiB higher). Durable before this returns, as a synced write.
            match self.write(batch, &WriteOptions::default()) {
                Err(error) => (Err(error), Ok(())),
                Ok(()) => std::thread::scope(|scope| {
                    let synced = scope.spawn(|| self.sync_wal());
                    let folded = fold();
                    (synced.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), folded)
                }),
            }
        };
        if committed.is_err() || folded.is_err() {
            // Events in the deltas but not stored, or stored but not all in the deltas: the end
            // must rebuild.
            if let Some(deferred) = state.deferred.get_mut(space) {
                deferred.usable = false;
            }
        }
        committed?;
        let summary = after.apply(state, space);
        folded?;
        Ok(summary)
    }

    /// Stages accepted events in a new batch: each event, its arrival record, the new heads and
    /// the arrival position and hlc after them (no projection).
    fn stage_events(&self, state: &WriterState, space: &SpaceId, events: &[SignedEvent]) -> StagedEvents {
        let mut batch = WriteBatch::default();
        let (cf_events, cf_arrival) = (self.cf(CF_EVENTS), self.cf(CF_ARRIVAL));
        let mut position = state.next_position;
        let mut new_heads: HashMap<AuthorId, Head> = HashMap::new();
        let mut max_hlc = state.max_hlc;
        // One arrival record per run of consecutive events by one author (format 4).
        let mut run: Option<(u64, AuthorId, u64, u64)> = None; // (position, author, first seq, count)
        let stage_arrival = |batch: &mut WriteBatch, run: Option<(u64, AuthorId, u64, u64)>| {
            if let Some((at, author, first, count)) = run {
                batch.put_cf(cf_arrival, at.to_be_bytes(), arrival_run_value(space, &author, first, count));
            }
        };
        // The head of the author whose events are being staged (events come grouped by author):
        // looked up when the author changes, noted in `new_heads` when it changes again.
        let mut current: Option<(AuthorId, Option<Head>)> = None;
        let mut stored = Vec::new();
        for event in events {
            let h = &event.header;
            let head = match &mut current {
                Some((author, head)) if *author == h.author => head,
                _ => {
                    if let Some((author, Some(head))) = current.take() {
                        new_heads.insert(author, head);
                    }
                    let head = new_heads.get(&h.author).copied().or_else(|| state.head(space, &h.author));
                    &mut current.insert((h.author, head)).1
                }
            };
            // Assert in pairs: verified before staging, and checked again here against the head.
            let expected_seq = head.map_or(1, |head| head.seq + 1);
            let expected_prev = head.map_or(EventId::ZERO, |head| head.link);
            assert!(h.seq == expected_seq && h.prev == expected_prev, "staged event must continue its chain");
            *head = Some(Head { seq: h.seq, link: event.link });
            event.write_stored(&mut stored);
            batch.put_cf(cf_events, event_key(space, &h.author, h.seq), &stored);
            match &mut run {
                Some((_, author, first, count)) if *author == h.author && *first + *count == h.seq => *count += 1,
                _ => {
                    stage_arrival(&mut batch, run.take());
                    run = Some((position, h.author, h.seq, 1));
                }
            }
            position += 1;
            max_hlc = max_hlc.max(h.hlc);
        }
        if let Some((author, Some(head))) = current {
            new_heads.insert(author, head);
        }
        stage_arrival(&mut batch, run);
        let cf_heads = self.cf(CF_HEADS);
        for (author, head) in &new_heads {
            let mut value = Vec::with_capacity(40);
            value.extend_from_slice(&head.seq.to_be_bytes());
            value.extend_from_slice(head.link.as_bytes());
            batch.put_cf(cf_heads, author_key(space, author), value);
        }
        let meta = self.cf(CF_META);
        batch.put_cf(meta, META_NEXT_POSITION, position.to_be_bytes());
        batch.put_cf(meta, META_MAX_HLC, max_hlc.to_be_bytes());
        let after = StateAfter { heads: new_heads, next_position: position, max_hlc, events: events.len() as u64 };
        StagedEvents { batch, after }
    }

    /// The version vector of a space: what this node holds.
    pub fn vector(&self, space: &SpaceId) -> VersionVector {
        self.lock_writer().vector(space)
    }

    /// The head of one author's chain.
    pub fn head(&self, space: &SpaceId, author: &AuthorId) -> Option<Head> {
        self.lock_writer().head(space, author)
    }

    /// Spaces with at least one event.
    pub fn spaces(&self) -> Vec<SpaceId> {
        let mut spaces: Vec<SpaceId> = self.lock_writer().heads.keys().copied().collect();
        spaces.sort();
        spaces
    }

    /// The next arrival position (one past the last stored event).
    pub fn next_position(&self) -> u64 {
        self.lock_writer().next_position
    }

    /// Highest hlc seen in any stored event.
    pub fn max_hlc(&self) -> u64 {
        self.lock_writer().max_hlc
    }

    /// One stored event.
    pub fn get_event(&self, space: &SpaceId, author: &AuthorId, seq: u64) -> Result<Option<SignedEvent>, StoreError> {
        match self.db.get_cf(self.cf(CF_EVENTS), event_key(space, author, seq))? {
            None => Ok(None),
            Some(value) => SignedEvent::from_stored(&value).map(Some).map_err(|e| StoreError::Corrupt {
                space: *space,
                author: *author,
                seq,
                reason: e.to_string(),
            }),
        }
    }

    /// Records that a peer holds `author`'s chain up to `seq`. While the local head is lower,
    /// local appends by that author are refused (the self-fork guard). Returns whether the fence
    /// is now above the local head.
    pub fn note_remote_head(&self, space: &SpaceId, author: &AuthorId, seq: u64) -> Result<bool, StoreError> {
        let mut state = self.lock_writer();
        let local = state.head(space, author).map_or(0, |h| h.seq);
        let known = state.fences.get(&(*space, *author)).copied().unwrap_or(0);
        if seq > known && seq > local {
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(CF_META), meta_fence(space, author), seq.to_be_bytes());
            self.commit(batch)?;
            state.fences.insert((*space, *author), seq);
        }
        Ok(state.fences.get(&(*space, *author)).copied().unwrap_or(0) > local)
    }

    /// The fence of an author: the highest seq seen at a peer (0 when none).
    pub fn fence(&self, space: &SpaceId, author: &AuthorId) -> u64 {
        self.lock_writer().fences.get(&(*space, *author)).copied().unwrap_or(0)
    }

    /// Adds (or renames) a known device of a space: peers authenticate as one of these.
    pub fn add_member(&self, space: &SpaceId, author: &AuthorId, name: &str) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_MEMBERS), author_key(space, author), name.as_bytes());
        self.commit(batch)
    }

    /// The name of a known device, if it is one.
    pub fn member(&self, space: &SpaceId, author: &AuthorId) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_MEMBERS), author_key(space, author))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every known device of a space.
    pub fn members(&self, space: &SpaceId) -> Result<Vec<(AuthorId, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_MEMBERS), space.as_bytes()) {
            let (key, value) = item?;
            if !key.starts_with(space.as_bytes()) {
                break;
            }
            if let Ok(author) = AuthorId::from_slice(&key[16..]) {
                out.push((author, String::from_utf8_lossy(&value).into_owned()));
            }
        }
        Ok(out)
    }

    /// Starts a bulk catch-up: until the matching [`Store::resume_projections`], ingested events
    /// are folded into in-memory deltas (written out with the events whenever many cases are
    /// held) instead of into the views; the watermark stays behind, so a crash meanwhile is
    /// repaired by the rebuild at the next open, and commands are refused. Worth it when far
    /// more events arrive than the store holds: each case is written once per thousands of
    /// events instead of once per batch.
    pub fn defer_projections(&self) {
        self.defer_projections_holding(projection::DEFERRED_CASES_IN_MEMORY, false);
    }

    /// [`Store::defer_projections`], holding up to `cases` case states in memory (about 5.4 KiB
    /// each for a case with eight 120-byte fields). More cases written per spill means fewer
    /// writes when an author's chain cycles over more cases than the default holds. With
    /// `state_hash`, a catch-up into empty projections also digests each case it writes out and
    /// commits the state hash with the watermark, so [`Store::state_hash`] needs no scan after
    /// it (for an import that reports the hash; a node's catch-up skips that cost, a tenth of
    /// its ingest thread at 1M events).
    pub fn defer_projections_holding(&self, cases: usize, state_hash: bool) {
        if self.options.projections {
            let mut state = self.lock_writer();
            state.deferrals += 1;
            state.deferred_cases_max = cases.max(4);
            state.deferred_digests |= state_hash;
        }
    }

    /// Ends a bulk catch-up; the last one to end writes each space's remaining deltas and its
    /// watermark in one synced batch, or rebuilds the projections of a space whose deltas are
    /// not usable. Returns how many spaces were rebuilt.
    pub fn resume_projections(&self) -> Result<usize, StoreError> {
        if !self.options.projections {
            return Ok(0);
        }
        let mut state = self.lock_writer();
        state.deferrals = state.deferrals.saturating_sub(1);
        if state.deferrals > 0 {
            return Ok(0);
        }
        state.deferred_digests = false;
        let spaces: Vec<SpaceId> = state.heads.keys().copied().collect();
        let mut deferred = std::mem::take(&mut state.deferred);
        let mut rebuilt = 0;
        for space in spaces {
            let vector = state.vector(&space);
            if self.projection_watermark(&space)? == vector {
                continue;
            }
            let mut batch = WriteBatch::default();
            if projection::finish_deferred(self, deferred.remove(&space), &mut batch, &space, &vector)? {
                self.commit(batch)?;
            } else {
                projection::rebuild(self, &mut state, &space)?;
                rebuilt += 1;
            }
        }
        Ok(rebuilt)
    }

    /// Events of a space stored but not yet in its projections (during a bulk catch-up).
    pub fn projections_behind(&self, space: &SpaceId) -> Result<u64, StoreError> {
        if !self.options.projections {
            return Ok(0);
        }
        self.projections_behind_locked(&self.lock_writer(), space)
    }

    /// [`Store::projections_behind`] for a caller holding the writer lock.
    pub(crate) fn projections_behind_locked(&self, state: &WriterState, space: &SpaceId) -> Result<u64, StoreError> {
        let held = state.vector(space);
        Ok(held.total().saturating_sub(self.projection_watermark(space)?.total()))
    }

    /// Drops and rebuilds the case projections of a space from the log. Returns the state hash.
    pub fn rebuild_projections(&self, space: &SpaceId) -> Result<String, StoreError> {
        let mut state = self.lock_writer();
        projection::rebuild(self, &mut state, space)
    }

    /// Flushes every column family and compacts each to its last level, waiting for both: the
    /// store is left settled (no pending flush or compaction). For tools and benchmarks that
    /// must not leave background work behind (a preloaded log, before it is copied and timed).
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
    /// the WAL stay: callers delete those with [`Store::delete_prefix`] afterwards.
    pub(crate) fn drop_files_within(&self, names: &[&str], prefix: &[u8]) -> Result<(), StoreError> {
        let end = prefix_end(prefix);
        for name in names {
            self.db.delete_file_in_range_cf(self.cf(name), prefix, end.as_slice())?;
        }
        Ok(())
    }

    /// Deletes every record of a column family whose key starts with `prefix` (in `batch`).
    pub(crate) fn delete_prefix(&self, batch: &mut WriteBatch, cf: &str, prefix: &[u8]) {
        batch.delete_range_cf(self.cf(cf), prefix, prefix_end(prefix).as_slice());
    }

    /// Cases whose id starts with the given bytes (each once, however many parts it has).
    pub(crate) fn case_ids_with_prefix(
        &self,
        space: &SpaceId,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<CaseId>, StoreError> {
        let start = [space.as_bytes().as_slice(), prefix].concat();
        let mut read = total_order();
        read.set_iterate_upper_bound(prefix_end(&start));
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_CASES), read);
        let mut out: Vec<CaseId> = Vec::new();
        iter.seek(&start);
        while out.len() < limit {
            let Some(key) = iter.key() else { break };
            let Some(id) = key.get(16..32).and_then(|bytes| CaseId::from_slice(bytes).ok()) else { break };
            out.push(id);
            // Skip the rest of this case's parts.
            iter.seek(prefix_end(&key[..32]));
        }
        iter.status()?;
        Ok(out)
    }
}

/// Read options for iterating across cases in the `case_parts` family, past its prefix filter.
pub(crate) fn total_order() -> rocksdb::ReadOptions {
    let mut read = rocksdb::ReadOptions::default();
    read.set_total_order_seek(true);
    read
}

/// Encodes a version vector for metadata: (author(32) seq(8))*.
pub(crate) fn encode_vector(vector: &VersionVector) -> Vec<u8> {
    let mut out = Vec::with_capacity(vector.len() * 40);
    for (author, seq) in vector.iter() {
        out.extend_from_slice(author.as_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

/// Decodes [`encode_vector`]'s bytes.
pub(crate) fn decode_vector(bytes: &[u8]) -> Option<VersionVector> {
    if !bytes.len().is_multiple_of(40) {
        return None;
    }
    bytes
        .chunks_exact(40)
        .map(|chunk| Some((AuthorId::from_slice(&chunk[..32]).ok()?, be_u64(&chunk[32..])?)))
        .collect()
}
