//! Ingest: any batch split and interleaving gives the same store; flips, gaps, forks and broken
//! chains are refused with nothing stored from the failure on.

use bytes::Bytes;
use casesync_engine::log::ingest::{PreparedBatch, RejectReason};
use casesync_engine::model::error::EventError;
use casesync_engine::model::event::{BodyEncoding, SignedEvent};
use casesync_engine::model::ids::SpaceId;
use proptest::prelude::*;

use crate::support::*;

#[test]
fn honest_runs_land_while_a_forged_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = chain(&device(1), SPACE, 5);
    let mut b = chain(&device(2), SPACE, 5);
    // Forge b's seq 4 signature: b 1..3 land, 4.. do not.
    b[3].signature[0] ^= 1;
    let mut batch = wire(&a);
    batch.extend(wire(&b));
    let report = store.ingest(&SPACE, batch).unwrap();
    assert_eq!(report.accepted, 8);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].seq, 4);
    assert_eq!(report.rejected[0].reason, RejectReason::Event(EventError::BadSignature));
    assert_eq!(store.vector(&SPACE).get(&device(1).author()), 5);
    assert_eq!(store.vector(&SPACE).get(&device(2).author()), 3);
}

/// An author that signed junk in the middle of its chain: a later signature that verifies
/// authenticates those events through the links, however the batches that carry them end.
#[test]
fn junk_middle_signatures_are_authenticated_by_a_later_signature_however_batches_end() {
    let junk = |seq: u64| [4, 5, 8].contains(&seq);
    let events = chain_with_junk_signatures(&device(1), SPACE, 10, junk);
    let author = device(1).author();
    // A batch that ends on a signature that verifies lands whole, junk and all.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.ingest(&SPACE, wire(&events[..6])).unwrap().accepted, 6);
    // One that ends on junk lands up to its last signature that verifies; the rest is refused.
    let report = store.ingest(&SPACE, wire(&events[6..8])).unwrap();
    assert_eq!((report.accepted, report.rejected[0].seq), (1, 8));
    assert_eq!(report.rejected[0].reason, RejectReason::Event(EventError::BadSignature));
    assert_eq!(store.ingest(&SPACE, wire(&events[7..])).unwrap().accepted, 3);
    assert_eq!(store.vector(&SPACE).get(&author), 10);
    // Whatever the first batch's end, the next delivery completes the chain.
    for cut in 0..=events.len() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.ingest(&SPACE, wire(&events[..cut])).unwrap();
        let held = store.vector(&SPACE).get(&author) as usize;
        assert!(held == cut || junk(cut as u64), "cut {cut}: {held} held");
        store.ingest(&SPACE, wire(&events[held..])).unwrap();
        assert_eq!(store.vector(&SPACE).get(&author), 10, "cut {cut}");
    }
}

#[test]
fn prepared_batches_joined_land_in_one_commit_and_refuse_another_space() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (chain(&device(1), SPACE, 6), chain(&device(2), SPACE, 3));
    {
        let store = open(dir.path());
        // An import defers its syncs to the end: what it stored is durable after `sync`.
        store.defer_syncs();
        let mut joined = PreparedBatch::new(SPACE, wire(&a[..3]));
        let mut later = wire(&a[3..]);
        later.extend(wire(&b));
        joined.append(PreparedBatch::new(SPACE, later));
        joined.append(PreparedBatch::new(SpaceId([9; 16]), wire(&b)));
        assert_eq!(joined.len(), 9);
        let report = store.ingest_prepared(joined).unwrap();
        assert_eq!(report.accepted, 9);
        assert_eq!(report.commit.events, 9, "one commit");
        assert_eq!(report.rejected.len(), 3);
        assert!(report.rejected.iter().all(|r| r.reason == RejectReason::WrongSpace));
        store.sync().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.vector(&SPACE).get(&device(1).author()), 6);
    assert_eq!(store.vector(&SPACE).get(&device(2).author()), 3);
}

#[test]
fn an_announcing_ingest_announces_readable_events_once_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (chain(&device(1), SPACE, 4), chain(&device(2), SPACE, 2));
    {
        let store = open(dir.path());
        let mut announced = Vec::new();
        let mut batch = wire(&a);
        batch.extend(wire(&b));
        let report = store
            .ingest_prepared_announcing(PreparedBatch::new(SPACE, batch), |commit| {
                // Readable when announced (the writer is still busy with the disk sync).
                let readable = [(1, 4), (2, 2)]
                    .iter()
                    .all(|(n, seq)| store.get_event(&SPACE, &device(*n).author(), *seq).unwrap().is_some());
                announced.push((commit.events, commit.next_position, readable));
            })
            .unwrap();
        assert_eq!(report.accepted, 6);
        assert_eq!(announced, vec![(6, report.commit.next_position, true)]);
        // Nothing new: nothing announced.
        let again = store
            .ingest_prepared_announcing(PreparedBatch::new(SPACE, wire(&a)), |_| panic!("nothing new to announce"))
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 4));
    }
    let store = open(dir.path());
    assert_eq!(store.vector(&SPACE).get(&device(1).author()), 4);
    assert_eq!(store.vector(&SPACE).get(&device(2).author()), 2);
}

#[test]
fn a_store_written_without_the_wal_holds_everything_once_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (chain(&device(1), SPACE, 6), chain(&device(2), SPACE, 3));
    let wal_bytes = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    {
        let store = open(dir.path());
        store.write_without_wal();
        let before = wal_bytes(dir.path());
        for events in [&a[..4], &a[4..], &b[..]] {
            assert!(store.ingest(&SPACE, wire(events)).unwrap().rejected.is_empty());
        }
        assert_eq!(wal_bytes(dir.path()), before, "nothing went to the WAL");
        store.persist().unwrap();
        // Back to normal: a later write is synced through the WAL.
        let more = chain(&device(3), SPACE, 1);
        assert!(store.ingest(&SPACE, wire(&more)).unwrap().rejected.is_empty());
        assert!(wal_bytes(dir.path()) > before);
    }
    let store = open(dir.path());
    assert_eq!(store.vector(&SPACE).get(&device(1).author()), 6);
    assert_eq!(store.vector(&SPACE).get(&device(2).author()), 3);
    assert_eq!(store.vector(&SPACE).get(&device(3).author()), 1);
    assert_eq!(store.get_event(&SPACE, &device(1).author(), 6).unwrap().map(|e| e.id), Some(a[5].id));
}

#[test]
fn arrival_records_cover_runs_and_read_back_one_per_event_from_any_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = (chain(&device(1), SPACE, 6), chain(&device(2), SPACE, 4));
    // Two batches, each interleaving both authors: four runs in all.
    for range in [0..3usize, 3..6] {
        let mut batch = wire(&a[range.clone()]);
        batch.extend(wire(&b[range.start.min(4)..range.end.min(4)]));
        assert!(store.ingest(&SPACE, batch).unwrap().rejected.is_empty());
    }
    let all = store.arrivals_from(0, 100).unwrap();
    assert_eq!(all.len(), 10);
    let positions: Vec<u64> = all.iter().map(|r| r.position).collect();
    assert_eq!(positions, (1..=10).collect::<Vec<_>>());
    // Every event once, per author in seq order.
    for (key, count) in [(device(1), 6), (device(2), 4)] {
        let seqs: Vec<u64> = all.iter().filter(|r| r.author == key.author()).map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=count).collect::<Vec<_>>());
    }
    // From inside a run, with a limit that ends inside another.
    for from in 0..=11u64 {
        let part = store.arrivals_from(from, 3).unwrap();
        let expected: Vec<_> = all.iter().filter(|r| r.position >= from).take(3).copied().collect();
        assert_eq!(part, expected, "from {from}");
    }
}

#[test]
fn gaps_and_broken_chains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = chain(&device(1), SPACE, 6);
    // A gap: 1, 2, 4.
    let report = store.ingest(&SPACE, wire(&[a[0].clone(), a[1].clone(), a[3].clone()])).unwrap();
    assert_eq!(report.accepted, 2);
    assert_eq!(report.rejected[0].reason, RejectReason::Gap { expected: 3, got: 4 });
    // A validly signed event whose prev does not name seq 2: another chain by the same key.
    let other = {
        let key = device(1);
        let mut header = a[2].header.clone();
        header.prev = a[0].link;
        SignedEvent::build(&key, &header, Bytes::from_static(b"x")).unwrap()
    };
    let report = store.ingest(&SPACE, wire(&[other])).unwrap();
    assert_eq!(report.rejected[0].reason, RejectReason::BrokenChain);
    assert_eq!(store.vector(&SPACE).get(&device(1).author()), 2);
    // Duplicates are skipped, the rest lands.
    let report = store.ingest(&SPACE, wire(&a)).unwrap();
    assert_eq!((report.accepted, report.duplicates, report.rejected.len()), (4, 2, 0));
}

#[test]
fn fork_is_refused_and_kept_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = chain(&device(1), SPACE, 3);
    store.ingest(&SPACE, wire(&a)).unwrap();
    let key = device(1);
    let forked = SignedEvent::build(&key, &a[1].header, Bytes::from_static(b"another body")).unwrap();
    let report = store.ingest(&SPACE, wire(std::slice::from_ref(&forked))).unwrap();
    assert_eq!(report.rejected[0].reason, RejectReason::Fork { stored: a[1].id, offered: forked.id });
    assert_eq!(store.forks(&SPACE).unwrap(), vec![forked]);
    assert_eq!(dump(&store).len(), 3);
}

#[test]
fn wrong_space_and_malformed_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = chain(&device(1), SPACE, 1);
    let mut junk = a[0].to_wire();
    junk.event = Bytes::from_static(b"\xff\xff\xff");
    let report = store.ingest(&casesync_engine::model::ids::SpaceId([1; 16]), wire(&a)).unwrap();
    assert_eq!(report.rejected[0].reason, RejectReason::WrongSpace);
    let report = store.ingest(&SPACE, vec![junk]).unwrap();
    assert!(matches!(report.rejected[0].reason, RejectReason::Event(EventError::Malformed(_))));
    assert_eq!(report.accepted, 0);
    assert!(dump(&store).is_empty());
}

#[test]
fn every_single_byte_flip_of_a_transmitted_event_is_refused() {
    // The flipped event sits in the middle of a batch, so only the chain (not its own signature
    // check) can catch it: link hashes cover signatures too.
    let a = chain(&device(1), SPACE, 3);
    let original = a[1].to_wire();
    let joined: Vec<u8> = [original.event.as_ref(), original.signature.as_ref()].concat();
    let event_len = original.event.len();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.ingest(&SPACE, wire(&a[..1])).unwrap();
    for i in 0..joined.len() {
        let mut flipped = joined.clone();
        flipped[i] ^= 0x04;
        let message = casesync_proto::v1::SignedEvent {
            event: Bytes::copy_from_slice(&flipped[..event_len]),
            signature: Bytes::copy_from_slice(&flipped[event_len..]),
        };
        let report = store.ingest(&SPACE, vec![message, a[2].to_wire()]).unwrap();
        assert_eq!(report.accepted, 0, "flip at byte {i} was accepted");
        assert!(!report.rejected.is_empty(), "flip at byte {i} was not reported");
    }
    assert_eq!(store.vector(&SPACE).get(&device(1).author()), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random events from 3 authors, ingested in random batch splits and interleavings, give the
    /// same events and heads as ingesting them in order.
    #[test]
    fn any_split_and_interleaving_gives_the_same_store(
        lens in proptest::collection::vec(1u64..12, 3),
        cuts in proptest::collection::vec(0usize..40, 0..6),
        order_seed in any::<u64>(),
    ) {
        let chains: Vec<_> = lens.iter().enumerate().map(|(i, n)| chain(&device(i as u8 + 1), SPACE, *n)).collect();
        // Interleave keeping per-author order (what sync delivers).
        let stream = interleave_authors(&chains.concat(), &mut SeededRng::new(order_seed));
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort();
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut start = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            let report = store.ingest(&SPACE, wire(&stream[start..cut])).unwrap();
            prop_assert!(report.rejected.is_empty());
            start = cut;
        }
        // Re-delivering everything is a no-op.
        let again = store.ingest(&SPACE, wire(&stream)).unwrap();
        prop_assert_eq!(again.accepted, 0);
        let reference_dir = tempfile::tempdir().unwrap();
        let reference = open(reference_dir.path());
        for c in &chains {
            reference.ingest(&SPACE, wire(c)).unwrap();
        }
        prop_assert_eq!(dump(&store), dump(&reference));
        prop_assert_eq!(store.vector(&SPACE), reference.vector(&SPACE));
    }
}

/// A member stamps its event 2^64-1: it is stored as signed, and this device's next events
/// still carry its own clock (at most a day ahead of it), each after the one before.
#[test]
fn a_clock_of_two_to_the_sixty_four_does_not_drag_the_local_clock_along() {
    use casesync_engine::commands::Command;
    use casesync_engine::model::event::EventHeader;
    use casesync_engine::model::hlc;
    use casesync_engine::model::ids::{CaseId, EventId};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let far = EventHeader {
        space: SPACE,
        author: device(2).author(),
        seq: 1,
        prev: EventId::ZERO,
        hlc: u64::MAX,
        encoding: BodyEncoding::Sealed,
    };
    let event = SignedEvent::build(&device(2), &far, Bytes::from_static(b"from the far future")).unwrap();
    assert_eq!(store.ingest(&SPACE, wire(&[event])).unwrap().accepted, 1);
    let now = 1_800_000_000_000;
    let me = device(1);
    for n in 0..3u8 {
        let command = Command::CreateCase { id: CaseId([n; 16]), fields: Vec::new() };
        store.execute(&SPACE, &me, now, command).unwrap();
    }
    let clocks: Vec<u64> =
        (1..=3).map(|seq| store.get_event(&SPACE, &me.author(), seq).unwrap().unwrap().header.hlc).collect();
    assert!(clocks.windows(2).all(|w| w[0] < w[1]), "{clocks:?}");
    assert!(hlc::millis(clocks[2]) <= now + hlc::AHEAD_MAX_MS, "{clocks:?}");
}

/// A node takes from its peers no event stamped further ahead of its clock than an honest device's
/// runs: the run lands up to it, the rest waits and is taken once the node's clock is near.
#[test]
fn events_stamped_far_ahead_of_the_node_s_clock_wait_until_it_is_near() {
    use casesync_engine::model::hlc;
    let (source_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, store) = (open(source_dir.path()), open(dir.path()));
    let key = device(4);
    let now = 1_800_000_000_000;
    let later = now + 3 * hlc::AHEAD_MAX_MS;
    for at in [now, now + 1, later, later + 1] {
        source.append(&SPACE, &key, at, vec![(BodyEncoding::Sealed, Bytes::from_static(b"x"))]).unwrap();
    }
    let events: Vec<_> = source.events_after(&SPACE, &Default::default()).map(|r| r.unwrap().2).collect();
    let report = store.ingest_prepared(PreparedBatch::received(SPACE, events.clone(), now)).unwrap();
    assert_eq!(report.accepted, 2);
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    assert_eq!(report.rejected[0].seq, 3);
    assert!(matches!(report.rejected[0].reason, RejectReason::ClockAhead { ahead_ms } if ahead_ms > 0));
    assert_eq!(store.vector(&SPACE).get(&key.author()), 2);
    // A day later the same batch is taken whole (the first two as duplicates).
    let report = store.ingest_prepared(PreparedBatch::received(SPACE, events, later - hlc::AHEAD_MAX_MS)).unwrap();
    assert_eq!((report.accepted, report.duplicates), (2, 2), "{:?}", report.rejected);
    assert!(report.rejected.is_empty());
}

/// The same event in another byte form (an unknown field added, then signed by its own author):
/// refused, so one event never travels under several ids.
#[test]
fn a_non_canonical_encoding_is_refused_even_when_signed() {
    use casesync_engine::model::ids::EventId;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = device(1);
    let honest = chain(&key, SPACE, 1);
    let mut bytes = honest[0].bytes.to_vec();
    bytes.extend_from_slice(&[0x40, 0x01]);
    let signature = key.sign(&EventId::of(&bytes).0);
    let other = SignedEvent::decode(Bytes::from(bytes), &signature).unwrap();
    assert_eq!(other.header, honest[0].header);
    let report = store.ingest(&SPACE, wire(&[other])).unwrap();
    assert_eq!(report.accepted, 0);
    assert_eq!(
        report.rejected[0].reason,
        RejectReason::Event(EventError::Malformed("not the canonical encoding of an event"))
    );
    assert_eq!(store.ingest(&SPACE, wire(&honest)).unwrap().accepted, 1);
}
