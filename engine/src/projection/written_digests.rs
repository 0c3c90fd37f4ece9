//! The digests of the cases a bulk fold writes out, and the state hash they give.

use rocksdb::WriteBatch;

use super::queries;
use crate::codec::keys::{meta_state_hash, CF_META};
use crate::codec::meta::encode_state_hash;
use crate::error::StoreError;
use crate::model::ids::{CaseId, SpaceId};
use crate::model::merge::CaseState;
use crate::model::state_hash::{CaseDigest, CaseDigester, StateHasher};
use crate::model::vector_clock::VersionVector;
use crate::storage::Db;

/// Digests a bulk fold over empty projections (a rebuild, or a bulk catch-up or import into a
/// space with none) takes of the case states it writes out, so that it knows the state hash of
/// what it wrote without reading it all back. A case written out once was complete as written
/// (nothing was stored before it, and no later event touched it); one written out again (touched
/// after it was) is stored as several merge operands and read back. Bounded: past
/// [`WRITTEN_DIGESTS_MAX`] cases written, the hash is computed by a scan instead.
pub(crate) struct WrittenDigests {
    pub(crate) written: Vec<(CaseId, CaseDigest)>,
    digester: CaseDigester,
    /// False once the bound was passed (`written` is then emptied).
    complete: bool,
}

/// Cases a [`WrittenDigests`] notes at most (48 bytes each: 24 MiB).
const WRITTEN_DIGESTS_MAX: usize = if cfg!(test) { 64 } else { 1 << 19 };

impl WrittenDigests {
    pub(crate) fn new() -> WrittenDigests {
        WrittenDigests { written: Vec::new(), digester: CaseDigester::default(), complete: true }
    }

    /// Adds what another writer of the same bulk fold noted.
    pub(crate) fn extend(&mut self, other: WrittenDigests) {
        if !(self.complete && other.complete) || self.written.len() + other.written.len() > WRITTEN_DIGESTS_MAX {
            self.complete = false;
            self.written = Vec::new();
            return;
        }
        self.written.extend(other.written);
    }

    /// Notes a case state as it is written out.
    pub(crate) fn note(&mut self, state: &CaseState) {
        if !self.complete {
            return;
        }
        if self.written.len() >= WRITTEN_DIGESTS_MAX {
            self.complete = false;
            self.written = Vec::new();
            return;
        }
        self.written.push((state.id, self.digester.digest(state)));
    }

    /// The state hash of the space once everything noted is written: each case written once by
    /// its digest, each case written several times read back (all by a scan when more than a
    /// sixteenth of them were).
    pub(crate) fn state_hash(self, db: &Db, space: &SpaceId) -> Result<String, StoreError> {
        let mut written = self.written;
        written.sort_unstable_by_key(|(case, _)| *case);
        let cases = written.chunk_by(|a, b| a.0 == b.0);
        let rewritten = cases.clone().filter(|same| same.len() > 1).count();
        if !self.complete || rewritten * 16 > written.len() {
            return queries::scanned_state_hash(db, space);
        }
        let mut hasher = StateHasher::new();
        for same in cases {
            match same {
                [(case, digest)] => hasher.add_digest(case, digest),
                [(case, _), ..] => {
                    if let Some(digest) = queries::case_digest(db, space, case)? {
                        hasher.add_digest(case, &digest);
                    }
                }
                [] => {}
            }
        }
        Ok(hasher.finish())
    }
}

/// Stages the state hash of a space's projections at the watermark `vector`, to be committed with
/// that watermark ([`Store::state_hash`] returns it while the watermark stays there).
pub(crate) fn stage_state_hash(db: &Db, batch: &mut WriteBatch, space: &SpaceId, vector: &VersionVector, hash: &str) {
    let Ok(hash) = <[u8; 32]>::try_from(hex::decode(hash).unwrap_or_default()) else {
        return;
    };
    batch.put_cf(db.cf(CF_META), meta_state_hash(space), encode_state_hash(&hash, vector));
}
