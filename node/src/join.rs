//! `casesync join CODE`: enrols this computer with an invitation code (`invite.rs`) and fetches
//! the whole space.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use casesync_engine::codec::membership::encode_membership;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::EventId;
use casesync_engine::model::membership::{admit_digest, MembershipOp};
use casesync_engine::model::signing::DeviceKey;
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use serde::Serialize;

use crate::config::FileConfig;
use crate::data_dir;
use crate::invite::InviteCode;
use crate::node::{Node, NodeConfig};
use crate::shared::now_ms;
use crate::sync_client::{connect_peer, sync_once};
use crate::tls;

/// What `casesync join` did.
#[derive(Clone, Debug, Serialize)]
pub struct JoinReport {
    /// The data dir.
    pub data: String,
    /// The space.
    pub space: String,
    /// This device.
    pub device: String,
    /// Its role.
    pub role: String,
    /// Where it connected.
    pub via: String,
    /// Events held after the first sync.
    pub events: u64,
    /// The state hash after it (empty for a relay).
    pub state_hash: String,
}

/// This device's admission: its first event in the space, signed by its key, carrying the
/// invitation key's signature over that key.
fn admission(code: &InviteCode, device: &DeviceKey, name: &str) -> anyhow::Result<SignedEvent> {
    let invite = code.key();
    let op = MembershipOp::Admit {
        invite: invite.author(),
        proof: invite.sign(&admit_digest(&code.space, &device.author())),
        name: name.to_string(),
    };
    let header = EventHeader {
        space: code.space,
        author: device.author(),
        seq: 1,
        prev: EventId::ZERO,
        hlc: now_ms().saturating_mul(1 << 16),
        encoding: BodyEncoding::Membership,
    };
    Ok(SignedEvent::build(device, &header, Bytes::from(encode_membership(&op)))?)
}

/// `casesync join CODE`: makes the data dir (if needed), enrols this device where the code
/// says, saves that address as a peer, and syncs the whole space once.
pub async fn join(data: &Path, code: &str, name: &str, space_name: Option<&str>) -> anyhow::Result<JoinReport> {
    let code = InviteCode::decode(code)?;
    if now_ms() >= code.expires_ms {
        bail!("this invitation expired at {} (ask an admin for a new one)", crate::output::utc(code.expires_ms));
    }
    let (data_owned, name_owned) = (data.to_path_buf(), name.to_string());
    let space = code.space;
    // A node that holds another space already takes this one beside it.
    let held = FileConfig::load(data).ok().map(|c| c.node_spaces()).transpose()?;
    match held {
        Some(spaces) if !spaces.iter().any(|s| s.space == space) => {
            let as_name = space_name.map(str::to_string).unwrap_or_else(|| space.short());
            data_dir::add_space(data, &as_name, space, vec![code.via.clone()])?;
        }
        _ => {
            tokio::task::spawn_blocking(move || data_dir::init(&data_owned, &name_owned, Some(space), false, None))
                .await??;
        }
    }
    let opened = tokio::task::spawn_blocking({
        let data = data.to_path_buf();
        move || data_dir::open(&data, false)
    })
    .await??;
    if opened.store.head(&code.space, &opened.identity.author()).is_some() {
        bail!("this device already belongs to the space (it holds events of its own there)");
    }
    let admit = admission(&code, &opened.identity.key, &opened.identity.name)?;
    let cert = tls::DeviceCert::new(&opened.identity.key)?;
    let mut identity = opened.identity.clone();
    drop(opened);
    // The server is judged by what it does: only a node that holds the admin's invitation can
    // accept the admission, and every event it then sends is verified against the space id.
    let seen = Arc::new(Mutex::new(None));
    let config = tls::client_config(&cert, Arc::new(|_| Ok(())), seen)?;
    let channel = connect_peer(&code.via, config).await?;
    let reply = SyncClient::new(channel)
        .join(pb::JoinRequest { space: Bytes::copy_from_slice(code.space.as_bytes()), admit: Some(admit.to_wire()) })
        .await
        .map_err(|status| anyhow!("{} refused the invitation: {}", code.via, status.message()))?
        .into_inner();
    // The space's data keys were wrapped to the invitation's key: kept (under the PIN) beside
    // the device key, so this device opens them now and after every restart.
    if !identity.invites.iter().any(|k| k.author() == code.key().author()) {
        identity.invites.push(code.key());
        let pin = crate::pin::current(&format!("practice PIN for {}: ", data.display()))?;
        identity.save(data, &pin)?;
    }
    let mut config = FileConfig::load(data)?;
    if config.node_spaces()?.first().is_some_and(|first| first.space == code.space)
        && !config.peers.iter().any(|p| p == &code.via)
    {
        config.peers.push(code.via.clone());
        config.save(data)?;
    }
    let node = Node::start(NodeConfig::new(data)).await?;
    let joined_space = node
        .space_names()
        .into_iter()
        .find_map(|name| node.shared_of(&name).filter(|s| s.space == code.space).cloned());
    let Some(shared) = joined_space else {
        node.shutdown().await;
        bail!("the data dir does not hold space {} after joining it", code.space.to_hex());
    };
    let synced = sync_once(shared.clone(), &code.via, |_, _| {}).await.context("the first sync");
    let report = synced.and_then(|_| {
        let state_hash = if shared.relay { String::new() } else { shared.store.state_hash(&shared.space)? };
        Ok(JoinReport {
            data: data.display().to_string(),
            space: shared.space.to_hex(),
            device: shared.identity.author().device_id(),
            role: reply.role.clone(),
            via: code.via.clone(),
            events: shared.store.vector(&shared.space).total(),
            state_hash,
        })
    });
    drop(shared);
    node.shutdown().await;
    report
}
