//! Outgoing event streams: bounded batches of what a peer lacks, read on the blocking pool, and
//! the live stream that follows new events. The sync server's `Pull` and the client's `Push`
//! both send through [`stream_events`].

use std::sync::Arc;

use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX};
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::Store;
use casesync_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::grpc_status;
use crate::shared::Shared;

/// Largest gRPC message accepted or sent (a batch is bounded well below).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Batches buffered per outgoing stream.
pub const STREAM_BUFFER_BATCHES: usize = 4;

/// Reads the next bounded batch of events beyond `from` (blocking: call on the blocking pool).
pub fn read_batch(
    store: &Store,
    space: &SpaceId,
    from: &VersionVector,
) -> Result<(Vec<pb::SignedEvent>, VersionVector), Status> {
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut upto = VersionVector::new();
    for item in store.events_after(space, from) {
        let (author, seq, message) = item.map_err(|e| grpc_status::store(&e))?;
        let size = message.event.len() + message.signature.len();
        if !events.is_empty() && bytes + size > BATCH_BYTES_MAX {
            break;
        }
        bytes += size;
        upto.raise(author, seq);
        events.push(message);
        if events.len() >= BATCH_EVENTS_MAX {
            break;
        }
    }
    Ok((events, upto))
}

/// Streams every event `device` lacks beyond `have`, then (with `follow`) an empty batch as the
/// caught-up marker and new events as they are stored, each run of them followed by the marker
/// again, until the receiver goes away. The marker tells the receiver that nothing more was
/// waiting: it ends a bulk catch-up there, even when the last batch before it was full.
pub async fn stream_events(
    shared: Arc<Shared>,
    device: AuthorId,
    have: VersionVector,
    follow: bool,
    tx: mpsc::Sender<Result<pb::EventBatch, Status>>,
) {
    let mut changes = shared.changes.subscribe();
    let mut stopping = shared.stopping.subscribe();
    let mut sent = have;
    // Whether events were sent since the last caught-up marker (or none was sent yet).
    let mut unmarked = true;
    loop {
        loop {
            let mut from = sent.clone();
            from.merge(&shared.known(&device));
            let (store, space) = (shared.store.clone(), shared.space);
            let read = tokio::task::spawn_blocking(move || read_batch(&store, &space, &from)).await;
            let (events, upto) = match read {
                Ok(Ok(batch)) => batch,
                Ok(Err(status)) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(grpc_status::join(e))).await;
                    return;
                }
            };
            if events.is_empty() {
                break;
            }
            sent.merge(&upto);
            shared.raise_known(&device, &upto);
            if tx.send(Ok(pb::EventBatch { events })).await.is_err() {
                return;
            }
            unmarked = true;
        }
        if !follow {
            return;
        }
        if unmarked {
            unmarked = false;
            if tx.send(Ok(pb::EventBatch { events: Vec::new() })).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}
