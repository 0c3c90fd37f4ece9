//! A data key wrapped for one recipient: an ed25519 key (a member device's, or an invitation's)
//! taken in its Montgomery form as an X25519 key, as age and libsodium do for ed25519 keys.
//!
//! `ephemeral` = X25519 base point × e; shared = X25519(e, recipient); a wrapping key =
//! blake3-derived from (shared, ephemeral, recipient, space, key id); the data key sealed under it
//! with XChaCha20-Poly1305 (a zero nonce: every wrapping key seals exactly one data key). `e` is
//! derived from the data key and the recipient, so wrapping again gives the same bytes and needs no
//! randomness; only a holder of the data key can compute it.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::Zeroizing;

use super::{DataKey, SealError};
use crate::model::ids::{AuthorId, KeyId, SpaceId};
use crate::model::signing::DeviceKey;

/// A wrapped data key: 32 bytes and a 16-byte tag.
pub const WRAPPED_KEY_BYTES: usize = 48;

/// One data key wrapped for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWrap {
    /// The recipient's ed25519 key.
    pub to: AuthorId,
    /// The X25519 ephemeral public key.
    pub ephemeral: [u8; 32],
    /// The data key, sealed.
    pub sealed: [u8; WRAPPED_KEY_BYTES],
}

fn recipient_point(to: &AuthorId) -> Result<MontgomeryPoint, SealError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(to.as_bytes())
        .map_err(|_| SealError::BadWrap("the recipient is not an ed25519 key"))?;
    if key.is_weak() {
        return Err(SealError::BadWrap("the recipient is a small-order key"));
    }
    Ok(key.to_montgomery())
}

fn wrapping_key(
    shared: &MontgomeryPoint,
    ephemeral: &[u8; 32],
    to: &AuthorId,
    space: &SpaceId,
    key: &KeyId,
) -> Result<Zeroizing<[u8; 32]>, SealError> {
    if shared.as_bytes() == &[0u8; 32] {
        return Err(SealError::BadWrap("a small-order ephemeral key"));
    }
    let mut material = Zeroizing::new([0u8; 32 + 32 + 32 + 16 + 16]);
    material[..32].copy_from_slice(shared.as_bytes());
    material[32..64].copy_from_slice(ephemeral);
    material[64..96].copy_from_slice(to.as_bytes());
    material[96..112].copy_from_slice(space.as_bytes());
    material[112..].copy_from_slice(key.as_bytes());
    Ok(Zeroizing::new(blake3::derive_key("casesync 2026 data key wrap v1", &material[..])))
}

/// Wraps `key` for `to` in `space`.
pub fn wrap_key(space: &SpaceId, key: &DataKey, to: &AuthorId) -> Result<KeyWrap, SealError> {
    let point = recipient_point(to)?;
    let mut seed = Zeroizing::new([0u8; 64]);
    seed[..32].copy_from_slice(key.secret());
    seed[32..].copy_from_slice(to.as_bytes());
    let e = Zeroizing::new(blake3::derive_key("casesync 2026 wrap ephemeral v1", &seed[..]));
    let ephemeral = MontgomeryPoint::mul_base_clamped(*e).to_bytes();
    let shared = point.mul_clamped(*e);
    let wrapping = wrapping_key(&shared, &ephemeral, to, space, &key.id())?;
    let sealed = XChaCha20Poly1305::new((&*wrapping).into())
        .encrypt(&XNonce::default(), Payload { msg: key.secret(), aad: key.id().as_bytes() })
        .map_err(|_| SealError::BadWrap("cannot seal"))?;
    let sealed: [u8; WRAPPED_KEY_BYTES] = sealed.try_into().map_err(|_| SealError::BadWrap("wrong length"))?;
    Ok(KeyWrap { to: *to, ephemeral, sealed })
}

/// Opens a wrap of data key `id` with the recipient's key; the key inside must have that id.
pub fn unwrap_key(space: &SpaceId, id: &KeyId, wrap: &KeyWrap, recipient: &DeviceKey) -> Result<DataKey, SealError> {
    if wrap.to != recipient.author() {
        return Err(SealError::BadWrap("it is for another key"));
    }
    let shared = MontgomeryPoint(wrap.ephemeral).mul_clamped(*recipient.x25519_secret());
    let wrapping = wrapping_key(&shared, &wrap.ephemeral, &wrap.to, space, id)?;
    let opened = Zeroizing::new(
        XChaCha20Poly1305::new((&*wrapping).into())
            .decrypt(&XNonce::default(), Payload { msg: &wrap.sealed, aad: id.as_bytes() })
            .map_err(|_| SealError::BadWrap("its tag does not verify"))?,
    );
    let secret: [u8; 32] = opened[..].try_into().map_err(|_| SealError::BadWrap("wrong length"))?;
    let key = DataKey::from_secret(secret);
    if key.id() != *id {
        return Err(SealError::BadWrap("the key inside has another id"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_opens_for_its_recipient_only() {
        let space = SpaceId([3; 16]);
        let key = DataKey::from_secret([7; 32]);
        let alice = DeviceKey::from_secret([1; 32]);
        let bob = DeviceKey::from_secret([2; 32]);
        let wrap = wrap_key(&space, &key, &alice.author()).unwrap();
        assert_eq!(wrap, wrap_key(&space, &key, &alice.author()).unwrap(), "deterministic");
        assert!(!wrap.sealed.windows(4).any(|w| w == [7; 4]));
        assert_eq!(unwrap_key(&space, &key.id(), &wrap, &alice).unwrap().id(), key.id());
        assert!(unwrap_key(&space, &key.id(), &wrap, &bob).is_err(), "another device");
        let retargeted = KeyWrap { to: bob.author(), ..wrap.clone() };
        assert!(unwrap_key(&space, &key.id(), &retargeted, &bob).is_err(), "readdressed");
        assert!(unwrap_key(&SpaceId([4; 16]), &key.id(), &wrap, &alice).is_err(), "another space");
        assert!(unwrap_key(&space, &KeyId([0; 16]), &wrap, &alice).is_err(), "another key id");
        let mut flipped = wrap.clone();
        flipped.sealed[0] ^= 1;
        assert!(unwrap_key(&space, &key.id(), &flipped, &alice).is_err());
        let zero = KeyWrap { ephemeral: [0; 32], ..wrap };
        assert!(unwrap_key(&space, &key.id(), &zero, &alice).is_err(), "small-order ephemeral");
    }
}
