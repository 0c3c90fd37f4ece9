//! The device key file under the practice PIN: the device's secret key (and the secret keys of
//! invitations it joined with, which data keys may be wrapped to) sealed with XChaCha20-Poly1305
//! under a key derived from the PIN with argon2id and a per-file salt.
//!
//! ```text
//! [0..8]    magic "CSKEY\0\2\0"
//! [8..20]   argon2id memory (KiB), passes, lanes: u32 little-endian each
//! [20..36]  salt
//! [36..60]  nonce
//! [60..]    sealed: device secret (32) | invitation count (1) | invitation secrets (32 each)
//! ```
//! Everything before the sealed bytes is its associated data. A file of exactly 32 bytes is the
//! plain key of releases before the PIN: read once with a PIN and replaced by a sealed file.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::IdentityError;

const MAGIC: [u8; 8] = *b"CSKEY\x00\x02\x00";
const HEADER_BYTES: usize = 8 + 12 + 16 + 24;
/// The most invitation keys a file holds (a device joins a space once per invitation).
const INVITES_MAX: usize = 64;

/// A key derived from a PIN, by blake3(PIN, salt, cost).
type Derived = ([u8; 32], Zeroizing<[u8; 32]>);

/// Keys derived in this process.
static DERIVED: std::sync::Mutex<Vec<Derived>> = std::sync::Mutex::new(Vec::new());
/// The most derived keys kept.
const DERIVED_MAX: usize = 32;

/// The cost of deriving the key that seals the key file from the PIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes over it.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl KdfCost {
    /// What a new key file gets: 128 MiB, 4 passes, 1 lane (about 0.39 s on the benchmark VM:
    /// `cargo test -p casesync-engine --release kdf_cost -- --ignored --nocapture`), so each
    /// guess at a stolen file's PIN costs that much time and memory.
    pub const STANDARD: KdfCost = KdfCost { memory_kib: 128 * 1024, passes: 4, lanes: 1 };
    /// For tests of everything around the PIN: cheap, and never written by the product.
    pub const FAST_FOR_TESTS: KdfCost = KdfCost { memory_kib: 64, passes: 1, lanes: 1 };

    fn check(self) -> Result<Params, IdentityError> {
        // Bounds for a file's values: a hostile file may not make an unlock take a gigabyte or
        // an hour.
        if self.memory_kib > 1024 * 1024 || self.passes == 0 || self.passes > 64 || self.lanes == 0 || self.lanes > 16 {
            return Err(IdentityError::BadKeyFile("its PIN cost is out of bounds".into()));
        }
        Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map_err(|_| IdentityError::BadKeyFile("its PIN cost is not valid".into()))
    }
}

/// The practice PIN as given, with fresh random bytes for a file sealed under it (salt and
/// nonce: the engine draws no randomness) and the cost a new file gets. Wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Pin {
    text: String,
    fresh: [u8; 40],
    #[zeroize(skip)]
    cost: KdfCost,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// The shortest PIN accepted.
pub const PIN_CHARS_MIN: usize = 4;

impl Pin {
    /// A PIN (at least [`PIN_CHARS_MIN`] characters, surrounding white space ignored) with 40
    /// fresh random bytes.
    pub fn new(text: &str, fresh: [u8; 40]) -> Result<Pin, IdentityError> {
        let text = text.trim();
        if text.chars().count() < PIN_CHARS_MIN {
            return Err(IdentityError::PinTooShort);
        }
        Ok(Pin { text: text.to_string(), fresh, cost: KdfCost::STANDARD })
    }

    /// The same PIN, sealing new files at `cost`.
    pub fn with_cost(mut self, cost: KdfCost) -> Pin {
        self.cost = cost;
        self
    }

    fn derive(&self, cost: KdfCost, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
        let params = cost.check()?;
        // One process opening the same file again (the demo's nodes, a daemon's restarts of a
        // space) derives once: the derived key is no more secret than the device key it opens,
        // which the process holds anyway.
        let mut lookup = blake3::Hasher::new();
        lookup.update(self.text.as_bytes());
        lookup.update(salt);
        for value in [cost.memory_kib, cost.passes, cost.lanes] {
            lookup.update(&value.to_le_bytes());
        }
        let lookup = *lookup.finalize().as_bytes();
        if let Some(key) =
            DERIVED.lock().ok().and_then(|d| d.iter().find(|(l, _)| *l == lookup).map(|(_, k)| k.clone()))
        {
            return Ok(key);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(self.text.as_bytes(), salt, &mut key[..])
            .map_err(|_| IdentityError::BadKeyFile("the PIN key cannot be derived".into()))?;
        if let Ok(mut derived) = DERIVED.lock() {
            if derived.len() >= DERIVED_MAX {
                derived.remove(0);
            }
            derived.push((lookup, key.clone()));
        }
        Ok(key)
    }
}

/// What a key file holds.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secrets {
    pub(crate) device: [u8; 32],
    pub(crate) invites: Vec<[u8; 32]>,
}

/// Whether `bytes` is a key file of the releases before the PIN (the plain 32 key bytes).
pub(crate) fn is_plain(bytes: &[u8]) -> bool {
    bytes.len() == 32
}

/// Seals `secrets` under `pin`.
pub(crate) fn seal(secrets: &Secrets, pin: &Pin) -> Result<Vec<u8>, IdentityError> {
    if secrets.invites.len() > INVITES_MAX {
        return Err(IdentityError::BadKeyFile("too many invitation keys".into()));
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + 33 + 32 * secrets.invites.len() + 16);
    out.extend_from_slice(&MAGIC);
    for value in [pin.cost.memory_kib, pin.cost.passes, pin.cost.lanes] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&pin.fresh);
    let key = pin.derive(pin.cost, &pin.fresh[..16])?;
    let mut plain = Zeroizing::new(Vec::with_capacity(33 + 32 * secrets.invites.len()));
    plain.extend_from_slice(&secrets.device);
    plain.push(secrets.invites.len() as u8);
    for invite in &secrets.invites {
        plain.extend_from_slice(invite);
    }
    let sealed = XChaCha20Poly1305::new((&*key).into())
        .encrypt(XNonce::from_slice(&pin.fresh[16..]), Payload { msg: &plain, aad: &out })
        .map_err(|_| IdentityError::BadKeyFile("cannot be sealed".into()))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a sealed key file with `pin`.
pub(crate) fn open(bytes: &[u8], pin: &Pin) -> Result<Secrets, IdentityError> {
    let damaged = |what: &str| IdentityError::BadKeyFile(what.to_string());
    if bytes.len() < HEADER_BYTES + 33 + 16 || bytes[..8] != MAGIC {
        return Err(damaged("it is not a casesync key file"));
    }
    let word =
        |i: usize| u32::from_le_bytes([bytes[8 + 4 * i], bytes[9 + 4 * i], bytes[10 + 4 * i], bytes[11 + 4 * i]]);
    let cost = KdfCost { memory_kib: word(0), passes: word(1), lanes: word(2) };
    let key = pin.derive(cost, &bytes[20..36])?;
    let plain = Zeroizing::new(
        XChaCha20Poly1305::new((&*key).into())
            .decrypt(
                XNonce::from_slice(&bytes[36..60]),
                Payload { msg: &bytes[HEADER_BYTES..], aad: &bytes[..HEADER_BYTES] },
            )
            .map_err(|_| IdentityError::WrongPin)?,
    );
    let count = usize::from(plain[32]);
    if plain.len() != 33 + 32 * count {
        return Err(damaged("its contents have the wrong length"));
    }
    let mut device = [0u8; 32];
    device.copy_from_slice(&plain[..32]);
    let invites = plain[33..]
        .chunks_exact(32)
        .map(|chunk| {
            let mut secret = [0u8; 32];
            secret.copy_from_slice(chunk);
            secret
        })
        .collect();
    Ok(Secrets { device, invites })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(text: &str, fresh: u8) -> Pin {
        Pin::new(text, [fresh; 40]).unwrap().with_cost(KdfCost::FAST_FOR_TESTS)
    }

    #[test]
    fn a_key_file_opens_with_its_pin_only() {
        let secrets = Secrets { device: [5; 32], invites: vec![[6; 32]] };
        let file = seal(&secrets, &pin("2468", 1)).unwrap();
        assert!(!file.windows(32).any(|w| w == [5; 32]), "no key bytes in the clear");
        let opened = open(&file, &pin("2468", 9)).unwrap();
        assert_eq!(opened.device, [5; 32]);
        assert_eq!(opened.invites, vec![[6; 32]]);
        assert!(matches!(open(&file, &pin("2469", 1)), Err(IdentityError::WrongPin)));
        for i in 0..file.len() {
            let mut flipped = file.clone();
            flipped[i] ^= 1;
            assert!(open(&flipped, &pin("2468", 1)).is_err(), "byte {i}");
        }
        assert!(matches!(open(&file[..40], &pin("2468", 1)), Err(IdentityError::BadKeyFile(_))));
        assert!(matches!(Pin::new(" 12 ", [0; 40]), Err(IdentityError::PinTooShort)));
    }

    #[test]
    fn a_hostile_cost_is_refused_before_any_work() {
        let mut file = seal(&Secrets { device: [5; 32], invites: vec![] }, &pin("2468", 1)).unwrap();
        file[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(open(&file, &pin("2468", 1)), Err(IdentityError::BadKeyFile(_))));
    }

    /// The standard cost on this machine (a release build): at least 0.3 s per unlock.
    #[test]
    #[ignore = "a measurement: run with --release --ignored --nocapture"]
    fn kdf_cost() {
        let pin = Pin::new("2468", [1; 40]).unwrap();
        let started = std::time::Instant::now();
        let _ = pin.derive(KdfCost::STANDARD, &[0; 16]).unwrap();
        println!("argon2id {:?}: {:?}", KdfCost::STANDARD, started.elapsed());
    }
}
