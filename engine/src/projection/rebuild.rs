//! Rebuilding a space's projections from its log.

use rocksdb::WriteBatch;

use super::bulk_catch_up::BulkState;
use super::case_ranges::{fold_by_case_range, ranges_for, RangeStep};
use super::fold::Fold;
use super::missed_keys;
use super::queries;
use super::spill_files::{SpillFiles, SpillWriters};
use super::stored_events::fold_stored_events;
use super::written_digests::{stage_state_hash, WrittenDigests};
use crate::codec::keys::{meta_watermark, CF_CASES, CF_CASE_EVENTS, CF_META};
use crate::codec::meta::encode_vector;
use crate::error::StoreError;
use crate::model::event::EventHeader;
use crate::model::ids::SpaceId;
use crate::model::membership::Membership;
use crate::model::operation::Operation;
use crate::model::state_hash::StateHasher;
use crate::model::vector_clock::VersionVector;
use crate::storage::Db;

/// Case states a rebuild keeps in memory; past it, the least recently touched quarter is written
/// out as merge operands (a case touched again starts a new delta; RocksDB joins them): bounds a
/// rebuild's memory whatever the number of cases, without reading anything back.
const REBUILD_CASES_IN_MEMORY: usize = if cfg!(test) { 4 } else { 16_384 };

/// Rebuilds a space's projections from its log; returns the state hash.
///
/// The watermark is removed first (synced); the old projections are cleared while the log is
/// folded into SST files ([`SpillFiles`]), which are ingested once they are gone, before the
/// watermark is written (synced) again. A crash anywhere in between leaves no watermark, so the
/// next open rebuilds.
pub(crate) fn rebuild(
    db: &Db,
    bulk: &mut BulkState,
    space: &SpaceId,
    vector: &VersionVector,
    judge: Option<&Membership>,
) -> Result<String, StoreError> {
    // Deltas folded during a bulk catch-up start from the old watermark: drop them.
    bulk.forget(space);
    // Phases at debug level: the subscriber stamps each with the time (the engine reads no clock).
    tracing::debug!(space = %space.short(), "rebuild: started");
    // The watermark goes first: a crash from here on rebuilds at the next open.
    let mut unmark = WriteBatch::default();
    unmark.delete_cf(db.cf(CF_META), meta_watermark(space));
    missed_keys::stage_clear(db, &mut unmark, space);
    let _ = db.keys().take_missed(space);
    db.commit(unmark)?;
    // The old projections are cleared on a thread of its own while this one folds: nothing the
    // fold reads or writes before the ingest is theirs, and unlinking their files waits on the
    // file system (~45 ms for 1M events). The new files are ingested once they are gone.
    db.fault_point("rebuild: clear")?;
    let (files, written) = std::thread::scope(|scope| {
        let cleared = scope.spawn(|| clear_projections(db, space));
        let written = fold_into_spill_files(db, space, judge, ranges_for(vector.total(), db.memory().fold_bytes));
        let cleared = cleared.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let written = written?;
        cleared?;
        Ok::<_, StoreError>(written)
    })?;
    tracing::debug!(space = %space.short(), "rebuild: the log is folded into spill files");
    db.fault_point("rebuild: ingest")?;
    files.ingest(db)?;
    tracing::debug!(space = %space.short(), "rebuild: the spill files are ingested");
    let hash = written.state_hash(db, space)?;
    let mut done = WriteBatch::default();
    done.put_cf(db.cf(CF_META), meta_watermark(space), encode_vector(vector));
    missed_keys::stage_missed(db, &mut done, space);
    stage_state_hash(db, &mut done, space, vector, &hash);
    db.fault_point("rebuild: watermark")?;
    db.commit(done)?;
    tracing::debug!(space = %space.short(), "rebuild: done");
    Ok(hash)
}

/// Removes a space's projections (its watermark already removed): their files are dropped whole,
/// so compactions never rewrite them; then a range deletion covers what files shared with other
/// spaces, or the memtables, still hold. (In this order no file dropped can hold the range
/// deletion, which would let the old records come back.) A family with nothing left gets no
/// range deletion: one would sit above the space's whole key range, so the rebuild's files,
/// ingested after it, could only go to level 0, and a compaction of all of them would follow.
fn clear_projections(db: &Db, space: &SpaceId) -> Result<(), StoreError> {
    db.drop_files_within(&[CF_CASES, CF_CASE_EVENTS], space.as_bytes())?;
    let mut clear = WriteBatch::default();
    for family in [CF_CASES, CF_CASE_EVENTS] {
        if db.holds_prefix(family, space.as_bytes())? {
            db.delete_prefix(&mut clear, family, space.as_bytes());
        }
    }
    if clear.is_empty() {
        return Ok(());
    }
    db.commit(clear)
}

/// Folds a space's log into spill files ([`SpillFiles`]), for projections that are empty by the
/// time they are ingested: each case written out once is then complete as written. This thread
/// folds and hands its spills to the writer threads, which build them into SST files. A log
/// larger than one case range is folded range by range ([`fold_by_case_range`]), so that each
/// case is written out once even when its authors cycle over more cases than the fold holds.
pub(crate) fn fold_into_spill_files(
    db: &Db,
    space: &SpaceId,
    judge: Option<&Membership>,
    ranges: usize,
) -> Result<(SpillFiles, WrittenHash), StoreError> {
    let by_range = ranges > 1;
    let mut rebuild = RebuildFold {
        db,
        fold: Fold::store_deltas(),
        // Folded by range, the cases are hashed as each range ends, in case id order; the writers
        // note digests only for a fold of the whole log at once.
        writers: SpillWriters::start(SpillFiles::new(db, space)?, !by_range)?,
        hasher: by_range.then(StateHasher::new),
    };
    let folded = if by_range {
        tracing::debug!(space = %space.short(), ranges, "rebuild: folding by case range");
        fold_by_case_range(db, space, judge, ranges, |step| match step {
            RangeStep::Run(run) => rebuild.fold_run(run),
            RangeStep::End => rebuild.end_range(),
        })
    } else {
        fold_stored_events(db, space, judge, |run| rebuild.fold_run(run))
    };
    let RebuildFold { mut fold, writers, mut hasher, .. } = rebuild;
    let last = if folded.is_ok() { fold.take_all() } else { Vec::new() };
    if !last.is_empty() {
        hasher = None; // Folded by range, every case went out at its range's end: not expected.
    }
    // A writer's error first: a failed hand-over is its consequence.
    let (files, digests) = writers.finish(last)?;
    folded?;
    let written = match (hasher, digests) {
        (Some(hasher), _) => WrittenHash::Hashed(hasher.finish()),
        (None, Some(digests)) => WrittenHash::Digests(digests),
        (None, None) => WrittenHash::Scan,
    };
    Ok((files, written))
}

/// How a rebuild learns the state hash of the projections it wrote.
pub(crate) enum WrittenHash {
    /// Hashed as written: folded range by range, every case written out once.
    Hashed(String),
    /// From the digests the spill writers took (cases written out more than once read back).
    Digests(WrittenDigests),
    /// Read back whole: a range held more cases than the fold, so some went out in parts.
    Scan,
}

impl WrittenHash {
    /// Whether the hash was taken as the cases were written (nothing to read back).
    #[cfg(test)]
    pub(crate) fn is_hashed(&self) -> bool {
        matches!(self, WrittenHash::Hashed(_))
    }

    fn state_hash(self, db: &Db, space: &SpaceId) -> Result<String, StoreError> {
        match self {
            WrittenHash::Hashed(hash) => Ok(hash),
            WrittenHash::Digests(digests) => digests.state_hash(db, space),
            WrittenHash::Scan => queries::scanned_state_hash(db, space),
        }
    }
}

/// A rebuild's fold, its spill writers and, folding by case range, the state hash so far.
struct RebuildFold<'a> {
    db: &'a Db,
    fold: Fold,
    writers: SpillWriters,
    /// The cases of the ranges ended so far, in case id order; `None` once a range held more
    /// cases than the fold and wrote some out before its end.
    hasher: Option<StateHasher>,
}

impl RebuildFold<'_> {
    /// Folds a run of events; past the fold's bounds, writes out the cases touched least
    /// recently.
    fn fold_run(&mut self, run: &mut [(EventHeader, Option<Operation>)]) -> Result<(), StoreError> {
        let fold = &mut self.fold;
        let fold_bytes = self.db.memory().fold_bytes;
        fold.warm(run.iter().map(|(_, operation)| operation));
        for (header, operation) in run {
            fold.apply_operation(header, operation.take(), |_| Ok::<_, StoreError>(None))?;
            let over_count = fold.case_count() >= REBUILD_CASES_IN_MEMORY;
            if over_count || fold.held_bytes() > fold_bytes {
                self.db.fault_point("rebuild: spill")?;
                self.hasher = None;
                let quarter = if over_count { REBUILD_CASES_IN_MEMORY / 4 } else { 0 };
                self.writers.spill(fold.evict_least_recent_within(quarter, fold_bytes / 2))?;
            }
        }
        Ok(())
    }

    /// Writes out every case of the range that ended (complete: no later event touches them),
    /// hashing them first while every case so far was written out once.
    fn end_range(&mut self) -> Result<(), StoreError> {
        let cases = self.fold.take_all();
        if let Some(hasher) = &mut self.hasher {
            for held in cases.iter().filter(|held| held.state.holds_anything()) {
                hasher.add(&held.state);
            }
        }
        self.writers.spill_ending_keys(cases)
    }
}
