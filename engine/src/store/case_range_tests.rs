//! A rebuild folded one range of case ids at a time (`projection::case_ranges`): the same views,
//! histories and state hash as the incremental projections, whether the ranges fit the fold.

use crate::commands::Command;
use crate::model::ids::{CaseId, SpaceId};
use crate::model::operation::{FieldValue, StatusChange};
use crate::model::signing::DeviceKey;
use crate::store::{Store, StoreOptions};

/// A store whose `cases` cases (ids spread over the whole id space, so every range gets some)
/// three authors cycle over, with a delete and many changes among their events.
fn a_store_cycling_over_spread_cases(dir: &std::path::Path, cases: u8, rounds: usize) -> (Store, Vec<CaseId>) {
    let store = Store::open(dir, StoreOptions::compatible()).unwrap();
    let space = SpaceId([1; 16]);
    let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32]), DeviceKey::from_secret([3; 32])];
    let ids: Vec<CaseId> =
        (0..cases).map(|n| CaseId([(u16::from(n) * 256 / u16::from(cases)) as u8 + 1; 16])).collect();
    let mut clock = 1;
    for round in 0..rounds {
        for (n, case) in ids.iter().enumerate() {
            let key = &keys[(n + round) % 3];
            let command = match round {
                0 => Command::CreateCase { id: *case, fields: vec![("name".into(), FieldValue::Text(format!("{n}")))] },
                2 if n % 5 == 0 => Command::ChangeStatus { case: *case, change: StatusChange::Delete },
                _ => Command::SetFields {
                    case: *case,
                    fields: vec![("f".into(), FieldValue::Integer((round * n) as i64))],
                },
            };
            store.execute(&space, key, clock, command).unwrap();
            clock += 1;
        }
    }
    (store, ids)
}

#[test]
fn a_rebuild_folded_by_case_range_equals_the_incremental_projections_and_histories() {
    use crate::projection::case_ranges::{events_per_range, ranges_for};
    use crate::projection::rebuild::fold_into_spill_files;
    // 8 cases in each of 5 ranges (more than a fold holds in unit tests: some go out in parts
    // and the hash is read back); then 3 in each of 4 (each written out once, hashed as written).
    for (cases, rounds, hashed) in [(40, 4, false), (12, 10, true)] {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = a_store_cycling_over_spread_cases(dir.path(), cases, rounds);
        let space = SpaceId([1; 16]);
        let events = store.vector(&space).total();
        let (fold_bytes, per_range) = (store.db.memory().fold_bytes, events_per_range(store.db.memory().fold_bytes));
        assert!(ranges_for(events, fold_bytes) >= 4, "{events} events make several ranges of {per_range}");
        let (files, written) = fold_into_spill_files(&store.db, &space, None, ranges_for(events, fold_bytes)).unwrap();
        assert_eq!(written.is_hashed(), hashed, "{cases} cases: hashed as written");
        drop(files); // Not ingested: removed.
        let incremental = store.state_hash(&space).unwrap();
        let views = store.list_cases(&space, &Default::default()).unwrap();
        let histories: Vec<_> = ids.iter().map(|case| store.history(&space, case).unwrap()).collect();
        // As a settled store: the views in files below level 0 (which a rebuild drops whole),
        // none in the memtables.
        store.persist().unwrap();
        for family in [crate::codec::keys::CF_CASES, crate::codec::keys::CF_CASE_EVENTS] {
            store.db.rocks().compact_range_cf(store.db.cf(family), None::<&[u8]>, None::<&[u8]>);
        }
        assert_eq!(store.rebuild_projections(&space).unwrap(), incremental, "{cases} cases");
        if hashed {
            // Nothing was left to cover with a range deletion and the files of the ranges do not
            // overlap: RocksDB placed them below level 0, with no compaction to wait for.
            for family in [crate::codec::keys::CF_CASES, crate::codec::keys::CF_CASE_EVENTS] {
                let cf = store.db.cf(family);
                let in_level_0 = store.db.rocks().property_int_value_cf(cf, "rocksdb.num-files-at-level0").unwrap();
                assert_eq!(in_level_0, Some(0), "{family}: files in level 0");
            }
        }
        assert_eq!(store.list_cases(&space, &Default::default()).unwrap(), views);
        for (case, history) in ids.iter().zip(&histories) {
            assert_eq!(&store.history(&space, case).unwrap(), history, "the history of {case:?}");
        }
        let scratch = dir.path().join(crate::projection::spill_files::SPILL_DIR);
        let left = std::fs::read_dir(&scratch).map(|entries| entries.count()).unwrap_or(0);
        assert_eq!(left, 0, "the range files and spill files are gone");
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
        assert_eq!(store.state_hash(&space).unwrap(), incremental);
        assert_eq!(crate::projection::queries::scanned_state_hash(&store.db, &space).unwrap(), incremental);
    }
}
