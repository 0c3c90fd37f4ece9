//! Reading the views: a case, a filtered list, conflicts, the state hash, and folds of the log
//! aside from the stored views.

use rocksdb::{Direction, IteratorMode};

use super::fold::Fold;
use super::stored_events::fold_stored_events;
use crate::codec::keys::{
    case_key, meta_state_hash, meta_watermark, parse_case_part_key, prefix_end, CF_CASES, CF_META,
};
use crate::codec::meta::{decode_state_hash, decode_vector};
use crate::codec::wire::{self, StoredPart};
use crate::error::StoreError;
use crate::model::event::EventHeader;
use crate::model::ids::{AuthorId, CaseId, SpaceId};
use crate::model::membership::Membership;
use crate::model::merge::{CasePart, CaseState};
use crate::model::state_hash::{CaseDigest, PartDigester, StateHasher};
use crate::model::vector_clock::VersionVector;
use crate::model::views::{self, CaseView, ConflictView};
use crate::storage::{total_order, Db};

fn corrupt_case(space: &SpaceId, case: &CaseId, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        space: *space,
        author: AuthorId::default(),
        seq: 0,
        reason: format!("case {}: {reason}", case.short()),
    }
}

pub(crate) fn load_case(db: &Db, space: &SpaceId, case: &CaseId) -> Result<Option<CaseState>, StoreError> {
    let prefix = case_key(space, case);
    let mut read = rocksdb::ReadOptions::default();
    read.set_prefix_same_as_start(true);
    read.set_iterate_upper_bound(prefix_end(&prefix));
    let iter = db.rocks().iterator_cf_opt(db.cf(CF_CASES), read, IteratorMode::From(&prefix, Direction::Forward));
    let mut found = None;
    assemble_cases(space, iter, |state| found = Some(state))?;
    Ok(found)
}

/// The case and part a stored key names.
fn part_of(space: &SpaceId, key: &[u8]) -> Result<(CaseId, CasePart), StoreError> {
    parse_case_part_key(key).ok_or_else(|| StoreError::Corrupt {
        space: *space,
        author: AuthorId::default(),
        seq: 0,
        reason: "malformed case key".into(),
    })
}

/// Assembles the case states of a space from its stored parts (in key order, so each case's
/// parts are adjacent) and hands each complete state to `f`.
fn assemble_cases(
    space: &SpaceId,
    parts: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    mut f: impl FnMut(CaseState),
) -> Result<(), StoreError> {
    let mut current: Option<CaseState> = None;
    for item in parts {
        let (key, value) = item?;
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        let (case, part) = part_of(space, &key)?;
        if current.as_ref().is_some_and(|state| state.id != case) {
            if let Some(done) = current.take() {
                f(done);
            }
        }
        let state = current.get_or_insert_with(|| CaseState::new(case));
        wire::decode_case_part(state, &part, &value).map_err(|e| corrupt_case(space, &case, e))?;
    }
    if let Some(done) = current {
        f(done);
    }
    Ok(())
}

/// The digest of every case of a space from its stored parts (in key order, read at
/// `snapshot`), each handed to `f` as its last part is met: what [`assemble_cases`] then a
/// digest of each state gives, without holding a case (see `PartDigester`: a case past its
/// buffer is read again, streaming).
fn assemble_digests(
    db: &Db,
    space: &SpaceId,
    snapshot: &rocksdb::Snapshot<'_>,
    parts: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    mut f: impl FnMut(CaseId, CaseDigest),
) -> Result<(), StoreError> {
    let mut digester = PartDigester::new(CaseId::default());
    let mut any = false;
    let mut finish = |digester: &mut PartDigester| -> Result<(), StoreError> {
        let digest = match digester.finish() {
            Some(digest) => digest,
            None => streamed_digest(db, space, snapshot, digester.case(), digester.counts())?,
        };
        f(digester.case(), digest);
        Ok(())
    };
    for item in parts {
        let (key, value) = item?;
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        let (case, part) = part_of(space, &key)?;
        if !any || digester.case() != case {
            if any {
                finish(&mut digester)?;
            }
            digester.restart(case);
            any = true;
        }
        feed(&mut digester, space, &case, &part, &value)?;
    }
    if any {
        finish(&mut digester)?;
    }
    Ok(())
}

/// Hands one stored part to a digester.
fn feed(
    digester: &mut PartDigester,
    space: &SpaceId,
    case: &CaseId,
    part: &CasePart,
    value: &[u8],
) -> Result<(), StoreError> {
    match (part, wire::decode_part(part, value).map_err(|e| corrupt_case(space, case, e))?) {
        (_, StoredPart::Status(status)) => digester.status(&status),
        (CasePart::Field(name), StoredPart::Field(register)) => digester.field(name, &register),
        (CasePart::Entry(id), StoredPart::Entry(record)) => digester.entry(id, &record),
        _ => {} // `decode_part` returns the kind of part it is given.
    }
    Ok(())
}

/// Reads options over one case's parts at `snapshot`, leaving the block cache as it is.
fn case_read(space: &SpaceId, case: &CaseId, snapshot: &rocksdb::Snapshot<'_>) -> ([u8; 32], rocksdb::ReadOptions) {
    let prefix = case_key(space, case);
    let mut read = rocksdb::ReadOptions::default();
    read.set_prefix_same_as_start(true);
    read.set_iterate_upper_bound(prefix_end(&prefix));
    read.fill_cache(false);
    read.set_snapshot(snapshot);
    (prefix, read)
}

/// The digest of a case too large to hold its encoding, read a second time at the same snapshot
/// with its shown fields and entries counted.
fn streamed_digest(
    db: &Db,
    space: &SpaceId,
    snapshot: &rocksdb::Snapshot<'_>,
    case: CaseId,
    counts: (u64, u64),
) -> Result<CaseDigest, StoreError> {
    let (prefix, read) = case_read(space, &case, snapshot);
    let mut digester = PartDigester::streaming(case, counts);
    for item in db.rocks().iterator_cf_opt(db.cf(CF_CASES), read, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, value) = item?;
        let (_, part) = part_of(space, &key)?;
        feed(&mut digester, space, &case, &part, &value)?;
    }
    digester.finish().ok_or_else(|| corrupt_case(space, &case, "a streamed digest did not finish"))
}

/// The digest of one stored case, read part by part, if it has any part.
pub(crate) fn case_digest(db: &Db, space: &SpaceId, case: &CaseId) -> Result<Option<CaseDigest>, StoreError> {
    let snapshot = db.rocks().snapshot();
    let (prefix, read) = case_read(space, case, &snapshot);
    let iter = db.rocks().iterator_cf_opt(db.cf(CF_CASES), read, IteratorMode::From(&prefix, Direction::Forward));
    let mut found = None;
    assemble_digests(db, space, &snapshot, iter, |_, digest| found = Some(digest))?;
    Ok(found)
}

/// Folds the stored events of a space that `include` accepts into case states held in memory,
/// aside from the stored projections (neither read nor changed): the views at a point in time,
/// or a fresh replay to compare them with. `include` sees every event, in key order (author,
/// seq). Holds every case it folds.
pub(crate) fn fold_log(
    db: &Db,
    space: &SpaceId,
    judge: Option<&Membership>,
    mut include: impl FnMut(&EventHeader) -> bool,
) -> Result<Fold, StoreError> {
    let mut fold = Fold::new(VersionVector::new());
    fold_stored_events(db, space, judge, |run| {
        fold.warm(run.iter().map(|(_, operation)| operation));
        for (header, operation) in run {
            if include(header) {
                fold.apply_operation(header, operation.take(), |_| Ok::<_, StoreError>(None))?;
            }
        }
        Ok(())
    })?;
    Ok(fold)
}

/// Calls `f` for every case state of a space, in case id order; `fill_cache` false for a scan
/// whose blocks will not be read again soon (a state hash: it would only push out what queries
/// read).
pub(crate) fn scan_cases(
    db: &Db,
    space: &SpaceId,
    fill_cache: bool,
    f: impl FnMut(CaseState),
) -> Result<(), StoreError> {
    let mut read = total_order();
    read.set_iterate_upper_bound(prefix_end(space.as_bytes()));
    read.fill_cache(fill_cache);
    read.set_readahead_size(db.scan_readahead(CF_CASES));
    let iter =
        db.rocks().iterator_cf_opt(db.cf(CF_CASES), read, IteratorMode::From(space.as_bytes(), Direction::Forward));
    assemble_cases(space, iter, f)
}

/// How to filter a case list.
#[derive(Clone, Debug, Default)]
pub struct CaseFilter {
    /// Only cases with this status.
    pub status: Option<crate::model::operation::Status>,
    /// Only cases with a conflict.
    pub conflicts_only: bool,
    /// Only cases whose shown value of this field, as text, equals the second element.
    pub field_equals: Option<(String, String)>,
}

/// Case views of a space that pass the filter, in case id order.
pub(crate) fn list_cases(db: &Db, space: &SpaceId, filter: &CaseFilter) -> Result<Vec<CaseView>, StoreError> {
    let mut out = Vec::new();
    scan_cases(db, space, true, |state| {
        let view = CaseView::of(&state);
        let status_ok = filter.status.is_none_or(|s| s == view.status);
        let conflict_ok = !filter.conflicts_only || view.has_conflicts() || view.deleted_with_concurrent_changes;
        let field_ok = filter
            .field_equals
            .as_ref()
            .is_none_or(|(name, text)| view.field(name).is_some_and(|v| v.display() == *text));
        if status_ok && conflict_ok && field_ok {
            out.push(view);
        }
    })?;
    Ok(out)
}

/// Every conflict of a space (or of one case).
pub(crate) fn conflicts(db: &Db, space: &SpaceId, case: Option<&CaseId>) -> Result<Vec<ConflictView>, StoreError> {
    if let Some(case) = case {
        return Ok(load_case(db, space, case)?.as_ref().map(views::conflicts_of).unwrap_or_default());
    }
    let mut out = Vec::new();
    scan_cases(db, space, true, |state| out.extend(views::conflicts_of(&state)))?;
    Ok(out)
}

/// The version vector the stored projections of a space include.
pub(crate) fn watermark(db: &Db, space: &SpaceId) -> Result<VersionVector, StoreError> {
    match db.get(CF_META, meta_watermark(space))? {
        None => Ok(VersionVector::new()),
        Some(bytes) => decode_vector(&bytes).ok_or_else(|| StoreError::Corrupt {
            space: *space,
            author: AuthorId::default(),
            seq: 0,
            reason: "projection watermark does not decode".into(),
        }),
    }
}

/// The state hash of a space's stored projections: the one a rebuild or bulk load computed,
/// while the projections are still at the watermark it was computed for (the projections are a
/// function of the events they include), else [`scanned_state_hash`].
pub(crate) fn state_hash(db: &Db, space: &SpaceId) -> Result<String, StoreError> {
    match remembered_state_hash(db, space)? {
        Some(hash) => Ok(hash),
        None => scanned_state_hash(db, space),
    }
}

/// The state hash of a space's stored projections, computed from every stored case (what
/// `replay-tool verify` compares with a fresh replay).
pub(crate) fn scanned_state_hash(db: &Db, space: &SpaceId) -> Result<String, StoreError> {
    let mut hasher = StateHasher::new();
    let snapshot = db.rocks().snapshot();
    let mut read = total_order();
    read.set_iterate_upper_bound(prefix_end(space.as_bytes()));
    read.fill_cache(false);
    read.set_readahead_size(db.scan_readahead(CF_CASES));
    read.set_snapshot(&snapshot);
    let iter =
        db.rocks().iterator_cf_opt(db.cf(CF_CASES), read, IteratorMode::From(space.as_bytes(), Direction::Forward));
    assemble_digests(db, space, &snapshot, iter, |case, digest| hasher.add_digest(&case, &digest))?;
    Ok(hasher.finish())
}

/// The state hash recorded with the current projection watermark, if one was. A record this
/// build cannot read is only a lost shortcut: the hash is scanned.
fn remembered_state_hash(db: &Db, space: &SpaceId) -> Result<Option<String>, StoreError> {
    let Some(record) = db.get(CF_META, meta_state_hash(space))? else {
        return Ok(None);
    };
    Ok(match decode_state_hash(&record) {
        Some((hash, vector)) if vector == watermark(db, space)? => Some(hex::encode(hash)),
        _ => None,
    })
}

/// Whether the space has any stored case part.
pub(crate) fn has_case_parts(db: &Db, space: &SpaceId) -> Result<bool, StoreError> {
    let mut read = total_order();
    read.set_iterate_upper_bound(prefix_end(space.as_bytes()));
    let mut iter = db.rocks().raw_iterator_cf_opt(db.cf(CF_CASES), read);
    iter.seek(space.as_bytes());
    let found = iter.valid();
    iter.status()?;
    Ok(found)
}

/// Cases whose id starts with the given bytes (each once, however many parts it has).
pub(crate) fn case_ids_with_prefix(
    db: &Db,
    space: &SpaceId,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<CaseId>, StoreError> {
    let start = [space.as_bytes().as_slice(), prefix].concat();
    let mut read = total_order();
    read.set_iterate_upper_bound(prefix_end(&start));
    let mut iter = db.rocks().raw_iterator_cf_opt(db.cf(CF_CASES), read);
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
