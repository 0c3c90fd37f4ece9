//! Case commands: what a user asks for, turned into operations against the current projection
//! (naming the versions each write supersedes) and appended under the writer lock, so no write
//! can slip in between reading the state and writing the event.

use bytes::Bytes;

use crate::error::{AppendError, CommandError, Error};
use crate::event::{BodyEncoding, SignedEvent};
use crate::ids::{CaseId, EntryId, SpaceId};
use crate::operation::{FieldValue, FieldWrite, Operation, Status, StatusChange, StatusWrite};
use crate::projection::case_state::{CaseState, Record};
use crate::projection::views::CaseView;
use crate::signing::DeviceKey;
use crate::store::{CommitSummary, Store};
use crate::wire;

/// A user's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create a case with `id` (the caller brings the randomness).
    CreateCase {
        /// New case id.
        id: CaseId,
        /// Initial fields.
        fields: Vec<(String, FieldValue)>,
    },
    /// Set fields.
    SetFields {
        /// The case.
        case: CaseId,
        /// The values.
        fields: Vec<(String, FieldValue)>,
    },
    /// Delete, archive, unarchive or restore.
    ChangeStatus {
        /// The case.
        case: CaseId,
        /// Which change.
        change: StatusChange,
    },
    /// Add an entry with `entry` as its id.
    AddEntry {
        /// The case.
        case: CaseId,
        /// New entry id.
        entry: EntryId,
        /// Its fields.
        fields: Vec<(String, FieldValue)>,
    },
    /// Update an entry's fields.
    UpdateEntry {
        /// The case.
        case: CaseId,
        /// The entry.
        entry: EntryId,
        /// The values.
        fields: Vec<(String, FieldValue)>,
    },
    /// Remove an entry.
    RemoveEntry {
        /// The case.
        case: CaseId,
        /// The entry.
        entry: EntryId,
    },
}

fn writes(record: Option<&Record>, fields: Vec<(String, FieldValue)>) -> Vec<FieldWrite> {
    fields
        .into_iter()
        .map(|(name, value)| {
            let supersedes = record.and_then(|r| r.fields.get(&name)).map(|r| r.current_dots()).unwrap_or_default();
            FieldWrite { name, value, supersedes }
        })
        .collect()
}

fn existing(state: Option<&CaseState>, case: &CaseId) -> Result<CaseState, CommandError> {
    state.cloned().ok_or_else(|| CommandError::UnknownCase(case.to_hex()))
}

impl Store {
    /// Carries out a command as this device: one signed event, durable before it returns.
    pub fn execute(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        command: Command,
    ) -> Result<(SignedEvent, CaseView, CommitSummary), Error> {
        if !self.has_projections() {
            return Err(CommandError::Invalid("a relay holds no cases").into());
        }
        let mut state = self.lock_writer();
        let seen = state.vector(space);
        let status_write =
            |record: &Record| StatusWrite { supersedes: record.status.current_dots(), seen: seen.clone() };
        let operation = match command {
            Command::CreateCase { id, fields } => {
                if self.case_state(space, &id)?.is_some() {
                    return Err(CommandError::Invalid("a case with this id exists").into());
                }
                Operation::CreateCase { case: id, fields: writes(None, fields) }
            }
            Command::SetFields { case, fields } => {
                if fields.is_empty() {
                    return Err(CommandError::Invalid("no fields to set").into());
                }
                let current = existing(self.case_state(space, &case)?.as_ref(), &case)?;
                Operation::SetFields { case, fields: writes(Some(&current.record), fields) }
            }
            Command::ChangeStatus { case, change } => {
                let current = existing(self.case_state(space, &case)?.as_ref(), &case)?;
                let status = CaseView::of(&current).status;
                let allowed = match change {
                    StatusChange::Delete => {
                        status != Status::Deleted || CaseView::of(&current).deleted_with_concurrent_changes
                    }
                    StatusChange::Archive => status == Status::Active,
                    StatusChange::Unarchive => status == Status::Archived,
                    StatusChange::Restore => status == Status::Deleted,
                };
                if !allowed {
                    return Err(CommandError::Invalid(match change {
                        StatusChange::Delete => "the case is already deleted",
                        StatusChange::Archive => "only an active case can be archived",
                        StatusChange::Unarchive => "the case is not archived",
                        StatusChange::Restore => "the case is not deleted",
                    })
                    .into());
                }
                Operation::ChangeStatus { case, change, write: status_write(&current.record) }
            }
            Command::AddEntry { case, entry, fields } => {
                let current = existing(self.case_state(space, &case)?.as_ref(), &case)?;
                if current.entries.contains_key(&entry) {
                    return Err(CommandError::Invalid("an entry with this id exists").into());
                }
                Operation::AddEntry { case, entry, fields: writes(None, fields) }
            }
            Command::UpdateEntry { case, entry, fields } => {
                let current = existing(self.case_state(space, &case)?.as_ref(), &case)?;
                let record = current.entries.get(&entry).ok_or_else(|| CommandError::UnknownEntry(entry.to_hex()))?;
                if fields.is_empty() {
                    return Err(CommandError::Invalid("no fields to set").into());
                }
                Operation::UpdateEntry { case, entry, fields: writes(Some(record), fields) }
            }
            Command::RemoveEntry { case, entry } => {
                let current = existing(self.case_state(space, &case)?.as_ref(), &case)?;
                let record = current.entries.get(&entry).ok_or_else(|| CommandError::UnknownEntry(entry.to_hex()))?;
                Operation::RemoveEntry { case, entry, write: status_write(record) }
            }
        };
        operation.validate().map_err(CommandError::from)?;
        let case = operation.case();
        let body = Bytes::from(wire::encode_operation(&operation));
        let (mut events, summary) =
            self.append_locked(&mut state, space, key, now_ms, vec![(BodyEncoding::Plain, body)])?;
        drop(state);
        let event = events.pop().ok_or(AppendError::Empty)?;
        let view = self.case_view(space, &case)?.ok_or_else(|| CommandError::UnknownCase(case.to_hex()))?;
        Ok((event, view, summary))
    }
}
