//! Invitations: the one-time code an admin's `casesync invite` prints (`create`), and the
//! admission of the device that brings it (`admit`, the sync service's `Join`; the device's side
//! is `join.rs`).
//!
//! A code is `csi1.` and, in unpadded base64url: version 1, the space (16 bytes), the
//! invitation secret (16 bytes), its expiry (ms, 8 bytes big-endian), the role (1 byte), the URL
//! to connect to, and a checksum (the first 4 bytes of blake3 of the rest). The secret makes the invitation key (an ed25519 key), whose public
//! half the admin's signed `Invite` names; the new device proves it holds the code by signing its
//! own key with it (`Admit`). Every node judges that admission the same way: the first one
//! counts, a later one with the same code does not, nor one after the expiry.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use casesync_engine::log::ingest::PreparedBatch;
use casesync_engine::log::membership::membership_op;
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::membership::{InviteState, MembershipOp, Role};
use casesync_engine::model::signing::DeviceKey;
use casesync_proto::v1 as pb;
use rand::RngCore;
use tonic::Status;

use crate::grpc_status;
use crate::shared::{now_ms, Shared};
use crate::sync_client::sync_once;

const PREFIX: &str = "csi1.";
const VERSION: u8 = 1;
/// Bytes before the URL.
const FIXED_BYTES: usize = 1 + 16 + 16 + 8 + 1;
/// A checksum after it, so a mistyped or cut code is told apart from a refused one.
const CHECKSUM_BYTES: usize = 4;

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let hash = blake3::hash(bytes);
    let mut check = [0u8; CHECKSUM_BYTES];
    check.copy_from_slice(&hash.as_bytes()[..CHECKSUM_BYTES]);
    check
}

/// What a code holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteCode {
    /// The space.
    pub space: SpaceId,
    /// The invitation secret.
    pub secret: [u8; 16],
    /// Usable until (ms since the epoch).
    pub expires_ms: u64,
    /// The role it gives.
    pub role: Role,
    /// Where to connect.
    pub via: String,
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Reader => 1,
        Role::Relay => 2,
        Role::Writer => 3,
        Role::Admin => 4,
    }
}

impl InviteCode {
    /// The invitation key its secret makes.
    pub fn key(&self) -> DeviceKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"casesync-invite-key-v1");
        hasher.update(&self.secret);
        DeviceKey::from_secret(*hasher.finalize().as_bytes())
    }

    /// The code's text.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(FIXED_BYTES + self.via.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(self.space.as_bytes());
        bytes.extend_from_slice(&self.secret);
        bytes.extend_from_slice(&self.expires_ms.to_be_bytes());
        bytes.push(role_byte(self.role));
        bytes.extend_from_slice(self.via.as_bytes());
        let check = checksum(&bytes);
        bytes.extend_from_slice(&check);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a code; every malformed part is a clear error.
    pub fn decode(text: &str) -> anyhow::Result<InviteCode> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| anyhow!("not an invitation code (it starts with {PREFIX:?})"))?;
        if body.len() > 1024 {
            bail!("not an invitation code (too long)");
        }
        let mut bytes =
            URL_SAFE_NO_PAD.decode(body).map_err(|_| anyhow!("the invitation code is damaged (not base64url)"))?;
        if bytes.len() <= FIXED_BYTES + CHECKSUM_BYTES {
            bail!("the invitation code is damaged (too short)");
        }
        let check = bytes.split_off(bytes.len() - CHECKSUM_BYTES);
        if check != checksum(&bytes) {
            bail!("the invitation code is damaged (mistyped or cut short: its checksum does not match)");
        }
        if bytes[0] != VERSION {
            bail!("the invitation code is of version {}, this casesync reads version {VERSION}", bytes[0]);
        }
        let damaged = || anyhow!("the invitation code is damaged");
        let space = SpaceId::from_slice(&bytes[1..17]).map_err(|_| damaged())?;
        let secret: [u8; 16] = bytes[17..33].try_into().map_err(|_| damaged())?;
        let expires_ms = u64::from_be_bytes(bytes[33..41].try_into().map_err(|_| damaged())?);
        let role = match bytes[41] {
            1 => Role::Reader,
            2 => Role::Relay,
            3 => Role::Writer,
            4 => Role::Admin,
            _ => return Err(damaged()),
        };
        let via = String::from_utf8(bytes[FIXED_BYTES..].to_vec()).map_err(|_| damaged())?;
        Ok(InviteCode { space, secret, expires_ms, role, via })
    }
}

/// Default time a code is usable.
pub const DEFAULT_EXPIRY_MS: u64 = 24 * 3600 * 1000;
/// Longest time a code may be usable.
pub const MAX_EXPIRY_MS: u64 = 30 * 24 * 3600 * 1000;
/// How long `invite` waits for each peer to take the invitation.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The local API's `Invite`: signs the invitation (admins only), makes its code, and hands the
/// invitation to the node the code names and to every configured peer, so the code works
/// while this device is off.
pub async fn create(shared: Arc<Shared>, request: pb::InviteRequest) -> Result<pb::InviteReply, Status> {
    let role = Role::parse(&request.role).ok_or_else(|| {
        Status::invalid_argument(format!("role {:?}: expected writer, reader, admin or relay", request.role))
    })?;
    let expires_in = match request.expires_in_ms {
        0 => DEFAULT_EXPIRY_MS,
        ms if ms > MAX_EXPIRY_MS => {
            return Err(Status::invalid_argument("an invitation may be usable for at most 30 days"))
        }
        ms => ms,
    };
    let peers: Vec<String> = shared.peers().into_iter().map(|(url, _)| url).collect();
    let via = match (request.via.trim(), peers.first()) {
        ("", Some(first)) => first.clone(),
        ("", None) => {
            return Err(Status::invalid_argument(
                "where should the new device connect? give --via URL (a relay or a member that is usually on)",
            ))
        }
        (via, _) => via.to_string(),
    };
    let mut secret = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let now = now_ms();
    let code = InviteCode { space: shared.space, secret, expires_ms: now.saturating_add(expires_in), role, via };
    let until_ms = (request.until_ms != 0).then_some(request.until_ms);
    let op = MembershipOp::Invite { key: code.key().author(), role, expires_ms: code.expires_ms, until_ms };
    let signer = shared.clone();
    tokio::task::spawn_blocking(move || signer.store.change_membership(&signer.space, &signer.identity.key, now, &op))
        .await
        .map_err(grpc_status::join)?
        .map_err(|e| grpc_status::engine(&e.into()))?;
    shared.notify(shared.store.next_position());
    // The invitation's key receives the space's keys, so the device that joins with it reads.
    let keeper = shared.clone();
    tokio::task::spawn_blocking(move || keeper.maintain_keys()).await.map_err(grpc_status::join)?;
    let mut delivered_to = Vec::new();
    let mut targets = vec![code.via.clone()];
    targets.extend(peers.into_iter().filter(|p| *p != code.via));
    for url in targets {
        match tokio::time::timeout(DELIVERY_TIMEOUT, sync_once(shared.clone(), &url, |_, _| {})).await {
            Ok(Ok(_)) => delivered_to.push(url),
            Ok(Err(error)) => tracing::warn!(%url, "the invitation did not reach this peer: {error:#}"),
            Err(_) => tracing::warn!(%url, "the invitation did not reach this peer in time"),
        }
    }
    Ok(pb::InviteReply {
        code: code.encode(),
        role: role.as_str().to_string(),
        expires_ms: code.expires_ms,
        until_ms: request.until_ms,
        via: code.via,
        delivered_to,
    })
}

/// The sync service's `Join`: a device that holds no role yet enrols with its admission, if the
/// invitation it names is here, unused and unexpired. The connection's key must be its author.
pub async fn admit(shared: Arc<Shared>, device: AuthorId, request: pb::JoinRequest) -> Result<pb::JoinReply, Status> {
    if SpaceId::from_slice(&request.space).ok() != Some(shared.space) {
        return Err(Status::not_found("this node does not serve that space"));
    }
    let admit = request.admit.ok_or_else(|| Status::invalid_argument("the request carries no admission"))?;
    let event = SignedEvent::from_peer(admit).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if event.header.author != device {
        return Err(Status::permission_denied("the admission is not signed by the connected device"));
    }
    let Some(Ok(MembershipOp::Admit { invite, .. })) = membership_op(&event) else {
        return Err(Status::invalid_argument("the request carries no admission"));
    };
    if shared.store.head(&shared.space, &device).is_some() {
        return Err(Status::already_exists("this device already belongs to the space"));
    }
    let role = match shared.store.membership(&shared.space).invite_state(&invite, now_ms()) {
        InviteState::Unknown => {
            return Err(Status::not_found(
                "no such invitation here (a wrong code, or the invitation has not reached this node yet)",
            ))
        }
        InviteState::Used => return Err(Status::permission_denied("this invitation was used already")),
        InviteState::Expired => return Err(Status::permission_denied("this invitation expired")),
        InviteState::Open(role) => role,
    };
    let batch = PreparedBatch::received(shared.space, vec![event.to_wire()], now_ms());
    let storing = shared.clone();
    let report = tokio::task::spawn_blocking(move || storing.store_from_peer(&device, batch))
        .await
        .map_err(grpc_status::join)?
        .map_err(|e| grpc_status::store(&e))?;
    if let Some(refused) = report.rejected.first() {
        return Err(Status::permission_denied(format!("the admission was refused: {}", refused.reason)));
    }
    tracing::info!(device = %device.device_id(), %role, "a device joined with an invitation");
    Ok(pb::JoinReply { role: role.as_str().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_damage_is_a_clear_error() {
        let code = InviteCode {
            space: SpaceId([3; 16]),
            secret: [9; 16],
            expires_ms: 1_800_000_000_000,
            role: Role::Reader,
            via: "http://relay.example:7000".into(),
        };
        let text = code.encode();
        assert!(text.starts_with("csi1.") && text.len() < 120, "{text}");
        assert_eq!(InviteCode::decode(&text).unwrap(), code);
        for (bad, says) in [
            ("hello", "not an invitation code"),
            ("csi1.***", "damaged"),
            ("csi1.AAAA", "too short"),
            (&text[..text.len() - 30], "damaged"),
            (&text[..text.len() - 32], "checksum does not match"),
            (&text[..text.len() - 1], "checksum does not match"),
        ] {
            let error = InviteCode::decode(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let mut other_version = URL_SAFE_NO_PAD.decode(&text[5..]).unwrap();
        other_version.truncate(other_version.len() - CHECKSUM_BYTES);
        other_version[0] = 2;
        let check = checksum(&other_version);
        other_version.extend_from_slice(&check);
        let error = InviteCode::decode(&format!("csi1.{}", URL_SAFE_NO_PAD.encode(other_version))).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }
}
