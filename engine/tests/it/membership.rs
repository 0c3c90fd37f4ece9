//! Membership in the log: who may write is decided by signed events every store judges the same
//! way, whatever order they arrive in.

use bytes::Bytes;
use casesync_engine::commands::Command;
use casesync_engine::log::ingest::RejectReason;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{CaseId, SpaceId};
use casesync_engine::model::membership::{NewGrant, Refusal, Role};
use casesync_engine::model::operation::FieldValue;
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::{Store, StoreOptions};
use casesync_engine::testkit::{device, interleave_authors, SeededRng};

use casesync_engine::codec::wire;
use casesync_engine::model::operation::Operation;

struct Device {
    key: DeviceKey,
    store: Store,
    _dir: tempfile::TempDir,
}

fn node(n: u8) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    Device { key: device(n), store, _dir: dir }
}

fn relay(n: u8) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions { projections: false, ..StoreOptions::default() }).unwrap();
    Device { key: device(n), store, _dir: dir }
}

/// Sends everything `from` holds that `to` lacks; returns the refusals.
fn sync(from: &Device, to: &Device, space: &SpaceId) -> Vec<RejectReason> {
    let batch: Vec<_> = from.store.events_after(space, &to.store.vector(space)).map(|r| r.unwrap().2).collect();
    if batch.is_empty() {
        return Vec::new();
    }
    to.store.ingest(space, batch).unwrap().rejected.into_iter().map(|r| r.reason).collect()
}

fn create(d: &Device, space: &SpaceId, now: u64, name: &str) -> Result<CaseId, casesync_engine::Error> {
    let id = CaseId([now as u8; 16]);
    let fields = vec![("name".to_string(), FieldValue::Text(name.into()))];
    d.store.execute(space, &d.key, now, Command::CreateCase { id, fields })?;
    Ok(id)
}

/// A case event signed by `key` with the next seq of its chain as `holder` stores it, built
/// without asking the store (a modified client).
fn forged_case_event(holder: &Store, key: &DeviceKey, space: &SpaceId, now: u64) -> SignedEvent {
    let head = holder.head(space, &key.author());
    let header = EventHeader {
        space: *space,
        author: key.author(),
        seq: head.map_or(1, |h| h.seq + 1),
        prev: head.map_or(Default::default(), |h| h.link),
        hlc: now << 16,
        encoding: BodyEncoding::Plain,
    };
    let op = Operation::CreateCase { case: CaseId([9; 16]), fields: Default::default() };
    SignedEvent::build(key, &header, Bytes::from(wire::encode_operation(&op))).unwrap()
}

#[test]
fn only_members_with_a_writing_role_write_and_every_store_refuses_the_rest() {
    let (office, reader, stranger, hub) = (node(1), node(2), node(3), relay(4));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    office
        .store
        .grant(
            &space,
            &office.key,
            1_001,
            NewGrant { device: reader.key.author(), role: Role::Reader, name: "jan".into(), until_ms: None },
        )
        .unwrap();
    create(&office, &space, 1_002, "Anna").unwrap();
    for to in [&reader, &hub] {
        assert!(sync(&office, to, &space).is_empty());
    }
    assert_eq!(hub.store.vector(&space), office.store.vector(&space));
    // A reader's own store refuses its writes...
    let refused = create(&reader, &space, 1_003, "Bob").unwrap_err();
    assert!(refused.to_string().contains("reader"), "{refused}");
    // ...and a modified client's signed events are refused by the relay and the office.
    for (author, store_of) in [(&reader.key, &reader.store), (&stranger.key, &stranger.store)] {
        let forged = forged_case_event(store_of, author, &space, 1_004);
        for to in [&hub, &office] {
            let report = to.store.ingest(&space, vec![forged.to_wire()]).unwrap();
            assert_eq!(report.accepted, 0);
            assert!(matches!(report.rejected[0].reason, RejectReason::NotCounted(_)), "{:?}", report.rejected);
            assert_eq!(to.store.head(&space, &author.author()), None);
        }
    }
    // A membership change by a non-admin does not count either.
    assert!(office
        .store
        .grant(
            &space,
            &reader.key,
            1_005,
            NewGrant { device: stranger.key.author(), role: Role::Admin, name: "x".into(), until_ms: None }
        )
        .is_err());
    assert!(reader
        .store
        .grant(
            &space,
            &reader.key,
            1_005,
            NewGrant { device: stranger.key.author(), role: Role::Admin, name: "x".into(), until_ms: None }
        )
        .is_err());
}

#[test]
fn a_space_accepts_nothing_before_its_founding_event_and_no_impostor_founder() {
    let (office, joiner, impostor) = (node(1), node(2), node(3));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    office
        .store
        .grant(
            &space,
            &office.key,
            1_001,
            NewGrant { device: joiner.key.author(), role: Role::Writer, name: "laptop".into(), until_ms: None },
        )
        .unwrap();
    // The impostor's `Found` with the same nonce makes another space id: refused here.
    let other = impostor.store.found_space(&impostor.key, "thief", [1; 16], 1_000).unwrap();
    assert_ne!(other, space);
    // The grant without the founding event is not judged yet: it waits, refused, not stored.
    let grant = office.store.events_after(&space, &VersionVector::new()).map(|r| r.unwrap().2).nth(1).unwrap();
    let report = joiner.store.ingest(&space, vec![grant]).unwrap();
    assert_eq!(report.accepted, 0);
    assert!(sync(&office, &joiner, &space).is_empty());
    assert!(joiner.store.membership(&space).is_founded());
    create(&joiner, &space, 1_010, "Anna").unwrap();
}

/// Office (founder) grants a laptop writer; the laptop writes offline while the office revokes it
/// having seen only part of its work. Every store, in every delivery order, ends with the same
/// views, without the laptop's events above the cut.
#[test]
fn a_concurrent_revocation_converges_in_every_delivery_order() {
    for seed in 0..12 {
        let (office, laptop, home) = (node(1), node(2), node(3));
        let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
        office
            .store
            .grant(
                &space,
                &office.key,
                1_001,
                NewGrant { device: laptop.key.author(), role: Role::Writer, name: "laptop".into(), until_ms: None },
            )
            .unwrap();
        office
            .store
            .grant(
                &space,
                &office.key,
                1_002,
                NewGrant { device: home.key.author(), role: Role::Writer, name: "home".into(), until_ms: None },
            )
            .unwrap();
        sync(&office, &laptop, &space);
        let seen = create(&laptop, &space, 1_003, "seen by the office").unwrap();
        sync(&laptop, &office, &space);
        // Offline: the laptop writes more; the office revokes it and writes too.
        create(&laptop, &space, 1_004, "written after the cut").unwrap();
        create(&laptop, &space, 1_005, "also after the cut").unwrap();
        office.store.revoke(&space, &office.key, 1_006, laptop.key.author()).unwrap();
        create(&office, &space, 1_007, "office").unwrap();
        // Every event, delivered to `home` in a random order that respects each chain.
        let mut all: Vec<SignedEvent> = Vec::new();
        for from in [&office, &laptop] {
            all.extend(
                from.store
                    .events_after(&space, &VersionVector::new())
                    .map(|r| SignedEvent::from_wire(r.unwrap().2).unwrap()),
            );
        }
        all.sort_by_key(|e| (e.header.author, e.header.seq));
        all.dedup_by_key(|e| (e.header.author, e.header.seq));
        let mut rng = SeededRng::new(seed);
        let order = interleave_authors(&all, &mut rng);
        for chunk in order.chunks(1 + rng.index(3)) {
            home.store.ingest(&space, chunk.iter().map(SignedEvent::to_wire).collect()).unwrap();
        }
        // Whatever was refused for lack of a grant comes again in the next round.
        sync(&office, &home, &space);
        sync(&laptop, &home, &space);
        sync(&home, &laptop, &space);
        sync(&office, &laptop, &space);
        let hashes: Vec<String> =
            [&office, &laptop, &home].iter().map(|d| d.store.state_hash(&space).unwrap()).collect();
        assert!(hashes.iter().all(|h| *h == hashes[0]), "seed {seed}: {hashes:?}");
        let view = home.store.list_cases(&space, &Default::default()).unwrap();
        assert_eq!(view.len(), 2, "seed {seed}: the seen case and the office's");
        assert!(home.store.case_view(&space, &seen).unwrap().is_some());
        // The case history shows the revocation beside the laptop's change, and, where the
        // laptop's later events were stored before the revocation arrived, them as not counting.
        let history = home.store.history(&space, &seen).unwrap();
        assert!(history.iter().any(|i| i.operation == "membership" && i.note.starts_with("revoke")), "{history:?}");
        let late = CaseId([1_004u64 as u8; 16]);
        let late_history = home.store.history(&space, &late).unwrap();
        if home.store.head(&space, &laptop.key.author()).map_or(0, |h| h.seq) >= 2 {
            assert!(late_history.iter().any(|i| i.note.starts_with("does not count")), "seed {seed}: {late_history:?}");
        } else {
            assert!(late_history.iter().all(|i| i.operation == "membership"), "seed {seed}: {late_history:?}");
        }
        // The revoked laptop can no longer write anywhere, its own store included.
        assert!(create(&laptop, &space, 1_100, "later").is_err());
        let forged = forged_case_event(&office.store, &laptop.key, &space, 1_101);
        let report = office.store.ingest(&space, vec![forged.to_wire()]).unwrap();
        assert!(matches!(report.rejected[0].reason, RejectReason::NotCounted(Refusal::Revoked { cut: 1, .. })));
    }
}

#[test]
fn a_substitution_counts_until_its_date_and_no_later() {
    let (office, maria) = (node(1), node(2));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    office
        .store
        .grant(
            &space,
            &office.key,
            1_001,
            NewGrant { device: maria.key.author(), role: Role::Writer, name: "maria".into(), until_ms: Some(2_000) },
        )
        .unwrap();
    sync(&office, &maria, &space);
    create(&maria, &space, 1_500, "covered").unwrap();
    let late = create(&maria, &space, 2_000, "too late").unwrap_err();
    assert!(late.to_string().contains("expired"), "{late}");
    assert!(sync(&maria, &office, &space).is_empty());
    assert_eq!(office.store.list_cases(&space, &Default::default()).unwrap().len(), 1);
    // A substitution ended early: revoked before its date, Maria writes no more.
    let jan = node(3);
    let grant = NewGrant { device: jan.key.author(), role: Role::Writer, name: "jan".into(), until_ms: Some(9_000) };
    office.store.grant(&space, &office.key, 1_600, grant).unwrap();
    sync(&office, &jan, &space);
    create(&jan, &space, 1_700, "covered by jan").unwrap();
    sync(&jan, &office, &space);
    office.store.revoke(&space, &office.key, 1_800, jan.key.author()).unwrap();
    sync(&office, &jan, &space);
    let revoked = create(&jan, &space, 1_900, "after the revocation").unwrap_err();
    assert!(revoked.to_string().contains("revoked"), "{revoked}");
}

/// A writer that signs two different events at one seq (or an event that does not continue its
/// stored chain) has forked: its signed events are kept as evidence (a bounded number) and it is
/// quarantined, its new events refused, until an admin grants it a role again; the evidence and
/// the quarantine outlive a reopen.
#[test]
fn a_device_that_forks_is_quarantined_until_an_admin_grants_it_again() {
    let (office, laptop) = (node(1), node(2));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    let writer = NewGrant { device: laptop.key.author(), role: Role::Writer, name: "laptop".into(), until_ms: None };
    office.store.grant(&space, &office.key, 1_001, writer.clone()).unwrap();
    assert!(sync(&office, &laptop, &space).is_empty());
    let first = forged_case_event(&laptop.store, &laptop.key, &space, 2_000);
    let report = office.store.ingest(&space, vec![first.to_wire()]).unwrap();
    assert_eq!(report.accepted, 1);
    assert!(office.store.forked_authors(&space).is_empty());
    // Another event at the same seq, signed by the laptop's key: a fork.
    let other = forged_case_event(&laptop.store, &laptop.key, &space, 2_001);
    let report = office.store.ingest(&space, vec![other.to_wire()]).unwrap();
    assert!(matches!(report.rejected[0].reason, RejectReason::Fork { .. }), "{:?}", report.rejected);
    let forked = office.store.forked_authors(&space);
    assert_eq!(forked.len(), 1);
    assert_eq!((forked[0].author, forked[0].first_seq, forked[0].pieces), (laptop.key.author(), 1, 1));
    assert!(forked[0].quarantined);
    // Its next event, continuing the chain the office holds, waits.
    let next = forged_case_event(&office.store, &laptop.key, &space, 2_002);
    let report = office.store.ingest(&space, vec![next.to_wire()]).unwrap();
    assert_eq!(report.accepted, 0);
    assert!(matches!(report.rejected[0].reason, RejectReason::Quarantined { first_seq: 1 }), "{:?}", report.rejected);
    // Many more forks at seq 1: the evidence stays bounded.
    for n in 0..40 {
        let fork = forged_case_event(&laptop.store, &laptop.key, &space, 3_000 + n);
        office.store.ingest(&space, vec![fork.to_wire()]).unwrap();
    }
    let pieces = office.store.forks(&space).unwrap().len();
    assert_eq!(pieces, casesync_engine::model::limits::FORK_EVIDENCE_PER_AUTHOR_MAX);
    // The quarantine outlives a reopen.
    let dir = office._dir.path().to_path_buf();
    let Device { key, store, _dir } = office;
    drop(store);
    let office = Device { key, store: Store::open(&dir, StoreOptions::default()).unwrap(), _dir };
    assert!(office.store.forked_authors(&space)[0].quarantined);
    // The admin decides: the laptop is granted its role again. Its next event is stored.
    office.store.grant(&space, &office.key, 5_000, writer).unwrap();
    let forked = office.store.forked_authors(&space);
    assert!(!forked[0].quarantined, "{forked:?}");
    assert_eq!(forked[0].pieces, pieces);
    let report = office.store.ingest(&space, vec![next.to_wire()]).unwrap();
    assert_eq!(report.accepted, 1, "{:?}", report.rejected);
}

/// A fork seen only as an event that does not continue the stored chain (what a node pulling
/// from its head meets) is evidence too.
#[test]
fn an_event_that_does_not_continue_the_stored_chain_is_fork_evidence() {
    let (office, laptop) = (node(1), node(2));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    let writer = NewGrant { device: laptop.key.author(), role: Role::Writer, name: "laptop".into(), until_ms: None };
    office.store.grant(&space, &office.key, 1_001, writer).unwrap();
    assert!(sync(&office, &laptop, &space).is_empty());
    create(&laptop, &space, 2_000, "Anna").unwrap();
    assert!(sync(&laptop, &office, &space).is_empty());
    // The laptop's own store goes on from a different seq 1 (restored from before it wrote).
    let other_side = node(3);
    assert!(sync(&office, &other_side, &space).is_empty());
    let restored = forged_case_event(&other_side.store, &laptop.key, &space, 2_001);
    assert_eq!(restored.header.seq, 2);
    let mut header = restored.header.clone();
    header.prev = casesync_engine::model::ids::EventId([7; 32]);
    let body = bytes::Bytes::from(wire::encode_operation(&Operation::CreateCase {
        case: CaseId([8; 16]),
        fields: Default::default(),
    }));
    let broken = SignedEvent::build(&laptop.key, &header, body).unwrap();
    let report = office.store.ingest(&space, vec![broken.to_wire()]).unwrap();
    assert_eq!(report.rejected[0].reason, RejectReason::BrokenChain);
    assert_eq!(office.store.forks(&space).unwrap(), vec![broken]);
    assert!(office.store.forked_authors(&space)[0].quarantined);
}
