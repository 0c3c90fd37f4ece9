//! Rebuilding a space's projections from its log.

use rocksdb::WriteBatch;

use super::bulk_catch_up::BulkState;
use super::fold::Fold;
use super::missed_keys;
use super::spill_files::{SpillFiles, SpillWriters};
use super::stored_events::fold_stored_events;
use super::written_digests::{stage_state_hash, WrittenDigests};
use crate::codec::keys::{meta_watermark, CF_CASES, CF_CASE_EVENTS, CF_META};
use crate::codec::meta::encode_vector;
use crate::error::StoreError;
use crate::model::ids::SpaceId;
use crate::model::membership::Membership;
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
    let (files, digests) = std::thread::scope(|scope| {
        let cleared = scope.spawn(|| clear_projections(db, space));
        let written = fold_into_spill_files(db, space, judge);
        let cleared = cleared.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let written = written?;
        cleared?;
        Ok::<_, StoreError>(written)
    })?;
    tracing::debug!(space = %space.short(), "rebuild: the log is folded into spill files");
    db.fault_point("rebuild: ingest")?;
    files.ingest(db)?;
    tracing::debug!(space = %space.short(), "rebuild: the spill files are ingested");
    let digests = digests.unwrap_or_else(WrittenDigests::new);
    let hash = digests.state_hash(db, space)?;
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
/// spaces still hold. (In this order no file dropped can hold the range deletion, which would let
/// the old records come back.)
fn clear_projections(db: &Db, space: &SpaceId) -> Result<(), StoreError> {
    db.drop_files_within(&[CF_CASES, CF_CASE_EVENTS], space.as_bytes())?;
    let mut clear = WriteBatch::default();
    db.delete_prefix(&mut clear, CF_CASES, space.as_bytes());
    db.delete_prefix(&mut clear, CF_CASE_EVENTS, space.as_bytes());
    db.commit(clear)
}

/// Folds a space's log into spill files ([`SpillFiles`]), for projections that are empty by the
/// time they are ingested: each case written out once is then complete as written. This thread
/// folds and hands its spills to the writer threads, which build them into SST files.
fn fold_into_spill_files(
    db: &Db,
    space: &SpaceId,
    judge: Option<&Membership>,
) -> Result<(SpillFiles, Option<WrittenDigests>), StoreError> {
    let writers = SpillWriters::start(SpillFiles::new(db, space)?, true)?;
    let mut fold = Fold::store_deltas();
    let folded = fold_stored_events(db, space, judge, |run| {
        fold.warm(run.iter().map(|(_, operation)| operation));
        for (header, operation) in run {
            fold.apply_operation(header, operation.take(), |_| Ok::<_, StoreError>(None))?;
            let over_count = fold.case_count() >= REBUILD_CASES_IN_MEMORY;
            if over_count || fold.held_bytes() > db.memory().fold_bytes {
                db.fault_point("rebuild: spill")?;
                let quarter = if over_count { REBUILD_CASES_IN_MEMORY / 4 } else { 0 };
                writers.spill(fold.evict_least_recent_within(quarter, db.memory().fold_bytes / 2))?;
            }
        }
        Ok(())
    });
    let last = if folded.is_ok() { fold.take_all() } else { Vec::new() };
    // A writer's error first: a failed hand-over is its consequence.
    let written = writers.finish(last)?;
    folded?;
    Ok(written)
}
