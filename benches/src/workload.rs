//! Synthetic workloads: signed, hash-chained events by several authors, each a ~200-byte Plain
//! `CreateCase` or `SetFields` body over many cases, and preloading them into a store.
//!
//! Every author owns its own cases (case `c` belongs to author `c % authors`) and each write names
//! the author's previous write of the same field as superseded, so projections stay realistic:
//! no conflicts, a handful of fields per case.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use casesync_engine::codec::wire;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{AuthorId, CaseId, EventId, SpaceId};
use casesync_engine::model::operation::{smallvec, Dot, FieldValue, FieldWrite, Operation};
use casesync_engine::model::sealing::DataKey;
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::store::Store;
use casesync_proto::v1 as pb;

use crate::signer::ChainSigner;

/// Events per ingested batch (below the engine's `BATCH_EVENTS_MAX`).
pub const BATCH_EVENTS: usize = 1000;

/// Field names written round-robin after a case is created.
const FIELDS: [&str; 8] = ["name", "phone", "email", "address", "notes", "insurer", "therapist", "reference"];

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadSpec {
    /// Total events.
    pub events: u64,
    /// Number of authors (device keys).
    pub authors: usize,
    /// Number of cases (spread over the authors).
    pub cases: u64,
    /// Length of the text value of each write (about 120 gives ~200-byte bodies).
    pub text_bytes: usize,
    /// Seed for keys and case ids.
    pub seed: u64,
}

impl WorkloadSpec {
    /// `events` over `authors`, with one case per ten events (at least one per author).
    pub fn new(events: u64, authors: usize) -> WorkloadSpec {
        let authors = authors.max(1);
        WorkloadSpec { events, authors, cases: (events / 10).max(authors as u64), text_bytes: 120, seed: 7 }
    }

    /// Events author `index` writes.
    pub fn events_of(&self, index: usize) -> u64 {
        let base = self.events / self.authors as u64;
        base + u64::from((index as u64) < self.events % self.authors as u64)
    }

    /// The signing key of author `index`.
    pub fn key(&self, index: usize) -> DeviceKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"casesync-bench-author");
        hasher.update(&self.seed.to_be_bytes());
        hasher.update(&(index as u64).to_be_bytes());
        DeviceKey::from_secret(*hasher.finalize().as_bytes())
    }

    /// The author ids.
    pub fn authors(&self) -> Vec<AuthorId> {
        (0..self.authors).map(|i| self.key(i).author()).collect()
    }
}

/// One author's chain being written: its key, head and the last write of each of its fields.
pub struct AuthorStream {
    spec: WorkloadSpec,
    index: usize,
    author: AuthorId,
    signer: ChainSigner,
    space: SpaceId,
    seq: u64,
    prev: EventId,
    written: u64,
    last: HashMap<(u64, u8), Dot>,
    /// The bench space's data key: every body is sealed under it, as a member's node seals.
    data_key: DataKey,
}

/// The bench space's data key: fixed, so every run seals the same bytes (templates are reused);
/// the bench founder introduces it (`membership.rs`).
pub fn bench_data_secret() -> [u8; 32] {
    *blake3::hash(b"casesync-bench-data-key").as_bytes()
}

impl AuthorStream {
    /// Author `index` of `spec`, writing into `space`, from seq 1.
    pub fn new(spec: WorkloadSpec, space: SpaceId, index: usize) -> anyhow::Result<AuthorStream> {
        let key = spec.key(index);
        let data_key = DataKey::from_secret(bench_data_secret());
        Ok(AuthorStream {
            spec,
            index,
            author: key.author(),
            signer: ChainSigner::of(&key)?,
            space,
            seq: 0,
            prev: EventId::ZERO,
            written: 0,
            last: HashMap::new(),
            data_key,
        })
    }

    /// Events left to write.
    pub fn remaining(&self) -> u64 {
        self.spec.events_of(self.index).saturating_sub(self.written)
    }

    fn own_cases(&self) -> u64 {
        let authors = self.spec.authors as u64;
        (self.spec.cases / authors + u64::from((self.index as u64) < self.spec.cases % authors)).max(1)
    }

    fn case_id(&self, case: u64) -> CaseId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"casesync-bench-case");
        hasher.update(&self.spec.seed.to_be_bytes());
        hasher.update(&case.to_be_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        CaseId(id)
    }

    fn text(&self) -> String {
        let mut out = String::with_capacity(self.spec.text_bytes);
        let mut reader = blake3::Hasher::new()
            .update(&(self.index as u64).to_be_bytes())
            .update(&self.seq.to_be_bytes())
            .finalize_xof();
        let mut chunk = [0u8; 32];
        while out.len() < self.spec.text_bytes {
            reader.fill(&mut chunk);
            out.push_str(&hex::encode(chunk));
        }
        out.truncate(self.spec.text_bytes);
        out
    }

    /// Builds and signs the next event of this author.
    pub fn next_event(&mut self) -> anyhow::Result<SignedEvent> {
        let own = self.own_cases();
        let local = self.written % own;
        let round = self.written / own;
        let case_index = self.index as u64 + local * self.spec.authors as u64;
        let case = self.case_id(case_index);
        self.seq += 1;
        let dot = Dot { author: self.author, seq: self.seq };
        let field = if round == 0 { 0 } else { (round % FIELDS.len() as u64) as u8 };
        let supersedes = self.last.insert((case_index, field), dot).into_iter().collect();
        let write =
            FieldWrite { name: FIELDS[field as usize].into(), value: FieldValue::Text(self.text()), supersedes };
        let operation = if round == 0 {
            Operation::CreateCase { case, fields: smallvec![write] }
        } else {
            Operation::SetFields { case, fields: smallvec![write] }
        };
        let header = EventHeader {
            space: self.space,
            author: self.author,
            seq: self.seq,
            prev: self.prev,
            hlc: (1_700_000_000_000u64 << 16) + self.seq,
            encoding: BodyEncoding::Sealed,
        };
        let body = Bytes::from(self.data_key.seal(&header, &wire::encode_operation(&operation))?);
        let event =
            SignedEvent::build_signed_by(&header, body, |id| self.signer.sign(id)).context("building a bench event")?;
        self.prev = event.link;
        self.written += 1;
        Ok(event)
    }

    /// The next batch of up to `count` events.
    pub fn next_batch(&mut self, count: usize) -> anyhow::Result<Vec<SignedEvent>> {
        let count = (count as u64).min(self.remaining()) as usize;
        (0..count).map(|_| self.next_event()).collect()
    }
}

/// Every event of a workload, in memory, author after author (for micro-benches).
pub fn generate_all(spec: WorkloadSpec, space: SpaceId) -> anyhow::Result<Vec<SignedEvent>> {
    let mut out = Vec::with_capacity(spec.events as usize);
    for index in 0..spec.authors {
        let mut stream = AuthorStream::new(spec, space, index)?;
        while stream.remaining() > 0 {
            out.push(stream.next_event()?);
        }
    }
    Ok(out)
}

/// Batches of a workload, interleaving authors batch by batch (for micro-benches).
pub fn generate_batches(spec: WorkloadSpec, space: SpaceId) -> anyhow::Result<Vec<Vec<SignedEvent>>> {
    let mut streams =
        (0..spec.authors).map(|i| AuthorStream::new(spec, space, i)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    while streams.iter().any(|s| s.remaining() > 0) {
        for stream in streams.iter_mut().filter(|s| s.remaining() > 0) {
            out.push(stream.next_batch(BATCH_EVENTS)?);
        }
    }
    Ok(out)
}

/// What a preload did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreloadReport {
    /// Events stored.
    pub events: u64,
    /// Event bytes plus signatures.
    pub bytes: u64,
    /// Wall time of signing and ingesting.
    pub elapsed: Duration,
    /// Wall time after the last ingest to complete the views (0 when the template was reused).
    pub views: Duration,
    /// Wall time after that to flush every family and wait for RocksDB's compactions.
    pub settle: Duration,
}

/// Ingests a whole workload into `store` in batches of [`BATCH_EVENTS`], one author's whole
/// chain after another: `threads` threads sign (thread `t` signs authors `t`, `t + threads`, ...,
/// each at most one chain ahead of the ingest), this thread ingests. Fails on any refusal.
///
/// Author by author, the events family is written in key order, so RocksDB flushes files that
/// overlap no other and moves them down the levels without rewriting them. Authors interleaved
/// batch by batch made every flushed file overlap every older one: a 10M-event preload spent a
/// third of its CPU rewriting the log (35 GB written by compactions for 5.6 GB of events).
pub fn preload(store: &Store, space: SpaceId, spec: WorkloadSpec, threads: usize) -> anyhow::Result<PreloadReport> {
    let started = Instant::now();
    let threads = threads.clamp(1, spec.authors);
    let chain_batches = spec.events_of(0).div_ceil(BATCH_EVENTS as u64) as usize;
    let mut report = PreloadReport::default();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut inboxes = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<anyhow::Result<Vec<pb::SignedEvent>>>(chain_batches.max(1));
            inboxes.push(rx);
            scope.spawn(move || sign_chains(spec, space, (t..spec.authors).step_by(threads), &tx));
        }
        for author in 0..spec.authors {
            let inbox = &inboxes[author % threads];
            let mut left = spec.events_of(author);
            while left > 0 {
                let batch = inbox.recv().context("a preload signer stopped")??;
                let sent = batch.len() as u64;
                left = left.saturating_sub(sent);
                report.bytes += batch.iter().map(|e| (e.event.len() + e.signature.len()) as u64).sum::<u64>();
                let ingest = store.ingest(&space, batch).context("preload ingest")?;
                if let Some(first) = ingest.rejected.first() {
                    bail!("preload batch refused at seq {}: {}", first.seq, first.reason);
                }
                if ingest.accepted != sent {
                    bail!("preload batch: {} of {sent} events accepted", ingest.accepted);
                }
                report.events += sent;
            }
        }
        Ok(())
    })?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Signs the chains of `authors`, one after another, into `out` in batches; stops at the first
/// failure (sent on) or when the ingest has gone.
fn sign_chains(
    spec: WorkloadSpec,
    space: SpaceId,
    authors: impl Iterator<Item = usize>,
    out: &mpsc::SyncSender<anyhow::Result<Vec<pb::SignedEvent>>>,
) {
    for index in authors {
        let mut stream = match AuthorStream::new(spec, space, index) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = out.send(Err(e));
                return;
            }
        };
        while stream.remaining() > 0 {
            let batch = stream.next_batch(BATCH_EVENTS).map(|b| b.iter().map(SignedEvent::to_wire).collect());
            let failed = batch.is_err();
            if out.send(batch).is_err() || failed {
                return;
            }
        }
    }
}
