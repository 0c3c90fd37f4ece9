//! Merge rules, spelled out as scenarios, and the convergence property over random devices,
//! operations, partitions and delivery orders.

use std::collections::BTreeMap;

use casesync_engine::commands::Command;
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::{CaseId, EntryId};
use casesync_engine::model::operation::{Dot, Status, StatusChange};
use casesync_engine::model::state_hash::StateHasher;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::projection::{fold::Fold, operation_of};
use proptest::prelude::*;

use crate::history::*;
use crate::support::*;

fn set(case: CaseId, name: &str, value: &str) -> Command {
    Command::SetFields { case, fields: vec![(name.into(), text(value))] }
}

const CASE: CaseId = CaseId([1; 16]);

fn office_and_home() -> (Device, Device) {
    let (office, home) = (Device::new(1), Device::new(2));
    office.run(1, Command::CreateCase { id: CASE, fields: vec![("name".into(), text("Ann"))] });
    sync(&office, &home);
    (office, home)
}

#[test]
fn different_fields_offline_both_kept() {
    let (office, home) = office_and_home();
    office.run(10, set(CASE, "phone", "111"));
    home.run(11, set(CASE, "address", "Elm St"));
    sync(&office, &home);
    for d in [&office, &home] {
        let view = d.view(CASE);
        assert_eq!(view.field("phone"), Some(&text("111")));
        assert_eq!(view.field("address"), Some(&text("Elm St")));
        assert!(!view.has_conflicts());
    }
    assert_eq!(office.store.state_hash(&SPACE).unwrap(), home.store.state_hash(&SPACE).unwrap());
}

#[test]
fn same_field_concurrently_is_a_conflict_with_both_values_then_resolved() {
    let (office, home) = office_and_home();
    office.run(10, set(CASE, "phone", "111"));
    home.run(20, set(CASE, "phone", "222"));
    sync(&office, &home);
    let view = office.view(CASE);
    let phone = view.fields.iter().find(|f| f.name == "phone").unwrap();
    let values: Vec<_> = phone.conflict.iter().map(|v| v.value.clone()).collect();
    assert_eq!(values.len(), 2);
    assert!(values.contains(&text("111")) && values.contains(&text("222")));
    // The shown value is the one with the highest hlc, on both devices.
    assert_eq!(phone.value, text("222"));
    assert_eq!(home.view(CASE), view);
    let conflicts = office.store.conflicts(&SPACE, None).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].field, "phone");
    // A later write that saw both resolves it everywhere.
    office.run(30, set(CASE, "phone", "333"));
    sync(&office, &home);
    assert!(!home.view(CASE).has_conflicts());
    assert_eq!(home.view(CASE).field("phone"), Some(&text("333")));
    assert!(home.store.conflicts(&SPACE, None).unwrap().is_empty());
}

#[test]
fn delete_with_concurrent_change_is_flagged_and_restore_brings_every_field_back() {
    let (office, home) = office_and_home();
    office.run(10, Command::ChangeStatus { case: CASE, change: StatusChange::Delete });
    home.run(11, set(CASE, "phone", "555"));
    sync(&office, &home);
    for d in [&office, &home] {
        let view = d.view(CASE);
        assert_eq!(view.status, Status::Deleted);
        assert!(view.deleted_with_concurrent_changes);
        assert_eq!(view.field("phone"), Some(&text("555")));
    }
    home.run(20, Command::ChangeStatus { case: CASE, change: StatusChange::Restore });
    sync(&office, &home);
    let view = office.view(CASE);
    assert_eq!(view.status, Status::Active);
    assert!(!view.deleted_with_concurrent_changes);
    assert_eq!(view.field("name"), Some(&text("Ann")));
    assert_eq!(view.field("phone"), Some(&text("555")));
}

#[test]
fn delete_seen_everywhere_is_a_plain_delete_and_archive_round_trips() {
    let (office, home) = office_and_home();
    home.run(5, Command::ChangeStatus { case: CASE, change: StatusChange::Archive });
    sync(&office, &home);
    assert_eq!(office.view(CASE).status, Status::Archived);
    office.run(6, Command::ChangeStatus { case: CASE, change: StatusChange::Unarchive });
    office.run(7, Command::ChangeStatus { case: CASE, change: StatusChange::Delete });
    sync(&office, &home);
    let view = home.view(CASE);
    assert_eq!(view.status, Status::Deleted);
    assert!(!view.deleted_with_concurrent_changes);
    assert!(view.status_conflict.is_empty());
    let err =
        home.store.execute(&SPACE, &home.key, 8, Command::ChangeStatus { case: CASE, change: StatusChange::Archive });
    assert!(err.is_err());
}

#[test]
fn entries_change_independently() {
    let (office, home) = office_and_home();
    let (e1, e2) = (EntryId([1; 16]), EntryId([2; 16]));
    office.run(10, Command::AddEntry { case: CASE, entry: e1, fields: vec![("note".into(), text("first session"))] });
    home.run(11, Command::AddEntry { case: CASE, entry: e2, fields: vec![("note".into(), text("call"))] });
    sync(&office, &home);
    office.run(
        12,
        Command::UpdateEntry { case: CASE, entry: e1, fields: vec![("note".into(), text("first session, long"))] },
    );
    home.run(13, Command::RemoveEntry { case: CASE, entry: e2 });
    sync(&office, &home);
    let view = home.view(CASE);
    assert_eq!(view.entries.len(), 1);
    assert_eq!(view.entries[0].fields[0].value, text("first session, long"));
    assert!(!view.has_conflicts());
    // Remove concurrent with an update: kept visible and flagged.
    office.run(20, Command::UpdateEntry { case: CASE, entry: e1, fields: vec![("note".into(), text("edited"))] });
    home.run(21, Command::RemoveEntry { case: CASE, entry: e1 });
    sync(&office, &home);
    let view = office.view(CASE);
    assert_eq!(view.entries.len(), 1);
    assert!(view.entries[0].removed_with_concurrent_changes);
}

#[test]
fn a_write_arriving_before_what_it_supersedes_stays_superseded() {
    // office writes v1; home sees it and overwrites; laptop receives home's write first.
    let (office, home) = office_and_home();
    let laptop = Device::new(3);
    office.run(10, set(CASE, "phone", "old"));
    home.pull_from(&office);
    home.run(11, set(CASE, "phone", "new"));
    // laptop gets office's create (needed to know the case) but not office's "old" write...
    // deliver home's events first, then office's.
    let from_home: Vec<_> = home.store.events_after(&SPACE, &VersionVector::new()).map(|r| r.unwrap().2).collect();
    let home_author = home.key.author();
    let home_only: Vec<_> = from_home
        .into_iter()
        .filter(|m| SignedEvent::from_wire(m.clone()).unwrap().header.author == home_author)
        .collect();
    laptop.store.ingest(&SPACE, home_only).unwrap();
    laptop.pull_from(&office);
    let view = laptop.view(CASE);
    assert_eq!(view.field("phone"), Some(&text("new")));
    assert!(!view.has_conflicts());
    assert_eq!(laptop.store.state_hash(&SPACE).unwrap(), home.store.state_hash(&SPACE).unwrap());
}

#[test]
fn rebuild_gives_the_same_state_hash() {
    let (office, home) = office_and_home();
    office.run(10, set(CASE, "phone", "1"));
    home.run(10, set(CASE, "phone", "2"));
    sync(&office, &home);
    let before = office.store.state_hash(&SPACE).unwrap();
    assert_eq!(office.store.rebuild_projections(&SPACE).unwrap(), before);
    assert_eq!(office.store.state_hash(&SPACE).unwrap(), before);
}

// ---- Convergence property ----

/// The state hash of folding `events` in the given order, from scratch and in memory.
fn fold_hash(events: &[SignedEvent]) -> String {
    let mut fold = Fold::new(VersionVector::new());
    for e in events {
        fold.apply(e, |_| Ok::<_, ()>(None)).unwrap();
    }
    StateHasher::of(&fold.into_sorted_cases())
}

/// The state hash of folding `events` as RocksDB may see them: split into random subsets, each
/// folded as a delta (no stored state, no pending dots dropped), the deltas joined in another
/// order (the merge operator's grouping is arbitrary).
fn delta_join_hash(events: &[SignedEvent], rng: &mut SeededRng) -> String {
    let chunks = 1 + rng.index(4);
    let mut folds: Vec<Fold> = (0..chunks).map(|_| Fold::deltas()).collect();
    for e in events {
        folds[rng.index(chunks)].apply(e, |_| Ok::<_, ()>(None)).unwrap();
    }
    let mut joined: BTreeMap<CaseId, casesync_engine::model::merge::CaseState> = BTreeMap::new();
    for fold in folds.into_iter().rev() {
        for (case, state) in fold.into_cases() {
            match joined.get_mut(&case) {
                Some(into) => into.join(state),
                None => {
                    joined.insert(case, state);
                }
            }
        }
    }
    StateHasher::of(joined.values())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn devices_converge_and_no_write_is_lost((n, steps) in history(2..=5, 10..40, 3), seed in any::<u64>()) {
        let devices = play(n, &steps);
        let hash = devices[0].store.state_hash(&SPACE).unwrap();
        for d in &devices {
            prop_assert_eq!(d.store.state_hash(&SPACE).unwrap(), hash.clone());
        }
        let events: Vec<SignedEvent> = devices[0].store.events_after(&SPACE, &VersionVector::new())
            .map(|r| SignedEvent::from_wire(r.unwrap().2).unwrap()).collect();
        let mut rng = SeededRng::new(seed);
        for k in 0..4u64 {
            let order = interleave_authors(&events, &mut rng);
            prop_assert_eq!(fold_hash(&order), hash.clone(), "delivery order {} (seed {}) differs", k, seed);
            prop_assert_eq!(delta_join_hash(&order, &mut rng), hash.clone(), "joined deltas {} (seed {}) differ", k, seed);
        }
        // The rebuild's hash comes from the digests of the cases it wrote; the scan reads them.
        prop_assert_eq!(devices[0].store.rebuild_projections(&SPACE).unwrap(), hash.clone());
        prop_assert_eq!(devices[0].store.scanned_state_hash(&SPACE).unwrap(), hash.clone());
        // No acknowledged write is missing: each field write is current, or a known write
        // names it as superseded.
        let mut superseded: Vec<(Dot, String, Option<EntryId>)> = Vec::new();
        let mut written: Vec<(Dot, String, Option<EntryId>, CaseId)> = Vec::new();
        for e in &events {
            let Some(op) = operation_of(e, &Default::default()) else { continue };
            let dot = Dot { author: e.header.author, seq: e.header.seq };
            for w in op.fields() {
                written.push((dot, w.name.to_string(), op.entry(), op.case()));
                for s in &w.supersedes { superseded.push((*s, w.name.to_string(), op.entry())); }
            }
        }
        for (dot, name, entry, case) in written {
            let state = devices[0].store.case_state(&SPACE, &case).unwrap().unwrap();
            let record = match entry { None => &state.record, Some(e) => &state.entries[&e] };
            let current = record.fields.get(name.as_str()).is_some_and(|r| r.current.iter().any(|v| v.dot == dot));
            let replaced = superseded.contains(&(dot, name.clone(), entry));
            prop_assert!(current || replaced, "write {:?} to {} lost", dot, name);
        }
    }
}

/// A delete says what its writer had seen only of the devices whose versions the case holds:
/// in a space forty devices have written to, it names two, and still covers what it saw.
#[test]
fn a_delete_names_only_the_devices_whose_versions_the_case_holds() {
    use casesync_engine::codec::wire::decode_operation;
    use casesync_engine::model::operation::Operation;
    let (office, home) = office_and_home();
    for n in 10..50u8 {
        let other = Device::new(n);
        other.run(5, Command::CreateCase { id: CaseId([n; 16]), fields: vec![("name".into(), text("other"))] });
        office.pull_from(&other);
    }
    home.run(20, set(CASE, "phone", "555"));
    sync(&office, &home);
    assert!(office.store.vector(&SPACE).len() > 40);
    office.run(30, Command::ChangeStatus { case: CASE, change: StatusChange::Delete });
    let author = office.key.author();
    let head = office.store.vector(&SPACE).get(&author);
    let delete = office.store.get_event(&SPACE, &author, head).unwrap().unwrap();
    let Ok(Operation::ChangeStatus { write, .. }) = decode_operation(&delete.body) else { panic!("not a delete") };
    assert_eq!(write.seen.len(), 2, "{:?}", write.seen);
    assert_eq!(write.seen.get(&home.key.author()), 1);
    sync(&office, &home);
    for device in [&office, &home] {
        let view = device.view(CASE);
        assert_eq!(view.status, Status::Deleted);
        assert!(!view.deleted_with_concurrent_changes, "the delete saw the phone change");
    }
}
