//! A faster signer for synthetic chains. A preload of 10M events by one author signs them one
//! after another (each event links to its predecessor's signature), so signing bounds it.
//! aws-lc-rs signs ed25519 in about half the time ed25519-dalek takes on x86-64, and ed25519
//! signatures are deterministic: both give the same bytes for the same key and message, which
//! the tests check, and every store that ingests them verifies them as usual.

use anyhow::bail;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use casesync_engine::model::ids::EventId;
use casesync_engine::model::signing::DeviceKey;

/// An ed25519 key pair that signs event ids.
pub struct ChainSigner(Ed25519KeyPair);

impl ChainSigner {
    /// The same key as `key`; fails if aws-lc-rs derives another public key from its secret.
    pub fn of(key: &DeviceKey) -> anyhow::Result<ChainSigner> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&key.secret())
            .map_err(|e| anyhow::anyhow!("aws-lc-rs refused an ed25519 seed: {e}"))?;
        if pair.public_key().as_ref() != key.author().as_bytes() {
            bail!("aws-lc-rs derived another public key from a bench author's secret");
        }
        Ok(ChainSigner(pair))
    }

    /// The signature of an event id. ed25519 signatures are 64 bytes; were aws-lc-rs ever to
    /// give another length, the bytes would not verify and the store would refuse the event.
    pub fn sign(&self, id: &EventId) -> [u8; 64] {
        let signature = self.0.sign(&id.0);
        let bytes = signature.as_ref();
        let mut out = [0; 64];
        let len = bytes.len().min(out.len());
        out[..len].copy_from_slice(&bytes[..len]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_same_bytes_as_the_engines_key() {
        for seed in 0..8u8 {
            let key = DeviceKey::from_secret(*blake3::hash(&[seed]).as_bytes());
            let signer = ChainSigner::of(&key).unwrap();
            for n in 0..16u32 {
                let id = EventId(*blake3::hash(&n.to_be_bytes()).as_bytes());
                assert_eq!(signer.sign(&id), key.sign(&id.0));
            }
        }
    }
}
