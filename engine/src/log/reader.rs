//! Streaming reads: the events a peer lacks, per author in seq order, and the arrival index. Both
//! iterate RocksDB lazily, so a million-event catch-up never sits in memory.

use std::collections::BTreeSet;

use casesync_proto::v1 as pb;
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, DB};

use crate::codec::keys::{be_u64, event_key, parse_arrival_run, parse_event_key, CF_ARRIVAL, CF_EVENTS};
use crate::error::StoreError;
use crate::model::ids::{AuthorId, SpaceId};
use crate::model::limits::SIGNATURE_BYTES;
use crate::model::vector_clock::{SeqRange, VersionVector};
use crate::storage::Db;

/// Ranges at least this long are read without filling the block cache.
const UNCACHED_RANGE_EVENTS: u64 = 4096;

/// Iterator over the events a peer lacks: `(author, seq, wire message)`.
pub struct EventsAfter<'a> {
    db: &'a Db,
    space: SpaceId,
    ranges: std::vec::IntoIter<SeqRange>,
    /// The range being read, the seq expected next, and a raw iterator over it (its slices are
    /// copied once, into the message: no boxed key and value per event).
    current: Option<(SeqRange, u64, DBRawIteratorWithThreadMode<'a, DB>)>,
}

impl<'a> EventsAfter<'a> {
    fn open_range(&self, range: SeqRange) -> DBRawIteratorWithThreadMode<'a, DB> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(event_key(&self.space, &range.author, range.last + 1).to_vec());
        // A long range (a peer catching up) is read once, block after block: through the block
        // cache it would push out what the node reads again and pay an insert and an eviction
        // per block (a tenth of the sender's time in a 1M-event sync). Short ranges (live
        // pushes, small syncs) are recent and read through it.
        options.fill_cache(range.len() < UNCACHED_RANGE_EVENTS);
        let mut iter = self.db.rocks().raw_iterator_cf_opt(self.db.cf(CF_EVENTS), options);
        iter.seek(event_key(&self.space, &range.author, range.first));
        iter
    }

    fn corrupt(&self, author: AuthorId, seq: u64, reason: &str) -> StoreError {
        StoreError::Corrupt { space: self.space, author, seq, reason: reason.to_string() }
    }
}

impl Iterator for EventsAfter<'_> {
    type Item = Result<(AuthorId, u64, pb::SignedEvent), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let range = self.ranges.next()?;
                let iter = self.open_range(range);
                self.current = Some((range, range.first, iter));
            }
            let (range, expected, iter) = self.current.as_mut()?;
            let (range, expected_seq) = (*range, *expected);
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                // Past the range's end, or a read error.
                let status = iter.status();
                self.current = None;
                if let Err(e) = status {
                    return Some(Err(e.into()));
                }
                if expected_seq <= range.last {
                    return Some(Err(self.corrupt(range.author, expected_seq, "event missing below the head")));
                }
                continue;
            };
            let seq = parse_event_key(key).map(|(_, _, seq)| seq);
            if seq != Some(expected_seq) || value.len() < SIGNATURE_BYTES {
                self.current = None;
                return Some(Err(self.corrupt(range.author, expected_seq, "event record out of place")));
            }
            // The stored record is the signature followed by the event bytes: one copy, two slices.
            let stored = bytes::Bytes::copy_from_slice(value);
            let message =
                pb::SignedEvent { event: stored.slice(SIGNATURE_BYTES..), signature: stored.slice(..SIGNATURE_BYTES) };
            *expected += 1;
            iter.next();
            return Some(Ok((range.author, expected_seq, message)));
        }
    }
}

/// One arrival record: position, and which event arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Local arrival position.
    pub position: u64,
    /// The event's space.
    pub space: SpaceId,
    /// The event's author.
    pub author: AuthorId,
    /// The event's seq.
    pub seq: u64,
}

/// Every event this node holds beyond `have`, per author in seq order, read lazily: the authors
/// in `first` before the others (the authors of membership events, so that a device catching up
/// holds its grant and the data keys before the case events they decide and open).
pub(crate) fn events_after<'a>(
    db: &'a Db,
    space: &SpaceId,
    held: &VersionVector,
    have: &VersionVector,
    first: &BTreeSet<AuthorId>,
) -> EventsAfter<'a> {
    let mut ranges = held.missing_in(have);
    // Stable: key order within each group.
    ranges.sort_by_key(|range| !first.contains(&range.author));
    EventsAfter { db, space: *space, ranges: ranges.into_iter(), current: None }
}

/// Arrival records from `position` on, at most `limit`, one per event (runs are expanded).
pub fn arrivals_from(db: &Db, position: u64, limit: usize) -> Result<Vec<Arrival>, StoreError> {
    let mut out = Vec::new();
    let mut iter = db.rocks().raw_iterator_cf(db.cf(CF_ARRIVAL));
    // The run holding `position` starts at or before it.
    iter.seek_for_prev(position.to_be_bytes());
    if !iter.valid() {
        iter.seek(position.to_be_bytes());
    }
    while out.len() < limit {
        let (Some(key), Some(value)) = (iter.key(), iter.value()) else { break };
        if let (Some(at), Some((space, author, first, count))) = (be_u64(key), parse_arrival_run(value)) {
            let skip = position.saturating_sub(at).min(count);
            for offset in skip..count {
                if out.len() >= limit {
                    break;
                }
                out.push(Arrival { position: at + offset, space, author, seq: first + offset });
            }
        }
        iter.next();
    }
    iter.status()?;
    Ok(out)
}
