//! Read models derived from a case state: what a user sees, with conflicts spelled out.

use serde::Serialize;

use crate::model::ids::{AuthorId, CaseId, EntryId};
use crate::model::merge::{CaseState, Record, Register, StatusValue, Version};
use crate::model::operation::{Dot, FieldValue, Status};

/// One current version of a field or status, with who wrote it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionView<T> {
    /// The value.
    pub value: T,
    /// The author's key (hex).
    pub author: String,
    /// The author's short device id.
    pub device: String,
    /// The writing event's seq.
    pub seq: u64,
    /// The writing event's hybrid logical clock.
    pub hlc: u64,
}

impl<T: Clone> VersionView<T> {
    fn of(version: &Version<T>) -> Self {
        VersionView {
            value: version.value.clone(),
            author: version.dot.author.to_hex(),
            device: version.dot.author.device_id(),
            seq: version.dot.seq,
            hlc: version.hlc,
        }
    }
}

/// A field as shown: the chosen value, and every current version when they conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldView {
    /// Field name.
    pub name: String,
    /// The value shown: the current version with the highest (hlc, author, seq).
    pub value: FieldValue,
    /// All current versions when there are two or more; empty otherwise.
    pub conflict: Vec<VersionView<FieldValue>>,
}

/// An entry as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryView {
    /// Entry id (hex).
    pub entry_id: String,
    /// present or removed.
    pub status: Status,
    /// Removed, but changed concurrently with the removal: kept visible until someone decides.
    pub removed_with_concurrent_changes: bool,
    /// Its fields.
    pub fields: Vec<FieldView>,
}

/// A case as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseView {
    /// Case id (hex).
    pub case_id: String,
    /// active, archived or deleted.
    pub status: Status,
    /// Concurrent status writes with different statuses; empty otherwise.
    pub status_conflict: Vec<VersionView<Status>>,
    /// Deleted, but changed concurrently with the delete: kept until someone restores or deletes
    /// again.
    pub deleted_with_concurrent_changes: bool,
    /// Its fields, by name.
    pub fields: Vec<FieldView>,
    /// Its entries (present ones, and removed ones with concurrent changes).
    pub entries: Vec<EntryView>,
    /// Highest hlc of any current version.
    pub updated_hlc: u64,
}

impl CaseView {
    /// The shown value of a field.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// Whether any field, entry field or the status is in conflict.
    pub fn has_conflicts(&self) -> bool {
        !self.status_conflict.is_empty()
            || self.fields.iter().any(|f| !f.conflict.is_empty())
            || self.entries.iter().any(|e| e.fields.iter().any(|f| !f.conflict.is_empty()))
    }
}

/// One conflicting field, for conflict lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictView {
    /// Case id (hex).
    pub case_id: String,
    /// Entry id (hex) when the field belongs to an entry.
    pub entry_id: Option<String>,
    /// Field name (`status` for a status conflict).
    pub field: String,
    /// Every current version, as display text.
    pub versions: Vec<VersionView<String>>,
}

fn fields_view(record: &Record) -> Vec<FieldView> {
    record
        .fields
        .iter()
        .filter_map(|(name, register)| {
            let shown = register.shown()?;
            Some(FieldView {
                name: name.to_string(),
                value: shown.value.clone(),
                conflict: if register.in_conflict() {
                    register.current.iter().map(VersionView::of).collect()
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// The status of a record: empty means the default; a delete or remove among the current
/// versions wins (a delete on one device is a delete everywhere); else the shown version.
fn effective_status(register: &Register<crate::model::merge::StatusValue>, default: Status) -> Status {
    let current = &register.current;
    if let Some(tomb) = current.iter().find(|v| matches!(v.value.status, Status::Deleted | Status::Removed)) {
        return tomb.value.status;
    }
    register.shown().map(|v| v.value.status).unwrap_or(default)
}

/// The current tombstones (deletes or removals) of a record: each covers what its writer had
/// seen, `None` when there is none.
fn tombstones(record: &Record) -> Option<Vec<&Version<StatusValue>>> {
    let tombs: Vec<_> =
        record.status.current.iter().filter(|v| matches!(v.value.status, Status::Deleted | Status::Removed)).collect();
    (!tombs.is_empty()).then_some(tombs)
}

/// Whether no tombstone covers a version: none had seen it. A tombstone covers its own device's
/// earlier versions, and another device's version its `seen` names only if that version's clock
/// is below its own (a writer cannot have seen what came after it: a delete claiming to have seen
/// everything does not bury the edits made after it).
fn unseen_by(tombs: &[&Version<StatusValue>], dot: &Dot, hlc: u64) -> bool {
    !tombs.iter().any(|tomb| {
        if dot.author == tomb.dot.author {
            dot.seq <= tomb.dot.seq
        } else {
            hlc < tomb.hlc && tomb.value.seen.contains(&dot.author, dot.seq)
        }
    })
}

fn status_conflict(record: &Record) -> Vec<VersionView<Status>> {
    let current = &record.status.current;
    let first = current.first().map(|v| v.value.status);
    if current.iter().any(|v| Some(v.value.status) != first) {
        current
            .iter()
            .map(|v| VersionView {
                value: v.value.status,
                author: v.dot.author.to_hex(),
                device: v.dot.author.device_id(),
                seq: v.dot.seq,
                hlc: v.hlc,
            })
            .collect()
    } else {
        Vec::new()
    }
}

impl CaseView {
    /// Derives the view of a case state.
    pub fn of(state: &CaseState) -> CaseView {
        let status = effective_status(&state.record.status, Status::Active);
        let case_horizon = if status == Status::Deleted { tombstones(&state.record) } else { None };
        let mut concurrent_with_delete = false;
        let mut entries = Vec::new();
        for (id, record) in &state.entries {
            if let Some(h) = &case_horizon {
                concurrent_with_delete |= record.current_clocks().any(|(d, hlc)| unseen_by(h, &d, hlc));
            }
            if let Some((entry_status, removed_concurrent)) = entry_shown(record) {
                entries.push(EntryView {
                    entry_id: id.to_hex(),
                    status: entry_status,
                    removed_with_concurrent_changes: removed_concurrent,
                    fields: fields_view(record),
                });
            }
        }
        if let Some(h) = &case_horizon {
            concurrent_with_delete |= state.record.current_clocks().any(|(d, hlc)| unseen_by(h, &d, hlc));
        }
        CaseView {
            case_id: state.id.to_hex(),
            status,
            status_conflict: status_conflict(&state.record),
            deleted_with_concurrent_changes: concurrent_with_delete,
            fields: fields_view(&state.record),
            entries,
            updated_hlc: state
                .record
                .updated_hlc()
                .max(state.entries.values().map(Record::updated_hlc).max().unwrap_or(0)),
        }
    }
}

/// Every conflict of a case: fields, entry fields and status.
pub fn conflicts_of(state: &CaseState) -> Vec<ConflictView> {
    let mut out = Vec::new();
    let text_versions = |register: &Register<FieldValue>| -> Vec<VersionView<String>> {
        register
            .current
            .iter()
            .map(|v| VersionView {
                value: v.value.display(),
                author: v.dot.author.to_hex(),
                device: v.dot.author.device_id(),
                seq: v.dot.seq,
                hlc: v.hlc,
            })
            .collect()
    };
    let case_id = state.id.to_hex();
    let status = status_conflict(&state.record);
    if !status.is_empty() {
        out.push(ConflictView {
            case_id: case_id.clone(),
            entry_id: None,
            field: "status".into(),
            versions: status
                .into_iter()
                .map(|v| VersionView {
                    value: v.value.as_str().to_string(),
                    author: v.author,
                    device: v.device,
                    seq: v.seq,
                    hlc: v.hlc,
                })
                .collect(),
        });
    }
    let mut push_record = |entry: Option<&EntryId>, record: &Record| {
        for (name, register) in &record.fields {
            if register.in_conflict() {
                out.push(ConflictView {
                    case_id: case_id.clone(),
                    entry_id: entry.map(EntryId::to_hex),
                    field: name.to_string(),
                    versions: text_versions(register),
                });
            }
        }
    };
    push_record(None, &state.record);
    // Only the entries a case view shows: a conflict inside a removed entry that nobody changed
    // concurrently with its removal is as hidden as the entry.
    for (id, record) in state.entries.iter().filter(|(_, record)| entry_shown(record).is_some()) {
        push_record(Some(id), record);
    }
    out
}

/// Whether a case view shows an entry, and how: its status, and whether it was removed while
/// someone changed it concurrently (then it stays visible, like a case deleted with concurrent
/// changes). `None` for a removed entry nobody changed concurrently.
fn entry_shown(record: &Record) -> Option<(Status, bool)> {
    let status = effective_status(&record.status, Status::Present);
    let removed_concurrent = status == Status::Removed
        && tombstones(record).is_some_and(|h| {
            record.fields.values().flat_map(|r| r.current.iter()).any(|v| unseen_by(&h, &v.dot, v.hlc))
        });
    (status == Status::Present || removed_concurrent).then_some((status, removed_concurrent))
}

/// Short device id of an author, for tables.
pub fn device_label(author: &AuthorId) -> String {
    author.device_id()
}

/// Case id from a view (hex), for callers that hold views.
pub fn case_id_of(view: &CaseView) -> Option<CaseId> {
    CaseId::from_hex(&view.case_id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::merge::CaseState;
    use crate::model::operation::{FieldWrite, Operation, StatusChange, StatusWrite};
    use crate::model::vector_clock::VersionVector;

    fn dot(author: u8, seq: u64) -> Dot {
        Dot { author: AuthorId([author; 32]), seq }
    }

    fn write(name: &str, value: &str, supersedes: &[Dot]) -> FieldWrite {
        FieldWrite {
            name: name.into(),
            value: FieldValue::Text(value.into()),
            supersedes: supersedes.iter().copied().collect(),
        }
    }

    #[test]
    fn conflicts_listed_are_the_conflicts_shown_and_a_removed_entry_comes_back_with_its_own() {
        let (case, entry) = (CaseId([1; 16]), EntryId([2; 16]));
        let mut state = CaseState::new(case);
        let never = |_: &Dot| false;
        // Clocks in the order the writes are made here, as a device's clock passes what it saw.
        let clock = std::cell::Cell::new(0);
        let apply = |state: &mut CaseState, op: Operation, dot: Dot| {
            clock.set(clock.get() + 10);
            state.apply(op, dot, clock.get(), &never)
        };
        apply(&mut state, Operation::CreateCase { case, fields: Default::default() }, dot(1, 1));
        let fields = [write("note", "first", &[])].into_iter().collect();
        apply(&mut state, Operation::AddEntry { case, entry, fields }, dot(1, 2));
        // Two devices change the note concurrently: a conflict inside the entry.
        for author in [2, 3] {
            let fields = [write("note", &format!("by {author}"), &[dot(1, 2)])].into_iter().collect();
            apply(&mut state, Operation::UpdateEntry { case, entry, fields }, dot(author, 1));
        }
        assert_eq!(conflicts_of(&state).len(), 1);
        assert_eq!(CaseView::of(&state).entries.len(), 1);
        // Removed by a device that had seen both: hidden, and so is its conflict.
        let seen: VersionVector =
            [(AuthorId([1; 32]), 2), (AuthorId([2; 32]), 1), (AuthorId([3; 32]), 1)].into_iter().collect();
        let write_removed = StatusWrite { supersedes: [dot(1, 2)].into_iter().collect(), seen: seen.clone() };
        apply(&mut state, Operation::RemoveEntry { case, entry, write: write_removed }, dot(1, 3));
        let view = CaseView::of(&state);
        assert!(view.entries.is_empty(), "{view:?}");
        assert!(!view.has_conflicts());
        assert!(conflicts_of(&state).is_empty(), "a hidden entry's conflict is not listed");
        // Restored: the entry is back, with its conflict, shown and listed alike.
        let write_restored = StatusWrite { supersedes: [dot(1, 3)].into_iter().collect(), seen };
        apply(&mut state, Operation::RestoreEntry { case, entry, write: write_restored }, dot(1, 4));
        let view = CaseView::of(&state);
        assert_eq!(view.entries.len(), 1);
        assert_eq!(view.entries[0].status, Status::Present);
        assert!(view.has_conflicts());
        assert_eq!(conflicts_of(&state).len(), 1);
    }

    #[test]
    fn a_delete_claiming_to_have_seen_everything_does_not_bury_later_edits() {
        let case = CaseId([1; 16]);
        let mut state = CaseState::new(case);
        let never = |_: &Dot| false;
        state.apply(Operation::CreateCase { case, fields: Default::default() }, dot(1, 1), 10, &never);
        // A hostile member deletes at clock 20, claiming to have seen every seq of device 2.
        let seen: VersionVector = [(AuthorId([2; 32]), u64::MAX)].into_iter().collect();
        let status = StatusWrite { supersedes: [dot(1, 1)].into_iter().collect(), seen };
        let delete = Operation::ChangeStatus { case, change: StatusChange::Delete, write: status };
        state.apply(delete, dot(9, 1), 20, &never);
        assert!(!CaseView::of(&state).deleted_with_concurrent_changes);
        // Device 2 edits later (clock 30): the delete cannot have seen that.
        let fields = [write("phone", "0176", &[])].into_iter().collect();
        state.apply(Operation::SetFields { case, fields }, dot(2, 1), 30, &never);
        let view = CaseView::of(&state);
        assert_eq!(view.status, Status::Deleted);
        assert!(view.deleted_with_concurrent_changes, "{view:?}");
        // An edit the delete could have seen (clock 15, named in its `seen`) is covered.
        let mut earlier = CaseState::new(case);
        earlier.apply(Operation::CreateCase { case, fields: Default::default() }, dot(1, 1), 10, &never);
        let fields = [write("phone", "0176", &[])].into_iter().collect();
        earlier.apply(Operation::SetFields { case, fields }, dot(2, 1), 15, &never);
        let seen: VersionVector = [(AuthorId([2; 32]), 1)].into_iter().collect();
        let status = StatusWrite { supersedes: [dot(1, 1)].into_iter().collect(), seen };
        earlier.apply(
            Operation::ChangeStatus { case, change: StatusChange::Delete, write: status },
            dot(9, 1),
            20,
            &never,
        );
        assert!(!CaseView::of(&earlier).deleted_with_concurrent_changes);
    }
}
