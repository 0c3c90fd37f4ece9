//! The end of a run: every partition healed, every device up, then anti-entropy rounds (every
//! pair of members syncs, in a seeded order, nothing lost) until the members agree, within a
//! bound (liveness); then what must hold (safety): one set of counted events, one version
//! vector once cuts apply, one state hash, every acknowledged event everywhere unless a
//! revocation cut it, in which case nowhere.

use std::collections::BTreeMap;

use casesync_engine::model::ids::{AuthorId, EventId};
use casesync_engine::model::state_hash::StateHasher;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_proto::v1 as pb;

use super::node::Kind;
use super::world::World;

/// Anti-entropy rounds the members get to agree in. In the first every member that can pulls
/// the admin's membership events (directly, or ahead of everything else a peer sends), so from
/// the second on every pair of members admits each other; a member then pulls every author's
/// events from a peer that holds them, in that round, or, when a one-way partition stays
/// between it and that peer, in the next, from a third member that pulled them meanwhile. One
/// more for slack.
pub const ROUNDS_MAX: u64 = 4;
/// Simulated time one pull between two devices takes in the anti-entropy rounds.
const PULL_MS: u64 = 20;

/// The events a store counts: (author, seq) -> id.
type Counted = BTreeMap<(AuthorId, u64), EventId>;

impl World {
    /// Heals everything and runs anti-entropy rounds until the members agree; panics when they
    /// do not within [`ROUNDS_MAX`]. Returns the rounds it took.
    pub fn heal_and_converge(&mut self) -> u64 {
        self.now_ms += 1;
        let dropped = self.net.heal_all();
        self.note(format!("final heal: every link, {dropped} messages in flight dropped"));
        let now_ms = self.now_ms;
        for node in &mut self.nodes {
            if node.down_until.is_some() {
                node.down_until = Some(now_ms);
            }
        }
        self.restart_due();
        let members = self.members();
        let others: Vec<usize> = members.iter().copied().filter(|m| *m != 0).collect();
        if others.len() >= 2 && self.rng.percent(50) {
            // One one-way partition stays between two members other than the admin: what they
            // cannot exchange, the others carry. (Not the admin: a member admits only devices
            // whose grant it holds, so one cut off from the admin, and from every device it
            // knows, stays cut off from the grants of the rest.)
            let (a, b) = (self.rng.index(others.len()), self.rng.index(others.len() - 1));
            let (from, to) = (others[a], others[if b >= a { b + 1 } else { b }]);
            self.net.cut(from, to);
            self.note(format!("n{from} -/-> n{to} stays cut"));
        }
        let started = self.now_ms;
        for round in 1..=ROUNDS_MAX {
            let mut pairs: Vec<(usize, usize)> =
                members.iter().flat_map(|a| members.iter().map(move |b| (*a, *b))).filter(|(a, b)| a != b).collect();
            for at in (1..pairs.len()).rev() {
                let other = self.rng.index(at + 1);
                pairs.swap(at, other);
            }
            for (a, b) in pairs {
                self.now_ms += PULL_MS;
                self.pull_directly(a, b);
            }
            if self.agreed(&members) {
                self.note(format!("agreed after {round} rounds"));
                self.stats.rounds = round;
                self.stats.converge_ms = self.now_ms - started;
                return round;
            }
        }
        let hashes: Vec<String> = members
            .iter()
            .filter(|m| self.nodes[**m].kind != Kind::Relay)
            .map(|m| format!("{}: {}", self.nodes[*m].name, self.nodes[*m].up().state_hash(&self.space).unwrap()))
            .collect();
        let totals: Vec<String> =
            members.iter().map(|m| format!("{}: {} counted", self.nodes[*m].name, self.counted(*m).len())).collect();
        panic!("no agreement after {ROUNDS_MAX} rounds: {hashes:?} {totals:?}");
    }

    /// The members as the admin decided (granted and not revoked), in order.
    fn members(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].member()).collect()
    }

    /// `a` takes from `b` what it lacks, in batches of random sizes, none lost.
    fn pull_directly(&mut self, a: usize, b: usize) {
        if self.net.is_cut(a, b) || self.net.is_cut(b, a) {
            return self.note(format!("n{a} cannot pull from n{b}: a one-way partition"));
        }
        if !self.admitted(a, b) {
            return self.note(format!("n{a} and n{b} do not admit each other"));
        }
        let have = self.nodes[a].up().vector(&self.space);
        let events: Vec<pb::SignedEvent> =
            self.nodes[b].up().events_after(&self.space, &have).map(|r| r.unwrap().2).collect();
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let size = (1 + self.rng.index(64)).min(rest.len());
            let (batch, later) = rest.split_at(size);
            self.ingest(a, b, batch.to_vec(), &format!("n{b}->n{a} sync({} events)", batch.len()));
            rest = later;
        }
    }

    /// The events device `index` counts (what it would send a peer holding nothing).
    fn counted(&self, index: usize) -> Counted {
        let store = self.nodes[index].up();
        store
            .events_after(&self.space, &VersionVector::new())
            .map(|r| {
                let (author, seq, message) = r.unwrap();
                ((author, seq), EventId::of(&message.event))
            })
            .collect()
    }

    /// Whether every member counts the same events and every member with views shows the same
    /// state hash.
    fn agreed(&self, members: &[usize]) -> bool {
        let counted = self.counted(members[0]);
        let hash = self.nodes[0].up().state_hash(&self.space).unwrap();
        members.iter().all(|m| {
            let node = &self.nodes[*m];
            self.counted(*m) == counted
                && (node.kind == Kind::Relay || node.up().state_hash(&self.space).unwrap() == hash)
        })
    }

    /// What must hold once the members agreed.
    pub fn check_safety(&mut self) {
        let space = self.space;
        let members = self.members();
        let admin = self.nodes[0].up();
        let cuts: BTreeMap<AuthorId, u64> =
            self.nodes.iter().filter_map(|n| n.cut.map(|cut| (n.author(), cut))).collect();
        let counted = self.counted(0);
        let hash = admin.state_hash(&space).unwrap();
        let folded = StateHasher::of(&admin.fold_log(&space, |_| true).unwrap().into_sorted_cases());
        assert_eq!(hash, folded, "the admin's views and a fold of its log");
        // One vector, once each revoked author is cut where its revocation says.
        let mut vector = VersionVector::new();
        for (author, seq) in counted.keys() {
            vector.raise(*author, *seq);
        }
        for &m in &members {
            let node = &self.nodes[m];
            let store = node.up();
            assert_eq!(self.counted(m), counted, "{} counts other events", node.name);
            let member_cuts: BTreeMap<AuthorId, u64> = store.membership(&space).cuts().into_iter().collect();
            assert_eq!(member_cuts, cuts, "{}'s cuts and the admin's revocations", node.name);
            let mut capped = store.vector(&space);
            for (author, held) in store.vector(&space).iter() {
                match cuts.get(author) {
                    Some(cut) if held > cut => capped.set(*author, *cut),
                    _ => {}
                }
            }
            assert_eq!(capped, vector, "{}'s version vector, cuts applied", node.name);
            if node.kind != Kind::Relay {
                assert_eq!(store.state_hash(&space).unwrap(), hash, "{}'s state hash", node.name);
                assert_eq!(store.scanned_state_hash(&space).unwrap(), hash, "{}'s views scanned", node.name);
                assert_eq!(store.projections_behind(&space).unwrap(), 0, "{}'s views lag its log", node.name);
            }
        }
        // Every acknowledged event is counted everywhere, unless it lies above its author's cut.
        let mut acknowledged: BTreeMap<(AuthorId, u64), EventId> = BTreeMap::new();
        for node in &self.nodes {
            for (key, id) in &node.acked {
                let earlier = acknowledged.insert(*key, *id);
                assert!(earlier.is_none_or(|e| e == *id), "two events acknowledged at {}:{}", key.0.device_id(), key.1);
            }
        }
        let mut cut_events = 0;
        for ((author, seq), id) in &acknowledged {
            let name = format!("{}:{seq}", author.device_id());
            if cuts.get(author).is_some_and(|cut| seq > cut) {
                cut_events += 1;
                assert!(!counted.contains_key(&(*author, *seq)), "{name} lies above its author's cut but counts");
            } else {
                assert_eq!(counted.get(&(*author, *seq)), Some(id), "acknowledged event {name} is not everywhere");
            }
        }
        // Readers' events land nowhere, members or not.
        for reader in self.reader_authors() {
            for node in &self.nodes {
                assert_eq!(node.up().head(&space, &reader), None, "{} holds a reader's event", node.name);
            }
        }
        self.stats.events = acknowledged.len() as u64;
        self.stats.cut_events = cut_events;
        self.note(format!(
            "safe: {} members agree on {} events ({cut_events} cut), state hash {}",
            members.len(),
            counted.len(),
            &hash[..16]
        ));
    }
}
