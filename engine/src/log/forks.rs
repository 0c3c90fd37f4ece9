//! Equivocation: an author that signed two different events at one seq, or an event whose `prev`
//! does not name its own stored event before it (it signed another chain), has forked its
//! chain. Either way its signature over the offered event is the proof. The offered events are
//! kept as signed evidence (a few per author: a forking device cannot fill the disk with them),
//! and, in a space whose membership judges its events, the author is **quarantined**: none of its
//! new events is stored until an admin decides, by revoking it (its events above the cut never
//! count) or by granting it a role again after the fork (a grant whose clock is above the
//! evidence's). What was stored before the fork stays; the evidence is shown to users
//! (`casesync status`).
//!
//! `forks` holds each offered event under its event key and id (88 bytes), and per author a
//! record (space and author, 48 bytes) of the clock when the latest fork was found here: the
//! forked events' own clocks are the forking author's to choose, so they cannot date the fork.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use super::get_event;
use crate::codec::keys::{event_key, parse_event_key, CF_FORKS};
use crate::error::{OpenError, StoreError};
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, SpaceId};
use crate::model::limits::FORK_EVIDENCE_PER_AUTHOR_MAX;
use crate::model::membership::Membership;
use crate::storage::Db;

/// What is known of one author's forks in one space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ForkRecord {
    /// The lowest seq at which a fork was seen.
    first_seq: u64,
    /// Offered events kept as evidence.
    pieces: usize,
    /// When the latest fork was found here, by this node's clock (an admin's grant above it came
    /// after).
    hlc: u64,
}

/// An author that forked its chain in a space, as users are shown it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkedAuthor {
    /// The author.
    pub author: AuthorId,
    /// The lowest seq at which a fork was seen.
    pub first_seq: u64,
    /// Signed events kept as evidence.
    pub pieces: usize,
    /// Whether its new events are refused until an admin decides.
    pub quarantined: bool,
}

/// Every author's forks, per space: read at open, kept by each ingest that finds one.
#[derive(Default)]
pub(crate) struct Forks(HashMap<(SpaceId, AuthorId), ForkRecord>);

impl Forks {
    /// Reads the evidence kept in the store.
    pub(crate) fn load(db: &Db) -> Result<Forks, OpenError> {
        let mut forks = Forks::default();
        let mut found: HashMap<(SpaceId, AuthorId), u64> = HashMap::new();
        for item in db.rocks().iterator_cf(db.cf(CF_FORKS), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            if key.len() == FOUND_KEY_BYTES {
                if let (Some((space, author)), Ok(bytes)) = (found_key_parts(&key), <[u8; 8]>::try_from(&value[..])) {
                    found.insert((space, author), u64::from_be_bytes(bytes));
                }
                continue;
            }
            let Some((space, author, seq)) = key.get(..56).and_then(parse_event_key) else { continue };
            let Ok(offered) = SignedEvent::from_stored(&value) else { continue };
            let stored_hlc = get_event(db, &space, &author, seq)
                .map_err(|e| OpenError::Damaged(e.to_string()))?
                .map_or(0, |e| e.header.hlc);
            forks.note(space, author, seq, offered.header.hlc.max(stored_hlc));
        }
        for (at, hlc) in found {
            if let Some(record) = forks.0.get_mut(&at) {
                record.hlc = record.hlc.max(hlc);
            }
        }
        Ok(forks)
    }

    fn note(&mut self, space: SpaceId, author: AuthorId, seq: u64, hlc: u64) {
        let record = self.0.entry((space, author)).or_insert(ForkRecord { first_seq: seq, pieces: 0, hlc });
        record.first_seq = record.first_seq.min(seq);
        record.pieces += 1;
        record.hlc = record.hlc.max(hlc);
    }

    /// Stages `offered` (an event its author signed against the chain stored here, found at
    /// clock `found_hlc`) as evidence, unless the author's evidence is full already; the time it
    /// was found is staged either way. The record changes only once `batch` is committed
    /// ([`Forks::noted`]).
    pub(crate) fn stage(
        &self,
        batch: &mut WriteBatch,
        db: &Db,
        offered: &SignedEvent,
        found_hlc: u64,
    ) -> Option<(SpaceId, AuthorId, u64, u64)> {
        let h = &offered.header;
        let record = self.0.get(&(h.space, h.author));
        let found_hlc = found_hlc.max(record.map_or(0, |r| r.hlc));
        batch.put_cf(db.cf(CF_FORKS), found_key(&h.space, &h.author), found_hlc.to_be_bytes());
        if record.is_some_and(|r| r.pieces >= FORK_EVIDENCE_PER_AUTHOR_MAX) {
            return None;
        }
        let mut key = event_key(&h.space, &h.author, h.seq).to_vec();
        key.extend_from_slice(offered.id.as_bytes());
        // The same event offered again (each session that meets the fork) is no new evidence.
        if db.get(CF_FORKS, &key).ok().flatten().is_some() {
            return None;
        }
        batch.put_cf(db.cf(CF_FORKS), key, offered.to_stored());
        Some((h.space, h.author, h.seq, found_hlc))
    }

    /// Records what [`Forks::stage`] staged, once committed.
    pub(crate) fn noted(&mut self, staged: impl IntoIterator<Item = (SpaceId, AuthorId, u64, u64)>) {
        for (space, author, seq, hlc) in staged {
            self.note(space, author, seq, hlc);
        }
    }

    /// Whether `author`'s new events wait for an admin's decision in `space`, judged by
    /// `membership` (`None`: nobody's events are judged there, and nobody could decide): the
    /// lowest seq at which it forked, if so.
    pub(crate) fn quarantined(
        &self,
        space: &SpaceId,
        author: &AuthorId,
        membership: Option<&Membership>,
    ) -> Option<u64> {
        match (self.0.get(&(*space, *author)), membership) {
            (Some(record), Some(membership)) if !membership.granted_after(author, record.hlc) => Some(record.first_seq),
            _ => None,
        }
    }

    /// The authors that forked in `space`, by author.
    pub(crate) fn of_space(&self, space: &SpaceId, membership: Option<&Membership>) -> Vec<ForkedAuthor> {
        let mut out: Vec<ForkedAuthor> = self
            .0
            .iter()
            .filter(|((s, _), _)| s == space)
            .map(|((_, author), record)| ForkedAuthor {
                author: *author,
                first_seq: record.first_seq,
                pieces: record.pieces,
                quarantined: self.quarantined(space, author, membership).is_some(),
            })
            .collect();
        out.sort_by_key(|f| f.author);
        out
    }
}

/// Bytes of the key of an author's record of when its latest fork was found.
const FOUND_KEY_BYTES: usize = 48;

fn found_key(space: &SpaceId, author: &AuthorId) -> [u8; FOUND_KEY_BYTES] {
    let mut key = [0u8; FOUND_KEY_BYTES];
    key[..16].copy_from_slice(space.as_bytes());
    key[16..].copy_from_slice(author.as_bytes());
    key
}

fn found_key_parts(key: &[u8]) -> Option<(SpaceId, AuthorId)> {
    Some((SpaceId::from_slice(key.get(..16)?).ok()?, AuthorId::from_slice(key.get(16..)?).ok()?))
}

/// Fork evidence kept for a space: the offered events, by author and seq.
pub(crate) fn evidence(db: &Db, space: &SpaceId) -> Result<Vec<SignedEvent>, StoreError> {
    let mut out = Vec::new();
    for item in db.rocks().prefix_iterator_cf(db.cf(CF_FORKS), space.as_bytes()) {
        let (key, value) = item?;
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        if key.len() == FOUND_KEY_BYTES {
            continue;
        }
        if let Ok(event) = SignedEvent::from_stored(&value) {
            out.push(event);
        }
    }
    Ok(out)
}
