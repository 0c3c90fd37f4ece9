//! Local appends: where the next event of this device's chain goes (seq, prev, hlc), refused
//! while a fence says a peer holds this device's events beyond the local head.

use bytes::Bytes;

use super::membership::judge_run;
use super::LogState;
use crate::error::AppendError;
use crate::model::error::EventError;
use crate::model::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::model::hlc;
use crate::model::ids::{AuthorId, EventId, SpaceId};
use crate::model::signing::DeviceKey;
use crate::storage::Db;

/// The end of a device's chain as the next event must continue it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChainTail {
    space: SpaceId,
    author: AuthorId,
    seq: u64,
    prev: EventId,
    /// The clock of this device's last event in the space.
    hlc: u64,
    /// The newest clock of every event held (see [`hlc::next_plausible`]).
    seen_hlc: u64,
}

impl ChainTail {
    /// The header of the next event, written at wall-clock time `now_ms`.
    pub(crate) fn next_header(&self, now_ms: u64, encoding: BodyEncoding) -> EventHeader {
        EventHeader {
            space: self.space,
            author: self.author,
            seq: self.seq + 1,
            prev: self.prev,
            hlc: hlc::next_plausible(now_ms, self.hlc, self.seen_hlc),
            encoding,
        }
    }

    /// Moves the tail past `event`, built from [`ChainTail::next_header`].
    pub(crate) fn advance(&mut self, event: &SignedEvent) {
        self.seq = event.header.seq;
        self.prev = event.link;
        self.hlc = event.header.hlc;
    }

    /// Signs the next event and moves past it.
    pub(crate) fn sign(
        &mut self,
        key: &DeviceKey,
        now_ms: u64,
        encoding: BodyEncoding,
        body: Bytes,
    ) -> Result<SignedEvent, EventError> {
        let event = SignedEvent::build(key, &self.next_header(now_ms, encoding), body)?;
        self.advance(&event);
        Ok(event)
    }
}

impl LogState {
    /// Notes the clock of the last event this node just committed as `author` (its next write
    /// then needs no read of the log).
    pub(crate) fn note_own_write(&mut self, last: &SignedEvent) {
        self.own_hlc.insert((last.header.space, last.header.author), last.header.hlc);
    }

    /// Where `author`'s next event in `space` goes; refused while a peer holds its events beyond
    /// the local head (see [`LogState::note_remote_head`]): writing there would fork the chain.
    pub(crate) fn tail(&self, db: &Db, space: &SpaceId, author: &AuthorId) -> Result<ChainTail, AppendError> {
        let head = self.head(space, author);
        let local = head.map_or(0, |h| h.seq);
        let fence = self.fence(space, author);
        if fence > local {
            return Err(AppendError::Fenced { local, remote: fence });
        }
        let own_hlc = match (self.own_hlc.get(&(*space, *author)), local) {
            (Some(hlc), _) => *hlc,
            (None, 0) => 0,
            (None, seq) => super::get_event(db, space, author, seq)?.map_or(0, |event| event.header.hlc),
        };
        Ok(ChainTail {
            space: *space,
            author: *author,
            seq: local,
            prev: head.map_or(EventId::ZERO, |h| h.link),
            hlc: own_hlc,
            seen_hlc: self.max_hlc,
        })
    }

    /// Builds and signs this device's next events, one per body, in order.
    pub(crate) fn build_chain(
        &self,
        db: &Db,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        bodies: Vec<(BodyEncoding, Bytes)>,
    ) -> Result<Vec<SignedEvent>, AppendError> {
        if bodies.is_empty() {
            return Err(AppendError::Empty);
        }
        let mut tail = self.tail(db, space, &key.author())?;
        let mut judge = self.judging_now(space).map(std::borrow::Cow::into_owned);
        let mut events = Vec::with_capacity(bodies.len());
        for (encoding, body) in bodies {
            let event = tail.sign(key, now_ms, encoding, body)?;
            if let Some(membership) = judge.as_mut() {
                if let (_, Some(refusal)) = judge_run(membership, std::slice::from_ref(&event)) {
                    return Err(AppendError::NotAllowed(refusal));
                }
            }
            events.push(event);
        }
        Ok(events)
    }
}
