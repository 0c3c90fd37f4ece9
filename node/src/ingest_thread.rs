//! One long-lived thread that runs every ingest of a node, in the order submitted.
//!
//! Ingests used to run on tokio's blocking pool, a different thread each time. glibc gives each
//! thread its own malloc arena, so a bulk catch-up's in-memory fold (thousands of case states,
//! allocated by whichever thread ran the batch and freed by another) fragmented across a dozen
//! arenas: at 16k cases held node B peaked at 323 MiB (228 MiB with one arena). On one thread
//! the fold's memory is reused in place: 16k cases in 215 MiB, so the node holds twice the cases
//! it did in its 256 MiB budget. (The binaries now allocate with mimalloc, whose heaps are per
//! thread too: one thread still keeps the fold's memory in one heap.)

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use casesync_engine::log::ingest::PreparedBatch;
use casesync_engine::model::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs queued for the ingest thread before `submit` waits.
const QUEUED_JOBS_MAX: usize = 4;

/// Why a job did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum IngestThreadError {
    /// The thread is gone (the node is shutting down).
    #[error("the ingest thread has stopped")]
    Stopped,
    /// The job panicked (a bug; the thread goes on with the next job).
    #[error("an ingest panicked")]
    Panicked,
}

/// Handle to the thread; dropping the last handle ends it once its queue is empty.
pub struct IngestThread {
    jobs: mpsc::Sender<Job>,
    /// Room for received events (the store's `MemoryBudget::received_bytes`), one permit a KiB:
    /// past it a stream reads no more from its peer (HTTP/2 flow control holds the peer back)
    /// until ingests free room, so many streams of large events cannot grow a node's memory
    /// without bound.
    budget: Arc<Semaphore>,
    /// The budget's size, in KiB.
    budget_kib: usize,
}

impl IngestThread {
    /// Starts the thread, with room for `bytes` of received events (at least 1 KiB).
    pub fn start(bytes: usize) -> std::io::Result<IngestThread> {
        // Permits are taken as u32 at most: no budget needs more than 4 TiB of them.
        let kib = (bytes / 1024).clamp(1, u32::MAX as usize);
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUED_JOBS_MAX);
        std::thread::Builder::new().name("casesync-ingest".into()).spawn(move || {
            while let Some(job) = queue.blocking_recv() {
                // A panicking job drops its reply sender: its caller sees `Panicked`.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
        Ok(IngestThread { jobs, budget: Arc::new(Semaphore::new(kib)), budget_kib: kib })
    }

    /// KiB of received events the pipelines may still take before they wait.
    pub fn room_kib(&self) -> usize {
        self.budget.available_permits()
    }

    /// Queues `f` (waiting while the queue is full) and returns where its result will arrive.
    pub async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Pending<T>, IngestThreadError> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        self.jobs.send(job).await.map_err(|_| IngestThreadError::Stopped)?;
        Ok(Pending { result })
    }

    /// Runs `f` on the thread and waits for its result.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, IngestThreadError> {
        self.submit(f).await?.wait().await
    }
}

/// The result of a submitted job, still to come.
pub struct Pending<T> {
    result: oneshot::Receiver<T>,
}

impl<T> Pending<T> {
    /// Waits for the job to finish.
    pub async fn wait(self) -> Result<T, IngestThreadError> {
        self.result.await.map_err(|_| IngestThreadError::Panicked)
    }

    /// The result if the job has ended (its `Err` if it panicked), without waiting; once taken,
    /// the `Pending` is spent.
    fn try_take(&mut self) -> Option<Result<T, IngestThreadError>> {
        match self.result.try_recv() {
            Ok(result) => Some(Ok(result)),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(IngestThreadError::Panicked)),
        }
    }
}

/// Events a [`Pipeline`] joins into one ingest while the ingest before it runs: one synced
/// write (one fsync) for several received batches when the store is the bottleneck. Measured in
/// the full sync of 1M events, three interleaved pairs: 4 batches 233k, 233k, 266k events/s
/// (node B 181-185 MiB), 8 batches 255k, 265k, 282k (206-216 MiB); 16 batches gained a little
/// more but took node B to 245-270 MiB, past its budget.
pub const COALESCED_EVENTS_MAX: usize = 8 * BATCH_EVENTS_MAX;

/// How long batches wait behind an ingest in flight once their stream goes quiet before the
/// stream lands them ([`Pipeline::holds_waiting`]).
pub const WAITING_LANDS_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Bytes a [`Pipeline`] joins into one ingest: as many batches as [`COALESCED_EVENTS_MAX`] counts,
/// of the largest size (events of up to 1 MiB each would otherwise let 8192 of them wait).
pub const COALESCED_BYTES_MAX: usize = 8 * BATCH_BYTES_MAX;

/// The ingests of one incoming stream. Batches arrive prepared (decoded and hashed by the
/// receiving task); at most one ingest runs on the thread while the caller receives the next
/// ones. Batches that arrive while it runs wait and are joined (up to [`COALESCED_EVENTS_MAX`]
/// events and [`COALESCED_BYTES_MAX`] bytes) into the next ingest. Ingests run in arrival order,
/// and memory stays bounded: one ingest in the store and at most that much waiting per stream,
/// and at most the thread's room for received events over all its streams.
pub struct Pipeline<T> {
    job: Arc<dyn Fn(PreparedBatch) -> T + Send + Sync>,
    in_flight: Option<Pending<T>>,
    waiting: Option<PreparedBatch>,
    /// The room the waiting batches hold in the thread's budget (an ingest frees its room on
    /// the thread as soon as it ends).
    waiting_room: Vec<OwnedSemaphorePermit>,
}

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline whose every ingest runs `job` on the ingest thread.
    pub fn new(job: impl Fn(PreparedBatch) -> T + Send + Sync + 'static) -> Pipeline<T> {
        Pipeline { job: Arc::new(job), in_flight: None, waiting: None, waiting_room: Vec::new() }
    }

    /// Hands `batch` on: to the thread at once if no ingest is running (or the one running is
    /// done); else it waits, joined with the others waiting, until the next `push` or
    /// [`Pipeline::finish`] finds the thread free, or until too many events wait. Returns the
    /// results of the ingests that ended meanwhile.
    pub async fn push(&mut self, thread: &IngestThread, batch: PreparedBatch) -> Result<Vec<T>, IngestThreadError> {
        let mut done = Vec::new();
        let all = thread.budget_kib;
        let kib = batch.bytes().div_ceil(1024).clamp(1, all) as u32;
        let room = match thread.budget.clone().try_acquire_many_owned(kib) {
            Ok(room) => room,
            Err(_) => {
                // The thread's streams hold all the room: land what this one holds first, so
                // it waits holding nothing (a stream holding room while it waits for more
                // could wait for ever).
                done.extend(self.finish(thread).await?);
                thread.budget.clone().acquire_many_owned(kib).await.map_err(|_| IngestThreadError::Stopped)?
            }
        };
        self.waiting_room.push(room);
        let waiting = match self.waiting.take() {
            Some(mut waiting) => {
                waiting.append(batch);
                waiting
            }
            None => batch,
        };
        let full = waiting.len() >= COALESCED_EVENTS_MAX || waiting.bytes() >= COALESCED_BYTES_MAX;
        self.waiting = Some(waiting);
        if let Some(pending) = self.in_flight.as_mut() {
            match pending.try_take() {
                Some(result) => {
                    self.in_flight = None;
                    done.push(result?);
                }
                None if !full => return Ok(done),
                None => {}
            }
        }
        done.extend(self.land_in_flight().await?);
        self.start_waiting(thread).await?;
        Ok(done)
    }

    /// Whether batches wait for the ingest in flight to end: a stream that goes quiet lands them
    /// ([`Pipeline::finish`]) rather than hold their room in the thread's budget.
    pub fn holds_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Waits until every batch pushed so far has landed; returns the results of the ingests
    /// that ended.
    pub async fn finish(&mut self, thread: &IngestThread) -> Result<Vec<T>, IngestThreadError> {
        let mut done: Vec<T> = self.land_in_flight().await?.into_iter().collect();
        self.start_waiting(thread).await?;
        done.extend(self.land_in_flight().await?);
        Ok(done)
    }

    async fn land_in_flight(&mut self) -> Result<Option<T>, IngestThreadError> {
        match self.in_flight.take() {
            Some(pending) => pending.wait().await.map(Some),
            None => Ok(None),
        }
    }

    async fn start_waiting(&mut self, thread: &IngestThread) -> Result<(), IngestThreadError> {
        if let Some(batch) = self.waiting.take() {
            let job = self.job.clone();
            let room = std::mem::take(&mut self.waiting_room);
            self.in_flight = Some(
                thread
                    .submit(move || {
                        let landed = job(batch);
                        drop(room);
                        landed
                    })
                    .await?,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_a_panic_does_not_stop_the_thread() {
        let thread = IngestThread::start(64 << 20).unwrap();
        let first = thread.submit(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        let second = thread.submit(|| 2).await.unwrap();
        assert_eq!(first.wait().await.unwrap().as_deref(), Some("casesync-ingest"));
        assert_eq!(second.wait().await.unwrap(), 2);
        let panicked = thread.run(|| -> u8 { panic!("a bug in a job") }).await;
        assert!(matches!(panicked, Err(IngestThreadError::Panicked)));
        assert_eq!(thread.run(|| 3).await.unwrap(), 3);
    }

    #[tokio::test]
    #[allow(clippy::await_holding_lock)] // The gate is held on purpose while batches are pushed.
    async fn batches_arriving_while_an_ingest_runs_are_joined_into_the_next() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let thread = IngestThread::start(64 << 20).unwrap();
        let gate = Arc::new(Mutex::new(()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (job_gate, job_calls) = (gate.clone(), calls.clone());
        let mut pipeline = Pipeline::new(move |batch: PreparedBatch| {
            drop(job_gate.lock().unwrap_or_else(|p| p.into_inner()));
            job_calls.fetch_add(1, Ordering::SeqCst);
            batch.len()
        });
        let space = casesync_engine::model::ids::SpaceId([1; 16]);
        let closed = gate.lock().unwrap();
        // The first ingest starts at once and blocks on the gate; the next two wait.
        for _ in 0..3 {
            let done = pipeline.push(&thread, PreparedBatch::new(space, Vec::new())).await.unwrap();
            assert!(done.is_empty());
        }
        drop(closed);
        let done = pipeline.finish(&thread).await.unwrap();
        assert_eq!(done.len(), 2, "the two waiting batches were joined into one ingest");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(pipeline.finish(&thread).await.unwrap().is_empty());
    }

    /// A batch of one event of about `kib` KiB.
    fn batch_of(kib: usize, n: u8) -> PreparedBatch {
        use casesync_engine::testkit::{chain_with_bodies, device, wire};
        let space = casesync_engine::model::ids::SpaceId([1; 16]);
        let events = chain_with_bodies(&device(n), space, 1, |_| bytes::Bytes::from(vec![n; kib * 1024]));
        PreparedBatch::new(space, wire(&events))
    }

    #[tokio::test]
    #[allow(clippy::await_holding_lock)] // The gate is held on purpose while batches are pushed.
    async fn streams_hold_no_more_than_the_thread_s_room_and_a_stream_waits_for_it_holding_none() {
        use std::sync::Mutex;
        let thread = Arc::new(IngestThread::start(256 * 1024).unwrap());
        let gate = Arc::new(Mutex::new(()));
        let job = |gate: Arc<Mutex<()>>| {
            move |batch: PreparedBatch| {
                drop(gate.lock().unwrap_or_else(|p| p.into_inner()));
                batch.len()
            }
        };
        let (mut first, mut second) = (Pipeline::new(job(gate.clone())), Pipeline::new(job(gate.clone())));
        let closed = gate.lock().unwrap();
        // The first stream's ingest blocks on the gate; its next batch waits behind it.
        assert!(first.push(&thread, batch_of(100, 1)).await.unwrap().is_empty());
        assert!(first.push(&thread, batch_of(100, 2)).await.unwrap().is_empty());
        assert!(first.holds_waiting());
        assert!(thread.room_kib() < 100, "{} KiB left", thread.room_kib());
        // The second stream finds no room: it waits, holding nothing.
        let waiting_thread = thread.clone();
        let blocked = tokio::spawn(async move {
            let done = second.push(&waiting_thread, batch_of(100, 3)).await.unwrap();
            (second, done)
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!blocked.is_finished(), "the second stream took room the first holds");
        // The first stream's ingests land: their room frees, and the second goes on.
        drop(closed);
        assert_eq!(first.finish(&thread).await.unwrap(), [1, 1]);
        let (mut second, done) = blocked.await.unwrap();
        assert!(done.is_empty());
        assert_eq!(second.finish(&thread).await.unwrap(), [1]);
        assert_eq!(thread.room_kib(), 256, "every ingest gave its room back");
    }
}
