//! The mutation sweep: for thousands of valid signed events of every operation kind (the ten case
//! operations in plain bodies, sealed bodies, and the membership changes: found, grant, invite,
//! revoke, share a key, admit), every single-field change (each header field, and each field of
//! the body at any depth, re-encoded with prost with the signature kept) and single bit flips of
//! the transmitted event (bytes and signature) are refused by ingest with a typed rejection, and
//! nothing of them reaches the log: the version vector and the arrival position stay where they
//! were. Each mutation is offered at the place the author's chain continues (the store holds its
//! events before it), alone or followed by the author's next valid event; the valid event lands
//! after its mutations.
//!
//! Bit flips: every bit of the first event of each kind, and [`SAMPLED_BITS`] bits drawn (seeded:
//! `CASESYNC_SWEEP_SEED` replays) of every other event. About 165,000 ingests in all (about 25 s in a debug build).

use bytes::Bytes;
use casesync_engine::fuzz_targets::seeds::{admit_event, membership_chain, plain_chain, OPERATION_KINDS};
use casesync_engine::fuzz_targets::{flipped, with_field_changed, ScratchStore};
use casesync_engine::model::event::{BodyEncoding, SignedEvent};
use casesync_engine::model::ids::SpaceId;
use casesync_engine::store::Store;
use casesync_proto::v1 as pb;
use prost::Message;

use crate::support::{chain, device, SeededRng, SPACE};

/// Authors of plain chains, and events in each: every operation kind many times over.
const PLAIN_AUTHORS: u8 = 20;
const PLAIN_EVENTS: u64 = 125;
/// Bits flipped per event beyond the first of its kind.
const SAMPLED_BITS: usize = 32;

/// One wire field: its number and value.
#[derive(Clone, Debug)]
enum Wire {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// A message's fields in order, or `None` when the bytes are not a message.
fn parse(mut bytes: &[u8]) -> Option<Vec<(u64, Wire)>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut bytes)?),
            1 => Wire::Fixed64(bytes.get(..8)?.try_into().ok()?),
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                Wire::Bytes(bytes.get(..len)?.to_vec())
            }
            5 => Wire::Fixed32(bytes.get(..4)?.try_into().ok()?),
            _ => return None,
        };
        bytes = &bytes[match &value {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 8,
            Wire::Bytes(b) => b.len(),
            Wire::Fixed32(_) => 4,
        }..];
        if key >> 3 == 0 {
            return None;
        }
        fields.push((key >> 3, value));
    }
    Some(fields)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode(fields: &[(u64, Wire)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (number, value) in fields {
        let wire_type = match value {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Bytes(_) => 2,
            Wire::Fixed32(_) => 5,
        };
        put_varint(&mut out, number << 3 | wire_type);
        match value {
            Wire::Varint(v) => put_varint(&mut out, *v),
            Wire::Fixed64(b) => out.extend_from_slice(b),
            Wire::Bytes(b) => {
                put_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            Wire::Fixed32(b) => out.extend_from_slice(b),
        }
    }
    out
}

/// Every message that differs from `body` in the value of one field, at any depth, each still a
/// valid encoding: numbers moved by one, the last byte of bytes and text changed (text stays
/// text), nested messages changed field by field.
fn field_changes(body: &[u8]) -> Vec<Vec<u8>> {
    let Some(fields) = parse(body) else { return Vec::new() };
    let mut out = Vec::new();
    for at in 0..fields.len() {
        let mut changed = |value: Wire| {
            let mut copy = fields.clone();
            copy[at].1 = value;
            out.push(encode(&copy));
        };
        match &fields[at].1 {
            Wire::Varint(v) => changed(Wire::Varint(if *v == 0 { 1 } else { v - 1 })),
            Wire::Fixed64(b) => changed(Wire::Fixed64(u64::from_le_bytes(*b).wrapping_add(1).to_le_bytes())),
            Wire::Fixed32(b) => changed(Wire::Fixed32(u32::from_le_bytes(*b).wrapping_add(1).to_le_bytes())),
            Wire::Bytes(inner) => match parse(inner).filter(|f| !f.is_empty()) {
                Some(_) => {
                    for inner in field_changes(inner) {
                        changed(Wire::Bytes(inner));
                    }
                }
                None => {
                    let mut inner = inner.clone();
                    match inner.last_mut() {
                        Some(last) if last.is_ascii_alphanumeric() => *last = if *last == b'x' { b'y' } else { b'x' },
                        Some(last) => *last ^= 1,
                        None => inner.push(b'x'),
                    }
                    changed(Wire::Bytes(inner));
                }
            },
        }
    }
    out
}

/// `event` with its body replaced, re-encoded with prost, its signature kept.
fn with_body(event: &SignedEvent, body: Vec<u8>) -> pb::SignedEvent {
    let mut message = pb::Event::decode(event.bytes.clone()).unwrap();
    message.body = Bytes::from(body);
    pb::SignedEvent { event: Bytes::from(message.encode_to_vec()), signature: Bytes::copy_from_slice(&event.signature) }
}

/// Offers `mutated` where the chain continues (alone, or before the author's next valid event)
/// and checks it is refused and nothing is stored.
fn assert_refused(store: &Store, space: &SpaceId, mutated: pb::SignedEvent, next: Option<&SignedEvent>, what: &str) {
    let (vector, position) = (store.vector(space), store.next_position());
    let mut batch = vec![mutated];
    batch.extend(next.map(SignedEvent::to_wire));
    let report = store.ingest(space, batch).unwrap();
    assert_eq!(report.accepted, 0, "{what} was accepted");
    assert!(!report.rejected.is_empty(), "{what} was not refused");
    assert_eq!(store.vector(space), vector, "{what} moved the version vector");
    assert_eq!(store.next_position(), position, "{what} reached the log");
}

/// The kind of an event, for the "every bit of the first of each kind" rule.
fn kind(event: &SignedEvent) -> String {
    match event.header.encoding {
        BodyEncoding::Plain => {
            format!("plain {:?}", pb::Body::decode(&event.body[..]).unwrap().op.map(|op| std::mem::discriminant(&op)))
        }
        BodyEncoding::Sealed => "sealed".into(),
        BodyEncoding::Membership => format!("membership {}", event.body.first().copied().unwrap_or_default()),
    }
}

#[test]
fn every_field_change_and_bit_flip_of_thousands_of_events_is_refused_and_stores_nothing() {
    let mut rng = SeededRng::from_env("CASESYNC_SWEEP_SEED", 0x5eed_5eef);
    let members = membership_chain();
    let founded = members[0].header.space;
    // Chains in the order they can land: the founder's before the device its invitation admits.
    let mut chains: Vec<(SpaceId, Vec<SignedEvent>)> = vec![(founded, members), (founded, vec![admit_event(founded)])];
    for n in 1..=PLAIN_AUTHORS {
        let kinds_from = usize::from(n) % OPERATION_KINDS;
        chains.push((SPACE, plain_chain(&device(n), SPACE, PLAIN_EVENTS, kinds_from)));
    }
    chains.push((SPACE, chain(&device(PLAIN_AUTHORS + 1), SPACE, 40)));
    let dir = tempfile::tempdir().unwrap();
    let scratch = ScratchStore::open(dir.path()).unwrap();
    let store = scratch.store();
    let mut kinds_seen = std::collections::BTreeSet::new();
    let (mut events, mut field_mutations, mut bit_mutations) = (0u64, 0u64, 0u64);
    for (space, events_of_author) in &chains {
        for (at, event) in events_of_author.iter().enumerate() {
            let next = events_of_author.get(at + 1);
            let offer_next = |rng: &mut SeededRng| if rng.percent(50) { next } else { None };
            let where_ = format!("author {} seq {}", event.header.author.device_id(), event.header.seq);
            // Header fields (space, author, seq, prev, hlc, encoding, body as a whole), two values each.
            for field in 0..7u8 {
                for value in [1u8, 0x80] {
                    let mutated = with_field_changed(event, field, value);
                    assert_refused(
                        store,
                        space,
                        mutated,
                        offer_next(&mut rng),
                        &format!("{where_}: header field {field}"),
                    );
                    field_mutations += 1;
                }
            }
            // Every field of the body, at any depth.
            for (change, body) in field_changes(&event.body).into_iter().enumerate() {
                let what = format!("{where_}: body field change {change}");
                assert_refused(store, space, with_body(event, body), offer_next(&mut rng), &what);
                field_mutations += 1;
            }
            // Bit flips of the event bytes followed by the signature.
            let bits = (event.bytes.len() + event.signature.len()) * 8;
            let every_bit = kinds_seen.insert(kind(event));
            let chosen: Vec<usize> =
                if every_bit { (0..bits).collect() } else { (0..SAMPLED_BITS).map(|_| rng.index(bits)).collect() };
            for bit in chosen {
                let mutated = flipped(event, bit / 8, 1 << (bit % 8));
                assert_refused(store, space, mutated, offer_next(&mut rng), &format!("{where_}: bit {bit}"));
                bit_mutations += 1;
            }
            let report = store.ingest(space, vec![event.to_wire()]).unwrap();
            assert_eq!(report.accepted, 1, "{where_}: the valid event was refused: {:?}", report.rejected);
            events += 1;
        }
    }
    println!(
        "{events} events of {} kinds: {field_mutations} field changes and {bit_mutations} bit flips refused",
        kinds_seen.len()
    );
    assert!(events >= 1_500, "thousands of events");
    assert!(kinds_seen.len() >= OPERATION_KINDS + 1 + 6, "every kind: {kinds_seen:?}");
}
