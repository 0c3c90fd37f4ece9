//! Commands issued at once from many threads: committed in groups, yet each one sees the ones
//! before it, exactly as if they had run one by one.

use std::sync::Arc;

use casesync_engine::commands::Command;
use casesync_engine::model::ids::CaseId;
use casesync_engine::model::operation::FieldValue;

use crate::support::*;

#[test]
fn concurrent_commands_chain_and_supersede_like_sequential_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let key = device(1);
    let case = CaseId([7; 16]);
    store.execute(&SPACE, &key, 1, Command::CreateCase { id: case, fields: vec![] }).unwrap();

    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, key) = (store.clone(), key.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    let value = FieldValue::Text(format!("t{t} i{i}"));
                    let command = Command::SetFields { case, fields: vec![("phone".into(), value)] };
                    store.execute(&SPACE, &key, 2, command).unwrap();
                }
                // A refused command in a group does not take the others down with it.
                let again = Command::CreateCase { id: case, fields: vec![] };
                assert!(store.execute(&SPACE, &key, 2, again).is_err());
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    assert_eq!(store.head(&SPACE, &key.author()).unwrap().seq, 1 + 8 * 25);
    // Every write superseded the one committed before it, even within a group: one value left.
    let state = store.case_state(&SPACE, &case).unwrap().unwrap();
    let phone = state.record.fields.get("phone").unwrap();
    assert_eq!(phone.current_dots().len(), 1, "no self-conflict from grouped commands");
    // The chain verifies and the projections equal a rebuild.
    let hash = store.state_hash(&SPACE).unwrap();
    assert_eq!(store.rebuild_projections(&SPACE).unwrap(), hash);
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.vector(&SPACE).total(), 201);
}

#[test]
fn a_bulk_catch_up_lets_the_views_lag_and_ends_with_the_same_views() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    let (ka, kb) = (device(1), device(2));
    for n in 0..20u8 {
        let fields = vec![("name".into(), FieldValue::Text(format!("case {n}")))];
        a.execute(&SPACE, &ka, 1, Command::CreateCase { id: CaseId([n; 16]), fields }).unwrap();
    }
    b.execute(&SPACE, &kb, 1, Command::CreateCase { id: CaseId([99; 16]), fields: vec![] }).unwrap();

    b.begin_bulk_catch_up();
    let events: Vec<_> = a.events_after(&SPACE, &b.vector(&SPACE)).map(|r| r.unwrap().2).collect();
    let batch = casesync_engine::log::ingest::PreparedBatch::new(SPACE, events);
    let report = b.ingest_prepared_announcing(batch, |_| panic!("a bulk catch-up announces on return")).unwrap();
    assert_eq!(report.accepted, 20);
    assert_eq!(b.projections_behind(&SPACE).unwrap(), 20);
    // No command is planned against views that lack the new events.
    let refused = b.execute(&SPACE, &kb, 2, Command::CreateCase { id: CaseId([98; 16]), fields: vec![] });
    assert!(matches!(
        refused,
        Err(casesync_engine::Error::Command(casesync_engine::error::CommandError::CatchingUp(20)))
    ));

    // The deltas folded while ingesting complete the views: no rebuild.
    assert_eq!(b.end_bulk_catch_up().unwrap(), 0);
    assert_eq!(b.projections_behind(&SPACE).unwrap(), 0);
    assert_eq!(b.list_cases(&SPACE, &Default::default()).unwrap().len(), 21);
    b.execute(&SPACE, &kb, 2, Command::CreateCase { id: CaseId([98; 16]), fields: vec![] }).unwrap();
    // A store that folded event by event agrees.
    let events: Vec<_> = b.events_after(&SPACE, &a.vector(&SPACE)).map(|r| r.unwrap().2).collect();
    a.ingest(&SPACE, events).unwrap();
    assert_eq!(a.state_hash(&SPACE).unwrap(), b.state_hash(&SPACE).unwrap());
}

#[test]
fn a_crash_during_a_bulk_catch_up_is_repaired_at_the_next_open() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path());
    for n in 0..10u8 {
        a.execute(&SPACE, &device(1), 1, Command::CreateCase { id: CaseId([n; 16]), fields: vec![] }).unwrap();
    }
    {
        let b = open(b_dir.path());
        b.begin_bulk_catch_up();
        let events: Vec<_> = a.events_after(&SPACE, &b.vector(&SPACE)).map(|r| r.unwrap().2).collect();
        b.ingest(&SPACE, events).unwrap();
        // Dropped without resuming: as if the process died.
    }
    let b = open(b_dir.path());
    assert_eq!(b.projections_behind(&SPACE).unwrap(), 0);
    assert_eq!(b.state_hash(&SPACE).unwrap(), a.state_hash(&SPACE).unwrap());
}
