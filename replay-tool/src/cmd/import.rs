//! `replay-tool import`. Into a data dir that already has a store: checks a whole backup file
//! first (trailer hash and count, every hash link anchored at the stored heads, each chain's last
//! signature, events already held equal to the stored ones), and only then ingests it in batches.
//! Into a data dir without one: a single pass that stores into a staging store beside `db/`
//! (the ingest checks chains and signatures, the reader the trailer) and renames it to `db/` only
//! once the whole file verified. Either way a truncated or tampered file stores nothing. Each pass
//! reads, decodes and hashes the file on a second thread; memory holds a few batches.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use casesync_engine::codec::backup_format::{BackupError, BackupHeader, BackupReader, BackupRecord, BackupSummary};
use casesync_engine::log::ingest::{PreparedBatch, RejectReason, Rejection};
use casesync_engine::model::error::EventError;
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::limits::SIGNATURE_BYTES;
use casesync_engine::model::verify::{ChainVerifier, SignatureCheck};
use casesync_engine::store::{Store, StoreOptions};
use casesync_proto::v1 as pb;
use serde_json::json;

use crate::data_dir;
use crate::outcome::{rate, Damage, Outcome};
use crate::progress;
use crate::vector_arg::vector_json;

/// Events per batch read from the file.
pub const IMPORT_BATCH_EVENTS: usize = 1000;

/// Batches read ahead of the store (bounds the import's memory).
const PREPARED_BATCHES_QUEUED: usize = 4;

/// Events stored in one commit at most (batches read ahead are joined up to this).
const IMPORT_COMMIT_EVENTS_MAX: usize = 4 * IMPORT_BATCH_EVENTS;

/// Case states a bulk import holds in memory (about 5 KiB each): at 1M events, 16k gave
/// 82,000 ev/s at 212 MiB peak RSS, where a node's default (8k) folds little more than batch by
/// batch when authors cycle over more cases than that.
pub const IMPORT_CASES_IN_MEMORY: usize = 16_384;

/// Imports of at least this many new events (and at least as many as already held) fold in
/// memory while storing (`--projections bulk`) unless told otherwise.
pub const IMPORT_BULK_EVENTS_MIN: u64 = 10_000;

fn open_backup(file: &Path) -> anyhow::Result<BackupReader<BufReader<File>>> {
    let input = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    BackupReader::new(BufReader::with_capacity(1 << 20, input))
        .map_err(|e| Damage(format!("{} is not a usable backup: {e}", file.display())).into())
}

fn refused(file: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    Damage(format!("{} refused, nothing stored: {why}", file.display())).into()
}

/// Pass 1 of an import into an existing store: everything an ingest would check, without storing
/// anything.
fn check_file(file: &Path, store: &Store, space: SpaceId) -> anyhow::Result<(BackupHeader, BackupSummary, u64)> {
    let reader = open_backup(file)?;
    let header = reader.header().clone();
    if header.space != space {
        bail!("{} holds space {}, but this data dir serves space {}", file.display(), header.space, space);
    }
    let anchors =
        store.vector(&space).iter().filter_map(|(a, _)| Some((*a, store.head(&space, a)?))).collect::<Vec<_>>();
    let mut verifier = ChainVerifier::with_anchors(space, SignatureCheck::Range, anchors);
    let mut duplicates = 0u64;
    let bar = progress::bar(0, "check");
    // The file is read, decoded and hashed on a second thread while this one checks the chains.
    let summary = std::thread::scope(|scope| -> anyhow::Result<BackupSummary> {
        let (batches, read) = std::sync::mpsc::sync_channel(PREPARED_BATCHES_QUEUED);
        let reader = scope.spawn(move || decode_records(reader, file, batches));
        for batch in read.iter() {
            for (offset, event) in batch {
                bar.inc(1);
                let event = event
                    .map_err(|e| refused(file, format!("the event record at byte {offset} does not decode: {e}")))?;
                let h = &event.header;
                let stored_head = store.head(&space, &h.author).map_or(0, |head| head.seq);
                if h.seq <= stored_head {
                    // Already held: it must be the very same event, else the file forks the chain.
                    let held = store.get_event(&space, &h.author, h.seq)?;
                    if held.is_none_or(|held| held.id != event.id) {
                        return Err(refused(
                            file,
                            format!(
                                "author {} seq {} differs from the stored event (a fork)",
                                h.author.device_id(),
                                h.seq
                            ),
                        ));
                    }
                    duplicates += 1;
                    continue;
                }
                if let Err(fault) = verifier.push(&event) {
                    let hint = if !header.base.is_empty() && h.seq > 1 && verifier.seq(&h.author) < h.seq - 1 {
                        " (this is an incremental backup: import the backup it continues first)"
                    } else {
                        ""
                    };
                    return Err(refused(file, format!("{fault}{hint}")));
                }
            }
        }
        // The reader ends with the file's summary, or with why the file is not usable.
        reader.join().map_err(|_| anyhow::anyhow!("the import's reader thread panicked"))?
    })?;
    bar.finish_and_clear();
    let chains = verifier.finish();
    if let Some(fault) = chains.faults.first() {
        return Err(refused(file, fault));
    }
    Ok((header, summary, duplicates))
}

/// Reads a backup file's event records in batches of [`IMPORT_BATCH_EVENTS`] (each with its
/// offset) and hands each batch to `send`, which returns false when its receiver is gone. Returns
/// the file's summary once its trailer verified, or `None` if the receiver stopped first.
fn read_records(
    reader: &mut BackupReader<BufReader<File>>,
    mut send: impl FnMut(Vec<(u64, Vec<u8>)>) -> bool,
) -> Result<Option<BackupSummary>, BackupError> {
    let mut batch = Vec::with_capacity(IMPORT_BATCH_EVENTS);
    loop {
        match reader.next_record()? {
            BackupRecord::Event { offset, stored } => {
                batch.push((offset, stored));
                if batch.len() >= IMPORT_BATCH_EVENTS
                    && !send(std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH_EVENTS)))
                {
                    return Ok(None);
                }
            }
            BackupRecord::End(summary) => return Ok((batch.is_empty() || send(batch)).then_some(summary)),
        }
    }
}

/// Pass 1's reader: decodes and hashes the file's event records (with their offsets) and returns
/// the file's summary once its trailer verified.
fn decode_records(
    mut reader: BackupReader<BufReader<File>>,
    file: &Path,
    batches: std::sync::mpsc::SyncSender<Vec<(u64, Result<SignedEvent, EventError>)>>,
) -> anyhow::Result<BackupSummary> {
    let read = read_records(&mut reader, |records| {
        let decoded = records.into_iter().map(|(offset, stored)| (offset, SignedEvent::from_stored(&stored)));
        batches.send(decoded.collect()).is_ok()
    });
    read.map_err(|e| refused(file, e))?.ok_or_else(|| anyhow::anyhow!("the check stopped"))
}

/// The storing pass's reader: reads the file and hands on its events in batches, decoded and
/// hashed ([`PreparedBatch`]), refusing events stamped further ahead of this machine's clock than
/// any honest device's runs, as a node does; returns the file's summary once its trailer
/// verified, or `None` if the receiver stopped first.
fn read_batches(
    mut reader: BackupReader<BufReader<File>>,
    space: SpaceId,
    batches: std::sync::mpsc::SyncSender<PreparedBatch>,
) -> Result<Option<BackupSummary>, BackupError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    read_records(&mut reader, |records| {
        // A record is the signature followed by the event bytes: both are slices of it.
        let events = records.into_iter().map(|(_, stored)| {
            let stored = bytes::Bytes::from(stored);
            pb::SignedEvent { signature: stored.slice(..SIGNATURE_BYTES), event: stored.slice(SIGNATURE_BYTES..) }
        });
        batches.send(PreparedBatch::received(space, events.collect(), now_ms)).is_ok()
    })
}

/// Stores the prepared batches as they come (batches already waiting joined into one commit);
/// the first refusal ends it with `refusal`'s error. Returns (accepted, already held).
fn store_batches(
    store: &Store,
    prepared: std::sync::mpsc::Receiver<PreparedBatch>,
    bar: &indicatif::ProgressBar,
    refusal: impl Fn(&Rejection) -> anyhow::Error,
) -> anyhow::Result<(u64, u64)> {
    let (mut accepted, mut skipped) = (0u64, 0u64);
    while let Ok(mut batch) = prepared.recv() {
        while batch.len() < IMPORT_COMMIT_EVENTS_MAX {
            match prepared.try_recv() {
                Ok(more) => batch.append(more),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let report = store.ingest_prepared(batch)?;
        if let Some(rejection) = report.rejected.first() {
            return Err(refusal(rejection));
        }
        accepted += report.accepted;
        skipped += report.duplicates;
        bar.inc(count);
    }
    Ok((accepted, skipped))
}

/// The storing pass: the file is read, decoded and hashed on a second thread while this one
/// stores its batches. A refusal ends it with `refusal`'s error (the reader stops with it), a
/// file that does not read to its verified trailer with `unreadable`'s. Returns the file's
/// summary and (accepted, already held).
fn store_file(
    store: &Store,
    reader: BackupReader<BufReader<File>>,
    space: SpaceId,
    bar: &indicatif::ProgressBar,
    refusal: impl Fn(&Rejection) -> anyhow::Error,
    unreadable: impl Fn(BackupError) -> anyhow::Error,
) -> anyhow::Result<(BackupSummary, (u64, u64))> {
    std::thread::scope(|scope| {
        let (batches, prepared) = std::sync::mpsc::sync_channel(PREPARED_BATCHES_QUEUED);
        let reader = scope.spawn(move || read_batches(reader, space, batches));
        let stored = store_batches(store, prepared, bar, refusal);
        let read = reader.join().map_err(|_| anyhow::anyhow!("the import's reader thread panicked"))?;
        let stored = stored?;
        match read {
            Ok(Some(summary)) => Ok((summary, stored)),
            Ok(None) => bail!("the import stopped"),
            Err(e) => Err(unreadable(e)),
        }
    })
}

/// Opens the store an import writes into: without projections when they are rebuilt once at
/// the end, holding case deltas in memory for `bulk`.
/// Opens a store of the import holding the keys of the data dir imported into (its device key
/// opened with the PIN, when given), so that the views folded from sealed bodies hold their
/// contents; without them the views miss those bodies until the device receives its keys.
fn open_keyed(path: &Path, options: StoreOptions, data: &Path) -> anyhow::Result<Store> {
    Ok(Store::open_unlocked(path, options, crate::unlock::recipients(data)?)?)
}

fn open_for_import(path: &Path, projections: bool, bulk: bool, rebuild: bool, data: &Path) -> anyhow::Result<Store> {
    let store =
        open_keyed(path, StoreOptions { projections: projections && !rebuild, ..StoreOptions::compatible() }, data)
            .context("opening the store")?;
    if bulk {
        // The import reports the state hash: the bulk load takes it as it writes.
        store.begin_bulk_catch_up_holding(IMPORT_CASES_IN_MEMORY, true);
    }
    Ok(store)
}

/// How an import brings the projections up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Projections {
    /// `bulk` into a new data dir and for large imports, else `fold`.
    Auto,
    /// Fold each stored batch into the projections.
    Fold,
    /// Fold in memory while storing (a node's bulk catch-up): case views are written once per
    /// many events and completed at the end, without a second pass over the log.
    Bulk,
    /// Store the events first, then rebuild the projections once.
    Rebuild,
}

/// Runs the command.
pub fn run(data: &Path, file: &Path, mode: Projections) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let config = data_dir::read_config(data)?;
    let projections = !config.is_some_and(|c| c.relay);
    if !data_dir::db_path(data).join("CURRENT").exists() {
        return import_into_new_store(data, file, config, projections, mode, started);
    }
    let existing = data_dir::open_store(data, projections)??;
    // The space: the data dir's, else the backup's.
    let space = match &config {
        Some(config) => config.space,
        None if !existing.spaces().is_empty() => data_dir::space_of(None, &existing)?,
        None => open_backup(file)?.header().space,
    };
    let (header, checked, duplicates) = check_file(file, &existing, space)?;

    // Pass 2: store. Nothing above wrote anything.
    let held = existing.vector(&space).total();
    let to_store = checked.events.saturating_sub(duplicates);
    // A large import folds in memory while storing (`bulk`) or stores the events alone and
    // rebuilds the projections once (`rebuild`): both much cheaper than folding batch by batch.
    // The projection watermark is left behind meanwhile, so an interrupted import is completed
    // by the rebuild at the next open.
    let mode = match mode {
        Projections::Auto if to_store >= held.max(IMPORT_BULK_EVENTS_MIN) => Projections::Bulk,
        Projections::Auto => Projections::Fold,
        other => other,
    };
    let bulk = projections && mode == Projections::Bulk;
    let rebuild = projections && mode == Projections::Rebuild;
    drop(existing);
    let db = data_dir::db_path(data);
    let store = open_for_import(&db, projections, bulk, rebuild, data)?;
    // Commits wait for the disk once, at the end, before anything is reported: an import cut
    // short by a crash or power loss keeps a consistent prefix and is simply run again.
    store.defer_syncs();
    let bar = progress::bar(checked.events, "import");
    let reader = open_backup(file)?;
    let changed = |why: &dyn std::fmt::Display| {
        anyhow::anyhow!("{} changed during the import: {why} (what was stored verified)", file.display())
    };
    let refusal = |rejection: &Rejection| {
        changed(&format_args!(
            "the store refused author {} seq {}: {}",
            rejection.author.map(|a| a.device_id()).unwrap_or_default(),
            rejection.seq,
            rejection.reason
        ))
    };
    let (summary, (accepted, skipped)) = store_file(&store, reader, space, &bar, refusal, |e| changed(&e))?;
    bar.finish_and_clear();
    if summary.blake3 != checked.blake3 {
        return Err(changed(&"its hash is not the one checked"));
    }
    if bulk {
        store.end_bulk_catch_up().context("completing the projections")?;
    }
    store.sync().context("making the import durable")?;
    let store = if rebuild {
        drop(store);
        // Opening with projections brings them up to date with the log (one rebuild).
        open_keyed(&db, StoreOptions { projections: true, ..StoreOptions::compatible() }, data)
            .context("rebuilding the projections")?
    } else {
        store
    };
    let imported = Imported { space, accepted, skipped: skipped.max(duplicates), summary };
    report(data, file, &store, &header, imported, Projected::of(projections, bulk, rebuild), started)
}

/// Where an import into a data dir without a store builds it, beside `db/`.
const STAGING_DIR: &str = "db.importing";

/// An import into a data dir without a store, in one pass: the events are stored into a staging
/// store (`DIR/db.importing`) as they are read, checked by the store's own ingest (seq
/// contiguous from 1, every `prev` link, each batch's last signature per author, the space) and
/// by the reader (record sizes, decoding, the trailer's count and blake3). Only a file that
/// verified to its end becomes `DIR/db` (one rename, after the projections are complete and every
/// family is flushed); anything else removes the staging store: nothing stored.
fn import_into_new_store(
    data: &Path,
    file: &Path,
    config: Option<data_dir::Config>,
    projections: bool,
    mode: Projections,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let reader = open_backup(file)?;
    let header = reader.header().clone();
    let space = config.map_or(header.space, |c| c.space);
    if header.space != space {
        bail!("{} holds space {}, but this data dir serves space {}", file.display(), header.space, space);
    }
    let db = data_dir::db_path(data);
    if std::fs::read_dir(&db).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} holds files but no casesync store: move it away, then import again", db.display());
    }
    // Nothing is held: `auto` folds in memory while storing, as for any large import.
    let rebuild = projections && mode == Projections::Rebuild;
    let bulk = projections && matches!(mode, Projections::Auto | Projections::Bulk);
    let staging = Staging::begin(data)?;
    let store = open_for_import(staging.path(), projections, bulk, rebuild, data)?;
    // Nothing becomes visible before the final rename, and a crash leaves only a staging store
    // the next import removes: nothing needs the WAL. Everything is flushed once at the end.
    store.write_without_wal();
    let bar = progress::bar(0, "import");
    let incremental = !header.base.is_empty();
    let refusal = |rejection: &Rejection| {
        let hint = if incremental && matches!(rejection.reason, RejectReason::Gap { expected: 1, .. }) {
            " (this is an incremental backup: import the backup it continues first)"
        } else {
            ""
        };
        let who = rejection.author.map(|a| format!("author {} seq {}: ", a.device_id(), rejection.seq));
        refused(file, format_args!("{}{}{hint}", who.unwrap_or_default(), rejection.reason))
    };
    let (summary, (accepted, skipped)) = store_file(&store, reader, space, &bar, refusal, |e| refused(file, e))?;
    bar.finish_and_clear();
    if bulk {
        store.end_bulk_catch_up().context("completing the projections")?;
    }
    store.persist().context("making the import durable")?;
    drop(store);
    if rebuild {
        // Opening with projections brings them up to date with the log (one rebuild).
        drop(
            open_keyed(staging.path(), StoreOptions { projections: true, ..StoreOptions::compatible() }, data)
                .context("rebuilding the projections")?,
        );
    }
    let db = staging.finish()?;
    if config.is_none() {
        data_dir::write_minimal_config(data, &space)?;
    }
    let store = open_keyed(&db, StoreOptions { projections, ..StoreOptions::compatible() }, data)
        .context("opening the imported store")?;
    let imported = Imported { space, accepted, skipped, summary };
    report(data, file, &store, &header, imported, Projected::of(projections, bulk, rebuild), started)
}

/// The staging store of an import into a new data dir. Holds a lock on the data dir (a second
/// import into it is refused rather than racing this one); removed on drop unless finished.
struct Staging {
    data: PathBuf,
    dir: PathBuf,
    created_data: bool,
    finished: bool,
    _lock: Option<File>,
}

impl Staging {
    fn begin(data: &Path) -> anyhow::Result<Staging> {
        let created_data = !data.exists();
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        let lock = lock_data_dir(data)?;
        let dir = data.join(STAGING_DIR);
        // Left by an import that crashed: never visible as a store, so it can go.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(Staging { data: data.to_path_buf(), dir, created_data, finished: false, _lock: lock })
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes the staging store the data dir's store (the store must be closed); returns its path.
    fn finish(mut self) -> anyhow::Result<PathBuf> {
        let db = data_dir::db_path(&self.data);
        std::fs::rename(&self.dir, &db)
            .with_context(|| format!("moving {} to {}", self.dir.display(), db.display()))?;
        self.finished = true;
        // The rename itself survives a power loss once the directory is synced (Unix; elsewhere
        // the file system orders it).
        #[cfg(unix)]
        File::open(&self.data)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.data.display()))?;
        Ok(db)
    }
}

/// Takes an exclusive lock on the data dir (released when the process ends, however it ends).
/// Where directories cannot be locked (some file systems, platforms) the import goes on without.
fn lock_data_dir(data: &Path) -> anyhow::Result<Option<File>> {
    let not_locked = |e: std::io::Error| {
        tracing::warn!(dir = %data.display(), error = %e, "cannot lock the data dir; importing without the lock");
        Ok(None)
    };
    let dir = match File::open(data) {
        Ok(dir) => dir,
        Err(e) => return not_locked(e),
    };
    match dir.try_lock() {
        Ok(()) => Ok(Some(dir)),
        Err(std::fs::TryLockError::WouldBlock) => bail!("another import into {} is running", data.display()),
        Err(std::fs::TryLockError::Error(e)) => not_locked(e),
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.finished {
            match std::fs::remove_dir_all(&self.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the staging store");
                }
                _ => {}
            }
            if self.created_data {
                // Only if empty: whatever else is there stays.
                let _ = std::fs::remove_dir(&self.data);
            }
        }
    }
}

/// How the import left the projections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Projected {
    /// A relay: none kept.
    None,
    Folded,
    Bulk,
    Rebuilt,
}

impl Projected {
    fn of(projections: bool, bulk: bool, rebuild: bool) -> Projected {
        match (projections, bulk, rebuild) {
            (false, ..) => Projected::None,
            (true, _, true) => Projected::Rebuilt,
            (true, true, false) => Projected::Bulk,
            (true, false, false) => Projected::Folded,
        }
    }

    /// The report's `projections` value.
    fn label(self) -> &'static str {
        match self {
            Projected::None => "none",
            Projected::Folded => "folded",
            Projected::Bulk => "bulk",
            Projected::Rebuilt => "rebuilt",
        }
    }
}

/// What an import stored.
struct Imported {
    space: SpaceId,
    accepted: u64,
    skipped: u64,
    summary: BackupSummary,
}

/// Adds the devices the header names, and the store does not know, as members, but only those
/// whose signed events of the space the store now holds: the header is not signed, so a name in
/// it alone proves nothing, and must not let a key connect. Reports both.
fn report(
    data: &Path,
    file: &Path,
    store: &Store,
    header: &BackupHeader,
    imported: Imported,
    projections: Projected,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let Imported { space, accepted, skipped, summary } = imported;
    // The views a bulk import or a rebuild wrote as many files are joined before the tool exits
    // (`data_dir::settle`), not left to the next process that opens the store.
    let settle_started = Instant::now();
    let settled = data_dir::settle(store);
    let settle_seconds = settle_started.elapsed().as_secs_f64();
    let mut members_added = 0;
    let mut members_without_events = Vec::new();
    let held = store.vector(&space);
    for (author, name) in &header.members {
        if store.member(&space, author)?.is_some() {
            continue;
        }
        if held.get(author) == 0 {
            tracing::warn!(device = %author.device_id(), "the backup names a device with no event in it: not added");
            members_without_events.push(author.to_hex());
            continue;
        }
        store.add_member(&space, author, name)?;
        members_added += 1;
    }
    let state_hash = if projections != Projected::None { Some(store.state_hash(&space)?) } else { None };
    let seconds = started.elapsed().as_secs_f64();
    let json = json!({
        "data": data.display().to_string(),
        "file": file.display().to_string(),
        "space": space.to_hex(),
        "events": summary.events,
        "accepted": accepted,
        "already_held": skipped,
        "members_added": members_added,
        "members_not_added": members_without_events,
        "blake3": summary.blake3,
        "vector": vector_json(&store.vector(&space)),
        "state_hash": state_hash,
        "projections": projections.label(),
        "seconds": seconds,
        "settle_seconds": settle_seconds,
        "settled": settled,
        "events_per_s": rate(summary.events, seconds),
    });
    let text = format!(
        "imported {} of the {} events in {} into space {} ({} already held)\nstate hash {}",
        accepted,
        summary.events,
        file.display(),
        space.to_hex(),
        skipped,
        state_hash.as_deref().unwrap_or("(relay: no projections)")
    );
    Ok(Outcome::new(true, json, text))
}
