//! The merge: multi-value registers folded order-free, and the case state built from them.
//!
//! A register keeps every version no known write supersedes ("current"), plus the dots named as
//! superseded by a known write but not seen yet ("pending"), so a version that arrives after the
//! write that superseded it does not come back. The current set is the same for every arrival
//! order; pending is bookkeeping only and is never part of the state hash.
//!
//! A write supersedes only what its writer could have seen: a version whose clock is below the
//! write's. A device's clock passes every event it holds (`hlc::next_plausible`), so an honest
//! write always orders after what it names; a write naming a version it could not have seen (a
//! future seq of another device, forged by a hostile member) leaves that version current beside
//! it, a conflict shown to users rather than a write silently hidden.

use std::collections::BTreeMap;

use crate::model::ids::{CaseId, EntryId};
use crate::model::operation::{
    Dot, Dots, FieldName, FieldValue, FieldWrite, FieldWrites, Operation, Status, StatusWrite,
};
use crate::model::vector_clock::VersionVector;
use smallvec::SmallVec;

/// One version of a register: who wrote it, when, and the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version<T> {
    /// The writing event.
    pub dot: Dot,
    /// The writing event's hybrid logical clock.
    pub hlc: u64,
    /// The value written.
    pub value: T,
}

/// A register's current versions (one, unless in conflict), the first inline: a case held by a
/// fold has no allocation per register, and nothing per register to free when written out.
pub type CurrentVersions<T> = smallvec::SmallVec<[Version<T>; 1]>;

/// One stored part of a case projection: parts are written only when an event touches them, so
/// an event rewrites one register rather than the whole case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CasePart {
    /// The case's status register.
    Status,
    /// One field register of the case.
    Field(FieldName),
    /// One entry (its status and fields).
    Entry(EntryId),
}

/// A record's field registers by name (a sorted vector while they are few, a B-tree beyond).
pub type FieldMap = crate::model::field_map::FieldMap<Register<FieldValue>>;

/// The most pending dots a register sweeps of seen ones at each write ([`Register::apply`]).
const PENDING_SWEPT_MAX: usize = 64;

/// A dot named as superseded by a known write whose version is not seen yet, with the highest
/// clock of the writes naming it: the version, when it arrives, is superseded only if its own
/// clock is below that (its writers could have seen it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PendingDot {
    /// The superseded version's dot.
    pub dot: Dot,
    /// The highest clock of the writes that name it.
    pub hlc: u64,
}

/// A multi-value register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register<T> {
    /// Versions no known write supersedes, sorted by dot.
    pub current: CurrentVersions<T>,
    /// Superseded dots not seen yet, sorted by dot, each once.
    pub pending: Vec<PendingDot>,
}

impl<T> Default for Register<T> {
    fn default() -> Self {
        Register { current: CurrentVersions::new(), pending: Vec::new() }
    }
}

impl<T> Register<T> {
    /// Applies a write. `seen` says whether an event has already been folded in; it must be false
    /// for `version.dot` itself. A named version is superseded only if its clock is below the
    /// write's (see the module's documentation).
    pub fn apply(&mut self, version: Version<T>, supersedes: &[Dot], seen: &dyn Fn(&Dot) -> bool) {
        let (own, hlc) = (version.dot, version.hlc);
        // Pending dots of events folded since (into other registers: a write that named a dot of
        // another field) are dropped while they are few; a register a hostile member filled
        // with thousands keeps them rather than sweep them all at every write.
        if !self.pending.is_empty() && self.pending.len() <= PENDING_SWEPT_MAX {
            self.pending.retain(|pending| !seen(&pending.dot));
        }
        // What the write supersedes goes first (it never names the write itself), so a write
        // replacing the one current version never holds two, which would spill the inline slot.
        let mut unseen: SmallVec<[PendingDot; 1]> = SmallVec::new();
        for dot in supersedes {
            if *dot == own {
                continue;
            }
            if let Ok(index) = self.current.binary_search_by(|v| v.dot.cmp(dot)) {
                if self.current[index].hlc < hlc {
                    self.current.remove(index);
                }
            } else if !seen(dot) {
                unseen.push(PendingDot { dot: *dot, hlc });
            }
        }
        if !unseen.is_empty() {
            merge_pending(&mut self.pending, unseen);
        }
        let superseded = match self.pending.binary_search_by(|p| p.dot.cmp(&own)) {
            // A write we already know names this version: it never becomes current if that
            // write could have seen it. Either way the dot is seen now.
            Ok(index) => self.pending.remove(index).hlc > hlc,
            Err(_) => false,
        };
        if !superseded {
            match self.current.binary_search_by(|v| v.dot.cmp(&own)) {
                Ok(_) => {} // Already folded in (idempotent).
                // Superseded versions were removed above, so a replacing write reuses the inline
                // slot.
                Err(index) => self.current.insert(index, version),
            }
        }
    }

    /// Joins another register folded from a disjoint set of writes (a merge operand): the result
    /// has the current versions of folding both sets together, whichever was folded first.
    /// Current = (mine not superseded by theirs) + (theirs not superseded by mine); a pending dot
    /// is dropped once its version is seen on the other side. A pending dot whose version was
    /// seen and superseded within one side stays pending (bookkeeping only, never shown or
    /// hashed; each event is folded once, so it can never come back).
    pub fn join(&mut self, other: Register<T>) {
        let pending_mine = std::mem::take(&mut self.pending);
        let current_mine = std::mem::take(&mut self.current);
        let superseded_by = |pending: &[PendingDot], version: &Version<T>| {
            pending.binary_search_by(|p| p.dot.cmp(&version.dot)).is_ok_and(|i| version.hlc < pending[i].hlc)
        };
        let in_current_mine = |dot: &Dot| current_mine.binary_search_by(|v| v.dot.cmp(dot)).is_ok();
        let in_current_theirs = |dot: &Dot| other.current.binary_search_by(|v| v.dot.cmp(dot)).is_ok();
        let mut pending: Vec<PendingDot> =
            pending_mine.iter().filter(|p| !in_current_theirs(&p.dot)).copied().collect();
        merge_pending(&mut pending, other.pending.iter().filter(|p| !in_current_mine(&p.dot)).copied());
        let mut current = CurrentVersions::<T>::new();
        let theirs: CurrentVersions<T> = other
            .current
            .into_iter()
            .filter(|v| !superseded_by(&pending_mine, v) && !in_current_mine(&v.dot))
            .collect();
        current.extend(current_mine.into_iter().filter(|v| !superseded_by(&other.pending, v)));
        current.extend(theirs);
        current.sort_by_key(|v| v.dot);
        self.current = current;
        self.pending = pending;
    }

    /// No version and no pending dot: the identity of [`Register::join`].
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.pending.is_empty()
    }

    /// The dots of the current versions (what a new write supersedes).
    pub fn current_dots(&self) -> Dots {
        self.current.iter().map(|v| v.dot).collect()
    }

    /// The version shown by default: the highest (hlc, author, seq).
    pub fn shown(&self) -> Option<&Version<T>> {
        self.current.iter().max_by_key(|v| (v.hlc, v.dot.author, v.dot.seq))
    }

    /// Two or more current versions: a conflict.
    pub fn in_conflict(&self) -> bool {
        self.current.len() > 1
    }
}

/// Merges dots into a sorted pending list in one linear pass (a write naming thousands of unseen
/// dots costs one merge, not a shift per dot); a dot named twice keeps the higher clock.
fn merge_pending(pending: &mut Vec<PendingDot>, more: impl IntoIterator<Item = PendingDot>) {
    let mut more: SmallVec<[PendingDot; 1]> = more.into_iter().collect();
    if let [one] = more.as_slice() {
        match pending.binary_search_by(|p| p.dot.cmp(&one.dot)) {
            Ok(at) => pending[at].hlc = pending[at].hlc.max(one.hlc),
            Err(at) => pending.insert(at, *one),
        }
        return;
    }
    if more.is_empty() {
        return;
    }
    more.sort_unstable();
    let old = std::mem::take(pending);
    let mut merged: Vec<PendingDot> = Vec::with_capacity(old.len() + more.len());
    let (mut old, mut more) = (old.into_iter().peekable(), more.into_iter().peekable());
    loop {
        let next = match (old.peek(), more.peek()) {
            (Some(a), Some(b)) if a <= b => old.next(),
            (Some(_), Some(_)) | (None, Some(_)) => more.next(),
            (Some(_), None) => old.next(),
            (None, None) => break,
        };
        let Some(next) = next else { break };
        match merged.last_mut() {
            Some(last) if last.dot == next.dot => last.hlc = last.hlc.max(next.hlc),
            _ => merged.push(next),
        }
    }
    *pending = merged;
}

/// A status version's value: the status and what its writer had seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusValue {
    /// The status written.
    pub status: Status,
    /// The writer's version vector (empty for create and add).
    pub seen: VersionVector,
}

/// A case or an entry: a status register and named field registers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    /// Status versions.
    pub status: Register<StatusValue>,
    /// Field registers by name.
    pub fields: FieldMap,
}

impl Record {
    fn apply_fields(&mut self, writes: FieldWrites, dot: Dot, hlc: u64, seen: &dyn Fn(&Dot) -> bool) {
        for FieldWrite { name, value, supersedes } in writes {
            // One search, whether the field is new or not.
            let register = self.fields.entry_or_default(name);
            register.apply(Version { dot, hlc, value }, &supersedes, seen);
        }
    }

    fn apply_status(&mut self, status: Status, write: StatusWrite, dot: Dot, hlc: u64, seen: &dyn Fn(&Dot) -> bool) {
        let value = StatusValue { status, seen: write.seen };
        self.status.apply(Version { dot, hlc, value }, &write.supersedes, seen);
    }

    /// Joins another record folded from a disjoint set of writes (see [`Register::join`]).
    pub fn join(&mut self, other: Record) {
        self.status.join(other.status);
        for (name, register) in other.fields {
            self.fields.entry_or_default(name).join(register);
        }
    }

    /// Every current version's dot, over the status and the fields.
    pub fn current_dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.status
            .current
            .iter()
            .map(|v| v.dot)
            .chain(self.fields.values().flat_map(|r| r.current.iter().map(|v| v.dot)))
    }

    /// Every current version's dot and clock, over the status and the fields.
    pub fn current_clocks(&self) -> impl Iterator<Item = (Dot, u64)> + '_ {
        self.status
            .current
            .iter()
            .map(|v| (v.dot, v.hlc))
            .chain(self.fields.values().flat_map(|r| r.current.iter().map(|v| (v.dot, v.hlc))))
    }

    /// Highest hlc of any current version.
    pub fn updated_hlc(&self) -> u64 {
        let status = self.status.current.iter().map(|v| v.hlc);
        let fields = self.fields.values().flat_map(|r| r.current.iter().map(|v| v.hlc));
        status.chain(fields).max().unwrap_or(0)
    }
}

/// The folded state of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseState {
    /// The case.
    pub id: CaseId,
    /// Its status and fields.
    pub record: Record,
    /// Its entries by id.
    pub entries: BTreeMap<EntryId, Record>,
}

impl CaseState {
    /// An empty state (no event folded in yet).
    pub fn new(id: CaseId) -> CaseState {
        CaseState { id, record: Record::default(), entries: BTreeMap::new() }
    }

    /// Whether the state holds any part a store would write (a status, a field register or an
    /// entry): a state without one is not in the stored projections, so no fold shows it.
    pub fn holds_anything(&self) -> bool {
        !self.record.status.is_empty()
            || self.record.fields.iter().any(|(_, register)| !register.is_empty())
            || !self.entries.is_empty()
    }

    /// Joins another state of the same case, folded from a disjoint set of events.
    pub fn join(&mut self, other: CaseState) {
        self.record.join(other.record);
        for (id, record) in other.entries {
            self.entries.entry(id).or_default().join(record);
        }
    }

    /// Joins one stored part of another state of the same case, folded from a disjoint set of
    /// events (see [`Register::join`]).
    pub fn join_part(&mut self, mut other: CaseState, part: &CasePart) {
        match part {
            CasePart::Status => self.record.status.join(other.record.status),
            CasePart::Field(name) => {
                if let Some(register) = other.record.fields.remove(name) {
                    self.record.fields.entry_or_default(name.clone()).join(register);
                }
            }
            CasePart::Entry(id) => {
                if let Some(record) = other.entries.remove(id) {
                    self.entries.entry(*id).or_default().join(record);
                }
            }
        }
    }

    /// Folds one operation written by `dot` at `hlc`. Order-free: any order of the same set of
    /// operations gives the same current versions. The operation's values move into the state.
    pub fn apply(&mut self, operation: Operation, dot: Dot, hlc: u64, seen: &dyn Fn(&Dot) -> bool) {
        match operation {
            Operation::CreateCase { fields, .. } => {
                self.record.apply_status(Status::Active, StatusWrite::default(), dot, hlc, seen);
                self.record.apply_fields(fields, dot, hlc, seen);
            }
            Operation::SetFields { fields, .. } => self.record.apply_fields(fields, dot, hlc, seen),
            Operation::ChangeStatus { change, write, .. } => {
                self.record.apply_status(change.status(), write, dot, hlc, seen)
            }
            Operation::AddEntry { entry, fields, .. } => {
                let record = self.entries.entry(entry).or_default();
                record.apply_status(Status::Present, StatusWrite::default(), dot, hlc, seen);
                record.apply_fields(fields, dot, hlc, seen);
            }
            Operation::UpdateEntry { entry, fields, .. } => {
                self.entries.entry(entry).or_default().apply_fields(fields, dot, hlc, seen)
            }
            Operation::RemoveEntry { entry, write, .. } => {
                self.entries.entry(entry).or_default().apply_status(Status::Removed, write, dot, hlc, seen)
            }
            Operation::RestoreEntry { entry, write, .. } => {
                self.entries.entry(entry).or_default().apply_status(Status::Present, write, dot, hlc, seen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::AuthorId;

    fn dot(a: u8, seq: u64) -> Dot {
        Dot { author: AuthorId([a; 32]), seq }
    }

    #[test]
    fn late_superseded_version_does_not_come_back() {
        let v1 = Version { dot: dot(1, 1), hlc: 1, value: "old" };
        let v2 = Version { dot: dot(2, 1), hlc: 2, value: "new" };
        // In order.
        let mut a: Register<&str> = Register::default();
        a.apply(v1.clone(), &[], &|_| false);
        a.apply(v2.clone(), &[v1.dot], &|d| *d == v1.dot);
        // The superseding write first.
        let mut b: Register<&str> = Register::default();
        b.apply(v2.clone(), &[v1.dot], &|_| false);
        assert_eq!(b.pending, vec![PendingDot { dot: v1.dot, hlc: 2 }]);
        b.apply(v1.clone(), &[], &|d| *d == v2.dot);
        assert_eq!(a.current, b.current);
        assert_eq!(b.current.as_slice(), [v2]);
        assert!(b.pending.is_empty());
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use crate::model::ids::AuthorId;

    fn version(author: u8, seq: u64, hlc: u64) -> Version<u64> {
        Version { dot: Dot { author: AuthorId([author; 32]), seq }, hlc, value: hlc }
    }

    /// Folds `writes` (a version and what it names) in the given order into one register.
    fn fold(writes: &[(Version<u64>, Vec<Dot>)], order: &[usize]) -> Register<u64> {
        let mut register = Register::default();
        let mut folded: Vec<Dot> = Vec::new();
        for &i in order {
            let (version, supersedes) = &writes[i];
            register.apply(version.clone(), supersedes, &|d| folded.contains(d));
            folded.push(version.dot);
        }
        register
    }

    #[test]
    fn a_write_cannot_supersede_a_version_its_writer_could_not_have_seen() {
        // Device 2 writes seq 1 at clock 50. A hostile member names it at clock 10 (before it
        // existed): the version stays current beside the hostile one, in every order. An honest
        // write at clock 90 that saw it supersedes it, in every order too.
        let honest = version(2, 1, 50);
        let forged = (version(9, 1, 10), vec![honest.dot]);
        let writes = [(honest.clone(), vec![]), forged.clone()];
        for order in [[0, 1], [1, 0]] {
            let register = fold(&writes, &order);
            assert_eq!(register.current.len(), 2, "{order:?}: {register:?}");
            assert!(register.pending.is_empty());
        }
        let later = (version(3, 1, 90), vec![honest.dot]);
        let writes = [(honest, vec![]), forged, later];
        let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let results: Vec<Register<u64>> = orders.iter().map(|order| fold(&writes, order)).collect();
        let mut expected = vec![writes[1].0.dot, writes[2].0.dot];
        expected.sort();
        for register in &results {
            let dots: Vec<Dot> = register.current.iter().map(|v| v.dot).collect();
            assert_eq!(dots, expected);
        }
    }

    #[test]
    fn joins_agree_with_folds_under_forged_supersedes() {
        let honest = version(2, 1, 50);
        let writes =
            [(honest.clone(), vec![]), (version(9, 1, 10), vec![honest.dot]), (version(3, 1, 90), vec![honest.dot])];
        let whole = fold(&writes, &[0, 1, 2]);
        // Every split of the writes into two registers, joined either way round.
        for mask in 0u8..8 {
            let (mine, theirs): (Vec<usize>, Vec<usize>) = (0..3).partition(|i| mask & (1 << i) != 0);
            for (a, b) in [(&mine, &theirs), (&theirs, &mine)] {
                let mut left = Register::default();
                for &i in a {
                    left.apply(writes[i].0.clone(), &writes[i].1, &|_| false);
                }
                let mut right = Register::default();
                for &i in b {
                    right.apply(writes[i].0.clone(), &writes[i].1, &|_| false);
                }
                left.join(right);
                assert_eq!(left.current, whole.current, "{a:?} joined with {b:?}");
            }
        }
    }

    #[test]
    fn pending_dots_named_by_several_writes_keep_the_highest_clock() {
        let mut pending = vec![PendingDot { dot: version(1, 5, 0).dot, hlc: 7 }];
        merge_pending(
            &mut pending,
            [PendingDot { dot: version(1, 5, 0).dot, hlc: 3 }, PendingDot { dot: version(1, 2, 0).dot, hlc: 9 }],
        );
        assert_eq!(
            pending,
            [PendingDot { dot: version(1, 2, 0).dot, hlc: 9 }, PendingDot { dot: version(1, 5, 0).dot, hlc: 7 }]
        );
    }

    /// Folds `names` distinct field names into one case, 256 per operation (the most one event
    /// may write), and returns the time per name.
    fn fold_distinct_names(names: u64) -> std::time::Duration {
        use crate::model::ids::CaseId;
        use crate::model::operation::{FieldName, FieldValue, FieldWrite, Operation};
        let case = CaseId([1; 16]);
        let mut state = CaseState::new(case);
        let started = std::time::Instant::now();
        for (seq, first) in (0..names).step_by(256).enumerate() {
            let fields = (first..(first + 256).min(names))
                .map(|n| {
                    // Names in a scattered order, as a hostile push would send them.
                    let name: FieldName = format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into();
                    FieldWrite { name, value: FieldValue::Bool(true), supersedes: Default::default() }
                })
                .collect();
            let dot = Dot { author: AuthorId([2; 32]), seq: seq as u64 + 1 };
            state.apply(Operation::SetFields { case, fields }, dot, seq as u64 + 1, &|_| false);
        }
        assert_eq!(state.record.fields.len() as u64, names);
        started.elapsed() / names as u32
    }

    /// A case pushed full of distinct field names costs about the same per name at 10k and 160k
    /// names (a sorted vector made it cost in proportion to the names already there). Prints the
    /// figures; run with `cargo test -p casesync-engine --release --lib many_field_names_cost --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn many_field_names_cost() {
        for names in [10_000, 40_000, 160_000] {
            println!("{names} distinct names in one case: {:?} per name", fold_distinct_names(names));
        }
    }
}
