//! The membership of each space as the log holds it: read at open from the membership index,
//! raised by every stored membership event, and the judge of every event before it is stored
//! (received or written here). See [`crate::model::membership`] for the rules.

use std::collections::HashMap;

use crate::codec::keys::{event_key, CF_EVENTS, CF_META, META_MEMBERSHIP_PREFIX};
use crate::codec::membership::decode_membership;
use crate::error::OpenError;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, SpaceId};
use crate::model::membership::{Membership, MembershipOp, MembershipRecord, Refusal};
use crate::storage::Db;

/// Who a store lets write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Every event is judged by its space's membership: an event counts only if its author held
    /// a role that allows it. A space whose founding event is not held accepts only that event.
    /// What a node uses.
    #[default]
    Members,
    /// Spaces whose founding event is held are judged as with `Members`; spaces without one
    /// (logs written before membership existed, and tests of the log's mechanics) take any
    /// author. What operators' tools use on existing logs.
    Compatible,
}

/// The membership change an event carries, if it is a membership event; `Err` when its body
/// does not decode (such an event never counts).
pub fn membership_op(event: &SignedEvent) -> Option<Result<MembershipOp, Refusal>> {
    event
        .is_membership()
        .then(|| decode_membership(&event.body).map_err(|_| Refusal::Invalid("a membership body that does not decode")))
}

/// A membership event as a record to judge.
pub fn record_of(event: &SignedEvent) -> Option<MembershipRecord> {
    let op = membership_op(event)?.ok()?;
    Some(MembershipRecord { author: event.header.author, seq: event.header.seq, hlc: event.header.hlc, op })
}

/// Reads every space's membership from the index (each indexed event read and decoded).
pub(crate) fn load(db: &Db) -> Result<HashMap<SpaceId, Membership>, OpenError> {
    let mut spaces: HashMap<SpaceId, Vec<MembershipRecord>> = HashMap::new();
    for item in db.rocks().prefix_iterator_cf(db.cf(CF_META), META_MEMBERSHIP_PREFIX) {
        let (key, _) = item?;
        let Some(rest) = key.strip_prefix(META_MEMBERSHIP_PREFIX) else { break };
        let damaged = || OpenError::Damaged("a membership index record is malformed".into());
        if rest.len() != 56 {
            return Err(damaged());
        }
        let space = SpaceId::from_slice(&rest[..16]).map_err(|_| damaged())?;
        let author = AuthorId::from_slice(&rest[16..48]).map_err(|_| damaged())?;
        let seq = u64::from_be_bytes(rest[48..].try_into().map_err(|_| damaged())?);
        let stored = db
            .rocks()
            .get_cf(db.cf(CF_EVENTS), event_key(&space, &author, seq))?
            .ok_or_else(|| OpenError::Damaged(format!("membership event {} #{seq} is missing", author.device_id())))?;
        let event = SignedEvent::from_stored(&stored)
            .map_err(|e| OpenError::Damaged(format!("membership event {} #{seq}: {e}", author.device_id())))?;
        if let Some(record) = record_of(&event) {
            spaces.entry(space).or_default().push(record);
        }
    }
    Ok(spaces
        .into_iter()
        .map(|(space, records)| {
            let mut membership = Membership::new(space);
            membership.add(records);
            (space, membership)
        })
        .collect())
}

/// Judges a run of one author's events (in seq order, continuing its chain) against
/// `membership`, adding each membership event that counts to it. Returns how many lead the run
/// and count, and the refusal of the first that does not.
pub(crate) fn judge_run(membership: &mut Membership, run: &[SignedEvent]) -> (usize, Option<Refusal>) {
    // A case event inside the span of the last one that counted counts too (judged once per
    // span, not per event: see `Membership::case_verdict_span`).
    let mut counted_span: Option<(AuthorId, u64, u64)> = None;
    for (index, event) in run.iter().enumerate() {
        let h = &event.header;
        let verdict = match membership_op(event) {
            None => {
                if counted_span.is_some_and(|(a, last, below)| a == h.author && h.seq <= last && h.hlc < below) {
                    continue;
                }
                let verdict = membership.judge(&h.author, h.seq, h.hlc, None);
                if verdict.is_ok() {
                    let (last, below) = membership.case_verdict_span(&h.author, h.seq);
                    counted_span = Some((h.author, last, below));
                }
                verdict
            }
            Some(Err(refusal)) => Err(refusal),
            Some(Ok(op)) => membership.judge(&h.author, h.seq, h.hlc, Some(&op)).map(|()| {
                membership.add([MembershipRecord { author: h.author, seq: h.seq, hlc: h.hlc, op }]);
                counted_span = None;
            }),
        };
        if let Err(refusal) = verdict {
            return (index, Some(refusal));
        }
    }
    (run.len(), None)
}

/// Whether a change of membership from `before` to `after` may change whether stored events
/// count (so the views are folded again): a new or lower cut, a membership event that no longer
/// counts, or a new grant for a device that has events above what the grant covers.
pub(crate) fn changes_stored(before: &Membership, after: &Membership, head: impl Fn(&AuthorId) -> u64) -> bool {
    if before.cuts() != after.cuts() {
        return true;
    }
    let lost = before.records().any(|r| before.counts(&r.author, r.seq) && !after.counts(&r.author, r.seq));
    let regranted = after.records().any(|r| match &r.op {
        MembershipOp::Grant { device, after: covered, .. } => {
            !before.counts(&r.author, r.seq) && after.counts(&r.author, r.seq) && head(device) > *covered
        }
        _ => false,
    });
    lost || regranted
}
