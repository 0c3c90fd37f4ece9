//! The hostile member: device keys the bench founder grants a writer's role, the signed chains
//! they write (each body sealed under the space's data key, as a member's node seals), sync
//! clients that authenticate as them over TLS, and a tally of the statuses the target answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use casesync_engine::codec::wire;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{AuthorId, CaseId, EventId, SpaceId};
use casesync_engine::model::operation::{FieldValue, FieldWrite, Operation};
use casesync_engine::model::sealing::DataKey;
use casesync_engine::model::signing::DeviceKey;
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use tonic::transport::Channel;

use crate::workload::bench_data_secret;

/// Largest message the hostile client sends or accepts: above the node's own limit, so that the
/// node's decoder, not this client, refuses what is too large.
const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Hostile device keys a scenario may use (each granted a writer's role).
pub const HOSTILE_KEYS_MAX: usize = 32;

/// Hostile device key `index` (fixed, so every run writes the same chains).
pub fn hostile_key(index: usize) -> DeviceKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"casesync-bench-hostile");
    hasher.update(&(index as u64).to_be_bytes());
    DeviceKey::from_secret(*hasher.finalize().as_bytes())
}

/// A case id of a hostile chain.
pub fn hostile_case(key: &DeviceKey, case: u64) -> CaseId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"casesync-bench-hostile-case");
    hasher.update(key.author().as_bytes());
    hasher.update(&case.to_be_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    CaseId(id)
}

/// Text of `bytes` hex characters drawn from `seed` (incompressible, as a real attachment).
pub fn filler(seed: &[u8], bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 64);
    let mut reader = blake3::Hasher::new().update(seed).finalize_xof();
    let mut chunk = [0u8; 32];
    while out.len() < bytes {
        reader.fill(&mut chunk);
        out.push_str(&hex::encode(chunk));
    }
    out.truncate(bytes);
    out
}

/// One field write of a new field (superseding nothing).
pub fn new_field(name: String, value: String) -> FieldWrite {
    FieldWrite { name: name.into(), value: FieldValue::Text(value), supersedes: Default::default() }
}

/// A chain being written by one hostile key.
pub struct Chain {
    key: DeviceKey,
    space: SpaceId,
    data_key: DataKey,
    /// The seq of the last event written.
    pub seq: u64,
    /// The link hash of the last event written.
    pub prev: EventId,
}

impl Chain {
    /// A new chain of `key` in `space`, from seq 1.
    pub fn new(key: DeviceKey, space: SpaceId) -> Chain {
        Chain { key, space, data_key: DataKey::from_secret(bench_data_secret()), seq: 0, prev: EventId::ZERO }
    }

    /// The key's author id.
    pub fn author(&self) -> AuthorId {
        self.key.author()
    }

    /// The key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// Signs `operation` at `seq` after `prev`, without moving the chain (a fork when that seq is
    /// taken).
    pub fn event_at(&self, seq: u64, prev: EventId, operation: &Operation) -> anyhow::Result<SignedEvent> {
        let header = EventHeader {
            space: self.space,
            author: self.key.author(),
            seq,
            prev,
            hlc: (1_700_000_000_000u64 << 16) + seq,
            encoding: BodyEncoding::Sealed,
        };
        let body = Bytes::from(self.data_key.seal(&header, &wire::encode_operation(operation))?);
        SignedEvent::build(&self.key, &header, body).context("building a hostile event")
    }

    /// Signs `operation` as the next event of the chain.
    pub fn next(&mut self, operation: &Operation) -> anyhow::Result<SignedEvent> {
        let event = self.event_at(self.seq + 1, self.prev, operation)?;
        self.seq += 1;
        self.prev = event.link;
        Ok(event)
    }
}

/// A sync client authenticated as `key` over TLS (the target's key is not checked: the harness
/// started it). Connects once: a refused connection is an error, not retried.
pub async fn client_as(sync_url: &str, key: &DeviceKey) -> anyhow::Result<SyncClient<Channel>> {
    let cert = casesync_node::tls::DeviceCert::new(key)?;
    let seen = Arc::new(Mutex::new(None));
    let config = casesync_node::tls::client_config(&cert, Arc::new(|_| Ok(())), seen)?;
    let channel = casesync_node::sync_client::connect_peer(sync_url, config).await?;
    Ok(SyncClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

/// Wire form of a batch.
pub fn batch(events: &[SignedEvent]) -> pb::EventBatch {
    pb::EventBatch { events: events.iter().map(SignedEvent::to_wire).collect() }
}

/// The statuses a hostile client was answered with: a count per code, and the first message of
/// each.
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    by_code: BTreeMap<String, (u64, String)>,
}

impl Refusals {
    /// Notes one refusal.
    pub fn note(&mut self, status: &tonic::Status) {
        let entry = self.by_code.entry(format!("{:?}", status.code())).or_insert_with(|| (0, String::new()));
        entry.0 += 1;
        if entry.1.is_empty() {
            entry.1 = status.message().chars().take(160).collect();
        }
    }

    /// Refusals in all.
    pub fn total(&self) -> u64 {
        self.by_code.values().map(|(count, _)| count).sum()
    }

    /// One line: `Code xN ("first message"); ...`, or "none".
    pub fn describe(&self) -> String {
        if self.by_code.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> =
            self.by_code.iter().map(|(code, (count, first))| format!("{code} x{count} (\"{first}\")")).collect();
        parts.join("; ")
    }
}
