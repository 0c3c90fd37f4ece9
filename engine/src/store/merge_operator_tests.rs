//! The real `case_parts` merge operator, applied by RocksDB over any grouping of operands: the
//! events of a random history are folded into delta states in random groups (in any order, an
//! author's events split across groups), each group's deltas written as merge operands, with
//! random flushes and compactions between the groups; what RocksDB then reads equals a full fold
//! of every event.

use proptest::prelude::*;
use rocksdb::WriteBatch;

use super::fold_agreement_tests::{body, key};
use crate::codec::keys::{CF_CASES, CF_CASE_EVENTS};
use crate::model::event::{BodyEncoding, SignedEvent};
use crate::model::ids::SpaceId;
use crate::model::state_hash::StateHasher;
use crate::projection::fold::Fold;
use crate::projection::incremental::{fold_events, stage_case};
use crate::projection::queries;
use crate::storage::Db;
use crate::store::{Store, StoreOptions};

const SPACE: SpaceId = SpaceId([4; 16]);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_grouping_of_merge_operands_reads_back_as_the_full_fold(
        writes in proptest::collection::vec((0..3u8, body()), 1..24),
        grouping in proptest::collection::vec((0..4usize, 0..3u8), 24),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
    ) {
        let source_dir = tempfile::tempdir().unwrap();
        let source = Store::open(source_dir.path(), StoreOptions::compatible()).unwrap();
        for (clock, (writer, body)) in writes.into_iter().enumerate() {
            source.append(&SPACE, &key(writer), clock as u64, vec![(BodyEncoding::Plain, body)]).unwrap();
        }
        let mut events: Vec<SignedEvent> = source
            .events_after(&SPACE, &Default::default())
            .map(|r| SignedEvent::from_wire(r.unwrap().2).unwrap())
            .collect();
        // Shuffled (seeded by proptest), then cut into groups of 1-4 events.
        let mut state = order;
        for i in (1..events.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            events.swap(i, (state >> 33) as usize % (i + 1));
        }
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Default::default()).unwrap();
        let mut rest = events.as_slice();
        for (size, settle) in grouping {
            if rest.is_empty() {
                break;
            }
            let (group, after) = rest.split_at((size + 1).min(rest.len()));
            rest = after;
            let mut fold = Fold::store_deltas();
            fold_events(&mut fold, group);
            let mut batch = WriteBatch::default();
            for held in fold.take_all() {
                stage_case(&db, &SPACE, &mut batch, &held, None);
            }
            db.commit(batch).unwrap();
            match settle {
                0 => {}
                1 => db.flush_families(&[CF_CASES, CF_CASE_EVENTS]).unwrap(),
                _ => db.compact().unwrap(),
            }
        }
        if !rest.is_empty() {
            let mut fold = Fold::store_deltas();
            fold_events(&mut fold, rest);
            let mut batch = WriteBatch::default();
            for held in fold.take_all() {
                stage_case(&db, &SPACE, &mut batch, &held, None);
            }
            db.commit(batch).unwrap();
        }
        let expected = StateHasher::of(&source.fold_log(&SPACE, |_| true).unwrap().into_sorted_cases());
        prop_assert_eq!(&queries::scanned_state_hash(&db, &SPACE).unwrap(), &expected);
        db.compact().unwrap();
        prop_assert_eq!(&queries::scanned_state_hash(&db, &SPACE).unwrap(), &expected, "after a full compaction");
    }
}
