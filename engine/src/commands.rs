//! Case commands: what a user asks for, turned into operations against the current projection
//! (naming the versions each write supersedes) and appended under the writer lock, so no write
//! can slip in between reading the state and writing the event.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::codec::wire;
use crate::error::{AppendError, CommandError, Error, StoreError};
use crate::log::CommitSummary;
use crate::model::event::{BodyEncoding, SignedEvent};
use crate::model::ids::{CaseId, EntryId, SpaceId};
use crate::model::merge::{CaseState, Record};
use crate::model::operation::{FieldValue, FieldWrite, FieldWrites, Operation, Status, StatusChange, StatusWrite};
use crate::model::signing::DeviceKey;
use crate::model::vector_clock::VersionVector;
use crate::model::views::CaseView;
use crate::projection::fold::Fold;
use crate::projection::queries;
use crate::storage::Db;
use crate::writer::Writer;

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
    /// Bring a removed entry back.
    RestoreEntry {
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
            | Command::RemoveEntry { case, .. }
            | Command::RestoreEntry { case, .. } => *case,
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
            Operation::ChangeStatus {
                case,
                change,
                write: status_write(seen, &current.record, current.entries.values()),
            }
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
            Operation::RemoveEntry { case, entry, write: status_write(seen, record, std::iter::empty()) }
        }
        Command::RestoreEntry { case, entry } => {
            let current = existing(current, &case)?;
            let record = current.entries.get(&entry).ok_or_else(|| CommandError::UnknownEntry(entry.to_hex()))?;
            if !record.status.current.iter().any(|v| v.value.status == Status::Removed) {
                return Err(CommandError::Invalid("the entry is not removed").into());
            }
            Operation::RestoreEntry { case, entry, write: status_write(seen, record, std::iter::empty()) }
        }
    };
    operation.validate().map_err(CommandError::from)?;
    Ok(operation)
}

/// A status write on `record` (a case, with its `entries`, or one entry): the status versions it
/// supersedes, and what its writer had seen: the writer's version vector `seen`, restricted to
/// the authors of the current versions of the record and its entries. That is
/// all a tombstone is asked about (`views::unseen_by`): every other version the writer had seen
/// is superseded everywhere. So a delete names a few devices, not every device the space ever
/// had (all of them would outgrow the limit on dots in one write).
fn status_write<'a>(
    seen: &VersionVector,
    record: &'a Record,
    entries: impl Iterator<Item = &'a Record>,
) -> StatusWrite {
    let mut named = VersionVector::new();
    for dot in std::iter::once(record).chain(entries).flat_map(Record::current_dots) {
        named.raise(dot.author, seen.get(&dot.author));
    }
    StatusWrite { supersedes: record.status.current_dots(), seen: named }
}

/// Commands waiting for the writer (see [`CommandQueue::execute`]).
#[derive(Default)]
pub(crate) struct CommandQueue {
    waiting: Mutex<Vec<Arc<QueuedCommand>>>,
}

impl CommandQueue {
    /// Carries out a command as this device: one signed event, durable before it returns.
    ///
    /// Commands issued concurrently (from several threads) are committed together: each waits
    /// for the writer, and the first to get it plans, signs and commits every waiting command in
    /// one synced write. Each command still sees the effect of the ones before it.
    pub(crate) fn execute(
        &self,
        db: &Db,
        writer: &Mutex<Writer>,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        command: Command,
    ) -> Result<(SignedEvent, CaseView, CommitSummary), Error> {
        let mine = Arc::new(QueuedCommand {
            space: *space,
            key: key.clone(),
            now_ms,
            command: Mutex::new(Some(command)),
            result: Mutex::new(None),
        });
        lock(&self.waiting).push(mine.clone());
        let mut writer = lock(writer);
        if let Some(done) = lock(&mine.result).take() {
            return done;
        }
        if writer.bulk.is_active() {
            lock(&self.waiting).retain(|queued| !Arc::ptr_eq(queued, &mine));
            let behind = writer.projections_behind(db, space).unwrap_or(0);
            return Err(CommandError::CatchingUp(behind).into());
        }
        let group = std::mem::take(&mut *lock(&self.waiting));
        // Runs of the same space and author share one commit (in practice: all of them).
        let mut start = 0;
        while start < group.len() {
            let (run_space, run_author) = (group[start].space, group[start].key.author());
            let end = group[start..]
                .iter()
                .position(|q| q.space != run_space || q.key.author() != run_author)
                .map_or(group.len(), |n| start + n);
            execute_run(db, &mut writer, &group[start..end]);
            start = end;
        }
        drop(writer);
        let done = lock(&mine.result).take();
        done.unwrap_or_else(|| Err(StoreError::Poisoned.into()))
    }
}

/// Plans, signs and commits one run of queued commands of one space and author.
fn execute_run(db: &Db, writer: &mut Writer, run: &[Arc<QueuedCommand>]) {
    let Some(first) = run.first() else { return };
    let (space, key) = (&first.space, &first.key);
    let mut tail = match writer.log.tail(db, space, &key.author()) {
        Ok(tail) => tail,
        Err(_) => {
            for queued in run {
                if let Err(error) = writer.log.tail(db, space, &key.author()) {
                    *lock(&queued.result) = Some(Err(error.into()));
                }
            }
            return;
        }
    };
    let judge = writer.log.judging_now(space).map(std::borrow::Cow::into_owned);
    let keys = db.keys();
    let mut overlay = Fold::new(writer.log.vector(space)).with_keys(keys.clone());
    // The newest data key this device holds seals the bodies; a space with no key yet (written
    // before sealing, and no admin's node has introduced one) is written plain.
    let sealing = judge.as_ref().and_then(|m| m.sealing_key(|k| keys.holds(k))).and_then(|id| keys.get(&id));
    let space_has_keys = judge.as_ref().is_some_and(|m| !m.keys().is_empty());
    let mut events = Vec::with_capacity(run.len());
    let mut planned: Vec<(usize, CaseView)> = Vec::with_capacity(run.len());
    for (index, queued) in run.iter().enumerate() {
        let Some(command) = lock(&queued.command).take() else { continue };
        let outcome = (|| -> Result<(SignedEvent, CaseView), Error> {
            // Read the case once: into the overlay, where planning and folding find it.
            let case = command.case();
            overlay.hold(case, |case| queries::load_case(db, space, case))?;
            let operation = plan(command, &overlay.seen, overlay.case(&case))?;
            let plain = wire::encode_operation(&operation);
            if sealing.is_none() && space_has_keys {
                return Err(CommandError::NoDataKey.into());
            }
            let encoding = if sealing.is_some() { BodyEncoding::Sealed } else { BodyEncoding::Plain };
            let header = tail.next_header(queued.now_ms, encoding);
            if let Some(membership) = &judge {
                membership.judge(&header.author, header.seq, header.hlc, None).map_err(AppendError::from)?;
            }
            let body = match sealing {
                Some(data_key) => Bytes::from(data_key.seal(&header, &plain).map_err(CommandError::from)?),
                None => Bytes::from(plain),
            };
            let event = SignedEvent::build(key, &header, body).map_err(AppendError::from)?;
            overlay.apply_operation(&event.header, Some(operation), |_| Ok::<_, Error>(None))?;
            let view = overlay.case(&case).map(CaseView::of);
            let view = view.ok_or_else(|| CommandError::UnknownCase(case.to_hex()))?;
            Ok((event, view))
        })();
        match outcome {
            Ok((event, view)) => {
                tail.advance(&event);
                events.push(event);
                planned.push((index, view));
            }
            Err(error) => *lock(&queued.result) = Some(Err(error)),
        }
    }
    match writer.commit_events(db, true, space, &events, None) {
        Ok(summary) => {
            if let Some(last) = events.last() {
                writer.log.note_own_write(last);
            }
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
