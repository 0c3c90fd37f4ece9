//! Peer authentication: every sync call carries the caller's device key, the space, a time and a
//! signature over them bound to the server's own key, so a captured header cannot be replayed to
//! another node and expires after a few minutes.

use casesync_engine::model::ids::{AuthorId, SpaceId};
use casesync_engine::model::signing::{DeviceKey, VerifyingKey};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;

/// Header: the caller's device key (hex).
pub const DEVICE_HEADER: &str = "x-casesync-device";
/// Header: the space (hex).
pub const SPACE_HEADER: &str = "x-casesync-space";
/// Header: the caller's time in ms since the epoch.
pub const TIME_HEADER: &str = "x-casesync-time";
/// Header: the signature (hex).
pub const SIG_HEADER: &str = "x-casesync-sig";
/// How far the caller's clock may be from the server's.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// What the signature covers.
pub fn digest(space: &SpaceId, server: &AuthorId, time_ms: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"casesync-auth-v1");
    hasher.update(space.as_bytes());
    hasher.update(server.as_bytes());
    hasher.update(&time_ms.to_be_bytes());
    *hasher.finalize().as_bytes()
}

/// Adds the authentication headers to a request.
pub fn sign(metadata: &mut MetadataMap, key: &DeviceKey, space: &SpaceId, server: &AuthorId, now_ms: u64) {
    let signature = key.sign(&digest(space, server, now_ms));
    let pairs = [
        (DEVICE_HEADER, key.author().to_hex()),
        (SPACE_HEADER, space.to_hex()),
        (TIME_HEADER, now_ms.to_string()),
        (SIG_HEADER, hex::encode(signature)),
    ];
    for (name, value) in pairs {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            metadata.insert(name, value);
        }
    }
}

fn header<'a>(metadata: &'a MetadataMap, name: &str) -> Result<&'a str, Status> {
    metadata
        .get(name)
        .ok_or_else(|| Status::unauthenticated(format!("missing {name} header")))?
        .to_str()
        .map_err(|_| Status::unauthenticated(format!("{name} header is not text")))
}

/// Checks the headers: a well-formed, fresh signature by the named device over this server's key
/// and the space. Returns the space and the device; whether the device may use the space is the
/// caller's check.
pub fn verify(metadata: &MetadataMap, server: &AuthorId, now_ms: u64) -> Result<(SpaceId, AuthorId), Status> {
    let device = AuthorId::from_hex(header(metadata, DEVICE_HEADER)?)
        .map_err(|_| Status::unauthenticated("device header is not a 32-byte hex key"))?;
    let space = SpaceId::from_hex(header(metadata, SPACE_HEADER)?)
        .map_err(|_| Status::unauthenticated("space header is not a 16-byte hex id"))?;
    let time: u64 =
        header(metadata, TIME_HEADER)?.parse().map_err(|_| Status::unauthenticated("time header is not a number"))?;
    if time.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(Status::unauthenticated("authentication expired or clock skew above 5 minutes"));
    }
    let signature = hex::decode(header(metadata, SIG_HEADER)?)
        .map_err(|_| Status::unauthenticated("signature header is not hex"))?;
    let key =
        VerifyingKey::new(&device).map_err(|_| Status::unauthenticated("device key is not a valid ed25519 key"))?;
    key.verify(&digest(&space, server, time), &signature)
        .map_err(|_| Status::unauthenticated("authentication signature does not verify"))?;
    Ok((space, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_headers_verify_only_for_the_right_server_and_time() {
        let key = DeviceKey::from_secret([1; 32]);
        let server = DeviceKey::from_secret([2; 32]).author();
        let space = SpaceId([3; 16]);
        let mut metadata = MetadataMap::new();
        sign(&mut metadata, &key, &space, &server, 1_000_000);
        assert_eq!(verify(&metadata, &server, 1_000_500).unwrap(), (space, key.author()));
        let other = DeviceKey::from_secret([4; 32]).author();
        assert_eq!(verify(&metadata, &other, 1_000_500).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            verify(&metadata, &server, 1_000_000 + MAX_SKEW_MS + 1).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(verify(&MetadataMap::new(), &server, 0).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
