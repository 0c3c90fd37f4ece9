//! The store's ingest of events from other nodes: each batch checked against the stored chains
//! and the membership (`log/ingest.rs`), committed in one synced write (two when it carries
//! membership events beside other authors' runs), and the views folded again when its
//! membership changed what counts.

use casesync_proto::v1 as pb;

use super::Store;
use crate::error::StoreError;
use crate::log::ingest::{self, IngestReport, PreparedBatch};
use crate::log::CommitSummary;
use crate::model::event::SignedEvent;
use crate::model::ids::SpaceId;

impl Store {
    /// Ingests a batch of events from another node (see [`crate::log::ingest`] for the rules).
    /// Returns `Err` only when storage fails; refusals are listed in the report.
    pub fn ingest(&self, space: &SpaceId, batch: Vec<pb::SignedEvent>) -> Result<IngestReport, StoreError> {
        self.ingest_prepared(PreparedBatch::new(*space, batch))
    }

    /// [`Store::ingest`] of a batch prepared beforehand (one synced write for all its events).
    pub fn ingest_prepared(&self, prepared: PreparedBatch) -> Result<IngestReport, StoreError> {
        self.ingest_prepared_with(prepared, None)
    }

    /// [`Store::ingest_prepared`] that calls `announce` with the commit as soon as the accepted
    /// events are written and readable, before waiting for the disk; still durable when it
    /// returns (and until then, the writer stays busy). For events of other authors relayed from a
    /// peer: their author wrote them durably before anyone could receive them, so a crash
    /// between the announcement and the sync loses nothing the network lacks (they come again).
    /// Never for this device's own events coming back from a peer: those must be durable before
    /// anything acts on them. `announce` is not called when nothing is accepted or during a bulk
    /// catch-up (which announces on return).
    pub fn ingest_prepared_announcing(
        &self,
        prepared: PreparedBatch,
        mut announce: impl FnMut(&CommitSummary),
    ) -> Result<IngestReport, StoreError> {
        self.ingest_prepared_with(prepared, Some(&mut announce))
    }

    fn ingest_prepared_with(
        &self,
        mut prepared: PreparedBatch,
        mut announce: Option<&mut dyn FnMut(&CommitSummary)>,
    ) -> Result<IngestReport, StoreError> {
        if let Some(membership) = prepared.split_membership_runs() {
            let mut report = self.ingest_checked(membership, announce.as_mut().map(|a| &mut **a as _))?;
            report.absorb(self.ingest_checked(prepared, announce)?);
            return Ok(report);
        }
        self.ingest_checked(prepared, announce)
    }

    /// Checks and commits one prepared batch (one synced write).
    fn ingest_checked(
        &self,
        prepared: PreparedBatch,
        announce: Option<&mut dyn FnMut(&CommitSummary)>,
    ) -> Result<IngestReport, StoreError> {
        let mut writer = self.lock_writer();
        let ingest::CheckedBatch { space, accepted, mut report, refold } =
            ingest::check_batch(&self.db, &mut writer.log, prepared)?;
        report.accepted = accepted.len() as u64;
        report.commit = writer.commit_events(&self.db, self.options.projections, &space, &accepted, announce)?;
        if refold && self.options.projections {
            // A revocation (or a change of role) arrived after events it removes were folded:
            // the views are folded again from the log, judged by the new membership.
            tracing::info!(space = %space.short(), "membership changed what counts: folding the views again");
            writer.rebuild(&self.db, &space)?;
        }
        if accepted.iter().any(SignedEvent::is_membership) {
            self.refresh_keys_locked(&mut writer)?;
        }
        Ok(report)
    }
}
