//! The on-disk format version: newer formats are refused, older ones upgraded in place.

use casesync_engine::commands::Command;
use casesync_engine::error::OpenError;
use casesync_engine::ids::CaseId;
use casesync_engine::operation::FieldValue;
use casesync_engine::store::key_layout::{case_key, ALL_CFS, CF_CASES, CF_META, META_FORMAT_VERSION};
use casesync_engine::store::{Store, StoreOptions, FORMAT_VERSION};

use crate::support::*;

fn raw(dir: &std::path::Path) -> rocksdb::DB {
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, ALL_CFS).unwrap()
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
    match Store::open(dir.path(), StoreOptions::default()) {
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
fn a_version_1_store_is_upgraded_by_rebuilding_its_projections() {
    let dir = tempfile::tempdir().unwrap();
    let hash = a_store_with_cases(dir.path());
    {
        // Make it look like version 1: whole-case records, version 1 in meta.
        let db = raw(dir.path());
        let cases = db.cf_handle(CF_CASES).unwrap();
        let keys: Vec<_> = db.iterator_cf(cases, rocksdb::IteratorMode::Start).map(|i| i.unwrap().0).collect();
        for key in keys {
            db.delete_cf(cases, key).unwrap();
        }
        db.put_cf(cases, case_key(&SPACE, &CaseId([1; 16])), b"a version 1 case record").unwrap();
        db.put_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION, 1u32.to_be_bytes()).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.state_hash(&SPACE).unwrap(), hash);
    assert_eq!(store.list_cases(&SPACE, &Default::default()).unwrap().len(), 5);
    drop(store);
    let db = raw(dir.path());
    let version = db.get_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT_VERSION).unwrap().unwrap();
    assert_eq!(version, FORMAT_VERSION.to_be_bytes());
}
