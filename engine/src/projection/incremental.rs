//! Incremental projection: the events of one commit folded into merge operands in the same
//! write batch, without reading the stored cases.

use rocksdb::WriteBatch;

use super::fold::{Fold, HeldCase, FOLD_RUN_EVENTS};
use super::operation_in;
use super::written_digests::WrittenDigests;
use crate::codec::keys::{CF_CASES, CF_CASE_EVENTS};
use crate::codec::wire;
use crate::model::event::SignedEvent;
use crate::model::ids::SpaceId;
use crate::model::merge::CaseState;
use crate::storage::Db;

/// The estimated memory ([`Fold::held_bytes`]) of the deltas one commit folds: past it, the rest
/// of the events go into the next commit. An ingest joins up to 16 MiB of received events; events
/// of hundreds of new field names each fold to about 15 times their size (a register, its merge
/// operand in the batch, the memtable's copy), which without this took a node past its memory
/// bound. Honest commits fold far less than this (8,192 edits hold about 2 MiB).
pub(crate) const COMMIT_FOLD_BYTES_MAX: usize = if cfg!(test) { 256 * 1024 } else { 16 * 1024 * 1024 };

/// Folds the first events into `fold` (a delta fold), in runs, until the fold holds more than
/// `bytes`; returns how many it folded (all of them, or at least one run).
pub(crate) fn fold_within(fold: &mut Fold, events: &[SignedEvent], bytes: usize) -> usize {
    let mut folded = 0;
    for run in events.chunks(FOLD_RUN_EVENTS) {
        fold_events(fold, run);
        folded += run.len();
        if fold.held_bytes() > bytes {
            break;
        }
    }
    folded
}

/// Stages what `fold` holds into `batch`: the case parts its events change, as merge operands
/// (no read of the stored case), and the history index.
pub(crate) fn stage_fold(db: &Db, batch: &mut WriteBatch, space: &SpaceId, mut fold: Fold) {
    for held in fold.take_all() {
        stage_case(db, space, batch, &held, None);
    }
}

/// Folds events into a delta fold (which reads nothing, so it cannot fail), in runs of
/// [`FOLD_RUN_EVENTS`]: each run's bodies decoded, then its cases warmed ([`Fold::warm`]), then
/// folded.
pub(crate) fn fold_events(fold: &mut Fold, events: &[SignedEvent]) {
    let mut operations = Vec::with_capacity(FOLD_RUN_EVENTS.min(events.len()));
    for run in events.chunks(FOLD_RUN_EVENTS) {
        operations.extend(run.iter().map(|event| operation_in(&event.header, &event.body, fold.keys())));
        fold.warm(&operations);
        for (event, operation) in run.iter().zip(operations.drain(..)) {
            let _ = fold.apply_operation(&event.header, operation, |_| Ok::<_, std::convert::Infallible>(None));
        }
    }
}

/// Stages every non-empty part of a (delta) case state as a merge operand, and the history
/// index records of the events folded into it; notes the case in `digests`, if given, when it
/// staged any part (a case with none is not in the projections).
pub(crate) fn stage_case(
    db: &Db,
    space: &SpaceId,
    batch: &mut WriteBatch,
    held: &HeldCase,
    digests: Option<&mut WrittenDigests>,
) {
    let (cf_cases, cf_history) = (db.cf(CF_CASES), db.cf(CF_CASE_EVENTS));
    let case_state = &held.state;
    let mut buffers = wire::PartBuffers::default();
    let staged = wire::for_each_case_part(space, case_state, &mut buffers, |key, value| {
        batch.merge_cf(cf_cases, key, value);
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    for (key, value) in held.history_records(space) {
        batch.put_cf(cf_history, key, value);
    }
    note_written(digests, case_state, staged);
}

/// Notes a case written out in `digests`, if given, when it wrote any part (a case with none is
/// not in the projections).
pub(crate) fn note_written(digests: Option<&mut WrittenDigests>, state: &CaseState, staged: bool) {
    if let Some(digests) = digests.filter(|_| staged) {
        digests.note(state);
    }
}
