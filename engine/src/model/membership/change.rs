//! What membership events say: roles, the changes an admin (or an invited device) signs, and
//! the ids and digests they are checked against.

use crate::model::ids::{AuthorId, KeyId, SpaceId};
use crate::model::sealing::KeyWrap;

/// What a device may do in a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Pulls and reads; authors nothing.
    Reader,
    /// Stores and forwards; authors nothing.
    Relay,
    /// Reads and writes cases.
    Writer,
    /// Writes cases and membership.
    Admin,
}

impl Role {
    /// Lowercase name, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Relay => "relay",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Role> {
        match text.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Role::Reader),
            "relay" => Some(Role::Relay),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may author case events.
    pub fn writes_cases(self) -> bool {
        matches!(self, Role::Writer | Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of membership, as a membership event's body says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipOp {
    /// The founder's first event.
    Found {
        /// With the founder's key, hashes to the space id.
        nonce: [u8; 16],
        /// The founder's name.
        name: String,
    },
    /// A role for a device.
    Grant {
        /// The device.
        device: AuthorId,
        /// Its role.
        role: Role,
        /// Its name.
        name: String,
        /// The role covers the device's events above this seq.
        after: u64,
        /// Until this time (ms since the epoch; `None`: no end).
        until_ms: Option<u64>,
    },
    /// A device shut out above a seq.
    Revoke {
        /// The device.
        device: AuthorId,
        /// Its events above this seq never count.
        cut: u64,
    },
    /// An invitation: one device may enrol with the invitation key.
    Invite {
        /// The invitation's public key.
        key: AuthorId,
        /// The role the enrolled device gets.
        role: Role,
        /// The invitation is usable until then (ms since the epoch).
        expires_ms: u64,
        /// The grant it gives lasts until then (`None`: no end).
        until_ms: Option<u64>,
    },
    /// A data key handed to recipients (member devices or invitations), wrapped for each; the
    /// first share of a key id that counts introduces the key.
    ShareKey {
        /// The data key's id.
        key: KeyId,
        /// One wrap per recipient.
        wraps: Vec<KeyWrap>,
    },
    /// A device's enrolment through an invitation (its own first event).
    Admit {
        /// The invitation's public key.
        invite: AuthorId,
        /// The invitation key's signature over [`admit_digest`].
        proof: [u8; 64],
        /// The device's name.
        name: String,
    },
}

impl std::fmt::Display for MembershipOp {
    /// What the change does, in words: `grant writer to d-... (laptop) until ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = |until_ms: &Option<u64>| until_ms.map(|ms| format!(" until {ms} ms")).unwrap_or_default();
        match self {
            MembershipOp::Found { name, .. } => write!(f, "found the space as {name:?}"),
            MembershipOp::Grant { device, role, name, after, until_ms } => write!(
                f,
                "grant {role} to {} ({name:?}) for its events after seq {after}{}",
                device.device_id(),
                until(until_ms)
            ),
            MembershipOp::Revoke { device, cut } => {
                write!(f, "revoke {}: its events after seq {cut} do not count", device.device_id())
            }
            MembershipOp::Invite { key, role, expires_ms, until_ms } => write!(
                f,
                "invite a {role} with key {} (usable until {expires_ms} ms){}",
                key.device_id(),
                until(until_ms)
            ),
            MembershipOp::ShareKey { key, wraps } => {
                let to: Vec<String> = wraps.iter().map(|w| w.to.device_id()).collect();
                write!(f, "share data key {} with {}", key.short(), to.join(", "))
            }
            MembershipOp::Admit { invite, name, .. } => {
                write!(f, "join as {name:?} with invitation {}", invite.device_id())
            }
        }
    }
}

/// A grant to be made: the device, its role and name, and when it ends (the granting store
/// adds what the grant covers: the device's events above those it holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGrant {
    /// The device.
    pub device: AuthorId,
    /// Its role.
    pub role: Role,
    /// Its name.
    pub name: String,
    /// The grant ends then (ms since the epoch; `None`: no end).
    pub until_ms: Option<u64>,
}

/// The space id a founder's key and nonce make.
pub fn founded_space(founder: &AuthorId, nonce: &[u8; 16]) -> SpaceId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"casesync-space-v1");
    hasher.update(founder.as_bytes());
    hasher.update(nonce);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    SpaceId(id)
}

/// What an invitation key signs to enrol `device` in `space`.
pub fn admit_digest(space: &SpaceId, device: &AuthorId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"casesync-admit-v1");
    hasher.update(space.as_bytes());
    hasher.update(device.as_bytes());
    *hasher.finalize().as_bytes()
}
