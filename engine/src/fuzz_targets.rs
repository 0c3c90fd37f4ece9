//! The bodies of the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`), here so that the engine's
//! own test suite replays the committed corpus (`fuzz/corpus/<target>/`) and seeded mutations of
//! it through exactly the code libFuzzer runs, without cargo-fuzz or a second RocksDB build.
//! Compiled only with the `testkit` feature.
//!
//! Every body takes the fuzzer's bytes, returns `Ok` or a typed refusal ([`Refused`]), and never
//! panics on its input: a panic is a finding. Besides "no panic", each body asserts what must
//! hold of whatever it accepted (an event read in place equals prost's reading of it; only the
//! bytes honest authors signed ever reach the log; honest events still land after a hostile
//! batch), so a wrong acceptance is a finding too.

use bytes::Bytes;
use casesync_proto::v1 as pb;
use prost::Message;

use crate::codec::backup_format::BackupError;
use crate::codec::membership::{decode_membership, encode_membership};
use crate::codec::wire::{decode_operation, encode_operation};
use crate::error::{OpenError, StoreError};
use crate::identity::IdentityError;
use crate::model::error::{EventError, OperationError, ParseIdError};
use crate::model::event::plain_header::decode_plain_header;
use crate::model::event::{link_hash, parse_event_message, stored_header_and_body, BodyEncoding, SignedEvent};
use crate::model::ids::EventId;
use crate::model::vector_clock::Head;
use crate::model::verify::{ChainFault, ChainVerifier, SignatureCheck};
use crate::store::{Store, StoreOptions};

mod backup_file;
mod grpc_request;
mod ingest_batch;
mod input;
pub mod seeds;

pub use backup_file::backup_file;
pub use grpc_request::{grpc_request, REQUEST_KINDS};
pub use ingest_batch::{flipped, ingest_batch, step, with_field_changed};

/// Why a fuzz target's body refused its input: the typed error of the engine's API that refused
/// it. Refusals are the expected outcome of nearly every input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The input is empty or ends before what its first bytes announce.
    #[error("the input ends early")]
    ShortInput,
    /// prost could not decode the message.
    #[error("the message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// See [`EventError`].
    #[error(transparent)]
    Event(#[from] EventError),
    /// See [`OperationError`].
    #[error(transparent)]
    Operation(#[from] OperationError),
    /// See [`ParseIdError`].
    #[error(transparent)]
    Id(#[from] ParseIdError),
    /// See [`ChainFault`].
    #[error(transparent)]
    Chain(#[from] ChainFault),
    /// See [`IdentityError`].
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// See [`BackupError`].
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A request the node refuses before asking the engine (an unknown role or status, a missing
    /// part): the node's own `invalid_argument`.
    #[error("the node refuses the request: {0}")]
    Request(&'static str),
    /// The store refused or failed (see [`crate::Error`]).
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// See [`StoreError`]: storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A store in a directory that nothing else uses, written without waiting for the disk: the
/// targets that ingest or run commands write into it (each input in a space of its own, named
/// after the input's hash, so inputs do not meet each other's events). Membership is judged
/// only in spaces whose founding event is held ([`StoreOptions::compatible`]).
pub struct ScratchStore {
    store: Store,
}

impl ScratchStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &std::path::Path) -> Result<ScratchStore, OpenError> {
        let store = Store::open(dir, StoreOptions::compatible())?;
        store.defer_syncs();
        Ok(ScratchStore { store })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// One event as a peer sends it. The first byte picks the form of the rest: even, an encoded
/// `SignedEvent` message (what a `Push` or `Pull` carries, read by [`SignedEvent::from_peer`]);
/// odd, a stored record (signature then event bytes, what a log or a backup holds, read by
/// [`SignedEvent::from_stored`]). Whatever decodes is checked against prost's reading of the same
/// bytes, its body decoded by its encoding, and its signature and chain (as the first event of a
/// chain) verified.
pub fn event_from_peer(data: &[u8]) -> Result<(), Refused> {
    let (&form, rest) = data.split_first().ok_or(Refused::ShortInput)?;
    let event = if form % 2 == 0 {
        let message = pb::SignedEvent::decode(rest)?;
        let wire = SignedEvent::from_wire(message.clone());
        let peer = SignedEvent::from_peer(message);
        if let Ok(peer) = &peer {
            // `from_peer` takes a subset of what `from_wire` takes, and reads it the same way.
            assert_eq!(wire.as_ref().ok(), Some(peer), "from_peer accepted what from_wire reads otherwise");
            // The canonical form is prost's own encoding of what it decodes.
            let reencoded = pb::Event::decode(peer.bytes.clone()).map(|m| m.encode_to_vec());
            assert_eq!(
                reencoded.ok().as_deref(),
                Some(&peer.bytes[..]),
                "a canonical event prost re-encodes otherwise"
            );
        }
        peer?
    } else {
        let event = SignedEvent::from_stored(rest)?;
        let read = stored_header_and_body(rest).map(|(header, body)| (header, body.to_vec()));
        let decoded = (event.header.clone(), event.body.to_vec());
        assert_eq!(read.ok(), Some(decoded), "the stored reader and the decoder disagree");
        event
    };
    check_decoded(&event);
    check_body(&event)?;
    event.verify_signature()?;
    // The chain as it continues: anchored at the head the event names as its previous one.
    let h = &event.header;
    let anchor = (h.seq > 1).then_some((h.author, Head { seq: h.seq - 1, link: h.prev }));
    let mut verifier = ChainVerifier::with_anchors(h.space, SignatureCheck::Every, anchor);
    verifier.push(&event)?;
    let report = verifier.finish();
    assert!(report.faults.is_empty(), "a pushed event left a fault: {:?}", report.faults);
    Ok(())
}

/// What must hold of any event that decoded: its id, link and stored form, and the agreement of
/// the in-place header reader with prost.
fn check_decoded(event: &SignedEvent) {
    assert_eq!(event.id, EventId::of(&event.bytes), "an event's id is not the hash of its bytes");
    assert_eq!(event.link, link_hash(&event.id, &event.signature), "an event's link hash");
    let back = SignedEvent::from_stored(&event.to_stored());
    assert_eq!(back.as_ref().ok(), Some(event), "an event does not read back from its stored form");
    if let Some((header, body)) = decode_plain_header(&event.bytes) {
        let by_prost = parse_event_message(event.bytes.clone());
        assert_eq!(
            by_prost.ok(),
            Some((header, event.bytes.slice(body))),
            "the in-place header reader and prost disagree"
        );
    }
}

/// Decodes an event's body as its encoding says. A plain or membership body that decodes
/// re-encodes to the same meaning, and prost reads every body the in-place reader takes.
fn check_body(event: &SignedEvent) -> Result<(), Refused> {
    match event.header.encoding {
        BodyEncoding::Plain => {
            let operation = decode_operation(&event.body)?;
            assert!(pb::Body::decode(&event.body[..]).is_ok(), "a body decoded that prost does not read");
            let again = decode_operation(&encode_operation(&operation));
            assert_eq!(again.as_ref().ok(), Some(&operation), "an operation does not survive its encoding");
        }
        BodyEncoding::Membership => {
            let change = decode_membership(&event.body)?;
            let again = decode_membership(&encode_membership(&change));
            assert_eq!(again.as_ref().ok(), Some(&change), "a membership change does not survive its encoding");
        }
        // Opaque without the space's data key.
        BodyEncoding::Sealed => {}
    }
    Ok(())
}

/// The bytes of a wire message, for seeds and tests.
pub fn encoded(message: &impl Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}
