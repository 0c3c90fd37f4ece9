//! Local appends: assign seq and prev, stamp the hybrid logical clock, sign, and commit durably.

use bytes::Bytes;

use super::{CommitSummary, Store, WriterState};
use crate::error::AppendError;
use crate::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::ids::{EventId, SpaceId};
use crate::signing::DeviceKey;

/// The next hybrid logical clock value: wall clock in the high bits, never going backwards.
pub fn next_hlc(now_ms: u64, last: u64) -> u64 {
    (now_ms << 16).max(last + 1)
}

impl Store {
    /// Appends events written by this device, in order, with one durable write. `now_ms` is the
    /// wall clock (the engine never reads it). Refused while a peer holds this device's events
    /// beyond the local head (see [`Store::note_remote_head`]).
    pub fn append(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        bodies: Vec<(BodyEncoding, Bytes)>,
    ) -> Result<(Vec<SignedEvent>, CommitSummary), AppendError> {
        let mut state = self.lock_writer();
        self.append_locked(&mut state, space, key, now_ms, bodies)
    }

    pub(crate) fn append_locked(
        &self,
        state: &mut WriterState,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        bodies: Vec<(BodyEncoding, Bytes)>,
    ) -> Result<(Vec<SignedEvent>, CommitSummary), AppendError> {
        if bodies.is_empty() {
            return Err(AppendError::Empty);
        }
        let author = key.author();
        let head = state.head(space, &author);
        let local = head.map_or(0, |h| h.seq);
        let fence = state.fences.get(&(*space, author)).copied().unwrap_or(0);
        if fence > local {
            return Err(AppendError::Fenced { local, remote: fence });
        }
        let mut prev = head.map_or(EventId::ZERO, |h| h.link);
        let mut hlc = state.max_hlc;
        let mut events = Vec::with_capacity(bodies.len());
        for (seq, (encoding, body)) in (local + 1..).zip(bodies) {
            hlc = next_hlc(now_ms, hlc);
            let header = EventHeader { space: *space, author, seq, prev, hlc, encoding };
            let event = SignedEvent::build(key, &header, body)?;
            prev = event.link;
            events.push(event);
        }
        let summary = self.stage_and_commit(state, space, &events, None)?;
        Ok((events, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::next_hlc;

    #[test]
    fn hlc_is_monotonic_under_clock_skew() {
        let a = next_hlc(1000, 0);
        assert_eq!(a, 1000 << 16);
        let b = next_hlc(900, a); // clock went backwards
        assert_eq!(b, a + 1);
        assert!(next_hlc(2000, b) > b);
    }
}
