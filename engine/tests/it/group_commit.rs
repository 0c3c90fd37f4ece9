//! Commands issued at once from many threads: committed in groups, yet each one sees the ones
//! before it, exactly as if they had run one by one.

use std::sync::Arc;

use casesync_engine::commands::Command;
use casesync_engine::ids::CaseId;
use casesync_engine::operation::FieldValue;

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
    let phone = &state.record.fields["phone"];
    assert_eq!(phone.current_dots().len(), 1, "no self-conflict from grouped commands");
    // The chain verifies and the projections equal a rebuild.
    let hash = store.state_hash(&SPACE).unwrap();
    assert_eq!(store.rebuild_projections(&SPACE).unwrap(), hash);
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.vector(&SPACE).total(), 201);
}
