//! The local case API's token: a random secret made at every start of a node and written only
//! to `daemon.json` in its data dir (0600 in a 0700 dir, `identity::secure_data_dir`), so only
//! the user who owns the data dir can read or change cases through the API, add devices, or
//! have the node sync. Every call carries it as `authorization: Bearer <token>`; health and
//! reflection (which reveal no data) do not need it.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key of the token.
const HEADER: &str = "authorization";

/// A fresh token: 32 random bytes, hex.
pub fn fresh() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The server side: refuses a call without the token.
#[derive(Clone)]
pub struct RequireToken {
    expected: blake3::Hash,
}

impl RequireToken {
    /// Accepts calls that carry `token`.
    pub fn new(token: &str) -> RequireToken {
        RequireToken { expected: blake3::hash(format!("Bearer {token}").as_bytes()) }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let offered = request.metadata().get(HEADER).map(|value| blake3::hash(value.as_bytes()));
        // blake3::Hash compares in constant time.
        if offered == Some(self.expected) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "the local API needs the token in the data dir's daemon.json (only its owner can read it)",
            ))
        }
    }
}

/// The client side: adds the token to every call.
#[derive(Clone)]
pub struct WithToken {
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl WithToken {
    /// Sends `token` with every call; `None` when it is not a valid header value.
    pub fn new(token: &str) -> Option<WithToken> {
        format!("Bearer {token}").parse().ok().map(|value| WithToken { value })
    }
}

impl Interceptor for WithToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(HEADER, self.value.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_passes() {
        let token = fresh();
        let mut server = RequireToken::new(&token);
        let mut client = WithToken::new(&token).unwrap();
        assert!(server.call(client.call(Request::new(())).unwrap()).is_ok());
        let mut stranger = WithToken::new(&fresh()).unwrap();
        assert_eq!(
            server.call(stranger.call(Request::new(())).unwrap()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(server.call(Request::new(())).is_err());
    }
}
