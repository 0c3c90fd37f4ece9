//! The projection paths through the store: incremental folds, bulk catch-ups, rebuilds, merge
//! operands joined by RocksDB, and the remembered state hash.

use crate::commands::Command;
use crate::model::ids::{CaseId, SpaceId};
use crate::model::operation::FieldValue;
use crate::model::signing::DeviceKey;
use crate::store::{Store, StoreOptions};

#[test]
fn the_log_read_on_a_second_thread_folds_to_the_stored_views_and_stops_at_a_corrupt_record() {
    use crate::codec::keys::{event_key, CF_EVENTS};
    use crate::error::StoreError;
    use crate::model::state_hash::StateHasher;
    let dir = tempfile::tempdir().unwrap();
    let store = a_busy_store(dir.path(), 40); // 120 events: several batches of the reader
    let space = SpaceId([1; 16]);
    let stored = store.state_hash(&space).unwrap();
    let cases = store.fold_log(&space, |_| true).unwrap().into_sorted_cases();
    assert_eq!(StateHasher::of(&cases), stored);
    assert_eq!(store.rebuild_projections(&space).unwrap(), stored);
    let mut seen = 0;
    let _ = store.fold_log(&space, |_| {
        seen += 1;
        false
    });
    assert_eq!(seen, 120, "include sees every event, in order, on the calling thread");

    // A record that does not decode, past the first batches: an error naming it, no hang.
    let author = DeviceKey::from_secret([2; 32]).author();
    store.db.rocks().put_cf(store.db.cf(CF_EVENTS), event_key(&space, &author, 50), b"not an event").unwrap();
    for outcome in [store.fold_log(&space, |_| true).map(|_| ()), store.rebuild_projections(&space).map(|_| ())] {
        match outcome {
            Err(StoreError::Corrupt { author: named, seq: 50, .. }) => assert_eq!(named, author),
            other => panic!("expected the corrupt record named, got {:?}", other.err()),
        }
    }
}

/// A store with `cases` cases, each created and then set by alternating keys.
fn a_busy_store(dir: &std::path::Path, cases: u8) -> Store {
    let store = Store::open(dir, StoreOptions::compatible()).unwrap();
    let space = SpaceId([1; 16]);
    let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32])];
    for round in 0..3u8 {
        for n in 0..cases {
            let key = &keys[usize::from(n + round) % 2];
            let case = CaseId([n; 16]);
            let command = if round == 0 {
                Command::CreateCase { id: case, fields: vec![] }
            } else {
                Command::SetFields { case, fields: vec![("f".into(), FieldValue::Text(format!("{round}-{n}")))] }
            };
            store.execute(&space, key, u64::from(round) * 100 + u64::from(n), command).unwrap();
        }
    }
    store
}

/// A busy source store with `cases` cases and an empty store to catch up into (with their
/// directories, which must outlive them).
fn a_busy_store_and_an_empty_one(cases: u8) -> (tempfile::TempDir, Store, tempfile::TempDir, Store) {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = a_busy_store(a_dir.path(), cases);
    let b = Store::open(b_dir.path(), StoreOptions::compatible()).unwrap();
    (a_dir, a, b_dir, b)
}

fn catch_up(from: &Store, to: &Store, batch: usize) {
    let space = SpaceId([1; 16]);
    let events: Vec<_> = from.events_after(&space, &to.vector(&space)).map(|r| r.unwrap().2).collect();
    for chunk in events.chunks(batch) {
        to.ingest(&space, chunk.to_vec()).unwrap();
    }
}

#[test]
fn a_bounded_fold_evicts_the_cases_touched_least_recently() {
    let space = SpaceId([1; 16]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let key = DeviceKey::from_secret([1; 32]);
    for n in [1u8, 2, 1, 3] {
        let fields = vec![("f".into(), FieldValue::Text(n.to_string()))];
        let command = if store.case_view(&space, &CaseId([n; 16])).unwrap().is_none() {
            Command::CreateCase { id: CaseId([n; 16]), fields }
        } else {
            Command::SetFields { case: CaseId([n; 16]), fields }
        };
        store.execute(&space, &key, 1, command).unwrap();
    }
    let mut fold = crate::projection::fold::Fold::deltas();
    for event in store.events_after(&space, &Default::default()) {
        let event = crate::model::event::SignedEvent::from_wire(event.unwrap().2).unwrap();
        fold.apply(&event, |_| Ok::<_, ()>(None)).unwrap();
    }
    let evicted: Vec<CaseId> = fold.evict_least_recent(1).into_iter().map(|c| c.state.id).collect();
    assert_eq!(evicted, vec![CaseId([2; 16])]);
    let rest: Vec<CaseId> = fold.take_all().into_iter().map(|c| c.state.id).collect();
    assert_eq!(rest, vec![CaseId([1; 16]), CaseId([3; 16])], "in case id order");
    assert!(fold.evict_least_recent(5).is_empty());
}

#[test]
fn a_bulk_catch_up_folds_while_ingesting_and_spills_deltas_beside_the_events() {
    let space = SpaceId([1; 16]);
    let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(12);
    b.begin_bulk_catch_up();
    // Batches of 5 over 12 cases (4 held in memory in unit tests): deltas of the same case
    // are spilled several times and joined by RocksDB.
    catch_up(&a, &b, 5);
    assert_eq!(b.projections_behind(&space).unwrap(), 36);
    assert_eq!(b.end_bulk_catch_up().unwrap(), 0, "no rebuild needed");
    assert_eq!(b.projections_behind(&space).unwrap(), 0);
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    assert_eq!(b.list_cases(&space, &Default::default()).unwrap(), a.list_cases(&space, &Default::default()).unwrap());
    assert_eq!(b.history(&space, &CaseId([3; 16])).unwrap(), a.history(&space, &CaseId([3; 16])).unwrap());
    assert_eq!(b.rebuild_projections(&space).unwrap(), a.state_hash(&space).unwrap());
}

/// A store with three small cases and one case `big` written full of distinct field names (200
/// a write, `writes` writes), by two devices in turn.
fn a_store_with_one_case_full_of_fields(dir: &std::path::Path, writes: u16) -> Store {
    let store = a_busy_store(dir, 3);
    let space = SpaceId([1; 16]);
    let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32])];
    let big = CaseId([9; 16]);
    store.execute(&space, &keys[0], 1_000, Command::CreateCase { id: big, fields: vec![] }).unwrap();
    for write in 0..writes {
        let fields = (0..200u16).map(|f| (format!("f{write}-{f}"), FieldValue::Text(format!("{f}")))).collect();
        store
            .execute(
                &space,
                &keys[usize::from(write % 2)],
                1_001 + u64::from(write),
                Command::SetFields { case: big, fields },
            )
            .unwrap();
    }
    store
}

#[test]
fn a_fold_past_its_byte_bound_takes_out_a_large_case_however_recently_touched() {
    let space = SpaceId([1; 16]);
    let dir = tempfile::tempdir().unwrap();
    let store = a_store_with_one_case_full_of_fields(dir.path(), 4);
    let mut fold = crate::projection::fold::Fold::deltas();
    for event in store.events_after(&space, &Default::default()) {
        let event = crate::model::event::SignedEvent::from_wire(event.unwrap().2).unwrap();
        fold.apply(&event, |_| Ok::<_, ()>(None)).unwrap();
    }
    let small = CaseId([0; 16]);
    fold.hold(small, |_| Ok::<_, ()>(None)).unwrap();
    let held = fold.held_bytes();
    assert!(held > 4 * 200 * 192, "every field write counted: {held}");
    // Within the bound: nothing more than the count asked for.
    assert!(fold.evict_least_recent_within(0, held).is_empty());
    // Past it: the big case goes, though it was touched last; the small ones stay.
    let taken: Vec<CaseId> = fold.evict_least_recent_within(0, 64 * 1024).into_iter().map(|c| c.state.id).collect();
    assert!(taken.contains(&CaseId([9; 16])), "{taken:?}");
    assert!(fold.held_bytes() <= 64 * 1024);
    assert!(fold.case(&CaseId([2; 16])).is_some(), "the small cases touched last stay");
    let rest = fold.take_all();
    assert_eq!(fold.held_bytes(), 0);
    assert!(!rest.is_empty());
}

#[test]
fn a_case_larger_than_a_bulk_fold_s_bound_is_written_out_in_deltas_that_join_to_the_same_views() {
    let space = SpaceId([1; 16]);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // 30 writes of 200 fields: 6,000 registers, far past the unit tests' 256 KiB bound.
    let a = a_store_with_one_case_full_of_fields(a_dir.path(), 30);
    let b = Store::open(b_dir.path(), StoreOptions::compatible()).unwrap();
    b.begin_bulk_catch_up();
    catch_up(&a, &b, 3);
    assert_eq!(b.end_bulk_catch_up().unwrap(), 0, "no rebuild needed");
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    let big = CaseId([9; 16]);
    assert_eq!(b.case_view(&space, &big).unwrap(), a.case_view(&space, &big).unwrap());
    assert_eq!(b.history(&space, &big).unwrap(), a.history(&space, &big).unwrap());
    // A rebuild bounded the same way folds to the same state.
    assert_eq!(b.rebuild_projections(&space).unwrap(), a.state_hash(&space).unwrap());
    assert_eq!(b.case_view(&space, &big).unwrap(), a.case_view(&space, &big).unwrap());
}

#[test]
fn an_ingest_that_folds_past_a_commit_s_bound_commits_in_parts_to_the_same_views() {
    let space = SpaceId([1; 16]);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = a_store_with_one_case_full_of_fields(a_dir.path(), 30);
    let b = Store::open(b_dir.path(), StoreOptions::compatible()).unwrap();
    // One ingest of every event: 6,000 registers fold to several times the unit tests' 256 KiB
    // bound of a commit.
    catch_up(&a, &b, 1024);
    assert_eq!(b.projections_behind(&space).unwrap(), 0);
    assert_eq!(b.vector(&space), a.vector(&space));
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    let big = CaseId([9; 16]);
    assert_eq!(b.case_view(&space, &big).unwrap(), a.case_view(&space, &big).unwrap());
    assert_eq!(b.history(&space, &big).unwrap(), a.history(&space, &big).unwrap());
    assert_eq!(b.rebuild_projections(&space).unwrap(), a.state_hash(&space).unwrap());
}

#[test]
fn a_bulk_load_without_syncs_folds_beside_its_writes_to_the_same_views() {
    let space = SpaceId([1; 16]);
    let (_a_dir, a, b_dir, b) = a_busy_store_and_an_empty_one(12);
    b.begin_bulk_catch_up();
    b.defer_syncs();
    catch_up(&a, &b, 7);
    assert_eq!(b.end_bulk_catch_up().unwrap(), 0, "no rebuild needed");
    b.sync().unwrap();
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    assert_eq!(b.history(&space, &CaseId([5; 16])).unwrap(), a.history(&space, &CaseId([5; 16])).unwrap());
    drop(b);
    let b = Store::open(b_dir.path(), StoreOptions::compatible()).unwrap();
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap(), "after reopening");
}

#[test]
fn a_bulk_catch_up_rebuilds_when_its_deltas_cannot_complete_the_views() {
    let space = SpaceId([1; 16]);
    let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(6);
    // A rebuild in the middle of the catch-up drops the deltas folded so far; the rest are
    // folded from the rebuilt views.
    b.begin_bulk_catch_up();
    let events: Vec<_> = a.events_after(&space, &b.vector(&space)).map(|r| r.unwrap().2).collect();
    b.ingest(&space, events[..7].to_vec()).unwrap();
    b.rebuild_projections(&space).unwrap();
    b.ingest(&space, events[7..].to_vec()).unwrap();
    assert_eq!(b.end_bulk_catch_up().unwrap(), 0);
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    // Deltas that cannot complete the views (views lagging when the catch-up began, or a
    // failed commit after folding): the end rebuilds.
    let c_dir = tempfile::tempdir().unwrap();
    let c = Store::open(c_dir.path(), StoreOptions::compatible()).unwrap();
    c.begin_bulk_catch_up();
    catch_up(&a, &c, 10);
    c.lock_writer().bulk.spoil(&space);
    assert_eq!(c.end_bulk_catch_up().unwrap(), 1, "rebuilt");
    assert_eq!(c.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
}

#[test]
fn merge_operands_joined_at_read_flush_and_compaction_give_the_same_views() {
    use crate::codec::keys::CF_CASES;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let space = SpaceId([1; 16]);
    let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32])];
    let case = CaseId([7; 16]);
    store.execute(&space, &keys[0], 1, Command::CreateCase { id: case, fields: vec![] }).unwrap();
    let mut views = Vec::new();
    for round in 0..6u64 {
        // Each round: writes from both keys, then the operands land in a new place: the
        // memtable (read-time merge), an L0 file (flush) or one compacted file.
        for (n, key) in keys.iter().enumerate() {
            let fields = vec![(format!("f{}", round % 3), FieldValue::Text(format!("{round}-{n}")))];
            store.execute(&space, key, 10 + round, Command::SetFields { case, fields }).unwrap();
        }
        views.push(store.case_view(&space, &case).unwrap());
        match round % 3 {
            0 => {}
            1 => store.db.flush_families(&[CF_CASES]).unwrap(),
            _ => store.db.rocks().compact_range_cf(store.db.cf(CF_CASES), None::<&[u8]>, None::<&[u8]>),
        }
        assert_eq!(store.case_view(&space, &case).unwrap(), views[views.len() - 1], "round {round}");
    }
    let hash = store.state_hash(&space).unwrap();
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    assert_eq!(store.case_view(&space, &case).unwrap(), views[views.len() - 1]);
    assert_eq!(store.rebuild_projections(&space).unwrap(), hash);
}

#[test]
fn a_rebuild_of_one_space_keeps_the_other_spaces_views_whatever_files_they_share() {
    use crate::codec::keys::{CF_CASES, CF_CASE_EVENTS};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let (one, two) = (SpaceId([1; 16]), SpaceId([2; 16]));
    let key = DeviceKey::from_secret([1; 32]);
    // Files of one space only, and files of both (the rebuild drops only the former).
    for (round, spaces) in [vec![one], vec![two], vec![one, two]].into_iter().enumerate() {
        for space in spaces {
            for n in 0..3u8 {
                let case = CaseId([n; 16]);
                let fields = vec![("f".into(), FieldValue::Text(format!("{round}-{n}")))];
                let command = if round == 0 || (round == 1 && space == two) {
                    Command::CreateCase { id: case, fields }
                } else {
                    Command::SetFields { case, fields }
                };
                store.execute(&space, &key, 10 + round as u64, command).unwrap();
            }
        }
        store.db.flush_families(&[CF_CASES, CF_CASE_EVENTS]).unwrap();
    }
    let hashes = (store.state_hash(&one).unwrap(), store.state_hash(&two).unwrap());
    let views = store.list_cases(&two, &Default::default()).unwrap();
    let history = store.history(&two, &CaseId([1; 16])).unwrap();
    assert_eq!(store.rebuild_projections(&one).unwrap(), hashes.0);
    assert_eq!(store.state_hash(&two).unwrap(), hashes.1);
    assert_eq!(store.list_cases(&two, &Default::default()).unwrap(), views);
    assert_eq!(store.history(&two, &CaseId([1; 16])).unwrap(), history);
    assert_eq!(store.history(&one, &CaseId([1; 16])).unwrap().len(), 2);
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    assert_eq!((store.state_hash(&one).unwrap(), store.state_hash(&two).unwrap()), hashes);
}

#[test]
fn a_rebuild_that_spills_cases_equals_the_incremental_projections() {
    let dir = tempfile::tempdir().unwrap();
    // Two authors touch the same 12 cases, so the rebuild (4 cases in memory in unit tests)
    // writes deltas of a case out and starts new ones when the chains touch it again.
    let store = a_busy_store(dir.path(), 12);
    let space = SpaceId([1; 16]);
    let incremental = store.state_hash(&space).unwrap();
    let views = store.list_cases(&space, &Default::default()).unwrap();
    assert_eq!(store.rebuild_projections(&space).unwrap(), incremental);
    assert_eq!(store.list_cases(&space, &Default::default()).unwrap(), views);
}

#[test]
fn written_digests_hash_the_cases_written_once_and_read_back_the_rest() {
    use crate::projection::written_digests::WrittenDigests;
    let dir = tempfile::tempdir().unwrap();
    let store = a_busy_store(dir.path(), 40);
    let space = SpaceId([1; 16]);
    let scanned = store.scanned_state_hash(&space).unwrap();
    let states = store.fold_log(&space, |_| true).unwrap().into_sorted_cases();
    // Case 0's digest taken of another state: only a hash that uses the digests sees it.
    let mut wrong = states[1].clone();
    wrong.id = states[0].id;
    let noted = |rewritten: &[usize], first: &crate::model::merge::CaseState| {
        let mut digests = WrittenDigests::new();
        digests.note(first);
        states[1..].iter().for_each(|state| digests.note(state));
        rewritten.iter().for_each(|n| digests.note(&states[*n]));
        digests.state_hash(&store.db, &space).unwrap()
    };
    assert_eq!(noted(&[], &states[0]), scanned);
    assert_ne!(noted(&[], &wrong), scanned, "a case written once is hashed by its digest");
    assert_eq!(noted(&[0, 7], &wrong), scanned, "a case written again is read back");
    assert_ne!(noted(&[7], &wrong), scanned);
    assert_eq!(noted(&[1, 2, 3], &wrong), scanned, "more than a sixteenth written again: scanned");
    // Past the bound (64 cases in unit tests): scanned.
    let mut digests = WrittenDigests::new();
    digests.note(&wrong);
    (0..70).for_each(|n| digests.note(&states[1 + n % 39]));
    assert_eq!(digests.state_hash(&store.db, &space).unwrap(), scanned);
}

#[test]
fn the_state_hash_a_rebuild_remembers_holds_until_the_projections_move() {
    let dir = tempfile::tempdir().unwrap();
    let store = a_busy_store(dir.path(), 3); // fits in the rebuild's memory: every case written once
    let space = SpaceId([1; 16]);
    let scanned = store.scanned_state_hash(&space).unwrap();
    assert_eq!(store.rebuild_projections(&space).unwrap(), scanned);
    assert_eq!(store.state_hash(&space).unwrap(), scanned);
    // The record holds the hash and the watermark it is for...
    use crate::codec::keys::{meta_state_hash, CF_META};
    let record = store.db.rocks().get_cf(store.db.cf(CF_META), meta_state_hash(&space)).unwrap().unwrap();
    assert_eq!(hex::encode(&record[1..33]), scanned);
    // ...and once the projections move past its watermark it is not.
    let key = DeviceKey::from_secret([1; 32]);
    let fields = vec![("f".into(), FieldValue::Text("later".into()))];
    store.execute(&space, &key, 999, Command::SetFields { case: CaseId([1; 16]), fields }).unwrap();
    let moved = store.scanned_state_hash(&space).unwrap();
    assert_ne!(moved, scanned);
    assert_eq!(store.state_hash(&space).unwrap(), moved);
    // An unreadable record is ignored.
    store.db.rocks().put_cf(store.db.cf(CF_META), meta_state_hash(&space), b"\x09junk").unwrap();
    assert_eq!(store.state_hash(&space).unwrap(), moved);
    // So is one of an older definition (version 2: blake3 case digests), even at the current
    // watermark: its hash is not this build's.
    use crate::codec::meta::encode_vector;
    use crate::codec::meta::STATE_HASH_RECORD_VERSION;
    let watermark = store.projection_watermark(&space).unwrap();
    let mut older = vec![STATE_HASH_RECORD_VERSION - 1];
    older.extend_from_slice(&[7; 32]);
    older.extend_from_slice(&encode_vector(&watermark));
    store.db.rocks().put_cf(store.db.cf(CF_META), meta_state_hash(&space), older).unwrap();
    assert_eq!(store.state_hash(&space).unwrap(), moved);
    // The same record in this build's version would be taken as it is.
    let mut current = vec![STATE_HASH_RECORD_VERSION];
    current.extend_from_slice(&[7; 32]);
    current.extend_from_slice(&encode_vector(&watermark));
    store.db.rocks().put_cf(store.db.cf(CF_META), meta_state_hash(&space), current).unwrap();
    assert_eq!(store.state_hash(&space).unwrap(), hex::encode([7; 32]));
}

#[test]
fn a_bulk_catch_up_into_empty_projections_remembers_the_state_hash_it_wrote() {
    let space = SpaceId([1; 16]);
    for (cases, batch) in [(3u8, 100), (12, 5), (40, 7)] {
        let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(cases);
        b.begin_bulk_catch_up_holding(4, true);
        catch_up(&a, &b, batch);
        b.end_bulk_catch_up().unwrap();
        use crate::codec::keys::{meta_state_hash, CF_META};
        assert!(b.db.rocks().get_cf(b.db.cf(CF_META), meta_state_hash(&space)).unwrap().is_some());
        let expected = a.scanned_state_hash(&space).unwrap();
        assert_eq!(b.state_hash(&space).unwrap(), expected, "{cases} cases");
        assert_eq!(b.scanned_state_hash(&space).unwrap(), expected, "{cases} cases");
    }
    // Into projections that already hold something: no remembered hash (it would need them read).
    let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(12);
    let events: Vec<_> = a.events_after(&space, &Default::default()).map(|r| r.unwrap().2).collect();
    b.ingest(&space, events[..4].to_vec()).unwrap();
    b.begin_bulk_catch_up_holding(4, true);
    catch_up(&a, &b, 5);
    b.end_bulk_catch_up().unwrap();
    use crate::codec::keys::{meta_state_hash, CF_META};
    assert!(b.db.rocks().get_cf(b.db.cf(CF_META), meta_state_hash(&space)).unwrap().is_none());
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    // A node's catch-up does not take the digests (nobody waits for the hash).
    let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(3);
    b.begin_bulk_catch_up();
    catch_up(&a, &b, 100);
    b.end_bulk_catch_up().unwrap();
    assert!(b.db.rocks().get_cf(b.db.cf(CF_META), meta_state_hash(&space)).unwrap().is_none());
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
}

#[test]
fn a_case_with_many_events_keeps_its_whole_history_in_bounded_records() {
    use crate::codec::keys::{CF_CASE_EVENTS, HISTORY_ENTRIES_PER_RECORD};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let (space, case, key) = (SpaceId([1; 16]), CaseId([1; 16]), DeviceKey::from_secret([1; 32]));
    store.execute(&space, &key, 1, Command::CreateCase { id: case, fields: vec![] }).unwrap();
    for n in 0..300u64 {
        let fields = vec![("f".into(), FieldValue::Integer(n as i64))];
        store.execute(&space, &key, 2 + n, Command::SetFields { case, fields }).unwrap();
    }
    let history = store.history(&space, &case).unwrap();
    assert_eq!(history.len(), 301);
    store.rebuild_projections(&space).unwrap();
    assert_eq!(store.history(&space, &case).unwrap(), history);
    let records = store.db.rocks().iterator_cf(store.db.cf(CF_CASE_EVENTS), rocksdb::IteratorMode::Start);
    let lengths: Vec<usize> = records.map(|r| r.unwrap().1.len()).collect();
    assert_eq!(
        lengths,
        vec![8 + 48 * (HISTORY_ENTRIES_PER_RECORD - 1), 8 + 48 * (301 - HISTORY_ENTRIES_PER_RECORD - 1)]
    );
    // A malformed record: a clear error, not a short history.
    let first = store.db.rocks().iterator_cf(store.db.cf(CF_CASE_EVENTS), rocksdb::IteratorMode::Start).next();
    let (first_key, _) = first.unwrap().unwrap();
    store.db.rocks().put_cf(store.db.cf(CF_CASE_EVENTS), first_key, b"short").unwrap();
    match store.history(&space, &case) {
        Err(crate::error::StoreError::Corrupt { reason, .. }) => assert!(reason.contains("history record")),
        other => panic!("expected a corrupt history record, got {other:?}"),
    }
}

#[test]
fn a_bulk_catch_up_ingests_its_spill_files_only_at_its_end() {
    use crate::projection::spill_files::SPILL_DIR;
    let space = SpaceId([1; 16]);
    let (_a_dir, a, _b_dir, b) = a_busy_store_and_an_empty_one(12);
    let spill_files = |store: &Store| -> usize {
        let dirs = std::fs::read_dir(store.path().join(SPILL_DIR)).map(|d| d.flatten().collect::<Vec<_>>());
        let dirs = dirs.unwrap_or_default();
        dirs.iter().map(|dir| std::fs::read_dir(dir.path()).map(|f| f.count()).unwrap_or(0)).sum()
    };
    b.begin_bulk_catch_up();
    // A rebuild during the catch-up drops the deltas and spills folded so far.
    b.rebuild_projections(&space).unwrap();
    catch_up(&a, &b, 2);
    // 12 cases, 4 held in unit tests: spilled into files by the writer threads (polled with a
    // deadline: they write on their own), none of them in the store yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while spill_files(&b) < 2 {
        assert!(std::time::Instant::now() < deadline, "{} spill files", spill_files(&b));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!crate::projection::queries::has_case_parts(&b.db, &space).unwrap(), "nothing ingested before the end");
    b.end_bulk_catch_up().unwrap();
    assert_eq!(spill_files(&b), 0, "every spill file moved into the store");
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
    assert_eq!(b.list_cases(&space, &Default::default()).unwrap(), a.list_cases(&space, &Default::default()).unwrap());
    // Spill files a crash left behind are removed at the next open.
    let stale = b.path().join(SPILL_DIR).join("left-by-a-crash");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("parts-000000.sst"), b"half written").unwrap();
    let path = b.path().to_path_buf();
    drop(b);
    let b = Store::open(&path, StoreOptions::compatible()).unwrap();
    assert!(!path.join(SPILL_DIR).exists());
    assert_eq!(b.state_hash(&space).unwrap(), a.state_hash(&space).unwrap());
}

#[test]
fn a_spill_writer_that_fails_reports_its_own_error_and_leaves_no_files() {
    use crate::error::StoreError;
    use crate::projection::fold::Fold;
    use crate::projection::incremental::fold_events;
    use crate::projection::spill_files::{SpillFiles, SpillWriters, SPILL_DIR};
    let dir = tempfile::tempdir().unwrap();
    let store = a_busy_store(dir.path(), 6);
    let space = SpaceId([1; 16]);
    let events: Vec<_> = store
        .events_after(&space, &Default::default())
        .map(|r| crate::model::event::SignedEvent::from_wire(r.unwrap().2).unwrap())
        .collect();
    let cases = || {
        let mut fold = Fold::store_deltas();
        fold_events(&mut fold, &events);
        fold.take_all()
    };
    // Written and finished: the files are there until they are ingested (or dropped).
    let writers = SpillWriters::start(SpillFiles::new(&store.db, &space).unwrap(), true).unwrap();
    writers.spill(cases()).unwrap();
    let (files, digests) = writers.finish(cases()).unwrap();
    assert_eq!(digests.map(|d| d.written.len()), Some(12), "each case noted once per spill");
    assert!(std::fs::read_dir(dir.path().join(SPILL_DIR)).unwrap().count() == 1);
    drop(files);
    assert_eq!(std::fs::read_dir(dir.path().join(SPILL_DIR)).unwrap().count(), 0, "dropped files are removed");
    // A writer that cannot create its file: its error, not the failed hand-over's.
    let writers = SpillWriters::start(SpillFiles::new(&store.db, &space).unwrap(), false).unwrap();
    std::fs::remove_dir_all(dir.path().join(SPILL_DIR)).unwrap();
    let _ = writers.spill(cases());
    match writers.finish(cases()) {
        Err(StoreError::Rocks(_)) => {}
        Err(other) => panic!("expected the writer's RocksDB error, got {other}"),
        Ok(_) => panic!("expected the writer's error"),
    }
}
