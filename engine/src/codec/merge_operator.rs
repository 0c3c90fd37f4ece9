//! The `case_parts` family's merge operator: RocksDB joins a stored case part with merge
//! operands (each a part state folded from other events) at read, flush or compaction.

use crate::codec::keys::parse_case_part_key;
use crate::codec::wire;
use crate::model::merge::CaseState;

/// The name of the `cases` column family's merge operator (see [`merge_case_part`]).
pub const CASE_PART_MERGE: &str = "casesync.case_part.join.v1";

/// The `cases` column family's merge operator: joins a stored case part with merge operands (each
/// a part state folded from other events, see [`Fold::deltas`]). The join is commutative and
/// associative, so RocksDB may combine operands in any grouping, at read, flush or compaction.
/// Returns `None` (RocksDB reports corruption) for a key or value this build did not write.
pub fn merge_case_part(key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    if parse_case_part_key(key).is_none() {
        tracing::error!(key = %hex::encode(key), "merge of a malformed case key");
        return None;
    }
    if existing.is_none() && operands.len() == 1 {
        // One part state and nothing to join it with (every part of a rebuild or a bulk
        // catch-up, at read and at its first compaction): the join is the part itself. It is
        // decoded, and checked, wherever it is read.
        return operands.iter().next().map(<[u8]>::to_vec);
    }
    join_case_part_values(key, existing.into_iter().chain(operands))
}

/// Joins encoded states of one case part (the part `key` names), as the merge operator does:
/// the join of all of them, encoded; `None` for a key or value this build did not write.
pub fn join_case_part_values<'a>(key: &[u8], values: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let Some((case, part)) = parse_case_part_key(key) else {
        tracing::error!(key = %hex::encode(key), "merge of a malformed case key");
        return None;
    };
    let mut state = CaseState::new(case);
    for (index, value) in values.into_iter().enumerate() {
        let joined = if index == 0 {
            wire::decode_case_part(&mut state, &part, value)
        } else {
            let mut other = CaseState::new(case);
            wire::decode_case_part(&mut other, &part, value).map(|()| state.join_part(other, &part))
        };
        if let Err(error) = joined {
            tracing::error!(case = %case.short(), %error, "merge of an undecodable case part");
            return None;
        }
    }
    wire::encode_case_part(&state, &part)
}
