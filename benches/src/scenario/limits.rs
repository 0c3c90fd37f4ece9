//! The `limits` scenario: the raw pieces every sync is made of, measured in this process on this
//! machine, so each scenario can say which piece bounds it and how close it comes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::signing::{DeviceKey, VerifyingKey};
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::projection::fold::Fold;
use casesync_engine::store::{Store, StoreOptions};
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use casesync_proto::v1::sync_server::{Sync, SyncServer};
use prost::Message;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::report::ScenarioReport;
use crate::workload::{self, WorkloadSpec};

/// How hard to measure.
#[derive(Clone, Copy, Debug)]
pub struct LimitsOptions {
    /// Fewer iterations (for tests).
    pub quick: bool,
}

fn per_op(iterations: u64, mut f: impl FnMut(u64)) -> Duration {
    let started = Instant::now();
    for i in 0..iterations {
        f(i);
    }
    started.elapsed() / iterations.max(1) as u32
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// Runs every limit measurement.
pub fn run(runtime: &Runtime, options: LimitsOptions) -> anyhow::Result<ScenarioReport> {
    let scale = if options.quick { 1 } else { 10 };
    let mut report = ScenarioReport::new("limits", format!("quick={}", options.quick));

    let message = [7u8; 300];
    let d = per_op(20_000 * scale, |i| {
        let mut m = message;
        m[0] = i as u8;
        black_box(blake3::hash(&m));
    });
    report.metric("blake3_300b_ns", ns(d), "ns");

    let key = DeviceKey::from_secret([3; 32]);
    let digest = *blake3::hash(&message).as_bytes();
    let d = per_op(500 * scale, |_| {
        black_box(key.sign(black_box(&digest)));
    });
    report.metric("ed25519_sign_us", ns(d) / 1e3, "us");
    let signature = key.sign(&digest);
    let verifying = VerifyingKey::new(&key.author()).context("bench key")?;
    let d = per_op(500 * scale, |_| {
        black_box(verifying.verify(black_box(&digest), &signature).is_ok());
    });
    report.metric("ed25519_verify_strict_us", ns(d) / 1e3, "us");

    // Batch verification of 1000 signatures by 8 keys over distinct digests.
    let dalek_keys: Vec<ed25519_dalek::SigningKey> =
        (0..8u8).map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32])).collect();
    let digests: Vec<[u8; 32]> = (0..1000u32).map(|i| *blake3::hash(&i.to_be_bytes()).as_bytes()).collect();
    let signatures: Vec<ed25519_dalek::Signature> =
        digests.iter().enumerate().map(|(i, m)| ed25519_dalek::Signer::sign(&dalek_keys[i % 8], m)).collect();
    let public: Vec<ed25519_dalek::VerifyingKey> = (0..1000).map(|i| dalek_keys[i % 8].verifying_key()).collect();
    let messages: Vec<&[u8]> = digests.iter().map(|m| m.as_slice()).collect();
    let rounds = scale.min(5);
    let d = per_op(rounds, |_| {
        black_box(ed25519_dalek::verify_batch(&messages, &signatures, &public).is_ok());
    });
    report.metric("ed25519_verify_batch_us_per_sig", ns(d) / 1e3 / 1000.0, "us");

    // RocksDB: batches of 1000 x 300 B, with and without a synced WAL; and one-event synced writes.
    let dir = tempfile::tempdir().context("temp dir")?;
    let db = rocksdb::DB::open_default(dir.path()).context("opening a scratch RocksDB")?;
    let mut counter = 0u64;
    let mut write = |sync: bool, events: usize| -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for _ in 0..events {
            counter += 1;
            batch.put(counter.to_be_bytes(), message);
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        db.write_opt(batch, &options).context("scratch write")
    };
    for (sync, name) in [(true, "sync"), (false, "nosync")] {
        let batches = 20 * scale;
        let started = Instant::now();
        for _ in 0..batches {
            write(sync, 1000)?;
        }
        let per_batch = started.elapsed() / batches as u32;
        report.metric(&format!("rocksdb_batch_1000x300b_{name}_ms"), per_batch.as_secs_f64() * 1e3, "ms");
        report.metric(
            &format!("rocksdb_batch_1000x300b_{name}_events_per_s"),
            1000.0 / per_batch.as_secs_f64(),
            "ev/s",
        );
    }
    let writes = 50 * scale;
    let started = Instant::now();
    for _ in 0..writes {
        write(true, 1)?;
    }
    report.metric("rocksdb_sync_write_1_event_us", started.elapsed().as_secs_f64() * 1e6 / writes as f64, "us");
    drop(db);

    // Decoding: the protobuf wrapper alone, and the engine's full decode (Event, id, link hash).
    let space = SpaceId([5; 16]);
    let spec = WorkloadSpec::new(2_000 * scale, 8);
    let events = workload::generate_all(spec, space)?;
    let encoded: Vec<Vec<u8>> = events.iter().map(|e| e.to_wire().encode_to_vec()).collect();
    let avg_bytes = encoded.iter().map(Vec::len).sum::<usize>() as f64 / encoded.len() as f64;
    report.metric("event_wire_bytes_avg", avg_bytes, "B");
    let d = per_op(encoded.len() as u64, |i| {
        black_box(pb::SignedEvent::decode(encoded[i as usize].as_slice()).is_ok());
    });
    report.metric("prost_decode_signed_event_ns", ns(d), "ns");
    let wires: Vec<pb::SignedEvent> = events.iter().map(SignedEvent::to_wire).collect();
    let started = Instant::now();
    for wire in wires.iter().cloned() {
        black_box(SignedEvent::from_wire(wire).is_ok());
    }
    report.metric("engine_decode_event_ns", ns(started.elapsed()) / wires.len() as f64, "ns");

    // The fold, in memory.
    let started = Instant::now();
    let mut fold = Fold::new(VersionVector::new());
    for event in &events {
        let _ = fold.apply(event, |_| Ok::<_, std::convert::Infallible>(None));
    }
    black_box(fold.case_count());
    report.metric("fold_ns_per_event", ns(started.elapsed()) / events.len() as f64, "ns");

    // The engine's ingest, in process: what one node can store per second on one core.
    for (projections, name) in [(true, "engine_ingest_events_per_s"), (false, "engine_ingest_relay_events_per_s")] {
        let dir = tempfile::tempdir().context("temp dir")?;
        let store = Store::open(dir.path(), StoreOptions { projections, ..StoreOptions::compatible() })
            .context("scratch store")?;
        let spec = WorkloadSpec::new(10_000 * scale, 8);
        let batches = workload::generate_batches(spec, space)?;
        let started = Instant::now();
        for batch in batches {
            let report = store.ingest(&space, batch.iter().map(SignedEvent::to_wire).collect())?;
            anyhow::ensure!(report.rejected.is_empty(), "scratch ingest refused events");
        }
        report.metric(name, spec.events as f64 / started.elapsed().as_secs_f64(), "ev/s");
    }

    // gRPC: a server-streaming Pull of synthetic batches over 127.0.0.1, and unary round trips.
    let batch: Vec<pb::SignedEvent> = wires.iter().take(1000).cloned().collect();
    let batches = 50 * scale;
    let (events_per_s, mb_per_s, rtt) = runtime.block_on(grpc_limits(batch, batches))?;
    report.metric("tonic_stream_events_per_s", events_per_s, "ev/s");
    report.metric("tonic_stream_mb_per_s", mb_per_s, "MB/s");
    report.metric("grpc_unary_rtt_us", rtt.as_secs_f64() * 1e6, "us");
    report.ok = true;
    Ok(report)
}

/// A Sync service whose Pull streams the same batch `batches` times.
struct StreamingService {
    batch: Vec<pb::SignedEvent>,
    batches: u64,
}

#[tonic::async_trait]
impl Sync for StreamingService {
    async fn hello(&self, _request: Request<pb::HelloRequest>) -> Result<Response<pb::HelloReply>, Status> {
        Ok(Response::new(pb::HelloReply::default()))
    }

    async fn heads(&self, _request: Request<pb::HeadsRequest>) -> Result<Response<pb::HeadsReply>, Status> {
        Err(Status::unimplemented("bench service"))
    }

    type PullStream = ReceiverStream<Result<pb::EventBatch, Status>>;

    async fn pull(&self, _request: Request<pb::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let (batch, batches) = (self.batch.clone(), self.batches);
        tokio::spawn(async move {
            for _ in 0..batches {
                if tx.send(Ok(pb::EventBatch { events: batch.clone() })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push(&self, _request: Request<Streaming<pb::EventBatch>>) -> Result<Response<pb::PushReply>, Status> {
        Err(Status::unimplemented("bench service"))
    }

    async fn join(&self, _request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        Err(Status::unimplemented("bench service"))
    }

    async fn introduce(&self, _request: Request<pb::IntroduceRequest>) -> Result<Response<pb::IntroduceReply>, Status> {
        Err(Status::unimplemented("bench service"))
    }
}

async fn grpc_limits(batch: Vec<pb::SignedEvent>, batches: u64) -> anyhow::Result<(f64, f64, Duration)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = SyncServer::new(StreamingService { batch, batches })
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);
    let server = tokio::spawn(
        tonic::transport::Server::builder().tcp_nodelay(true).add_service(service).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async move {
                let _ = stopped.await;
            },
        ),
    );
    let result = async {
        let channel = crate::probe::connect(&format!("http://{addr}")).await?;
        let mut client = SyncClient::new(channel).max_decoding_message_size(8 << 20).max_encoding_message_size(8 << 20);
        let rounds = 2_000u32;
        let started = Instant::now();
        for _ in 0..rounds {
            client.hello(pb::HelloRequest {}).await?;
        }
        let rtt = started.elapsed() / rounds;
        let started = Instant::now();
        let mut stream = client.pull(pb::PullRequest::default()).await?.into_inner();
        let (mut events, mut bytes) = (0u64, 0u64);
        while let Some(batch) = stream.message().await? {
            events += batch.events.len() as u64;
            bytes += batch.events.iter().map(|e| (e.event.len() + e.signature.len()) as u64).sum::<u64>();
        }
        let secs = started.elapsed().as_secs_f64();
        anyhow::Ok((events as f64 / secs, bytes as f64 / secs / 1e6, rtt))
    }
    .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    result
}
