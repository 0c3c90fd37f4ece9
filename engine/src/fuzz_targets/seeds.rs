//! Valid inputs for every target: honest signed chains with a body of every operation kind, a
//! batch, a small backup file, a request of every kind. The committed seed corpus
//! (`fuzz/corpus/<target>/`) is [`corpus`] written out; the engine's tests check that it still
//! is.

use bytes::Bytes;

use super::grpc_request::request_seeds;
use super::ingest_batch::step;
use super::{encoded, Refused, ScratchStore};
use crate::codec::backup_format::{BackupHeader, BackupWriter, BACKUP_FORMAT_VERSION};
use crate::codec::membership::encode_membership;
use crate::codec::wire::encode_operation;
use crate::model::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::model::ids::{AuthorId, CaseId, EntryId, EventId, KeyId, SpaceId};
use crate::model::membership::{admit_digest, MembershipOp, Role};
use crate::model::operation::{Dot, FieldValue, FieldWrite, FieldWrites, Operation, StatusChange, StatusWrite};
use crate::model::sealing::{KeyWrap, WRAPPED_KEY_BYTES};
use crate::model::signing::DeviceKey;
use crate::model::vector_clock::VersionVector;
use crate::testkit::device;

/// Authors of the honest chains (devices 1..=3 of [`crate::testkit::device`]).
pub const CHAIN_AUTHORS: u8 = 3;
/// Events in each honest chain.
pub const CHAIN_EVENTS: u64 = 6;
/// How many operation kinds [`operation`] makes.
pub const OPERATION_KINDS: usize = 10;

/// The targets, by the names of their `fuzz/fuzz_targets/*.rs` files.
pub const TARGETS: [&str; 4] = ["event_from_peer", "ingest_batch", "backup_file", "grpc_request"];

/// Runs the body of `target` on `data` (the store is used by the targets that write).
pub fn run(target: &str, scratch: &ScratchStore, data: &[u8]) -> Result<(), Refused> {
    match target {
        "event_from_peer" => super::event_from_peer(data),
        "ingest_batch" => super::ingest_batch(scratch, data),
        "backup_file" => super::backup_file(scratch, data),
        "grpc_request" => super::grpc_request(scratch, data),
        _ => Err(Refused::Request("no such target")),
    }
}

/// An operation of kind `kind` (modulo [`OPERATION_KINDS`]: create, set fields, add, update,
/// remove and restore an entry, archive, unarchive, delete and restore a case) by `author` at
/// `seq`, naming its own earlier event as what it supersedes.
pub fn operation(kind: usize, author: AuthorId, seq: u64) -> Operation {
    let case = CaseId([author.as_bytes()[0]; 16]);
    let entry = EntryId([author.as_bytes()[1]; 16]);
    let earlier: smallvec::SmallVec<[Dot; 1]> =
        if seq > 1 { smallvec::smallvec![Dot { author, seq: seq - 1 }] } else { smallvec::SmallVec::new() };
    let writes = |name: &str, value: FieldValue| -> FieldWrites {
        smallvec::smallvec![FieldWrite { name: name.into(), value, supersedes: earlier.clone() }]
    };
    let mut seen = VersionVector::new();
    seen.set(author, seq.saturating_sub(1));
    let write = StatusWrite { supersedes: earlier.clone(), seen };
    let status = |change| Operation::ChangeStatus { case, change, write: write.clone() };
    match kind % OPERATION_KINDS {
        0 => Operation::CreateCase { case, fields: writes("name", FieldValue::Text(format!("client {seq}"))) },
        1 => Operation::SetFields { case, fields: writes("phone", FieldValue::Integer(5550000 + seq as i64)) },
        2 => Operation::AddEntry { case, entry, fields: writes("note", FieldValue::Date("2026-02-28".into())) },
        3 => Operation::UpdateEntry { case, entry, fields: writes("amount", FieldValue::Decimal("12.50".into())) },
        4 => Operation::RemoveEntry { case, entry, write },
        5 => Operation::RestoreEntry { case, entry, write },
        6 => status(StatusChange::Archive),
        7 => status(StatusChange::Unarchive),
        8 => status(StatusChange::Delete),
        _ => status(StatusChange::Restore),
    }
}

/// Signs `bodies` as the chain of `key` in `space` from seq 1, the clock of seq `n` at
/// `first_ms + n` milliseconds.
pub fn signed_chain(
    key: &DeviceKey,
    space: SpaceId,
    first_ms: u64,
    bodies: &[(BodyEncoding, Bytes)],
) -> Vec<SignedEvent> {
    let mut prev = EventId::ZERO;
    let mut chain = Vec::with_capacity(bodies.len());
    for (at, (encoding, body)) in bodies.iter().enumerate() {
        let seq = at as u64 + 1;
        let header =
            EventHeader { space, author: key.author(), seq, prev, hlc: (first_ms + seq) << 16, encoding: *encoding };
        match SignedEvent::build(key, &header, body.clone()) {
            Ok(event) => {
                prev = event.link;
                chain.push(event);
            }
            Err(error) => panic!("a seed event does not build: {error}"),
        }
    }
    chain
}

/// A plain chain of `count` events by `key` in `space`, their operations of every kind in turn
/// from `first_kind`.
pub fn plain_chain(key: &DeviceKey, space: SpaceId, count: u64, first_kind: usize) -> Vec<SignedEvent> {
    let bodies: Vec<_> = (1..=count)
        .map(|seq| {
            let operation = operation(first_kind + seq as usize - 1, key.author(), seq);
            (BodyEncoding::Plain, Bytes::from(encode_operation(&operation)))
        })
        .collect();
    signed_chain(key, space, 1_000, &bodies)
}

/// The honest chains of the `ingest_batch` target in `space`: [`CHAIN_AUTHORS`] devices,
/// [`CHAIN_EVENTS`] plain events each, every operation kind among them.
pub fn honest_chains(space: SpaceId) -> Vec<Vec<SignedEvent>> {
    (1..=CHAIN_AUTHORS)
        .map(|n| plain_chain(&device(n), space, CHAIN_EVENTS, usize::from(n - 1) * CHAIN_EVENTS as usize))
        .collect()
}

/// A membership chain: the founding of a space by device 1, a grant, an invitation and a
/// revocation. The space is the one the founding names.
pub fn membership_chain() -> Vec<SignedEvent> {
    let founder = device(1);
    let nonce = [7; 16];
    let space = crate::model::membership::founded_space(&founder.author(), &nonce);
    let ops = [
        MembershipOp::Found { nonce, name: "office".into() },
        MembershipOp::Grant {
            device: device(2).author(),
            role: Role::Writer,
            name: "laptop".into(),
            after: 0,
            until_ms: None,
        },
        MembershipOp::Invite {
            key: device(4).author(),
            role: Role::Reader,
            expires_ms: 9_000_000,
            until_ms: Some(10_000_000),
        },
        MembershipOp::Revoke { device: device(2).author(), cut: 3 },
        MembershipOp::ShareKey {
            key: KeyId([3; KeyId::LEN]),
            wraps: vec![KeyWrap { to: device(2).author(), ephemeral: [4; 32], sealed: [5; WRAPPED_KEY_BYTES] }],
        },
    ];
    let bodies: Vec<_> = ops.iter().map(|op| (BodyEncoding::Membership, Bytes::from(encode_membership(op)))).collect();
    signed_chain(&founder, space, 1_000, &bodies)
}

/// A device's enrolment through an invitation of [`membership_chain`]: device 5's first event,
/// `Admit`, with the proof of device 4's (the invitation's) key.
pub fn admit_event(space: SpaceId) -> SignedEvent {
    let joiner = device(5);
    let proof = device(4).sign(&admit_digest(&space, &joiner.author()));
    let op = MembershipOp::Admit { invite: device(4).author(), proof, name: "tablet".into() };
    // After the invitation (the membership is judged in clock order).
    let mut chain =
        signed_chain(&joiner, space, 2_000, &[(BodyEncoding::Membership, Bytes::from(encode_membership(&op)))]);
    chain.remove(0)
}

/// A backup file of `events` in `space`, as `replay-tool export` writes one.
pub fn backup_of(space: SpaceId, events: &[SignedEvent]) -> Vec<u8> {
    let header = BackupHeader {
        version: BACKUP_FORMAT_VERSION,
        space,
        base: VersionVector::new(),
        members: vec![(device(1).author(), "office".into())],
    };
    let written = BackupWriter::new(Vec::new(), &header).and_then(|mut writer| {
        for event in events {
            writer.event(&event.signature, &event.bytes)?;
        }
        writer.finish()
    });
    match written {
        Ok((_, bytes)) => bytes,
        Err(error) => panic!("a seed backup does not write: {error}"),
    }
}

/// The seed corpus of `target`: (file name, bytes).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let space = SpaceId([0x5a; 16]);
    match target {
        "event_from_peer" => {
            let mut events = plain_chain(&device(1), space, OPERATION_KINDS as u64, 0);
            let members = membership_chain();
            events.push(admit_event(members[0].header.space));
            events.extend(members);
            events.extend(crate::testkit::chain(&device(2), space, 2));
            let mut seeds = Vec::new();
            for (at, event) in events.iter().enumerate() {
                seeds.push((format!("wire-{at:02}"), [&[0u8][..], &encoded(&event.to_wire())].concat()));
                seeds.push((format!("stored-{at:02}"), [vec![1u8], event.to_stored()].concat()));
            }
            seeds
        }
        "ingest_batch" => {
            let raw = encoded(&plain_chain(&device(1), space, 1, 0)[0].to_wire());
            let mut raw_step = vec![step::RAW];
            raw_step.extend_from_slice(&(raw.len() as u16).to_be_bytes());
            raw_step.extend_from_slice(&raw);
            vec![
                ("all-in-order".into(), vec![step::ALL]),
                (
                    "runs-cut-and-joined".into(),
                    vec![step::RUN, 0, 0, 3, step::CUT, 1, step::RUN, 1, 0, 6, step::CUT, 0, step::RUN, 0, 3, 3],
                ),
                ("flip-in-the-middle".into(), vec![step::RUN, 2, 0, 2, step::FLIP, 2, 2, 0, 40, 4, step::RUN, 2, 3, 3]),
                (
                    "splice-and-field".into(),
                    vec![step::HONEST, 0, 0, step::SPLICE, 0, 1, 0, 2, step::FIELD, 1, 0, 2, 1, step::ALL],
                ),
                ("raw-event".into(), raw_step),
            ]
        }
        "backup_file" => {
            let events: Vec<_> = (1..=CHAIN_AUTHORS).flat_map(|n| plain_chain(&device(n), space, 4, 0)).collect();
            let members = membership_chain();
            vec![
                ("three-chains".into(), backup_of(space, &events)),
                ("membership".into(), backup_of(members[0].header.space, &members)),
                ("empty".into(), backup_of(space, &[])),
            ]
        }
        _ => request_seeds(),
    }
}
