//! Ingest of events from other nodes: stage, verify, then commit.
//!
//! Each author's events in a batch form a run. A run is accepted only as the contiguous
//! continuation of the stored chain: the first event's `prev` must equal the stored head's link
//! hash (anchoring the range), every later `prev` the link hash of the event before it, and the
//! last event's signature must verify. A link hash covers an event's id and its signature, so an
//! intact chain up to one valid signature authenticates every byte before it, signatures
//! included. When the last signature fails, the longest prefix that ends on a signature that
//! verifies lands (checking signatures from the end on this slow path), so what a node accepts
//! does not depend on where a sender's batches ended; nothing after it is stored. Senders never
//! end a batch on an event no later signature of the batch authenticates (`node`'s
//! `event_stream`). One durable write per call.

use std::collections::BTreeMap;

use casesync_proto::v1 as pb;
use rocksdb::WriteBatch;

use super::membership::{changes_stored, judge_run};
use super::{get_event, CommitSummary, LogState};
use crate::error::StoreError;
use crate::model::error::EventError;
use crate::model::event::SignedEvent;
use crate::model::hlc;
use crate::model::ids::{AuthorId, EventId, SpaceId};
use crate::model::membership::Refusal;
use crate::model::signing::VerifyingKey;
use crate::model::vector_clock::VersionVector;
use crate::storage::Db;

/// Why (part of) an author's run was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The event is malformed or too large.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The event belongs to another space than the batch.
    #[error("event belongs to another space")]
    WrongSpace,
    /// A seq is missing before this one.
    #[error("gap: expected seq {expected}, got {got}")]
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// `prev` does not name the previous event.
    #[error("broken chain: prev does not match the previous event")]
    BrokenChain,
    /// The space's membership does not let the author write this event (unknown, reader,
    /// revoked, expired, or a membership change by a non-admin). Nothing of it is stored; an
    /// unknown author's events may count once the grant that admits them arrives.
    #[error(transparent)]
    NotCounted(#[from] Refusal),
    /// The event's clock is further ahead of this node's wall clock than any honest device's
    /// can be ([`hlc::RECEIVED_AHEAD_MAX_MS`]): not stored now (it would win every display and
    /// escape every audit window); offered again once this node's clock is near, it is taken.
    #[error("clock ahead: the event is stamped {} ms after this node's clock allows", .ahead_ms)]
    ClockAhead {
        /// How far beyond the allowed ceiling, in milliseconds.
        ahead_ms: u64,
    },
    /// The author forked its chain (the evidence is kept: see `log::forks`) and no admin has
    /// decided since: its new events wait.
    #[error("quarantined: the author forked its chain at seq {first_seq}; its new events wait until an admin revokes it or grants it a role again")]
    Quarantined {
        /// The lowest seq at which it forked.
        first_seq: u64,
    },
    /// The author signed two different events at one seq. Both are kept as evidence.
    #[error("fork: the author signed two different events at this seq (stored {stored}, offered {offered})")]
    Fork {
        /// Id of the stored event.
        stored: EventId,
        /// Id of the offered event.
        offered: EventId,
    },
}

/// One refusal: which author and seq, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The author, when the event decoded far enough to tell.
    pub author: Option<AuthorId>,
    /// The seq (0 when unknown).
    pub seq: u64,
    /// Why.
    pub reason: RejectReason,
}

/// What an ingest did.
#[derive(Clone, Debug, Default)]
pub struct IngestReport {
    /// Events stored.
    pub accepted: u64,
    /// Events already held (same id), skipped.
    pub duplicates: u64,
    /// Refusals; honest runs of the same batch still landed.
    pub rejected: Vec<Rejection>,
    /// What the commit changed.
    pub commit: CommitSummary,
    /// What the sender evidently holds: per author, the highest seq it sent that is now stored
    /// here (accepted or duplicate).
    pub sender_holds: VersionVector,
}

impl IngestReport {
    /// This report followed by `later`'s, of a commit made right after this one.
    pub fn absorb(&mut self, later: IngestReport) {
        self.accepted += later.accepted;
        self.duplicates += later.duplicates;
        self.rejected.extend(later.rejected);
        self.commit = CommitSummary {
            events: self.commit.events + later.commit.events,
            next_position: self.commit.next_position.max(later.commit.next_position),
        };
        self.sender_holds.merge(&later.sender_holds);
    }
}

/// A batch of received events decoded, hashed and grouped by author, ready for
/// [`Store::ingest_prepared`]. Preparing reads nothing from the store, so it can run on the
/// thread that received the batch while the store is busy with the one before; prepared batches
/// of one space can be joined and ingested in one commit.
#[derive(Debug)]
pub struct PreparedBatch {
    space: SpaceId,
    runs: BTreeMap<AuthorId, Vec<SignedEvent>>,
    rejected: Vec<Rejection>,
    events: usize,
    /// The receiving node's clock when the batch arrived (0 when not told).
    received_hlc: u64,
}

impl PreparedBatch {
    /// Whether any event of the batch is a membership event.
    pub fn carries_membership(&self) -> bool {
        self.runs.values().flatten().any(SignedEvent::is_membership)
    }

    /// Each author whose events of this space the batch holds, with the seq its run starts at.
    pub fn run_starts(&self) -> impl Iterator<Item = (AuthorId, u64)> + '_ {
        self.runs.iter().filter_map(|(author, run)| run.first().map(|event| (*author, event.header.seq)))
    }

    /// Decodes and hashes a received batch for `space` (events of another space are refused).
    pub fn new(space: SpaceId, batch: Vec<pb::SignedEvent>) -> PreparedBatch {
        let mut prepared =
            PreparedBatch { space, runs: BTreeMap::new(), rejected: Vec::new(), events: 0, received_hlc: 0 };
        for message in batch {
            match SignedEvent::from_peer(message) {
                Ok(event) => prepared.add(event),
                Err(error) => prepared.rejected.push(Rejection { author: None, seq: 0, reason: error.into() }),
            }
        }
        prepared
    }

    /// [`PreparedBatch::new`] for a batch a peer sent to a node whose wall clock reads `now_ms`:
    /// events stamped further ahead than any honest clock runs are refused
    /// ([`PreparedBatch::refuse_clocks_ahead_of`]).
    pub fn received(space: SpaceId, batch: Vec<pb::SignedEvent>, now_ms: u64) -> PreparedBatch {
        let mut prepared = PreparedBatch::new(space, batch);
        prepared.refuse_clocks_ahead_of(now_ms);
        prepared.received_hlc = now_ms.saturating_mul(1 << 16);
        prepared
    }

    fn add(&mut self, event: SignedEvent) {
        if event.header.space != self.space {
            self.rejected.push(Rejection {
                author: Some(event.header.author),
                seq: event.header.seq,
                reason: RejectReason::WrongSpace,
            });
        } else {
            self.events += 1;
            // A sender streams each author's range in turn: the run is nearly always the last.
            match self.runs.last_entry() {
                Some(mut last) if *last.key() == event.header.author => last.get_mut().push(event),
                _ => self.runs.entry(event.header.author).or_default().push(event),
            }
        }
    }

    /// Refuses, in each author's run, the events from the first whose clock lies beyond what a
    /// node whose wall clock reads `now_ms` accepts ([`hlc::received_ceiling`]): what comes
    /// before it is checked and stored as usual. Nodes apply this to what peers send; a store's
    /// own tools (tests, salvage) do not.
    pub fn refuse_clocks_ahead_of(&mut self, now_ms: u64) {
        let ceiling = hlc::received_ceiling(now_ms);
        for (author, run) in self.runs.iter_mut() {
            if let Some(at) = run.iter().position(|event| event.header.hlc > ceiling) {
                let first = &run[at];
                let ahead_ms = hlc::millis(first.header.hlc).saturating_sub(hlc::millis(ceiling));
                self.rejected.push(Rejection {
                    author: Some(*author),
                    seq: first.header.seq,
                    reason: RejectReason::ClockAhead { ahead_ms },
                });
                self.events -= run.len() - at;
                run.truncate(at);
            }
        }
        self.runs.retain(|_, run| !run.is_empty());
    }

    /// Adds the events of a batch received after this one (of another space: refused). An
    /// author's run this batch does not have is taken over whole.
    pub fn append(&mut self, later: PreparedBatch) {
        self.rejected.extend(later.rejected);
        if later.space != self.space {
            for event in later.runs.into_values().flatten() {
                self.add(event);
            }
            return;
        }
        self.events += later.events;
        for (author, run) in later.runs {
            match self.runs.entry(author) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(run);
                }
                std::collections::btree_map::Entry::Occupied(mut held) => held.get_mut().extend(run),
            }
        }
    }

    /// Splits off the runs of the authors whose events in this batch carry membership, when it
    /// holds other authors' runs too: committed first, the grants and key shares they carry then
    /// decide and open the other events of the same batch (a device catching up meets its data
    /// key in the first batch, beside the first case events it opens).
    pub fn split_membership_runs(&mut self) -> Option<PreparedBatch> {
        let authors: Vec<AuthorId> = self
            .runs
            .iter()
            .filter(|(_, run)| run.iter().any(SignedEvent::is_membership))
            .map(|(author, _)| *author)
            .collect();
        if authors.is_empty() || authors.len() == self.runs.len() {
            return None;
        }
        let mut first = PreparedBatch {
            space: self.space,
            runs: BTreeMap::new(),
            rejected: Vec::new(),
            events: 0,
            received_hlc: self.received_hlc,
        };
        for author in authors {
            if let Some(run) = self.runs.remove(&author) {
                self.events -= run.len();
                first.events += run.len();
                first.runs.insert(author, run);
            }
        }
        Some(first)
    }

    /// Whether the batch holds events of `author`.
    pub fn has_author(&self, author: &AuthorId) -> bool {
        self.runs.contains_key(author)
    }

    /// The event of `author` with the highest seq in the batch, if it holds any.
    pub fn last_of(&self, author: &AuthorId) -> Option<&SignedEvent> {
        self.runs.get(author).and_then(|run| run.iter().max_by_key(|event| event.header.seq))
    }

    /// Bytes of the events held (each event's bytes and signature): what the batch holds in
    /// memory, within a few per cent.
    pub fn bytes(&self) -> usize {
        self.runs.values().flatten().map(|event| event.bytes.len() + crate::model::limits::SIGNATURE_BYTES).sum()
    }

    /// Events held (refused ones not counted).
    pub fn len(&self) -> usize {
        self.events
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}

/// The outcome of checking one author's run.
struct RunCheck {
    held_up_to: u64,
    duplicates_up_to: u64,
    accepted: Vec<SignedEvent>,
    duplicates: u64,
    rejection: Option<Rejection>,
    /// Offered events that fork the author's chain, with the clock of the stored event they
    /// contradict.
    forks: Vec<(SignedEvent, u64)>,
}

/// A batch checked against the log: the events to commit (each author's as the contiguous
/// continuation of its stored chain) and the report so far. Fork evidence is already stored.
pub(crate) struct CheckedBatch {
    /// The batch's space.
    pub(crate) space: SpaceId,
    /// The events to commit, grouped by author.
    pub(crate) accepted: Vec<SignedEvent>,
    /// What was refused and held; `accepted` and `commit` are filled in once committed.
    pub(crate) report: IngestReport,
    /// The batch's membership events change whether events already stored count: the views
    /// must be folded again once it is committed.
    pub(crate) refold: bool,
}

/// Checks every run of a prepared batch against the stored chains (see the module
/// documentation) and stores the evidence of any fork it offers.
pub(crate) fn check_batch(db: &Db, log: &mut LogState, prepared: PreparedBatch) -> Result<CheckedBatch, StoreError> {
    let changes_membership = prepared.carries_membership();
    let PreparedBatch { space, runs, rejected, received_hlc, .. } = prepared;
    let space = &space;
    let mut report = IngestReport { rejected, ..IngestReport::default() };
    let state = log;
    let mut accepted = Vec::new();
    let mut batch_forks = Vec::new();
    // The membership that judges the batch. Without membership events in it, the stored one,
    // taken out of the state while the batch is checked (no copy) and put back after; with
    // some, a copy that takes them in as they are judged (the state's changes only when the
    // batch commits).
    let judged = state.judging(space).is_some();
    let mut judge = match (judged, changes_membership) {
        (false, _) => None,
        (true, true) => state.judging(space).cloned(),
        (true, false) => state.membership.remove(space),
    };
    // Runs whose first event does not count yet wait until the others are judged: the batch may
    // hold the grant or invitation that admits them. Each round admits at least one run, or ends.
    let mut pending: Vec<(AuthorId, Vec<SignedEvent>)> = runs.into_iter().collect();
    let mut last_round = false;
    let checked = (|| -> Result<(), StoreError> {
        while !pending.is_empty() {
            let mut waiting = Vec::new();
            let round = pending.len();
            for (author, mut run) in std::mem::take(&mut pending) {
                run.sort_by_key(|e| e.header.seq);
                let mut check = check_run(db, state, space, &author, run)?;
                if let Some(first_seq) = state.forks.quarantined(space, &author, judge.as_ref()) {
                    if let Some(first) = check.accepted.first() {
                        let seq = first.header.seq;
                        check.accepted.clear();
                        check.held_up_to = check.duplicates_up_to;
                        let reason = RejectReason::Quarantined { first_seq };
                        check.rejection.get_or_insert(Rejection { author: Some(author), seq, reason });
                    }
                }
                if let Some(membership) = judge.as_mut() {
                    let (counted, refusal) = judge_run(membership, &check.accepted);
                    if let Some(refusal) = refusal {
                        // The batch may hold what admits it (a grant, the invitation of an
                        // admission): the run's new events are judged again in the next round.
                        if counted == 0 && !last_round {
                            report.duplicates += check.duplicates;
                            report.sender_holds.raise(author, check.duplicates_up_to);
                            waiting.push((author, check.accepted));
                            continue;
                        }
                        // What follows a refused event cannot be stored either (its chain breaks).
                        let seq = check.accepted[counted].header.seq;
                        check.accepted.truncate(counted);
                        check.held_up_to = check.accepted.last().map_or(check.duplicates_up_to, |e| e.header.seq);
                        check.rejection.get_or_insert(Rejection { author: Some(author), seq, reason: refusal.into() });
                    }
                }
                report.duplicates += check.duplicates;
                report.sender_holds.raise(author, check.held_up_to);
                report.rejected.extend(check.rejection);
                accepted.extend(check.accepted);
                batch_forks.extend(check.forks);
            }
            // Nobody was admitted this round: the rest are judged as they stand (and refused).
            last_round = waiting.len() == round;
            pending = waiting;
        }
        Ok(())
    })();
    let refold = if changes_membership {
        // The membership the batch was judged under is the stored one until the batch commits.
        match (state.judging_now(space), &judge) {
            (Some(before), Some(after)) => {
                changes_stored(&before, after, |device| state.head(space, device).map_or(0, |h| h.seq))
            }
            _ => false,
        }
    } else {
        if let Some(membership) = judge.take() {
            state.membership.insert(*space, membership);
        }
        false
    };
    checked?;
    if !batch_forks.is_empty() {
        let mut batch = WriteBatch::default();
        let mut staged = Vec::new();
        // When the fork was found here, as late as this node can tell (the forked events' own
        // clocks are the forking author's to choose): an admin's grant after it decides.
        let found_hlc = received_hlc.max(state.max_hlc);
        for (offered, stored_hlc) in &batch_forks {
            let h = &offered.header;
            tracing::warn!(author = %h.author.device_id(), seq = h.seq, offered = %offered.id.short(), "the author forked its chain: evidence kept");
            staged.extend(state.forks.stage(&mut batch, db, offered, (*stored_hlc).max(found_hlc)));
        }
        db.commit(batch)?;
        state.forks.noted(staged);
    }
    Ok(CheckedBatch { space: *space, accepted, report, refold })
}

fn check_run(
    db: &Db,
    state: &mut LogState,
    space: &SpaceId,
    author: &AuthorId,
    run: Vec<SignedEvent>,
) -> Result<RunCheck, StoreError> {
    let mut check = RunCheck {
        held_up_to: 0,
        duplicates_up_to: 0,
        accepted: Vec::new(),
        duplicates: 0,
        rejection: None,
        forks: Vec::new(),
    };
    let head = state.head(space, author);
    let (mut seq, mut prev) = head.map_or((0, EventId::ZERO), |h| (h.seq, h.link));
    let mut failure: Option<(u64, RejectReason)> = None;
    let mut fresh = Vec::with_capacity(run.len());
    for event in run {
        let h = &event.header;
        if h.seq <= seq {
            // Already held, or a fork: compare with what is stored.
            let stored = get_event(db, space, author, h.seq)?;
            match stored {
                Some(stored) if stored.id == event.id => {
                    check.duplicates += 1;
                    check.held_up_to = check.held_up_to.max(h.seq);
                    check.duplicates_up_to = check.held_up_to;
                }
                Some(stored) if fresh.is_empty() => {
                    if event.verify_signature().is_ok() {
                        check.forks.push((event.clone(), stored.header.hlc));
                        failure = Some((h.seq, RejectReason::Fork { stored: stored.id, offered: event.id }));
                    } else {
                        failure = Some((h.seq, EventError::BadSignature.into()));
                    }
                    break;
                }
                // A repeated seq inside the offered batch after new events: a gap in order.
                _ => {
                    failure = Some((h.seq, RejectReason::Gap { expected: seq + 1, got: h.seq }));
                    break;
                }
            }
            continue;
        }
        if h.seq != seq + 1 {
            failure = Some((h.seq, RejectReason::Gap { expected: seq + 1, got: h.seq }));
            break;
        }
        if h.prev != prev {
            // Signed by its author against the stored chain: the author signed another chain.
            if fresh.is_empty() && seq > 0 && event.verify_signature().is_ok() {
                let stored_hlc = get_event(db, space, author, seq)?.map_or(0, |e| e.header.hlc);
                check.forks.push((event.clone(), stored_hlc));
            }
            failure = Some((h.seq, RejectReason::BrokenChain));
            break;
        }
        seq = h.seq;
        prev = event.link;
        fresh.push(event);
    }
    // The chain is intact from the stored head to the last fresh event: one signature
    // authenticates the range (a link covers the signature before it). If it fails, the
    // longest prefix that ends on a signature that verifies is authenticated the same way,
    // whatever signatures it holds before (an author's junk middle signature is its own
    // business, and a node must accept the same events however batches happened to end).
    if let Some(last) = fresh.last() {
        let key = match state.keys.get(author) {
            Some(key) => Ok(key.clone()),
            None => VerifyingKey::new(author),
        };
        match key {
            Ok(key) => {
                state.keys.entry(*author).or_insert_with(|| key.clone());
                if key.verify(&last.id.0, &last.signature).is_err() {
                    let good = fresh
                        .iter()
                        .rposition(|e| key.verify(&e.id.0, &e.signature).is_ok())
                        .map_or(0, |last| last + 1);
                    let bad_seq = fresh[good].header.seq;
                    fresh.truncate(good);
                    failure = Some((bad_seq, EventError::BadSignature.into()));
                }
            }
            Err(error) => {
                failure = Some((fresh[0].header.seq, error.into()));
                fresh.clear();
            }
        }
    }
    if let Some(last) = fresh.last() {
        check.held_up_to = check.held_up_to.max(last.header.seq);
    }
    check.accepted = fresh;
    check.rejection = failure.map(|(seq, reason)| Rejection { author: Some(*author), seq, reason });
    Ok(check)
}
