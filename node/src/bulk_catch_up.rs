//! Bulk catch-up: while a node is far behind a peer, or a flood of full batches arrives on a
//! live stream, projections are deferred and the case views are folded in memory and written
//! once at the end (`Store::begin_bulk_catch_up`). Used by both directions of sync: the client's
//! pulls and the server's pushed streams.

use std::sync::Arc;

use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX};
use casesync_proto::v1 as pb;

use crate::shared::Shared;

/// Far behind a peer (at least this many events, and at least as many as held): catch up in
/// bulk, folding the case views in memory while storing and writing them once at the end
/// (see `Store::begin_bulk_catch_up`).
pub const BULK_CATCH_UP_EVENTS_MIN: u64 = 10_000;

/// Whether catching up `missing` events on top of `held` is cheaper as a bulk catch-up.
pub fn worth_bulk_catch_up(missing: u64, held: u64) -> bool {
    missing >= BULK_CATCH_UP_EVENTS_MIN && missing >= held
}

/// A bulk catch-up in progress: projections are deferred until [`BulkCatchUp::finish`] (or,
/// if the session fails first, until the guard is dropped, which completes the views from what
/// arrived in the background).
pub struct BulkCatchUp {
    shared: Option<Arc<Shared>>,
}

impl BulkCatchUp {
    /// Starts one when `missing` events on top of what is held make it worthwhile.
    pub fn start_if_worth_it(shared: &Arc<Shared>, missing: u64) -> BulkCatchUp {
        let held = shared.store.vector(&shared.space).total();
        if shared.relay || !worth_bulk_catch_up(missing, held) {
            return BulkCatchUp { shared: None };
        }
        tracing::info!(missing, held, "far behind: catching up in bulk, case views completed at the end");
        shared.store.begin_bulk_catch_up();
        shared.note_bulk_catch_up();
        BulkCatchUp { shared: Some(shared.clone()) }
    }

    /// Starts one on the ingest thread, in order with the ingests queued before and after it.
    pub async fn start_on_ingest_thread(shared: &Arc<Shared>) -> anyhow::Result<BulkCatchUp> {
        let store = shared.store.clone();
        shared.ingest.run(move || store.begin_bulk_catch_up()).await?;
        shared.note_bulk_catch_up();
        Ok(BulkCatchUp { shared: Some(shared.clone()) })
    }

    /// Whether projections are deferred by this catch-up.
    pub fn is_active(&self) -> bool {
        self.shared.is_some()
    }

    /// Ends the catch-up: completes the case views (blocking thread) and wakes watchers.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        if let Some(shared) = self.shared.take() {
            // On the ingest thread, after every batch of the catch-up, and in its malloc arena.
            let store = shared.store.clone();
            let ended = shared.ingest.run(move || store.end_bulk_catch_up()).await;
            shared.note_bulk_catch_up_ended();
            ended??;
            shared.notify(shared.store.next_position());
        }
        Ok(())
    }
}

impl Drop for BulkCatchUp {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            // The session failed before catching up: complete the views from what arrived.
            let store = shared.store.clone();
            std::thread::spawn(move || {
                if let Err(error) = store.end_bulk_catch_up() {
                    tracing::error!(%error, "completing the case views after a bulk catch-up failed");
                }
                shared.note_bulk_catch_up_ended();
                shared.notify(shared.store.next_position());
            });
        }
    }
}

/// Full batches in a row on a live stream after which the rest of that flood is caught up in
/// bulk (a node that was current when a peer started sending a large backlog, e.g. through a
/// relay while another device uploads its log).
pub const FLOOD_FULL_BATCHES: u32 = 10;

/// Whether a received batch was cut by the sender's limits: more was waiting behind it.
pub fn batch_is_full(batch: &pb::EventBatch) -> bool {
    let bytes: usize = batch.events.iter().map(|e| e.event.len() + e.signature.len()).sum();
    batch.events.len() >= BATCH_EVENTS_MAX || bytes >= BATCH_BYTES_MAX / 2
}

/// During a bulk catch-up, every this many full batches in a row, whether they still bring new
/// events is checked: a replay of what is held ends the catch-up.
pub const FLOOD_RECHECK_BATCHES: u32 = 16;

/// How long a bulk catch-up waits for the next batch before it ends (its views completed): a
/// peer that announces a backlog, or floods, and then sends nothing holds no node in bulk.
pub const BULK_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a batch brings events this node lacks: its first or last event lies beyond what is
/// held of its author. A peer replaying what this node holds (its own events included) sends
/// full batches that bring nothing: they never start or prolong a bulk catch-up.
pub fn brings_new_events(shared: &Shared, batch: &pb::EventBatch) -> bool {
    let held = shared.store.vector(&shared.space);
    let ends = [batch.events.first(), batch.events.last()];
    ends.into_iter().flatten().any(|message| {
        SignedEvent::from_wire(message.clone()).is_ok_and(|event| event.header.seq > held.get(&event.header.author))
    })
}

/// Watches the batches of one incoming stream and runs a bulk catch-up while a flood lasts:
/// from the [`FLOOD_FULL_BATCHES`]th full batch of new events in a row to the first batch that
/// is not full (the sender had nothing more waiting), to [`BULK_IDLE_MAX`] without a batch, or to
/// a run of full batches that bring nothing new.
/// Commands wait meanwhile (bounded), as in any bulk catch-up; the views are complete again once
/// the flood is stored.
#[derive(Default)]
pub struct FloodWatch {
    full_in_a_row: u32,
    bulk: Option<BulkCatchUp>,
}

impl FloodWatch {
    /// A watch already in a bulk catch-up (a session that started far behind).
    pub fn with(bulk: BulkCatchUp) -> FloodWatch {
        FloodWatch { full_in_a_row: 0, bulk: bulk.is_active().then_some(bulk) }
    }

    /// Before a batch is handed to the ingest thread: starts a bulk catch-up when the flood is
    /// long enough. In order with the ingests on that thread, so the batch is folded in bulk.
    /// Returns true when the flood turned out to be a replay of what this node holds: the caller
    /// lands what it handed on and ends the bulk catch-up ([`FloodWatch::finish`]). Whether a
    /// batch brings new events is asked only where it decides something (the batch that would
    /// start a catch-up, and every [`FLOOD_RECHECK_BATCHES`]th during one): it takes the store's
    /// writer lock, which the ingest thread holds while it commits.
    pub async fn before(&mut self, shared: &Arc<Shared>, batch: &pb::EventBatch) -> anyhow::Result<bool> {
        if !batch_is_full(batch) {
            self.full_in_a_row = 0;
            return Ok(false);
        }
        self.full_in_a_row = self.full_in_a_row.saturating_add(1);
        let deciding = match self.bulk {
            None => self.full_in_a_row >= FLOOD_FULL_BATCHES && !shared.relay,
            Some(_) => self.full_in_a_row.is_multiple_of(FLOOD_RECHECK_BATCHES),
        };
        if !deciding {
            return Ok(false);
        }
        if !brings_new_events(shared, batch) {
            self.full_in_a_row = 0;
            return Ok(self.bulk.is_some());
        }
        if self.bulk.is_none() {
            tracing::info!("a flood of events: catching up in bulk, case views completed when it ends");
            self.bulk = Some(BulkCatchUp::start_on_ingest_thread(shared).await?);
        }
        Ok(false)
    }

    /// Whether a bulk catch-up is running.
    pub fn in_bulk(&self) -> bool {
        self.bulk.is_some()
    }

    /// Ends a bulk catch-up in progress, if any.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        match self.bulk.take() {
            Some(bulk) => bulk.finish().await,
            None => Ok(()),
        }
    }
}
