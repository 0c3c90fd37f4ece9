//! The signed event: its exact bytes, its id (blake3 of those bytes), its signature and header.
//!
//! Nothing here re-encodes a decoded event: ids and signatures always cover the bytes as they
//! were built, stored and sent.

use std::borrow::Cow;

use bytes::Bytes;
use casesync_proto::v1 as pb;
use prost::Message;

use crate::model::error::EventError;
use crate::model::ids::{AuthorId, EventId, SpaceId};
use crate::model::limits::{EVENT_BYTES_MAX, SIGNATURE_BYTES};
use crate::model::signing::{DeviceKey, VerifyingKey};

pub(crate) mod plain_header;

/// How an event's body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// An encoded `Body` message.
    Plain,
    /// An encrypted body, readable only with the space key.
    Sealed,
    /// An encoded `Membership`: a change of who may do what, always in the clear.
    Membership,
}

impl BodyEncoding {
    /// The value on the wire.
    pub fn wire(self) -> pb::BodyEncoding {
        match self {
            BodyEncoding::Plain => pb::BodyEncoding::Plain,
            BodyEncoding::Sealed => pb::BodyEncoding::Sealed,
            BodyEncoding::Membership => pb::BodyEncoding::Membership,
        }
    }
}

/// The header of an event, in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// The space the event belongs to.
    pub space: SpaceId,
    /// The device that wrote it.
    pub author: AuthorId,
    /// Position in the author's chain, from 1.
    pub seq: u64,
    /// Link hash (blake3 of id and signature) of the author's previous event,
    /// [`EventId::ZERO`] for seq 1.
    pub prev: EventId,
    /// Hybrid logical clock (ms << 16 | counter).
    pub hlc: u64,
    /// How the body is encoded.
    pub encoding: BodyEncoding,
}

/// An event as stored and sent: exact bytes, id, signature, decoded header and body slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedEvent {
    /// The exact encoded `Event` bytes.
    pub bytes: Bytes,
    /// blake3 of `bytes`.
    pub id: EventId,
    /// ed25519 signature over `id`.
    pub signature: [u8; SIGNATURE_BYTES],
    /// blake3(id || signature): what the author's next event names as `prev`, so the chain
    /// covers signatures too.
    pub link: EventId,
    /// The decoded header.
    pub header: EventHeader,
    /// The body bytes (a slice of `bytes`).
    pub body: Bytes,
}

/// The link hash of a signed event: blake3(id || signature).
pub fn link_hash(id: &EventId, signature: &[u8; SIGNATURE_BYTES]) -> EventId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(id.as_bytes());
    hasher.update(signature);
    EventId(*hasher.finalize().as_bytes())
}

/// Decodes the header and body of event bytes, checking the header's shape (no hashing). The
/// plain encoding is read in place; anything else goes through prost (which words the error).
pub(crate) fn parse_event(bytes: Bytes) -> Result<(EventHeader, Bytes), EventError> {
    if let Some((header, body)) = plain_header::decode_plain_header(&bytes) {
        return Ok((header, bytes.slice(body)));
    }
    parse_event_message(bytes)
}

/// [`parse_event`] through the generated message: every encoding prost reads, and the error of
/// bytes that are not a valid event.
pub(crate) fn parse_event_message(bytes: Bytes) -> Result<(EventHeader, Bytes), EventError> {
    let message = pb::Event::decode(bytes).map_err(|_| EventError::Malformed("event does not decode"))?;
    let space = SpaceId::from_slice(&message.space).map_err(|_| EventError::Malformed("space must be 16 bytes"))?;
    let author = AuthorId::from_slice(&message.author).map_err(|_| EventError::Malformed("author must be 32 bytes"))?;
    let prev = EventId::from_slice(&message.prev).map_err(|_| EventError::Malformed("prev must be 32 bytes"))?;
    if message.seq == 0 {
        return Err(EventError::Malformed("seq must start at 1"));
    }
    if message.seq == 1 && prev != EventId::ZERO {
        return Err(EventError::Malformed("seq 1 must have a zero prev"));
    }
    let encoding = match pb::BodyEncoding::try_from(message.encoding) {
        Ok(pb::BodyEncoding::Plain) => BodyEncoding::Plain,
        Ok(pb::BodyEncoding::Sealed) => BodyEncoding::Sealed,
        Ok(pb::BodyEncoding::Membership) => BodyEncoding::Membership,
        _ => return Err(EventError::Malformed("unknown body encoding")),
    };
    Ok((EventHeader { space, author, seq: message.seq, prev, hlc: message.hlc, encoding }, message.body))
}

/// The header and body of a stored record, without hashing or verifying anything: for folding a
/// log into projections, where the chain was verified when the events were stored. The plain
/// encoding is read in place (the body borrowed from `value`); anything else through prost.
pub fn stored_header_and_body(value: &[u8]) -> Result<(EventHeader, Cow<'_, [u8]>), EventError> {
    if value.len() < SIGNATURE_BYTES {
        return Err(EventError::Malformed("stored record shorter than a signature"));
    }
    let event = &value[SIGNATURE_BYTES..];
    if let Some((header, body)) = plain_header::decode_plain_header(event) {
        return Ok((header, Cow::Borrowed(&event[body])));
    }
    let (header, body) = parse_event_message(Bytes::copy_from_slice(event))?;
    Ok((header, Cow::Owned(body.to_vec())))
}

impl SignedEvent {
    /// Builds and signs a new event. Fails if the result would exceed [`EVENT_BYTES_MAX`].
    pub fn build(key: &DeviceKey, header: &EventHeader, body: Bytes) -> Result<SignedEvent, EventError> {
        SignedEvent::build_signed_by(header, body, |id| key.sign(&id.0))
    }

    /// Builds a new event signed by `sign`, given the event's id: another ed25519 implementation
    /// holding the author's key (ed25519 signatures are deterministic, so any correct one signs
    /// the same bytes). Nothing here verifies the signature: every reader does.
    pub fn build_signed_by(
        header: &EventHeader,
        body: Bytes,
        sign: impl FnOnce(&EventId) -> [u8; SIGNATURE_BYTES],
    ) -> Result<SignedEvent, EventError> {
        let message = pb::Event {
            space: Bytes::copy_from_slice(header.space.as_bytes()),
            author: Bytes::copy_from_slice(header.author.as_bytes()),
            seq: header.seq,
            prev: Bytes::copy_from_slice(header.prev.as_bytes()),
            hlc: header.hlc,
            encoding: header.encoding.wire() as i32,
            body,
        };
        let bytes = Bytes::from(message.encode_to_vec());
        if bytes.len() > EVENT_BYTES_MAX {
            return Err(EventError::TooLarge { bytes: bytes.len(), max: EVENT_BYTES_MAX });
        }
        let id = EventId::of(&bytes);
        let signature = sign(&id);
        let event = SignedEvent::decode(bytes, &signature)?;
        // Assert in pairs: what we built must read back as the header we meant.
        debug_assert_eq!(&event.header, header);
        Ok(event)
    }

    /// Decodes event bytes and a signature, checking sizes and header shape and computing the id.
    /// The signature is not verified here: see [`SignedEvent::verify_signature`].
    pub fn decode(bytes: Bytes, signature: &[u8]) -> Result<SignedEvent, EventError> {
        if bytes.len() > EVENT_BYTES_MAX {
            return Err(EventError::TooLarge { bytes: bytes.len(), max: EVENT_BYTES_MAX });
        }
        let signature: [u8; SIGNATURE_BYTES] =
            signature.try_into().map_err(|_| EventError::Malformed("signature must be 64 bytes"))?;
        let id = EventId::of(&bytes);
        let (header, body) = parse_event(bytes.clone())?;
        let link = link_hash(&id, &signature);
        Ok(SignedEvent { bytes, id, signature, link, header, body })
    }

    /// Whether this is a membership event (its body in the clear, judged by every node).
    pub fn is_membership(&self) -> bool {
        self.header.encoding == BodyEncoding::Membership
    }

    /// Verifies the signature against the author key (about 34 us: use it per range on ingest).
    pub fn verify_signature(&self) -> Result<(), EventError> {
        VerifyingKey::new(&self.header.author)?.verify(&self.id.0, &self.signature)
    }

    /// Decodes a stored record: the signature followed by the event bytes.
    pub fn from_stored(value: &[u8]) -> Result<SignedEvent, EventError> {
        if value.len() < SIGNATURE_BYTES {
            return Err(EventError::Malformed("stored record shorter than a signature"));
        }
        let (signature, bytes) = value.split_at(SIGNATURE_BYTES);
        SignedEvent::decode(Bytes::copy_from_slice(bytes), signature)
    }

    /// The stored record: the signature followed by the event bytes.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(SIGNATURE_BYTES + self.bytes.len());
        self.write_stored(&mut value);
        value
    }

    /// [`SignedEvent::to_stored`] into `buffer` (cleared first), for a caller that stores many.
    pub fn write_stored(&self, buffer: &mut Vec<u8>) {
        buffer.clear();
        buffer.extend_from_slice(&self.signature);
        buffer.extend_from_slice(&self.bytes);
    }

    /// The wire message.
    pub fn to_wire(&self) -> pb::SignedEvent {
        pb::SignedEvent { event: self.bytes.clone(), signature: Bytes::copy_from_slice(&self.signature) }
    }

    /// Decodes a wire message (does not verify the signature).
    pub fn from_wire(message: pb::SignedEvent) -> Result<SignedEvent, EventError> {
        SignedEvent::decode(message.event, &message.signature)
    }

    /// [`SignedEvent::from_wire`] of a message received from another node: only the canonical
    /// encoding is taken (one byte form per event; unknown, repeated or reordered fields and
    /// padded varints are refused).
    pub fn from_peer(message: pb::SignedEvent) -> Result<SignedEvent, EventError> {
        let event = SignedEvent::from_wire(message)?;
        if !plain_header::is_canonical(&event.bytes, &event.header, &event.body) {
            return Err(EventError::Malformed("not the canonical encoding of an event"));
        }
        Ok(event)
    }

    /// Size on the wire and on disk, roughly: event bytes plus signature.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len() + SIGNATURE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64, prev: EventId) -> EventHeader {
        EventHeader {
            space: SpaceId([9; 16]),
            author: DeviceKey::from_secret([2; 32]).author(),
            seq,
            prev,
            hlc: 42,
            encoding: BodyEncoding::Plain,
        }
    }

    #[test]
    fn build_decode_round_trip() {
        let key = DeviceKey::from_secret([2; 32]);
        let event = SignedEvent::build(&key, &header(1, EventId::ZERO), Bytes::from_static(b"body")).unwrap();
        assert_eq!(event.verify_signature(), Ok(()));
        let back = SignedEvent::from_stored(&event.to_stored()).unwrap();
        assert_eq!(back, event);
        let wire = SignedEvent::from_wire(event.to_wire()).unwrap();
        assert_eq!(wire.id, event.id);
        assert_eq!(&wire.body[..], b"body");
    }

    #[test]
    fn too_large_is_refused_when_building() {
        let key = DeviceKey::from_secret([2; 32]);
        let body = Bytes::from(vec![0u8; EVENT_BYTES_MAX]);
        assert!(matches!(SignedEvent::build(&key, &header(1, EventId::ZERO), body), Err(EventError::TooLarge { .. })));
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let key = DeviceKey::from_secret([2; 32]);
        let event = SignedEvent::build(&key, &header(1, EventId::ZERO), Bytes::from_static(b"some body")).unwrap();
        let stored = event.to_stored();
        for i in 0..stored.len() {
            for bit in [0x01u8, 0x80] {
                let mut flipped = stored.clone();
                flipped[i] ^= bit;
                let ok = SignedEvent::from_stored(&flipped).and_then(|e| e.verify_signature());
                assert!(ok.is_err(), "flip of bit {bit:#x} in byte {i} was not detected");
            }
        }
    }
}
