//! The store: the one public face of a data dir's log and views. It opens the database, holds
//! the single writer (log state and bulk catch-ups behind one mutex) and the command queue, and
//! delegates every call to the layer that does the work. Reads go straight to RocksDB.
//!
//! After a failed write the store is poisoned and refuses further writes until it is reopened.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::codec::membership::encode_membership;
use crate::commands::{Command, CommandQueue};
use crate::error::{CommandError, OpenError, StoreError};
pub use crate::log::membership::Access;
use crate::log::reader::{self, Arrival, EventsAfter};
use crate::log::{self, CommitSummary, LogState};
use crate::model::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::model::ids::{AuthorId, CaseId, SpaceId};
use crate::model::membership::{founded_space, Membership, MembershipOp, NewGrant};
use crate::model::merge::CaseState;
use crate::model::signing::DeviceKey;
use crate::model::vector_clock::{Head, VersionVector};
use crate::model::views::{CaseView, ConflictView};
use crate::projection::bulk_catch_up::BULK_CASES_IN_MEMORY;
use crate::projection::fold::Fold;
use crate::projection::history::{self, HistoryItem};
use crate::projection::operation_of;
use crate::projection::queries::{self, CaseFilter};
use crate::projection::spill_files;
use crate::storage::memory::MemoryBudget;
use crate::storage::{Db, Durability};
use crate::writer::Writer;

mod ingesting;
mod keys;

#[cfg(test)]
mod case_range_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod fold_agreement_tests;
#[cfg(test)]
mod merge_operator_tests;
#[cfg(test)]
mod nth_fault_tests;
#[cfg(test)]
mod projection_tests;

/// Events above a revocation's cut that a case's history looks through, per author.
const UNCOUNTED_SHOWN_MAX: u64 = 10_000;

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Maintain case projections (false for a relay, which only stores and forwards).
    pub projections: bool,
    /// Whose events are stored and counted (see [`Access`]).
    pub access: Access,
    /// The bounds of its caches and buffers.
    pub memory: MemoryBudget,
}

impl Default for StoreOptions {
    /// Projections, and every event judged by its space's membership.
    fn default() -> Self {
        StoreOptions { projections: true, access: Access::Members, memory: MemoryBudget::default() }
    }
}

impl StoreOptions {
    /// Projections, and membership judged only in spaces whose founding event is held
    /// ([`Access::Compatible`]): for operators' tools on existing logs, and tests of the log's
    /// mechanics under throwaway keys. Within [`MemoryBudget::offline`]: such a store receives
    /// nothing from peers.
    pub fn compatible() -> StoreOptions {
        StoreOptions { projections: true, access: Access::Compatible, memory: MemoryBudget::offline() }
    }
}

/// The log store.
pub struct Store {
    db: Db,
    options: StoreOptions,
    writer: Mutex<Writer>,
    commands: CommandQueue,
    /// The secret keys data keys are wrapped to for this node: its device key, and the key of
    /// the invitation it joined with (see `store/keys.rs`).
    recipients: Mutex<Vec<DeviceKey>>,
    /// Held while key shares are planned and written, so two callers do not rotate twice.
    key_upkeep: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `path`, checks its format version and that heads
    /// match the stored events, and brings projections up to date if they lag (never on a clean
    /// open).
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, OpenError> {
        Store::open_unlocked(path, options, Vec::new())
    }

    /// [`Store::open`] holding the data keys wrapped in the log to `recipients` (this device's
    /// key, and the invitation key it joined with), so that folds open sealed bodies.
    pub fn open_unlocked(path: &Path, options: StoreOptions, recipients: Vec<DeviceKey>) -> Result<Store, OpenError> {
        let db = Db::open(path, options.memory)?;
        // Only once the store is ours (RocksDB's lock): spill files a crash left are not wanted.
        spill_files::remove_stale(path)?;
        let log = LogState::load(&db, options.access)?;
        log.check_heads(&db)?;
        let store = Store {
            db,
            options,
            writer: Mutex::new(Writer { log, ..Writer::default() }),
            commands: CommandQueue::default(),
            recipients: Mutex::new(recipients),
            key_upkeep: Mutex::new(()),
        };
        store.refresh_keys_locked(&mut store.lock_writer()).map_err(OpenError::CatchUp)?;
        if options.projections {
            store.lock_writer().catch_up_projections(&store.db).map_err(OpenError::CatchUp)?;
        }
        Ok(store)
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The bounds of its caches and buffers.
    pub fn memory(&self) -> MemoryBudget {
        self.db.memory()
    }

    /// Whether a failed write (a full disk, a failing device) poisoned the store: it refuses
    /// every write until it is opened again, which finds what was committed and nothing else.
    pub fn is_poisoned(&self) -> bool {
        self.db.is_poisoned()
    }

    /// Writes one record durably, to learn whether the disk takes writes now (after a failed
    /// write, before saying the store works again). A failure poisons the store.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.db.check_writable()
    }

    /// Whether this store maintains case projections.
    pub fn has_projections(&self) -> bool {
        self.options.projections
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave RocksDB half-written (writes are one
        // batch), so a poisoned mutex's state is still the last committed one.
        self.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    // ---- Durability -------------------------------------------------------------------------

    /// For a bulk load that is reported only at its end and can simply be run again (`replay-tool
    /// import`): until [`Store::sync`], commits go to the WAL without waiting for the disk. Each
    /// commit is still atomic and in order, so a crash or power cut loses at most a suffix of
    /// them (RocksDB recovers to a consistent point) and never leaves the store inconsistent.
    pub fn defer_syncs(&self) {
        self.db.set_durability(Durability::DeferredSync);
    }

    /// For a store built aside and thrown away unless it is finished (`replay-tool import` into a
    /// new data dir builds `db.importing` and renames it to `db` only at the end): until
    /// [`Store::persist`], nothing is written to the WAL at all. A crash before `persist` leaves
    /// families at different points, a store that must not be used: its builder discards it.
    pub fn write_without_wal(&self) {
        self.db.set_durability(Durability::NoWal);
    }

    /// Flushes every family to SST files and waits for it: every write so far is durable and
    /// consistent. Ends [`Store::write_without_wal`] and [`Store::defer_syncs`].
    pub fn persist(&self) -> Result<(), StoreError> {
        self.db.persist()
    }

    /// Makes every commit so far durable (syncs the WAL) and ends [`Store::defer_syncs`].
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.sync()
    }

    /// Flushes every column family and compacts each to its last level, waiting for both: the
    /// store is left settled (no pending flush or compaction). For tools and benchmarks that
    /// must not leave background work behind (a preloaded log, before it is copied and timed).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.db.compact()
    }

    /// Flushes every column family and waits (at most `timeout`) until no compaction is pending
    /// or running: the store is left as one in use settles, without the full rewrite of
    /// [`Store::compact`] (a preloaded log of millions of events, before it is copied and timed).
    pub fn settle(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.db.settle(timeout)
    }

    // ---- The log ----------------------------------------------------------------------------

    /// Appends events written by this device, in order, with one durable write. `now_ms` is the
    /// wall clock (the engine never reads it). Refused while a peer holds this device's events
    /// beyond the local head (see [`Store::note_remote_head`]).
    pub fn append(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        bodies: Vec<(BodyEncoding, Bytes)>,
    ) -> Result<(Vec<SignedEvent>, CommitSummary), crate::error::AppendError> {
        let mut writer = self.lock_writer();
        let events = writer.log.build_chain(&self.db, space, key, now_ms, bodies)?;
        let summary = writer.commit_events(&self.db, self.options.projections, space, &events, None)?;
        if let Some(last) = events.last() {
            writer.log.note_own_write(last);
        }
        if events.iter().any(SignedEvent::is_membership) {
            self.refresh_keys_locked(&mut writer)?;
        }
        Ok((events, summary))
    }

    /// Every event this node holds beyond `have`, per author in seq order, read lazily.
    /// Events a revocation removed (above its cut) are never sent: they count nowhere.
    pub fn events_after(&self, space: &SpaceId, have: &VersionVector) -> EventsAfter<'_> {
        let mut held = self.vector(space);
        let mut first = BTreeSet::new();
        if let Some(membership) = self.lock_writer().log.judging(space) {
            for (author, cut) in membership.cuts() {
                if held.get(&author) > cut {
                    held.set(author, cut);
                }
            }
            first = membership.authors();
        }
        reader::events_after(&self.db, space, &held, have, &first)
    }

    /// Every event this node holds beyond `have`, those that no longer count included (for
    /// audit and backups: the log keeps what it stored).
    pub fn events_held(&self, space: &SpaceId, have: &VersionVector) -> EventsAfter<'_> {
        reader::events_after(&self.db, space, &self.vector(space), have, &BTreeSet::new())
    }

    /// Arrival records from `position` on, at most `limit`, one per event.
    pub fn arrivals_from(&self, position: u64, limit: usize) -> Result<Vec<Arrival>, StoreError> {
        reader::arrivals_from(&self.db, position, limit)
    }

    /// One stored event.
    pub fn get_event(&self, space: &SpaceId, author: &AuthorId, seq: u64) -> Result<Option<SignedEvent>, StoreError> {
        log::get_event(&self.db, space, author, seq)
    }

    /// Fork evidence kept for a space: signed events that contradict the stored chain of their
    /// author (another event at a stored seq, or a `prev` that is not the stored event before).
    pub fn forks(&self, space: &SpaceId) -> Result<Vec<SignedEvent>, StoreError> {
        crate::log::forks::evidence(&self.db, space)
    }

    /// The authors that forked their chains in a space, and whether each is quarantined (see
    /// `log::forks`).
    pub fn forked_authors(&self, space: &SpaceId) -> Vec<crate::log::forks::ForkedAuthor> {
        let writer = self.lock_writer();
        writer.log.forks.of_space(space, writer.log.judging_now(space).as_deref())
    }

    /// The version vector of a space: what this node holds.
    pub fn vector(&self, space: &SpaceId) -> VersionVector {
        self.lock_writer().log.vector(space)
    }

    /// The head of one author's chain.
    pub fn head(&self, space: &SpaceId, author: &AuthorId) -> Option<Head> {
        self.lock_writer().log.head(space, author)
    }

    /// Spaces with at least one event.
    pub fn spaces(&self) -> Vec<SpaceId> {
        let mut spaces: Vec<SpaceId> = self.lock_writer().log.heads.keys().copied().collect();
        spaces.sort();
        spaces
    }

    /// The next arrival position (one past the last stored event).
    pub fn next_position(&self) -> u64 {
        self.lock_writer().log.next_position
    }

    /// Highest hlc seen in any stored event.
    pub fn max_hlc(&self) -> u64 {
        self.lock_writer().log.max_hlc
    }

    /// Records that `evidence`, a signed event of some author's chain, exists (at a peer) beyond
    /// this store's head of that chain: while the local head is lower, local appends by that
    /// author are refused (the self-fork guard: a device restored from an old copy must fetch its
    /// own tail before it writes). Only evidence raises a fence: an event of `space` whose
    /// signature verifies against its author's key; a claim of a seq alone never does, so a peer
    /// cannot stop a device from writing by naming a seq. Returns whether the fence is now above
    /// the local head.
    pub fn raise_fence(&self, space: &SpaceId, evidence: &SignedEvent) -> Result<bool, crate::Error> {
        if evidence.header.space != *space {
            return Err(CommandError::Invalid("fence evidence of another space").into());
        }
        evidence.verify_signature()?;
        Ok(self.lock_writer().log.raise_fence(&self.db, evidence)?)
    }

    /// Removes the fence of an author, letting this device write again before it has fetched the
    /// events a peer showed it holds. If those events exist, the next write forks the chain: every
    /// other device then refuses this device's writes from that seq on (they are kept as fork
    /// evidence). For an operator who knows those events are gone for good. Returns the seq the
    /// fence stood at (0 when there was none).
    pub fn clear_fence(&self, space: &SpaceId, author: &AuthorId) -> Result<u64, StoreError> {
        self.lock_writer().log.clear_fence(&self.db, space, author)
    }

    /// The fence of an author: the highest seq seen at a peer (0 when none).
    pub fn fence(&self, space: &SpaceId, author: &AuthorId) -> u64 {
        self.lock_writer().log.fence(space, author)
    }

    /// Adds (or renames) a known device of a space: peers authenticate as one of these.
    pub fn add_member(&self, space: &SpaceId, author: &AuthorId, name: &str) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        log::add_member(&self.db, space, author, name)
    }

    /// The name of a known device, if it is one.
    pub fn member(&self, space: &SpaceId, author: &AuthorId) -> Result<Option<String>, StoreError> {
        log::member(&self.db, space, author)
    }

    /// Every known device of a space.
    pub fn members(&self, space: &SpaceId) -> Result<Vec<(AuthorId, String)>, StoreError> {
        log::members(&self.db, space)
    }

    // ---- Commands ---------------------------------------------------------------------------

    /// Carries out a command as this device: one signed event, durable before it returns.
    /// Commands issued concurrently are committed together (one synced write), each seeing the
    /// effect of the ones before it.
    pub fn execute(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        command: Command,
    ) -> Result<(SignedEvent, CaseView, CommitSummary), crate::Error> {
        if !self.has_projections() {
            return Err(CommandError::Invalid("a relay holds no cases").into());
        }
        self.commands.execute(&self.db, &self.writer, space, key, now_ms, command)
    }

    // ---- Projections ------------------------------------------------------------------------

    /// Starts a bulk catch-up: until the matching [`Store::end_bulk_catch_up`], ingested events
    /// are folded into in-memory deltas (written out with the events whenever many cases are
    /// held) instead of into the views; the watermark stays behind, so a crash meanwhile is
    /// repaired by the rebuild at the next open, and commands are refused (a node makes them
    /// wait for the end, bounded). Worth it when far
    /// more events arrive than the store holds: each case is written once per thousands of
    /// events instead of once per batch.
    pub fn begin_bulk_catch_up(&self) {
        self.begin_bulk_catch_up_holding(BULK_CASES_IN_MEMORY, false);
    }

    /// [`Store::begin_bulk_catch_up`], holding up to `cases` case states in memory (about 5.4
    /// KiB each for a case with eight 120-byte fields). More cases written per spill means fewer
    /// writes when an author's chain cycles over more cases than the default holds. With
    /// `state_hash`, a catch-up into empty projections also digests each case it writes out and
    /// commits the state hash with the watermark, so [`Store::state_hash`] needs no scan after
    /// it (for an import that reports the hash; a node's catch-up skips that cost, a tenth of
    /// its ingest thread at 1M events).
    pub fn begin_bulk_catch_up_holding(&self, cases: usize, state_hash: bool) {
        if self.options.projections {
            self.lock_writer().bulk.begin(cases, self.db.memory().fold_bytes, state_hash);
        }
    }

    /// Ends a bulk catch-up; the last one to end writes each space's remaining deltas and its
    /// watermark in one synced batch, or rebuilds the projections of a space whose deltas are
    /// not usable. Returns how many spaces were rebuilt. After a failure the views of the spaces
    /// not finished say so (their watermark lags): the next commit or open rebuilds them.
    pub fn end_bulk_catch_up(&self) -> Result<usize, StoreError> {
        if !self.options.projections {
            return Ok(0);
        }
        self.lock_writer().end_bulk_catch_up(&self.db)
    }

    /// Events of a space stored but not yet in its projections (during a bulk catch-up, or after
    /// one failed).
    pub fn projections_behind(&self, space: &SpaceId) -> Result<u64, StoreError> {
        if !self.options.projections {
            return Ok(0);
        }
        self.lock_writer().projections_behind(&self.db, space)
    }

    /// The version vector the stored projections of a space include.
    pub fn projection_watermark(&self, space: &SpaceId) -> Result<VersionVector, StoreError> {
        queries::watermark(&self.db, space)
    }

    /// Founds a new space with this device as its admin: a random `nonce` (the caller's) and the
    /// key make the space id, and the founding event is this device's first in it.
    pub fn found_space(
        &self,
        key: &DeviceKey,
        name: &str,
        nonce: [u8; 16],
        now_ms: u64,
    ) -> Result<SpaceId, crate::error::AppendError> {
        let space = founded_space(&key.author(), &nonce);
        if self.head(&space, &key.author()).is_none() {
            self.change_membership(&space, key, now_ms, &MembershipOp::Found { nonce, name: name.to_string() })?;
        }
        Ok(space)
    }

    /// Signs and stores one membership change by this device (judged like any event: only an
    /// admin's counts). Grants and revocations name the device's head as this store holds it:
    /// see [`Store::grant`] and [`Store::revoke`].
    pub fn change_membership(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        op: &MembershipOp,
    ) -> Result<SignedEvent, crate::error::AppendError> {
        let body = Bytes::from(encode_membership(op));
        let (mut events, _) = self.append(space, key, now_ms, vec![(BodyEncoding::Membership, body)])?;
        events.pop().ok_or(crate::error::AppendError::Empty)
    }

    /// Gives `device` a role, for its events above those held here, until `until_ms`.
    pub fn grant(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        grant: NewGrant,
    ) -> Result<SignedEvent, crate::error::AppendError> {
        let NewGrant { device, role, name, until_ms } = grant;
        let after = self.head(space, &device).map_or(0, |h| h.seq);
        let op = MembershipOp::Grant { device, role, name, after, until_ms };
        self.change_membership(space, key, now_ms, &op)
    }

    /// Shuts `device` out: its events above those held here never count, on any node.
    pub fn revoke(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        device: AuthorId,
    ) -> Result<SignedEvent, crate::error::AppendError> {
        let cut = self.head(space, &device).map_or(0, |h| h.seq);
        self.change_membership(space, key, now_ms, &MembershipOp::Revoke { device, cut })
    }

    /// The membership of a space as this store's log decides it (empty when nothing of it is
    /// held).
    pub fn membership(&self, space: &SpaceId) -> Membership {
        self.lock_writer().log.membership.get(space).cloned().unwrap_or_else(|| Membership::new(*space))
    }

    /// Whether an event by `author` at `seq` and `hlc` counts in `space` (a case event); `true`
    /// where nobody is judged.
    pub fn counts(&self, space: &SpaceId, author: &AuthorId, seq: u64, hlc: u64) -> bool {
        self.lock_writer().log.judging(space).is_none_or(|m| m.judge(author, seq, hlc, None).is_ok())
    }

    /// Drops and rebuilds the case projections of a space from the log. Returns the state hash.
    pub fn rebuild_projections(&self, space: &SpaceId) -> Result<String, StoreError> {
        self.lock_writer().rebuild(&self.db, space)
    }

    /// Folds the stored events of a space that `include` accepts into case states held in memory,
    /// aside from the stored projections (neither read nor changed): the views at a point in
    /// time, or a fresh replay to compare them with. `include` sees every event, in key order
    /// (author, seq). Holds every case it folds.
    pub fn fold_log(&self, space: &SpaceId, include: impl FnMut(&EventHeader) -> bool) -> Result<Fold, StoreError> {
        let judge = self.lock_writer().log.judging(space).cloned();
        queries::fold_log(&self.db, space, judge.as_ref(), include)
    }

    /// The folded state of one case.
    pub fn case_state(&self, space: &SpaceId, case: &CaseId) -> Result<Option<CaseState>, StoreError> {
        queries::load_case(&self.db, space, case)
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
        let matches: Vec<CaseId> = queries::case_ids_with_prefix(&self.db, space, &prefix, usize::MAX)?
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
        queries::scan_cases(&self.db, space, true, f)
    }

    /// Case views of a space that pass the filter, in case id order.
    pub fn list_cases(&self, space: &SpaceId, filter: &CaseFilter) -> Result<Vec<CaseView>, StoreError> {
        queries::list_cases(&self.db, space, filter)
    }

    /// Every conflict of a space (or of one case).
    pub fn conflicts(&self, space: &SpaceId, case: Option<&CaseId>) -> Result<Vec<ConflictView>, StoreError> {
        queries::conflicts(&self.db, space, case)
    }

    /// The history of a case, ordered by (hlc, author, seq).
    /// Beside the case's changes: the membership changes of the devices that wrote it, and its
    /// events that do not count (written above a revocation's cut), each saying why.
    pub fn history(&self, space: &SpaceId, case: &CaseId) -> Result<Vec<HistoryItem>, StoreError> {
        let mut items = history::history(
            &self.db,
            space,
            case,
            |author, seq| self.get_event(space, author, seq),
            |author| self.member(space, author),
        )?;
        let membership = self.membership(space);
        let keys = self.db.keys();
        let mut uncounted = Vec::new();
        for (author, cut) in membership.cuts() {
            let head = self.head(space, &author).map_or(0, |h| h.seq);
            // Bounded: a cut author's events beyond it are at most what it wrote offline.
            for seq in cut + 1..=head.min(cut.saturating_add(UNCOUNTED_SHOWN_MAX)) {
                let event = self.get_event(space, &author, seq)?;
                if let Some(event) = event.filter(|e| operation_of(e, &keys).is_some_and(|op| op.case() == *case)) {
                    uncounted.push(event);
                }
            }
        }
        let name = |author: &AuthorId| Ok(self.member(space, author)?.or_else(|| membership.name_of(author)));
        history::add_membership(&mut items, &membership, &keys, uncounted, |a, s| self.get_event(space, a, s), name)?;
        Ok(items)
    }

    /// The state hash of a space's stored projections: the one a rebuild or bulk load computed,
    /// while the projections are still at the watermark it was computed for (the projections are
    /// a function of the events they include), else [`Store::scanned_state_hash`].
    pub fn state_hash(&self, space: &SpaceId) -> Result<String, StoreError> {
        queries::state_hash(&self.db, space)
    }

    /// The state hash of a space's stored projections, computed from every stored case (what
    /// `replay-tool verify` compares with a fresh replay).
    pub fn scanned_state_hash(&self, space: &SpaceId) -> Result<String, StoreError> {
        queries::scanned_state_hash(&self.db, space)
    }
}
