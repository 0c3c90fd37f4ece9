//! The simulated network: a bounded queue of messages between devices, each due at a simulated
//! time, and the directed links a partition cuts. Which due message is delivered next, and
//! whether it is lost or duplicated, is the caller's seeded choice.

use std::collections::BTreeSet;

use casesync_engine::model::vector_clock::VersionVector;
use casesync_proto::v1 as pb;

/// Messages in flight at most; a send beyond it is lost (a full socket buffer).
pub const IN_FLIGHT_MAX: usize = 256;

/// What travels.
#[derive(Clone, Debug)]
pub enum Body {
    /// "Send me what I lack": the sender's version vector.
    Want(VersionVector),
    /// Events, in the order the sender read them.
    Batch(Vec<pb::SignedEvent>),
}

#[derive(Clone, Debug)]
pub struct Message {
    pub from: usize,
    pub to: usize,
    pub due_ms: u64,
    pub body: Body,
}

impl Message {
    pub fn describe(&self) -> String {
        let what = match &self.body {
            Body::Want(have) => format!("want({} held)", have.total()),
            Body::Batch(events) => format!("batch({} events)", events.len()),
        };
        format!("n{}->n{} {what}", self.from, self.to)
    }
}

#[derive(Default)]
pub struct Network {
    in_flight: Vec<Message>,
    /// Cut directed links (from, to): messages along them are lost.
    cut: BTreeSet<(usize, usize)>,
}

impl Network {
    /// Queues a message; false when the network is full and it is lost.
    pub fn send(&mut self, message: Message) -> bool {
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            return false;
        }
        self.in_flight.push(message);
        true
    }

    /// How many messages are due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> usize {
        self.in_flight.iter().filter(|m| m.due_ms <= now_ms).count()
    }

    /// Takes the `pick`th due message (in sending order) out of the network.
    pub fn take_due(&mut self, now_ms: u64, pick: usize) -> Message {
        let at = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, m)| m.due_ms <= now_ms)
            .nth(pick)
            .map(|(at, _)| at)
            .expect("a due message at that index");
        self.in_flight.remove(at)
    }

    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn cut(&mut self, from: usize, to: usize) {
        self.cut.insert((from, to));
    }

    /// The cut links, in order.
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        self.cut.iter().copied().collect()
    }

    pub fn heal(&mut self, from: usize, to: usize) {
        self.cut.remove(&(from, to));
    }

    /// Every link healed and every message in flight dropped; returns how many were.
    pub fn heal_all(&mut self) -> usize {
        self.cut.clear();
        std::mem::take(&mut self.in_flight).len()
    }
}
