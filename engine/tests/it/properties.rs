//! Properties of the storage paths: one random concurrent history of several devices is
//! delivered to fresh stores along every path the engine has, with flushes, compactions,
//! rebuilds and reopens in between, and every path ends in the source's state hash:
//!
//! - per-batch ingest of the events interleaved across authors (each author's in order), some
//!   lost on the way (the rest of that author's batch is refused as a gap and offered again
//!   later), some offered twice, in one call or as two prepared batches joined;
//! - a bulk catch-up holding 4 cases (so deltas spill), into empty or already filled views;
//! - a rebuild, and a fold of the log;
//! - an export to a backup file and its import.
//!
//! Wherever the views are claimed current, the remembered state hash must equal the one scanned
//! from the stored cases, and that the hash of a fresh fold of the log held.

use bytes::Bytes;
use casesync_engine::codec::backup_format::{
    BackupHeader, BackupReader, BackupRecord, BackupWriter, BACKUP_FORMAT_VERSION,
};
use casesync_engine::log::ingest::{PreparedBatch, RejectReason};
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::limits::SIGNATURE_BYTES;
use casesync_engine::model::state_hash::StateHasher;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::Store;
use casesync_proto::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::history::{history, play};
use crate::support::*;

/// A store of its own in a temp dir, closed and opened again at will.
struct Target {
    dir: tempfile::TempDir,
    store: Store,
}

impl Target {
    fn new() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        Target { dir, store }
    }

    fn reopen(self) -> Target {
        let Target { dir, store } = self;
        drop(store);
        let store = open(dir.path());
        Target { dir, store }
    }
}

/// What is done to the store after a batch.
#[derive(Clone, Copy, Debug)]
enum Then {
    Nothing,
    /// Every family flushed to SST files.
    Flush,
    /// Flushed, and every family compacted to its last level ([`Store::compact`]).
    Compact,
    /// Closed and opened again.
    Reopen,
    /// The views rebuilt from the log (a compaction during a bulk catch-up).
    Rebuild,
}

/// One batch of a delivery.
#[derive(Clone, Debug)]
struct Delivery {
    /// How many events the target does not hold yet are offered (in stream order).
    offered: usize,
    /// The offered event at this index is lost on the way.
    lost: Option<usize>,
    /// How many events the target holds already are offered again first.
    again: usize,
    /// Ingested as two prepared batches joined into one commit, instead of in one call.
    prepared: bool,
    then: Then,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let then = prop_oneof![
        8 => Just(Then::Nothing),
        1 => Just(Then::Flush),
        1 => Just(Then::Compact),
        1 => Just(Then::Reopen),
        1 => Just(Then::Rebuild),
    ];
    (1usize..12, proptest::option::weighted(0.3, 0usize..12), 0usize..3, any::<bool>(), then)
        .prop_map(|(offered, lost, again, prepared, then)| Delivery { offered, lost, again, prepared, then })
}

/// How a target takes its events.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Each batch folded into the views as it is stored.
    PerBatch,
    /// A bulk catch-up (started by the caller): the views lag until it ends; a reopen ends it (the
    /// open completes the views) and a new one is started, holding 4 cases.
    Bulk { digests: bool },
}

/// The state hash of the views, checked against the remembered hash, a scan of the stored
/// cases and a fresh fold of the log held.
fn checked_views(store: &Store, at: &str) -> Result<String, TestCaseError> {
    prop_assert_eq!(store.projections_behind(&SPACE).unwrap(), 0, "views behind the log {}", at);
    let remembered = store.state_hash(&SPACE).unwrap();
    let scanned = store.scanned_state_hash(&SPACE).unwrap();
    prop_assert_eq!(&remembered, &scanned, "remembered and scanned state hash {}", at);
    let folded = StateHasher::of(&store.fold_log(&SPACE, |_| true).unwrap().into_sorted_cases());
    prop_assert_eq!(&scanned, &folded, "views and a fold of the log {}", at);
    Ok(scanned)
}

/// Delivers `stream` to `target` in the batches `plan` describes, then whatever is left in one
/// last batch. Checks each batch's report against a model of what must land (per author, the
/// contiguous continuation of what is held) and, outside a bulk catch-up, the views.
fn deliver(mut target: Target, stream: &[SignedEvent], plan: &[Delivery], mode: Mode) -> Result<Target, TestCaseError> {
    let rest = Delivery { offered: usize::MAX, lost: None, again: 0, prepared: false, then: Then::Nothing };
    for (k, step) in plan.iter().chain([&rest]).enumerate() {
        let held = target.store.vector(&SPACE);
        let is_held = |e: &&SignedEvent| held.contains(&e.header.author, e.header.seq);
        let again: Vec<SignedEvent> = stream.iter().filter(is_held).take(step.again).cloned().collect();
        let mut offered: Vec<SignedEvent> = stream.iter().filter(|e| !is_held(e)).take(step.offered).cloned().collect();
        if let Some(lost) = step.lost.filter(|i| *i < offered.len()) {
            offered.remove(lost);
        }
        let mut expected = held.clone();
        for e in &offered {
            if e.header.seq == expected.get(&e.header.author) + 1 {
                expected.raise(e.header.author, e.header.seq);
            }
        }
        let landing = expected.total() - held.total();

        let mut batch = wire(&again);
        batch.extend(wire(&offered));
        let report = if step.prepared {
            let later = batch.split_off(batch.len() / 2);
            let mut joined = PreparedBatch::new(SPACE, batch);
            joined.append(PreparedBatch::new(SPACE, later));
            target.store.ingest_prepared(joined)
        } else {
            target.store.ingest(&SPACE, batch)
        }
        .unwrap();
        prop_assert_eq!(report.accepted, landing, "batch {}", k);
        prop_assert_eq!(report.duplicates, again.len() as u64, "batch {}", k);
        prop_assert_eq!(report.rejected.is_empty(), landing == offered.len() as u64, "batch {}", k);
        for rejection in &report.rejected {
            prop_assert!(matches!(rejection.reason, RejectReason::Gap { .. }), "batch {}: {:?}", k, rejection);
        }
        prop_assert_eq!(target.store.vector(&SPACE), expected, "batch {}", k);

        match (step.then, mode) {
            (Then::Nothing, _) => {}
            (Then::Flush, _) => target.store.persist().unwrap(),
            (Then::Compact, _) | (Then::Rebuild, Mode::Bulk { .. }) => target.store.compact().unwrap(),
            (Then::Reopen, _) => {
                target = target.reopen();
                if let Mode::Bulk { digests } = mode {
                    checked_views(&target.store, &format!("reopened during a bulk catch-up, batch {k}"))?;
                    target.store.begin_bulk_catch_up_holding(4, digests);
                }
            }
            (Then::Rebuild, Mode::PerBatch) => {
                let rebuilt = target.store.rebuild_projections(&SPACE).unwrap();
                prop_assert_eq!(checked_views(&target.store, &format!("rebuilt, batch {k}"))?, rebuilt);
            }
        }
        if mode == Mode::PerBatch {
            checked_views(&target.store, &format!("after batch {k}"))?;
        }
    }
    prop_assert_eq!(target.store.vector(&SPACE).total(), stream.len() as u64, "everything delivered");
    Ok(target)
}

/// A backup file of every event of `source`, written as `replay-tool export` writes one.
fn export(source: &Store) -> Vec<u8> {
    let header =
        BackupHeader { version: BACKUP_FORMAT_VERSION, space: SPACE, base: VersionVector::new(), members: vec![] };
    let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
    for item in source.events_after(&SPACE, &VersionVector::new()) {
        let (_, _, message) = item.unwrap();
        writer.event(&message.signature, &message.event).unwrap();
    }
    let (summary, file) = writer.finish().unwrap();
    assert_eq!(summary.bytes, file.len() as u64);
    file
}

/// Imports `file` into a new store as `replay-tool import` does into a new data dir: without the
/// WAL (or with deferred syncs, as into an existing store), a bulk load holding 4 cases that
/// digests what it writes, records read in batches of `batch` and joined two by two; then closed
/// and opened again.
fn import(file: &[u8], batch: usize, without_wal: bool) -> Result<Target, TestCaseError> {
    let target = Target::new();
    if without_wal {
        target.store.write_without_wal();
    } else {
        target.store.defer_syncs();
    }
    target.store.begin_bulk_catch_up_holding(4, true);
    let mut reader = BackupReader::new(file).unwrap();
    prop_assert_eq!(reader.header().space, SPACE);
    let (mut records, mut waiting, mut events) = (Vec::new(), None::<PreparedBatch>, 0u64);
    let store_waiting = |waiting: &mut Option<PreparedBatch>| -> Result<(), TestCaseError> {
        if let Some(joined) = waiting.take() {
            let report = target.store.ingest_prepared(joined).unwrap();
            prop_assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        }
        Ok(())
    };
    loop {
        let record = reader.next_record().unwrap();
        if let BackupRecord::Event { stored, .. } = &record {
            events += 1;
            // A record is the signature followed by the event bytes.
            let stored = Bytes::copy_from_slice(stored);
            records.push(pb::SignedEvent {
                signature: stored.slice(..SIGNATURE_BYTES),
                event: stored.slice(SIGNATURE_BYTES..),
            });
            if records.len() < batch {
                continue;
            }
        }
        if !records.is_empty() {
            let prepared = PreparedBatch::new(SPACE, std::mem::take(&mut records));
            match &mut waiting {
                Some(joined) => {
                    joined.append(prepared);
                    store_waiting(&mut waiting)?;
                }
                None => waiting = Some(prepared),
            }
        }
        if let BackupRecord::End(summary) = record {
            store_waiting(&mut waiting)?;
            prop_assert_eq!(summary.events, events);
            break;
        }
    }
    prop_assert_eq!(target.store.end_bulk_catch_up().unwrap(), 0);
    if without_wal {
        target.store.persist().unwrap();
    } else {
        target.store.sync().unwrap();
    }
    Ok(target.reopen())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// One history, every storage path, one state hash: the source's.
    #[test]
    fn every_storage_path_ends_in_the_source_s_state_hash(
        (devices, steps) in history(2..=3, 10..40, 6),
        order in any::<u64>(),
        plan in proptest::collection::vec(delivery(), 0..16),
        bulk_plan in proptest::collection::vec(delivery(), 0..16),
        (before_bulk, digests) in (0usize..40, any::<bool>()),
        (import_batch, without_wal) in (1usize..20, any::<bool>()),
    ) {
        let devices = play(devices, &steps);
        let source = &devices[0].store;
        let hash = checked_views(source, "at the source")?;
        for device in &devices[1..] {
            prop_assert_eq!(device.store.state_hash(&SPACE).unwrap(), hash.clone(), "the devices converged");
        }
        let events: Vec<SignedEvent> = source
            .events_after(&SPACE, &VersionVector::new())
            .map(|r| SignedEvent::from_wire(r.unwrap().2).unwrap())
            .collect();
        // The orders in which syncs with different peers can deliver them.
        let stream = interleave_authors(&events, &mut SeededRng::new(order));

        // Per-batch ingest, then a rebuild.
        let per_batch = deliver(Target::new(), &stream, &plan, Mode::PerBatch)?;
        prop_assert_eq!(checked_views(&per_batch.store, "after per-batch ingest")?, hash.clone());
        prop_assert_eq!(per_batch.store.rebuild_projections(&SPACE).unwrap(), hash.clone());
        prop_assert_eq!(checked_views(&per_batch.store, "after a rebuild")?, hash.clone());
        let per_batch = per_batch.reopen();
        prop_assert_eq!(checked_views(&per_batch.store, "rebuilt and reopened")?, hash.clone());

        // A bulk catch-up that spills, into empty views or after some events landed normally.
        let bulk = Target::new();
        let bulk = deliver(bulk, &stream[..before_bulk.min(stream.len())], &[], Mode::PerBatch)?;
        bulk.store.begin_bulk_catch_up_holding(4, digests);
        let bulk = deliver(bulk, &stream, &bulk_plan, Mode::Bulk { digests })?;
        prop_assert_eq!(bulk.store.end_bulk_catch_up().unwrap(), 0, "the deltas completed the views");
        prop_assert_eq!(checked_views(&bulk.store, "after a bulk catch-up")?, hash.clone());

        // A fold of the log, aside from the views.
        let folded = bulk.store.fold_log(&SPACE, |_| true).unwrap();
        prop_assert_eq!(StateHasher::of(&folded.into_sorted_cases()), hash.clone());

        // An export and its import.
        let imported = import(&export(source), import_batch, without_wal)?;
        prop_assert_eq!(imported.store.vector(&SPACE), source.vector(&SPACE));
        prop_assert_eq!(checked_views(&imported.store, "after an import")?, hash.clone());
    }
}
