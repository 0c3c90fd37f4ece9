//! The `ingest_batch` target: batches of events ingested into a store. The input is a program
//! over honest signed chains ([`seeds::honest_chains`], signed afresh in a space named after the
//! input's hash): each step pushes honest events, flipped, spliced or re-encoded ones, raw
//! events from the input, or cuts the batch. After every ingest the store must hold nothing but
//! honest bytes, as contiguous chains; at the end, the honest chains delivered whole must land
//! whole, whatever came before.

use bytes::Bytes;
use casesync_proto::v1 as pb;
use prost::Message;

use super::input::Input;
use super::seeds::{self, CHAIN_AUTHORS, CHAIN_EVENTS};
use super::{Refused, ScratchStore};
use crate::log::ingest::PreparedBatch;
use crate::model::event::SignedEvent;
use crate::model::ids::{AuthorId, SpaceId};
use crate::model::vector_clock::VersionVector;
use crate::store::Store;

/// Steps of an ingest program (the first byte of each step, modulo 8).
pub mod step {
    /// Author, seq index: one honest event.
    pub const HONEST: u8 = 0;
    /// Author, first seq index, count: a run of honest events.
    pub const RUN: u8 = 1;
    /// Author, seq index, position (2 bytes), mask: an honest event with `mask` xored into one
    /// byte of its event bytes followed by its signature.
    pub const FLIP: u8 = 2;
    /// Mode: ends the batch; an odd mode joins the next batch to it before the ingest (one
    /// prepared batch, as the node joins batches that wait).
    pub const CUT: u8 = 3;
    /// Length (2 bytes) and bytes: a `SignedEvent` message from the input.
    pub const RAW: u8 = 4;
    /// Two (author, seq index) pairs: the first event's bytes with the second's signature.
    pub const SPLICE: u8 = 5;
    /// Author, seq index, field, value: an honest event with one header field changed and
    /// re-encoded with prost, its signature kept.
    pub const FIELD: u8 = 6;
    /// Every honest event, author by author.
    pub const ALL: u8 = 7;
}

/// Most events one program pushes.
const PROGRAM_EVENTS_MAX: usize = 512;

/// See the module documentation.
pub fn ingest_batch(scratch: &ScratchStore, data: &[u8]) -> Result<(), Refused> {
    let store = scratch.store();
    let hash = blake3::hash(data);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_bytes()[..16]);
    let space = SpaceId(id);
    let chains = seeds::honest_chains(space);
    let batches = program(&chains, data);
    let mut joined: Option<PreparedBatch> = None;
    for (batch, join_next) in batches {
        let prepared = match joined.take() {
            Some(mut held) => {
                held.append(PreparedBatch::new(space, batch));
                held
            }
            None => PreparedBatch::new(space, batch),
        };
        if join_next {
            joined = Some(prepared);
            continue;
        }
        ingest_and_check(store, &space, &chains, prepared)?;
    }
    if let Some(prepared) = joined {
        ingest_and_check(store, &space, &chains, prepared)?;
    }
    // Honest chains delivered whole land whole, whatever the program sent before them.
    let report = store.ingest(&space, chains.iter().flatten().map(SignedEvent::to_wire).collect())?;
    assert!(report.rejected.is_empty(), "honest chains refused after a hostile batch: {:?}", report.rejected);
    for chain in &chains {
        assert_eq!(store.vector(&space).get(&chain[0].header.author), CHAIN_EVENTS, "an honest chain is incomplete");
    }
    check_only_honest(store, &space, &chains)?;
    Ok(())
}

/// Ingests one prepared batch and checks the store after it.
fn ingest_and_check(
    store: &Store,
    space: &SpaceId,
    chains: &[Vec<SignedEvent>],
    prepared: PreparedBatch,
) -> Result<(), Refused> {
    let before = store.vector(space);
    let offered = prepared.len() as u64;
    let report = store.ingest_prepared(prepared)?;
    let after = store.vector(space);
    assert!(report.accepted + report.duplicates <= offered, "an ingest counted more events than it held");
    let grown: u64 = after.iter().map(|(author, seq)| seq - before.get(author)).sum();
    assert_eq!(grown, report.accepted, "the version vector grew by other than the accepted events");
    assert!(before.iter().all(|(author, seq)| after.get(author) >= *seq), "a head went back");
    check_only_honest(store, space, chains)
}

/// Every stored event of the space is an honest event, byte for byte, at its place.
fn check_only_honest(store: &Store, space: &SpaceId, chains: &[Vec<SignedEvent>]) -> Result<(), Refused> {
    let mut counted = VersionVector::new();
    for stored in store.events_after(space, &VersionVector::new()) {
        let (author, seq, message) = stored?;
        let honest = chains
            .iter()
            .find(|chain| chain[0].header.author == author)
            .and_then(|chain| chain.get(seq.saturating_sub(1) as usize));
        let Some(honest) = honest else {
            panic!("an event no honest author signed reached the log: {} seq {seq}", author.device_id());
        };
        assert_eq!(message.event, honest.bytes, "stored bytes differ from the signed ones");
        assert_eq!(&message.signature[..], &honest.signature[..], "a stored signature differs from the signed one");
        assert_eq!(seq, counted.get(&author) + 1, "a stored chain has a gap");
        counted.set(author, seq);
    }
    assert_eq!(counted, store.vector(space), "the version vector and the stored events disagree");
    Ok(())
}

/// Reads the program: the batches to ingest, each with whether the next joins it.
fn program(chains: &[Vec<SignedEvent>], data: &[u8]) -> Vec<(Vec<pb::SignedEvent>, bool)> {
    let mut input = Input::new(data);
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut pushed = 0usize;
    while pushed < PROGRAM_EVENTS_MAX {
        let Some(op) = input.byte() else { break };
        let before = batch.len();
        match op % 8 {
            step::HONEST => match pick(chains, &mut input) {
                Some(event) => batch.push(event.to_wire()),
                None => break,
            },
            step::RUN => {
                let (Some(author), Some(start), Some(count)) =
                    (input.index(chains.len()), input.index(CHAIN_EVENTS as usize), input.byte())
                else {
                    break;
                };
                let chain = &chains[author];
                let end = (start + usize::from(count)).min(chain.len());
                batch.extend(chain[start..end].iter().map(SignedEvent::to_wire));
            }
            step::FLIP => {
                let (Some(event), Some(position), Some(mask)) = (pick(chains, &mut input), input.u16(), input.byte())
                else {
                    break;
                };
                batch.push(flipped(event, usize::from(position), mask.max(1)));
            }
            step::CUT => {
                let Some(mode) = input.byte() else { break };
                batches.push((std::mem::take(&mut batch), mode % 2 == 1));
            }
            step::RAW => {
                let Some(bytes) = input.sized() else { break };
                // Bytes that are no message travel as event bytes without a signature.
                let message = pb::SignedEvent::decode(bytes).unwrap_or_else(|_| pb::SignedEvent {
                    event: Bytes::copy_from_slice(bytes),
                    signature: Bytes::new(),
                });
                batch.push(message);
            }
            step::SPLICE => {
                let (Some(first), Some(second)) = (pick(chains, &mut input), pick(chains, &mut input)) else {
                    break;
                };
                batch.push(pb::SignedEvent {
                    event: first.bytes.clone(),
                    signature: Bytes::copy_from_slice(&second.signature),
                });
            }
            step::FIELD => {
                let (Some(event), Some(field), Some(value)) = (pick(chains, &mut input), input.byte(), input.byte())
                else {
                    break;
                };
                batch.push(with_field_changed(event, field, value));
            }
            _ => batch.extend(chains.iter().flatten().map(SignedEvent::to_wire)),
        }
        pushed += batch.len().saturating_sub(before);
    }
    batches.push((batch, false));
    batches
}

/// The honest event an (author, seq index) pair of the input names.
fn pick<'a>(chains: &'a [Vec<SignedEvent>], input: &mut Input) -> Option<&'a SignedEvent> {
    let chain = &chains[input.index(chains.len())?];
    chain.get(input.index(chain.len())?)
}

/// `event` as a wire message with `mask` xored into byte `position` (modulo the length) of its
/// event bytes followed by its signature.
pub fn flipped(event: &SignedEvent, position: usize, mask: u8) -> pb::SignedEvent {
    let mut joined = [&event.bytes[..], &event.signature[..]].concat();
    let at = position % joined.len();
    joined[at] ^= mask;
    let signature = joined.split_off(event.bytes.len());
    pb::SignedEvent { event: Bytes::from(joined), signature: Bytes::from(signature) }
}

/// `event` with one header field (`field` modulo 7: space, author, seq, prev, hlc, encoding,
/// body) changed by `value` and re-encoded with prost, its signature kept.
pub fn with_field_changed(event: &SignedEvent, field: u8, value: u8) -> pb::SignedEvent {
    let Ok(mut message) = pb::Event::decode(event.bytes.clone()) else {
        return event.to_wire();
    };
    let delta = u64::from(value.max(1));
    let changed_bytes = |bytes: &Bytes| {
        let mut bytes = bytes.to_vec();
        match bytes.last_mut() {
            Some(last) => *last ^= value.max(1),
            None => bytes.push(value),
        }
        Bytes::from(bytes)
    };
    match field % 7 {
        0 => message.space = changed_bytes(&message.space),
        // Another device's key: a valid key that did not sign.
        1 => message.author = Bytes::copy_from_slice(AuthorId::as_bytes(&other_author(&message.author, value))),
        2 => message.seq = message.seq.wrapping_add(delta),
        3 => message.prev = changed_bytes(&message.prev),
        4 => message.hlc = message.hlc.wrapping_add(delta),
        5 => {
            // Another value: the three encodings, the unset one and one no build knows.
            let others: Vec<i32> = [0, 1, 2, 3, 4].into_iter().filter(|e| *e != message.encoding).collect();
            message.encoding = others[usize::from(value) % others.len()];
        }
        _ => message.body = changed_bytes(&message.body),
    }
    pb::SignedEvent { event: Bytes::from(message.encode_to_vec()), signature: Bytes::copy_from_slice(&event.signature) }
}

/// A valid device key other than `author`.
fn other_author(author: &[u8], value: u8) -> AuthorId {
    let mut n = value % CHAIN_AUTHORS + 1;
    if crate::testkit::device(n).author().as_bytes()[..] == author[..] {
        n = n % CHAIN_AUTHORS + 1;
    }
    crate::testkit::device(n).author()
}
