//! Projections: the in-memory fold of pre-decoded events (SetFields over 100k cases), and
//! `Store::rebuild_projections` over a stored log.

use std::time::Duration;

use casesync_benches::workload::{self, WorkloadSpec};
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::projection::fold::Fold;
use casesync_engine::store::{Store, StoreOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The binaries' allocator (node/src/main.rs), so the benches measure what they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn projection(c: &mut Criterion) {
    let space = SpaceId([3; 16]);
    let spec = WorkloadSpec { cases: 100_000, ..WorkloadSpec::new(300_000, 8) };
    let events = workload::generate_all(spec, space).unwrap();
    let mut group = c.benchmark_group("projection");
    group.sample_size(10).measurement_time(Duration::from_secs(6)).throughput(Throughput::Elements(spec.events));
    group.bench_function("fold_300k_events_100k_cases", |b| {
        b.iter(|| {
            let mut fold = Fold::new(VersionVector::new());
            for event in &events {
                fold.apply(event, |_| Ok::<_, std::convert::Infallible>(None)).unwrap();
            }
            fold.case_count()
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let stored = WorkloadSpec { cases: 20_000, ..WorkloadSpec::new(200_000, 8) };
    workload::preload(&store, space, stored, 2).unwrap();
    group.throughput(Throughput::Elements(stored.events));
    group.bench_function("rebuild_projections_200k_events", |b| b.iter(|| store.rebuild_projections(&space).unwrap()));
    group.finish();
}

criterion_group!(benches, projection);
criterion_main!(benches);
