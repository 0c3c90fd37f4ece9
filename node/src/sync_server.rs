//! The sync service: a thin adapter from gRPC to the engine. Peers, authenticated by their TLS
//! device certificates, pull
//! what they lack (optionally following live) and push what we lack, in bounded batches.

use std::sync::Arc;

use casesync_engine::codec::wire;
use casesync_engine::log::ingest::PreparedBatch;
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::limits::{BATCH_EVENTS_MAX, VECTOR_PAGE_AUTHORS_MAX};
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_server::Sync;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::bulk_catch_up::{batch_is_full, FloodWatch, BULK_IDLE_MAX};
use crate::device_streams::{displaced_status, until_displaced, StreamKind};
use crate::event_stream::{stream_events, STREAM_BUFFER_BATCHES};
use crate::grpc_status;
use crate::ingest_thread::{Pipeline, WAITING_LANDS_AFTER};
use crate::shared::{now_ms, Shared};
use crate::tls::PeerDevice;

/// The sync service of one node, for every space it holds.
pub struct SyncServer {
    spaces: Vec<Arc<Shared>>,
}

impl SyncServer {
    /// A service over the node's spaces (the first is the one a push that names none is for).
    pub fn new(spaces: Vec<Arc<Shared>>) -> SyncServer {
        SyncServer { spaces }
    }

    /// The space a request is for: `space` (its message's), or the push's header, else the
    /// node's first.
    fn space_of<T>(&self, request: &Request<T>, space: Option<&[u8]>) -> Result<&Arc<Shared>, Status> {
        let named = match space {
            Some(bytes) => Some(bytes.to_vec()),
            None => request
                .metadata()
                .get(crate::shared::SPACE_HEADER)
                .map(|v| hex::decode(v.as_bytes()).map_err(|_| Status::invalid_argument("the space header is not hex")))
                .transpose()?,
        };
        match named {
            None => self.spaces.first().ok_or_else(|| Status::unavailable("this node serves no space")),
            Some(bytes) => {
                let space =
                    SpaceId::from_slice(&bytes).map_err(|_| Status::invalid_argument("a space id is 16 bytes"))?;
                self.spaces
                    .iter()
                    .find(|s| s.space == space)
                    .ok_or_else(|| Status::not_found("this node does not serve that space"))
            }
        }
    }

    /// The device at the other end, as its TLS handshake proved it (`tls.rs`), if it may sync
    /// in `shared`'s space now. Checked before any request body is read.
    fn authenticate<T>(shared: &Shared, request: &Request<T>) -> Result<AuthorId, Status> {
        let device = peer_device(request)?;
        if device != shared.identity.author() {
            shared.may_connect(&device).map_err(|refusal| {
                Status::permission_denied(format!(
                    "device {} may not sync in this space: {refusal}",
                    device.device_id()
                ))
            })?;
        }
        Ok(device)
    }
}

/// The ingests of one pushed stream: each returns (accepted, duplicates).
type PushPipeline = Pipeline<Result<(u64, u64), Status>>;

/// The ingests of a stream pushed by `device`; each fails on a refusal of `device`'s own events
/// (after the honest part landed). Refused events of other authors it relays are noted and the
/// stream goes on (`Shared::session_ending`).
fn push_pipeline(shared: Arc<Shared>, device: AuthorId) -> PushPipeline {
    PushPipeline::new(move |batch| {
        let report = shared.store_from_peer(&device, batch).map_err(|e| grpc_status::store(&e))?;
        if let Some(first) = shared.session_ending(&device, &report) {
            tracing::warn!(peer = %device.device_id(), refused = report.rejected.len(), "push refused: {}", first.reason);
            return Err(grpc_status::rejection(first));
        }
        Ok((report.accepted, report.duplicates))
    })
}

/// Nothing more was waiting at the pusher: every batch handed on lands, then a bulk catch-up of
/// a flood ends.
async fn caught_up(
    shared: &Shared,
    pipeline: &mut PushPipeline,
    flood: &mut FloodWatch,
    reply: &mut pb::PushReply,
) -> Result<(), Status> {
    let done = pipeline.finish(&shared.ingest).await.map_err(grpc_status::ingest_thread)?;
    count(done, reply)?;
    flood.finish().await.map_err(|e| Status::internal(e.to_string()))
}

/// The device the connection's TLS handshake proved.
fn peer_device<T>(request: &Request<T>) -> Result<AuthorId, Status> {
    request
        .extensions()
        .get::<PeerDevice>()
        .map(|peer| peer.device)
        .ok_or_else(|| Status::unauthenticated("the connection carries no device certificate"))
}

fn count(done: Vec<Result<(u64, u64), Status>>, reply: &mut pb::PushReply) -> Result<(), Status> {
    for result in done {
        let (accepted, duplicates) = result?;
        reply.accepted += accepted;
        reply.duplicates += duplicates;
    }
    Ok(())
}

#[tonic::async_trait]
impl Sync for SyncServer {
    async fn hello(&self, request: Request<pb::HelloRequest>) -> Result<Response<pb::HelloReply>, Status> {
        let shared = self.space_of(&request, None)?;
        let binding = request.extensions().get::<PeerDevice>().map(|peer| peer.binding);
        let binding_signature = binding
            .map(|b| bytes::Bytes::copy_from_slice(&shared.identity.key.sign(&crate::tls::binding_digest(&b))))
            .unwrap_or_default();
        Ok(Response::new(pb::HelloReply {
            device: bytes::Bytes::copy_from_slice(shared.identity.author().as_bytes()),
            device_name: String::new(),
            spaces: Vec::new(),
            binding_signature,
        }))
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let device = peer_device(&request)?;
        let shared = self.space_of(&request, Some(&request.get_ref().space))?.clone();
        crate::invite::admit(shared, device, request.into_inner()).await.map(Response::new)
    }

    async fn introduce(&self, request: Request<pb::IntroduceRequest>) -> Result<Response<pb::IntroduceReply>, Status> {
        let device = peer_device(&request)?;
        let shared = self.space_of(&request, Some(&request.get_ref().space))?.clone();
        crate::introduce::serve(shared, device, request.into_inner()).await.map(Response::new)
    }

    async fn heads(&self, request: Request<pb::HeadsRequest>) -> Result<Response<pb::HeadsReply>, Status> {
        let shared = self.space_of(&request, Some(&request.get_ref().space))?;
        Self::authenticate(shared, &request)?;
        let message = request.get_ref();
        let after = match message.after.is_empty() {
            true => None,
            false => Some(
                AuthorId::from_slice(&message.after)
                    .map_err(|_| Status::invalid_argument("`after` names a 32-byte author key"))?,
            ),
        };
        let limit = match message.limit as usize {
            0 => VECTOR_PAGE_AUTHORS_MAX,
            limit => limit.min(VECTOR_PAGE_AUTHORS_MAX),
        };
        let (page, more) = shared.store.vector(&shared.space).page_after(after.as_ref(), limit);
        let heads = pb::VersionVector {
            heads: page
                .into_iter()
                .map(|(author, seq)| pb::Dot { author: bytes::Bytes::copy_from_slice(author.as_bytes()), seq })
                .collect(),
        };
        Ok(Response::new(pb::HeadsReply {
            heads: Some(heads),
            device: bytes::Bytes::copy_from_slice(shared.identity.author().as_bytes()),
            more,
        }))
    }

    type PullStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

    async fn pull(&self, request: Request<pb::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let shared = self.space_of(&request, Some(&request.get_ref().space))?.clone();
        let device = Self::authenticate(&shared, &request)?;
        let message = request.into_inner();
        let have = message.have.unwrap_or_default();
        let have = if message.listed {
            // The authors named from the seq given, every other one from this node's head.
            if have.heads.len() > VECTOR_PAGE_AUTHORS_MAX {
                return Err(Status::invalid_argument(format!(
                    "a pull lists at most {VECTOR_PAGE_AUTHORS_MAX} authors"
                )));
            }
            let mut vector = shared.store.vector(&shared.space);
            for dot in &have.heads {
                let author = AuthorId::from_slice(&dot.author)
                    .map_err(|_| Status::invalid_argument("vector author must be 32 bytes"))?;
                vector.set(author, dot.seq);
            }
            vector
        } else {
            wire::vector_from_pb(&have).map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        // A `have` naming this device's own chain beyond its head is a claim, not evidence: it
        // raises no fence (a peer's push of those events does, `Shared::store_from_peer`).
        shared.reset_known(&device, &have);
        let slot = shared.streams.open(device, StreamKind::Pull);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_BATCHES);
        tokio::spawn(stream_events(shared, device, have, message.follow, tx));
        Ok(Response::new(Box::pin(until_displaced(ReceiverStream::new(rx), slot))))
    }

    async fn push(&self, request: Request<Streaming<pb::EventBatch>>) -> Result<Response<pb::PushReply>, Status> {
        let shared = self.space_of(&request, None)?.clone();
        let device = Self::authenticate(&shared, &request)?;
        let mut stream = request.into_inner();
        let mut reply = pb::PushReply::default();
        let mut stopping = shared.stopping.subscribe();
        let slot = shared.streams.open(device, StreamKind::Push);
        // Batches are decoded here and ingested on the node's ingest thread while the next ones
        // are received (in order; at most one ingest in flight, see `Pipeline`).
        let mut pipeline = push_pipeline(shared.clone(), device);
        let mut flood = FloodWatch::default();
        loop {
            /// What the stream brought, or that it went quiet.
            enum Next {
                Batch(pb::EventBatch),
                Stalled,
                Quiet,
                Displaced,
            }
            let next = tokio::select! {
                message = stream.message() => match message? {
                    Some(batch) => Next::Batch(batch),
                    None => break,
                },
                _ = stopping.wait_for(|s| *s) => return Err(Status::unavailable("node is stopping")),
                () = slot.displaced() => Next::Displaced,
                _ = tokio::time::sleep(BULK_IDLE_MAX), if flood.in_bulk() => Next::Stalled,
                _ = tokio::time::sleep(WAITING_LANDS_AFTER), if pipeline.holds_waiting() => Next::Quiet,
            };
            let batch = match next {
                Next::Batch(batch) => batch,
                Next::Stalled => {
                    // A flood that stalls ends its bulk catch-up: commands wait no longer.
                    caught_up(&shared, &mut pipeline, &mut flood, &mut reply).await?;
                    continue;
                }
                Next::Displaced => {
                    // What it handed on lands; the rest of the stream is dropped unread.
                    let done = pipeline.finish(&shared.ingest).await.map_err(grpc_status::ingest_thread)?;
                    count(done, &mut reply)?;
                    return Err(displaced_status(StreamKind::Push));
                }
                Next::Quiet => {
                    // A quiet stream lands what waits, so it holds no room others need.
                    let done = pipeline.finish(&shared.ingest).await.map_err(grpc_status::ingest_thread)?;
                    count(done, &mut reply)?;
                    continue;
                }
            };
            if batch.events.is_empty() {
                // The pusher's caught-up marker: nothing more was waiting behind what it sent.
                caught_up(&shared, &mut pipeline, &mut flood, &mut reply).await?;
                continue;
            }
            if batch.events.len() > BATCH_EVENTS_MAX {
                return Err(Status::invalid_argument(format!(
                    "batch of {} events exceeds the limit of {BATCH_EVENTS_MAX}",
                    batch.events.len()
                )));
            }
            let full = batch_is_full(&batch);
            if flood.before(&shared, &batch).await.map_err(|e| Status::internal(e.to_string()))? {
                // A replay, not a flood: the catch-up ends.
                caught_up(&shared, &mut pipeline, &mut flood, &mut reply).await?;
            }
            let prepared = PreparedBatch::received(shared.space, batch.events, now_ms());
            let done = pipeline.push(&shared.ingest, prepared).await.map_err(grpc_status::ingest_thread)?;
            count(done, &mut reply)?;
            if !full && flood.in_bulk() {
                // The flood ended: its last batch lands before the views are completed.
                caught_up(&shared, &mut pipeline, &mut flood, &mut reply).await?;
            }
        }
        caught_up(&shared, &mut pipeline, &mut flood, &mut reply).await?;
        Ok(Response::new(reply))
    }
}
