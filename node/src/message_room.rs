//! Room taken for a gRPC message before its body is read.
//!
//! tonic allocates a message's whole declared length as soon as it reads the 5-byte frame
//! header, then buffers the body and decodes it. Many member streams sending large messages at
//! once would each hold one such buffer beside the ingest room (`ingest_thread`), which counts
//! batches only once they are decoded. [`RoomBody`] sits between HTTP/2 and tonic on every
//! member's call: it reads each message's frame header itself, takes room for the length it
//! declares from a budget shared by the node's sync service, and only then hands the header and
//! the body on. While it waits for room it reads nothing more, so HTTP/2 flow control holds the
//! sender back.
//!
//! A message holds its room from its header until the handler asks for the next message (the
//! body is polled again): by then the handler has handed the decoded batch to the ingest room,
//! or dropped it. A stream waiting between messages holds none, so idle live streams take no
//! room. Once a message holds room the rest of it must arrive within [`MESSAGE_REST_TIME_MAX`],
//! so a slow sender cannot sit on room others wait for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::Status;

/// Bytes of a gRPC frame header: a compression flag and a big-endian u32 length.
const FRAME_HEADER_BYTES: usize = 5;

/// Longest a message that holds room may take to arrive whole.
pub const MESSAGE_REST_TIME_MAX: Duration = Duration::from_secs(60);

/// The room messages of member calls may hold at once, over the node's sync service.
#[derive(Clone, Debug)]
pub struct MessageRoom {
    room: Arc<Semaphore>,
    /// The room's size, in bytes.
    bytes: usize,
    /// The longest message the service decodes: a longer one is refused by tonic from its
    /// header alone, so it passes without room.
    message_max: usize,
}

impl MessageRoom {
    /// Room for `bytes` of messages at once, each at most `message_max` bytes. The room always
    /// holds at least one message of `message_max`.
    pub fn new(bytes: usize, message_max: usize) -> MessageRoom {
        let bytes = bytes.max(message_max + FRAME_HEADER_BYTES).min(Semaphore::MAX_PERMITS);
        MessageRoom { room: Arc::new(Semaphore::new(bytes)), bytes, message_max }
    }

    /// Bytes of room free now.
    pub fn free(&self) -> usize {
        self.room.available_permits()
    }

    /// The room's size, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `body`, whose messages pass only with room taken for each.
    pub fn wrap(&self, body: Body) -> Body {
        Body::new(RoomBody::new(body, self.clone()))
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body that hands on each message only once room is taken for it (module docs).
pub struct RoomBody {
    inner: Body,
    room: MessageRoom,
    /// Bytes read from `inner` and not handed on yet.
    pending: Bytes,
    /// The frame header being read, and how much of it is.
    header: [u8; FRAME_HEADER_BYTES],
    header_read: usize,
    /// Bytes of the current message's body still to hand on.
    remaining: usize,
    /// The room the current message holds.
    held: Option<OwnedSemaphorePermit>,
    /// The room being waited for, with the length of the message it is for.
    acquiring: Option<(Acquiring, usize)>,
    /// When the current message must have arrived whole.
    rest_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RoomBody {
    fn new(inner: Body, room: MessageRoom) -> RoomBody {
        RoomBody {
            inner,
            room,
            pending: Bytes::new(),
            header: [0; FRAME_HEADER_BYTES],
            header_read: 0,
            remaining: 0,
            held: None,
            acquiring: None,
            rest_deadline: None,
        }
    }

    /// Hands on the next part of `pending` that may pass, or learns that more must be read.
    fn pass_pending(&mut self) -> Option<Bytes> {
        if self.remaining > 0 {
            let n = self.remaining.min(self.pending.len());
            self.remaining -= n;
            return Some(self.pending.split_to(n));
        }
        let n = (FRAME_HEADER_BYTES - self.header_read).min(self.pending.len());
        self.header[self.header_read..self.header_read + n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        self.header_read += n;
        if self.header_read < FRAME_HEADER_BYTES {
            return None;
        }
        self.header_read = 0;
        let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
        if len == 0 || len > self.room.message_max {
            // Nothing to hold, or refused by tonic from the header alone.
            self.remaining = len;
            return Some(Bytes::copy_from_slice(&self.header));
        }
        let permits = len + FRAME_HEADER_BYTES;
        self.acquiring = Some((Box::pin(self.room.room.clone().acquire_many_owned(permits as u32)), len));
        None
    }
}

/// The error a body yields when a message holding room stalls.
fn stalled() -> tonic::Status {
    Status::deadline_exceeded(format!(
        "a message did not arrive whole within {} s of its header",
        MESSAGE_REST_TIME_MAX.as_secs()
    ))
}

impl HttpBody for RoomBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some((acquiring, len)) = this.acquiring.as_mut() {
                let len = *len;
                let permit = match acquiring.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(permit)) => permit,
                    Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(Status::unavailable("node is stopping")))),
                };
                this.acquiring = None;
                this.held = Some(permit);
                this.remaining = len;
                this.rest_deadline = Some(Box::pin(tokio::time::sleep(MESSAGE_REST_TIME_MAX)));
                return Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&this.header)))));
            }
            if !this.pending.is_empty() {
                match this.pass_pending() {
                    Some(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    None => continue,
                }
            }
            if this.remaining == 0 && this.header_read == 0 {
                // The last message was decoded and the handler asks for the next: its batch is
                // in the ingest room now, or gone.
                this.held = None;
                this.rest_deadline = None;
            }
            if let Some(deadline) = this.rest_deadline.as_mut() {
                if this.remaining > 0 && deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(stalled())));
                }
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    // Trailers pass as they are.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.acquiring.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A gRPC frame of `len` bytes of `fill`.
    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(fill, len));
        bytes
    }

    /// A body that yields `chunks` one after another.
    fn body_of(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks.into_iter().map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    /// Reads frames until `want` bytes were handed on.
    async fn read_bytes(body: &mut Body, want: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < want {
            let frame = body.frame().await.unwrap().unwrap();
            out.extend_from_slice(&frame.into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn messages_pass_whole_and_in_order_however_they_are_cut() {
        let mut all = Vec::new();
        for (len, fill) in [(10usize, 1u8), (0, 0), (3000, 2), (1, 3)] {
            all.extend(frame(len, fill));
        }
        for cut in [1usize, 2, 4, 5, 7, 64, 5000] {
            let chunks = all.chunks(cut).map(|c| c.to_vec()).collect();
            let room = MessageRoom::new(8192, 4096);
            let body = room.wrap(body_of(chunks));
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(got.as_ref(), all.as_slice(), "cut every {cut} bytes");
            assert_eq!(room.free(), room.bytes(), "the room is free once the body ends");
        }
    }

    #[tokio::test]
    async fn a_message_holds_its_room_until_the_next_is_asked_for() {
        let room = MessageRoom::new(4096 + 5, 4096);
        let mut body = room.wrap(body_of(vec![frame(1000, 1), frame(2000, 2)]));
        read_bytes(&mut body, 1005).await;
        assert_eq!(room.free(), room.bytes() - 1005, "the first message holds its room");
        read_bytes(&mut body, 2005).await;
        assert_eq!(room.free(), room.bytes() - 2005, "asking for the second freed the first's room");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_message_waits_for_room_another_stream_holds() {
        let room = MessageRoom::new(1000, 995);
        let mut first = room.wrap(body_of(vec![frame(900, 1), frame(10, 2)]));
        let mut second = room.wrap(body_of(vec![frame(900, 3)]));
        read_bytes(&mut first, 905).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), second.frame()).await;
        assert!(waiting.is_err(), "the second stream's message waits while the first holds the room");
        // The first stream asks for its next message: its room is free for the second.
        read_bytes(&mut first, 15).await;
        let got = read_bytes(&mut second, 905).await;
        assert_eq!(got, frame(900, 3));
    }

    #[tokio::test]
    async fn an_oversized_message_passes_without_room_for_tonic_to_refuse() {
        let room = MessageRoom::new(100, 50);
        let all = frame(5000, 9);
        let got = room.wrap(body_of(vec![all.clone()])).collect().await.unwrap().to_bytes();
        assert_eq!(got.as_ref(), all.as_slice());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_stalls_after_its_header_gives_its_room_back() {
        let room = MessageRoom::new(4096, 4000);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Status>>(4);
        let mut body =
            room.wrap(Body::new(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))));
        tx.send(Ok(Frame::data(Bytes::from(frame(3000, 1)[..100].to_vec())))).await.unwrap();
        read_bytes(&mut body, 100).await;
        assert!(room.free() < room.bytes());
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::DeadlineExceeded);
        drop(body);
        assert_eq!(room.free(), room.bytes());
    }
}
