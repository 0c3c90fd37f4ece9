//! One long-lived thread that runs every ingest of a node, in the order submitted.
//!
//! Ingests used to run on tokio's blocking pool, a different thread each time. glibc gives each
//! thread its own malloc arena, so a bulk catch-up's in-memory fold (thousands of case states,
//! allocated by whichever thread ran the batch and freed by another) fragmented across a dozen
//! arenas: at 16k cases held node B peaked at 323 MiB (228 MiB with one arena). On one thread
//! the fold's memory is reused in place: 16k cases in 215 MiB, so the node holds twice the cases
//! it did in its 256 MiB budget.

use std::panic::AssertUnwindSafe;

use tokio::sync::{mpsc, oneshot};

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
}

impl IngestThread {
    /// Starts the thread.
    pub fn start() -> std::io::Result<IngestThread> {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUED_JOBS_MAX);
        std::thread::Builder::new().name("casesync-ingest".into()).spawn(move || {
            while let Some(job) = queue.blocking_recv() {
                // A panicking job drops its reply sender: its caller sees `Panicked`.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
        Ok(IngestThread { jobs })
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
}

/// At most one job in flight on the ingest thread while its caller goes on (receiving and
/// decoding the next batch of a stream: two cores), the jobs still run in order, and memory
/// stays bounded (one batch in the store, one decoded).
pub struct Pipeline<T> {
    in_flight: Option<Pending<T>>,
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Pipeline { in_flight: None }
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// Waits for the job in flight, then hands `job` to the thread; returns the earlier job's
    /// result (none if there was no job in flight).
    pub async fn submit(
        &mut self,
        thread: &IngestThread,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Option<T>, IngestThreadError> {
        let done = self.finish().await?;
        self.in_flight = Some(thread.submit(job).await?);
        Ok(done)
    }

    /// Waits for the job in flight, if any, and returns its result.
    pub async fn finish(&mut self) -> Result<Option<T>, IngestThreadError> {
        match self.in_flight.take() {
            Some(pending) => Ok(Some(pending.wait().await?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_a_panic_does_not_stop_the_thread() {
        let thread = IngestThread::start().unwrap();
        let first = thread.submit(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        let second = thread.submit(|| 2).await.unwrap();
        assert_eq!(first.wait().await.unwrap().as_deref(), Some("casesync-ingest"));
        assert_eq!(second.wait().await.unwrap(), 2);
        let panicked = thread.run(|| -> u8 { panic!("a bug in a job") }).await;
        assert!(matches!(panicked, Err(IngestThreadError::Panicked)));
        assert_eq!(thread.run(|| 3).await.unwrap(), 3);
    }
}
