//! The bulk catch-up: while a node takes in far more events than it holds (a new device syncing
//! a practice's log, a flood relayed from another device, a large import), each ingested batch
//! is folded into in-memory case deltas instead of into the views; past a bound the least
//! recently touched cases are written out as SST files (`spill_files`) while the ingests go on,
//! and at the end the rest is written out, every file ingested, and the watermark moved last.
//! Until then the watermark lags, so a crash, or a failure anywhere in between, leaves views
//! that say they lack those events: the next commit or open rebuilds them.

use std::collections::HashMap;
use std::sync::Arc;

use rocksdb::WriteBatch;

use super::fold::Fold;
use super::incremental::fold_events;
use super::queries::{has_case_parts, watermark};
use super::spill_files::{SpillFiles, SpillWriters};
use super::written_digests::stage_state_hash;
use crate::codec::keys::{meta_watermark, CF_META};
use crate::codec::meta::encode_vector;
use crate::error::StoreError;
use crate::model::event::SignedEvent;
use crate::model::ids::SpaceId;
use crate::model::sealing::KeySet;
use crate::model::vector_clock::VersionVector;
use crate::storage::Db;

/// Case states a node's bulk catch-up keeps in memory before staging the least recently touched
/// quarter as deltas with the batch. Measured at 1M events (100k cases, each author cycling over
/// its 12.5k): 8k -> 13-14 CPU us per event on node B (the cycle does not fit, so nearly every
/// event is written out as its own delta); 16k -> 9.2 us. 16k fit the node's memory budget
/// (256 MiB: node B peaks at 215 MiB) once ingests ran on one thread; when glibc spread the fold
/// over the blocking pool's malloc arenas, the same 16k took node B to 323 MiB.
pub(crate) const BULK_CASES_IN_MEMORY: usize = if cfg!(test) { 4 } else { 16_384 };

/// The bulk catch-ups of a store in progress, and each space's deltas.
#[derive(Default)]
pub(crate) struct BulkState {
    /// Bulk catch-ups begun and not yet ended; while above zero, ingests fold events into
    /// in-memory deltas instead of the views, and commands wait.
    active: u32,
    /// Per space, the deltas folded during the bulk catch-up.
    folds: HashMap<SpaceId, BulkFold>,
    /// Case states held before the least recently touched are written out.
    cases_max: usize,
    /// The estimated memory ([`Fold::held_bytes`]) of the case states held before the least
    /// recently touched are written out, whatever their number (the store's
    /// `MemoryBudget::fold_bytes`): one case a member filled with half a million field names, or
    /// cases of values near the event size limit, would otherwise be held whole. Honest
    /// catch-ups of few cases stay far below it; with the spills queued behind it, a fold holds
    /// at most about twice this.
    bytes_max: usize,
    /// Whether a bulk catch-up into empty projections digests the cases it writes out, to commit
    /// the state hash with the watermark.
    digests: bool,
}

/// The case deltas of a space folded during a bulk catch-up: folded from the events as they are
/// ingested, spilled into SST files whenever more than the limit of cases are held (the least
/// recently touched quarter, as merge operands, each case with the history records of its
/// events, by the fold's writer threads while the ingests go on), and ingested with the rest
/// when the catch-up ends — so the end needs no rebuild and no second pass over the log.
pub(crate) struct BulkFold {
    fold: Fold,
    /// The writers of the spills, and the files written so far (not yet in the store).
    writers: SpillWriters,
    /// False if the projections lagged when the catch-up began, or a commit or spill failed after
    /// its events were folded: the end rebuilds instead.
    usable: bool,
}

impl BulkState {
    /// Begins a bulk catch-up holding up to `cases` case states in memory; with `state_hash`, a
    /// catch-up into empty projections digests what it writes out.
    pub(crate) fn begin(&mut self, cases: usize, bytes: usize, state_hash: bool) {
        self.active += 1;
        self.cases_max = cases.max(4);
        self.bytes_max = bytes;
        self.digests |= state_hash;
    }

    /// Whether a bulk catch-up is in progress.
    pub(crate) fn is_active(&self) -> bool {
        self.active > 0
    }

    /// Ends one bulk catch-up; the last one to end gets every space's deltas, to be finished
    /// ([`finish`]) or, where they are not usable, rebuilt.
    pub(crate) fn end(&mut self) -> Option<HashMap<SpaceId, BulkFold>> {
        self.active = self.active.saturating_sub(1);
        if self.active > 0 {
            return None;
        }
        self.digests = false;
        Some(std::mem::take(&mut self.folds))
    }

    /// Starts the deltas of a space at its first batch of a bulk catch-up. `held` is what the
    /// log holds of the space before that batch.
    pub(crate) fn start_space(&mut self, db: &Db, space: &SpaceId, held: &VersionVector) -> Result<(), StoreError> {
        if !self.folds.contains_key(space) {
            // Deltas can only complete views that were current when the catch-up began.
            let watermark = watermark(db, space)?;
            let usable = watermark == *held;
            // No case stored yet (the log may hold events that fold to nothing: a space's
            // membership): every case the catch-up writes is whole as written.
            let empty = self.digests && usable && !has_case_parts(db, space)?;
            db.fault_point("bulk catch-up: start")?;
            let writers = SpillWriters::start(SpillFiles::new(db, space)?, empty)?;
            self.folds.insert(*space, BulkFold { fold: Fold::store_deltas().with_keys(db.keys()), writers, usable });
        }
        Ok(())
    }

    /// Folds a batch ingested during a bulk catch-up into the space's deltas (if usable), and
    /// hands the least recently touched quarter to the spill writers when more than the bound
    /// are held. Nothing reaches the views before [`finish`].
    pub(crate) fn fold(&mut self, space: &SpaceId, events: &[SignedEvent]) -> Result<(), StoreError> {
        let (cases_max, bytes_max) = (self.cases_max, self.bytes_max);
        let Some(bulk) = self.folds.get_mut(space).filter(|bulk| bulk.usable) else {
            return Ok(());
        };
        fold_events(&mut bulk.fold, events);
        if bulk.fold.case_count() < cases_max && bulk.fold.held_bytes() <= bytes_max {
            return Ok(());
        }
        let quarter = if bulk.fold.case_count() < cases_max { 0 } else { cases_max / 4 };
        bulk.writers.spill(bulk.fold.evict_least_recent_within(quarter, bytes_max / 2))
    }

    /// Opens the rest of every bulk fold's sealed bodies with `keys`, which a membership commit
    /// of the catch-up has just extended: the events folded before it that missed a key are
    /// still noted as missed, and folded again once the catch-up ends.
    pub(crate) fn use_keys(&mut self, keys: &Arc<KeySet>) {
        for bulk in self.folds.values_mut() {
            bulk.fold.use_keys(keys.clone());
        }
    }

    /// Marks a space's deltas unusable (events in the deltas but not stored, or stored but not
    /// all in the deltas): the end rebuilds.
    pub(crate) fn spoil(&mut self, space: &SpaceId) {
        if let Some(bulk) = self.folds.get_mut(space) {
            bulk.usable = false;
        }
    }

    /// Drops a space's deltas (a rebuild starts from the log instead).
    pub(crate) fn forget(&mut self, space: &SpaceId) {
        self.folds.remove(space);
    }
}

/// Ends the bulk catch-up of a space: spills its remaining deltas (two writers at once), ingests
/// every spill into the store, and stages the watermark `vector` in `batch` (to be committed
/// synced: until then the views say they lack the catch-up's events), with the state hash when
/// the catch-up began with no projections (known from the digests of what it wrote). Returns
/// false if its deltas are not usable (the caller rebuilds).
pub(crate) fn finish(
    db: &Db,
    bulk: Option<BulkFold>,
    batch: &mut WriteBatch,
    space: &SpaceId,
    vector: &VersionVector,
) -> Result<bool, StoreError> {
    let Some(BulkFold { mut fold, writers, .. }) = bulk.filter(|bulk| bulk.usable) else {
        return Ok(false);
    };
    db.fault_point("bulk catch-up: write out")?;
    let (files, digests) = writers.finish(fold.take_all())?;
    db.fault_point("bulk catch-up: ingest")?;
    files.ingest(db)?;
    batch.put_cf(db.cf(CF_META), meta_watermark(space), encode_vector(vector));
    super::missed_keys::stage_missed(db, batch, space);
    if let Some(digests) = digests {
        db.fault_point("bulk catch-up: state hash")?;
        stage_state_hash(db, batch, space, vector, &digests.state_hash(db, space)?);
    }
    Ok(true)
}
