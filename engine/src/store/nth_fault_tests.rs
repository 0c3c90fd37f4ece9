//! A storage failure at any one operation of a whole workload (local commands by two devices,
//! ingests of a peer's batches, bulk catch-ups, a rebuild, reopens), once or from then on: no
//! panic, nothing reported done is missing after a reopen, the reopened views equal a fresh fold
//! of the log, and the views never claim an event they do not hold, not even while the faults
//! last. A full disk is reported as such, damages nothing, and the store works again once there
//! is room.
//!
//! The stores live in `/dev/shm` where there is one: the failures are injected, the disk's
//! speed is not under test, and a synced write there costs no disk flush.

use std::io::ErrorKind;
use std::path::Path;

use crate::commands::Command;
use crate::error::StorageFault;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, CaseId, EventId, SpaceId};
use crate::model::operation::{FieldValue, StatusChange};
use crate::model::signing::DeviceKey;
use crate::model::state_hash::StateHasher;
use crate::model::vector_clock::VersionVector;
use crate::storage::fault_plan::{FaultMode, FaultPlan};
use crate::store::{Store, StoreOptions};

const SPACE: SpaceId = SpaceId([4; 16]);

/// The node's two devices, and the peer's.
const LOCAL: [u8; 2] = [5, 6];
const PEER: [u8; 2] = [1, 2];

/// Cases each bulk catch-up holds in memory: spills all the time.
const BULK_CASES: usize = 4;

/// One step of the workload.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Local commands by both devices (round `n`).
    Commands(u8),
    /// What the node lacks of the peer's first `n` phases, in batches of 3.
    Sync(usize),
    /// The same inside a bulk catch-up.
    BulkSync(usize),
    /// Drop and rebuild the views.
    Rebuild,
    /// Flush every family to table files and sync the WAL (what an import ends with).
    Flush,
    /// Close and open the store.
    Reopen,
}

/// The workload. The rebuild comes early: with the few cases a test's rebuild holds in memory
/// every event it folds past them is a spill, an operation of its own.
const WORKLOAD: [Step; 16] = [
    Step::Commands(0),
    Step::Sync(1),
    Step::Commands(1),
    Step::Rebuild,
    Step::BulkSync(2),
    Step::Commands(2),
    Step::Reopen,
    Step::Commands(3),
    Step::Flush,
    Step::Sync(2),
    Step::BulkSync(3),
    Step::Commands(4),
    Step::Reopen,
    Step::Commands(5),
    Step::Sync(3),
    Step::Commands(6),
];

fn text(s: String) -> FieldValue {
    FieldValue::Text(s)
}

/// The peer's events in three phases (each later phase holds the earlier ones): two devices
/// creating, changing and deleting cases, some of which the node's devices change too.
fn peer_phases(dir: &Path) -> [Vec<SignedEvent>; 3] {
    let peer = Store::open(dir, StoreOptions::compatible()).unwrap();
    let keys = PEER.map(|n| DeviceKey::from_secret([n; 32]));
    let mut phases: [Vec<SignedEvent>; 3] = Default::default();
    let mut clock = 100;
    for (phase, held) in phases.iter_mut().enumerate() {
        for n in 0..14u8 {
            clock += 1;
            let key = &keys[usize::from(n) % 2];
            let case = CaseId([n + 30 * phase as u8; 16]);
            let fields = vec![("name".into(), text(format!("client {phase}-{n}")))];
            peer.execute(&SPACE, key, clock, Command::CreateCase { id: case, fields }).unwrap();
            let fields = vec![("phone".into(), text(format!("030-{phase}{n}")))];
            peer.execute(&SPACE, &keys[1 - usize::from(n) % 2], clock, Command::SetFields { case, fields }).unwrap();
            if n % 4 == 0 {
                let change = StatusChange::Delete;
                peer.execute(&SPACE, key, clock, Command::ChangeStatus { case, change }).unwrap();
            }
        }
        *held = peer
            .events_after(&SPACE, &VersionVector::new())
            .map(|item| SignedEvent::from_wire(item.unwrap().2).unwrap())
            .collect();
    }
    phases
}

/// The local commands of round `round` for device `device` (0 or 1): a case of its own, and
/// changes to cases of the peer and of the other device (refused while those are not held).
fn commands(round: u8, device: u8) -> Vec<Command> {
    let own = |r: u8| CaseId([100 + 2 * r + device; 16]);
    let mut commands =
        vec![Command::CreateCase { id: own(round), fields: vec![("name".into(), text(format!("r{round}")))] }];
    for (n, case) in
        [CaseId([round % 14; 16]), CaseId([30 + round % 14; 16]), own(round.saturating_sub(1))].into_iter().enumerate()
    {
        let fields = vec![(format!("f{n}"), text(format!("{device}-{round}")))];
        commands.push(Command::SetFields { case, fields });
    }
    let other = CaseId([100 + 2 * round.saturating_sub(1) + (1 - device); 16]);
    commands.push(Command::SetFields { case: other, fields: vec![("seen".into(), text(format!("{device}")))] });
    if round % 3 == 2 {
        commands.push(Command::ChangeStatus { case: CaseId([1 + round; 16]), change: StatusChange::Delete });
    }
    commands
}

/// What the store reported done: events it said it committed.
#[derive(Default)]
struct Acknowledged {
    events: Vec<(AuthorId, u64, EventId)>,
    /// Operations that reported a failure.
    failures: u64,
}

/// The views claim no event they do not hold: their watermark is within the log's vector, and
/// where it equals it the stored cases equal a fresh fold of the events it names. (A batch whose
/// write landed but whose WAL sync failed is in the log but in neither: the store is poisoned,
/// and the next open counts it.)
fn assert_views_honest(store: &Store, context: &str) {
    let (watermark, vector) = (store.projection_watermark(&SPACE).unwrap(), store.vector(&SPACE));
    for (author, seq) in watermark.iter() {
        assert!(*seq <= vector.get(author), "{context}: the watermark claims {author:?} {seq} beyond the log");
    }
    if watermark == vector {
        let fold = store.fold_log(&SPACE, |h| watermark.contains(&h.author, h.seq)).unwrap();
        let folded = StateHasher::of(&fold.into_sorted_cases());
        assert_eq!(store.scanned_state_hash(&SPACE).unwrap(), folded, "{context}: views differ from the log");
    }
}

/// Sends what `store` lacks of `events`, in batches of 3, as a session would.
fn sync(store: &Store, events: &[SignedEvent], done: &mut Acknowledged) {
    let held = store.vector(&SPACE);
    let missing: Vec<SignedEvent> =
        events.iter().filter(|e| e.header.seq > held.get(&e.header.author)).cloned().collect();
    for batch in missing.chunks(3) {
        match store.ingest(&SPACE, batch.iter().map(SignedEvent::to_wire).collect()) {
            Ok(report) => {
                let stored = report.sender_holds;
                let landed = batch.iter().filter(|e| e.header.seq <= stored.get(&e.header.author));
                done.events.extend(landed.map(|e| (e.header.author, e.header.seq, e.id)));
            }
            Err(_) => done.failures += 1,
        }
    }
}

/// Runs the workload on the store in `dir` (with whatever plan is attached to it); returns what
/// was acknowledged, and the store (none when a reopen failed: the workload stops there).
fn run_workload(dir: &Path, phases: &[Vec<SignedEvent>; 3], context: &str) -> (Option<Store>, Acknowledged) {
    let keys = LOCAL.map(|n| DeviceKey::from_secret([n; 32]));
    let mut done = Acknowledged::default();
    let Ok(mut store) = Store::open(dir, StoreOptions::compatible()) else {
        done.failures += 1;
        return (None, done);
    };
    for (index, step) in WORKLOAD.into_iter().enumerate() {
        let context = format!("{context}, step {index} {step:?}");
        match step {
            Step::Commands(round) => {
                for (device, key) in keys.iter().enumerate() {
                    for (n, command) in commands(round, device as u8).into_iter().enumerate() {
                        let now = 1_000 * u64::from(round) + n as u64;
                        match store.execute(&SPACE, key, now, command) {
                            Ok((event, _, _)) => done.events.push((event.header.author, event.header.seq, event.id)),
                            // A command on a case not held (yet) is refused: no storage failure.
                            Err(crate::Error::Command(_)) => {}
                            Err(_) => done.failures += 1,
                        }
                    }
                }
            }
            Step::Sync(phase) => sync(&store, &phases[phase - 1], &mut done),
            Step::BulkSync(phase) => {
                store.begin_bulk_catch_up_holding(BULK_CASES, true);
                sync(&store, &phases[phase - 1], &mut done);
                match store.end_bulk_catch_up() {
                    Ok(_) => assert_eq!(
                        store.projection_watermark(&SPACE).unwrap(),
                        store.vector(&SPACE),
                        "{context}: a bulk catch-up that ended well leaves current views"
                    ),
                    Err(_) => done.failures += 1,
                }
            }
            Step::Rebuild => match store.rebuild_projections(&SPACE) {
                Ok(hash) => {
                    let folded = StateHasher::of(&store.fold_log(&SPACE, |_| true).unwrap().into_sorted_cases());
                    assert_eq!(hash, folded, "{context}: the rebuild's state hash");
                    assert_eq!(store.projection_watermark(&SPACE).unwrap(), store.vector(&SPACE), "{context}");
                }
                Err(_) => done.failures += 1,
            },
            Step::Flush => {
                if store.persist().is_err() {
                    done.failures += 1;
                }
            }
            Step::Reopen => {
                drop(store);
                match Store::open(dir, StoreOptions::compatible()) {
                    Ok(reopened) => store = reopened,
                    Err(_) => {
                        done.failures += 1;
                        return (None, done);
                    }
                }
            }
        }
        assert_views_honest(&store, &context);
    }
    (Some(store), done)
}

/// After the faults are lifted: the store reopens with every acknowledged event, every chain
/// intact, views equal to a fresh fold of its log; it takes new writes, and what the peer holds
/// arrives in full.
fn assert_recovered(dir: &Path, phases: &[Vec<SignedEvent>; 3], done: &Acknowledged, context: &str) {
    let store = Store::open(dir, StoreOptions::compatible()).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    for (author, seq, id) in &done.events {
        let stored = store.get_event(&SPACE, author, *seq).unwrap();
        assert_eq!(stored.map(|e| e.id), Some(*id), "{context}: acknowledged event {author:?} {seq} lost");
    }
    let mut links = std::collections::BTreeMap::new();
    for item in store.events_after(&SPACE, &VersionVector::new()) {
        let event = SignedEvent::from_wire(item.unwrap().2).unwrap();
        let prev = links.insert(event.header.author, event.link).unwrap_or(EventId::ZERO);
        assert_eq!(
            event.header.prev, prev,
            "{context}: chain of {:?} broken at {}",
            event.header.author, event.header.seq
        );
    }
    assert_eq!(store.projection_watermark(&SPACE).unwrap(), store.vector(&SPACE), "{context}: views current");
    let folded = StateHasher::of(&store.fold_log(&SPACE, |_| true).unwrap().into_sorted_cases());
    assert_eq!(store.state_hash(&SPACE).unwrap(), folded, "{context}: views equal the log");
    assert_eq!(store.scanned_state_hash(&SPACE).unwrap(), folded, "{context}: stored cases equal the log");
    let mut more = Acknowledged::default();
    sync(&store, &phases[2], &mut more);
    assert_eq!(more.failures, 0, "{context}");
    for event in &phases[2] {
        assert!(store.vector(&SPACE).contains(&event.header.author, event.header.seq), "{context}: the sync completes");
    }
    let key = DeviceKey::from_secret([LOCAL[0]; 32]);
    let command = Command::CreateCase { id: CaseId([250; 16]), fields: vec![] };
    store.execute(&SPACE, &key, 99_999, command).unwrap_or_else(|e| panic!("{context}: a write after recovery: {e}"));
    assert_views_honest(&store, context);
}

fn scratch_dir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

#[test]
fn a_failure_at_every_storage_operation_of_a_workload_loses_nothing_acknowledged() {
    let peer_dir = scratch_dir();
    let phases = peer_phases(peer_dir.path());
    // The workload without faults: how many storage operations it makes.
    let clean = scratch_dir();
    let counting = FaultPlan::counting();
    FaultPlan::attach(clean.path(), counting.clone());
    let started = std::time::Instant::now();
    let (store, done) = run_workload(clean.path(), &phases, "without faults");
    drop(store);
    println!("one run without faults: {:?}", started.elapsed());
    FaultPlan::detach(clean.path());
    assert_eq!(done.failures, 0, "the workload runs without failures when nothing fails");
    let operations = counting.operations();
    let names = counting.names();
    for step in [
        "write",
        "WAL sync",
        "flush",
        "ingest of external files",
        "drop of files",
        "bulk catch-up: fold",
        "rebuild: case ranges",
        "rebuild: spill",
    ] {
        assert!(names.contains(&step), "the workload makes every kind of operation: {step} missing");
    }
    assert!(operations >= 200, "a workload of a few hundred operations: {operations}");
    let mut kinds = std::collections::BTreeMap::new();
    for name in &names {
        *kinds.entry(*name).or_insert(0) += 1;
    }
    println!("{operations} storage operations in the workload: {kinds:?}");
    let mut injected = 0;
    for mode in [FaultMode::Once, FaultMode::FromThenOn] {
        for n in 1..=operations {
            let context =
                format!("operation {n} (in the run without faults: {:?}) failing {mode:?}", names[n as usize - 1]);
            let dir = scratch_dir();
            let plan = FaultPlan::failing(n, mode, ErrorKind::Other);
            FaultPlan::attach(dir.path(), plan.clone());
            let (store, done) = run_workload(dir.path(), &phases, &context);
            drop(store);
            FaultPlan::detach(dir.path());
            assert!(plan.injected() >= 1, "{context}: the fault fired");
            assert!(done.failures >= 1 || plan.injected() == 0, "{context}: the failure was reported");
            injected += plan.injected();
            assert_recovered(dir.path(), &phases, &done, &context);
        }
    }
    println!("{injected} faults injected over {} runs", 2 * operations);
}

#[test]
fn a_full_disk_is_reported_as_such_damages_nothing_and_the_store_works_once_there_is_room() {
    let dir = scratch_dir();
    let key = DeviceKey::from_secret([LOCAL[0]; 32]);
    let create =
        |n: u8| Command::CreateCase { id: CaseId([n; 16]), fields: vec![("name".into(), text(format!("{n}")))] };
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    for n in 0..5 {
        store.execute(&SPACE, &key, u64::from(n), create(n)).unwrap();
    }
    let before = (store.vector(&SPACE), store.state_hash(&SPACE).unwrap());
    drop(store);
    // The disk fills up: every storage operation from the first on fails.
    let plan = FaultPlan::failing(1, FaultMode::FromThenOn, ErrorKind::StorageFull);
    FaultPlan::attach(dir.path(), plan.clone());
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    assert!(!store.is_poisoned(), "an open writes nothing here: it works on a full disk");
    let checked = store.check_writable().unwrap_err();
    assert_eq!(checked.fault(), Some(StorageFault::NoSpace), "the check says the disk is full: {checked}");
    assert!(store.is_poisoned(), "a failed check poisons the store, as any failed write");
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let full = store.execute(&SPACE, &key, 10, create(10)).unwrap_err();
    assert_eq!(full.fault(), Some(StorageFault::NoSpace), "a full disk says so: {full}");
    assert!(store.is_poisoned());
    // Writes after it are refused until a reopen (the store poisoned itself), and say why.
    let refused = store.execute(&SPACE, &key, 11, create(11)).unwrap_err();
    assert!(refused.to_string().contains("reopen"), "{refused}");
    assert_eq!((store.vector(&SPACE), store.state_hash(&SPACE).unwrap()), before, "nothing changed");
    assert_views_honest(&store, "full disk");
    // Room again: a reopen takes writes.
    plan.lift();
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    assert_eq!(store.vector(&SPACE), before.0, "nothing lost");
    store.check_writable().unwrap();
    assert_eq!(store.state_hash(&SPACE).unwrap(), before.1, "the check changes nothing");
    store.execute(&SPACE, &key, 12, create(12)).unwrap();
    assert_views_honest(&store, "room again");

    // A full disk at the end of a bulk catch-up: reported as such, the views' watermark stays
    // behind, and once there is room the next commit rebuilds them, in the same process (only a
    // failed write, WAL sync or flush poisons the store).
    let peer_dir = scratch_dir();
    let phases = peer_phases(peer_dir.path());
    store.begin_bulk_catch_up_holding(BULK_CASES, false);
    let mut done = Acknowledged::default();
    sync(&store, &phases[2], &mut done);
    assert_eq!(done.failures, 0);
    plan.fail_next(FaultMode::FromThenOn, ErrorKind::StorageFull);
    let full = store.end_bulk_catch_up().unwrap_err();
    assert_eq!(full.fault(), Some(StorageFault::NoSpace), "{full}");
    assert_ne!(store.projection_watermark(&SPACE).unwrap(), store.vector(&SPACE), "the views say they lag");
    assert_views_honest(&store, "full disk at the end of a bulk catch-up");
    plan.lift();
    store.execute(&SPACE, &key, 13, create(13)).unwrap();
    FaultPlan::detach(dir.path());
    drop(store);
    assert_recovered(dir.path(), &phases, &done, "after a full disk");
}
