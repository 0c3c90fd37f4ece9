//! A failure at any step of a bulk catch-up or a rebuild leaves views that claim only the events
//! they hold: their watermark stays behind, the next ordinary commit rebuilds them before it
//! moves the watermark (in the same process), and so does the next open. Either way the node
//! ends with its peer's state hash, deleted cases stay deleted, and nothing is lost.

use crate::commands::Command;
use crate::model::ids::{CaseId, SpaceId};
use crate::model::operation::{FieldValue, StatusChange};
use crate::model::signing::DeviceKey;
use crate::store::{Store, StoreOptions};

const SPACE: SpaceId = SpaceId([1; 16]);

/// Every named step of a bulk catch-up that can fail ([`crate::storage::Db::fault_point`]).
const BULK_STEPS: [&str; 6] = [
    "bulk catch-up: start",
    "bulk catch-up: fold",
    "bulk catch-up: write out",
    "bulk catch-up: ingest",
    "bulk catch-up: state hash",
    "bulk catch-up: watermark",
];

/// Every named step of a rebuild that can fail.
const REBUILD_STEPS: [&str; 5] =
    ["rebuild: clear", "rebuild: case ranges", "rebuild: spill", "rebuild: ingest", "rebuild: watermark"];

/// A peer with 12 cases written by two devices, each changed twice, a third of them deleted (a
/// view that lost those events would show them active again): 40 events, more than one of a
/// rebuild's case ranges holds in tests.
fn a_peer(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, StoreOptions::compatible()).unwrap();
    let keys = [DeviceKey::from_secret([1; 32]), DeviceKey::from_secret([2; 32])];
    for n in 0..12u8 {
        let key = &keys[usize::from(n) % 2];
        let fields = vec![("name".into(), FieldValue::Text(format!("client {n}")))];
        store.execute(&SPACE, key, 100 + u64::from(n), Command::CreateCase { id: CaseId([n; 16]), fields }).unwrap();
    }
    for round in 0..2u8 {
        for n in 0..12u8 {
            let key = &keys[usize::from(n + round) % 2];
            let fields = vec![("note".into(), FieldValue::Text(format!("change {round}")))];
            store
                .execute(&SPACE, key, 150 + u64::from(round), Command::SetFields { case: CaseId([n; 16]), fields })
                .unwrap();
        }
    }
    for n in (0..12u8).step_by(3) {
        let change = StatusChange::Delete;
        store.execute(&SPACE, &keys[1], 200, Command::ChangeStatus { case: CaseId([n; 16]), change }).unwrap();
    }
    store
}

/// Sends what `to` lacks in batches of five, in rounds as a node's sessions would (a failing
/// step fails the ingest that meets it, and the session after it sends the rest again): at most
/// three rounds, since a fault fires once.
fn send(from: &Store, to: &Store) {
    for _round in 0..3 {
        let events: Vec<_> = from.events_after(&SPACE, &to.vector(&SPACE)).map(|r| r.unwrap().2).collect();
        if events.is_empty() {
            return;
        }
        for chunk in events.chunks(5) {
            let _ = to.ingest(&SPACE, chunk.to_vec());
        }
    }
}

/// One more write at the peer, received by `node` as an ordinary commit.
fn one_more_write(peer: &Store, node: &Store, n: u64) {
    let fields = vec![("phone".into(), FieldValue::Text(format!("030-{n}")))];
    peer.execute(
        &SPACE,
        &DeviceKey::from_secret([1; 32]),
        300 + n,
        Command::SetFields { case: CaseId([1; 16]), fields },
    )
    .unwrap();
    send(peer, node);
}

/// The views claim no event they do not hold: either their watermark lags, or they equal the
/// peer's (which holds the same events).
fn assert_views_honest(node: &Store, peer: &Store, step: &str) {
    if node.projection_watermark(&SPACE).unwrap() == node.vector(&SPACE) {
        assert_eq!(node.scanned_state_hash(&SPACE).unwrap(), peer.scanned_state_hash(&SPACE).unwrap(), "{step}");
    }
}

fn assert_converged(node: &Store, peer: &Store, step: &str) {
    assert_eq!(node.vector(&SPACE), peer.vector(&SPACE), "{step}: same events");
    assert_eq!(node.projection_watermark(&SPACE).unwrap(), node.vector(&SPACE), "{step}: views current");
    assert_eq!(node.state_hash(&SPACE).unwrap(), peer.state_hash(&SPACE).unwrap(), "{step}: state hash");
    assert_eq!(node.scanned_state_hash(&SPACE).unwrap(), peer.scanned_state_hash(&SPACE).unwrap(), "{step}: scan");
    let deleted = node.case_view(&SPACE, &CaseId([3; 16])).unwrap().map(|view| view.status);
    assert_eq!(deleted, Some(crate::model::operation::Status::Deleted), "{step}: a deleted case stays deleted");
}

#[test]
fn a_failure_at_any_step_of_a_bulk_catch_up_is_repaired_by_the_next_commit_and_by_a_reopen() {
    for step in BULK_STEPS {
        for reopen in [false, true] {
            let (peer_dir, node_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let peer = a_peer(peer_dir.path());
            let mut node = Store::open(node_dir.path(), StoreOptions::compatible()).unwrap();
            node.begin_bulk_catch_up_holding(4, true);
            node.db.fail_at(step);
            send(&peer, &node);
            let _ = node.end_bulk_catch_up();
            assert_eq!(node.vector(&SPACE), peer.vector(&SPACE), "{step}: every event is stored");
            assert_views_honest(&node, &peer, step);
            if reopen {
                drop(node);
                node = Store::open(node_dir.path(), StoreOptions::compatible()).unwrap();
                assert_converged(&node, &peer, step);
            }
            one_more_write(&peer, &node, 1);
            assert_converged(&node, &peer, step);
            drop(node);
            let node = Store::open(node_dir.path(), StoreOptions::compatible()).unwrap();
            assert_converged(&node, &peer, step);
        }
    }
}

#[test]
fn a_failure_at_any_step_of_a_rebuild_is_repaired_by_the_next_commit_and_by_a_reopen() {
    for step in REBUILD_STEPS {
        for reopen in [false, true] {
            let (peer_dir, node_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let peer = a_peer(peer_dir.path());
            let mut node = Store::open(node_dir.path(), StoreOptions::compatible()).unwrap();
            send(&peer, &node);
            assert_converged(&node, &peer, "before the rebuild");
            node.db.fail_at(step);
            assert!(node.rebuild_projections(&SPACE).is_err(), "{step}: the injected failure is reported");
            assert_ne!(node.projection_watermark(&SPACE).unwrap(), node.vector(&SPACE), "{step}: views lag");
            if reopen {
                drop(node);
                node = Store::open(node_dir.path(), StoreOptions::compatible()).unwrap();
                assert_converged(&node, &peer, step);
            }
            one_more_write(&peer, &node, 2);
            assert_converged(&node, &peer, step);
        }
    }
}

#[test]
fn a_rebuild_that_keeps_failing_fails_the_commits_after_it_instead_of_claiming_their_events() {
    use crate::codec::keys::{event_key, CF_EVENTS};
    let (peer_dir, node_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = a_peer(peer_dir.path());
    let node = Store::open(node_dir.path(), StoreOptions::compatible()).unwrap();
    send(&peer, &node);
    // A damaged record: every rebuild meets it.
    let author = DeviceKey::from_secret([2; 32]).author();
    node.db.rocks().put_cf(node.db.cf(CF_EVENTS), event_key(&SPACE, &author, 3), b"not an event").unwrap();
    assert!(node.rebuild_projections(&SPACE).is_err());
    let before = node.projection_watermark(&SPACE).unwrap();
    let fields = vec![("phone".into(), FieldValue::Text("030-9".into()))];
    peer.execute(&SPACE, &DeviceKey::from_secret([1; 32]), 400, Command::SetFields { case: CaseId([1; 16]), fields })
        .unwrap();
    let missing: Vec<_> = peer.events_after(&SPACE, &node.vector(&SPACE)).map(|r| r.unwrap().2).collect();
    assert!(node.ingest(&SPACE, missing).is_err(), "the commit needs views it cannot rebuild");
    assert_eq!(node.projection_watermark(&SPACE).unwrap(), before, "the watermark claims nothing more");
    let command =
        Command::SetFields { case: CaseId([2; 16]), fields: vec![("x".into(), FieldValue::Text("y".into()))] };
    assert!(node.execute(&SPACE, &DeviceKey::from_secret([5; 32]), 500, command).is_err());
}
