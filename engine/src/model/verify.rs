//! Streaming verification of author chains, for operators' tools: every hash link, and either
//! the last signature of each chain (a range check, as ingest does) or every signature.
//!
//! A link hash covers an event's id and its signature, so an intact chain up to one valid
//! signature authenticates every event before it. The verifier holds one small state per author,
//! never the events, so it checks a million-event log or backup in bounded memory.
//!
//! When a chain breaks at seq `n + 1`, the verifier checks the signature of event `n`: if that
//! fails, `n` itself was altered (its bytes or its signature changed, so its link changed) and it
//! is named as the first bad event; otherwise `n + 1` is.

use std::collections::{BTreeMap, HashMap};

use crate::model::error::EventError;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, EventId, SpaceId};
use crate::model::limits::SIGNATURE_BYTES;
use crate::model::signing::VerifyingKey;
use crate::model::vector_clock::{Head, VersionVector};

/// Which signatures to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// The last event of each chain (anchored hash links authenticate the rest).
    Range,
    /// Every event (about 34 us each).
    Every,
}

/// The first problem found in one author's chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainFault {
    /// The record does not decode as an event.
    #[error("author {}, seq {seq}: {source}", author.device_id())]
    Malformed {
        /// The author (from the record's key, or the default id when unknown).
        author: AuthorId,
        /// The seq (from the record's key, 0 when unknown).
        seq: u64,
        /// What is wrong.
        source: EventError,
    },
    /// The event names another space.
    #[error("author {}, seq {seq}: the event belongs to another space", author.device_id())]
    WrongSpace {
        /// The author.
        author: AuthorId,
        /// The seq.
        seq: u64,
    },
    /// The record is stored under another author or seq than its header says.
    #[error("author {}, seq {seq}: the record's header names author {} seq {header_seq}", author.device_id(), header_author.device_id())]
    Misplaced {
        /// The author in the key.
        author: AuthorId,
        /// The seq in the key.
        seq: u64,
        /// The author in the header.
        header_author: AuthorId,
        /// The seq in the header.
        header_seq: u64,
    },
    /// A seq is missing.
    #[error("author {}: expected seq {expected}, found seq {found}", author.device_id())]
    Gap {
        /// The author.
        author: AuthorId,
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// `prev` does not name the previous event's link hash.
    #[error("author {}, seq {seq}: broken chain (prev does not match the previous event)", author.device_id())]
    BrokenChain {
        /// The author.
        author: AuthorId,
        /// The seq whose `prev` is wrong.
        seq: u64,
    },
    /// The signature does not verify.
    #[error("author {}, seq {seq}: bad signature", author.device_id())]
    BadSignature {
        /// The author.
        author: AuthorId,
        /// The seq.
        seq: u64,
    },
    /// The author id is not a valid public key.
    #[error("author {}: not a valid ed25519 key", author.device_id())]
    BadAuthorKey {
        /// The author.
        author: AuthorId,
    },
    /// The chain ends below the seq it must reach (for example a head or a trailer).
    #[error("author {}: the chain ends at seq {found} but should reach seq {expected}", author.device_id())]
    Short {
        /// The author.
        author: AuthorId,
        /// The seq that should be reached.
        expected: u64,
        /// The last seq found.
        found: u64,
    },
    /// The record could not be read (storage damage).
    #[error("author {}, seq {seq}: unreadable ({reason})", author.device_id())]
    Unreadable {
        /// The author.
        author: AuthorId,
        /// The first seq that could not be read.
        seq: u64,
        /// What the storage reported.
        reason: String,
    },
    /// The chain's last event differs from the expected head.
    #[error("author {}, seq {seq}: the event differs from the recorded head", author.device_id())]
    HeadMismatch {
        /// The author.
        author: AuthorId,
        /// The head seq.
        seq: u64,
    },
}

impl ChainFault {
    /// The author whose chain is bad.
    pub fn author(&self) -> AuthorId {
        match self {
            ChainFault::Malformed { author, .. }
            | ChainFault::WrongSpace { author, .. }
            | ChainFault::Misplaced { author, .. }
            | ChainFault::Gap { author, .. }
            | ChainFault::BrokenChain { author, .. }
            | ChainFault::BadSignature { author, .. }
            | ChainFault::BadAuthorKey { author }
            | ChainFault::Short { author, .. }
            | ChainFault::HeadMismatch { author, .. }
            | ChainFault::Unreadable { author, .. } => *author,
        }
    }

    /// The first bad seq (everything from it on is unverified).
    pub fn seq(&self) -> u64 {
        match self {
            ChainFault::Malformed { seq, .. }
            | ChainFault::WrongSpace { seq, .. }
            | ChainFault::Misplaced { seq, .. }
            | ChainFault::BrokenChain { seq, .. }
            | ChainFault::BadSignature { seq, .. }
            | ChainFault::HeadMismatch { seq, .. }
            | ChainFault::Unreadable { seq, .. } => *seq,
            ChainFault::Gap { expected, .. } => *expected,
            ChainFault::Short { found, .. } => *found + 1,
            ChainFault::BadAuthorKey { .. } => 1,
        }
    }

    /// A short machine-readable name of the fault.
    pub fn kind(&self) -> &'static str {
        match self {
            ChainFault::Malformed { .. } => "malformed",
            ChainFault::WrongSpace { .. } => "wrong_space",
            ChainFault::Misplaced { .. } => "misplaced",
            ChainFault::Gap { .. } => "gap",
            ChainFault::BrokenChain { .. } => "broken_chain",
            ChainFault::BadSignature { .. } => "bad_signature",
            ChainFault::BadAuthorKey { .. } => "bad_author_key",
            ChainFault::Short { .. } => "short",
            ChainFault::HeadMismatch { .. } => "head_mismatch",
            ChainFault::Unreadable { .. } => "unreadable",
        }
    }
}

/// The newest event of a chain whose signature has not been checked yet.
#[derive(Clone, Copy)]
struct Unchecked {
    seq: u64,
    id: EventId,
    signature: [u8; SIGNATURE_BYTES],
}

struct Chain {
    key: Option<VerifyingKey>,
    seq: u64,
    link: EventId,
    /// Set when the newest event is not yet authenticated (its own signature unchecked).
    unchecked: Option<Unchecked>,
    events: u64,
}

/// What a finished verification found.
#[derive(Debug, Default)]
pub struct ChainReport {
    /// Per author: the last seq that verified and its link hash (anchors included).
    pub verified: BTreeMap<AuthorId, Head>,
    /// Events checked (anchors not counted).
    pub events: u64,
    /// The first fault of each bad chain, in author order.
    pub faults: Vec<ChainFault>,
}

impl ChainReport {
    /// The verified heads as a version vector.
    pub fn vector(&self) -> VersionVector {
        self.verified.iter().map(|(author, head)| (*author, head.seq)).collect()
    }
}

/// Checks events one at a time, per author in seq order (authors may interleave).
pub struct ChainVerifier {
    space: SpaceId,
    mode: SignatureCheck,
    chains: HashMap<AuthorId, Chain>,
    faults: BTreeMap<AuthorId, ChainFault>,
    events: u64,
}

impl ChainVerifier {
    /// A verifier for chains starting at seq 1.
    pub fn new(space: SpaceId, mode: SignatureCheck) -> ChainVerifier {
        ChainVerifier { space, mode, chains: HashMap::new(), faults: BTreeMap::new(), events: 0 }
    }

    /// A verifier whose chains continue trusted heads (for example a store's heads): an author's
    /// first event must be `head.seq + 1` with `prev == head.link`.
    pub fn with_anchors(
        space: SpaceId,
        mode: SignatureCheck,
        anchors: impl IntoIterator<Item = (AuthorId, Head)>,
    ) -> ChainVerifier {
        let mut verifier = ChainVerifier::new(space, mode);
        for (author, head) in anchors {
            verifier
                .chains
                .insert(author, Chain { key: None, seq: head.seq, link: head.link, unchecked: None, events: 0 });
        }
        verifier
    }

    /// Whether an author's chain already failed (later events of it are ignored).
    pub fn has_failed(&self, author: &AuthorId) -> bool {
        self.faults.contains_key(author)
    }

    /// The seq an author's chain has reached (anchor included), 0 when none.
    pub fn seq(&self, author: &AuthorId) -> u64 {
        self.chains.get(author).map_or(0, |c| c.seq)
    }

    /// Checks one stored record (signature then event bytes) found under `key` = (author, seq).
    /// Returns the decoded event when it continues its chain.
    pub fn push_stored(&mut self, key: (AuthorId, u64), stored: &[u8]) -> Result<Option<SignedEvent>, ChainFault> {
        if self.has_failed(&key.0) {
            return Ok(None);
        }
        match SignedEvent::from_stored(stored) {
            Ok(event) => {
                let h = &event.header;
                if h.author != key.0 || h.seq != key.1 {
                    let fault =
                        ChainFault::Misplaced { author: key.0, seq: key.1, header_author: h.author, header_seq: h.seq };
                    return Err(self.fail(key.0, fault));
                }
                self.push(&event).map(|()| Some(event))
            }
            Err(source) => Err(self.fail(key.0, ChainFault::Malformed { author: key.0, seq: key.1, source })),
        }
    }

    /// Checks one decoded event. Events of a failed chain are ignored (`Ok`).
    pub fn push(&mut self, event: &SignedEvent) -> Result<(), ChainFault> {
        let h = &event.header;
        let author = h.author;
        if self.has_failed(&author) {
            return Ok(());
        }
        if h.space != self.space {
            return Err(self.fail(author, ChainFault::WrongSpace { author, seq: h.seq }));
        }
        let mode = self.mode;
        let chain = self.chains.entry(author).or_insert_with(|| Chain {
            key: None,
            seq: 0,
            link: EventId::ZERO,
            unchecked: None,
            events: 0,
        });
        if chain.key.is_none() {
            match VerifyingKey::new(&author) {
                Ok(key) => chain.key = Some(key),
                Err(_) => return Err(self.fail(author, ChainFault::BadAuthorKey { author })),
            }
        }
        let Some(key) = chain.key.clone() else {
            return Err(self.fail(author, ChainFault::BadAuthorKey { author }));
        };
        if h.seq != chain.seq + 1 {
            let fault = ChainFault::Gap { author, expected: chain.seq + 1, found: h.seq };
            return Err(self.fail(author, fault));
        }
        if h.prev != chain.link {
            // Who is to blame: the previous event, if it was altered, else this one.
            let blame = match chain.unchecked {
                Some(previous) if key.verify(&previous.id.0, &previous.signature).is_err() => {
                    ChainFault::BadSignature { author, seq: previous.seq }
                }
                _ => ChainFault::BrokenChain { author, seq: h.seq },
            };
            return Err(self.fail(author, blame));
        }
        if mode == SignatureCheck::Every && key.verify(&event.id.0, &event.signature).is_err() {
            return Err(self.fail(author, ChainFault::BadSignature { author, seq: h.seq }));
        }
        chain.seq = h.seq;
        chain.link = event.link;
        chain.events += 1;
        chain.unchecked = match mode {
            SignatureCheck::Range => Some(Unchecked { seq: h.seq, id: event.id, signature: event.signature }),
            SignatureCheck::Every => None,
        };
        self.events += 1;
        Ok(())
    }

    /// Records an externally found fault for an author (for example a read error at a seq), so
    /// the report lists it and later events of the author are ignored.
    pub fn record_fault(&mut self, fault: ChainFault) {
        let author = fault.author();
        self.fail(author, fault);
    }

    /// Checks that every chain reaches `expected` (and, when given, ends at that link).
    pub fn expect_heads(&mut self, expected: impl IntoIterator<Item = (AuthorId, Head)>) {
        for (author, head) in expected {
            if self.has_failed(&author) {
                continue;
            }
            let (seq, link) = self.chains.get(&author).map_or((0, EventId::ZERO), |c| (c.seq, c.link));
            if seq < head.seq {
                self.fail(author, ChainFault::Short { author, expected: head.seq, found: seq });
            } else if seq == head.seq && link != head.link {
                self.fail(author, ChainFault::HeadMismatch { author, seq });
            }
        }
    }

    /// Checks the last signature of every chain (range mode) and returns the report.
    pub fn finish(mut self) -> ChainReport {
        let mut report = ChainReport { events: self.events, ..ChainReport::default() };
        let mut late = Vec::new();
        for (author, chain) in &self.chains {
            if self.faults.contains_key(author) {
                continue;
            }
            if let (Some(unchecked), Some(key)) = (chain.unchecked, chain.key.as_ref()) {
                if key.verify(&unchecked.id.0, &unchecked.signature).is_err() {
                    late.push(ChainFault::BadSignature { author: *author, seq: unchecked.seq });
                    continue;
                }
            }
            report.verified.insert(*author, Head { seq: chain.seq, link: chain.link });
        }
        for fault in late {
            self.faults.insert(fault.author(), fault);
        }
        report.faults = self.faults.into_values().collect();
        report
    }

    fn fail(&mut self, author: AuthorId, fault: ChainFault) -> ChainFault {
        self.faults.entry(author).or_insert_with(|| fault.clone());
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::signing::DeviceKey;
    use crate::testkit::chain;

    const SPACE: SpaceId = SpaceId([4; 16]);

    fn run(stored: &[Vec<u8>], author: AuthorId, mode: SignatureCheck) -> ChainReport {
        let mut verifier = ChainVerifier::new(SPACE, mode);
        for (i, value) in stored.iter().enumerate() {
            let _ = verifier.push_stored((author, i as u64 + 1), value);
        }
        verifier.finish()
    }

    #[test]
    fn good_chain_verifies_in_both_modes() {
        let key = DeviceKey::from_secret([1; 32]);
        let stored: Vec<_> = chain(&key, SPACE, 5).iter().map(SignedEvent::to_stored).collect();
        for mode in [SignatureCheck::Range, SignatureCheck::Every] {
            let report = run(&stored, key.author(), mode);
            assert!(report.faults.is_empty(), "{:?}", report.faults);
            assert_eq!(report.vector().get(&key.author()), 5);
        }
    }

    #[test]
    fn any_flipped_byte_names_the_altered_event() {
        let key = DeviceKey::from_secret([1; 32]);
        let stored: Vec<_> = chain(&key, SPACE, 4).iter().map(SignedEvent::to_stored).collect();
        for target in 0..stored.len() {
            for byte in 0..stored[target].len() {
                let mut damaged = stored.clone();
                damaged[target][byte] ^= 0x10;
                for mode in [SignatureCheck::Range, SignatureCheck::Every] {
                    let report = run(&damaged, key.author(), mode);
                    assert_eq!(report.faults.len(), 1, "event {target} byte {byte}");
                    assert_eq!(report.faults[0].seq(), target as u64 + 1, "event {target} byte {byte} {mode:?}");
                }
            }
        }
    }

    #[test]
    fn anchors_continue_a_stored_chain() {
        let key = DeviceKey::from_secret([1; 32]);
        let events = chain(&key, SPACE, 6);
        let anchor = Head { seq: 3, link: events[2].link };
        let mut verifier = ChainVerifier::with_anchors(SPACE, SignatureCheck::Range, [(key.author(), anchor)]);
        for event in &events[3..] {
            verifier.push(event).unwrap();
        }
        let report = verifier.finish();
        assert!(report.faults.is_empty());
        assert_eq!(report.events, 3);
        let mut unanchored = ChainVerifier::new(SPACE, SignatureCheck::Range);
        assert!(matches!(unanchored.push(&events[3]), Err(ChainFault::Gap { expected: 1, found: 4, .. })));
    }
}
