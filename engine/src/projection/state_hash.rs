//! The state hash: blake3 over a canonical encoding of every case's current versions. Two nodes
//! holding the same events have the same hash whatever order the events came in. Pending
//! bookkeeping, arrival order and local timestamps are not part of it.

use crate::operation::{Dot, FieldValue};
use crate::projection::case_state::{CaseState, Record};

/// Feeds case states, in case id order, into one hash.
pub struct StateHasher {
    hasher: blake3::Hasher,
    cases: u64,
}

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher::new()
    }
}

impl StateHasher {
    /// A hasher over nothing yet.
    pub fn new() -> StateHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"casesync-state-v1");
        StateHasher { hasher, cases: 0 }
    }

    /// Adds the next case; callers feed cases in increasing case id order.
    pub fn add(&mut self, state: &CaseState) {
        self.cases += 1;
        self.bytes(b"C");
        self.bytes(state.id.as_bytes());
        self.record(&state.record);
        self.u64(state.entries.len() as u64);
        for (id, record) in &state.entries {
            self.bytes(id.as_bytes());
            self.record(record);
        }
    }

    /// The hash, hex.
    pub fn finish(mut self) -> String {
        self.u64(self.cases);
        self.hasher.finalize().to_hex().to_string()
    }

    fn u64(&mut self, n: u64) {
        self.hasher.update(&n.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.hasher.update(b);
    }

    fn dot(&mut self, dot: &Dot) {
        self.hasher.update(dot.author.as_bytes());
        self.u64(dot.seq);
    }

    fn record(&mut self, record: &Record) {
        self.u64(record.status.current.len() as u64);
        for v in &record.status.current {
            self.dot(&v.dot);
            self.u64(v.hlc);
            self.bytes(v.value.status.as_str().as_bytes());
            self.u64(v.value.seen.len() as u64);
            for (author, seq) in v.value.seen.iter() {
                self.hasher.update(author.as_bytes());
                self.u64(*seq);
            }
        }
        let fields: Vec<_> = record.fields.iter().filter(|(_, r)| !r.current.is_empty()).collect();
        self.u64(fields.len() as u64);
        for (name, register) in fields {
            self.bytes(name.as_bytes());
            self.u64(register.current.len() as u64);
            for v in &register.current {
                self.dot(&v.dot);
                self.u64(v.hlc);
                self.value(&v.value);
            }
        }
    }

    fn value(&mut self, value: &FieldValue) {
        let (tag, bytes): (u8, Vec<u8>) = match value {
            FieldValue::Text(t) => (1, t.as_bytes().to_vec()),
            FieldValue::Integer(i) => (2, i.to_be_bytes().to_vec()),
            FieldValue::Decimal(d) => (3, d.as_bytes().to_vec()),
            FieldValue::Bool(b) => (4, vec![u8::from(*b)]),
            FieldValue::Date(d) => (5, d.as_bytes().to_vec()),
            FieldValue::Bytes(b) => (6, b.clone()),
        };
        self.hasher.update(&[tag]);
        self.bytes(&bytes);
    }
}
