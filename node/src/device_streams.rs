//! How many sync streams one device may hold open in a space at once.
//!
//! Each open stream costs the node memory no budget counts: tonic's read buffer of a push keeps
//! the size of the largest message it read, a pull holds the batches queued for a peer that
//! does not read them, and each stream has its HTTP/2 window. Connections (256) and streams per
//! connection (32) are bounded, but one device could still hold thousands of streams. An honest
//! device holds one following pull and one push for its live session, and at times a one-shot
//! sync's beside them; [`STREAMS_PER_DEVICE_MAX`] of each kind are allowed. A further one
//! displaces the device's oldest of that kind, which ends with `RESOURCE_EXHAUSTED`, so a device
//! that restarted never waits for the streams of its previous life to time out.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use casesync_engine::model::ids::AuthorId;
use tokio::sync::watch;
use tokio_stream::Stream;

/// Streams of one kind one device may hold open in a space at once.
pub const STREAMS_PER_DEVICE_MAX: usize = 4;

/// The kinds of streams counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A peer's `Pull`: this node sends.
    Pull,
    /// A peer's `Push`: this node receives.
    Push,
}

type Open = HashMap<(AuthorId, StreamKind), VecDeque<(u64, watch::Sender<bool>)>>;

/// The streams devices hold open in one space.
#[derive(Debug, Default)]
pub struct DeviceStreams {
    open: Mutex<Open>,
    next: AtomicU64,
}

impl DeviceStreams {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // The map stays whole whatever a panicking holder did: every change is one call.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a stream `device` opens; past [`STREAMS_PER_DEVICE_MAX`] of `kind`, the oldest is
    /// told to end ([`StreamSlot::displaced`]).
    pub fn open(self: &Arc<Self>, device: AuthorId, kind: StreamKind) -> StreamSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tell, displaced) = watch::channel(false);
        let mut open = self.lock();
        let streams = open.entry((device, kind)).or_default();
        while streams.len() >= STREAMS_PER_DEVICE_MAX {
            if let Some((_, oldest)) = streams.pop_front() {
                // Kept until the stream looks, if it is not waiting on it now.
                oldest.send_replace(true);
            }
        }
        streams.push_back((id, tell));
        StreamSlot { streams: self.clone(), device, kind, id, displaced }
    }

    /// Streams of `kind` that `device` holds open now.
    pub fn count(&self, device: &AuthorId, kind: StreamKind) -> usize {
        self.lock().get(&(*device, kind)).map_or(0, VecDeque::len)
    }
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<DeviceStreams>,
    device: AuthorId,
    kind: StreamKind,
    id: u64,
    displaced: watch::Receiver<bool>,
}

impl StreamSlot {
    /// Completes once a newer stream of the same device and kind displaced this one.
    pub async fn displaced(&self) {
        let mut displaced = self.displaced.clone();
        let told = displaced.wait_for(|d| *d).await.map(|_| ());
        if told.is_err() {
            // Its sender is gone without telling: the slot is no longer counted, never displaced.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        let key = (self.device, self.kind);
        if let Some(streams) = open.get_mut(&key) {
            streams.retain(|(id, _)| *id != self.id);
            if streams.is_empty() {
                open.remove(&key);
            }
        }
    }
}

/// `stream` until its slot is displaced: it then yields the displacement's status and ends,
/// dropping what it had queued unread.
pub fn until_displaced<S>(stream: S, slot: StreamSlot) -> UntilDisplaced<S> {
    let kind = slot.kind;
    let watched = Box::pin(async move {
        slot.displaced().await;
        // The slot goes with the future: the stream stays counted until it ends.
    });
    UntilDisplaced { stream: Some(stream), displaced: watched, kind }
}

/// See [`until_displaced`].
pub struct UntilDisplaced<S> {
    stream: Option<S>,
    displaced: Pin<Box<dyn Future<Output = ()> + Send>>,
    kind: StreamKind,
}

impl<S, T> Stream for UntilDisplaced<S>
where
    S: Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    type Item = Result<T, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stream.is_none() {
            return Poll::Ready(None);
        }
        if self.displaced.as_mut().poll(cx).is_ready() {
            self.stream = None;
            return Poll::Ready(Some(Err(displaced_status(self.kind))));
        }
        let Some(stream) = self.stream.as_mut() else { return Poll::Ready(None) };
        let next = Pin::new(stream).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.stream = None;
        }
        next
    }
}

/// The status a displaced stream ends with.
pub fn displaced_status(kind: StreamKind) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "a newer {kind:?} stream of the same device replaced this one (at most {STREAMS_PER_DEVICE_MAX} a device)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn device(n: u8) -> AuthorId {
        AuthorId::from_slice(&[n; 32]).unwrap()
    }

    async fn is_displaced(slot: &StreamSlot) -> bool {
        tokio::time::timeout(Duration::from_millis(20), slot.displaced()).await.is_ok()
    }

    #[tokio::test]
    async fn a_stream_past_the_limit_displaces_the_devices_oldest_of_its_kind() {
        let streams = Arc::new(DeviceStreams::default());
        let pulls: Vec<StreamSlot> =
            (0..STREAMS_PER_DEVICE_MAX).map(|_| streams.open(device(1), StreamKind::Pull)).collect();
        let push = streams.open(device(1), StreamKind::Push);
        let other = streams.open(device(2), StreamKind::Pull);
        for slot in &pulls {
            assert!(!is_displaced(slot).await);
        }
        let newest = streams.open(device(1), StreamKind::Pull);
        assert!(is_displaced(&pulls[0]).await, "the oldest pull is told to end");
        for slot in pulls.iter().skip(1).chain([&push, &other, &newest]) {
            assert!(!is_displaced(slot).await, "no other stream is");
        }
        assert_eq!(streams.count(&device(1), StreamKind::Pull), STREAMS_PER_DEVICE_MAX);
    }

    #[tokio::test]
    async fn streams_that_end_free_their_place() {
        let streams = Arc::new(DeviceStreams::default());
        let first = streams.open(device(1), StreamKind::Push);
        for _ in 0..3 * STREAMS_PER_DEVICE_MAX {
            drop(streams.open(device(1), StreamKind::Push));
        }
        assert!(!is_displaced(&first).await, "streams that ended displace nothing");
        drop(first);
        assert_eq!(streams.count(&device(1), StreamKind::Push), 0);
        assert!(streams.lock().is_empty(), "nothing is kept for a device without streams");
    }
}
