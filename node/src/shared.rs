//! State shared by a node's servers and peer tasks: the store, the identity, change
//! notifications, what each peer device is known to hold, and per-peer status.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use casesync_engine::error::StoreError;
use casesync_engine::identity::DeviceIdentity;
use casesync_engine::log::ingest::{IngestReport, PreparedBatch, RejectReason, Rejection};
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::membership::{Refusal, Role};
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::Store;
use tokio::sync::{watch, Notify};

use crate::ingest_thread::IngestThread;
use crate::refusals::{Refusals, RefusedAuthor};
use crate::tls::{DeviceCert, ServerPolicy};
use crate::transport::Transport;

/// Metadata naming the space of a sync call (a `Push`'s messages do not; the others' do).
pub const SPACE_HEADER: &str = "x-casesync-space";

/// 32 fresh random bytes from the operating system (a device key, a data key): the node owns
/// randomness, as it owns time; the engine takes both as arguments.
pub fn fresh_secret() -> [u8; 32] {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// Wall clock in ms since the epoch (the node owns time; the engine takes it as an argument).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A peer's connection state, like the seeds' status icon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Connecting or waiting to retry.
    Offline,
    /// Exchanging missing ranges.
    Syncing,
    /// Caught up, live subscription open.
    Connected,
}

impl PeerState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Offline => "offline",
            PeerState::Syncing => "syncing",
            PeerState::Connected => "connected",
        }
    }
}

/// What the node knows of one configured peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Connection state.
    pub state: PeerState,
    /// The peer's device key, once it said hello.
    pub device: Option<AuthorId>,
    /// Last time both directions were caught up (ms since epoch; 0 = never).
    pub last_sync_ms: u64,
    /// Last error, if the last attempt failed.
    pub last_error: String,
    /// Wakes the peer task for an immediate sync.
    pub wake: Arc<Notify>,
}

/// Everything a node's tasks share.
pub struct Shared {
    /// The log store.
    pub store: Arc<Store>,
    /// This device.
    pub identity: DeviceIdentity,
    /// Its TLS certificate (made from its device key).
    pub cert: DeviceCert,
    /// Roots beside the web's for relays behind a CA-issued certificate (a private CA).
    pub tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// What this node's sync connections to peers run over.
    pub transport: Transport,
    /// The space served.
    pub space: SpaceId,
    /// Store-and-forward only.
    pub relay: bool,
    /// Next arrival position after each durable commit: wakes live streams to peers.
    pub changes: watch::Sender<u64>,
    /// Next arrival position of what is readable: wakes `Watch` streams, at a commit or, for
    /// other authors' events, as soon as they are written (before the disk sync).
    pub visible: watch::Sender<u64>,
    /// Turns true when the node stops: ends live streams so servers can drain.
    pub stopping: watch::Sender<bool>,
    /// Where every ingest of received events runs (one thread, in order).
    pub ingest: IngestThread,
    /// The sync streams each peer device holds open here (`device_streams`).
    pub streams: Arc<crate::device_streams::DeviceStreams>,
    /// Bulk catch-ups started since the node started (far-behind sessions and floods).
    bulk_catch_ups: AtomicU64,
    /// Bulk catch-ups running now.
    bulk_running: watch::Sender<u32>,
    known: Mutex<HashMap<AuthorId, VersionVector>>,
    peers: Mutex<BTreeMap<String, PeerInfo>>,
    refusals: Mutex<Refusals>,
}

/// Moves a position signal forward (never back), waking its receivers only when it moved.
fn raise(signal: &watch::Sender<u64>, next_position: u64) {
    signal.send_if_modified(|current| {
        let newer = next_position > *current;
        if newer {
            *current = next_position;
        }
        newer
    });
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state for a node (starts its ingest thread).
    pub fn new(
        store: Arc<Store>,
        identity: DeviceIdentity,
        space: SpaceId,
        relay: bool,
        tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
        transport: Transport,
    ) -> anyhow::Result<Arc<Shared>> {
        let cert = DeviceCert::new(&identity.key)?;
        let (changes, _) = watch::channel(store.next_position());
        let (visible, _) = watch::channel(store.next_position());
        let (stopping, _) = watch::channel(false);
        let ingest = IngestThread::start(store.memory().received_bytes)?;
        Ok(Arc::new(Shared {
            store,
            identity,
            cert,
            tls_roots,
            transport,
            space,
            relay,
            changes,
            visible,
            stopping,
            ingest,
            bulk_catch_ups: AtomicU64::new(0),
            bulk_running: watch::channel(0).0,
            known: Mutex::new(HashMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(Refusals::default()),
            streams: Arc::default(),
        }))
    }

    /// Announces a durable commit (to live streams and watchers).
    /// Keeps the space's data keys right when this device is an admin (see
    /// `Store::maintain_keys`): after a grant, a revocation, an invitation, or membership
    /// changes from a peer. Returns the key shares written.
    pub fn maintain_keys(&self) -> usize {
        if self.relay {
            return 0;
        }
        let fresh = fresh_secret();
        match self.store.maintain_keys(&self.space, &self.identity.key, now_ms(), fresh) {
            Ok(0) => 0,
            Ok(written) => {
                tracing::info!(space = %self.space.short(), shares = written, "data keys shared");
                self.notify(self.store.next_position());
                written
            }
            Err(error) => {
                tracing::warn!(space = %self.space.short(), %error, "data keys could not be shared");
                0
            }
        }
    }

    /// Wakes live streams and watchers: events up to `next_position` are stored.
    pub fn notify(&self, next_position: u64) {
        raise(&self.changes, next_position);
        raise(&self.visible, next_position);
    }

    /// Counts a bulk catch-up started (and running, until [`Shared::note_bulk_catch_up_ended`]).
    pub fn note_bulk_catch_up(&self) {
        self.bulk_catch_ups.fetch_add(1, Ordering::Relaxed);
        self.bulk_running.send_modify(|running| *running += 1);
    }

    /// A bulk catch-up ended: its views are complete.
    pub fn note_bulk_catch_up_ended(&self) {
        self.bulk_running.send_modify(|running| *running = running.saturating_sub(1));
    }

    /// Waits until no bulk catch-up runs, at most `limit`; whether none runs. Local commands wait
    /// here rather than be refused while a catch-up defers the views (each catch-up is bounded:
    /// it ends when its stream ends, or after `BULK_IDLE_MAX` without a batch).
    pub async fn wait_out_bulk_catch_ups(&self, limit: std::time::Duration) -> bool {
        let mut running = self.bulk_running.subscribe();
        tokio::time::timeout(limit, running.wait_for(|n| *n == 0)).await.is_ok_and(|r| r.is_ok())
    }

    /// Bulk catch-ups started since the node started.
    pub fn bulk_catch_ups(&self) -> u64 {
        self.bulk_catch_ups.load(Ordering::Relaxed)
    }

    /// What a peer device is known to hold (raised by what it sent us and what we sent it).
    pub fn known(&self, device: &AuthorId) -> VersionVector {
        lock(&self.known).get(device).cloned().unwrap_or_default()
    }

    /// Replaces what a peer device is known to hold with what it says it holds (at the start of a
    /// session: what we sent on an earlier, cut connection may never have arrived).
    pub fn reset_known(&self, device: &AuthorId, vector: &VersionVector) {
        lock(&self.known).insert(*device, vector.clone());
    }

    /// Stores a batch received from `peer` (on the ingest thread): what the peer evidently holds
    /// is raised and the commit announced. Refusals are in the report for the caller to act on.
    ///
    /// Other authors' events are shown to `Watch` streams as soon as they are readable, before
    /// this node's disk sync: a live push shows one disk sync sooner, and as their authors hold
    /// them durably already, a power cut in between loses nothing the network lacks. Live
    /// streams to peers are woken once the batch is durable; this device's own events coming
    /// back wait for the disk before anyone sees them.
    pub fn store_from_peer(&self, peer: &AuthorId, batch: PreparedBatch) -> Result<IngestReport, StoreError> {
        let me = self.identity.author();
        let carries_membership = batch.carries_membership();
        let report = if let Some(newest) = batch.last_of(&me) {
            // This device's own events beyond its head (it was restored from an old copy):
            // signed evidence, so no local write may take those seqs until they are stored.
            // Those that continue the chain are stored right below, and the fence is passed.
            let head = self.store.head(&self.space, &me).map_or(0, |h| h.seq);
            if newest.header.seq > head {
                match self.store.raise_fence(&self.space, newest) {
                    Ok(_) => {}
                    Err(casesync_engine::Error::Store(error)) => return Err(error),
                    Err(refused) => {
                        tracing::warn!(%refused, "a peer sent an event of this device's that does not verify")
                    }
                }
            }
            self.store.ingest_prepared(batch)?
        } else {
            self.store.ingest_prepared_announcing(batch, |commit| raise(&self.visible, commit.next_position))?
        };
        self.raise_known(peer, &report.sender_holds);
        if report.accepted > 0 {
            self.notify(report.commit.next_position);
            if carries_membership {
                self.maintain_keys();
            }
        }
        Ok(report)
    }

    /// Which servers this node's sync client accepts: a member of the space (any role: a relay
    /// too), and, on a connection that was made before, the same key as then. Before the space's
    /// founding event is held here (a device that has never synced), any key: nothing it sends
    /// can count unless signed by the space's founder and those it granted, and this device has
    /// nothing of the space's to give away yet.
    pub fn server_policy(self: &Arc<Self>) -> ServerPolicy {
        let shared = Arc::downgrade(self);
        Arc::new(move |device: &AuthorId| {
            let shared = shared.upgrade().ok_or("the node is stopping")?;
            shared.may_connect(device).map(|_| ()).map_err(|refusal| refusal.to_string())
        })
    }

    /// Whether `device` may hold a sync connection in the space: a member whose role holds now
    /// (any role: readers pull, relays forward). Before the space's founding event is held here
    /// (a relay or a joining device that has not synced yet), anyone may connect: nothing but
    /// the founder's own signed events can count until then, and the ingest judges each one.
    pub fn may_connect(&self, device: &AuthorId) -> Result<Role, Refusal> {
        let membership = self.store.membership(&self.space);
        if !membership.is_founded() {
            return Ok(Role::Reader);
        }
        let next = self.store.head(&self.space, device).map_or(0, |h| h.seq) + 1;
        membership.may_connect(device, next, now_ms())
    }

    /// Notes the refusals of an ingest from `peer` and returns the first that ends the session:
    /// one of the peer's own events (it misbehaves; the session with it ends). Refused events of
    /// other authors the peer relays are noted (`casesync status`) and the session goes on, so
    /// one bad member's events never hold back anyone else's. Events that do not count are logged
    /// and skipped: they may count once a grant arrives.
    pub fn session_ending<'r>(&self, peer: &AuthorId, report: &'r IngestReport) -> Option<&'r Rejection> {
        let (judged, refused): (Vec<&Rejection>, Vec<&Rejection>) =
            report.rejected.iter().partition(|r| matches!(r.reason, RejectReason::NotCounted(_)));
        if let Some(first) = judged.first() {
            tracing::warn!(peer = %peer.device_id(), refused = judged.len(), "events that do not count were not stored: {}", first.reason);
        }
        if let Some(first) = refused.first() {
            tracing::warn!(peer = %peer.device_id(), refused = refused.len(), "events refused: {}", first.reason);
            lock(&self.refusals).note(peer, &report.rejected, now_ms());
        }
        refused.into_iter().find(|r| r.author.is_none_or(|author| author == *peer))
    }

    /// Authors whose events this node refused, the latest first.
    pub fn refused_authors(&self) -> Vec<RefusedAuthor> {
        lock(&self.refusals).list()
    }

    /// Raises what a peer device is known to hold.
    pub fn raise_known(&self, device: &AuthorId, vector: &VersionVector) {
        lock(&self.known).entry(*device).or_default().merge(vector);
    }

    /// Registers a configured peer.
    pub fn add_peer(&self, url: &str) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        lock(&self.peers).insert(
            url.to_string(),
            PeerInfo {
                state: PeerState::Offline,
                device: None,
                last_sync_ms: 0,
                last_error: String::new(),
                wake: wake.clone(),
            },
        );
        wake
    }

    /// Updates a peer's status.
    pub fn update_peer(&self, url: &str, f: impl FnOnce(&mut PeerInfo)) {
        if let Some(info) = lock(&self.peers).get_mut(url) {
            f(info);
        }
    }

    /// Every configured peer's status.
    pub fn peers(&self) -> Vec<(String, PeerInfo)> {
        lock(&self.peers).iter().map(|(url, info)| (url.clone(), info.clone())).collect()
    }
}
