//! Device keys: signing, verifying, and the hash every signature covers.

use std::fmt;

use ed25519_dalek::Signer;

use crate::model::error::EventError;
use crate::model::ids::{AuthorId, EventId};

/// A device's ed25519 signing key. `Debug` never prints the secret.
#[derive(Clone)]
pub struct DeviceKey(ed25519_dalek::SigningKey);

impl DeviceKey {
    /// The key from its 32 secret bytes (the caller brings the randomness).
    pub fn from_secret(secret: [u8; 32]) -> DeviceKey {
        DeviceKey(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// The 32 secret bytes, for writing the key file.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key: the author id of this device's events.
    pub fn author(&self) -> AuthorId {
        AuthorId(self.0.verifying_key().to_bytes())
    }

    /// The X25519 secret of this key (the standard conversion: the clamped scalar of its
    /// ed25519 expansion), for opening data keys wrapped to it.
    pub(crate) fn x25519_secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_scalar_bytes())
    }

    /// Signs an id (or any 32-byte digest).
    pub fn sign(&self, digest: &[u8; 32]) -> [u8; 64] {
        self.0.sign(digest).to_bytes()
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({}, ..)", self.author().device_id())
    }
}

/// A parsed public key, ready to verify many signatures.
#[derive(Clone, Debug)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Parses the author id as a curve point.
    pub fn new(author: &AuthorId) -> Result<VerifyingKey, EventError> {
        ed25519_dalek::VerifyingKey::from_bytes(&author.0)
            .map(VerifyingKey)
            .map_err(|_| EventError::Malformed("author is not a valid ed25519 key"))
    }

    /// Checks a signature over a digest (strict: rejects malleable signatures).
    pub fn verify(&self, digest: &[u8; 32], signature: &[u8]) -> Result<(), EventError> {
        let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| EventError::BadSignature)?;
        self.0.verify_strict(digest, &signature).map_err(|_| EventError::BadSignature)?;
        Ok(())
    }
}

/// The content hash that ids and signatures are made of.
pub fn content_hash(bytes: &[u8]) -> EventId {
    EventId::of(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let key = DeviceKey::from_secret([1; 32]);
        let id = content_hash(b"hello");
        let sig = key.sign(&id.0);
        let vk = VerifyingKey::new(&key.author()).unwrap();
        assert_eq!(vk.verify(&id.0, &sig), Ok(()));
        let mut bad = sig;
        bad[3] ^= 1;
        assert_eq!(vk.verify(&id.0, &bad), Err(EventError::BadSignature));
        assert_eq!(vk.verify(&content_hash(b"hellp").0, &sig), Err(EventError::BadSignature));
        assert!(!format!("{key:?}").contains(&hex::encode(key.secret())));
    }
}
