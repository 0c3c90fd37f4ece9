//! The sync service's door: who may send what before a request body is read.
//!
//! tonic reads and decodes a unary request's whole body before the handler runs, so a check in
//! the handler comes after up to a 4 MiB message per call was buffered and decoded, for anyone
//! who completed a TLS handshake with any key. This layer decides from the connection's proven
//! device (`tls::PeerDevice`) and the call's path alone, before a byte of the body is read:
//! - `Hello`, `Join` (a device joining with an invitation is not a member yet) and `Introduce` (a
//!   device granted after this node last heard from its admin) are open to every device, with
//!   bodies of at most [`OPEN_CALL_BYTES_MAX`];
//! - every other call needs a device that may sync in the space the call names in its header
//!   or, when it names none in a header (the space is then in the body), in some space this
//!   node serves; the handler checks the exact space again once the body is read. A member's
//!   messages pass one by one, each once room is taken for it (`message_room`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use casesync_engine::model::ids::SpaceId;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;

use crate::message_room::MessageRoom;
use crate::shared::{Shared, SPACE_HEADER};
use crate::tls::PeerDevice;

/// Most bytes of a request body a device that is not a member may send (`Hello`, `Join`,
/// `Introduce`).
pub const OPEN_CALL_BYTES_MAX: usize = 64 * 1024;

/// The calls of the sync service open to devices that are not members.
const OPEN_CALLS: [&str; 3] = ["Hello", "Join", "Introduce"];

/// Wraps a service so that only members reach it, except for the open calls (module docs).
#[derive(Clone)]
pub struct MembersOnly<S> {
    inner: S,
    spaces: Arc<[Arc<Shared>]>,
    room: MessageRoom,
}

impl<S> MembersOnly<S> {
    /// `inner`, reached by the members of `spaces`, whose messages share `room`.
    pub fn new(inner: S, spaces: Vec<Arc<Shared>>, room: MessageRoom) -> MembersOnly<S> {
        MembersOnly { inner, spaces: spaces.into(), room }
    }

    /// What may pass: `Ok(Some(limit))` an open call whose body is cut at `limit` bytes,
    /// `Ok(None)` a member's call, `Err` a refusal.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<Option<usize>, Status> {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        if OPEN_CALLS.contains(&method) {
            return Ok(Some(OPEN_CALL_BYTES_MAX));
        }
        let device = request
            .extensions()
            .get::<PeerDevice>()
            .ok_or_else(|| Status::unauthenticated("the connection carries no device certificate"))?
            .device;
        let named = request
            .headers()
            .get(SPACE_HEADER)
            .map(|value| {
                hex::decode(value.as_bytes())
                    .ok()
                    .and_then(|bytes| SpaceId::from_slice(&bytes).ok())
                    .ok_or_else(|| Status::invalid_argument("the space header is not a 16-byte hex id"))
            })
            .transpose()?;
        let mut candidates = self.spaces.iter().filter(|shared| named.is_none_or(|space| shared.space == space));
        let mut last_refusal = None;
        let admitted = candidates.any(|shared| {
            if device == shared.identity.author() {
                return true;
            }
            match shared.may_connect(&device) {
                Ok(_) => true,
                Err(refusal) => {
                    last_refusal = Some(refusal.to_string());
                    false
                }
            }
        });
        if admitted {
            return Ok(None);
        }
        Err(Status::permission_denied(match last_refusal {
            Some(refusal) => format!("device {} may not sync in this space: {refusal}", device.device_id()),
            None => format!("device {} may not sync in a space this node serves", device.device_id()),
        }))
    }
}

impl<S: NamedService> NamedService for MembersOnly<S> {
    const NAME: &'static str = S::NAME;
}

type Reply = http::Response<Body>;

impl<S> tower::Service<http::Request<Body>> for MembersOnly<S>
where
    S: tower::Service<http::Request<Body>, Response = Reply, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.admit(&request) {
            Ok(None) => {
                let request = request.map(|body| self.room.wrap(body));
                Box::pin(self.inner.call(request))
            }
            Ok(Some(limit)) => {
                let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(status = %status.message(), "sync call refused before its body was read");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
