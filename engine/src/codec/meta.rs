//! Metadata records: version vectors (a projection watermark, the vector a state hash holds
//! for) and the state hash record.

use crate::codec::keys::be_u64;
use crate::model::ids::AuthorId;
use crate::model::vector_clock::VersionVector;

/// Encodes a version vector for metadata: (author(32) seq(8))*.
pub fn encode_vector(vector: &VersionVector) -> Vec<u8> {
    let mut out = Vec::with_capacity(vector.len() * 40);
    for (author, seq) in vector.iter() {
        out.extend_from_slice(author.as_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

/// Decodes [`encode_vector`]'s bytes.
pub fn decode_vector(bytes: &[u8]) -> Option<VersionVector> {
    if !bytes.len().is_multiple_of(40) {
        return None;
    }
    bytes
        .chunks_exact(40)
        .map(|chunk| Some((AuthorId::from_slice(&chunk[..32]).ok()?, be_u64(&chunk[32..])?)))
        .collect()
}

/// The version of the state hash record: its layout and the state hash's definition (v3: case
/// digests are SHA-256).
pub const STATE_HASH_RECORD_VERSION: u8 = 3;

/// Encodes a state hash record: version(1) hash(32) then the watermark it holds for.
pub fn encode_state_hash(hash: &[u8; 32], vector: &VersionVector) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + 32 + vector.len() * 40);
    value.push(STATE_HASH_RECORD_VERSION);
    value.extend_from_slice(hash);
    value.extend_from_slice(&encode_vector(vector));
    value
}

/// Decodes a state hash record of the current version: the hash and the watermark it holds for.
/// `None` for a record of another version (a hash of an older definition, to be recomputed) or
/// one that does not decode.
pub fn decode_state_hash(value: &[u8]) -> Option<([u8; 32], VersionVector)> {
    let (&version, rest) = value.split_first()?;
    if version != STATE_HASH_RECORD_VERSION {
        return None;
    }
    let hash = <[u8; 32]>::try_from(rest.get(..32)?).ok()?;
    Some((hash, decode_vector(rest.get(32..)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_state_hash_records_round_trip_and_odd_bytes_are_refused() {
        let vector: VersionVector = [(AuthorId([1; 32]), 7), (AuthorId([2; 32]), 9)].into_iter().collect();
        assert_eq!(decode_vector(&encode_vector(&vector)), Some(vector.clone()));
        assert_eq!(decode_vector(&[0; 39]), None);
        let record = encode_state_hash(&[5; 32], &vector);
        assert_eq!(decode_state_hash(&record), Some(([5; 32], vector)));
        let mut older = record.clone();
        older[0] = STATE_HASH_RECORD_VERSION - 1;
        assert_eq!(decode_state_hash(&older), None);
        assert_eq!(decode_state_hash(&record[..20]), None);
    }
}
