//! The two folds agree on every body: the views a store keeps (incremental merge operands,
//! joined by RocksDB) and a full fold of its log (`replay-tool verify` and `at`), over random
//! bodies written straight into the log as a modified client could: valid operations, odd ones
//! (empty field lists, unknown cases and entries, superseded dots that never existed, status
//! changes in any order) and bytes that are no operation at all.

use bytes::Bytes;
use proptest::prelude::*;

use crate::codec::wire;
use crate::model::event::BodyEncoding;
use crate::model::ids::{CaseId, EntryId, SpaceId};
use crate::model::operation::{Dot, FieldValue, FieldWrite, Operation, StatusChange, StatusWrite};
use crate::model::signing::DeviceKey;
use crate::model::state_hash::StateHasher;
use crate::model::vector_clock::VersionVector;
use crate::store::{Store, StoreOptions};

const SPACE: SpaceId = SpaceId([4; 16]);

pub(super) fn key(n: u8) -> DeviceKey {
    DeviceKey::from_secret([n + 1; 32])
}

fn dot() -> impl Strategy<Value = Dot> {
    (0..3u8, 1..6u64).prop_map(|(n, seq)| Dot { author: key(n).author(), seq })
}

fn writes() -> impl Strategy<Value = Vec<FieldWrite>> {
    let value = prop_oneof![
        "[a-z]{0,6}".prop_map(FieldValue::Text),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<bool>().prop_map(FieldValue::Bool),
    ];
    // Up to three fields of two names: repeated names are invalid, which is part of the test.
    proptest::collection::vec(
        (prop_oneof![Just("name"), Just("phone")], value, proptest::collection::vec(dot(), 0..2)),
        0..3,
    )
    .prop_map(|writes| {
        writes
            .into_iter()
            .map(|(name, value, supersedes)| FieldWrite { name: name.into(), value, supersedes: supersedes.into() })
            .collect()
    })
}

fn status_write() -> impl Strategy<Value = StatusWrite> {
    (proptest::collection::vec(dot(), 0..2), proptest::collection::vec(dot(), 0..2)).prop_map(|(supersedes, seen)| {
        let mut vector = VersionVector::new();
        for dot in seen {
            vector.raise(dot.author, dot.seq);
        }
        StatusWrite { supersedes: supersedes.into(), seen: vector }
    })
}

/// A body: an encoded operation (valid or odd), or bytes that decode to none.
pub(super) fn body() -> impl Strategy<Value = Bytes> {
    let case = (0..3u8).prop_map(|n| CaseId([n; 16]));
    let entry = (0..2u8).prop_map(|n| EntryId([n; 16]));
    let change = prop_oneof![
        Just(StatusChange::Delete),
        Just(StatusChange::Archive),
        Just(StatusChange::Unarchive),
        Just(StatusChange::Restore)
    ];
    let operation = prop_oneof![
        (case.clone(), writes()).prop_map(|(case, w)| Operation::CreateCase { case, fields: w.into_iter().collect() }),
        (case.clone(), writes()).prop_map(|(case, w)| Operation::SetFields { case, fields: w.into_iter().collect() }),
        (case.clone(), change, status_write()).prop_map(|(case, change, write)| Operation::ChangeStatus {
            case,
            change,
            write
        }),
        (case.clone(), entry.clone(), writes()).prop_map(|(case, entry, w)| Operation::AddEntry {
            case,
            entry,
            fields: w.into_iter().collect()
        }),
        (case.clone(), entry.clone(), writes()).prop_map(|(case, entry, w)| Operation::UpdateEntry {
            case,
            entry,
            fields: w.into_iter().collect()
        }),
        (case.clone(), entry.clone(), status_write()).prop_map(|(case, entry, write)| Operation::RemoveEntry {
            case,
            entry,
            write
        }),
        (case, entry, status_write()).prop_map(|(case, entry, write)| Operation::RestoreEntry { case, entry, write }),
    ];
    prop_oneof![
        12 => operation.prop_map(|op| Bytes::from(wire::encode_operation(&op))),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_stored_views_and_a_full_fold_of_the_log_agree_on_any_bodies(
        writes in proptest::collection::vec((0..3u8, body()), 1..24),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
        for (clock, (writer, body)) in writes.into_iter().enumerate() {
            store.append(&SPACE, &key(writer), clock as u64, vec![(BodyEncoding::Plain, body)]).unwrap();
        }
        let folded = StateHasher::of(&store.fold_log(&SPACE, |_| true).unwrap().into_sorted_cases());
        prop_assert_eq!(&folded, &store.scanned_state_hash(&SPACE).unwrap());
        prop_assert_eq!(&folded, &store.rebuild_projections(&SPACE).unwrap());
    }
}
