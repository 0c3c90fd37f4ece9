//! Column families and key encodings. All integers are big-endian so keys sort numerically.
//! `docs/log-format.md` draws the same layout byte by byte.

use crate::model::ids::{AuthorId, CaseId, EntryId, KeyId, SpaceId};
use crate::model::merge::CasePart;

/// Events: space(16) author(32) seq(8) -> signature(64) event bytes.
pub const CF_EVENTS: &str = "events";
/// Local arrival index, one record per run of consecutive events of one author stored together:
/// position of the first(8) -> space(16) author(32) first seq(8) count(8). Format 3 wrote one
/// record per event without the count (read as a run of one).
pub const CF_ARRIVAL: &str = "arrival";
/// Heads: space(16) author(32) -> seq(8) id(32).
pub const CF_HEADS: &str = "heads";
/// Metadata: named keys (format version, next position, hlc, watermarks, fences).
pub const CF_META: &str = "meta";
/// Fork evidence: space(16) author(32) seq(8) id(32) -> signature(64) event bytes.
pub const CF_FORKS: &str = "forks";
/// Case projections, one record per part: space(16) case(16) 0x00 -> `store.StatusRegister`;
/// ... 0x01 field name -> `store.Register`; ... 0x02 entry(16) -> `store.Record` (see [`CasePart`]).
/// Written as merge operands (format 3): every open needs `storage::families::column_family_options`.
/// The name is new in format 3 so that a build without the merge operator refuses the store at
/// open (an unknown column family) instead of replaying its WAL without it.
pub const CF_CASES: &str = "case_parts";
/// Formats 1 and 2 kept case projections here (plain records); dropped by the upgrade.
pub const CF_CASES_LEGACY: &str = "cases";
/// Case history index: space(16) case(16) author(32) seq(8) -> hlc(8).
pub const CF_CASE_EVENTS: &str = "case_events";
/// Known devices of a space: space(16) author(32) -> device name (UTF-8).
pub const CF_MEMBERS: &str = "members";

/// Every column family, in creation order.
pub const ALL_CFS: [&str; 8] =
    [CF_EVENTS, CF_ARRIVAL, CF_HEADS, CF_META, CF_FORKS, CF_CASES, CF_CASE_EVENTS, CF_MEMBERS];

/// Meta key of the on-disk format version (u32).
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
/// Meta key of the next arrival position (u64).
pub const META_NEXT_POSITION: &[u8] = b"next_position";
/// Meta key of the highest hlc seen (u64).
pub const META_MAX_HLC: &[u8] = b"max_hlc";

/// Meta key of a space's projection watermark (encoded version vector).
pub fn meta_watermark(space: &SpaceId) -> Vec<u8> {
    [b"watermark/".as_slice(), space.as_bytes()].concat()
}

/// Meta key of a space's state hash as last computed in full (by a rebuild or a bulk load), with
/// the projection watermark it holds for.
pub fn meta_state_hash(space: &SpaceId) -> Vec<u8> {
    [b"state_hash/".as_slice(), space.as_bytes()].concat()
}

/// Prefix of a space's markers of data keys its views miss bodies of.
pub fn meta_missed_key_prefix(space: &SpaceId) -> Vec<u8> {
    [b"missed_key/".as_slice(), space.as_bytes()].concat()
}

/// Meta key marking that a fold of `space` met a body sealed under `key` without holding it
/// (value empty).
pub fn meta_missed_key(space: &SpaceId, key: &KeyId) -> Vec<u8> {
    [b"missed_key/".as_slice(), space.as_bytes(), key.as_bytes()].concat()
}

/// Meta key of a fence: the highest seq of an author seen at a peer.
pub fn meta_fence(space: &SpaceId, author: &AuthorId) -> Vec<u8> {
    [b"fence/".as_slice(), space.as_bytes(), author.as_bytes()].concat()
}

/// Prefix of the membership index in `meta`.
pub const META_MEMBERSHIP_PREFIX: &[u8] = b"membership/";

/// Meta key marking a stored membership event (value empty): read at open to judge the space's
/// membership without scanning its log.
pub fn meta_membership(space: &SpaceId, author: &AuthorId, seq: u64) -> Vec<u8> {
    [META_MEMBERSHIP_PREFIX, space.as_bytes(), author.as_bytes(), &seq.to_be_bytes()].concat()
}

/// Key of an event (also the value of an arrival record).
pub fn event_key(space: &SpaceId, author: &AuthorId, seq: u64) -> [u8; 56] {
    let mut key = [0u8; 56];
    key[..16].copy_from_slice(space.as_bytes());
    key[16..48].copy_from_slice(author.as_bytes());
    key[48..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Splits an event key.
pub fn parse_event_key(key: &[u8]) -> Option<(SpaceId, AuthorId, u64)> {
    if key.len() != 56 {
        return None;
    }
    let space = SpaceId::from_slice(&key[..16]).ok()?;
    let author = AuthorId::from_slice(&key[16..48]).ok()?;
    let seq = u64::from_be_bytes(key[48..].try_into().ok()?);
    Some((space, author, seq))
}

/// Value of an arrival record: the run's first event key and its length.
pub fn arrival_run_value(space: &SpaceId, author: &AuthorId, first: u64, count: u64) -> [u8; 64] {
    let mut value = [0u8; 64];
    value[..56].copy_from_slice(&event_key(space, author, first));
    value[56..].copy_from_slice(&count.to_be_bytes());
    value
}

/// Splits an arrival record's value: (space, author, first seq, count).
pub fn parse_arrival_run(value: &[u8]) -> Option<(SpaceId, AuthorId, u64, u64)> {
    let (space, author, first) = parse_event_key(value.get(..56)?)?;
    let count = match value.len() {
        56 => 1,
        64 => be_u64(&value[56..])?,
        _ => return None,
    };
    Some((space, author, first, count))
}

/// Key of a head (and of a member).
pub fn author_key(space: &SpaceId, author: &AuthorId) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(space.as_bytes());
    key[16..].copy_from_slice(author.as_bytes());
    key
}

/// Key of a case.
pub fn case_key(space: &SpaceId, case: &CaseId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(space.as_bytes());
    key[16..].copy_from_slice(case.as_bytes());
    key
}

/// Length of the `cases` key prefix that names one case: space(16) case(16).
pub const CASE_PREFIX_BYTES: usize = 32;

/// Tag byte of [`CasePart::Status`] keys.
pub const CASE_PART_STATUS: u8 = 0;
/// Tag byte of [`CasePart::Field`] keys.
pub const CASE_PART_FIELD: u8 = 1;
/// Tag byte of [`CasePart::Entry`] keys.
pub const CASE_PART_ENTRY: u8 = 2;

/// Key of a case part: space(16) case(16) tag(1) then the field name or the entry id.
pub fn case_part_key(space: &SpaceId, case: &CaseId, part: &CasePart) -> Vec<u8> {
    let mut key = Vec::with_capacity(33 + 32);
    key.extend_from_slice(&case_key(space, case));
    match part {
        CasePart::Status => key.push(CASE_PART_STATUS),
        CasePart::Field(name) => {
            key.push(CASE_PART_FIELD);
            key.extend_from_slice(name.as_bytes());
        }
        CasePart::Entry(entry) => {
            key.push(CASE_PART_ENTRY);
            key.extend_from_slice(entry.as_bytes());
        }
    }
    key
}

/// The case and part of a `cases` key.
pub fn parse_case_part_key(key: &[u8]) -> Option<(CaseId, CasePart)> {
    let case = CaseId::from_slice(key.get(16..32)?).ok()?;
    let rest = key.get(33..)?;
    let part = match *key.get(32)? {
        CASE_PART_STATUS if rest.is_empty() => CasePart::Status,
        CASE_PART_FIELD => CasePart::Field(std::str::from_utf8(rest).ok()?.into()),
        CASE_PART_ENTRY => CasePart::Entry(EntryId::from_slice(rest).ok()?),
        _ => return None,
    };
    Some((case, part))
}

/// Key of a case history record.
pub fn case_event_key(space: &SpaceId, case: &CaseId, author: &AuthorId, seq: u64) -> [u8; 72] {
    let mut key = [0u8; 72];
    key[..32].copy_from_slice(&case_key(space, case));
    key[32..64].copy_from_slice(author.as_bytes());
    key[64..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// History index entries one record holds at most.
pub const HISTORY_ENTRIES_PER_RECORD: usize = 256;

/// The value of a history record: the hlc of the event its key names, then (author(32) seq(8)
/// hlc(8)) of each further event of the case written with it (format 5; a record of one entry
/// is the format 4 record).
pub fn history_record_value(first_hlc: u64, rest: &[(AuthorId, u64, u64)]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + 48 * rest.len());
    value.extend_from_slice(&first_hlc.to_be_bytes());
    for (author, seq, hlc) in rest {
        value.extend_from_slice(author.as_bytes());
        value.extend_from_slice(&seq.to_be_bytes());
        value.extend_from_slice(&hlc.to_be_bytes());
    }
    value
}

/// The (author, seq, hlc) entries of one history record of `case`, or `None` if it is malformed.
pub fn parse_history_record(key: &[u8], value: &[u8]) -> Option<Vec<(AuthorId, u64, u64)>> {
    if key.len() != 72 || value.len() < 8 || !(value.len() - 8).is_multiple_of(48) {
        return None;
    }
    let mut entries = Vec::with_capacity(1 + (value.len() - 8) / 48);
    entries.push((AuthorId::from_slice(&key[32..64]).ok()?, be_u64(&key[64..])?, be_u64(&value[..8])?));
    for entry in value[8..].chunks_exact(48) {
        entries.push((AuthorId::from_slice(&entry[..32]).ok()?, be_u64(&entry[32..40])?, be_u64(&entry[40..])?));
    }
    Some(entries)
}

/// Reads a big-endian u64 from exactly 8 bytes.
pub fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The smallest key greater than every key starting with `prefix` (for upper bounds).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_records_hold_one_event_or_several_and_refuse_other_lengths() {
        let (space, case) = (SpaceId([1; 16]), CaseId([2; 16]));
        let key = case_event_key(&space, &case, &AuthorId([3; 32]), 7);
        let rest = [(AuthorId([3; 32]), 9, 1_000), (AuthorId([4; 32]), 1, 999)];
        let value = history_record_value(500, &rest);
        assert_eq!(value.len(), 8 + 2 * 48);
        let expected = vec![(AuthorId([3; 32]), 7, 500), rest[0], rest[1]];
        assert_eq!(parse_history_record(&key, &value), Some(expected));
        // A format 4 record: the key's event and its hlc.
        assert_eq!(parse_history_record(&key, &42u64.to_be_bytes()), Some(vec![(AuthorId([3; 32]), 7, 42)]));
        assert_eq!(history_record_value(42, &[]), 42u64.to_be_bytes());
        for bad in [&value[..7], &value[..8 + 47], &value[..value.len() - 1]] {
            assert_eq!(parse_history_record(&key, bad), None, "{} bytes", bad.len());
        }
        assert_eq!(parse_history_record(&key[..71], &value), None);
    }

    #[test]
    fn event_keys_round_trip_and_sort_by_seq() {
        let space = SpaceId([1; 16]);
        let author = AuthorId([2; 32]);
        let key = event_key(&space, &author, 258);
        assert_eq!(parse_event_key(&key), Some((space, author, 258)));
        assert!(event_key(&space, &author, 255) < event_key(&space, &author, 256));
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }
}
