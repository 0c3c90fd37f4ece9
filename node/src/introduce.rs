//! A device granted while one of the space's nodes was away: that node holds no grant for it
//! and refuses it (`PermissionDenied`), though the device holds the admin's grant. The device
//! shows the node the granting admin's chain up to the grant (`Introduce`, open to every device),
//! in runs that continue what the node holds of it; the node stores them as it stores any peer's
//! events (chain, signatures and membership checked) and then admits the device. A laptop that
//! was offline while the practice changed relays reaches the new relay without going through the
//! admin's computer.
//!
//! What a device that is not a member can make a node do this way is bounded: only the events
//! of a device the node holds as an admin, at most [`OPEN_CALL_BYTES_MAX`] a call, stored only
//! where they continue the node's copy of that chain; and it learns only where that copy ends.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use casesync_engine::log::ingest::PreparedBatch;
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::membership::{MembershipOp, Role};
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::grpc_status;
use crate::members_only::OPEN_CALL_BYTES_MAX;
use crate::shared::{now_ms, Shared, SPACE_HEADER};

/// Bytes of events a device puts in one `Introduce` (below [`OPEN_CALL_BYTES_MAX`], with room
/// for the message's own fields).
const RUN_BYTES_MAX: usize = OPEN_CALL_BYTES_MAX - 4 * 1024;

/// Calls a device makes at most to introduce itself to one node: past these the node lacks too
/// much of the admin's chain (about 3.5 MiB), which a sync with any member brings faster.
const CALLS_MAX: usize = 64;

/// The server's side: stores a run of an admin's chain from a device that may not be a member,
/// and says where its copy of that chain ends and whether it now admits the device.
pub async fn serve(
    shared: Arc<Shared>,
    device: AuthorId,
    request: pb::IntroduceRequest,
) -> Result<pb::IntroduceReply, Status> {
    if SpaceId::from_slice(&request.space).ok() != Some(shared.space) {
        return Err(Status::not_found("this node does not serve that space"));
    }
    let author = AuthorId::from_slice(&request.author)
        .map_err(|_| Status::invalid_argument("`author` names a 32-byte device key"))?;
    if !matches!(shared.may_connect(&author), Ok(Role::Admin)) {
        return Err(Status::permission_denied(format!(
            "device {} is not an admin of this space here: only an admin's chain introduces a device",
            author.device_id()
        )));
    }
    let next_seq = |shared: &Shared| shared.store.head(&shared.space, &author).map_or(1, |h| h.seq + 1);
    let expected = next_seq(&shared);
    let showed = !request.events.is_empty();
    if showed {
        let batch = PreparedBatch::received(shared.space, request.events, now_ms());
        if batch.len() > casesync_engine::model::limits::BATCH_EVENTS_MAX {
            return Err(Status::invalid_argument("the run holds too many events"));
        }
        let starts: Vec<(AuthorId, u64)> = batch.run_starts().collect();
        if starts.iter().any(|(of, _)| *of != author) {
            return Err(Status::invalid_argument("the run holds another device's events"));
        }
        // A run that starts past this node's copy is not stored: the reply says where to start.
        let Some(&(_, first)) = starts.first() else {
            return Err(Status::invalid_argument("the run holds no event of this space that decodes"));
        };
        if first <= expected {
            let storing = shared.clone();
            let report = tokio::task::spawn_blocking(move || storing.store_from_peer(&device, batch))
                .await
                .map_err(grpc_status::join)?
                .map_err(|e| grpc_status::store(&e))?;
            if let Some(refused) = report.rejected.iter().find(|r| r.author.is_none_or(|a| a == author)) {
                return Err(Status::invalid_argument(format!("the admin's chain was refused: {}", refused.reason)));
            }
        }
    }
    let admitted = shared.may_connect(&device).is_ok();
    if admitted && showed {
        tracing::info!(device = %device.device_id(), "a device granted elsewhere introduced itself with its grant");
    }
    Ok(pb::IntroduceReply { next_seq: next_seq(&shared), admitted })
}

/// The device's side: when `client`'s node refused this device, shows it the chain of the admin
/// who granted this device, up to that grant. Returns whether the node admits the device now;
/// `Ok(false)` when this device holds no grant to show.
pub async fn introduce(shared: &Shared, client: &mut SyncClient<Channel>) -> anyhow::Result<bool> {
    let me = shared.identity.author();
    let membership = shared.store.membership(&shared.space);
    // This device's latest grant that counts (an admission by invitation is its own event).
    let grant = membership
        .records()
        .filter(|r| matches!(&r.op, MembershipOp::Grant { device, .. } if *device == me))
        .filter(|r| membership.counts(&r.author, r.seq))
        .last();
    let Some(grant) = grant else { return Ok(false) };
    let request = |events: Vec<pb::SignedEvent>| {
        let mut request = Request::new(pb::IntroduceRequest {
            space: Bytes::copy_from_slice(shared.space.as_bytes()),
            author: Bytes::copy_from_slice(grant.author.as_bytes()),
            events,
        });
        if let Ok(value) = shared.space.to_hex().parse() {
            request.metadata_mut().insert(SPACE_HEADER, value);
        }
        request
    };
    let mut reply = client.introduce(request(Vec::new())).await.context("introduce refused")?.into_inner();
    for _ in 0..CALLS_MAX {
        if reply.admitted || reply.next_seq > grant.seq {
            return Ok(reply.admitted);
        }
        let run = run_of(shared, &grant.author, reply.next_seq, grant.seq)?;
        let next = client.introduce(request(run)).await.context("introduce refused")?.into_inner();
        if next.next_seq <= reply.next_seq && !next.admitted {
            bail!("the peer stored none of the admin's chain from seq {}", reply.next_seq);
        }
        reply = next;
    }
    Err(anyhow!("the peer lacks too much of the admin's chain: sync it with another member first"))
}

/// The events of `author` from seq `from` up to `to`, as many as fit in one call.
fn run_of(shared: &Shared, author: &AuthorId, from: u64, to: u64) -> anyhow::Result<Vec<pb::SignedEvent>> {
    let mut run = Vec::new();
    let mut bytes = 0;
    for seq in from..=to {
        let Some(event) = shared.store.get_event(&shared.space, author, seq)? else {
            bail!("this device lacks seq {seq} of the admin's chain it would show");
        };
        let event = event.to_wire();
        bytes += event.encoded_len();
        if bytes > RUN_BYTES_MAX && !run.is_empty() {
            break;
        }
        run.push(event);
    }
    Ok(run)
}
