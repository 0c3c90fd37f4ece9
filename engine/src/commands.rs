//! Case commands: what a user asks for, turned into operations against the current projection
//! (naming the versions each write supersedes) and appended under the writer lock, so no write
//! can slip in between reading the state and writing the event.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::error::{AppendError, CommandError, Error, StoreError};
use crate::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::ids::{CaseId, EntryId, EventId, SpaceId};
use crate::operation::{FieldValue, FieldWrite, FieldWrites, Operation, Status, StatusChange, StatusWrite};
use crate::projection::case_state::{CaseState, Record};
use crate::projection::views::CaseView;
use crate::projection::Fold;
use crate::signing::DeviceKey;
use crate::store::{next_hlc, CommitSummary, Store, WriterState};
use crate::vector_clock::VersionVector;
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

fn writes(record: Option<&Record>, fields: Vec<(String, FieldValue)>) -> FieldWrites {
    fields
        .into_iter()
        .map(|(name, value)| {
            let supersedes =
                record.and_then(|r| r.fields.get(name.as_str())).map(|r| r.current_dots()).unwrap_or_default();
            FieldWrite { name: name.into(), value, supersedes }
        })
        .collect()
}

fn existing<'a>(state: Option<&'a CaseState>, case: &CaseId) -> Result<&'a CaseState, CommandError> {
    state.ok_or_else(|| CommandError::UnknownCase(case.to_hex()))
}

impl Command {
    /// The case the command is about.
    pub fn case(&self) -> CaseId {
        match self {
            Command::CreateCase { id, .. } => *id,
            Command::SetFields { case, .. }
            | Command::ChangeStatus { case, .. }
            | Command::AddEntry { case, .. }
            | Command::UpdateEntry { case, .. }
            | Command::RemoveEntry { case, .. } => *case,
        }
    }
}

/// A command waiting for the writer: whichever caller gets the writer lock first commits every
/// waiting command in one durable write (group commit), and the others find their result ready.
pub(crate) struct QueuedCommand {
    space: SpaceId,
    key: DeviceKey,
    now_ms: u64,
    command: Mutex<Option<Command>>,
    result: Mutex<Option<Executed>>,
}

type Executed = Result<(SignedEvent, CaseView, CommitSummary), Error>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Turns a command into an operation against the current state: `current` is the command's case
/// as folded so far (including the commands planned before it in the same group), `seen` what is
/// folded in.
fn plan(command: Command, seen: &VersionVector, current: Option<&CaseState>) -> Result<Operation, Error> {
    let status_write = |record: &Record| StatusWrite { supersedes: record.status.current_dots(), seen: seen.clone() };
    let operation = match command {
        Command::CreateCase { id, fields } => {
            if current.is_some() {
                return Err(CommandError::Invalid("a case with this id exists").into());
            }
            Operation::CreateCase { case: id, fields: writes(None, fields) }
        }
        Command::SetFields { case, fields } => {
            if fields.is_empty() {
                return Err(CommandError::Invalid("no fields to set").into());
            }
            let current = existing(current, &case)?;
            Operation::SetFields { case, fields: writes(Some(&current.record), fields) }
        }
        Command::ChangeStatus { case, change } => {
            let current = existing(current, &case)?;
            let view = CaseView::of(current);
            let allowed = match change {
                StatusChange::Delete => view.status != Status::Deleted || view.deleted_with_concurrent_changes,
                StatusChange::Archive => view.status == Status::Active,
                StatusChange::Unarchive => view.status == Status::Archived,
                StatusChange::Restore => view.status == Status::Deleted,
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
            let current = existing(current, &case)?;
            if current.entries.contains_key(&entry) {
                return Err(CommandError::Invalid("an entry with this id exists").into());
            }
            Operation::AddEntry { case, entry, fields: writes(None, fields) }
        }
        Command::UpdateEntry { case, entry, fields } => {
            let current = existing(current, &case)?;
            let record = current.entries.get(&entry).ok_or_else(|| CommandError::UnknownEntry(entry.to_hex()))?;
            if fields.is_empty() {
                return Err(CommandError::Invalid("no fields to set").into());
            }
            Operation::UpdateEntry { case, entry, fields: writes(Some(record), fields) }
        }
        Command::RemoveEntry { case, entry } => {
            let current = existing(current, &case)?;
            let record = current.entries.get(&entry).ok_or_else(|| CommandError::UnknownEntry(entry.to_hex()))?;
            Operation::RemoveEntry { case, entry, write: status_write(record) }
        }
    };
    operation.validate().map_err(CommandError::from)?;
    Ok(operation)
}

impl Store {
    /// Carries out a command as this device: one signed event, durable before it returns.
    ///
    /// Commands issued concurrently (from several threads) are committed together: each waits
    /// for the writer, and the first to get it plans, signs and commits every waiting command in
    /// one synced write. Each command still sees the effect of the ones before it.
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
        let mine = Arc::new(QueuedCommand {
            space: *space,
            key: key.clone(),
            now_ms,
            command: Mutex::new(Some(command)),
            result: Mutex::new(None),
        });
        lock(&self.queued).push(mine.clone());
        let mut state = self.lock_writer();
        if let Some(done) = lock(&mine.result).take() {
            return done;
        }
        if state.deferrals > 0 {
            lock(&self.queued).retain(|queued| !Arc::ptr_eq(queued, &mine));
            let behind = self.projections_behind_locked(&state, space).unwrap_or(0);
            return Err(CommandError::CatchingUp(behind).into());
        }
        let group = std::mem::take(&mut *lock(&self.queued));
        // Runs of the same space and author share one commit (in practice: all of them).
        let mut start = 0;
        while start < group.len() {
            let (run_space, run_author) = (group[start].space, group[start].key.author());
            let end = group[start..]
                .iter()
                .position(|q| q.space != run_space || q.key.author() != run_author)
                .map_or(group.len(), |n| start + n);
            self.execute_run(&mut state, &group[start..end]);
            start = end;
        }
        drop(state);
        let done = lock(&mine.result).take();
        done.unwrap_or_else(|| Err(StoreError::Poisoned.into()))
    }

    /// Plans, signs and commits one run of queued commands of one space and author.
    fn execute_run(&self, state: &mut WriterState, run: &[Arc<QueuedCommand>]) {
        let Some(first) = run.first() else { return };
        let (space, key) = (&first.space, &first.key);
        let author = key.author();
        let head = state.head(space, &author);
        let local = head.map_or(0, |h| h.seq);
        let fence = state.fences.get(&(*space, author)).copied().unwrap_or(0);
        if fence > local {
            for queued in run {
                *lock(&queued.result) = Some(Err(AppendError::Fenced { local, remote: fence }.into()));
            }
            return;
        }
        let mut overlay = Fold::new(state.vector(space));
        let mut seq = local;
        let mut prev = head.map_or(EventId::ZERO, |h| h.link);
        let mut hlc = state.max_hlc;
        let mut events = Vec::with_capacity(run.len());
        let mut planned: Vec<(usize, CaseView)> = Vec::with_capacity(run.len());
        for (index, queued) in run.iter().enumerate() {
            let Some(command) = lock(&queued.command).take() else { continue };
            let outcome = (|| -> Result<(SignedEvent, CaseView), Error> {
                // Read the case once: into the overlay, where planning and folding find it.
                let case = command.case();
                overlay.hold(case, |case| self.case_state(space, case))?;
                let operation = plan(command, &overlay.seen, overlay.case(&case))?;
                let body = Bytes::from(wire::encode_operation(&operation));
                let header = EventHeader {
                    space: *space,
                    author,
                    seq: seq + 1,
                    prev,
                    hlc: next_hlc(queued.now_ms, hlc),
                    encoding: BodyEncoding::Plain,
                };
                let event = SignedEvent::build(key, &header, body).map_err(AppendError::from)?;
                overlay.apply(&event, |_| Ok::<_, Error>(None))?;
                let view = overlay.case(&case).map(CaseView::of);
                let view = view.ok_or_else(|| CommandError::UnknownCase(case.to_hex()))?;
                Ok((event, view))
            })();
            match outcome {
                Ok((event, view)) => {
                    seq = event.header.seq;
                    prev = event.link;
                    hlc = event.header.hlc;
                    events.push(event);
                    planned.push((index, view));
                }
                Err(error) => *lock(&queued.result) = Some(Err(error)),
            }
        }
        match self.stage_and_commit(state, space, &events, None) {
            Ok(summary) => {
                for (event, (index, view)) in events.into_iter().zip(planned) {
                    *lock(&run[index].result) = Some(Ok((event, view, summary.clone())));
                }
            }
            Err(error) => {
                let mut error = Some(error);
                for (_, (index, _)) in events.into_iter().zip(planned) {
                    let this = error.take().unwrap_or(StoreError::Poisoned);
                    *lock(&run[index].result) = Some(Err(AppendError::from(this).into()));
                }
            }
        }
    }
}
