//! A running node: the sync server, the local case API, and one task per peer. Tests, benches
//! and the demo start nodes in-process with [`Node::start`]; `casesync serve` runs one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use casesync_proto::v1::cases_server::CasesServer;
use casesync_proto::v1::sync_server::SyncServer as SyncGrpcServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::case_service::CaseService;
use crate::config::DAEMON_FILE;
use crate::data_dir;
use crate::event_stream::GRPC_MESSAGE_BYTES_MAX;
use crate::peer_actor::{distinct_peers, run_peer};
use crate::shared::Shared;
use crate::sync_server::SyncServer;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The data dir (made by `casesync init`).
    pub data: PathBuf,
    /// Address for peers; port 0 picks a free one.
    pub listen: String,
    /// Loopback address for the local case API; port 0 picks a free one.
    pub api: String,
    /// Peers to keep live sessions with.
    pub peers: Vec<String>,
    /// Scheduled heads check per peer.
    pub pull_every: Option<Duration>,
    /// Store and forward only.
    pub relay: bool,
    /// Write `daemon.json` so the CLI finds this node.
    pub announce: bool,
}

impl NodeConfig {
    /// Defaults for a data dir: loopback, free ports, no peers.
    pub fn new(data: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data: data.into(),
            listen: "127.0.0.1:0".into(),
            api: "127.0.0.1:0".into(),
            peers: Vec::new(),
            pull_every: None,
            relay: false,
            announce: false,
        }
    }
}

/// What `daemon.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonFile {
    /// The local case API address.
    pub api: String,
    /// The sync address.
    pub sync: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The local API's token for this start (see `api_token`).
    pub token: String,
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    sync_addr: SocketAddr,
    api_addr: SocketAddr,
    api_token: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    daemon_file: Option<PathBuf>,
}

impl Node {
    /// Opens the data dir and starts serving. Listeners are bound before this returns, so
    /// clients can connect at once.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let data = config.data.clone();
        let relay = config.relay;
        let opened = tokio::task::spawn_blocking(move || data_dir::open(&data, relay)).await??;
        let relay = relay || opened.config.relay;
        let shared = Shared::new(opened.store, opened.identity, opened.space, relay)
            .context("cannot start the ingest thread")?;

        let sync_listener =
            TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let api_listener =
            TcpListener::bind(&config.api).await.with_context(|| format!("cannot listen on {}", config.api))?;
        let (sync_addr, api_addr) = (sync_listener.local_addr()?, api_listener.local_addr()?);
        if !api_addr.ip().is_loopback() {
            anyhow::bail!("the local case API must listen on a loopback address, not {api_addr}");
        }
        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<SyncGrpcServer<SyncServer>>().await;
        health_reporter.set_serving::<CasesServer<CaseService>>().await;
        // Reflection in both versions: grpcurl and most tools speak `grpc.reflection.v1`, while
        // Python's grpcio-reflection and older grpcurl speak only `v1alpha`.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(casesync_proto::FILE_DESCRIPTOR_SET)
        };

        let sync_service = SyncGrpcServer::new(SyncServer::new(shared.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let router = server_builder()
            .add_service(health_service.clone())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(sync_service);
        let sync_tls = crate::tls::server_config(&shared.cert)?;
        let mut stop = shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let incoming = crate::tls::incoming(sync_listener, sync_tls);
            let result = router
                .serve_with_incoming_shutdown(
                    incoming,
                    async move { stop.wait_for(|s| *s).await.map(|_| ()).unwrap_or(()) },
                )
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "sync server failed");
            }
        }));

        let api_token = crate::api_token::fresh();
        let cases = tonic::service::interceptor::InterceptedService::new(
            CasesServer::new(CaseService::new(shared.clone()))
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
            crate::api_token::RequireToken::new(&api_token),
        );
        let router = server_builder()
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(cases);
        let mut stop = shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let incoming = no_delay(api_listener);
            let result = router
                .serve_with_incoming_shutdown(
                    incoming,
                    async move { stop.wait_for(|s| *s).await.map(|_| ()).unwrap_or(()) },
                )
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "case API server failed");
            }
        }));

        // One task per peer, however often it was named; each is registered before this returns,
        // so the node's status lists every peer from the start.
        for url in distinct_peers(config.peers.iter().cloned()) {
            let wake = shared.add_peer(&url);
            tasks.push(tokio::spawn(run_peer(shared.clone(), url, wake, config.pull_every, shutdown.subscribe())));
        }

        let daemon_file = if config.announce {
            let path = config.data.join(DAEMON_FILE);
            let file = DaemonFile {
                api: api_addr.to_string(),
                sync: sync_addr.to_string(),
                pid: std::process::id(),
                token: api_token.clone(),
            };
            write_private(&path, &serde_json::to_vec_pretty(&file)?)
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        } else {
            None
        };
        tracing::info!(device = %shared.identity.author().device_id(), sync = %sync_addr, api = %api_addr, relay, "node started");
        Ok(Node { shared, sync_addr, api_addr, api_token, shutdown, tasks, daemon_file })
    }

    /// The address peers connect to.
    pub fn sync_addr(&self) -> SocketAddr {
        self.sync_addr
    }

    /// The sync URL (`http://addr`; the connection is always TLS between device keys).
    pub fn sync_url(&self) -> String {
        format!("http://{}", self.sync_addr)
    }

    /// The local case API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The local API's token for this start.
    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// The shared state (store, identity, peers).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every task and server and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.shared.stopping.send_replace(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            // Servers drain their connections gracefully; a peer that keeps one open does not
            // hold the shutdown for longer than this.
            if tokio::time::timeout(Duration::from_secs(3), task).await.is_err() {
                abort.abort();
            }
        }
        if let Some(path) = self.daemon_file {
            let _ = std::fs::remove_file(path);
        }
        // Detached streams and blocking reads hold the store too; they notice `stopping` and end.
        // Wait (bounded) until this is the last holder, so the data dir is free when we return.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.shared) > 1 {
            tracing::warn!("a task still holds the store after shutdown");
        }
    }
}

/// Accepted connections with Nagle's algorithm off: tonic's `tcp_nodelay` applies only to
/// listeners it binds itself, and small frames otherwise wait for delayed ACKs (~40 ms).
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot turn Nagle off on an accepted connection");
        }
        Ok(stream)
    })
}

fn server_builder() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_nodelay(true)
}

/// Writes a file only its owner may read (0600), replacing it whole.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(&tmp)?.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}
