//! Outgoing event streams: bounded batches of what a peer lacks, read on the blocking pool, and
//! the live stream that follows new events. The sync server's `Pull` and the client's `Push`
//! both send through [`stream_events`].

use std::sync::Arc;

use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX};
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::Store;
use casesync_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::grpc_status;
use crate::shared::Shared;

/// Largest gRPC message of the local case API accepted or sent.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest message of the sync service accepted or sent: a batch ([`BATCH_BYTES_MAX`] of events
/// and signatures, or one event of up to 1 MiB) with room for its protobuf framing (at most
/// [`BATCH_EVENTS_MAX`] events of ~10 bytes each). Every stream a peer opens may hold a message
/// of this size being read and one decoded beside it, so it bounds what many streams of large
/// events can make a node hold (at 4 MiB, 32 streams took a node to 364-407 MiB).
pub const SYNC_MESSAGE_BYTES_MAX: usize = BATCH_BYTES_MAX + 64 * 1024;
/// Batches buffered per outgoing stream.
pub const STREAM_BUFFER_BATCHES: usize = 4;

/// Reads the next bounded batch of events beyond `from` (blocking: call on the blocking pool).
pub fn read_batch(
    store: &Store,
    space: &SpaceId,
    from: &VersionVector,
) -> Result<(Vec<pb::SignedEvent>, VersionVector), Status> {
    let mut events = Vec::new();
    let mut positions = Vec::new();
    let mut bytes = 0usize;
    let mut cut = false;
    for item in store.events_after(space, from) {
        let (author, seq, message) = item.map_err(|e| grpc_status::store(&e))?;
        let size = message.event.len() + message.signature.len();
        if !events.is_empty() && bytes + size > BATCH_BYTES_MAX {
            cut = true;
            break;
        }
        bytes += size;
        positions.push((author, seq));
        events.push(message);
        if events.len() >= BATCH_EVENTS_MAX {
            cut = true;
            break;
        }
    }
    // A batch that holds the rest of every range ends on a stored head, which an ingest only
    // ever stores authenticated: only a batch cut by the limits is checked.
    let keep = if cut { authenticated_end(&events, &positions) } else { events.len() };
    events.truncate(keep);
    positions.truncate(keep);
    let mut upto = VersionVector::new();
    for (author, seq) in positions {
        upto.raise(author, seq);
    }
    Ok((events, upto))
}

/// How many of a batch's events to send so that it never ends on an event no signature in it
/// authenticates: the receiver accepts an author's run up to its last signature that verifies
/// (a link covers the signature before it), and an author may have signed junk in the middle of
/// its chain. One check in the usual case (the last event's signature verifies); otherwise the
/// last author's events are checked back to one that verifies, and those after it start the
/// next batch (a stored chain always ends on one: nothing past the last is ever accepted). A
/// batch of nothing but such events is sent whole: its receiver refuses it, for that author only.
fn authenticated_end(events: &[pb::SignedEvent], positions: &[(AuthorId, u64)]) -> usize {
    let Some(&(last_author, _)) = positions.last() else { return 0 };
    let verifies = |message: &pb::SignedEvent| {
        SignedEvent::from_wire(message.clone()).is_ok_and(|event| event.verify_signature().is_ok())
    };
    for index in (0..events.len()).rev() {
        if positions[index].0 != last_author {
            // The last author's events here hold no signature that verifies: they wait.
            return index + 1;
        }
        if verifies(&events[index]) {
            return index + 1;
        }
    }
    events.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use casesync_engine::testkit::{chain_with_junk_signatures, device, wire};

    fn positions(events: &[SignedEvent]) -> Vec<(AuthorId, u64)> {
        events.iter().map(|e| (e.header.author, e.header.seq)).collect()
    }

    /// The largest batches a sender makes, of many small events or of two of the largest, fit
    /// in one sync message with their framing.
    #[test]
    fn the_largest_batches_fit_in_a_sync_message() {
        let many = pb::EventBatch {
            events: (0..BATCH_EVENTS_MAX)
                .map(|_| pb::SignedEvent {
                    event: vec![7u8; BATCH_BYTES_MAX / BATCH_EVENTS_MAX - 64].into(),
                    signature: vec![1u8; 64].into(),
                })
                .collect(),
        };
        let large = casesync_engine::model::limits::EVENT_BYTES_MAX;
        let two_large = pb::EventBatch {
            events: (0..2)
                .map(|_| pb::SignedEvent { event: vec![7u8; large - 64].into(), signature: vec![1u8; 64].into() })
                .collect(),
        };
        for batch in [many, two_large] {
            let bytes: usize = batch.events.iter().map(|e| e.event.len() + e.signature.len()).sum();
            assert!(bytes <= BATCH_BYTES_MAX);
            assert!(prost::Message::encoded_len(&batch) <= SYNC_MESSAGE_BYTES_MAX);
        }
    }

    #[test]
    fn a_batch_never_ends_on_an_event_no_signature_in_it_authenticates() {
        let space = SpaceId([1; 16]);
        let junk = chain_with_junk_signatures(&device(1), space, 8, |seq| [3, 4, 7].contains(&seq));
        let other = chain_with_junk_signatures(&device(2), space, 2, |_| false);
        let end = |events: &[SignedEvent]| authenticated_end(&wire(events), &positions(events));
        // Ends on a signature that verifies: sent whole (one check).
        assert_eq!(end(&junk[..6]), 6);
        assert_eq!(end(&junk), 8);
        // Ends on junk: back to the last event that verifies; what follows starts the next batch.
        assert_eq!(end(&junk[..4]), 2);
        assert_eq!(end(&junk[..7]), 6);
        // The last author's events hold none that verifies: they wait for the next batch.
        let mixed: Vec<SignedEvent> = other.iter().chain(&junk[2..4]).cloned().collect();
        assert_eq!(end(&mixed), 2);
        // Nothing but junk: sent whole (its receiver refuses it, for that author alone).
        assert_eq!(end(&junk[2..4]), 2);
        assert_eq!(end(&[]), 0);
    }
}
