//! The log: each device's signed, hash-chained events, stored only as the contiguous
//! continuation of its chain; the heads, arrival index and counters beside them; the fences that
//! keep this device from writing a seq its key already used; and the known devices of a space.
//! Knows nothing of projections: the store commits what this layer stages together with what
//! the projection layer folds.

pub mod append;
pub mod forks;
pub mod ingest;
pub mod membership;
pub mod reader;

use std::collections::HashMap;

use rocksdb::WriteBatch;

use crate::codec::keys::*;
use crate::error::{OpenError, StoreError};
use crate::model::event::BodyEncoding;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, EventId, SpaceId};
use crate::model::membership::{Membership, MembershipRecord};
use crate::model::signing::VerifyingKey;
use crate::model::vector_clock::{Head, VersionVector};
use crate::storage::Db;
use membership::Access;

/// What the store's single writer knows of the log: every chain's head, the arrival position and
/// hlc after the last stored event, the fences, and the keys of authors seen (parsed once).
#[derive(Default)]
pub(crate) struct LogState {
    pub(crate) heads: HashMap<SpaceId, HashMap<AuthorId, Head>>,
    pub(crate) next_position: u64,
    pub(crate) max_hlc: u64,
    pub(crate) fences: HashMap<(SpaceId, AuthorId), u64>,
    pub(crate) keys: HashMap<AuthorId, VerifyingKey>,
    /// The clock of the last event this node wrote as each author, per space, once known (read
    /// from the log at the first write after open, then kept by each local write).
    pub(crate) own_hlc: HashMap<(SpaceId, AuthorId), u64>,
    /// Who may write (see [`Access`]).
    pub(crate) access: Access,
    /// Each space's membership, as its stored membership events decide it.
    pub(crate) membership: HashMap<SpaceId, Membership>,
    /// The authors that forked their chains (see [`forks`]).
    pub(crate) forks: forks::Forks,
}

impl LogState {
    pub(crate) fn head(&self, space: &SpaceId, author: &AuthorId) -> Option<Head> {
        self.heads.get(space).and_then(|h| h.get(author)).copied()
    }

    pub(crate) fn vector(&self, space: &SpaceId) -> VersionVector {
        self.heads.get(space).map(|h| h.iter().map(|(author, head)| (*author, head.seq)).collect()).unwrap_or_default()
    }

    /// The membership that judges the events of `space`: `None` when nobody's events are
    /// judged there (an unfounded space of a [`Access::Compatible`] store).
    pub(crate) fn judging(&mut self, space: &SpaceId) -> Option<&Membership> {
        let founded = self.membership.get(space).is_some_and(Membership::is_founded);
        if self.access == Access::Compatible && !founded {
            return None;
        }
        Some(self.membership.entry(*space).or_insert_with(|| Membership::new(*space)))
    }

    /// [`LogState::judging`] without taking the state mutably.
    pub(crate) fn judging_now(&self, space: &SpaceId) -> Option<std::borrow::Cow<'_, Membership>> {
        match self.membership.get(space) {
            Some(m) if m.is_founded() || self.access == Access::Members => Some(std::borrow::Cow::Borrowed(m)),
            None if self.access == Access::Members => Some(std::borrow::Cow::Owned(Membership::new(*space))),
            _ => None,
        }
    }

    /// Reads the heads, counters, fences and memberships of a store at open.
    pub(crate) fn load(db: &Db, access: Access) -> Result<LogState, OpenError> {
        let mut state = LogState {
            access,
            membership: membership::load(db)?,
            forks: forks::Forks::load(db)?,
            ..LogState::default()
        };
        for item in db.rocks().iterator_cf(db.cf(CF_HEADS), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let parsed = (key.len() == 48 && value.len() == 40)
                .then(|| {
                    Some((
                        SpaceId::from_slice(&key[..16]).ok()?,
                        AuthorId::from_slice(&key[16..]).ok()?,
                        be_u64(&value[..8])?,
                        EventId::from_slice(&value[8..]).ok()?,
                    ))
                })
                .flatten();
            let (space, author, seq, id) =
                parsed.ok_or_else(|| OpenError::Damaged("a head record is malformed".into()))?;
            state.heads.entry(space).or_default().insert(author, Head { seq, link: id });
        }
        let meta = db.cf(CF_META);
        let read_u64 = |key: &[u8]| -> Result<u64, OpenError> {
            match db.rocks().get_cf(meta, key)? {
                None => Ok(0),
                Some(v) => be_u64(&v).ok_or_else(|| OpenError::Damaged("a meta counter is not 8 bytes".into())),
            }
        };
        state.next_position = read_u64(META_NEXT_POSITION)?.max(1);
        state.max_hlc = read_u64(META_MAX_HLC)?;
        for item in db.rocks().prefix_iterator_cf(meta, b"fence/") {
            let (key, value) = item?;
            if !key.starts_with(b"fence/") {
                break;
            }
            let rest = &key[6..];
            if let (Some(seq), Ok(space), Ok(author)) = (
                be_u64(&value),
                SpaceId::from_slice(rest.get(..16).unwrap_or(&[])),
                AuthorId::from_slice(rest.get(16..).unwrap_or(&[])),
            ) {
                state.fences.insert((space, author), seq);
            }
        }
        Ok(state)
    }

    /// Heads must name the last stored event of each chain, and that event must hash to the
    /// head's id (a crash can never leave them apart: they are written in one batch).
    pub(crate) fn check_heads(&self, db: &Db) -> Result<(), OpenError> {
        let events = db.cf(CF_EVENTS);
        for (space, heads) in &self.heads {
            for (author, head) in heads {
                let stored = db.rocks().get_cf(events, event_key(space, author, head.seq))?;
                let matches = stored
                    .as_deref()
                    .and_then(|v| SignedEvent::from_stored(v).ok())
                    .is_some_and(|e| e.link == head.link);
                if !matches {
                    return Err(OpenError::Damaged(format!(
                        "head of {} in space {} names seq {} but that event is missing or differs",
                        author.device_id(),
                        space.short(),
                        head.seq
                    )));
                }
                if db.rocks().get_cf(events, event_key(space, author, head.seq + 1))?.is_some() {
                    return Err(OpenError::Damaged(format!(
                        "events of {} in space {} exist beyond its head seq {}",
                        author.device_id(),
                        space.short(),
                        head.seq
                    )));
                }
            }
        }
        Ok(())
    }

    /// Stages accepted events in a new batch: each event, its arrival record, the new heads and
    /// the arrival position and hlc after them (no projection).
    pub(crate) fn stage(&self, db: &Db, space: &SpaceId, events: &[SignedEvent]) -> StagedEvents {
        let state = self;
        let mut batch = WriteBatch::default();
        let (cf_events, cf_arrival) = (db.cf(CF_EVENTS), db.cf(CF_ARRIVAL));
        let mut position = state.next_position;
        let mut new_heads: HashMap<AuthorId, Head> = HashMap::new();
        let mut max_hlc = state.max_hlc;
        // One arrival record per run of consecutive events by one author (format 4).
        let mut run: Option<(u64, AuthorId, u64, u64)> = None; // (position, author, first seq, count)
        let stage_arrival = |batch: &mut WriteBatch, run: Option<(u64, AuthorId, u64, u64)>| {
            if let Some((at, author, first, count)) = run {
                batch.put_cf(cf_arrival, at.to_be_bytes(), arrival_run_value(space, &author, first, count));
            }
        };
        // The head of the author whose events are being staged (events come grouped by author):
        // looked up when the author changes, noted in `new_heads` when it changes again.
        let mut current: Option<(AuthorId, Option<Head>)> = None;
        let mut stored = Vec::new();
        let mut membership_records = Vec::new();
        for event in events {
            let h = &event.header;
            let head = match &mut current {
                Some((author, head)) if *author == h.author => head,
                _ => {
                    if let Some((author, Some(head))) = current.take() {
                        new_heads.insert(author, head);
                    }
                    let head = new_heads.get(&h.author).copied().or_else(|| state.head(space, &h.author));
                    &mut current.insert((h.author, head)).1
                }
            };
            // Assert in pairs: verified before staging, and checked again here against the head.
            let expected_seq = head.map_or(1, |head| head.seq + 1);
            let expected_prev = head.map_or(EventId::ZERO, |head| head.link);
            assert!(h.seq == expected_seq && h.prev == expected_prev, "staged event must continue its chain");
            *head = Some(Head { seq: h.seq, link: event.link });
            event.write_stored(&mut stored);
            batch.put_cf(cf_events, event_key(space, &h.author, h.seq), &stored);
            if h.encoding == BodyEncoding::Membership {
                if let Some(record) = membership::record_of(event) {
                    batch.put_cf(db.cf(CF_META), meta_membership(space, &h.author, h.seq), []);
                    membership_records.push(record);
                }
            }
            match &mut run {
                Some((_, author, first, count)) if *author == h.author && *first + *count == h.seq => *count += 1,
                _ => {
                    stage_arrival(&mut batch, run.take());
                    run = Some((position, h.author, h.seq, 1));
                }
            }
            position += 1;
            max_hlc = max_hlc.max(h.hlc);
        }
        if let Some((author, Some(head))) = current {
            new_heads.insert(author, head);
        }
        stage_arrival(&mut batch, run);
        let cf_heads = db.cf(CF_HEADS);
        for (author, head) in &new_heads {
            let mut value = Vec::with_capacity(40);
            value.extend_from_slice(&head.seq.to_be_bytes());
            value.extend_from_slice(head.link.as_bytes());
            batch.put_cf(cf_heads, author_key(space, author), value);
        }
        let meta = db.cf(CF_META);
        batch.put_cf(meta, META_NEXT_POSITION, position.to_be_bytes());
        batch.put_cf(meta, META_MAX_HLC, max_hlc.to_be_bytes());
        let after = StateAfter {
            heads: new_heads,
            next_position: position,
            max_hlc,
            events: events.len() as u64,
            membership: membership_records,
        };
        StagedEvents { batch, after }
    }

    /// Records that `evidence`, an event of its author's that verified, exists beyond the local
    /// head: while the head is lower, local appends by that author are refused (the self-fork
    /// guard). The caller verified the event's signature. Returns whether the fence is now above
    /// the local head.
    pub(crate) fn raise_fence(&mut self, db: &Db, evidence: &SignedEvent) -> Result<bool, StoreError> {
        let (space, author, seq) = (&evidence.header.space, &evidence.header.author, evidence.header.seq);
        let state = self;
        let local = state.head(space, author).map_or(0, |h| h.seq);
        let known = state.fences.get(&(*space, *author)).copied().unwrap_or(0);
        if seq > known && seq > local {
            let mut batch = WriteBatch::default();
            batch.put_cf(db.cf(CF_META), meta_fence(space, author), seq.to_be_bytes());
            db.commit(batch)?;
            state.fences.insert((*space, *author), seq);
        }
        Ok(state.fences.get(&(*space, *author)).copied().unwrap_or(0) > local)
    }

    /// Removes the fence of an author (an operator's decision: see `Store::clear_fence`).
    /// Returns the seq it stood at (0 when there was none).
    pub(crate) fn clear_fence(&mut self, db: &Db, space: &SpaceId, author: &AuthorId) -> Result<u64, StoreError> {
        let Some(seq) = self.fences.get(&(*space, *author)).copied() else { return Ok(0) };
        let mut batch = WriteBatch::default();
        batch.delete_cf(db.cf(CF_META), meta_fence(space, author));
        db.commit(batch)?;
        self.fences.remove(&(*space, *author));
        Ok(seq)
    }

    /// The fence of an author: the highest seq seen at a peer (0 when none).
    pub(crate) fn fence(&self, space: &SpaceId, author: &AuthorId) -> u64 {
        self.fences.get(&(*space, *author)).copied().unwrap_or(0)
    }
}

/// What one commit changed, for subscribers.
#[derive(Clone, Debug, Default)]
pub struct CommitSummary {
    /// Events stored.
    pub events: u64,
    /// Arrival position after the last stored event (the next position to be used).
    pub next_position: u64,
}

/// Events staged in a write batch by [`LogState::stage`], and the log state after them.
pub(crate) struct StagedEvents {
    /// The events, arrival records, heads and counters.
    pub(crate) batch: WriteBatch,
    /// The log state once the batch is committed.
    pub(crate) after: StateAfter,
}

/// What the log state of a space becomes once staged events are committed.
pub(crate) struct StateAfter {
    pub(crate) heads: HashMap<AuthorId, Head>,
    next_position: u64,
    max_hlc: u64,
    events: u64,
    membership: Vec<MembershipRecord>,
}

impl StateAfter {
    /// Moves the log state to this, after the commit.
    pub(crate) fn apply(self, state: &mut LogState, space: &SpaceId) -> CommitSummary {
        // A clock kept for a local writer is stale once any event of that author is committed
        // (its own events may come back from a peer): read again, or noted by the local write.
        for author in self.heads.keys() {
            state.own_hlc.remove(&(*space, *author));
        }
        state.heads.entry(*space).or_default().extend(self.heads);
        if !self.membership.is_empty() {
            state.membership.entry(*space).or_insert_with(|| Membership::new(*space)).add(self.membership);
        }
        state.next_position = self.next_position;
        state.max_hlc = self.max_hlc;
        CommitSummary { events: self.events, next_position: self.next_position }
    }
}

/// One stored event.
pub fn get_event(db: &Db, space: &SpaceId, author: &AuthorId, seq: u64) -> Result<Option<SignedEvent>, StoreError> {
    match db.get(CF_EVENTS, event_key(space, author, seq))? {
        None => Ok(None),
        Some(value) => SignedEvent::from_stored(&value).map(Some).map_err(|e| StoreError::Corrupt {
            space: *space,
            author: *author,
            seq,
            reason: e.to_string(),
        }),
    }
}

/// Adds (or renames) a known device of a space: peers authenticate as one of these.
pub fn add_member(db: &Db, space: &SpaceId, author: &AuthorId, name: &str) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    batch.put_cf(db.cf(CF_MEMBERS), author_key(space, author), name.as_bytes());
    db.commit(batch)
}

/// The name of a known device, if it is one.
pub fn member(db: &Db, space: &SpaceId, author: &AuthorId) -> Result<Option<String>, StoreError> {
    Ok(db.get(CF_MEMBERS, author_key(space, author))?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Every known device of a space.
pub fn members(db: &Db, space: &SpaceId) -> Result<Vec<(AuthorId, String)>, StoreError> {
    let mut out = Vec::new();
    for item in db.rocks().prefix_iterator_cf(db.cf(CF_MEMBERS), space.as_bytes()) {
        let (key, value) = item?;
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        if let Ok(author) = AuthorId::from_slice(&key[16..]) {
            out.push((author, String::from_utf8_lossy(&value).into_owned()));
        }
    }
    Ok(out)
}
