//! Local appends: 1000 signed ~300-byte events per durable `Store::append`, and the pieces each
//! event costs (blake3 of 300 bytes, ed25519 sign and verify).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use casesync_engine::model::event::BodyEncoding;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::signing::{DeviceKey, VerifyingKey};
use casesync_engine::store::{Store, StoreOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The binaries' allocator (node/src/main.rs), so the benches measure what they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::compatible()).unwrap();
    let space = SpaceId([1; 16]);
    let key = DeviceKey::from_secret([9; 32]);
    // Sealed bodies are stored and signed like any other but skip the fold, so this measures the
    // log; ~200 body bytes + header + signature is ~300 bytes per event.
    let bodies: Vec<(BodyEncoding, Bytes)> =
        (0..1000u32).map(|i| (BodyEncoding::Sealed, Bytes::from(vec![(i % 251) as u8; 200]))).collect();
    let mut group = c.benchmark_group("append");
    group.sample_size(10).measurement_time(Duration::from_secs(4)).throughput(Throughput::Elements(1000));
    let mut now = 1_700_000_000_000u64;
    group.bench_function("store_append_1000x300b_durable", |b| {
        b.iter(|| {
            now += 1;
            store.append(&space, &key, now, bodies.clone()).unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("pieces");
    group.sample_size(20).measurement_time(Duration::from_secs(2));
    let message = [7u8; 300];
    group.bench_function("blake3_300b", |b| b.iter(|| blake3::hash(black_box(&message))));
    let digest = *blake3::hash(&message).as_bytes();
    group.bench_function("ed25519_sign", |b| b.iter(|| key.sign(black_box(&digest))));
    let signature = key.sign(&digest);
    let verifying = VerifyingKey::new(&key.author()).unwrap();
    group.bench_function("ed25519_verify_strict", |b| b.iter(|| verifying.verify(black_box(&digest), &signature)));
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
