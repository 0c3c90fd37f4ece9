//! The stored events of a space read for a fold: in key order, in place, read, opened and
//! folded on threads of their own.

use std::ops::ControlFlow;

use super::fold::FOLD_RUN_EVENTS;
use super::operation_in;
use crate::codec::keys::{be_u64, prefix_end, CF_EVENTS};
use crate::error::StoreError;
use crate::model::event::{stored_header_and_body, EventHeader};
use crate::model::ids::{AuthorId, SpaceId};
use crate::model::membership::Membership;
use crate::model::operation::Operation;
use crate::storage::Db;

/// Hands `f` the header and body of every stored event of a space, in key order (author, seq),
/// read in place without hashing or verifying (the chain was verified when they were stored).
pub(crate) fn for_each_stored_event(
    db: &Db,
    space: &SpaceId,
    mut f: impl FnMut(EventHeader, &[u8]) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    let mut read = rocksdb::ReadOptions::default();
    read.fill_cache(false);
    read.set_readahead_size(4 << 20);
    // The readahead is given: RocksDB need not look up the block cache for every block read to
    // size it (2% of the reader's work).
    read.set_auto_readahead_size(false);
    read.set_iterate_upper_bound(prefix_end(space.as_bytes()));
    // A raw iterator: the records are read in place (no owned copy of every key and value).
    let mut iter = db.rocks().raw_iterator_cf_opt(db.cf(CF_EVENTS), read);
    iter.seek(space.as_bytes());
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        let (header, body) = stored_header_and_body(value).map_err(|e| StoreError::Corrupt {
            space: *space,
            author: AuthorId::from_slice(key.get(16..48).unwrap_or(&[])).unwrap_or_default(),
            seq: be_u64(key.get(48..).unwrap_or(&[])).unwrap_or(0),
            reason: e.to_string(),
        })?;
        if f(header, &body)?.is_break() {
            return Ok(());
        }
        iter.next();
    }
    Ok(iter.status()?)
}

/// Events the log reader hands on at a time, and batches each stage may run ahead.
const READ_BATCH_EVENTS: usize = if cfg!(test) { 16 } else { 1024 };
const READ_BATCHES_AHEAD: usize = 4;

/// Events as read from the log: their headers, and their bodies end to end.
struct ReadBatch {
    headers: Vec<EventHeader>,
    bodies: Vec<u8>,
    ends: Vec<usize>,
}

impl ReadBatch {
    fn new() -> ReadBatch {
        ReadBatch {
            headers: Vec::with_capacity(READ_BATCH_EVENTS),
            bodies: Vec::with_capacity(READ_BATCH_EVENTS * 256),
            ends: Vec::with_capacity(READ_BATCH_EVENTS),
        }
    }

    fn push(&mut self, header: EventHeader, body: &[u8]) {
        self.headers.push(header);
        self.bodies.extend_from_slice(body);
        self.ends.push(self.bodies.len());
    }

    fn len(&self) -> usize {
        self.headers.len()
    }
}

/// Folds the stored events of a space in three stages, each on its own thread: a scoped thread
/// reads the log (iterates, parses headers, copies the bodies out), another opens and decodes
/// the bodies (opening a sealed body costs about as much as reading it), while `fold` takes runs
/// of up to [`FOLD_RUN_EVENTS`] headers with their operations (to be taken out), in key order,
/// on the calling thread. Both are joined before this returns; the first error any stage meets
/// ends them all.
///
/// With `judge`, a case event whose author's role does not allow it (revoked above a cut,
/// expired, a reader) is handed on without its operation: it stays in the log and folds to
/// nothing.
pub(crate) fn fold_stored_events(
    db: &Db,
    space: &SpaceId,
    judge: Option<&Membership>,
    mut fold: impl FnMut(&mut [(EventHeader, Option<Operation>)]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    std::thread::scope(|scope| {
        let (to_open, read) = std::sync::mpsc::sync_channel::<ReadBatch>(READ_BATCHES_AHEAD);
        let (to_fold, opened) =
            std::sync::mpsc::sync_channel::<Vec<(EventHeader, Option<Operation>)>>(READ_BATCHES_AHEAD);
        let reader = scope.spawn(move || {
            let mut batch = ReadBatch::new();
            for_each_stored_event(db, space, |header, body| {
                batch.push(header, body);
                if batch.len() < READ_BATCH_EVENTS {
                    return Ok(ControlFlow::Continue(()));
                }
                let full = std::mem::replace(&mut batch, ReadBatch::new());
                // A later stage stopped (the fold failed): stop reading.
                Ok(if to_open.send(full).is_err() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
            })?;
            if batch.len() > 0 {
                let _ = to_open.send(batch);
            }
            Ok::<_, StoreError>(())
        });
        let keys = db.keys();
        let opener = scope.spawn(move || {
            // The span of the last counted event (judged once per span, not per event).
            let mut counted_span: Option<(AuthorId, u64, u64)> = None;
            for batch in read {
                let mut out = Vec::with_capacity(batch.len());
                let mut start = 0;
                for (header, &end) in batch.headers.into_iter().zip(&batch.ends) {
                    let body = batch.bodies.get(start..end).unwrap_or_default();
                    start = end;
                    let mut operation = operation_in(&header, body, &keys);
                    let within = |(a, last, below): (AuthorId, u64, u64)| {
                        a == header.author && header.seq <= last && header.hlc < below
                    };
                    if let (Some(membership), Some(_)) = (judge, &operation) {
                        if !counted_span.is_some_and(within) {
                            if membership.judge(&header.author, header.seq, header.hlc, None).is_ok() {
                                let (last, below) = membership.case_verdict_span(&header.author, header.seq);
                                counted_span = Some((header.author, last, below));
                            } else {
                                operation = None;
                            }
                        }
                    }
                    out.push((header, operation));
                }
                if to_fold.send(out).is_err() {
                    break;
                }
            }
        });
        let folded = opened.iter().try_for_each(|mut batch| batch.chunks_mut(FOLD_RUN_EVENTS).try_for_each(&mut fold));
        drop(opened);
        opener.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let read = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        folded.and(read)
    })
}
