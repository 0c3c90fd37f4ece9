//! The on-disk format version: newer formats are refused, older ones upgraded in place.

use casesync_engine::codec::keys::{case_key, CF_CASES, CF_CASES_LEGACY, CF_META, META_FORMAT_VERSION};
use casesync_engine::commands::Command;
use casesync_engine::error::OpenError;
use casesync_engine::model::ids::CaseId;
use casesync_engine::model::operation::FieldValue;
use casesync_engine::storage::format::FORMAT_VERSION;
use casesync_engine::store::{Store, StoreOptions};

use crate::support::*;

fn raw(dir: &std::path::Path) -> rocksdb::DB {
    casesync_engine::storage::families::open_direct(dir).unwrap()
}

fn a_store_with_cases(dir: &std::path::Path) -> String {
    let store = open(dir);
    let key = device(1);
    for n in 0..5u8 {
        let fields = vec![("name".into(), FieldValue::Text(format!("case {n}")))];
        store.execute(&SPACE, &key, 1, Command::CreateCase { id: CaseId([n; 16]), fields }).unwrap();
    }
    store.state_hash(&SPACE).unwrap()
}

#[test]
fn a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    a_store_with_cases(dir.path());
    {
        let db = raw(dir.path());
        db.put_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION, (FORMAT_VERSION + 1).to_be_bytes()).unwrap();
    }
    match Store::open(dir.path(), StoreOptions::compatible()) {
        Err(OpenError::FormatTooNew { found, supported }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected FormatTooNew, got {other:?}"),
    }
    let db = raw(dir.path());
    let version = db.get_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION).unwrap().unwrap();
    assert_eq!(version, (FORMAT_VERSION + 1).to_be_bytes());
}

#[test]
fn older_stores_are_upgraded_by_rebuilding_their_projections() {
    for version in [1u32, 2] {
        let dir = tempfile::tempdir().unwrap();
        let hash = a_store_with_cases(dir.path());
        {
            // Make it look like an older format: no merge records, the projections in the old
            // `cases` family, the old version in meta.
            let mut db = raw(dir.path());
            db.drop_cf(CF_CASES).unwrap();
            db.create_cf(CF_CASES_LEGACY, &rocksdb::Options::default()).unwrap();
            let legacy = db.cf_handle(CF_CASES_LEGACY).unwrap();
            db.put_cf(legacy, case_key(&SPACE, &CaseId([1; 16])), b"an old case record").unwrap();
            db.put_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION, version.to_be_bytes()).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.state_hash(&SPACE).unwrap(), hash, "from version {version}");
        assert_eq!(store.list_cases(&SPACE, &Default::default()).unwrap().len(), 5);
        drop(store);
        let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        assert!(!families.iter().any(|name| name == CF_CASES_LEGACY), "old family dropped: {families:?}");
        let db = raw(dir.path());
        let stored = db.get_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION).unwrap().unwrap();
        assert_eq!(stored, FORMAT_VERSION.to_be_bytes());
    }
}

#[test]
fn a_store_with_an_unknown_column_family_is_refused_before_its_log_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let hash = a_store_with_cases(dir.path());
    {
        let mut db = raw(dir.path());
        db.create_cf("from_the_future", &rocksdb::Options::default()).unwrap();
    }
    match Store::open(dir.path(), StoreOptions::compatible()) {
        Err(error @ OpenError::UnknownColumnFamilies(_)) => {
            assert!(error.to_string().contains("from_the_future"), "{error}");
        }
        other => panic!("expected UnknownColumnFamilies, got {other:?}"),
    }
    // Nothing changed: without the new family the store opens as before.
    {
        let names = casesync_engine::codec::keys::ALL_CFS.iter().copied().chain(["from_the_future"]);
        let descriptors = names.map(|name| {
            rocksdb::ColumnFamilyDescriptor::new(name, casesync_engine::storage::families::column_family_options(name))
        });
        let options = casesync_engine::storage::families::direct_open_options();
        let mut db = rocksdb::DB::open_cf_descriptors(&options, dir.path(), descriptors).unwrap();
        db.drop_cf("from_the_future").unwrap();
    }
    assert_eq!(open(dir.path()).state_hash(&SPACE).unwrap(), hash);
}

#[test]
fn a_format_3_store_rebuilds_its_views_and_keeps_its_single_event_arrival_records() {
    use casesync_engine::codec::keys::{
        arrival_run_value, case_event_key, event_key, parse_arrival_run, CF_ARRIVAL, CF_CASE_EVENTS,
    };
    let dir = tempfile::tempdir().unwrap();
    let hash = a_store_with_cases(dir.path());
    let author = device(1).author();
    // A history record no event explains: a rebuild (which rewrites the history index) drops it,
    // so its absence after the upgrade shows the views were rebuilt (stores before format 6 hold
    // no clocks for their pending dots).
    let marker = case_event_key(&SPACE, &CaseId([9; 16]), &author, 99);
    {
        // Format 3: one arrival record per event, without a count.
        let db = raw(dir.path());
        let arrival = db.cf_handle(CF_ARRIVAL).unwrap();
        let records: Vec<_> = db.iterator_cf(arrival, rocksdb::IteratorMode::Start).map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 5, "format 4 writes one record per run: one per command here");
        for (key, value) in records {
            let (space, author, first, count) = parse_arrival_run(&value).unwrap();
            assert_eq!(value.as_ref(), arrival_run_value(&space, &author, first, count).as_slice());
            db.put_cf(arrival, key, event_key(&space, &author, first)).unwrap();
        }
        db.put_cf(db.cf_handle(CF_CASE_EVENTS).unwrap(), marker, 1u64.to_be_bytes()).unwrap();
        db.put_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION, 3u32.to_be_bytes()).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.state_hash(&SPACE).unwrap(), hash);
    store.execute(&SPACE, &device(1), 2, Command::CreateCase { id: CaseId([7; 16]), fields: vec![] }).unwrap();
    let arrivals = store.arrivals_from(0, 100).unwrap();
    let seqs: Vec<(u64, u64)> = arrivals.iter().map(|a| (a.position, a.seq)).collect();
    assert_eq!(seqs, (1..=6).map(|n| (n, n)).collect::<Vec<_>>(), "old and new records, in order");
    drop(store);
    let db = raw(dir.path());
    assert!(db.get_cf(db.cf_handle(CF_CASE_EVENTS).unwrap(), marker).unwrap().is_none(), "views were kept");
    let stored = db.get_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION).unwrap().unwrap();
    assert_eq!(stored, FORMAT_VERSION.to_be_bytes());
}

#[test]
fn a_format_4_store_keeps_its_one_event_history_records_beside_new_ones() {
    use casesync_engine::codec::keys::CF_CASE_EVENTS;
    let dir = tempfile::tempdir().unwrap();
    let hash = a_store_with_cases(dir.path());
    let case = CaseId([1; 16]);
    {
        let store = open(dir.path());
        let fields = vec![("name".into(), FieldValue::Text("renamed".into()))];
        store.execute(&SPACE, &device(2), 2, Command::SetFields { case, fields }).unwrap();
    }
    let history_before = open(dir.path()).history(&SPACE, &case).unwrap();
    assert_eq!(history_before.len(), 2);
    {
        // Format 4 wrote these same records (one per event, value the hlc), so only the version
        // needs to look older.
        let db = raw(dir.path());
        let records = db.iterator_cf(db.cf_handle(CF_CASE_EVENTS).unwrap(), rocksdb::IteratorMode::Start);
        assert!(records.map(|r| r.unwrap()).all(|(_, value)| value.len() == 8));
        db.put_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION, 4u32.to_be_bytes()).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.history(&SPACE, &case).unwrap(), history_before);
    assert_ne!(store.state_hash(&SPACE).unwrap(), hash, "the views kept the later change");
    // A rebuild writes the case's history as one record of both events: read the same.
    store.rebuild_projections(&SPACE).unwrap();
    assert_eq!(store.history(&SPACE, &case).unwrap(), history_before);
    drop(store);
    let db = raw(dir.path());
    let stored = db.get_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION).unwrap().unwrap();
    assert_eq!(stored, FORMAT_VERSION.to_be_bytes());
    let records = db.iterator_cf(db.cf_handle(CF_CASE_EVENTS).unwrap(), rocksdb::IteratorMode::Start);
    let lengths: Vec<usize> = records.map(|r| r.unwrap().1.len()).collect();
    assert!(lengths.contains(&(8 + 48)), "one record of two events: {lengths:?}");
}
