//! One run of the simulation: the hosts on turmoil's network, the faults, the final heal and
//! the checks. Every choice comes from the run's seed (turmoil's own random choices from it too).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::membership::Role;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::testkit::SeededRng;

use super::host::{Host, Ledger, Order, SYNC_PORT};
use super::network::SimNetwork;

/// One simulation step (turmoil ticks every host this much).
pub const TICK: Duration = Duration::from_millis(10);
/// How long after the final heal every node must agree (simulated). Reasoning: a dead
/// connection is noticed within 10 s (5 s keep-alive interval + 5 s timeout), a peer task
/// waits at most 30 s before its next try (`peer_actor.rs`), a TLS connect and a catch-up take
/// well under a second here; twice that sum leaves room for one relay hop.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(90);
/// How often (simulated) convergence is checked after the heal.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long (real time) a crashed host's store may take to close (its ingest thread finishing
/// the job it holds).
const STORE_CLOSE_DEADLINE: Duration = Duration::from_secs(30);

/// A fault on the link between two hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutKind {
    /// Nothing crosses either way.
    TwoWay,
    /// Nothing crosses from `a` to `b`.
    OneWay,
    /// Everything waits on the link until it is released.
    Hold,
}

#[derive(Clone, Copy, Debug)]
struct Cut {
    a: usize,
    b: usize,
    kind: CutKind,
}

/// How a run is set up.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The sync channels' HTTP/2 keep-alive.
    pub keep_alive: bool,
    /// Whether nodes may have a scheduled heads check (`pull_every`).
    pub scheduled_pulls: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { keep_alive: true, scheduled_pulls: true }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub hosts: usize,
    pub orders: u64,
    pub acknowledged: u64,
    pub refused: u64,
    pub partitions: u64,
    pub one_way: u64,
    pub holds: u64,
    pub crashes: u64,
    /// Simulated time from the final heal until every node agreed.
    pub converged_after: Duration,
    /// Simulated time of the whole run.
    pub simulated: Duration,
}

pub struct World {
    pub rng: SeededRng,
    sim: turmoil::Sim<'static>,
    hosts: Vec<Arc<Host>>,
    ledger: Arc<Mutex<Ledger>>,
    cuts: Vec<Cut>,
    down: Vec<bool>,
    pub stats: Stats,
    /// What the run did, step by step (compared between two runs of one seed).
    pub trace: Vec<String>,
    verbose: bool,
    _root: tempfile::TempDir,
}

/// Hosts beyond the admin and the first writer, in the order a run draws them.
const OPTIONAL: [(&str, Role); 3] = [("writer2", Role::Writer), ("relay", Role::Relay), ("reader", Role::Reader)];

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn url(name: &str) -> String {
    format!("http://{name}:{SYNC_PORT}")
}

impl World {
    /// 3-5 hosts (an admin, writers, maybe a relay and a reader), each dialling one or two
    /// others so that the graph is connected, some with a scheduled heads check.
    pub fn new(seed: u64, settings: Settings, verbose: bool) -> World {
        let mut rng = SeededRng::new(seed);
        let mut devices = vec![("admin", Role::Admin), ("writer1", Role::Writer)];
        let extra = rng.below(3) as usize + 1;
        let mut optional = OPTIONAL.to_vec();
        for _ in 0..extra {
            devices.push(optional.remove(rng.index(optional.len())));
        }
        let mut peers: Vec<Vec<&str>> = vec![Vec::new(); devices.len()];
        for i in 1..devices.len() {
            peers[i].push(devices[rng.index(i)].0);
            let other = devices[rng.index(devices.len())].0;
            if rng.percent(30) && other != devices[i].0 && !peers[i].contains(&other) {
                peers[i].push(other);
            }
        }
        let hosts: Vec<(&str, Role, Vec<&str>)> =
            devices.iter().zip(peers).map(|((name, role), peers)| (*name, *role, peers)).collect();
        World::build(seed, rng, settings, &hosts, verbose)
    }

    /// Hosts named as given (the first the admin; "relay..." a relay, "reader..." a reader, the
    /// others writers), each dialling the peer named beside it.
    pub fn scripted(seed: u64, settings: Settings, hosts: &[(&str, Option<&str>)]) -> World {
        let hosts: Vec<(&str, Role, Vec<&str>)> = hosts
            .iter()
            .enumerate()
            .map(|(i, (name, peer))| {
                let role = match *name {
                    _ if i == 0 => Role::Admin,
                    n if n.starts_with("relay") => Role::Relay,
                    n if n.starts_with("reader") => Role::Reader,
                    _ => Role::Writer,
                };
                (*name, role, peer.iter().copied().collect())
            })
            .collect();
        World::build(seed, SeededRng::new(seed), settings, &hosts, true)
    }

    fn build(
        seed: u64,
        mut rng: SeededRng,
        settings: Settings,
        hosts: &[(&str, Role, Vec<&str>)],
        verbose: bool,
    ) -> World {
        crate::support::use_test_pin();
        let devices: Vec<(&str, Role)> = hosts.iter().map(|(name, role, _)| (*name, *role)).collect();
        let root = tempfile::tempdir().unwrap();
        let dirs = casesync_node::demo::create_devices(root.path(), &devices).unwrap();
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .simulation_duration(Duration::from_secs(24 * 3600))
            .tick_duration(TICK)
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(1 + rng.below(40)))
            // The node's local case API listens on loopback with tokio's own sockets.
            .enable_tokio_io()
            .build();
        let network = Arc::new(SimNetwork { keep_alive: settings.keep_alive });
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut trace = Vec::new();
        let mut started = Vec::new();
        for (index, ((name, role, peers), dir)) in hosts.iter().zip(dirs).enumerate() {
            let pull_every =
                (settings.scheduled_pulls && rng.percent(50)).then(|| Duration::from_millis(2_000 + rng.below(18_000)));
            let peers: Vec<String> = peers.iter().map(|p| url(p)).collect();
            trace.push(format!("{name} {role:?} peers {peers:?} pull_every {pull_every:?}"));
            let host = Arc::new(Host::new(index, name, *role, dir, peers, pull_every, network.clone(), ledger.clone()));
            let software = host.clone();
            sim.host(*name, move || software.clone().serve());
            started.push(host);
        }
        let stats = Stats { hosts: started.len(), ..Stats::default() };
        let down = vec![false; started.len()];
        let cuts = Vec::new();
        let mut world = World { rng, sim, hosts: started, ledger, cuts, down, stats, trace, verbose, _root: root };
        if verbose {
            for line in &world.trace {
                println!("{line}");
            }
        }
        world.note(format!("seed {seed}: {} hosts", world.hosts.len()));
        world
    }

    fn note(&mut self, line: String) {
        if self.verbose {
            println!("[{:>9.3}s] {line}", self.sim.elapsed().as_secs_f64());
        }
        self.trace.push(line);
    }

    /// Runs the simulation for `duration` (simulated).
    pub fn advance(&mut self, duration: Duration) {
        let steps = duration.as_millis().div_ceil(TICK.as_millis()).max(1);
        for _ in 0..steps {
            if let Err(error) = self.sim.step() {
                panic!("the simulation stopped: {error}");
            }
        }
    }

    fn name(&self, index: usize) -> String {
        self.hosts[index].name.clone()
    }

    /// One random step: some simulated time passes, then a command, a fault, a heal, a crash or
    /// a restart.
    pub fn random_step(&mut self) {
        let pause = Duration::from_millis(50 + self.rng.below(3_000));
        self.advance(pause);
        let n = self.hosts.len();
        let (a, b) = (self.rng.index(n), self.rng.index(n));
        match self.rng.below(100) {
            0..=49 => {
                // Mostly on devices that may write; readers' and relays' commands are refused.
                let writers: Vec<usize> =
                    (0..n).filter(|i| matches!(self.hosts[*i].role, Role::Admin | Role::Writer)).collect();
                let node = if self.rng.percent(85) { writers[self.rng.index(writers.len())] } else { a };
                for _ in 0..1 + self.rng.below(4) {
                    let order = self.random_order();
                    self.command(node, order);
                }
            }
            50..=59 => self.cut(a, b, CutKind::TwoWay),
            60..=71 => self.cut(a, b, CutKind::OneWay),
            72..=76 => self.cut(a, b, CutKind::Hold),
            77..=87 if !self.cuts.is_empty() => {
                let cut = self.cuts.remove(self.rng.index(self.cuts.len()));
                self.heal(cut);
            }
            88..=93 => self.crash(a),
            _ => {
                let down: Vec<usize> = (0..n).filter(|i| self.down[*i]).collect();
                if !down.is_empty() {
                    let index = down[self.rng.index(down.len())];
                    self.restart(index);
                }
            }
        }
    }

    fn random_order(&mut self) -> Order {
        let cases = lock(&self.ledger).cases.clone();
        let serial = self.stats.orders;
        if cases.is_empty() || self.rng.percent(30) {
            return Order::Create { name: format!("case {serial}") };
        }
        let case = cases[self.rng.index(cases.len())].clone();
        match self.rng.below(10) {
            0..=5 => {
                let field = ["phone", "address", "status note"][self.rng.index(3)].to_string();
                Order::Set { case, field, value: format!("value {serial}") }
            }
            6 => Order::Archive { case },
            7 => Order::Delete { case },
            _ => Order::AddEntry { case, note: format!("note {serial}") },
        }
    }

    pub fn command(&mut self, node: usize, order: Order) {
        self.stats.orders += 1;
        let delivered = self.hosts[node].order(order.clone());
        // Case ids are drawn by the node (at random): the trace names them by creation order.
        let mut line = format!("{} <- {order:?}{}", self.name(node), if delivered { "" } else { " (down)" });
        for (index, case) in lock(&self.ledger).cases.iter().enumerate() {
            line = line.replace(case, &format!("#{index}"));
        }
        self.note(line);
    }

    pub fn cut(&mut self, a: usize, b: usize, kind: CutKind) {
        let pair = |c: &Cut| (c.a.min(c.b), c.a.max(c.b));
        if a == b || self.cuts.iter().any(|c| pair(c) == (a.min(b), a.max(b))) {
            return;
        }
        let (na, nb) = (self.name(a), self.name(b));
        match kind {
            CutKind::TwoWay => {
                self.sim.partition(na.as_str(), nb.as_str());
                self.stats.partitions += 1;
            }
            CutKind::OneWay => {
                self.sim.partition_oneway(na.as_str(), nb.as_str());
                self.stats.one_way += 1;
            }
            CutKind::Hold => {
                self.sim.hold(na.as_str(), nb.as_str());
                self.stats.holds += 1;
            }
        }
        self.cuts.push(Cut { a, b, kind });
        self.note(format!("cut {na} -> {nb} {kind:?}"));
    }

    fn heal(&mut self, cut: Cut) {
        let (na, nb) = (self.name(cut.a), self.name(cut.b));
        match cut.kind {
            CutKind::TwoWay => self.sim.repair(na.as_str(), nb.as_str()),
            CutKind::OneWay => self.sim.repair_oneway(na.as_str(), nb.as_str()),
            CutKind::Hold => self.sim.release(na.as_str(), nb.as_str()),
        }
        self.note(format!("heal {na} -> {nb} {:?}", cut.kind));
    }

    /// Crashes a host (its runtime and every task on it dropped; its data dir stays), and waits
    /// (real time, bounded) until its store is closed, so that a restart can open it.
    pub fn crash(&mut self, index: usize) {
        if self.down[index] || self.down.iter().filter(|d| **d).count() >= 2 {
            return;
        }
        let name = self.name(index);
        self.sim.crash(name.as_str());
        self.hosts[index].crashed();
        let deadline = std::time::Instant::now() + STORE_CLOSE_DEADLINE;
        while self.hosts[index].store_open() {
            assert!(std::time::Instant::now() < deadline, "{name}'s store stayed open after its crash");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.down[index] = true;
        self.stats.crashes += 1;
        self.note(format!("crash {name}"));
    }

    pub fn restart(&mut self, index: usize) {
        let name = self.name(index);
        self.sim.bounce(name.as_str());
        self.down[index] = false;
        self.note(format!("restart {name}"));
    }

    /// Heals every cut, restarts every crashed host, and runs until every node agrees, at most
    /// [`LIVENESS_BOUND`] of simulated time. `Err` says how they differ.
    pub fn heal_and_converge(&mut self) -> Result<(), String> {
        for cut in std::mem::take(&mut self.cuts) {
            self.heal(cut);
        }
        for index in 0..self.hosts.len() {
            if self.down[index] {
                self.restart(index);
            }
        }
        let healed = self.sim.elapsed();
        loop {
            self.advance(CHECK_EVERY);
            let waited = self.sim.elapsed() - healed;
            match self.disagreement() {
                None => {
                    self.stats.converged_after = waited;
                    self.stats.simulated = self.sim.elapsed();
                    // Not in the trace: it depends on how long real disk syncs took.
                    if self.verbose {
                        println!("agreed {:.1} s after the heal", waited.as_secs_f64());
                    }
                    return Ok(());
                }
                Some(why) if waited >= LIVENESS_BOUND => {
                    return Err(format!(
                        "no agreement {} s (simulated) after the final heal: {why}\n{}",
                        LIVENESS_BOUND.as_secs(),
                        self.describe()
                    ));
                }
                Some(_) => {}
            }
        }
    }

    /// How the running nodes differ (`None`: one version vector, views current, one state hash).
    fn disagreement(&self) -> Option<String> {
        let mut held = Vec::new();
        for host in &self.hosts {
            let Some(shared) = host.shared() else { return Some(format!("{} is not running", host.name)) };
            let vector = shared.store.vector(&shared.space);
            // A relay holds no case views: its events count, its (empty) views do not.
            let hash = if host.role == Role::Relay {
                None
            } else {
                let behind = shared.store.projections_behind(&shared.space).unwrap_or(u64::MAX);
                if behind > 0 {
                    return Some(format!("{}'s views are {behind} events behind", host.name));
                }
                Some(shared.store.state_hash(&shared.space).unwrap_or_default())
            };
            held.push((host.name.as_str(), vector, hash));
        }
        let (first, vector, _) = &held[0];
        if let Some((name, other, _)) = held.iter().find(|(_, other, _)| other != vector) {
            return Some(format!(
                "{name} holds another version vector ({} events) than {first} ({})",
                other.total(),
                vector.total()
            ));
        }
        let hashes: Vec<(&str, &String)> = held.iter().filter_map(|(n, _, h)| h.as_ref().map(|h| (*n, h))).collect();
        let (first, hash) = hashes[0];
        hashes
            .iter()
            .find(|(_, other)| *other != hash)
            .map(|(name, _)| format!("{name}'s state hash differs from {first}'s"))
    }

    /// Every host's events and peers, for a failure's message.
    fn describe(&self) -> String {
        let mut lines = Vec::new();
        for host in &self.hosts {
            let Some(shared) = host.shared() else {
                lines.push(format!("  {}: down", host.name));
                continue;
            };
            let peers: Vec<String> = shared
                .peers()
                .into_iter()
                .map(|(url, info)| format!("{url} {} {:?}", info.state.as_str(), info.last_error))
                .collect();
            lines.push(format!(
                "  {} ({:?}): {} events; peers: {}",
                host.name,
                host.role,
                shared.store.vector(&shared.space).total(),
                peers.join("; ")
            ));
        }
        lines.join("\n")
    }

    /// Safety, once the nodes agree: every command a node acknowledged is on every node, and no
    /// reader's or relay's command was acknowledged.
    pub fn check_safety(&mut self) {
        let outcomes = lock(&self.ledger).outcomes.clone();
        let vectors: Vec<(String, VersionVector)> = self
            .hosts
            .iter()
            .map(|h| {
                let shared = h.shared().unwrap();
                (h.name.clone(), shared.store.vector(&shared.space))
            })
            .collect();
        let authors: Vec<(AuthorId, String)> =
            self.hosts.iter().map(|h| (h.shared().unwrap().identity.author(), h.name.clone())).collect();
        let author_name =
            |author: &AuthorId| authors.iter().find(|(a, _)| a == author).map_or("?".to_string(), |(_, n)| n.clone());
        for outcome in &outcomes {
            let host = &self.hosts[outcome.node];
            match outcome.result {
                Ok((author, seq)) => {
                    assert!(
                        matches!(host.role, Role::Admin | Role::Writer),
                        "{} ({:?}) acknowledged a {} command",
                        host.name,
                        host.role,
                        outcome.order
                    );
                    for (name, vector) in &vectors {
                        assert!(
                            vector.get(&author) >= seq,
                            "{name} lacks {}'s acknowledged event {seq} (holds {})",
                            author_name(&author),
                            vector.get(&author)
                        );
                    }
                    self.stats.acknowledged += 1;
                    self.trace.push(format!("{} {} acknowledged at seq {seq}", host.name, outcome.order));
                }
                Err(code) => {
                    self.stats.refused += 1;
                    self.trace.push(format!("{} {} refused: {code:?}", host.name, outcome.order));
                }
            }
        }
        let (_, vector) = &vectors[0];
        for (author, name) in &authors {
            self.trace.push(format!("{name} wrote {} events", vector.get(author)));
        }
    }
}
