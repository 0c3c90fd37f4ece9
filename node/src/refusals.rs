//! Authors whose events this node refused from its peers, remembered (bounded) and shown by
//! `casesync status`. A refusal ends nobody's session but the offending device's own: the events
//! of every other author in the same stream still land, so one misbehaving member (a fork, junk
//! signatures, a broken chain) cannot stop replication between honest nodes.

use std::collections::HashMap;

use casesync_engine::log::ingest::{RejectReason, Rejection};
use casesync_engine::model::ids::AuthorId;

/// Authors remembered; past it, the one refused longest ago is forgotten.
pub const REFUSED_AUTHORS_MAX: usize = 256;

/// The latest refusal of one author's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedAuthor {
    /// The author.
    pub author: AuthorId,
    /// The seq of the event refused last.
    pub seq: u64,
    /// Why it was refused.
    pub reason: String,
    /// Refusals of this author's events since the node started (a run refused from one event
    /// on counts once).
    pub times: u64,
    /// The peer device that sent it.
    pub peer: AuthorId,
    /// When (ms since the epoch).
    pub last_ms: u64,
}

/// The refused authors, by author.
#[derive(Debug, Default)]
pub struct Refusals {
    by_author: HashMap<AuthorId, RefusedAuthor>,
}

impl Refusals {
    /// Notes the refusals of one ingest from `peer`. Events that do not count (an author not
    /// granted yet, a reader) are not misbehaviour and are not noted here.
    pub fn note(&mut self, peer: &AuthorId, rejected: &[Rejection], now_ms: u64) {
        for rejection in rejected.iter().filter(|r| !matches!(r.reason, RejectReason::NotCounted(_))) {
            // An event too malformed to name its author is the sender's.
            let author = rejection.author.unwrap_or(*peer);
            let entry = self.by_author.entry(author).or_insert_with(|| RefusedAuthor {
                author,
                seq: 0,
                reason: String::new(),
                times: 0,
                peer: *peer,
                last_ms: 0,
            });
            entry.seq = rejection.seq;
            entry.reason = rejection.reason.to_string();
            entry.times += 1;
            entry.peer = *peer;
            entry.last_ms = now_ms;
        }
        while self.by_author.len() > REFUSED_AUTHORS_MAX {
            let Some(oldest) = self.by_author.values().min_by_key(|r| (r.last_ms, r.author)).map(|r| r.author) else {
                break;
            };
            self.by_author.remove(&oldest);
        }
    }

    /// Every author remembered, the latest refusal first.
    pub fn list(&self) -> Vec<RefusedAuthor> {
        let mut out: Vec<RefusedAuthor> = self.by_author.values().cloned().collect();
        out.sort_by_key(|r| (std::cmp::Reverse(r.last_ms), r.author));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casesync_engine::model::membership::Refusal;

    fn rejection(author: u8, seq: u64, reason: RejectReason) -> Rejection {
        Rejection { author: Some(AuthorId([author; 32])), seq, reason }
    }

    #[test]
    fn refusals_are_counted_per_author_bounded_and_newest_first() {
        let mut refusals = Refusals::default();
        let peer = AuthorId([9; 32]);
        let gap = || RejectReason::Gap { expected: 1, got: 3 };
        refusals.note(&peer, &[rejection(1, 3, gap()), rejection(1, 4, gap())], 10);
        refusals.note(&peer, &[rejection(2, 1, RejectReason::BrokenChain)], 20);
        refusals.note(&peer, &[rejection(3, 1, RejectReason::NotCounted(Refusal::NotMember("d-3".into())))], 30);
        let list = refusals.list();
        assert_eq!(list.len(), 2, "events that do not count are not misbehaviour");
        assert_eq!((list[0].author, list[0].times), (AuthorId([2; 32]), 1));
        assert_eq!((list[1].author, list[1].times, list[1].seq), (AuthorId([1; 32]), 2, 4));
        for n in 0..(REFUSED_AUTHORS_MAX as u64 + 10) {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(1_000 + n).to_le_bytes());
            let author = AuthorId(bytes);
            refusals.note(&peer, &[Rejection { author: Some(author), seq: 1, reason: gap() }], 100 + n);
        }
        assert_eq!(refusals.list().len(), REFUSED_AUTHORS_MAX);
        assert!(refusals.list().iter().all(|r| r.last_ms >= 100), "the oldest were forgotten first");
    }
}
