//! turmoil's simulated TCP as a node's sync transport: each host's connections and listener run
//! on the network the simulation partitions, holds and repairs.

use std::net::SocketAddr;

use casesync_node::transport::{Accepted, Link, Network, Pending};
use tokio::sync::mpsc;

/// Connections accepted and not yet taken by the node's TLS accept loop.
const ACCEPTED_BACKLOG: usize = 64;

/// turmoil's network; `keep_alive: false` turns the sync channels' HTTP/2 keep-alive off.
pub struct SimNetwork {
    pub keep_alive: bool,
}

impl Network for SimNetwork {
    fn connect(&self, host: &str, port: u16) -> Pending<Box<dyn Link>> {
        let host = host.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as Box<dyn Link>)
        })
    }

    fn listen(&self, address: &str) -> Pending<(SocketAddr, Accepted)> {
        let address = address.to_string();
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(address.as_str()).await?;
            let bound = listener.local_addr()?;
            let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = tx.closed() => return,
                    };
                    match accepted {
                        Ok((stream, remote)) => {
                            if tx.send((Box::new(stream) as Box<dyn Link>, remote)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "the simulated listener failed");
                            return;
                        }
                    }
                }
            });
            Ok((bound, rx))
        })
    }

    fn http2_keep_alive(&self) -> bool {
        self.keep_alive
    }
}
