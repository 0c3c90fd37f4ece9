//! The store's single writer: the one place that commits a log batch together with the
//! projection batch its events fold into, and that keeps the views honest about what they hold.
//!
//! Every commit of events also moves the space's projection watermark to the new version
//! vector, so the views claim exactly the events stored, but only when the views held every
//! event before the commit (the watermark equalled the vector). Otherwise something left them
//! behind (a crash or a failure during a bulk catch-up or a rebuild): the projections are rebuilt
//! from the log first, and a rebuild that fails fails the commit. A failed bulk fold therefore
//! cannot be papered over by the next ordinary commit.

use rocksdb::WriteBatch;

use crate::codec::keys::{meta_watermark, CF_META};
use crate::codec::meta::encode_vector;
use crate::error::StoreError;
use crate::log::{CommitSummary, LogState, StagedEvents};
use crate::model::event::SignedEvent;
use crate::model::ids::SpaceId;
use crate::projection::bulk_catch_up::{self, BulkState};
use crate::projection::fold::Fold;
use crate::projection::{incremental, missed_keys, queries, rebuild};
use crate::storage::{Db, Durability};

/// What the writer owns: the log's state and the bulk catch-ups in progress.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) log: LogState,
    pub(crate) bulk: BulkState,
}

impl Writer {
    /// Commits accepted events (already verified, contiguous per author): the events, their
    /// arrival records, heads and counters, and (with `projections`) what they change in the
    /// views and the watermark, in one synced write batch; then moves the log state.
    ///
    /// With `announce` (and synced durability), the batch is written without waiting for the
    /// disk, `announce` is told the commit once the events are readable, and the WAL is synced
    /// before this returns: durable on return either way, but announced one disk sync sooner.
    /// Only for events some other node already holds durably. A bulk catch-up announces after
    /// its sync.
    pub(crate) fn commit_events(
        &mut self,
        db: &Db,
        projections: bool,
        space: &SpaceId,
        events: &[SignedEvent],
        mut announce: Option<&mut dyn FnMut(&CommitSummary)>,
    ) -> Result<CommitSummary, StoreError> {
        if events.is_empty() {
            return Ok(CommitSummary { next_position: self.log.next_position, ..CommitSummary::default() });
        }
        if projections && self.bulk.is_active() {
            self.bulk.start_space(db, space, &self.log.vector(space))?;
            return self.commit_bulk(db, space, events);
        }
        if projections {
            self.ensure_projections_current(db, space)?;
        }
        // Commits of bounded folds: one for nearly every ingest; more for events that fold to
        // far more memory than their size (`incremental::COMMIT_FOLD_BYTES_MAX`). Each is a
        // prefix of every author's run, so each leaves a valid log.
        let mut rest = events;
        let mut summary = CommitSummary::default();
        while !rest.is_empty() {
            let fold = projections.then(|| {
                let mut fold = Fold::store_deltas().with_keys(db.keys());
                let folded = incremental::fold_within(&mut fold, rest, incremental::COMMIT_FOLD_BYTES_MAX);
                (fold, folded)
            });
            let (chunk, later) = rest.split_at(fold.as_ref().map_or(rest.len(), |(_, folded)| *folded));
            rest = later;
            let part = self.commit_folded(db, space, chunk, fold.map(|(fold, _)| fold), &mut announce)?;
            summary.events += part.events;
            summary.next_position = part.next_position;
        }
        Ok(summary)
    }

    /// Commits events and, with `fold` (their folded deltas), what they change in the views and
    /// the watermark, in one write batch (see [`Writer::commit_events`]).
    fn commit_folded(
        &mut self,
        db: &Db,
        space: &SpaceId,
        events: &[SignedEvent],
        fold: Option<Fold>,
        announce: &mut Option<&mut dyn FnMut(&CommitSummary)>,
    ) -> Result<CommitSummary, StoreError> {
        let StagedEvents { mut batch, after } = self.log.stage(db, space, events);
        if let Some(fold) = fold {
            incremental::stage_fold(db, &mut batch, space, fold);
            let mut vector_after = self.log.vector(space);
            for (author, head) in &after.heads {
                vector_after.set(*author, head.seq);
            }
            batch.put_cf(db.cf(CF_META), meta_watermark(space), encode_vector(&vector_after));
            missed_keys::stage_missed(db, &mut batch, space);
        }
        match announce.as_mut() {
            Some(announce) if db.durability() == Durability::Synced => {
                // Written and readable first, announced, then durable before this returns.
                db.write_unsynced(batch)?;
                let summary = after.apply(&mut self.log, space);
                announce(&summary);
                db.sync_wal()?;
                Ok(summary)
            }
            _ => {
                db.commit(batch)?;
                Ok(after.apply(&mut self.log, space))
            }
        }
    }

    /// Rebuilds a space's projections unless they hold exactly the events stored: only then may
    /// a commit move their watermark along with the log.
    fn ensure_projections_current(&mut self, db: &Db, space: &SpaceId) -> Result<(), StoreError> {
        let vector = self.log.vector(space);
        if queries::watermark(db, space)? != vector {
            tracing::warn!(space = %space.short(), "projections lag the log: rebuilding them before the next commit");
            rebuild::rebuild(db, &mut self.bulk, space, &vector, self.log.judging(space))?;
        }
        Ok(())
    }

    /// [`Writer::commit_events`] during a bulk catch-up: the events are committed without their
    /// projections, which are folded into the space's bulk deltas instead.
    fn commit_bulk(&mut self, db: &Db, space: &SpaceId, events: &[SignedEvent]) -> Result<CommitSummary, StoreError> {
        let StagedEvents { batch, after } = self.log.stage(db, space, events);
        let bulk = &mut self.bulk;
        let mut fold = || {
            db.fault_point("bulk catch-up: fold")?;
            bulk.fold(space, events)
        };
        let (committed, folded) = if db.durability() != Durability::Synced {
            // A bulk load that waits for no disk (`replay-tool import`): its thread is the
            // bottleneck of its own pipeline, so the fold stays on it. (On a scoped thread
            // beside the write it gained nothing measurable: 166k vs 173k events/s.)
            let committed = db.commit(batch);
            let folded = if committed.is_ok() { fold() } else { Ok(()) };
            (committed, folded)
        } else {
            // A bulk catch-up: the events are written without waiting for the disk, then a
            // scoped thread waits for the WAL sync while this one folds them into the bulk
            // deltas. The fold stays on this long-lived thread: on a new scoped thread for each
            // batch (beside the staging and the write) node B took 0.7-0.9 CPU s more and
            // peaked 30-40 MiB higher (each new thread starts a fresh allocator heap). The sync
            // thread allocates nothing (with the write itself on a new thread each time, glibc
            // spread RocksDB's memtable blocks over its per-thread arenas and node B peaked 50
            // MiB higher). Durable before this returns, as a synced write.
            match db.write_unsynced(batch) {
                Err(error) => (Err(error), Ok(())),
                Ok(()) => std::thread::scope(|scope| {
                    let synced = scope.spawn(|| db.sync_wal());
                    let folded = fold();
                    (synced.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), folded)
                }),
            }
        };
        if committed.is_err() || folded.is_err() {
            // Events in the deltas but not stored, or stored but not all in the deltas: the end
            // must rebuild.
            self.bulk.spoil(space);
        }
        committed?;
        let summary = after.apply(&mut self.log, space);
        folded?;
        Ok(summary)
    }

    /// Ends a bulk catch-up; the last one to end writes each space's remaining deltas and its
    /// watermark in one synced batch, or rebuilds the projections of a space whose deltas are
    /// not usable. Returns how many spaces were rebuilt. On failure the watermark of every space
    /// not finished stays behind, so the next commit or open rebuilds it.
    pub(crate) fn end_bulk_catch_up(&mut self, db: &Db) -> Result<usize, StoreError> {
        let Some(mut folds) = self.bulk.end() else {
            return Ok(0);
        };
        let spaces: Vec<SpaceId> = self.log.heads.keys().copied().collect();
        let mut rebuilt = 0;
        for space in spaces {
            let vector = self.log.vector(&space);
            if queries::watermark(db, &space)? == vector {
                continue;
            }
            let mut batch = WriteBatch::default();
            if bulk_catch_up::finish(db, folds.remove(&space), &mut batch, &space, &vector)? {
                db.fault_point("bulk catch-up: watermark")?;
                db.commit(batch)?;
                // Bodies folded before their key arrived during the catch-up: folded again now.
                let keys = db.keys();
                if missed_keys::missed(db, &space)?.iter().any(|key| keys.holds(key)) {
                    tracing::info!(space = %space.short(), "a data key arrived during the catch-up: folding the views again");
                    rebuild::rebuild(db, &mut self.bulk, &space, &vector, self.log.judging(&space))?;
                    rebuilt += 1;
                }
            } else {
                rebuild::rebuild(db, &mut self.bulk, &space, &vector, self.log.judging(&space))?;
                rebuilt += 1;
            }
        }
        Ok(rebuilt)
    }

    /// Rebuilds the projections of every space whose watermark differs from what the log holds
    /// (at open: after a crash during a bulk catch-up or a rebuild).
    pub(crate) fn catch_up_projections(&mut self, db: &Db) -> Result<(), StoreError> {
        let spaces: Vec<SpaceId> = self.log.heads.keys().copied().collect();
        for space in spaces {
            let vector = self.log.vector(&space);
            if queries::watermark(db, &space)? != vector {
                tracing::info!(space = %space.short(), "projections lag the log: rebuilding");
                rebuild::rebuild(db, &mut self.bulk, &space, &vector, self.log.judging(&space))?;
            }
        }
        Ok(())
    }

    /// Events of a space stored but not in its projections.
    pub(crate) fn projections_behind(&self, db: &Db, space: &SpaceId) -> Result<u64, StoreError> {
        let held = self.log.vector(space);
        Ok(held.total().saturating_sub(queries::watermark(db, space)?.total()))
    }

    /// Drops and rebuilds the projections of a space from the log; returns the state hash.
    pub(crate) fn rebuild(&mut self, db: &Db, space: &SpaceId) -> Result<String, StoreError> {
        let vector = self.log.vector(space);
        rebuild::rebuild(db, &mut self.bulk, space, &vector, self.log.judging(space))
    }
}
