//! What the tests of every crate share: seeded random choices, signed event chains, stores in
//! temporary directories and directory copies. Compiled for the engine's own tests and, with the
//! `testkit` feature, for the tests of the crates above it (their dev-dependencies enable it);
//! never part of a build without that feature.

// Tests may unwrap: a helper that cannot do its job fails the test that called it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use casesync_proto::v1 as pb;

use crate::model::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::model::ids::{EventId, SpaceId};
use crate::model::signing::DeviceKey;
use crate::store::{Store, StoreOptions};

/// A small deterministic random generator (SplitMix64) for tests: the same seed gives the same
/// choices on every machine, so a failure replays from the seed it prints.
#[derive(Clone, Debug)]
pub struct SeededRng {
    seed: u64,
    state: u64,
}

impl SeededRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { seed, state: seed }
    }

    /// A generator seeded from the environment variable `var` (decimal), else from `default`.
    /// Prints the seed and how to replay it: the test harness shows the line when the test fails.
    pub fn from_env(var: &str, default: u64) -> SeededRng {
        let seed = std::env::var(var).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default);
        println!("random seed {seed} (set {var}={seed} to replay)");
        SeededRng::new(seed)
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` at least 1).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "a random number below 0 was asked for");
        // Multiply-shift: no modulo bias worth speaking of for test-sized bounds.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// An index into a collection of `len` items (`len` at least 1).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The device key made of 32 bytes `n`: device `n` of a test.
pub fn device(n: u8) -> DeviceKey {
    DeviceKey::from_secret([n; 32])
}

/// Opens (or creates) a store with projections in `dir`.
pub fn open_store(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::compatible()).unwrap()
}

/// A chain of `count` signed events by `key` in `space`, seq 1.., each with the sealed (opaque)
/// body `body {seq}`.
pub fn chain(key: &DeviceKey, space: SpaceId, count: u64) -> Vec<SignedEvent> {
    chain_with_bodies(key, space, count, |seq| Bytes::from(format!("body {seq}")))
}

/// A chain of `count` signed events by `key` in `space`, seq 1.., with sealed bodies made by
/// `body(seq)`.
pub fn chain_with_bodies(
    key: &DeviceKey,
    space: SpaceId,
    count: u64,
    body: impl FnMut(u64) -> Bytes,
) -> Vec<SignedEvent> {
    chain_signed(key, space, count, body, |_| false)
}

/// A chain like [`chain`] whose events at the seqs `junk` picks carry a junk signature, the
/// chain still linking through them: what a misbehaving author can sign (a later signature that
/// verifies authenticates them).
pub fn chain_with_junk_signatures(
    key: &DeviceKey,
    space: SpaceId,
    count: u64,
    junk: impl Fn(u64) -> bool,
) -> Vec<SignedEvent> {
    chain_signed(key, space, count, |seq| Bytes::from(format!("body {seq}")), junk)
}

fn chain_signed(
    key: &DeviceKey,
    space: SpaceId,
    count: u64,
    mut body: impl FnMut(u64) -> Bytes,
    junk: impl Fn(u64) -> bool,
) -> Vec<SignedEvent> {
    let mut prev = EventId::ZERO;
    (1..=count)
        .map(|seq| {
            let header =
                EventHeader { space, author: key.author(), seq, prev, hlc: seq << 16, encoding: BodyEncoding::Sealed };
            let mut event = SignedEvent::build(key, &header, body(seq)).unwrap();
            if junk(seq) {
                event = SignedEvent::decode(event.bytes.clone(), &[0x5a; 64]).unwrap();
            }
            prev = event.link;
            event
        })
        .collect()
}

/// Events as wire messages.
pub fn wire(events: &[SignedEvent]) -> Vec<pb::SignedEvent> {
    events.iter().map(SignedEvent::to_wire).collect()
}

/// A random interleaving of `events` that keeps each author's events in their order: the orders
/// in which syncs with different peers can deliver them.
pub fn interleave_authors(events: &[SignedEvent], rng: &mut SeededRng) -> Vec<SignedEvent> {
    let mut chains: BTreeMap<_, Vec<SignedEvent>> = BTreeMap::new();
    for event in events {
        chains.entry(event.header.author).or_default().push(event.clone());
    }
    // Each chain reversed, so its next event is popped from the end.
    let mut chains: Vec<Vec<SignedEvent>> = chains.into_values().map(|c| c.into_iter().rev().collect()).collect();
    let mut out = Vec::with_capacity(events.len());
    while !chains.is_empty() {
        let pick = rng.index(chains.len());
        out.push(chains[pick].pop().unwrap());
        if chains[pick].is_empty() {
            chains.swap_remove(pick);
        }
    }
    out
}

/// Copies the directory tree `from` into `to` (created if missing), leaving out RocksDB's `LOCK`
/// files: a copy of a data dir taken while no store has it open.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The disk under a store, as a test of a crate above the engine sees it: full from a moment on,
/// then with room again. Every storage operation of a database opened in `db_dir` while this
/// lives goes through it, the writes an open makes included.
#[derive(Debug)]
pub struct Disk {
    db_dir: std::path::PathBuf,
    plan: std::sync::Arc<crate::storage::fault_plan::FaultPlan>,
}

impl Disk {
    /// The disk under the database in `db_dir` (attach before the database is opened).
    pub fn under(db_dir: &Path) -> Disk {
        let plan = crate::storage::fault_plan::FaultPlan::counting();
        crate::storage::fault_plan::FaultPlan::attach(db_dir, plan.clone());
        Disk { db_dir: db_dir.to_path_buf(), plan }
    }

    /// Every storage operation from the next one on fails as on a full disk.
    pub fn fill(&self) {
        self.plan.fail_next(crate::storage::fault_plan::FaultMode::FromThenOn, std::io::ErrorKind::StorageFull);
    }

    /// The disk has room again.
    pub fn make_room(&self) {
        self.plan.lift();
    }

    /// Operations that failed so far.
    pub fn failed(&self) -> u64 {
        self.plan.injected()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        crate::storage::fault_plan::FaultPlan::detach(&self.db_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_choices_and_bounds_hold() {
        let (mut a, mut b) = (SeededRng::new(7), SeededRng::new(7));
        let drawn: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        assert_eq!(drawn, (0..100).map(|_| b.below(10)).collect::<Vec<_>>());
        assert!(drawn.iter().all(|n| *n < 10));
        assert!((0..10).all(|n| drawn.contains(&n)), "every value comes up: {drawn:?}");
        assert_ne!(SeededRng::new(8).next_u64(), SeededRng::new(7).next_u64());
    }

    #[test]
    fn an_interleaving_keeps_every_event_once_and_each_author_in_order() {
        let space = SpaceId([3; 16]);
        let events: Vec<SignedEvent> = (1..=3).flat_map(|n| chain(&device(n), space, 4)).collect();
        let mut rng = SeededRng::new(11);
        let mixed = interleave_authors(&events, &mut rng);
        assert_eq!(mixed.len(), events.len());
        for n in 1..=3 {
            let seqs: Vec<u64> =
                mixed.iter().filter(|e| e.header.author == device(n).author()).map(|e| e.header.seq).collect();
            assert_eq!(seqs, vec![1, 2, 3, 4]);
        }
        assert_ne!(mixed, events, "seed 11 mixes the authors");
    }
}
