//! Sealed bodies a fold could not open, remembered by their data key: a member's node may hold
//! events sealed under a key whose wrap has not reached it yet. Each fold's misses are written
//! with the watermark that claims its events (same batch), as `missed_key/<space><key id>` in
//! `meta`; when the key arrives, the space's views are folded again (`Store::refresh_keys`).

use rocksdb::WriteBatch;

use crate::codec::keys::{meta_missed_key, meta_missed_key_prefix, CF_META};
use crate::error::StoreError;
use crate::model::ids::{KeyId, SpaceId};
use crate::storage::Db;

/// Adds to `batch` a marker for each key the folds of `space` missed since the last call.
pub(crate) fn stage_missed(db: &Db, batch: &mut WriteBatch, space: &SpaceId) {
    for key in db.keys().take_missed(space) {
        batch.put_cf(db.cf(CF_META), meta_missed_key(space, &key), []);
    }
}

/// Adds to `batch` the removal of every marker of `space` (a rebuild folds everything again).
pub(crate) fn stage_clear(db: &Db, batch: &mut WriteBatch, space: &SpaceId) {
    let prefix = meta_missed_key_prefix(space);
    let mut end = prefix.clone();
    end.push(0xff);
    batch.delete_range_cf(db.cf(CF_META), prefix, end);
}

/// The keys a space's views miss bodies of.
pub(crate) fn missed(db: &Db, space: &SpaceId) -> Result<Vec<KeyId>, StoreError> {
    let prefix = meta_missed_key_prefix(space);
    let mut out = Vec::new();
    for item in db.rocks().prefix_iterator_cf(db.cf(CF_META), &prefix) {
        let (key, _) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        if let Ok(id) = KeyId::from_slice(&key[prefix.len()..]) {
            out.push(id);
        }
    }
    Ok(out)
}
