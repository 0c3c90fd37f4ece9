//! Sealed bodies: members read, relays and revoked devices cannot, and keys follow membership.

use casesync_engine::commands::Command;
use casesync_engine::model::event::BodyEncoding;
use casesync_engine::model::ids::{CaseId, SpaceId};
use casesync_engine::model::membership::{NewGrant, Role};
use casesync_engine::model::operation::FieldValue;
use casesync_engine::model::sealing::{unwrap_key, KeySet};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::projection::operation_of;
use casesync_engine::store::{Store, StoreOptions};
use casesync_engine::testkit::device;

struct Device {
    key: DeviceKey,
    store: Store,
    dir: tempfile::TempDir,
}

fn node(n: u8) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let key = device(n);
    let store = Store::open_unlocked(dir.path(), StoreOptions::default(), vec![key.clone()]).unwrap();
    Device { key, store, dir }
}

fn relay(n: u8) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions { projections: false, ..StoreOptions::default() }).unwrap();
    Device { key: device(n), store, dir }
}

fn sync(from: &Device, to: &Device, space: &SpaceId) {
    let batch: Vec<_> = from.store.events_after(space, &to.store.vector(space)).map(|r| r.unwrap().2).collect();
    if !batch.is_empty() {
        let report = to.store.ingest(space, batch).unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
}

fn create(d: &Device, space: &SpaceId, now: u64, name: &str) -> CaseId {
    let id = CaseId([now as u8; 16]);
    let fields = vec![
        ("name".to_string(), FieldValue::Text(name.into())),
        ("mobilfunknummer".to_string(), FieldValue::Text("0151-99887766".into())),
    ];
    d.store.execute(space, &d.key, now, Command::CreateCase { id, fields }).unwrap();
    id
}

fn names(d: &Device, space: &SpaceId) -> Vec<String> {
    let mut out: Vec<String> = d
        .store
        .list_cases(space, &Default::default())
        .unwrap()
        .into_iter()
        .filter_map(|c| c.field("name").map(|v| format!("{v:?}")))
        .collect();
    out.sort();
    out
}

fn grant(admin: &Device, space: &SpaceId, to: &Device, role: Role, now: u64) {
    let grant = NewGrant { device: to.key.author(), role, name: format!("d{}", now), until_ms: None };
    admin.store.grant(space, &admin.key, now, grant).unwrap();
    admin.store.maintain_keys(space, &admin.key, now, [now as u8; 32]).unwrap();
}

fn every_file_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(every_file_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn members_read_sealed_cases_and_a_relay_stores_none_of_their_bytes() {
    let (office, laptop, hub) = (node(1), node(2), relay(3));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    assert_eq!(office.store.maintain_keys(&space, &office.key, 1_001, [7; 32]).unwrap(), 1);
    assert!(office.store.sealing_key(&space).is_some());
    grant(&office, &space, &laptop, Role::Writer, 1_002);
    let relay_grant = NewGrant { device: hub.key.author(), role: Role::Relay, name: "hub".into(), until_ms: None };
    office.store.grant(&space, &office.key, 1_003, relay_grant).unwrap();
    create(&office, &space, 10, "Hildegard Zwiebelmeier");
    sync(&office, &hub, &space);
    sync(&hub, &laptop, &space);
    create(&laptop, &space, 11, "Ottokar Quarkstrudel");
    sync(&laptop, &hub, &space);
    sync(&hub, &office, &space);
    let both = vec!["Text(\"Hildegard Zwiebelmeier\")".to_string(), "Text(\"Ottokar Quarkstrudel\")".to_string()];
    assert_eq!(names(&office, &space), both);
    assert_eq!(names(&laptop, &space), both);
    assert_eq!(office.store.state_hash(&space).unwrap(), laptop.store.state_hash(&space).unwrap());
    // Every case event is sealed, and the relay holds no key, no view and no plaintext.
    for item in hub.store.events_after(&space, &Default::default()) {
        let (_, _, message) = item.unwrap();
        let event = casesync_engine::model::event::SignedEvent::from_wire(message).unwrap();
        assert_ne!(event.header.encoding, BodyEncoding::Plain);
        assert!(operation_of(&event, &hub.store.keys()).is_none());
    }
    hub.store.compact().unwrap();
    let bytes = every_file_bytes(hub.dir.path());
    for secret in ["Zwiebelmeier", "Quarkstrudel", "mobilfunknummer", "99887766"] {
        assert!(!contains(&bytes, secret), "{secret} in the relay's files");
    }
}

#[test]
fn a_revocation_rotates_the_key_and_the_revoked_device_cannot_open_what_follows() {
    let (office, laptop, tablet) = (node(1), node(2), node(3));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    office.store.maintain_keys(&space, &office.key, 1_001, [7; 32]).unwrap();
    grant(&office, &space, &laptop, Role::Writer, 1_002);
    grant(&office, &space, &tablet, Role::Reader, 1_003);
    create(&office, &space, 10, "before");
    sync(&office, &laptop, &space);
    sync(&office, &tablet, &space);
    let first = office.store.sealing_key(&space).unwrap();
    office.store.revoke(&space, &office.key, 1_004, laptop.key.author()).unwrap();
    assert!(office.store.key_plan(&space, 1_005).rotate);
    office.store.maintain_keys(&space, &office.key, 1_005, [8; 32]).unwrap();
    let second = office.store.sealing_key(&space).unwrap();
    assert_ne!(first, second);
    assert!(office.store.key_plan(&space, 1_006).is_empty());
    create(&office, &space, 20, "after the revocation");
    sync(&office, &tablet, &space);
    assert_eq!(names(&tablet, &space).len(), 2, "a remaining member reads both");
    // The revoked laptop, given every event and every key it ever held, opens the old ones only.
    let membership = office.store.membership(&space);
    let held: Vec<_> = membership
        .wraps_for(&laptop.key.author())
        .iter()
        .filter_map(|(id, wrap)| unwrap_key(&space, id, wrap, &laptop.key).ok())
        .collect();
    assert!(held.iter().any(|k| k.id() == first));
    assert!(held.iter().all(|k| k.id() != second));
    let keys = KeySet::with_keys(held);
    let opened: Vec<bool> = office
        .store
        .events_after(&space, &Default::default())
        .map(|r| casesync_engine::model::event::SignedEvent::from_wire(r.unwrap().2).unwrap())
        .filter(|e| e.header.encoding == BodyEncoding::Sealed)
        .map(|e| operation_of(&e, &keys).is_some())
        .collect();
    assert_eq!(opened, vec![true, false]);
}

#[test]
fn events_that_arrive_before_their_key_are_folded_once_it_comes() {
    let (office, laptop, home) = (node(1), node(2), node(3));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    office.store.maintain_keys(&space, &office.key, 1_001, [7; 32]).unwrap();
    // The grant reaches home, but not yet the key share that follows it.
    let grant_home = NewGrant { device: home.key.author(), role: Role::Reader, name: "home".into(), until_ms: None };
    office.store.grant(&space, &office.key, 1_002, grant_home).unwrap();
    grant(&office, &space, &laptop, Role::Writer, 1_003);
    sync(&office, &laptop, &space);
    create(&laptop, &space, 10, "sealed early");
    // Home gets the laptop's case first (through the laptop), the office's share later.
    let office_part: Vec<_> = office
        .store
        .events_after(&space, &home.store.vector(&space))
        .map(|r| r.unwrap())
        .filter(|(author, _, _)| *author == office.key.author())
        .collect();
    let (early, late): (Vec<_>, Vec<_>) = office_part.into_iter().partition(|(_, seq, _)| *seq <= 4);
    home.store.ingest(&space, early.into_iter().map(|(_, _, m)| m).collect()).unwrap();
    let laptops: Vec<_> = laptop
        .store
        .events_after(&space, &home.store.vector(&space))
        .map(|r| r.unwrap())
        .filter(|(author, _, _)| *author == laptop.key.author())
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(home.store.ingest(&space, laptops).unwrap().accepted, 1);
    assert!(names(&home, &space).is_empty(), "no key yet: nothing readable");
    home.store.ingest(&space, late.into_iter().map(|(_, _, m)| m).collect()).unwrap();
    assert_eq!(names(&home, &space), vec!["Text(\"sealed early\")".to_string()]);
    assert_eq!(home.store.state_hash(&space).unwrap(), laptop.store.state_hash(&space).unwrap());
    // And after a restart the views stay whole.
    let Device { key, store, dir } = home;
    drop(store);
    let store = Store::open_unlocked(dir.path(), StoreOptions::default(), vec![key.clone()]).unwrap();
    assert_eq!(store.list_cases(&space, &Default::default()).unwrap().len(), 1);
}

/// A space founded by the office, with a writing laptop (synced) and a reading home node (not
/// yet): the office's last event is the key share wrapped for home.
fn office_laptop_and_home() -> (Device, Device, Device, SpaceId) {
    let (office, laptop, home) = (node(1), node(2), node(3));
    let space = office.store.found_space(&office.key, "office", [1; 16], 1_000).unwrap();
    office.store.maintain_keys(&space, &office.key, 1_001, [7; 32]).unwrap();
    grant(&office, &space, &laptop, Role::Writer, 1_002);
    grant(&office, &space, &home, Role::Reader, 1_003);
    sync(&office, &laptop, &space);
    (office, laptop, home, space)
}

#[test]
fn a_bulk_catch_up_that_meets_the_key_late_folds_those_bodies_when_it_ends() {
    let (office, laptop, home, space) = office_laptop_and_home();
    for n in 10..20 {
        create(&laptop, &space, n, &format!("case {n}"));
    }
    // A sender that streams the laptop's cases before the office's last key share (the one
    // wrapped for home).
    let held = |from: &Device| -> Vec<_> {
        from.store.events_after(&space, &home.store.vector(&space)).map(|r| r.unwrap()).collect()
    };
    let cases: Vec<_> =
        held(&laptop).into_iter().filter(|(a, ..)| *a == laptop.key.author()).map(|(.., m)| m).collect();
    let mut membership: Vec<_> = held(&office).into_iter().map(|(.., m)| m).collect();
    let share_for_home = membership.pop().unwrap();
    home.store.begin_bulk_catch_up();
    home.store.ingest(&space, membership).unwrap();
    assert_eq!(home.store.ingest(&space, cases).unwrap().accepted, 10);
    assert_eq!(home.store.keys().len(), 0);
    home.store.ingest(&space, vec![share_for_home]).unwrap();
    assert_eq!(home.store.keys().len(), 1);
    home.store.end_bulk_catch_up().unwrap();
    assert_eq!(names(&home, &space).len(), 10);
    assert_eq!(home.store.state_hash(&space).unwrap(), laptop.store.state_hash(&space).unwrap());
}

#[test]
fn senders_stream_the_membership_authors_first_so_keys_arrive_before_the_bodies_they_open() {
    let (office, laptop, home, space) = office_laptop_and_home();
    create(&laptop, &space, 10, "one");
    let authors: Vec<_> = laptop.store.events_after(&space, &home.store.vector(&space)).map(|r| r.unwrap().0).collect();
    let first_case = authors.iter().position(|a| *a == laptop.key.author()).unwrap();
    assert!(authors[..first_case].iter().all(|a| *a == office.key.author()));
    assert!(authors[first_case..].iter().all(|a| *a == laptop.key.author()));
    // In one catch-up, the home node reads the case: no fold missed its key.
    home.store.begin_bulk_catch_up();
    sync(&laptop, &home, &space);
    home.store.end_bulk_catch_up().unwrap();
    assert_eq!(names(&home, &space), vec!["Text(\"one\")".to_string()]);
}
