//! The simulated practice: its devices, the network between them, the simulated clock, the
//! seeded generator every choice comes from, and the trace every step adds its description and
//! outcome to. The steps a run is made of: commands, membership changes, partitions, heals,
//! crashes and restarts (the traffic itself is in `exchange.rs`).

use std::collections::BTreeMap;

use bytes::Bytes;
use casesync_engine::codec::wire::encode_operation;
use casesync_engine::error::AppendError;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{AuthorId, CaseId, EventId, SpaceId};
use casesync_engine::model::membership::NewGrant;
use casesync_engine::model::operation::{FieldValue, Operation};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::testkit::SeededRng;
use casesync_proto::v1 as pb;

use super::network::Network;
use super::node::{Kind, SimNode};
use crate::history::command_in;

/// Simulated time at the start of every run: 2026-01-01 00:00 UTC, in ms.
pub const START_MS: u64 = 1_767_225_600_000;
/// Each device's wall clock is off the simulated time by up to this much, either way.
const SKEW_MAX_MS: u64 = 3_000;

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub nodes: usize,
    pub steps: u64,
    /// Distinct events some store acknowledged.
    pub events: u64,
    /// Of those, events above a revocation's cut: acknowledged by their author (and maybe
    /// others) but counted nowhere.
    pub cut_events: u64,
    pub crashes: u64,
    /// Received batches ingested in a bulk catch-up.
    pub bulk: u64,
    pub partitions: u64,
    pub grants: u64,
    pub revocations: u64,
    /// Events a reader signed (a modified client) and sent: refused by whoever received them.
    pub forged: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Anti-entropy rounds after the final heal until every member agreed.
    pub rounds: u64,
    /// Simulated time from the final heal until every member agreed.
    pub converge_ms: u64,
}

pub struct World {
    pub rng: SeededRng,
    /// Simulated time (ms); only the simulation moves it.
    pub now_ms: u64,
    pub space: SpaceId,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    /// What each device last heard a peer hold (the peer's `Want`), per (device, peer).
    pub heard: BTreeMap<(usize, usize), VersionVector>,
    pub stats: Stats,
    trace: blake3::Hasher,
    verbose: bool,
}

impl World {
    /// A practice of 3 to 7 devices: an admin that founds the space, a writer, a reader or a
    /// relay, and more of each; some granted later (spares). The members granted at the start
    /// hold the founding event and their grants before the run (set up side by side).
    pub fn new(seed: u64, verbose: bool) -> World {
        let mut rng = SeededRng::new(seed);
        let count = 3 + rng.index(5);
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let kind = match index {
                0 => Kind::Admin,
                1 => Kind::Writer,
                2 if rng.percent(50) => Kind::Reader,
                2 => Kind::Relay,
                _ => [Kind::Writer, Kind::Writer, Kind::Writer, Kind::Reader, Kind::Relay][rng.index(5)],
            };
            let mut secret = [0u8; 32];
            for chunk in secret.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let skew_ms = rng.below(2 * SKEW_MAX_MS + 1) as i64 - SKEW_MAX_MS as i64;
            nodes.push(SimNode::new(index, kind, DeviceKey::from_secret(secret), skew_ms));
        }
        let mut nonce = [0u8; 16];
        for chunk in nonce.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let admin = &nodes[0];
        let space = admin.up().found_space(&admin.key, "practice", nonce, admin.clock(START_MS)).unwrap();
        let mut world = World {
            rng,
            now_ms: START_MS,
            space,
            nodes,
            net: Network::default(),
            heard: BTreeMap::new(),
            stats: Stats { nodes: count, ..Stats::default() },
            trace: blake3::Hasher::new(),
            verbose,
        };
        world.nodes[0].granted = true;
        let kinds: Vec<String> = world.nodes.iter().map(|n| format!("{}:{:?}", n.name, n.kind)).collect();
        world.note(format!("seed {seed}: space {} devices {}", space.short(), kinds.join(" ")));
        world.acknowledge(0, &VersionVector::new());
        let founding_members: Vec<usize> = (1..count).filter(|i| *i < 3 || world.rng.percent(60)).collect();
        for &index in &founding_members {
            world.grant(index);
        }
        let setup: Vec<pb::SignedEvent> =
            world.nodes[0].up().events_after(&space, &VersionVector::new()).map(|r| r.unwrap().2).collect();
        for &index in &founding_members {
            world.ingest(index, 0, setup.clone(), "setup");
        }
        world
    }

    /// Adds a line to the trace (and prints it when replaying a seed).
    pub fn note(&mut self, line: String) {
        let line = format!("{:>7} {line}", self.now_ms - START_MS);
        if self.verbose {
            println!("{line}");
        }
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
    }

    /// The trace's hash so far: equal for two runs of one seed.
    pub fn trace_hash(&self) -> String {
        self.trace.finalize().to_hex().to_string()
    }

    /// The authors of the readers, whose events must never land anywhere.
    pub fn reader_authors(&self) -> Vec<AuthorId> {
        self.nodes.iter().filter(|n| n.kind == Kind::Reader).map(SimNode::author).collect()
    }

    /// Records what node `index` newly holds since `before` as acknowledged.
    pub fn acknowledge(&mut self, index: usize, before: &VersionVector) -> u64 {
        let space = self.space;
        self.nodes[index].accepted_since(&space, before)
    }

    /// One random step, after the simulated clock moved on and the devices due restarted.
    pub fn step(&mut self) {
        self.now_ms += 1 + self.rng.below(400);
        self.stats.steps += 1;
        self.restart_due();
        match self.rng.below(100) {
            0..=33 => self.command(),
            34..=47 => self.pull(),
            48..=55 => self.push(),
            56..=87 => {
                for _ in 0..1 + self.rng.below(3) {
                    self.deliver();
                }
            }
            88..=90 => self.partition(),
            91..=93 => self.heal(),
            94..=95 => self.crash(),
            _ => self.change_membership(),
        }
    }

    /// A random device that is up, among those `pick` accepts.
    pub fn up_node(&mut self, pick: impl Fn(&SimNode) -> bool) -> Option<usize> {
        let up: Vec<usize> =
            (0..self.nodes.len()).filter(|i| self.nodes[*i].store().is_some() && pick(&self.nodes[*i])).collect();
        (!up.is_empty()).then(|| up[self.rng.index(up.len())])
    }

    /// A random device other than `not`.
    pub fn other_node(&mut self, not: usize) -> usize {
        let pick = self.rng.index(self.nodes.len() - 1);
        if pick >= not {
            pick + 1
        } else {
            pick
        }
    }

    /// A command on a writing device, or a write a reader tries (refused by its own store)
    /// and then signs itself and sends (refused by whoever receives it).
    fn command(&mut self) {
        let Some(index) = self.up_node(|n| n.kind != Kind::Relay) else { return };
        if self.nodes[index].kind == Kind::Reader {
            return self.forge(index);
        }
        let (kind, case, field, value) =
            (self.rng.below(10) as u8, self.rng.below(4) as u8, self.rng.below(3) as u8, self.rng.below(256) as u8);
        let (space, now_ms) = (self.space, self.now_ms);
        let node = &self.nodes[index];
        let store = node.up();
        let Some(command) = command_in(store, &space, kind, case, field, value) else {
            return self.note(format!("{} op {kind}/{case}/{field} does not apply", node.name));
        };
        let label = format!("{command:?}").split([' ', '{']).next().unwrap_or_default().to_string();
        let clock = node.clock(now_ms);
        let (line, written) = match store.execute(&space, &node.key, clock, command) {
            Ok((event, ..)) => {
                let line = format!("{} {label} c{case} f{field} -> {}", node.name, described(&event));
                (line, Some(event))
            }
            Err(casesync_engine::Error::Append(AppendError::NotAllowed(refusal))) => {
                let author = node.author();
                let next = store.head(&space, &author).map_or(0, |h| h.seq) + 1;
                let judged = store.membership(&space).judge(&author, next, clock << 16, None);
                assert!(
                    judged.is_err(),
                    "{} was refused a write its own store's membership allows: {refusal}",
                    node.name
                );
                (format!("{} {label} refused: {refusal}", node.name), None)
            }
            Err(error) => panic!("{}: {label} on case {case} failed: {error}", node.name),
        };
        if let Some(event) = written {
            self.nodes[index].wrote(&event);
        }
        self.note(line);
    }

    /// A reader's write: refused by its own store; then signed by a modified client and sent
    /// to a random peer.
    fn forge(&mut self, index: usize) {
        let (space, clock) = (self.space, self.nodes[index].clock(self.now_ms));
        let node = &self.nodes[index];
        let store = node.up();
        let fields = vec![("name".to_string(), FieldValue::Text("forged".into()))];
        let command = casesync_engine::commands::Command::CreateCase { id: CaseId([0xee; 16]), fields };
        let refused = store.execute(&space, &node.key, clock, command);
        assert!(
            matches!(refused, Err(casesync_engine::Error::Append(AppendError::NotAllowed(_)))),
            "{}, a reader, wrote or failed otherwise: {refused:?}",
            node.name
        );
        let head = store.head(&space, &node.author());
        let header = EventHeader {
            space,
            author: node.author(),
            seq: head.map_or(1, |h| h.seq + 1),
            prev: head.map_or(EventId::ZERO, |h| h.link),
            hlc: clock << 16,
            encoding: BodyEncoding::Plain,
        };
        let op = Operation::CreateCase { case: CaseId([0xee; 16]), fields: Default::default() };
        let forged = SignedEvent::build(&node.key, &header, Bytes::from(encode_operation(&op))).unwrap();
        let to = self.other_node(index);
        self.stats.forged += 1;
        self.note(format!("n{index} forges seq {} for n{to}", header.seq));
        self.send_batch(index, to, vec![forged.to_wire()]);
    }

    /// The admin grants a spare device its role, or revokes a member.
    fn change_membership(&mut self) {
        if self.nodes[0].store().is_none() {
            return self.note("membership change skipped: the admin is down".into());
        }
        let spares: Vec<usize> = (1..self.nodes.len()).filter(|i| !self.nodes[*i].granted).collect();
        let members: Vec<usize> = (1..self.nodes.len()).filter(|i| self.nodes[*i].member()).collect();
        let revocations_max = (self.nodes.len() as u64 - 1) / 3;
        if !spares.is_empty() && (self.rng.percent(50) || members.len() < 2) {
            let index = spares[self.rng.index(spares.len())];
            self.grant(index);
        } else if members.len() >= 2 && self.stats.revocations < revocations_max.max(1) {
            let index = members[self.rng.index(members.len())];
            let (space, clock) = (self.space, self.nodes[0].clock(self.now_ms));
            let device = self.nodes[index].author();
            let admin = &self.nodes[0];
            let cut = admin.up().head(&space, &device).map_or(0, |h| h.seq);
            let event = admin.up().revoke(&space, &admin.key, clock, device).unwrap();
            let judged = admin.up().membership(&space).cut(&device);
            assert_eq!(judged, Some(cut), "the admin's revocation of n{index} cuts elsewhere");
            self.nodes[0].wrote(&event);
            self.nodes[index].cut = Some(cut);
            self.stats.revocations += 1;
            self.note(format!("n0 revokes n{index} (cut {cut}) -> {}", described(&event)));
        }
    }

    fn grant(&mut self, index: usize) {
        let (space, clock) = (self.space, self.nodes[0].clock(self.now_ms));
        let node = &self.nodes[index];
        let grant = NewGrant { device: node.author(), role: node.kind.role(), name: node.name.clone(), until_ms: None };
        let admin = &self.nodes[0];
        let event = admin.up().grant(&space, &admin.key, clock, grant).unwrap();
        self.nodes[0].wrote(&event);
        self.nodes[index].granted = true;
        self.stats.grants += 1;
        self.note(format!("n0 grants n{index} {:?} -> {}", self.nodes[index].kind, described(&event)));
    }

    /// A two-way partition (one random side against the rest) or a one-way one (one device's
    /// messages to some others are lost, theirs to it still arrive).
    fn partition(&mut self) {
        let n = self.nodes.len();
        self.stats.partitions += 1;
        if self.rng.percent(50) {
            let mut side: Vec<bool> = (0..n).map(|_| self.rng.percent(50)).collect();
            if side.iter().all(|s| *s == side[0]) {
                let flip = self.rng.index(n);
                side[flip] = !side[flip];
            }
            for a in 0..n {
                for b in 0..n {
                    if side[a] != side[b] {
                        self.net.cut(a, b);
                    }
                }
            }
            let left: Vec<String> = (0..n).filter(|i| side[*i]).map(|i| format!("n{i}")).collect();
            self.note(format!("partition: {{{}}} | the rest", left.join(",")));
        } else {
            let from = self.rng.index(n);
            let mut cut = Vec::new();
            for _ in 0..1 + self.rng.index(n - 1) {
                let to = self.other_node(from);
                self.net.cut(from, to);
                cut.push(format!("n{to}"));
            }
            self.note(format!("one-way partition: n{from} -/-> {}", cut.join(",")));
        }
    }

    /// Every link healed, or one.
    fn heal(&mut self) {
        let cuts = self.net.cuts();
        if cuts.is_empty() {
            return self.note("heal: nothing cut".into());
        }
        if self.rng.percent(50) {
            for (from, to) in cuts {
                self.net.heal(from, to);
            }
            self.note("heal: every link".into());
        } else {
            let (from, to) = cuts[self.rng.index(cuts.len())];
            self.net.heal(from, to);
            self.note(format!("heal: n{from} -> n{to}"));
        }
    }

    /// A device's store is dropped; it restarts a while later.
    fn crash(&mut self) {
        let Some(index) = self.up_node(|_| true) else { return };
        let until = self.now_ms + 200 + self.rng.below(3_000);
        self.nodes[index].crash(until);
        self.stats.crashes += 1;
        self.note(format!("crash n{index} until {}", until - START_MS));
    }

    /// Devices whose downtime is over open their stores again (every acknowledged event held).
    pub fn restart_due(&mut self) {
        let space = self.space;
        for index in 0..self.nodes.len() {
            if self.nodes[index].down_until.is_some_and(|t| t <= self.now_ms) {
                let checked = self.nodes[index].restart(&space);
                self.note(format!("restart n{index}: {checked} acknowledged events held"));
            }
        }
    }
}

/// An event as the trace shows it: its seq and the first 8 hex digits of its id.
pub fn described(event: &SignedEvent) -> String {
    format!("seq {} {}", event.header.seq, &event.id.to_hex()[..8])
}
