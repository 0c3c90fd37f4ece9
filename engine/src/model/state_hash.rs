//! The state hash: blake3 over every case's id and **case digest** (SHA-256 over a canonical
//! encoding of the case's current versions), in case id order. Two nodes holding the same events
//! have the same hash whatever order the events came in. Pending bookkeeping, arrival order and
//! local timestamps are not part of it.
//!
//! Why SHA-256 for the digests: a case (~2 KB) is hashed on its own, and blake3's speed comes from
//! hashing many 1 KiB chunks of one input at once (SIMD lanes), which one short message cannot
//! use: it runs one compression after another. SHA-256 has instructions of its own on current x86
//! (SHA extensions) and ARM processors: 100k digests of 1.75 KB took 92 ms against blake3's
//! 242 ms on the benchmark VM, where digests were a tenth of a rebuild's work (BENCHMARKS.md).
//! Event ids, chains and everything else stay blake3.
//!
//! A case digest depends on that case alone, so a bulk fold over empty projections (a rebuild, an
//! import into a new store, a node's first catch-up) digests each case as it writes it out and
//! needs no scan of what it wrote to know the hash (`projection::WrittenDigests`).

use sha2::Digest;

use crate::model::ids::{CaseId, EntryId};
use crate::model::merge::{CaseState, Record, Register, StatusValue};
use crate::model::operation::{Dot, FieldValue};
use crate::model::stream_hash::StreamHasher;

/// SHA-256 over one case's canonical encoding ([`CaseDigester`]).
pub type CaseDigest = [u8; 32];

/// Feeds cases, in case id order, into one hash (gathered into large slices: see
/// [`StreamHasher`]).
pub struct StateHasher {
    hasher: StreamHasher,
    cases: u64,
    digester: CaseDigester,
}

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher::new()
    }
}

impl StateHasher {
    /// A hasher over nothing yet.
    pub fn new() -> StateHasher {
        let mut hasher = StreamHasher::new();
        hasher.update(b"casesync-state-v3");
        StateHasher { hasher, cases: 0, digester: CaseDigester::default() }
    }

    /// The state hash of these case states, given in increasing case id order.
    pub fn of<'a>(states: impl IntoIterator<Item = &'a CaseState>) -> String {
        let mut hasher = StateHasher::new();
        states.into_iter().for_each(|state| hasher.add(state));
        hasher.finish()
    }

    /// Adds the next case; callers feed cases in increasing case id order.
    pub fn add(&mut self, state: &CaseState) {
        let digest = self.digester.digest(state);
        self.add_digest(&state.id, &digest);
    }

    /// Adds the next case by its digest (what [`StateHasher::add`] adds for its state).
    pub fn add_digest(&mut self, case: &CaseId, digest: &CaseDigest) {
        self.cases += 1;
        self.hasher.update(case.as_bytes());
        self.hasher.update(digest);
    }

    /// The hash, hex.
    pub fn finish(mut self) -> String {
        self.hasher.update(&self.cases.to_be_bytes());
        self.hasher.finalize().to_hex().to_string()
    }
}

/// Computes case digests, reusing one buffer for the encoding.
#[derive(Default)]
pub struct CaseDigester {
    buffer: Vec<u8>,
}

impl CaseDigester {
    /// The digest of one case state: SHA-256 over its id and current versions (status, shown
    /// fields, entries), each length-prefixed.
    pub fn digest(&mut self, state: &CaseState) -> CaseDigest {
        self.buffer.clear();
        let mut encoder = CaseEncoder { out: &mut self.buffer };
        encoder.bytes(b"casesync-case-v2");
        encoder.bytes(state.id.as_bytes());
        encoder.record(&state.record);
        encoder.u64(state.entries.len() as u64);
        for (id, record) in &state.entries {
            encoder.bytes(id.as_bytes());
            encoder.record(record);
        }
        sha2::Sha256::digest(&self.buffer).into()
    }
}

/// Most bytes of encoding a [`PartDigester`] holds for one case: past it, it only counts the
/// case's shown fields and entries, and the case is read a second time into a digester that
/// hashes as it goes ([`PartDigester::streaming`]). Cases of ordinary size are read once.
pub const PART_DIGEST_BUFFER_MAX: usize = if cfg!(test) { 2048 } else { 4 << 20 };

/// A case digest computed part by part, as a scan meets the stored parts (status, fields by
/// name, entries by id): the same digest as [`CaseDigester::digest`] of the assembled state,
/// without assembling it. The encoding puts the count of shown fields (and of entries) before
/// them, so a case's encoding is held until its last part, up to [`PART_DIGEST_BUFFER_MAX`]; a
/// larger case (a member filled one with half a million fields) is counted, then read again with
/// the counts known and hashed as its parts stream by.
pub struct PartDigester {
    id: CaseId,
    status: Vec<u8>,
    fields: Vec<u8>,
    shown: u64,
    entries: Vec<u8>,
    entry_count: u64,
    mode: Mode,
}

enum Mode {
    /// Holding the encoding (within the bound).
    Buffering,
    /// Past the bound: counting only.
    Counting,
    /// Counts known: hashing each part as it comes; `stage` is how far the encoding got.
    Streaming { sha: sha2::Sha256, stage: Stage },
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Status,
    Fields,
    Entries,
}

impl PartDigester {
    /// A digest of case `id`, no part met yet.
    pub fn new(id: CaseId) -> PartDigester {
        PartDigester {
            id,
            status: Vec::new(),
            fields: Vec::new(),
            shown: 0,
            entries: Vec::new(),
            entry_count: 0,
            mode: Mode::Buffering,
        }
    }

    /// A digest of case `id` whose shown fields and entries a first pass counted
    /// ([`PartDigester::counts`]): each part is hashed as it comes, nothing is held.
    pub fn streaming(id: CaseId, (shown, entry_count): (u64, u64)) -> PartDigester {
        let mut sha = sha2::Sha256::new();
        sha.update(head(&id));
        PartDigester {
            shown,
            entry_count,
            mode: Mode::Streaming { sha, stage: Stage::Status },
            ..PartDigester::new(id)
        }
    }

    /// Starts the digest of another case, keeping the buffers.
    pub fn restart(&mut self, id: CaseId) {
        self.id = id;
        self.status.clear();
        self.fields.clear();
        self.shown = 0;
        self.entries.clear();
        self.entry_count = 0;
        self.mode = Mode::Buffering;
    }

    /// The case these parts are of.
    pub fn case(&self) -> CaseId {
        self.id
    }

    /// The shown fields and entries met (what [`PartDigester::streaming`] needs).
    pub fn counts(&self) -> (u64, u64) {
        (self.shown, self.entry_count)
    }

    /// The case's status register.
    pub fn status(&mut self, status: &Register<StatusValue>) {
        self.status.clear();
        CaseEncoder { out: &mut self.status }.status(status);
    }

    /// The next field register, in name order.
    pub fn field(&mut self, name: &str, register: &Register<FieldValue>) {
        if register.current.is_empty() {
            return;
        }
        match self.mode {
            Mode::Buffering => {
                self.shown += 1;
                CaseEncoder { out: &mut self.fields }.field(name, register);
                self.bound();
            }
            Mode::Counting => self.shown += 1,
            Mode::Streaming { .. } => {
                self.advance(Stage::Fields);
                self.fields.clear();
                CaseEncoder { out: &mut self.fields }.field(name, register);
                self.hash_scratch(false);
            }
        }
    }

    /// The next entry, in entry id order.
    pub fn entry(&mut self, id: &EntryId, record: &Record) {
        let encode = |out: &mut Vec<u8>| {
            let mut encoder = CaseEncoder { out };
            encoder.bytes(id.as_bytes());
            encoder.record(record);
        };
        match self.mode {
            Mode::Buffering => {
                self.entry_count += 1;
                encode(&mut self.entries);
                self.bound();
            }
            Mode::Counting => self.entry_count += 1,
            Mode::Streaming { .. } => {
                self.advance(Stage::Entries);
                self.entries.clear();
                encode(&mut self.entries);
                self.hash_scratch(true);
            }
        }
    }

    /// The digest of the parts met since the start; `None` when the case was past the bound
    /// (read it again into [`PartDigester::streaming`] with [`PartDigester::counts`]).
    pub fn finish(&mut self) -> Option<CaseDigest> {
        match self.mode {
            Mode::Buffering => {
                let mut sha = sha2::Sha256::new();
                sha.update(head(&self.id));
                sha.update(self.status_bytes());
                sha.update(self.shown.to_be_bytes());
                sha.update(&self.fields);
                sha.update(self.entry_count.to_be_bytes());
                sha.update(&self.entries);
                Some(sha.finalize().into())
            }
            Mode::Counting => None,
            Mode::Streaming { .. } => {
                self.advance(Stage::Entries);
                match std::mem::replace(&mut self.mode, Mode::Counting) {
                    Mode::Streaming { sha, .. } => Some(sha.finalize().into()),
                    _ => None,
                }
            }
        }
    }

    /// The status encoding, or an empty register's when the case has no status part.
    fn status_bytes(&self) -> &[u8] {
        if self.status.is_empty() {
            &NO_STATUS_VERSIONS
        } else {
            &self.status
        }
    }

    /// Past the bound, the encoding held so far is let go and the rest only counted.
    fn bound(&mut self) {
        if self.fields.len() + self.entries.len() > PART_DIGEST_BUFFER_MAX {
            self.mode = Mode::Counting;
            self.fields = Vec::new();
            self.entries = Vec::new();
        }
    }

    /// Streaming: hashes what comes before `to` that is not hashed yet (the status and the
    /// count of shown fields before the first field; the count of entries before the first).
    fn advance(&mut self, to: Stage) {
        let Mode::Streaming { sha, stage } = &mut self.mode else {
            return;
        };
        if *stage == Stage::Status && to > Stage::Status {
            sha.update(if self.status.is_empty() { &NO_STATUS_VERSIONS[..] } else { &self.status[..] });
            sha.update(self.shown.to_be_bytes());
            *stage = Stage::Fields;
        }
        if *stage == Stage::Fields && to > Stage::Fields {
            sha.update(self.entry_count.to_be_bytes());
            *stage = Stage::Entries;
        }
    }

    /// Streaming: hashes the one part just encoded (in `entries` if `entry`, else `fields`).
    fn hash_scratch(&mut self, entry: bool) {
        if let Mode::Streaming { sha, .. } = &mut self.mode {
            sha.update(if entry { &self.entries } else { &self.fields });
        }
    }
}

/// The encoding of a case without a status part: a status register of no versions.
const NO_STATUS_VERSIONS: [u8; 8] = [0; 8];

/// The encoding every case digest starts with.
fn head(id: &CaseId) -> Vec<u8> {
    let mut head = Vec::with_capacity(64);
    let mut encoder = CaseEncoder { out: &mut head };
    encoder.bytes(b"casesync-case-v2");
    encoder.bytes(id.as_bytes());
    head
}

/// The canonical encoding of a case, written into a buffer.
struct CaseEncoder<'a> {
    out: &'a mut Vec<u8>,
}

impl CaseEncoder<'_> {
    fn update(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn u64(&mut self, n: u64) {
        self.update(&n.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.update(b);
    }

    fn dot(&mut self, dot: &Dot) {
        self.update(dot.author.as_bytes());
        self.u64(dot.seq);
    }

    fn record(&mut self, record: &Record) {
        self.status(&record.status);
        let shown = || record.fields.iter().filter(|(_, register)| !register.current.is_empty());
        self.u64(shown().count() as u64);
        for (name, register) in shown() {
            self.field(name, register);
        }
    }

    fn status(&mut self, status: &Register<StatusValue>) {
        self.u64(status.current.len() as u64);
        for v in &status.current {
            self.dot(&v.dot);
            self.u64(v.hlc);
            self.bytes(v.value.status.as_str().as_bytes());
            self.u64(v.value.seen.len() as u64);
            for (author, seq) in v.value.seen.iter() {
                self.update(author.as_bytes());
                self.u64(*seq);
            }
        }
    }

    fn field(&mut self, name: &str, register: &Register<FieldValue>) {
        self.bytes(name.as_bytes());
        self.u64(register.current.len() as u64);
        for v in &register.current {
            self.dot(&v.dot);
            self.u64(v.hlc);
            self.value(&v.value);
        }
    }

    fn value(&mut self, value: &FieldValue) {
        let integer;
        let (tag, bytes): (u8, &[u8]) = match value {
            FieldValue::Text(t) => (1, t.as_bytes()),
            FieldValue::Integer(i) => {
                integer = i.to_be_bytes();
                (2, &integer)
            }
            FieldValue::Decimal(d) => (3, d.as_bytes()),
            FieldValue::Bool(b) => (4, if *b { &[1] } else { &[0] }),
            FieldValue::Date(d) => (5, d.as_bytes()),
            FieldValue::Bytes(b) => (6, b),
        };
        self.update(&[tag]);
        self.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{AuthorId, CaseId};
    use crate::model::operation::{FieldWrite, Operation};

    /// Cases with every kind of value, enough that the buffer of ids and digests is hashed
    /// several times.
    fn cases() -> Vec<CaseState> {
        (0..4000u32)
            .map(|n| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                let case = CaseId(id);
                let mut state = CaseState::new(case);
                let values = [
                    FieldValue::Text("x".repeat(200 + n as usize % 50)),
                    FieldValue::Integer(-(n as i64)),
                    FieldValue::Decimal("12.50".into()),
                    FieldValue::Bool(n % 2 == 0),
                    FieldValue::Date("2026-12-01".into()),
                    FieldValue::Bytes(vec![n as u8; 3]),
                ];
                let fields = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| FieldWrite {
                        name: format!("f{i}").into(),
                        value,
                        supersedes: Default::default(),
                    })
                    .collect();
                let dot = Dot { author: AuthorId([7; 32]), seq: u64::from(n) + 1 };
                state.apply(Operation::CreateCase { case, fields }, dot, 1000 + u64::from(n), &|_| false);
                state
            })
            .collect()
    }

    #[test]
    fn the_canonical_encoding_is_pinned_whatever_the_buffering() {
        let cases = cases();
        // The ids and digests cross the buffer a few times (4000 cases of 48 bytes).
        // This value pins the encoding: a change here changes every node's state hash.
        assert_eq!(StateHasher::of(&cases), "cdf39ea4e3f63c7653628b7f99f26ab7206af70801c0c70eb154b374a71afbae");
    }

    #[test]
    fn a_case_adds_its_digest_and_nothing_else() {
        let cases = cases();
        let mut digester = CaseDigester::default();
        let mut by_digest = StateHasher::new();
        for state in &cases {
            by_digest.add_digest(&state.id, &digester.digest(state));
        }
        assert_eq!(by_digest.finish(), StateHasher::of(&cases));
        // A digest is the case's alone: the same whatever was digested before it.
        assert_eq!(CaseDigester::default().digest(&cases[7]), digester.digest(&cases[7]));
        assert_ne!(digester.digest(&cases[7]), digester.digest(&cases[8]));
    }

    #[test]
    fn a_digest_fed_part_by_part_equals_the_digest_of_the_assembled_case() {
        let mut digester = CaseDigester::default();
        for state in cases().iter().chain([&CaseState::new(CaseId([42; 16]))]) {
            let mut parts = PartDigester::new(state.id);
            if !state.record.status.current.is_empty() {
                parts.status(&state.record.status);
            }
            for (name, register) in state.record.fields.iter() {
                parts.field(name, register);
            }
            for (id, record) in &state.entries {
                parts.entry(id, record);
            }
            let whole = digester.digest(state);
            match parts.finish() {
                Some(digest) => assert_eq!(digest, whole, "case {:?}", state.id),
                None => {
                    // Past the bound: counted, then streamed with the counts.
                    let mut streamed = PartDigester::streaming(state.id, parts.counts());
                    if !state.record.status.current.is_empty() {
                        streamed.status(&state.record.status);
                    }
                    for (name, register) in state.record.fields.iter() {
                        streamed.field(name, register);
                    }
                    for (id, record) in &state.entries {
                        streamed.entry(id, record);
                    }
                    assert_eq!(streamed.finish(), Some(whole), "streamed case {:?}", state.id);
                }
            }
        }
    }

    #[test]
    fn a_case_past_the_buffer_bound_is_counted_then_streamed_to_the_same_digest() {
        use crate::model::merge::Version;
        use crate::model::operation::Dot;
        let mut state = CaseState::new(CaseId([7; 16]));
        let dot = Dot { author: AuthorId([1; 32]), seq: 1 };
        for n in 0..400u32 {
            let register = state.record.fields.entry_or_default(format!("field-{n:04}").into());
            register.current.push(Version { dot, hlc: 5, value: FieldValue::Text(format!("{n}")) });
        }
        let whole = CaseDigester::default().digest(&state);
        let mut parts = PartDigester::new(state.id);
        for (name, register) in state.record.fields.iter() {
            parts.field(name, register);
        }
        assert_eq!(parts.finish(), None, "400 fields are past the unit tests' 2 KiB bound");
        assert_eq!(parts.counts(), (400, 0));
        let mut streamed = PartDigester::streaming(state.id, parts.counts());
        for (name, register) in state.record.fields.iter() {
            streamed.field(name, register);
        }
        assert_eq!(streamed.finish(), Some(whole));
    }
}
