//! The merge: multi-value registers folded order-free, and the case state built from them.
//!
//! A register keeps every version no known write supersedes ("current"), plus the dots named as
//! superseded by a known write but not seen yet ("pending"), so a version that arrives after the
//! write that superseded it does not come back. The current set is the same for every arrival
//! order; pending is bookkeeping only and is never part of the state hash.

use std::collections::BTreeMap;

use crate::model::ids::{CaseId, EntryId};
use crate::model::operation::{
    Dot, Dots, FieldName, FieldValue, FieldWrite, FieldWrites, Operation, Status, StatusWrite,
};
use crate::model::vector_clock::VersionVector;

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

/// A record's field registers by name, as one sorted vector: a case's fields (a handful) are one
/// allocation, searched in a cache line or two, and freed at once. A new name shifts the names
/// after it (a record with thousands of distinct field names would pay for that; entries, which
/// a case may hold by the thousand, stay in a B-tree).
pub type FieldMap = litemap::LiteMap<FieldName, Register<FieldValue>>;

/// A multi-value register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register<T> {
    /// Versions no known write supersedes, sorted by dot.
    pub current: CurrentVersions<T>,
    /// Superseded dots not seen yet, sorted.
    pub pending: Vec<Dot>,
}

impl<T> Default for Register<T> {
    fn default() -> Self {
        Register { current: CurrentVersions::new(), pending: Vec::new() }
    }
}

impl<T> Register<T> {
    /// Applies a write. `seen` says whether an event has already been folded in; it must be false
    /// for `version.dot` itself.
    pub fn apply(&mut self, version: Version<T>, supersedes: &[Dot], seen: &dyn Fn(&Dot) -> bool) {
        let own = version.dot;
        self.pending.retain(|dot| !seen(dot));
        // What the write supersedes goes first (it never names the write itself), so a write
        // replacing the one current version never holds two, which would spill the inline slot.
        for dot in supersedes {
            if *dot == own {
                continue;
            }
            if let Ok(index) = self.current.binary_search_by(|v| v.dot.cmp(dot)) {
                self.current.remove(index);
            } else if !seen(dot) {
                if let Err(index) = self.pending.binary_search(dot) {
                    self.pending.reserve_exact(1);
                    self.pending.insert(index, *dot);
                }
            }
        }
        match self.pending.binary_search(&own) {
            Ok(index) => {
                // A write we already know supersedes this version: it never becomes current.
                self.pending.remove(index);
            }
            Err(_) => match self.current.binary_search_by(|v| v.dot.cmp(&own)) {
                Ok(_) => {} // Already folded in (idempotent).
                // Superseded versions were removed above, so a replacing write reuses the inline
                // slot.
                Err(index) => self.current.insert(index, version),
            },
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
        let is_pending_mine = |dot: &Dot| pending_mine.binary_search(dot).is_ok();
        let is_pending_theirs = |dot: &Dot| other.pending.binary_search(dot).is_ok();
        let in_current_mine = |dot: &Dot| current_mine.binary_search_by(|v| v.dot.cmp(dot)).is_ok();
        let in_current_theirs = |dot: &Dot| other.current.binary_search_by(|v| v.dot.cmp(dot)).is_ok();
        let mut pending: Vec<Dot> = pending_mine.iter().filter(|d| !in_current_theirs(d)).copied().collect();
        pending.extend(other.pending.iter().filter(|d| !in_current_mine(d)));
        pending.sort_unstable();
        pending.dedup();
        let mut current = CurrentVersions::<T>::new();
        let theirs: CurrentVersions<T> =
            other.current.into_iter().filter(|v| !is_pending_mine(&v.dot) && !in_current_mine(&v.dot)).collect();
        current.extend(current_mine.into_iter().filter(|v| !is_pending_theirs(&v.dot)));
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
            let register = self.fields.entry(name).or_default();
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
            self.fields.entry(name).or_default().join(register);
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
                    self.record.fields.entry(name.clone()).or_default().join(register);
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
        assert_eq!(b.pending, vec![v1.dot]);
        b.apply(v1.clone(), &[], &|d| *d == v2.dot);
        assert_eq!(a.current, b.current);
        assert_eq!(b.current.as_slice(), [v2]);
        assert!(b.pending.is_empty());
    }
}
