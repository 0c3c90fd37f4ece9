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

/// Folds committed-to-be events into `batch`: the case parts they change, as merge operands (no
/// read of the stored case), and the history index.
pub(crate) fn fold_into_batch(db: &Db, batch: &mut WriteBatch, space: &SpaceId, events: &[SignedEvent]) {
    let mut fold = Fold::store_deltas().with_keys(db.keys());
    fold_events(&mut fold, events);
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
