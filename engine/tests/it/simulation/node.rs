//! One simulated device: its key, its role, its store in a directory of its own (dropped on a
//! crash and opened again from that directory on restart), its clock skew, and every event its
//! store acknowledged (wrote or accepted), which must survive every restart.

use std::collections::BTreeMap;

use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::{AuthorId, EventId, SpaceId};
use casesync_engine::model::membership::Role;
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::{Store, StoreOptions};

/// A directory for a store: on a RAM disk where there is one. A crash here drops the store and
/// opens it again (a process crash: what was written survives, as the OS keeps it), so the
/// disk's own flushes add nothing but time, and with them 500 runs would take minutes.
fn store_dir() -> tempfile::TempDir {
    let ram = std::path::Path::new("/dev/shm");
    if ram.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(ram) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// What a device is in the practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The founder: writes cases and membership.
    Admin,
    Writer,
    /// Pulls only; its events (a modified client's) must be refused everywhere.
    Reader,
    /// Stores and forwards, with projections off.
    Relay,
}

impl Kind {
    pub fn role(self) -> Role {
        match self {
            Kind::Admin => Role::Admin,
            Kind::Writer => Role::Writer,
            Kind::Reader => Role::Reader,
            Kind::Relay => Role::Relay,
        }
    }
}

/// A device of the simulation.
pub struct SimNode {
    pub name: String,
    pub kind: Kind,
    pub key: DeviceKey,
    dir: tempfile::TempDir,
    store: Option<Store>,
    /// How far this device's wall clock is ahead of the simulated time (negative: behind).
    pub skew_ms: i64,
    /// While down (crashed): the simulated time it restarts at.
    pub down_until: Option<u64>,
    /// The admin signed a grant for it.
    pub granted: bool,
    /// The admin revoked it: its events above this seq (the admin's head of it then) count
    /// nowhere.
    pub cut: Option<u64>,
    /// Every event its store wrote or accepted: (author, seq) -> id.
    pub acked: BTreeMap<(AuthorId, u64), EventId>,
}

impl SimNode {
    pub fn new(index: usize, kind: Kind, key: DeviceKey, skew_ms: i64) -> SimNode {
        let dir = store_dir();
        let mut node = SimNode {
            name: format!("n{index}"),
            kind,
            key,
            dir,
            store: None,
            skew_ms,
            down_until: None,
            granted: false,
            cut: None,
            acked: BTreeMap::new(),
        };
        node.store = Some(node.open());
        node
    }

    fn open(&self) -> Store {
        let options = StoreOptions { projections: self.kind != Kind::Relay, ..StoreOptions::default() };
        Store::open(self.dir.path(), options).unwrap()
    }

    pub fn author(&self) -> AuthorId {
        self.key.author()
    }

    /// The store, while the device is up.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The store of a device the caller knows is up.
    pub fn up(&self) -> &Store {
        self.store.as_ref().unwrap_or_else(|| panic!("{} is down", self.name))
    }

    /// A member of the space as the admin decided it (granted, not revoked).
    pub fn member(&self) -> bool {
        self.granted && self.cut.is_none()
    }

    /// This device's wall clock at simulated time `sim_ms`.
    pub fn clock(&self, sim_ms: u64) -> u64 {
        sim_ms.saturating_add_signed(self.skew_ms)
    }

    /// Whether this device holds a sync connection with `peer` (either end), as a node decides
    /// it: anyone before the space's founding event is held here, then a member whose role
    /// holds at its next seq and now.
    pub fn admits(&self, space: &SpaceId, peer: &AuthorId, sim_ms: u64) -> bool {
        let store = self.up();
        let membership = store.membership(space);
        if !membership.is_founded() {
            return true;
        }
        let next = store.head(space, peer).map_or(0, |h| h.seq) + 1;
        membership.may_connect(peer, next, self.clock(sim_ms)).is_ok()
    }

    /// The crash: the store is dropped, the device is down until `until`.
    pub fn crash(&mut self, until: u64) {
        self.store = None;
        self.down_until = Some(until);
    }

    /// The restart: the store opened again from its directory, which must still hold every
    /// event it acknowledged. Returns how many were checked.
    pub fn restart(&mut self, space: &SpaceId) -> usize {
        let store = self.open();
        for ((author, seq), id) in &self.acked {
            let held = store.get_event(space, author, *seq).unwrap();
            assert_eq!(
                held.map(|e| e.id),
                Some(*id),
                "{} lost acknowledged event {}:{seq} in a restart",
                self.name,
                author.device_id()
            );
        }
        if self.kind != Kind::Relay {
            let behind = store.projections_behind(space).unwrap();
            assert_eq!(behind, 0, "{}'s views lag its log by {behind} events after a restart", self.name);
        }
        self.store = Some(store);
        self.down_until = None;
        self.acked.len()
    }

    /// Records an event this device's store wrote.
    pub fn wrote(&mut self, event: &SignedEvent) {
        self.acked.insert((event.header.author, event.header.seq), event.id);
    }

    /// Records the events its store accepted since it held `before`; returns how many.
    pub fn accepted_since(&mut self, space: &SpaceId, before: &VersionVector) -> u64 {
        let store = self.store.as_ref().unwrap_or_else(|| panic!("{} is down", self.name));
        let mut count = 0;
        for (author, head) in store.vector(space).iter() {
            for seq in before.get(author) + 1..=*head {
                let event = store.get_event(space, author, seq).unwrap().unwrap();
                self.acked.insert((*author, seq), event.id);
                count += 1;
            }
        }
        count
    }
}
