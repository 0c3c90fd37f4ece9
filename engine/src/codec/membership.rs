//! The bytes of membership events: `Membership` messages (`event.proto`) <-> [`MembershipOp`].
//! Every field is checked on the way in: sizes, a known role, a device name within bounds.

use casesync_proto::v1 as pb;
use prost::Message;

use crate::model::error::OperationError;
use crate::model::ids::{AuthorId, KeyId};
use crate::model::limits::{DEVICE_NAME_BYTES_MAX, KEY_WRAPS_PER_EVENT_MAX};
use crate::model::membership::{MembershipOp, Role};
use crate::model::sealing::KeyWrap;

fn role_to_pb(role: Role) -> i32 {
    match role {
        Role::Reader => pb::Role::Reader as i32,
        Role::Relay => pb::Role::Relay as i32,
        Role::Writer => pb::Role::Writer as i32,
        Role::Admin => pb::Role::Admin as i32,
    }
}

fn role_from_pb(value: i32) -> Result<Role, OperationError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Reader) => Ok(Role::Reader),
        Ok(pb::Role::Relay) => Ok(Role::Relay),
        Ok(pb::Role::Writer) => Ok(Role::Writer),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        _ => Err(OperationError::Malformed("unknown role")),
    }
}

fn until(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

fn device(bytes: &[u8]) -> Result<AuthorId, OperationError> {
    AuthorId::from_slice(bytes).map_err(|_| OperationError::Malformed("a device key is not 32 bytes"))
}

fn name(text: String) -> Result<String, OperationError> {
    if text.len() > DEVICE_NAME_BYTES_MAX || text.chars().any(char::is_control) {
        return Err(OperationError::Malformed("a device name is too long or has control characters"));
    }
    Ok(text)
}

/// Encodes a membership change as the body of a membership event.
pub fn encode_membership(op: &MembershipOp) -> Vec<u8> {
    use pb::membership::Op;
    let bytes = |b: &[u8]| bytes::Bytes::copy_from_slice(b);
    let op = match op {
        MembershipOp::Found { nonce, name } => Op::Found(pb::Found { nonce: bytes(nonce), name: name.clone() }),
        MembershipOp::Grant { device, role, name, after, until_ms } => Op::Grant(pb::Grant {
            device: bytes(device.as_bytes()),
            role: role_to_pb(*role),
            name: name.clone(),
            after: *after,
            until_ms: until_ms.unwrap_or(0),
        }),
        MembershipOp::Revoke { device, cut } => Op::Revoke(pb::Revoke { device: bytes(device.as_bytes()), cut: *cut }),
        MembershipOp::Invite { key, role, expires_ms, until_ms } => Op::Invite(pb::Invite {
            key: bytes(key.as_bytes()),
            role: role_to_pb(*role),
            expires_ms: *expires_ms,
            until_ms: until_ms.unwrap_or(0),
        }),
        MembershipOp::ShareKey { key, wraps } => Op::ShareKey(pb::ShareKey {
            key_id: bytes(key.as_bytes()),
            wraps: wraps
                .iter()
                .map(|w| pb::KeyWrap {
                    to: bytes(w.to.as_bytes()),
                    ephemeral: bytes(&w.ephemeral),
                    sealed: bytes(&w.sealed),
                })
                .collect(),
        }),
        MembershipOp::Admit { invite, proof, name } => {
            Op::Admit(pb::Admit { invite: bytes(invite.as_bytes()), proof: bytes(proof), name: name.clone() })
        }
    };
    pb::Membership { op: Some(op) }.encode_to_vec()
}

/// Decodes and checks the body of a membership event.
pub fn decode_membership(body: &[u8]) -> Result<MembershipOp, OperationError> {
    use pb::membership::Op;
    let message = pb::Membership::decode(body).map_err(|_| OperationError::Malformed("membership does not decode"))?;
    Ok(match message.op.ok_or(OperationError::Malformed("membership names no change"))? {
        Op::Found(m) => MembershipOp::Found {
            nonce: m.nonce[..].try_into().map_err(|_| OperationError::Malformed("a nonce is not 16 bytes"))?,
            name: name(m.name)?,
        },
        Op::Grant(m) => MembershipOp::Grant {
            device: device(&m.device)?,
            role: role_from_pb(m.role)?,
            name: name(m.name)?,
            after: m.after,
            until_ms: until(m.until_ms),
        },
        Op::Revoke(m) => MembershipOp::Revoke { device: device(&m.device)?, cut: m.cut },
        Op::Invite(m) => MembershipOp::Invite {
            key: device(&m.key)?,
            role: role_from_pb(m.role)?,
            expires_ms: m.expires_ms,
            until_ms: until(m.until_ms),
        },
        Op::ShareKey(m) => {
            if m.wraps.is_empty() || m.wraps.len() > KEY_WRAPS_PER_EVENT_MAX {
                return Err(OperationError::Malformed("a key share with no wraps or too many"));
            }
            let wraps = m
                .wraps
                .iter()
                .map(|w| {
                    Ok(KeyWrap {
                        to: device(&w.to)?,
                        ephemeral: w.ephemeral[..]
                            .try_into()
                            .map_err(|_| OperationError::Malformed("an ephemeral key is not 32 bytes"))?,
                        sealed: w.sealed[..]
                            .try_into()
                            .map_err(|_| OperationError::Malformed("a wrap is not 48 bytes"))?,
                    })
                })
                .collect::<Result<Vec<_>, OperationError>>()?;
            MembershipOp::ShareKey {
                key: KeyId::from_slice(&m.key_id).map_err(|_| OperationError::Malformed("a key id is not 16 bytes"))?,
                wraps,
            }
        }
        Op::Admit(m) => MembershipOp::Admit {
            invite: device(&m.invite)?,
            proof: m.proof[..].try_into().map_err(|_| OperationError::Malformed("a proof is not 64 bytes"))?,
            name: name(m.name)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_round_trips_and_bad_bytes_are_refused() {
        let d = AuthorId([5; 32]);
        let ops = [
            MembershipOp::Found { nonce: [1; 16], name: "office".into() },
            MembershipOp::Grant { device: d, role: Role::Reader, name: "jan".into(), after: 3, until_ms: Some(9) },
            MembershipOp::Grant { device: d, role: Role::Admin, name: String::new(), after: 0, until_ms: None },
            MembershipOp::Revoke { device: d, cut: 7 },
            MembershipOp::Invite { key: d, role: Role::Writer, expires_ms: 100, until_ms: None },
            MembershipOp::Admit { invite: d, proof: [3; 64], name: "laptop".into() },
            MembershipOp::ShareKey {
                key: KeyId([4; 16]),
                wraps: vec![KeyWrap { to: d, ephemeral: [6; 32], sealed: [7; 48] }],
            },
        ];
        for op in ops {
            assert_eq!(decode_membership(&encode_membership(&op)).unwrap(), op);
        }
        assert!(decode_membership(b"\xff\xff").is_err());
        assert!(decode_membership(&[]).is_err());
        let bad_role = pb::Membership {
            op: Some(pb::membership::Op::Grant(pb::Grant {
                device: vec![5; 32].into(),
                role: 9,
                ..Default::default()
            })),
        };
        assert!(decode_membership(&bad_role.encode_to_vec()).is_err());
        let long_name = pb::Membership {
            op: Some(pb::membership::Op::Found(pb::Found { nonce: vec![0; 16].into(), name: "x".repeat(65) })),
        };
        assert!(decode_membership(&long_name.encode_to_vec()).is_err());
        let no_wraps = pb::Membership {
            op: Some(pb::membership::Op::ShareKey(pb::ShareKey { key_id: vec![0; 16].into(), wraps: vec![] })),
        };
        assert!(decode_membership(&no_wraps.encode_to_vec()).is_err());
    }
}
