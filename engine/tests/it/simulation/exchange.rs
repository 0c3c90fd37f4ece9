//! The traffic between devices: a pull (a `Want` carrying the puller's version vector, answered
//! with what it lacks), a push (what the sender last heard the peer lacks), and the network's
//! delivery of one due message: lost to a partition, a down device or a drop, duplicated, or
//! received (now and then in a bulk catch-up, which a crash may cut short). Each device talks
//! only to peers its own store admits, as a node does.

use casesync_engine::log::ingest::{PreparedBatch, RejectReason};
use casesync_engine::model::vector_clock::VersionVector;
use casesync_proto::v1 as pb;

use super::network::{Body, Message};
use super::node::Kind;
use super::world::{World, START_MS};

/// Events one answer to a `Want` (or one push) carries at most; the rest waits for the next.
const ANSWER_EVENTS_MAX: usize = 48;
/// Events one batch message carries at most.
const BATCH_EVENTS_MAX: u64 = 12;

impl World {
    /// A random simulated delay: most messages within 0.6 s, one in ten up to 6 s.
    fn delay(&mut self) -> u64 {
        if self.rng.percent(10) {
            1_000 + self.rng.below(5_000)
        } else {
            self.rng.below(600)
        }
    }

    fn send(&mut self, from: usize, to: usize, body: Body) {
        let message = Message { from, to, due_ms: self.now_ms + self.delay(), body };
        if !self.net.send(message) {
            self.stats.lost += 1;
            self.note(format!("n{from}->n{to}: the network is full, lost"));
        }
    }

    pub fn send_batch(&mut self, from: usize, to: usize, events: Vec<pb::SignedEvent>) {
        self.send(from, to, Body::Batch(events));
    }

    /// Whether `a` and `b` (both up) admit each other.
    pub fn admitted(&self, a: usize, b: usize) -> bool {
        let space = self.space;
        self.nodes[a].admits(&space, &self.nodes[b].author(), self.now_ms)
            && self.nodes[b].admits(&space, &self.nodes[a].author(), self.now_ms)
    }

    /// A device asks a peer for what it lacks.
    pub fn pull(&mut self) {
        let Some(a) = self.up_node(|_| true) else { return };
        let b = self.other_node(a);
        let space = self.space;
        if !self.nodes[a].admits(&space, &self.nodes[b].author(), self.now_ms) {
            return self.note(format!("n{a} does not connect to n{b}"));
        }
        let have = self.nodes[a].up().vector(&space);
        self.note(format!("n{a} asks n{b} ({} held)", have.total()));
        self.send(a, b, Body::Want(have));
    }

    /// A device sends a peer what it last heard the peer lacks (stale, so some is held there).
    pub fn push(&mut self) {
        let Some(a) = self.up_node(|_| true) else { return };
        let b = self.other_node(a);
        if !self.nodes[a].admits(&self.space, &self.nodes[b].author(), self.now_ms) {
            return self.note(format!("n{a} does not connect to n{b}"));
        }
        let have = self.heard.get(&(a, b)).cloned().unwrap_or_default();
        let sent = self.send_events(a, b, &have);
        self.note(format!("n{a} pushes n{b} {sent} events"));
    }

    /// Sends `to` what `from` holds beyond `have` (bounded), cut into batches at random points.
    fn send_events(&mut self, from: usize, to: usize, have: &VersionVector) -> usize {
        let events: Vec<pb::SignedEvent> = self.nodes[from]
            .up()
            .events_after(&self.space, have)
            .take(ANSWER_EVENTS_MAX)
            .map(|r| r.unwrap().2)
            .collect();
        let sent = events.len();
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let size = (1 + self.rng.below(BATCH_EVENTS_MAX) as usize).min(rest.len());
            let (batch, later) = rest.split_at(size);
            self.send_batch(from, to, batch.to_vec());
            rest = later;
        }
        sent
    }

    /// The network delivers one due message, picked at random (so messages overtake each
    /// other), unless it is lost; some are duplicated (a copy arrives again later).
    pub fn deliver(&mut self) {
        let due = self.net.due(self.now_ms);
        if due == 0 {
            return self.note("nothing due".into());
        }
        let pick = self.rng.index(due);
        let message = self.net.take_due(self.now_ms, pick);
        let what = message.describe();
        let lost = if self.net.is_cut(message.from, message.to) {
            Some("cut")
        } else if self.nodes[message.to].store().is_none() {
            Some("receiver down")
        } else if self.rng.percent(8) {
            Some("dropped")
        } else {
            None
        };
        if let Some(why) = lost {
            self.stats.lost += 1;
            return self.note(format!("{what} lost: {why}"));
        }
        if self.rng.percent(8) {
            let mut copy = message.clone();
            copy.due_ms = self.now_ms + self.delay();
            self.stats.duplicated += 1;
            if self.net.send(copy) {
                self.note(format!("{what} duplicated"));
            }
        }
        self.stats.delivered += 1;
        let (from, to) = (message.from, message.to);
        if !self.nodes[to].admits(&self.space, &self.nodes[from].author(), self.now_ms) {
            return self.note(format!("{what} refused: n{to} does not admit n{from}"));
        }
        match message.body {
            Body::Want(have) => {
                let sent = self.send_events(to, from, &have);
                self.note(format!("{what} answered with {sent} events"));
                self.heard.insert((to, from), have);
            }
            Body::Batch(events) => self.receive(to, from, events, &what),
        }
    }

    /// A received batch; one time in ten, on a device with views, ingested in a bulk catch-up
    /// holding 1 to 3 cases (so its deltas spill), which ends after the batch or, one time in
    /// three, is cut short by a crash (the views lag until the restart folds them again).
    fn receive(&mut self, to: usize, from: usize, events: Vec<pb::SignedEvent>, what: &str) {
        if self.nodes[to].kind == Kind::Relay || !self.rng.percent(10) {
            return self.ingest(to, from, events, what);
        }
        let cases = 1 + self.rng.index(3);
        self.stats.bulk += 1;
        self.nodes[to].up().begin_bulk_catch_up_holding(cases, false);
        self.ingest(to, from, events, &format!("{what} (bulk, {cases} cases held)"));
        if self.rng.percent(30) {
            let until = self.now_ms + 200 + self.rng.below(3_000);
            self.nodes[to].crash(until);
            self.stats.crashes += 1;
            return self.note(format!("crash n{to} in its bulk catch-up until {}", until - START_MS));
        }
        let store = self.nodes[to].up();
        let rebuilt = store.end_bulk_catch_up().unwrap();
        assert_eq!(store.projections_behind(&self.space).unwrap(), 0, "n{to}'s views lag after its bulk catch-up");
        self.note(format!("n{to} ends its bulk catch-up ({rebuilt} rebuilt)"));
    }

    /// Device `to` ingests a batch from `from` as a node does (events stamped too far ahead
    /// of its clock refused first), and acknowledges what it accepted. Only gaps (a batch lost
    /// or overtaken) and events that do not count (yet) may be refused; a reader's never land.
    pub fn ingest(&mut self, to: usize, from: usize, events: Vec<pb::SignedEvent>, what: &str) {
        let space = self.space;
        let node = &self.nodes[to];
        let store = node.up();
        let before = store.vector(&space);
        let mut prepared = PreparedBatch::new(space, events);
        prepared.refuse_clocks_ahead_of(node.clock(self.now_ms));
        let report = store.ingest_prepared(prepared).unwrap();
        let mut refused = Vec::new();
        for rejection in &report.rejected {
            assert!(
                matches!(rejection.reason, RejectReason::Gap { .. } | RejectReason::NotCounted(_)),
                "{} refused an honest event from n{from}: {rejection:?}",
                node.name
            );
            let author = rejection.author.map(|a| a.device_id()).unwrap_or_default();
            refused.push(format!("{author}:{} {}", rejection.seq, rejection.reason));
        }
        for reader in self.reader_authors() {
            assert_eq!(store.head(&space, &reader), None, "{} stored a reader's event", node.name);
        }
        let accepted = self.acknowledge(to, &before);
        assert_eq!(accepted, report.accepted, "n{to}: what the report says was accepted and what is new");
        self.note(format!(
            "{what}: n{to} accepted {accepted}, {} held, refused [{}]",
            report.duplicates,
            refused.join("; ")
        ));
    }
}
