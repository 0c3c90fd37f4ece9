//! Ingest of pre-signed batches of 1000 events (range verification as the engine implements it,
//! one durable commit per batch), next to what verifying every signature would cost.

use std::time::{Duration, Instant};

use casesync_benches::workload::{self, WorkloadSpec};
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::store::{Store, StoreOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The binaries' allocator (node/src/main.rs), so the benches measure what they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ingest(c: &mut Criterion) {
    let space = SpaceId([2; 16]);
    let batches = workload::generate_batches(WorkloadSpec::new(96_000, 8), space).unwrap();
    let mut group = c.benchmark_group("ingest");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(1000));
    for projections in [true, false] {
        let name = if projections { "ingest_1000_durable" } else { "ingest_1000_durable_relay" };
        let mut dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions { projections, ..StoreOptions::compatible() }).unwrap();
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if next == batches.len() {
                        // Out of fresh events: start over on an empty store (untimed).
                        drop(std::mem::replace(&mut store, {
                            dir = tempfile::tempdir().unwrap();
                            Store::open(dir.path(), StoreOptions { projections, ..StoreOptions::compatible() }).unwrap()
                        }));
                        next = 0;
                    }
                    let wire: Vec<_> = batches[next].iter().map(SignedEvent::to_wire).collect();
                    let sent = wire.len() as u64;
                    next += 1;
                    let started = Instant::now();
                    let report = store.ingest(&space, wire).unwrap();
                    total += started.elapsed();
                    assert_eq!(report.accepted, sent);
                }
                total
            })
        });
    }
    let batch = &batches[0];
    group.bench_function("verify_signature_each_of_1000", |b| {
        b.iter(|| batch.iter().all(|e| e.verify_signature().is_ok()))
    });
    group.bench_function("decode_1000_from_wire", |b| {
        let wire: Vec<_> = batch.iter().map(SignedEvent::to_wire).collect();
        b.iter(|| wire.iter().cloned().map(SignedEvent::from_wire).all(|e| e.is_ok()))
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
