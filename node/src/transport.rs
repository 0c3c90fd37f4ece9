//! What sync connections run over: TCP on every node, or a network a test puts in its place (a
//! simulated one with partitions and crashes: `tests/it/turmoil_sim.rs`). TLS between device
//! keys runs on top of either (`tls.rs`): there is no plaintext sync connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A connected byte stream.
pub trait Link: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Link for T {}

/// What a [`Network`] call returns, later.
pub type Pending<T> = Pin<Box<dyn Future<Output = std::io::Result<T>> + Send>>;

/// The connections a [`Network`] accepted on one address, each with the address it came from.
pub type Accepted = mpsc::Receiver<(Box<dyn Link>, SocketAddr)>;

/// A network in TCP's place.
pub trait Network: Send + Sync + 'static {
    /// Connects to `host:port`.
    fn connect(&self, host: &str, port: u16) -> Pending<Box<dyn Link>>;

    /// Listens on `address`: the address bound, and the connections accepted there.
    fn listen(&self, address: &str) -> Pending<(SocketAddr, Accepted)>;

    /// Whether sync channels send HTTP/2 keep-alive pings (over TCP they always do). A test turns
    /// them off to show that without them a channel stays stuck after a partition heals.
    fn http2_keep_alive(&self) -> bool {
        true
    }
}

/// Where a node's sync connections come from.
#[derive(Clone, Default)]
pub enum Transport {
    /// TCP: every node outside the simulation tests.
    #[default]
    Tcp,
    /// A network in TCP's place.
    Other(Arc<dyn Network>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp => f.write_str("Tcp"),
            Transport::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl Transport {
    /// Connects to `host:port`, with Nagle's algorithm off on TCP.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<Conn> {
        match self {
            Transport::Tcp => {
                let tcp = TcpStream::connect((host, port)).await?;
                tcp.set_nodelay(true)?;
                Ok(Conn::Tcp(tcp))
            }
            Transport::Other(network) => Ok(Conn::Other(network.connect(host, port).await?)),
        }
    }

    /// Listens on `address`; returns the listener and the address it bound.
    pub async fn listen(&self, address: &str) -> std::io::Result<(SyncListener, SocketAddr)> {
        match self {
            Transport::Tcp => {
                let listener = TcpListener::bind(address).await?;
                let bound = listener.local_addr()?;
                Ok((SyncListener::Tcp(listener), bound))
            }
            Transport::Other(network) => {
                let (bound, accepted) = network.listen(address).await?;
                Ok((SyncListener::Other(accepted), bound))
            }
        }
    }

    /// Whether sync channels send HTTP/2 keep-alive pings.
    pub fn http2_keep_alive(&self) -> bool {
        match self {
            Transport::Tcp => true,
            Transport::Other(network) => network.http2_keep_alive(),
        }
    }
}

/// A listener for sync connections.
pub enum SyncListener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// The connections another network accepts.
    Other(Accepted),
}

impl From<TcpListener> for SyncListener {
    fn from(listener: TcpListener) -> SyncListener {
        SyncListener::Tcp(listener)
    }
}

impl SyncListener {
    /// The next connection and where it came from (on TCP with Nagle's algorithm off: small
    /// frames would otherwise wait for delayed ACKs).
    pub async fn accept(&mut self) -> std::io::Result<(Conn, SocketAddr)> {
        match self {
            SyncListener::Tcp(listener) => {
                let (tcp, remote) = listener.accept().await?;
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "cannot turn Nagle off on an accepted connection");
                }
                Ok((Conn::Tcp(tcp), remote))
            }
            SyncListener::Other(accepted) => match accepted.recv().await {
                Some((link, remote)) => Ok((Conn::Other(link), remote)),
                None => Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "the network stopped listening")),
            },
        }
    }
}

/// One sync connection's byte stream, under its TLS.
pub enum Conn {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over another network.
    Other(Box<dyn Link>),
}

macro_rules! each {
    ($conn:expr, $io:ident => $call:expr) => {
        match $conn {
            Conn::Tcp($io) => $call,
            Conn::Other($io) => $call,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, io => io.is_write_vectored())
    }
}
