//! Case projections: folding events into case states, in the same write batch as the events,
//! rebuilding them from the log, and the queries on them.

pub mod case_state;
pub mod history;
pub(crate) mod spill_files;
pub mod state_hash;
pub mod views;

use std::collections::HashMap;
use std::ops::ControlFlow;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::error::{CommandError, StoreError};
use crate::event::{stored_header_and_body, BodyEncoding, EventHeader, SignedEvent};
use crate::ids::{AuthorId, CaseId, SpaceId};
use crate::operation::{Dot, FieldValue, Operation};
use crate::store::key_layout::{
    case_event_key, case_key, history_record_value, meta_state_hash, meta_watermark, parse_case_part_key, prefix_end,
    CF_CASES, CF_CASE_EVENTS, CF_EVENTS, CF_META, HISTORY_ENTRIES_PER_RECORD,
};
use crate::store::{decode_vector, encode_vector, Store, WriterState};
use crate::vector_clock::VersionVector;
use crate::wire;
use case_state::CaseState;
use spill_files::{SpillFiles, SpillWriters};
use state_hash::{CaseDigest, CaseDigester, StateHasher};
use views::{CaseView, ConflictView};

/// Decodes an event's operation, if it has a readable and valid one. Events whose body is
/// sealed or invalid stay in the log but change no projection (the same on every node).
pub fn operation_of(event: &SignedEvent) -> Option<Operation> {
    operation_in(&event.header, &event.body)
}

fn operation_in(header: &EventHeader, body: &[u8]) -> Option<Operation> {
    if header.encoding != BodyEncoding::Plain {
        return None;
    }
    match wire::decode_operation(body) {
        Ok(op) => Some(op),
        Err(error) => {
            tracing::debug!(author = %header.author.device_id(), seq = header.seq, %error, "event body ignored by projections");
            None
        }
    }
}

/// An in-memory fold of events into case states: the core of both incremental updates and
/// rebuilds.
///
/// A full fold starts from the stored states (`load`) and `seen`, the version vector of what is
/// already folded in. A delta fold ([`Fold::deltas`]) starts from nothing and keeps every
/// superseded dot it has not seen itself: its states are merge operands that RocksDB joins with
/// the stored ones (see [`merge_case_part`]), so folding needs no read.
pub struct Fold {
    /// What has been folded in (kept by a full fold only: a delta fold never reads it).
    pub seen: VersionVector,
    /// The case states touched, each with its bookkeeping, in the order they were first touched
    /// (which is about the order their memory was allocated in: dropping them in this order is
    /// twice as fast as in hash order, measured on 100k cases).
    cases: Vec<Held>,
    /// Where each case is in `cases`.
    index: HashMap<CaseId, usize, foldhash::fast::RandomState>,
    /// Whether `seen` may drop pending dots (false for a delta fold, whose states are partial).
    full: bool,
    clock: u64,
    /// Whether to hold each case's history records ([`Fold::store_deltas`]).
    keeps_history: bool,
}

/// One case state held by a [`Fold`], with its bookkeeping.
struct Held {
    state: CaseState,
    /// A count of applied events when the case was last touched, for eviction.
    tick: u64,
    /// The events folded into the case here, for its history index: (author, seq, hlc).
    history: Vec<(AuthorId, u64, u64)>,
}

/// A case state taken out of a [`Fold`], with the history records of the events folded into it.
pub struct HeldCase {
    /// The (delta) state.
    pub state: CaseState,
    /// (author, seq, hlc) of each event folded into it, in key order once taken out.
    history: Vec<(AuthorId, u64, u64)>,
}

impl Fold {
    /// A fold starting from `seen`.
    pub fn new(seen: VersionVector) -> Fold {
        Fold { seen, cases: Vec::new(), index: HashMap::default(), full: true, clock: 0, keeps_history: false }
    }

    /// A fold of deltas: partial case states of only the events folded here.
    pub fn deltas() -> Fold {
        Fold { full: false, ..Fold::new(VersionVector::new()) }
    }

    /// A fold of deltas that also holds each case's history records, so that a case's parts and
    /// history are written together and in key order when it is taken out (random-order inserts
    /// of one history record per event were the largest memtable cost of a bulk fold).
    pub(crate) fn store_deltas() -> Fold {
        Fold { keeps_history: true, ..Fold::deltas() }
    }

    /// Folds one event; `load` provides a case's stored state the first time it is touched.
    pub fn apply<E>(
        &mut self,
        event: &SignedEvent,
        load: impl FnOnce(&CaseId) -> Result<Option<CaseState>, E>,
    ) -> Result<(), E> {
        self.apply_parts(&event.header, &event.body, load)
    }

    /// [`Fold::apply`] on a decoded header and its body.
    pub fn apply_parts<E>(
        &mut self,
        h: &EventHeader,
        body: &[u8],
        load: impl FnOnce(&CaseId) -> Result<Option<CaseState>, E>,
    ) -> Result<(), E> {
        self.apply_operation(h, operation_in(h, body), load)
    }

    /// [`Fold::apply`] on a decoded header and the operation its body holds (`None`: sealed or
    /// invalid, which changes no projection).
    pub fn apply_operation<E>(
        &mut self,
        h: &EventHeader,
        operation: Option<Operation>,
        load: impl FnOnce(&CaseId) -> Result<Option<CaseState>, E>,
    ) -> Result<(), E> {
        if let Some(op) = operation {
            let case = op.case();
            let at = match self.index.entry(case) {
                std::collections::hash_map::Entry::Occupied(o) => *o.get(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let state = load(&case)?.unwrap_or_else(|| CaseState::new(case));
                    *v.insert(push_held(&mut self.cases, state, 0))
                }
            };
            let held = &mut self.cases[at]; // `index` only names held cases.
            self.clock += 1;
            held.tick = self.clock;
            if self.keeps_history {
                held.history.push((h.author, h.seq, h.hlc));
            }
            let (seen, full) = (&self.seen, self.full);
            held.state.apply(op, Dot { author: h.author, seq: h.seq }, h.hlc, &|d: &Dot| {
                full && seen.contains(&d.author, d.seq)
            });
        }
        // A delta fold never reads what it has seen (its states are joined, not completed).
        if self.full {
            self.seen.raise(h.author, h.seq);
        }
        Ok(())
    }

    /// Holds `case`'s stored state, read by `load`, unless the fold holds the case already (a
    /// caller that must see a case before folding into it).
    pub fn hold<E>(
        &mut self,
        case: CaseId,
        load: impl FnOnce(&CaseId) -> Result<Option<CaseState>, E>,
    ) -> Result<(), E> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.index.entry(case) {
            if let Some(stored) = load(&case)? {
                slot.insert(push_held(&mut self.cases, stored, self.clock));
            }
        }
        Ok(())
    }

    /// Reads what folding these events will touch of the states already held for their cases (the
    /// index slot, the bookkeeping, each field's entry), so that folding them finds it in the
    /// cache. A fold over many cases touches each only every few thousand events, so each of
    /// those reads misses the cache: here they do not depend on each other and the processor
    /// overlaps them, where folding event by event waits for each in turn.
    ///
    /// In three passes, one per step of the pointer chain (index slot, held state, its field map
    /// and history), each over the whole run: a pass's reads are independent of each other.
    /// Reads at most [`FOLD_RUN_EVENTS`] cases (the first operations of a longer run).
    pub fn warm<'a>(&self, run: impl IntoIterator<Item = &'a Option<Operation>>) {
        let mut positions = [0usize; FOLD_RUN_EVENTS];
        let mut count = 0;
        for case in run.into_iter().filter_map(|operation| operation.as_ref().map(Operation::case)) {
            if let (Some(at), Some(slot)) = (self.index.get(&case), positions.get_mut(count)) {
                *slot = *at;
                count += 1;
            }
        }
        let held_cases = || positions.get(..count).unwrap_or_default().iter().filter_map(|at| self.cases.get(*at));
        let mut touched = 0usize;
        for held in held_cases() {
            touched = touched.wrapping_add(held.tick as usize).wrapping_add(held.history.len());
            touched = touched.wrapping_add(held.state.record.fields.len());
        }
        for held in held_cases() {
            if let Some((_, seq, _)) = held.history.last() {
                touched = touched.wrapping_add(*seq as usize);
            }
            for (name, register) in held.state.record.fields.iter() {
                touched = touched.wrapping_add(name.len()).wrapping_add(register.current.len());
            }
        }
        std::hint::black_box(touched);
    }

    /// The state held for `case`, if the fold touched it.
    pub fn case(&self, case: &CaseId) -> Option<&CaseState> {
        self.index.get(case).and_then(|at| self.cases.get(*at)).map(|held| &held.state)
    }

    /// How many cases the fold holds.
    pub fn case_count(&self) -> usize {
        self.cases.len()
    }

    /// Every case state held, in no particular order.
    pub fn into_cases(self) -> impl Iterator<Item = (CaseId, CaseState)> {
        self.cases.into_iter().map(|held| (held.state.id, held.state))
    }

    /// Every case state held, in case id order (the order of views and of the state hash).
    pub fn into_sorted_cases(self) -> Vec<CaseState> {
        let mut cases: Vec<CaseState> = self.cases.into_iter().map(|held| held.state).collect();
        cases.sort_unstable_by_key(|state| state.id);
        cases
    }
}

/// Appends a held case; returns where it is.
fn push_held(cases: &mut Vec<Held>, state: CaseState, tick: u64) -> usize {
    cases.push(Held { state, tick, history: Vec::new() });
    cases.len() - 1
}

impl Held {
    fn taken(self) -> HeldCase {
        let Held { state, mut history, .. } = self;
        history.sort_unstable_by_key(|(author, seq, _)| (*author, *seq));
        HeldCase { state, history }
    }
}

impl HeldCase {
    /// Reads what writing this case out will read (its field names and values, its history), so
    /// that a writer warming a few cases ahead finds them in the cache (see [`Fold::warm`]: a
    /// case written out was last touched thousands of events ago). Returns a sum of what it read,
    /// for the caller to keep (`std::hint::black_box`).
    pub(crate) fn warm(&self) -> usize {
        fn ends(bytes: &[u8]) -> usize {
            usize::from(bytes.first().copied().unwrap_or(0)) + usize::from(bytes.last().copied().unwrap_or(0))
        }
        let mut touched = 0usize;
        for (_, seq, _) in &self.history {
            touched = touched.wrapping_add(*seq as usize);
        }
        for (name, register) in self.state.record.fields.iter() {
            touched = touched.wrapping_add(name.len());
            for version in &register.current {
                touched = touched.wrapping_add(match &version.value {
                    FieldValue::Text(text) | FieldValue::Decimal(text) | FieldValue::Date(text) => {
                        ends(text.as_bytes())
                    }
                    FieldValue::Bytes(bytes) => ends(bytes),
                    FieldValue::Integer(n) => *n as usize,
                    FieldValue::Bool(b) => usize::from(*b),
                });
            }
        }
        touched
    }

    /// The case's history records, in key order: its events in records of up to
    /// [`HISTORY_ENTRIES_PER_RECORD`], each keyed by its first (one record per case for a bulk
    /// fold instead of one per event).
    fn history_records<'a>(&'a self, space: &'a SpaceId) -> impl Iterator<Item = ([u8; 72], Vec<u8>)> + 'a {
        self.history.chunks(HISTORY_ENTRIES_PER_RECORD).filter_map(move |chunk| match chunk {
            [(author, seq, hlc), rest @ ..] => {
                Some((case_event_key(space, &self.state.id, author, *seq), history_record_value(*hlc, rest)))
            }
            [] => None,
        })
    }
}

impl Fold {
    /// Removes and returns the `count` case states touched least recently (a delta fold that
    /// must stay bounded writes them out; a case touched again starts a new delta), in case id
    /// order.
    pub fn evict_least_recent(&mut self, count: usize) -> Vec<HeldCase> {
        let mut order: Vec<(u64, CaseId)> = self.cases.iter().map(|held| (held.tick, held.state.id)).collect();
        let count = count.min(order.len());
        if count == 0 {
            return Vec::new();
        }
        if count < order.len() {
            order.select_nth_unstable(count - 1);
        }
        let mut cases: Vec<CaseId> = order[..count].iter().map(|(_, case)| *case).collect();
        cases.sort_unstable();
        cases.into_iter().filter_map(|case| self.take(&case)).collect()
    }

    /// Removes and returns every case state, in case id order.
    pub fn take_all(&mut self) -> Vec<HeldCase> {
        self.index.clear();
        let mut cases: Vec<HeldCase> = self.cases.drain(..).map(Held::taken).collect();
        cases.sort_unstable_by_key(|held| held.state.id);
        cases
    }

    fn take(&mut self, case: &CaseId) -> Option<HeldCase> {
        let at = self.index.remove(case)?;
        let held = self.cases.swap_remove(at);
        if let Some(moved) = self.cases.get(at) {
            self.index.insert(moved.state.id, at);
        }
        Some(held.taken())
    }
}

/// Folds committed-to-be events into `batch`: the case parts they change, as merge operands (no
/// read of the stored case), and the history index.
pub(crate) fn fold_into_batch(
    store: &Store,
    batch: &mut WriteBatch,
    space: &SpaceId,
    events: &[SignedEvent],
) -> Result<(), StoreError> {
    let mut fold = Fold::store_deltas();
    fold_events(&mut fold, events);
    for held in fold.take_all() {
        stage_case(store, space, batch, &held, None);
    }
    Ok(())
}

/// Folds events into a delta fold (which reads nothing, so it cannot fail), in runs of
/// [`FOLD_RUN_EVENTS`]: each run's bodies decoded, then its cases warmed ([`Fold::warm`]), then
/// folded.
fn fold_events(fold: &mut Fold, events: &[SignedEvent]) {
    let mut operations = Vec::with_capacity(FOLD_RUN_EVENTS.min(events.len()));
    for run in events.chunks(FOLD_RUN_EVENTS) {
        operations.extend(run.iter().map(|event| operation_in(&event.header, &event.body)));
        fold.warm(&operations);
        for (event, operation) in run.iter().zip(operations.drain(..)) {
            let _ = fold.apply_operation(&event.header, operation, |_| Ok::<_, std::convert::Infallible>(None));
        }
    }
}

/// The name of the `cases` column family's merge operator (see [`merge_case_part`]).
pub(crate) const CASE_PART_MERGE: &str = "casesync.case_part.join.v1";

/// The `cases` column family's merge operator: joins a stored case part with merge operands (each
/// a part state folded from other events, see [`Fold::deltas`]). The join is commutative and
/// associative, so RocksDB may combine operands in any grouping, at read, flush or compaction.
/// Returns `None` (RocksDB reports corruption) for a key or value this build did not write.
pub(crate) fn merge_case_part(
    key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let Some((case, part)) = parse_case_part_key(key) else {
        tracing::error!(key = %hex::encode(key), "merge of a malformed case key");
        return None;
    };
    if existing.is_none() && operands.len() == 1 {
        // One part state and nothing to join it with (every part of a rebuild or a bulk
        // catch-up, at read and at its first compaction): the join is the part itself. It is
        // decoded, and checked, wherever it is read.
        return operands.iter().next().map(<[u8]>::to_vec);
    }
    let mut state = CaseState::new(case);
    for (index, value) in existing.into_iter().chain(operands).enumerate() {
        let joined = if index == 0 {
            wire::decode_case_part(&mut state, &part, value)
        } else {
            let mut other = CaseState::new(case);
            wire::decode_case_part(&mut other, &part, value).map(|()| state.join_part(other, &part))
        };
        if let Err(error) = joined {
            tracing::error!(case = %case.short(), %error, "merge of an undecodable case part");
            return None;
        }
    }
    wire::encode_case_part(&state, &part)
}

fn corrupt_case(space: &SpaceId, case: &CaseId, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        space: *space,
        author: AuthorId::default(),
        seq: 0,
        reason: format!("case {}: {reason}", case.short()),
    }
}

fn load_case(store: &Store, space: &SpaceId, case: &CaseId) -> Result<Option<CaseState>, StoreError> {
    let prefix = case_key(space, case);
    let mut read = rocksdb::ReadOptions::default();
    read.set_prefix_same_as_start(true);
    read.set_iterate_upper_bound(prefix_end(&prefix));
    let iter = store.db().iterator_cf_opt(store.cf(CF_CASES), read, IteratorMode::From(&prefix, Direction::Forward));
    let mut found = None;
    assemble_cases(space, iter, |state| found = Some(state))?;
    Ok(found)
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
        let (case, part) = parse_case_part_key(&key).ok_or_else(|| StoreError::Corrupt {
            space: *space,
            author: AuthorId::default(),
            seq: 0,
            reason: "malformed case key".into(),
        })?;
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
pub(crate) fn rebuild(store: &Store, state: &mut WriterState, space: &SpaceId) -> Result<String, StoreError> {
    // Deltas folded during a bulk catch-up start from the old watermark: drop them.
    state.deferred.remove(space);
    // Phases at debug level: the subscriber stamps each with the time (the engine reads no clock).
    tracing::debug!(space = %space.short(), "rebuild: started");
    // The watermark goes first: a crash from here on rebuilds at the next open.
    let mut unmark = WriteBatch::default();
    unmark.delete_cf(store.cf(CF_META), meta_watermark(space));
    store.commit(unmark)?;
    // The old projections are cleared on a thread of its own while this one folds: nothing the
    // fold reads or writes before the ingest is theirs, and unlinking their files waits on the
    // file system (~45 ms for 1M events). The new files are ingested once they are gone.
    let (files, digests) = std::thread::scope(|scope| {
        let cleared = scope.spawn(|| clear_projections(store, space));
        let written = fold_into_spill_files(store, space);
        let cleared = cleared.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let written = written?;
        cleared?;
        Ok::<_, StoreError>(written)
    })?;
    tracing::debug!(space = %space.short(), "rebuild: the log is folded into spill files");
    files.ingest(store)?;
    tracing::debug!(space = %space.short(), "rebuild: the spill files are ingested");
    let digests = digests.unwrap_or_else(WrittenDigests::new);
    let hash = digests.state_hash(store, space)?;
    let vector = state.vector(space);
    let mut done = WriteBatch::default();
    done.put_cf(store.cf(CF_META), meta_watermark(space), encode_vector(&vector));
    stage_state_hash(store, &mut done, space, &vector, &hash);
    store.commit(done)?;
    tracing::debug!(space = %space.short(), "rebuild: done");
    Ok(hash)
}

/// Removes a space's projections (its watermark already removed): their files are dropped whole,
/// so compactions never rewrite them; then a range deletion covers what files shared with other
/// spaces still hold. (In this order no file dropped can hold the range deletion, which would let
/// the old records come back.)
fn clear_projections(store: &Store, space: &SpaceId) -> Result<(), StoreError> {
    store.drop_files_within(&[CF_CASES, CF_CASE_EVENTS], space.as_bytes())?;
    let mut clear = WriteBatch::default();
    store.delete_prefix(&mut clear, CF_CASES, space.as_bytes());
    store.delete_prefix(&mut clear, CF_CASE_EVENTS, space.as_bytes());
    store.commit(clear)
}

/// Folds a space's log into spill files ([`SpillFiles`]), for projections that are empty by the
/// time they are ingested: each case written out once is then complete as written. This thread
/// folds and hands its spills to the writer threads, which build them into SST files.
fn fold_into_spill_files(store: &Store, space: &SpaceId) -> Result<(SpillFiles, Option<WrittenDigests>), StoreError> {
    let writers = SpillWriters::start(SpillFiles::new(store, space)?, true)?;
    let mut fold = Fold::store_deltas();
    let folded = fold_stored_events(store, space, |run| {
        fold.warm(run.iter().map(|(_, operation)| operation));
        for (header, operation) in run {
            fold.apply_operation(header, operation.take(), |_| Ok::<_, StoreError>(None))?;
            if fold.case_count() >= REBUILD_CASES_IN_MEMORY {
                writers.spill(fold.evict_least_recent(REBUILD_CASES_IN_MEMORY / 4))?;
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

/// Hands `f` the header and body of every stored event of a space, in key order (author, seq),
/// read in place without hashing or verifying (the chain was verified when they were stored).
fn for_each_stored_event(
    store: &Store,
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
    let mut iter = store.db().raw_iterator_cf_opt(store.cf(CF_EVENTS), read);
    iter.seek(space.as_bytes());
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        let (header, body) = stored_header_and_body(value).map_err(|e| StoreError::Corrupt {
            space: *space,
            author: AuthorId::from_slice(key.get(16..48).unwrap_or(&[])).unwrap_or_default(),
            seq: crate::store::key_layout::be_u64(key.get(48..).unwrap_or(&[])).unwrap_or(0),
            reason: e.to_string(),
        })?;
        if f(header, &body)?.is_break() {
            return Ok(());
        }
        iter.next();
    }
    Ok(iter.status()?)
}

/// Events the log reader hands to the fold at a time, and batches it may read ahead.
const READ_BATCH_EVENTS: usize = if cfg!(test) { 16 } else { 1024 };
const READ_BATCHES_AHEAD: usize = 4;

/// Events a fold is handed at a time, to warm their cases' states before folding them
/// ([`Fold::warm`]): few enough that those states stay in the core's cache until folded.
const FOLD_RUN_EVENTS: usize = 32;

/// Folds the stored events of a space in two stages: a scoped thread reads the log (iterates,
/// parses headers, decodes bodies) while `fold` takes runs of up to [`FOLD_RUN_EVENTS`] headers
/// with their operations (to be taken out), in key order, on the calling thread. The reader is
/// joined before this returns; the first error either side meets ends both.
fn fold_stored_events(
    store: &Store,
    space: &SpaceId,
    mut fold: impl FnMut(&mut [(EventHeader, Option<Operation>)]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    std::thread::scope(|scope| {
        let (batches, read) =
            std::sync::mpsc::sync_channel::<Vec<(EventHeader, Option<Operation>)>>(READ_BATCHES_AHEAD);
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(READ_BATCH_EVENTS);
            for_each_stored_event(store, space, |header, body| {
                let operation = operation_in(&header, body);
                batch.push((header, operation));
                if batch.len() < READ_BATCH_EVENTS {
                    return Ok(ControlFlow::Continue(()));
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH_EVENTS));
                // The fold stopped (it failed): stop reading.
                Ok(if batches.send(full).is_err() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
            })?;
            if !batch.is_empty() {
                let _ = batches.send(batch);
            }
            Ok(())
        });
        let folded = read.iter().try_for_each(|mut batch| batch.chunks_mut(FOLD_RUN_EVENTS).try_for_each(&mut fold));
        drop(read);
        let read = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        folded.and(read)
    })
}

/// Stages every non-empty part of a (delta) case state as a merge operand, and the history
/// index records of the events folded into it; notes the case in `digests`, if given, when it
/// staged any part (a case with none is not in the projections).
fn stage_case(
    store: &Store,
    space: &SpaceId,
    batch: &mut WriteBatch,
    held: &HeldCase,
    digests: Option<&mut WrittenDigests>,
) {
    let (cf_cases, cf_history) = (store.cf(CF_CASES), store.cf(CF_CASE_EVENTS));
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
fn note_written(digests: Option<&mut WrittenDigests>, state: &CaseState, staged: bool) {
    if let Some(digests) = digests.filter(|_| staged) {
        digests.note(state);
    }
}

/// Digests a bulk fold over empty projections (a rebuild, or a bulk catch-up or import into a
/// space with none) takes of the case states it writes out, so that it knows the state hash of
/// what it wrote without reading it all back. A case written out once was complete as written
/// (nothing was stored before it, and no later event touched it); one written out again (touched
/// after it was) is stored as several merge operands and read back. Bounded: past
/// [`WRITTEN_DIGESTS_MAX`] cases written, the hash is computed by a scan instead.
pub(crate) struct WrittenDigests {
    written: Vec<(CaseId, CaseDigest)>,
    digester: CaseDigester,
    /// False once the bound was passed (`written` is then emptied).
    complete: bool,
}

/// Cases a [`WrittenDigests`] notes at most (48 bytes each: 24 MiB).
const WRITTEN_DIGESTS_MAX: usize = if cfg!(test) { 64 } else { 1 << 19 };

impl WrittenDigests {
    pub(crate) fn new() -> WrittenDigests {
        WrittenDigests { written: Vec::new(), digester: CaseDigester::default(), complete: true }
    }

    /// Adds what another writer of the same bulk fold noted.
    fn extend(&mut self, other: WrittenDigests) {
        if !(self.complete && other.complete) || self.written.len() + other.written.len() > WRITTEN_DIGESTS_MAX {
            self.complete = false;
            self.written = Vec::new();
            return;
        }
        self.written.extend(other.written);
    }

    /// Notes a case state as it is written out.
    fn note(&mut self, state: &CaseState) {
        if !self.complete {
            return;
        }
        if self.written.len() >= WRITTEN_DIGESTS_MAX {
            self.complete = false;
            self.written = Vec::new();
            return;
        }
        self.written.push((state.id, self.digester.digest(state)));
    }

    /// The state hash of the space once everything noted is written: each case written once by
    /// its digest, each case written several times read back (all by a scan when more than a
    /// sixteenth of them were).
    pub(crate) fn state_hash(self, store: &Store, space: &SpaceId) -> Result<String, StoreError> {
        let mut written = self.written;
        written.sort_unstable_by_key(|(case, _)| *case);
        let cases = written.chunk_by(|a, b| a.0 == b.0);
        let rewritten = cases.clone().filter(|same| same.len() > 1).count();
        if !self.complete || rewritten * 16 > written.len() {
            return store.scanned_state_hash(space);
        }
        let mut hasher = StateHasher::new();
        for same in cases {
            match same {
                [(case, digest)] => hasher.add_digest(case, digest),
                [(case, _), ..] => {
                    if let Some(state) = load_case(store, space, case)? {
                        hasher.add(&state);
                    }
                }
                [] => {}
            }
        }
        Ok(hasher.finish())
    }
}

/// Stages the state hash of a space's projections at the watermark `vector`, to be committed with
/// that watermark ([`Store::state_hash`] returns it while the watermark stays there).
fn stage_state_hash(store: &Store, batch: &mut WriteBatch, space: &SpaceId, vector: &VersionVector, hash: &str) {
    let Ok(hash) = <[u8; 32]>::try_from(hex::decode(hash).unwrap_or_default()) else {
        return;
    };
    let mut value = Vec::with_capacity(1 + 32 + vector.len() * 40);
    value.push(STATE_HASH_RECORD_VERSION);
    value.extend_from_slice(&hash);
    value.extend_from_slice(&encode_vector(vector));
    batch.put_cf(store.cf(CF_META), meta_state_hash(space), value);
}

/// The version of the state hash record: its layout and the state hash's definition (v3: case
/// digests are SHA-256).
const STATE_HASH_RECORD_VERSION: u8 = 3;

/// Case states a node's bulk catch-up keeps in memory before staging the least recently touched
/// quarter as deltas with the batch. Measured at 1M events (100k cases, each author cycling over
/// its 12.5k): 8k -> 13-14 CPU us per event on node B (the cycle does not fit, so nearly every
/// event is written out as its own delta); 16k -> 9.2 us. 16k fit the node's memory budget
/// (256 MiB: node B peaks at 215 MiB) once ingests ran on one thread; when glibc spread the fold
/// over the blocking pool's malloc arenas, the same 16k took node B to 323 MiB.
pub(crate) const DEFERRED_CASES_IN_MEMORY: usize = if cfg!(test) { 4 } else { 16_384 };

/// The case deltas of a space folded during a bulk catch-up ([`Store::defer_projections`]):
/// folded from the events as they are ingested, spilled into SST files whenever more than the
/// limit of cases are held (the least recently touched quarter, as merge operands, each case with
/// the history records of its events, by the fold's writer threads while the ingests go on), and
/// ingested with the rest when the catch-up ends — so the end needs no rebuild and no second
/// pass over the log.
pub(crate) struct DeferredFold {
    fold: Fold,
    /// The writers of the spills, and the files written so far (not yet in the store).
    writers: SpillWriters,
    /// False if the projections lagged when the catch-up began, or a commit or spill failed after
    /// its events were folded: the end rebuilds instead.
    pub(crate) usable: bool,
}

/// Folds a batch ingested during a bulk catch-up into the space's deferred deltas, and hands the
/// least recently touched quarter to the spill writers when more than `cases_max` are held.
/// Nothing reaches the store's projections before [`finish_deferred`]: the watermark lags until
/// then, so a crash before is repaired by the rebuild at the next open like any other lagging
/// projection. (Apart from the events' own write, so this fold can run while that write is on
/// its way; see `Store::stage_and_commit`.)
pub(crate) fn fold_deferred(
    deferred: &mut DeferredFold,
    cases_max: usize,
    events: &[SignedEvent],
) -> Result<(), StoreError> {
    fold_events(&mut deferred.fold, events);
    if deferred.fold.case_count() < cases_max {
        return Ok(());
    }
    deferred.writers.spill(deferred.fold.evict_least_recent(cases_max / 4))
}

/// Starts the deferred fold of a space at its first batch of a bulk catch-up.
pub(crate) fn begin_deferred(store: &Store, state: &mut WriterState, space: &SpaceId) -> Result<(), StoreError> {
    if !state.deferred.contains_key(space) {
        // Deltas can only complete views that were current when the catch-up began.
        let watermark = store.projection_watermark(space)?;
        let usable = watermark == state.vector(space);
        let empty = state.deferred_digests && usable && watermark.is_empty() && !store.has_case_parts(space)?;
        let writers = SpillWriters::start(SpillFiles::new(store, space)?, empty)?;
        state.deferred.insert(*space, DeferredFold { fold: Fold::store_deltas(), writers, usable });
    }
    Ok(())
}

/// Ends the bulk catch-up of a space: spills its remaining deltas (two writers at once), ingests
/// every spill into the store, and stages the watermark `vector` in `batch` (to be committed
/// synced: until then a crash is repaired by a rebuild at the next open), with the state hash
/// when the catch-up began with no projections (known from the digests of what it wrote).
/// Returns false if its deltas are not usable (the caller rebuilds).
pub(crate) fn finish_deferred(
    store: &Store,
    deferred: Option<DeferredFold>,
    batch: &mut WriteBatch,
    space: &SpaceId,
    vector: &VersionVector,
) -> Result<bool, StoreError> {
    let Some(DeferredFold { mut fold, writers, .. }) = deferred.filter(|d| d.usable) else {
        return Ok(false);
    };
    let (files, digests) = writers.finish(fold.take_all())?;
    files.ingest(store)?;
    batch.put_cf(store.cf(CF_META), meta_watermark(space), encode_vector(vector));
    if let Some(digests) = digests {
        stage_state_hash(store, batch, space, vector, &digests.state_hash(store, space)?);
    }
    Ok(true)
}

/// How to filter a case list.
#[derive(Clone, Debug, Default)]
pub struct CaseFilter {
    /// Only cases with this status.
    pub status: Option<crate::operation::Status>,
    /// Only cases with a conflict.
    pub conflicts_only: bool,
    /// Only cases whose shown value of this field, as text, equals the second element.
    pub field_equals: Option<(String, String)>,
}

impl Store {
    /// Folds the stored events of a space that `include` accepts into case states held in memory,
    /// aside from the stored projections (neither read nor changed): the views at a point in
    /// time, or a fresh replay to compare them with. `include` sees every event, in key order
    /// (author, seq). Holds every case it folds.
    pub fn fold_log(&self, space: &SpaceId, mut include: impl FnMut(&EventHeader) -> bool) -> Result<Fold, StoreError> {
        let mut fold = Fold::new(VersionVector::new());
        fold_stored_events(self, space, |run| {
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

    /// The folded state of one case.
    pub fn case_state(&self, space: &SpaceId, case: &CaseId) -> Result<Option<CaseState>, StoreError> {
        load_case(self, space, case)
    }

    /// The view of one case.
    pub fn case_view(&self, space: &SpaceId, case: &CaseId) -> Result<Option<CaseView>, StoreError> {
        Ok(self.case_state(space, case)?.as_ref().map(CaseView::of))
    }

    /// Resolves a full hex case id or a unique prefix of at least 4 hex digits.
    pub fn resolve_case(&self, space: &SpaceId, text: &str) -> Result<CaseId, crate::Error> {
        let text = text.trim().to_ascii_lowercase();
        if let Ok(id) = CaseId::from_hex(&text) {
            return Ok(id);
        }
        if text.len() < 4 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CommandError::UnknownCase(text).into());
        }
        let even = &text[..text.len() & !1];
        let prefix = hex::decode(even).map_err(|_| CommandError::UnknownCase(text.clone()))?;
        let matches: Vec<CaseId> = self
            .case_ids_with_prefix(space, &prefix, usize::MAX)?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&text))
            .take(2)
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(CommandError::UnknownCase(text).into()),
            _ => Err(CommandError::AmbiguousCase(text).into()),
        }
    }

    /// Calls `f` for every case state of a space, in case id order.
    pub fn for_each_case(&self, space: &SpaceId, f: impl FnMut(CaseState)) -> Result<(), StoreError> {
        self.scan_cases(space, true, f)
    }

    /// [`Store::for_each_case`]; `fill_cache` false for a scan whose blocks will not be read again
    /// soon (a state hash: it would only push out what queries read).
    fn scan_cases(&self, space: &SpaceId, fill_cache: bool, f: impl FnMut(CaseState)) -> Result<(), StoreError> {
        let mut read = crate::store::total_order();
        read.set_iterate_upper_bound(prefix_end(space.as_bytes()));
        read.fill_cache(fill_cache);
        read.set_readahead_size(2 << 20);
        let iter = self.db().iterator_cf_opt(
            self.cf(CF_CASES),
            read,
            IteratorMode::From(space.as_bytes(), Direction::Forward),
        );
        assemble_cases(space, iter, f)
    }

    /// Case views of a space that pass the filter, in case id order.
    pub fn list_cases(&self, space: &SpaceId, filter: &CaseFilter) -> Result<Vec<CaseView>, StoreError> {
        let mut out = Vec::new();
        self.for_each_case(space, |state| {
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
    pub fn conflicts(&self, space: &SpaceId, case: Option<&CaseId>) -> Result<Vec<ConflictView>, StoreError> {
        if let Some(case) = case {
            return Ok(self.case_state(space, case)?.as_ref().map(views::conflicts_of).unwrap_or_default());
        }
        let mut out = Vec::new();
        self.for_each_case(space, |state| out.extend(views::conflicts_of(&state)))?;
        Ok(out)
    }

    /// The state hash of a space's stored projections: the one a rebuild or bulk load computed,
    /// while the projections are still at the watermark it was computed for (the projections are
    /// a function of the events they include), else [`Store::scanned_state_hash`].
    pub fn state_hash(&self, space: &SpaceId) -> Result<String, StoreError> {
        match self.remembered_state_hash(space)? {
            Some(hash) => Ok(hash),
            None => self.scanned_state_hash(space),
        }
    }

    /// The state hash of a space's stored projections, computed from every stored case (what
    /// `replay-tool verify` compares with a fresh replay).
    pub fn scanned_state_hash(&self, space: &SpaceId) -> Result<String, StoreError> {
        let mut hasher = StateHasher::new();
        self.scan_cases(space, false, |state| hasher.add(&state))?;
        Ok(hasher.finish())
    }

    /// The state hash recorded with the current projection watermark, if one was.
    fn remembered_state_hash(&self, space: &SpaceId) -> Result<Option<String>, StoreError> {
        let Some(record) = self.db().get_cf(self.cf(CF_META), meta_state_hash(space))? else {
            return Ok(None);
        };
        // A record this build cannot read is only a lost shortcut: the hash is scanned.
        let remembered = match record.split_first() {
            Some((&STATE_HASH_RECORD_VERSION, rest)) if rest.len() >= 32 => {
                decode_vector(&rest[32..]).map(|vector| (hex::encode(&rest[..32]), vector))
            }
            _ => None,
        };
        Ok(match remembered {
            Some((hash, vector)) if vector == self.projection_watermark(space)? => Some(hash),
            _ => None,
        })
    }

    /// Whether the space has any stored case part.
    pub(crate) fn has_case_parts(&self, space: &SpaceId) -> Result<bool, StoreError> {
        let mut read = crate::store::total_order();
        read.set_iterate_upper_bound(prefix_end(space.as_bytes()));
        let mut iter = self.db().raw_iterator_cf_opt(self.cf(CF_CASES), read);
        iter.seek(space.as_bytes());
        let found = iter.valid();
        iter.status()?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::Command;
    use crate::ids::{CaseId, SpaceId};
    use crate::operation::FieldValue;
    use crate::signing::DeviceKey;
    use crate::store::{Store, StoreOptions};

    #[test]
    fn the_log_read_on_a_second_thread_folds_to_the_stored_views_and_stops_at_a_corrupt_record() {
        use crate::error::StoreError;
        use crate::projection::state_hash::StateHasher;
        use crate::store::key_layout::{event_key, CF_EVENTS};
        let dir = tempfile::tempdir().unwrap();
        let store = a_busy_store(dir.path(), 40); // 120 events: several batches of the reader
        let space = SpaceId([1; 16]);
        let stored = store.state_hash(&space).unwrap();
        let cases = store.fold_log(&space, |_| true).unwrap().into_sorted_cases();
        assert_eq!(StateHasher::of(&cases), stored);
        assert_eq!(store.rebuild_projections(&space).unwrap(), stored);
        let mut seen = 0;
        let _ = store.fold_log(&space, |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 120, "include sees every event, in order, on the calling thread");

        // A record that does not decode, past the first batches: an error naming it, no hang.
        let author = DeviceKey::from_secret([2; 32]).author();
        store.db().put_cf(store.cf(CF_EVENTS), event_key(&space, &author, 50), b"not an event").unwrap();
        for outcome in [store.fold_log(&space, |_| true).map(|_| ()), store.rebuild_projections(&space).map(|_| ())] {
            match outcome {
                Err(StoreError::Corrupt { author: named, seq: 50, .. }) => assert_eq!(named, author),
                other => panic!("expected the corrupt record named, got {:?}", other.err()),
            }
        }
    }

    /// A store with `cases` cases, each created and then set by alternating keys.
    fn a_busy_store(dir: &std::path::Path, cases: u8) -> Store {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let space = SpaceId([1; 16]);
        let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32])];
        for round in 0..3u8 {
            for n in 0..cases {
                let key = &keys[usize::from(n + round) % 2];
                let case = CaseId([n; 16]);
                let command = if round == 0 {
                    Command::CreateCase { id: case, fields: vec![] }
                } else {
                    Command::SetFields { case, fields: vec![("f".into(), FieldValue::Text(format!("{round}-{n}")))] }
                };
                store.execute(&space, key, u64::from(round) * 100 + u64::from(n), command).unwrap();
            }
        }
        store
    }

    /// A busy source store with `cases` cases and an empty store to catch up into (with their
    /// directories, which must outlive them).
    fn a_busy_store_and_an_empty_one(cases: u8) -> (tempfile::TempDir, Store, tempfile::TempDir, Store) {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = a_busy_store(a_dir.path(), cases);
        let b = Store::open(b_dir.path(), StoreOptions::default()).unwrap();
        (a_dir, a, b_dir, b)
    }

    fn catch_up(from: &Store, to: &Store, batch: usize) {
        let space = SpaceId([1; 16]);
        let events: Vec<_> = from.events_after(&space, &to.vector(&space)).map(|r| r.unwrap().2).collect();
        for chunk in events.chunks(batch) {
            to.ingest(&space, chunk.to_vec()).unwrap();
        }
    }

    #[test]
    fn a_bounded_fold_evicts_the_cases_touched_least_recently() {
        let space = SpaceId([1; 16]);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let key = DeviceKey::from_secret([1; 32]);
        for n in [1u8, 2, 1, 3] {
            let fields = vec![("f".into(), FieldValue::Text(n.to_string()))];
            let command = if store.case_view(&space, &CaseId([n; 16])).unwrap().is_none() {
                Command::CreateCase { id: CaseId([n; 16]), fields }
            } else {
                Command::SetFields { case: CaseId([n; 16]), fields }
            };
            store.execute(&space, &key, 1, command).unwrap();
        }
        let mut fold = super::Fold::deltas();
        for event in store.events_after(&space, &Default::default()) {
            let event = crate::event::SignedEvent::from_wire(event.unwrap().2).unwrap();
            fold.apply(&event, |_| Ok::<_, ()>(None)).unwrap();
        }
        let evicted: Vec<CaseId> = fold.evict_least_recent(1).into_iter().map(|c| c.state.id).collect();
        assert_eq!(evicted, vec![CaseId([2; 16])]);
        let rest: Vec<CaseId> = fold.take_all().into_iter().map(|c| c.state.id).collect();
        assert_eq!(rest, vec![CaseId([1; 16]), CaseId([3; 16])], "in case id order");
        assert!(fold.evict_least_recent(5).is_empty());
    }

    #[test]
    fn a_bulk_catch_up_folds_while_ingesting_and_spills_deltas_beside_the_events() {
        let space = SpaceId([1; 16]);
        let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(12);
        b.defer_projections();
        // Batches of 5 over 12 cases (4 held in memory in unit tests): deltas of the same case
        // are spilled several times and joined by RocksDB.
        catch_up(&a, &b, 5);
        assert_eq!(b.projections_behind(&space).unwrap(), 36);
        assert_eq!(b.resume_projections().unwrap(), 0, "no rebuild needed");
        assert_eq!(b.projections_behind(&space).unwrap(), 0);
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
        assert_eq!(
            b.list_cases(&space, &Default::default()).unwrap(),
            a.list_cases(&space, &Default::default()).unwrap()
        );
        assert_eq!(b.history(&space, &CaseId([3; 16])).unwrap(), a.history(&space, &CaseId([3; 16])).unwrap());
        assert_eq!(b.rebuild_projections(&space).unwrap(), a.state_hash(&space).unwrap());
    }

    #[test]
    fn a_bulk_load_without_syncs_folds_beside_its_writes_to_the_same_views() {
        let space = SpaceId([1; 16]);
        let (_a_dir, a, b_dir, b) = a_busy_store_and_an_empty_one(12);
        b.defer_projections();
        b.defer_syncs();
        catch_up(&a, &b, 7);
        assert_eq!(b.resume_projections().unwrap(), 0, "no rebuild needed");
        b.sync().unwrap();
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
        assert_eq!(b.history(&space, &CaseId([5; 16])).unwrap(), a.history(&space, &CaseId([5; 16])).unwrap());
        drop(b);
        let b = Store::open(b_dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap(), "after reopening");
    }

    #[test]
    fn a_bulk_catch_up_rebuilds_when_its_deltas_cannot_complete_the_views() {
        let space = SpaceId([1; 16]);
        let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(6);
        // A rebuild in the middle of the catch-up drops the deltas folded so far; the rest are
        // folded from the rebuilt views.
        b.defer_projections();
        let events: Vec<_> = a.events_after(&space, &b.vector(&space)).map(|r| r.unwrap().2).collect();
        b.ingest(&space, events[..7].to_vec()).unwrap();
        b.rebuild_projections(&space).unwrap();
        b.ingest(&space, events[7..].to_vec()).unwrap();
        assert_eq!(b.resume_projections().unwrap(), 0);
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
        // Deltas that cannot complete the views (views lagging when the catch-up began, or a
        // failed commit after folding): the end rebuilds.
        let c_dir = tempfile::tempdir().unwrap();
        let c = Store::open(c_dir.path(), StoreOptions::default()).unwrap();
        c.defer_projections();
        catch_up(&a, &c, 10);
        c.lock_writer().deferred.get_mut(&space).unwrap().usable = false;
        assert_eq!(c.resume_projections().unwrap(), 1, "rebuilt");
        assert_eq!(c.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    }

    #[test]
    fn merge_operands_joined_at_read_flush_and_compaction_give_the_same_views() {
        use crate::store::key_layout::CF_CASES;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let space = SpaceId([1; 16]);
        let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32])];
        let case = CaseId([7; 16]);
        store.execute(&space, &keys[0], 1, Command::CreateCase { id: case, fields: vec![] }).unwrap();
        let mut views = Vec::new();
        for round in 0..6u64 {
            // Each round: writes from both keys, then the operands land in a new place: the
            // memtable (read-time merge), an L0 file (flush) or one compacted file.
            for (n, key) in keys.iter().enumerate() {
                let fields = vec![(format!("f{}", round % 3), FieldValue::Text(format!("{round}-{n}")))];
                store.execute(&space, key, 10 + round, Command::SetFields { case, fields }).unwrap();
            }
            views.push(store.case_view(&space, &case).unwrap());
            match round % 3 {
                0 => {}
                1 => store.flush_families(&[CF_CASES]).unwrap(),
                _ => store.db().compact_range_cf(store.cf(CF_CASES), None::<&[u8]>, None::<&[u8]>),
            }
            assert_eq!(store.case_view(&space, &case).unwrap(), views[views.len() - 1], "round {round}");
        }
        let hash = store.state_hash(&space).unwrap();
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.case_view(&space, &case).unwrap(), views[views.len() - 1]);
        assert_eq!(store.rebuild_projections(&space).unwrap(), hash);
    }

    #[test]
    fn a_rebuild_of_one_space_keeps_the_other_spaces_views_whatever_files_they_share() {
        use crate::store::key_layout::{CF_CASES, CF_CASE_EVENTS};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let (one, two) = (SpaceId([1; 16]), SpaceId([2; 16]));
        let key = DeviceKey::from_secret([1; 32]);
        // Files of one space only, and files of both (the rebuild drops only the former).
        for (round, spaces) in [vec![one], vec![two], vec![one, two]].into_iter().enumerate() {
            for space in spaces {
                for n in 0..3u8 {
                    let case = CaseId([n; 16]);
                    let fields = vec![("f".into(), FieldValue::Text(format!("{round}-{n}")))];
                    let command = if round == 0 || (round == 1 && space == two) {
                        Command::CreateCase { id: case, fields }
                    } else {
                        Command::SetFields { case, fields }
                    };
                    store.execute(&space, &key, 10 + round as u64, command).unwrap();
                }
            }
            store.flush_families(&[CF_CASES, CF_CASE_EVENTS]).unwrap();
        }
        let hashes = (store.state_hash(&one).unwrap(), store.state_hash(&two).unwrap());
        let views = store.list_cases(&two, &Default::default()).unwrap();
        let history = store.history(&two, &CaseId([1; 16])).unwrap();
        assert_eq!(store.rebuild_projections(&one).unwrap(), hashes.0);
        assert_eq!(store.state_hash(&two).unwrap(), hashes.1);
        assert_eq!(store.list_cases(&two, &Default::default()).unwrap(), views);
        assert_eq!(store.history(&two, &CaseId([1; 16])).unwrap(), history);
        assert_eq!(store.history(&one, &CaseId([1; 16])).unwrap().len(), 2);
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!((store.state_hash(&one).unwrap(), store.state_hash(&two).unwrap()), hashes);
    }

    #[test]
    fn a_rebuild_that_spills_cases_equals_the_incremental_projections() {
        let dir = tempfile::tempdir().unwrap();
        // Two authors touch the same 12 cases, so the rebuild (4 cases in memory in unit tests)
        // writes deltas of a case out and starts new ones when the chains touch it again.
        let store = a_busy_store(dir.path(), 12);
        let space = SpaceId([1; 16]);
        let incremental = store.state_hash(&space).unwrap();
        let views = store.list_cases(&space, &Default::default()).unwrap();
        assert_eq!(store.rebuild_projections(&space).unwrap(), incremental);
        assert_eq!(store.list_cases(&space, &Default::default()).unwrap(), views);
    }

    #[test]
    fn written_digests_hash_the_cases_written_once_and_read_back_the_rest() {
        use super::WrittenDigests;
        let dir = tempfile::tempdir().unwrap();
        let store = a_busy_store(dir.path(), 40);
        let space = SpaceId([1; 16]);
        let scanned = store.scanned_state_hash(&space).unwrap();
        let states = store.fold_log(&space, |_| true).unwrap().into_sorted_cases();
        // Case 0's digest taken of another state: only a hash that uses the digests sees it.
        let mut wrong = states[1].clone();
        wrong.id = states[0].id;
        let noted = |rewritten: &[usize], first: &super::CaseState| {
            let mut digests = WrittenDigests::new();
            digests.note(first);
            states[1..].iter().for_each(|state| digests.note(state));
            rewritten.iter().for_each(|n| digests.note(&states[*n]));
            digests.state_hash(&store, &space).unwrap()
        };
        assert_eq!(noted(&[], &states[0]), scanned);
        assert_ne!(noted(&[], &wrong), scanned, "a case written once is hashed by its digest");
        assert_eq!(noted(&[0, 7], &wrong), scanned, "a case written again is read back");
        assert_ne!(noted(&[7], &wrong), scanned);
        assert_eq!(noted(&[1, 2, 3], &wrong), scanned, "more than a sixteenth written again: scanned");
        // Past the bound (64 cases in unit tests): scanned.
        let mut digests = WrittenDigests::new();
        digests.note(&wrong);
        (0..70).for_each(|n| digests.note(&states[1 + n % 39]));
        assert_eq!(digests.state_hash(&store, &space).unwrap(), scanned);
    }

    #[test]
    fn the_state_hash_a_rebuild_remembers_holds_until_the_projections_move() {
        let dir = tempfile::tempdir().unwrap();
        let store = a_busy_store(dir.path(), 3); // fits in the rebuild's memory: every case written once
        let space = SpaceId([1; 16]);
        let scanned = store.scanned_state_hash(&space).unwrap();
        assert_eq!(store.rebuild_projections(&space).unwrap(), scanned);
        assert_eq!(store.state_hash(&space).unwrap(), scanned);
        // The record holds the hash and the watermark it is for...
        use crate::store::key_layout::{meta_state_hash, CF_META};
        let record = store.db().get_cf(store.cf(CF_META), meta_state_hash(&space)).unwrap().unwrap();
        assert_eq!(hex::encode(&record[1..33]), scanned);
        // ...and once the projections move past its watermark it is not.
        let key = DeviceKey::from_secret([1; 32]);
        let fields = vec![("f".into(), FieldValue::Text("later".into()))];
        store.execute(&space, &key, 999, Command::SetFields { case: CaseId([1; 16]), fields }).unwrap();
        let moved = store.scanned_state_hash(&space).unwrap();
        assert_ne!(moved, scanned);
        assert_eq!(store.state_hash(&space).unwrap(), moved);
        // An unreadable record is ignored.
        store.db().put_cf(store.cf(CF_META), meta_state_hash(&space), b"\x09junk").unwrap();
        assert_eq!(store.state_hash(&space).unwrap(), moved);
        // So is one of an older definition (version 2: blake3 case digests), even at the current
        // watermark: its hash is not this build's.
        use super::STATE_HASH_RECORD_VERSION;
        use crate::store::encode_vector;
        let watermark = store.projection_watermark(&space).unwrap();
        let mut older = vec![STATE_HASH_RECORD_VERSION - 1];
        older.extend_from_slice(&[7; 32]);
        older.extend_from_slice(&encode_vector(&watermark));
        store.db().put_cf(store.cf(CF_META), meta_state_hash(&space), older).unwrap();
        assert_eq!(store.state_hash(&space).unwrap(), moved);
        // The same record in this build's version would be taken as it is.
        let mut current = vec![STATE_HASH_RECORD_VERSION];
        current.extend_from_slice(&[7; 32]);
        current.extend_from_slice(&encode_vector(&watermark));
        store.db().put_cf(store.cf(CF_META), meta_state_hash(&space), current).unwrap();
        assert_eq!(store.state_hash(&space).unwrap(), hex::encode([7; 32]));
    }

    #[test]
    fn a_bulk_catch_up_into_empty_projections_remembers_the_state_hash_it_wrote() {
        let space = SpaceId([1; 16]);
        for (cases, batch) in [(3u8, 100), (12, 5), (40, 7)] {
            let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(cases);
            b.defer_projections_holding(4, true);
            catch_up(&a, &b, batch);
            b.resume_projections().unwrap();
            use crate::store::key_layout::{meta_state_hash, CF_META};
            assert!(b.db().get_cf(b.cf(CF_META), meta_state_hash(&space)).unwrap().is_some());
            let expected = a.scanned_state_hash(&space).unwrap();
            assert_eq!(b.state_hash(&space).unwrap(), expected, "{cases} cases");
            assert_eq!(b.scanned_state_hash(&space).unwrap(), expected, "{cases} cases");
        }
        // Into projections that already hold something: no remembered hash (it would need them read).
        let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(12);
        let events: Vec<_> = a.events_after(&space, &Default::default()).map(|r| r.unwrap().2).collect();
        b.ingest(&space, events[..4].to_vec()).unwrap();
        b.defer_projections_holding(4, true);
        catch_up(&a, &b, 5);
        b.resume_projections().unwrap();
        use crate::store::key_layout::{meta_state_hash, CF_META};
        assert!(b.db().get_cf(b.cf(CF_META), meta_state_hash(&space)).unwrap().is_none());
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
        // A node's catch-up does not take the digests (nobody waits for the hash).
        let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(3);
        b.defer_projections();
        catch_up(&a, &b, 100);
        b.resume_projections().unwrap();
        assert!(b.db().get_cf(b.cf(CF_META), meta_state_hash(&space)).unwrap().is_none());
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    }

    #[test]
    fn a_case_with_many_events_keeps_its_whole_history_in_bounded_records() {
        use crate::store::key_layout::{CF_CASE_EVENTS, HISTORY_ENTRIES_PER_RECORD};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let (space, case, key) = (SpaceId([1; 16]), CaseId([1; 16]), DeviceKey::from_secret([1; 32]));
        store.execute(&space, &key, 1, Command::CreateCase { id: case, fields: vec![] }).unwrap();
        for n in 0..300u64 {
            let fields = vec![("f".into(), FieldValue::Integer(n as i64))];
            store.execute(&space, &key, 2 + n, Command::SetFields { case, fields }).unwrap();
        }
        let history = store.history(&space, &case).unwrap();
        assert_eq!(history.len(), 301);
        store.rebuild_projections(&space).unwrap();
        assert_eq!(store.history(&space, &case).unwrap(), history);
        let records = store.db().iterator_cf(store.cf(CF_CASE_EVENTS), rocksdb::IteratorMode::Start);
        let lengths: Vec<usize> = records.map(|r| r.unwrap().1.len()).collect();
        assert_eq!(
            lengths,
            vec![8 + 48 * (HISTORY_ENTRIES_PER_RECORD - 1), 8 + 48 * (301 - HISTORY_ENTRIES_PER_RECORD - 1)]
        );
        // A malformed record: a clear error, not a short history.
        let first = store.db().iterator_cf(store.cf(CF_CASE_EVENTS), rocksdb::IteratorMode::Start).next();
        let (first_key, _) = first.unwrap().unwrap();
        store.db().put_cf(store.cf(CF_CASE_EVENTS), first_key, b"short").unwrap();
        match store.history(&space, &case) {
            Err(crate::error::StoreError::Corrupt { reason, .. }) => assert!(reason.contains("history record")),
            other => panic!("expected a corrupt history record, got {other:?}"),
        }
    }

    #[test]
    fn a_bulk_catch_up_ingests_its_spill_files_only_at_its_end() {
        use crate::projection::spill_files::SPILL_DIR;
        let space = SpaceId([1; 16]);
        let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(12);
        let spill_files = |store: &Store| -> usize {
            let dirs = std::fs::read_dir(store.path().join(SPILL_DIR)).map(|d| d.flatten().collect::<Vec<_>>());
            let dirs = dirs.unwrap_or_default();
            dirs.iter().map(|dir| std::fs::read_dir(dir.path()).map(|f| f.count()).unwrap_or(0)).sum()
        };
        b.defer_projections();
        // A rebuild during the catch-up drops the deltas and spills folded so far.
        b.rebuild_projections(&space).unwrap();
        catch_up(&a, &b, 2);
        // 12 cases, 4 held in unit tests: spilled into files by the writer threads (polled with a
        // deadline: they write on their own), none of them in the store yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while spill_files(&b) < 2 {
            assert!(std::time::Instant::now() < deadline, "{} spill files", spill_files(&b));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!b.has_case_parts(&space).unwrap(), "nothing ingested before the end");
        b.resume_projections().unwrap();
        assert_eq!(spill_files(&b), 0, "every spill file moved into the store");
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
        assert_eq!(
            b.list_cases(&space, &Default::default()).unwrap(),
            a.list_cases(&space, &Default::default()).unwrap()
        );
        // Spill files a crash left behind are removed at the next open.
        let stale = b.path().join(SPILL_DIR).join("left-by-a-crash");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("parts-000000.sst"), b"half written").unwrap();
        let path = b.path().to_path_buf();
        drop(b);
        let b = Store::open(&path, StoreOptions::default()).unwrap();
        assert!(!path.join(SPILL_DIR).exists());
        assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    }

    #[test]
    fn a_spill_writer_that_fails_reports_its_own_error_and_leaves_no_files() {
        use super::spill_files::{SpillFiles, SpillWriters, SPILL_DIR};
        use super::{fold_events, Fold};
        use crate::error::StoreError;
        let dir = tempfile::tempdir().unwrap();
        let store = a_busy_store(dir.path(), 6);
        let space = SpaceId([1; 16]);
        let events: Vec<_> = store
            .events_after(&space, &Default::default())
            .map(|r| crate::event::SignedEvent::from_wire(r.unwrap().2).unwrap())
            .collect();
        let cases = || {
            let mut fold = Fold::store_deltas();
            fold_events(&mut fold, &events);
            fold.take_all()
        };
        // Written and finished: the files are there until they are ingested (or dropped).
        let writers = SpillWriters::start(SpillFiles::new(&store, &space).unwrap(), true).unwrap();
        writers.spill(cases()).unwrap();
        let (files, digests) = writers.finish(cases()).unwrap();
        assert_eq!(digests.map(|d| d.written.len()), Some(12), "each case noted once per spill");
        assert!(std::fs::read_dir(dir.path().join(SPILL_DIR)).unwrap().count() == 1);
        drop(files);
        assert_eq!(std::fs::read_dir(dir.path().join(SPILL_DIR)).unwrap().count(), 0, "dropped files are removed");
        // A writer that cannot create its file: its error, not the failed hand-over's.
        let writers = SpillWriters::start(SpillFiles::new(&store, &space).unwrap(), false).unwrap();
        std::fs::remove_dir_all(dir.path().join(SPILL_DIR)).unwrap();
        let _ = writers.spill(cases());
        match writers.finish(cases()) {
            Err(StoreError::Rocks(_)) => {}
            Err(other) => panic!("expected the writer's RocksDB error, got {other}"),
            Ok(_) => panic!("expected the writer's error"),
        }
    }
}
