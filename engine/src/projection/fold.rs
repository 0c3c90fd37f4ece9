//! The in-memory fold of events into case states that every projection path shares.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::keys::{case_event_key, history_record_value, HISTORY_ENTRIES_PER_RECORD};
use crate::model::event::{EventHeader, SignedEvent};
use crate::model::ids::{AuthorId, CaseId, SpaceId};
use crate::model::merge::{CaseState, PendingDot};
use crate::model::operation::{Dot, FieldValue, Operation};
use crate::model::sealing::KeySet;
use crate::model::vector_clock::VersionVector;

use super::operation_in;

/// Events a fold is handed at a time, to warm their cases' states before folding them
/// ([`Fold::warm`]): few enough that those states stay in the core's cache until folded.
pub(crate) const FOLD_RUN_EVENTS: usize = 32;

/// An in-memory fold of events into case states: the core of both incremental updates and
/// rebuilds.
///
/// A full fold starts from the stored states (`load`) and `seen`, the version vector of what is
/// already folded in. A delta fold ([`Fold::deltas`]) starts from nothing and keeps every
/// superseded dot it has not seen itself: its states are merge operands that RocksDB joins with
/// the stored ones (see `codec::merge_operator`), so folding needs no read.
pub struct Fold {
    /// What has been folded in (kept by a full fold only: a delta fold never reads it).
    pub seen: VersionVector,
    /// The case states touched, each with its bookkeeping, in the order they were first touched
    /// (which is about the order their memory was allocated in: dropping them in this order is
    /// twice as fast as in hash order, measured on 100k cases).
    cases: Vec<Held>,
    /// Where each case is in `cases`.
    index: HashMap<CaseId, usize, foldhash::fast::RandomState>,
    /// The estimated memory of the held cases ([`held_bytes_of`]), summed.
    held_bytes: usize,
    /// Whether `seen` may drop pending dots (false for a delta fold, whose states are partial).
    full: bool,
    clock: u64,
    /// Whether to hold each case's history records ([`Fold::store_deltas`]).
    keeps_history: bool,
    /// The data keys sealed bodies are opened with.
    keys: Arc<KeySet>,
}

/// One case state held by a [`Fold`], with its bookkeeping.
struct Held {
    state: CaseState,
    /// A count of applied events when the case was last touched, for eviction.
    tick: u64,
    /// The estimated memory folding into it added ([`held_bytes_of`]).
    bytes: usize,
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
        Fold {
            seen,
            cases: Vec::new(),
            index: HashMap::default(),
            held_bytes: 0,
            full: true,
            clock: 0,
            keeps_history: false,
            keys: Arc::default(),
        }
    }

    /// The fold, opening sealed bodies with `keys`.
    pub fn with_keys(self, keys: Arc<KeySet>) -> Fold {
        Fold { keys, ..self }
    }

    /// Opens later sealed bodies with `keys` (a key arrived while folding); the misses noted so
    /// far must already be in `keys` (`KeySet::extended` takes them over).
    pub(crate) fn use_keys(&mut self, keys: Arc<KeySet>) {
        self.keys = keys;
    }

    /// The keys sealed bodies are opened with.
    pub(crate) fn keys(&self) -> &KeySet {
        &self.keys
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
        let operation = operation_in(h, body, &self.keys);
        self.apply_operation(h, operation, load)
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
            let mut bytes = held_bytes_of(&op);
            if self.keeps_history {
                held.history.push((h.author, h.seq, h.hlc));
                bytes += HISTORY_ENTRY_BYTES;
            }
            held.bytes += bytes;
            self.held_bytes += bytes;
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

    /// The estimated memory of the cases the fold holds: what every event folded added to its
    /// case ([`held_bytes_of`]), never less than what the cases hold, as a replaced value counts
    /// until its case is taken out.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Every case state held, in no particular order.
    pub fn into_cases(self) -> impl Iterator<Item = (CaseId, CaseState)> {
        self.cases.into_iter().map(|held| held.state).filter(CaseState::holds_anything).map(|state| (state.id, state))
    }

    /// Every case state held that holds anything (as the stored projections would: see
    /// [`CaseState::holds_anything`]), in case id order (the order of views and of the state
    /// hash).
    pub fn into_sorted_cases(self) -> Vec<CaseState> {
        let mut cases: Vec<CaseState> =
            self.cases.into_iter().map(|held| held.state).filter(CaseState::holds_anything).collect();
        cases.sort_unstable_by_key(|state| state.id);
        cases
    }
}

/// Appends a held case; returns where it is.
fn push_held(cases: &mut Vec<Held>, state: CaseState, tick: u64) -> usize {
    cases.push(Held { state, tick, bytes: 0, history: Vec::new() });
    cases.len() - 1
}

/// The estimated memory of one history record a fold holds (author, seq, clock).
const HISTORY_ENTRY_BYTES: usize = std::mem::size_of::<(AuthorId, u64, u64)>();

/// The estimated memory of one register or record slot a fold holds: the map's slot, the name
/// inline, one version inline, a share of the map's nodes.
const PART_BYTES: usize = 192;

/// What folding `operation` adds, at most, to its case's memory: a slot per part it writes, the
/// heap bytes of the names, values and dots it carries. Counted whether or not the write replaces
/// a version (the estimate only grows while the case is held), so it bounds what the case holds,
/// and it costs no look into the state.
fn held_bytes_of(operation: &Operation) -> usize {
    fn writes(fields: &[crate::model::operation::FieldWrite]) -> usize {
        fields
            .iter()
            .map(|write| {
                let value = match &write.value {
                    FieldValue::Text(text) | FieldValue::Decimal(text) | FieldValue::Date(text) => text.len(),
                    FieldValue::Bytes(bytes) => bytes.len(),
                    FieldValue::Integer(_) | FieldValue::Bool(_) => 0,
                };
                let name = if write.name.is_heap_allocated() { write.name.len() } else { 0 };
                PART_BYTES + name + value + write.supersedes.len() * std::mem::size_of::<PendingDot>()
            })
            .sum()
    }
    match operation {
        Operation::CreateCase { fields, .. } | Operation::SetFields { fields, .. } => writes(fields),
        Operation::AddEntry { fields, .. } | Operation::UpdateEntry { fields, .. } => PART_BYTES + writes(fields),
        Operation::ChangeStatus { write, .. }
        | Operation::RemoveEntry { write, .. }
        | Operation::RestoreEntry { write, .. } => {
            PART_BYTES + (write.supersedes.len() + write.seen.len()) * std::mem::size_of::<PendingDot>()
        }
    }
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
    pub(crate) fn history_records<'a>(&'a self, space: &'a SpaceId) -> impl Iterator<Item = ([u8; 72], Vec<u8>)> + 'a {
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
        self.evict_least_recent_within(count, usize::MAX)
    }

    /// Removes and returns the case states touched least recently: `count` of them, and more
    /// until the rest hold no more than `bytes` (estimated: [`Fold::held_bytes`]), in case id
    /// order. Past `bytes`, a case holding more than a quarter of it goes first whatever its
    /// recency: a case a hostile member fills with fields is written out in deltas rather than
    /// held whole, and the small cases touched lately stay.
    pub fn evict_least_recent_within(&mut self, count: usize, bytes: usize) -> Vec<HeldCase> {
        let large = bytes / 4;
        let mut order: Vec<(bool, u64, CaseId, usize)> =
            self.cases.iter().map(|held| (false, held.tick, held.state.id, held.bytes)).collect();
        let count = count.min(order.len());
        let mut taken = count;
        if self.held_bytes > bytes {
            // Rare (cases far larger than usual): a full sort, then as many as it takes.
            for entry in &mut order {
                entry.0 = entry.3 <= large;
            }
            order.sort_unstable();
            let mut rest = self.held_bytes - order[..count].iter().map(|entry| entry.3).sum::<usize>();
            while rest > bytes && taken < order.len() {
                rest -= order[taken].3;
                taken += 1;
            }
        } else if count == 0 {
            return Vec::new();
        } else if count < order.len() {
            order.select_nth_unstable(count - 1);
        }
        let mut cases: Vec<CaseId> = order[..taken].iter().map(|entry| entry.2).collect();
        cases.sort_unstable();
        cases.into_iter().filter_map(|case| self.take(&case)).collect()
    }

    /// Removes and returns every case state, in case id order.
    pub fn take_all(&mut self) -> Vec<HeldCase> {
        self.held_bytes = 0;
        self.index.clear();
        let mut cases: Vec<HeldCase> = self.cases.drain(..).map(Held::taken).collect();
        cases.sort_unstable_by_key(|held| held.state.id);
        cases
    }

    fn take(&mut self, case: &CaseId) -> Option<HeldCase> {
        let at = self.index.remove(case)?;
        let held = self.cases.swap_remove(at);
        self.held_bytes -= held.bytes;
        if let Some(moved) = self.cases.get(at) {
            self.index.insert(moved.state.id, at);
        }
        Some(held.taken())
    }
}
