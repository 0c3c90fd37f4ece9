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
use crate::event_stream::{GRPC_MESSAGE_BYTES_MAX, SYNC_MESSAGE_BYTES_MAX};
use crate::peer_actor::{distinct_peers, run_peer};
use crate::shared::Shared;
use crate::sync_server::SyncServer;
use crate::transport::Transport;

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
    /// What sync connections run over (TCP but in simulation tests).
    pub transport: Transport,
    /// The store's caches and buffers within this many MiB (else the data dir's `memory_mib`,
    /// else the engine's default).
    pub memory_mib: Option<usize>,
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
            transport: Transport::Tcp,
            memory_mib: None,
        }
    }
}

/// What `daemon.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonFile {
    /// The local case API address (of the first space).
    pub api: String,
    /// The sync address.
    pub sync: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The local API's token for this start (see `api_token`).
    pub token: String,
    /// Every space's local case API, by the space's name.
    #[serde(default)]
    pub spaces: Vec<DaemonSpace>,
}

/// One space of a running daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonSpace {
    /// Its name on this node.
    pub name: String,
    /// The space id (hex).
    pub space: String,
    /// Its local case API address.
    pub api: String,
}

/// One space a node serves: its shared state and its local API.
struct ServedSpace {
    name: String,
    shared: Arc<Shared>,
    api_addr: SocketAddr,
}

/// A running node: one or more spaces on one store, one sync listener for all of them, and a
/// local case API per space.
pub struct Node {
    spaces: Vec<ServedSpace>,
    sync_addr: SocketAddr,
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
        let (relay, memory_mib) = (config.relay, config.memory_mib);
        let opened = tokio::task::spawn_blocking(move || data_dir::open_within(&data, relay, memory_mib)).await??;
        let relay = relay || opened.config.relay;
        let tls_roots = match &opened.config.tls_roots {
            Some(path) => crate::tls::roots_from_pem(path)?,
            None => Vec::new(),
        };
        let mut shareds = Vec::new();
        for space in &opened.spaces {
            let (store, identity, transport) =
                (opened.store.clone(), opened.identity.clone(), config.transport.clone());
            let shared = Shared::new(store, identity, space.space, relay, tls_roots.clone(), transport)
                .context("cannot start the ingest thread")?;
            shareds.push((space.clone(), shared));
        }
        let first = shareds[0].1.clone();

        let (sync_listener, sync_addr) = config
            .transport
            .listen(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
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

        let by_space: Vec<_> = shareds.iter().map(|(_, shared)| shared.clone()).collect();
        // Messages being read take room from a budget as large as a space's room for decoded
        // batches (`message_room`).
        let room = crate::message_room::MessageRoom::new(first.store.memory().received_bytes, SYNC_MESSAGE_BYTES_MAX);
        let sync_service = crate::members_only::MembersOnly::new(
            SyncGrpcServer::new(SyncServer::new(by_space.clone()))
                .max_decoding_message_size(SYNC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(SYNC_MESSAGE_BYTES_MAX),
            by_space,
            room,
        );
        let router = server_builder()
            .add_service(health_service.clone())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(sync_service);
        // A relay behind a CA-issued certificate presents it; every other node its device's.
        let sync_tls = match (&opened.config.tls_cert, &opened.config.tls_key) {
            (Some(chain), Some(key)) => crate::tls::server_config_from_pem(chain, key)?,
            (None, None) => crate::tls::server_config(&first.cert)?,
            _ => anyhow::bail!("casesync.toml names tls_cert without tls_key or the other way round"),
        };
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
        let mut spaces = Vec::new();
        for (index, (space, shared)) in shareds.into_iter().enumerate() {
            // The first space's API on the configured address; the others' on free ports beside.
            let address = if index == 0 { config.api.clone() } else { api_beside(&config.api) };
            let api_listener =
                TcpListener::bind(&address).await.with_context(|| format!("cannot listen on {address}"))?;
            let api_addr = api_listener.local_addr()?;
            if !api_addr.ip().is_loopback() {
                anyhow::bail!("the local case API must listen on a loopback address, not {api_addr}");
            }
            let cases = tonic::service::interceptor::InterceptedService::new(
                CasesServer::new(CaseService::new(shared.clone()))
                    .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
                crate::api_token::RequireToken::new(&api_token),
            );
            let router = server_builder()
                .add_service(health_service.clone())
                .add_service(reflection().build_v1()?)
                .add_service(reflection().build_v1alpha()?)
                .add_service(cases);
            let mut stop = shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                let incoming = no_delay(api_listener);
                let result = router
                    .serve_with_incoming_shutdown(incoming, async move {
                        stop.wait_for(|s| *s).await.map(|_| ()).unwrap_or(())
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "case API server failed");
                }
            }));
            // One task per peer, however often it was named; each is registered before this
            // returns, so the node's status lists every peer from the start. The first space's
            // peers: the config's and the caller's.
            let peers = if index == 0 { config.peers.clone() } else { space.peers.clone() };
            for url in distinct_peers(peers) {
                let wake = shared.add_peer(&url);
                tasks.push(tokio::spawn(run_peer(shared.clone(), url, wake, config.pull_every, shutdown.subscribe())));
            }
            spaces.push(ServedSpace { name: space.name, shared, api_addr });
        }

        let daemon_file = if config.announce {
            let path = config.data.join(DAEMON_FILE);
            let file = DaemonFile {
                api: spaces[0].api_addr.to_string(),
                sync: sync_addr.to_string(),
                pid: std::process::id(),
                token: api_token.clone(),
                spaces: spaces
                    .iter()
                    .map(|s| DaemonSpace {
                        name: s.name.clone(),
                        space: s.shared.space.to_hex(),
                        api: s.api_addr.to_string(),
                    })
                    .collect(),
            };
            write_private(&path, &serde_json::to_vec_pretty(&file)?)
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        } else {
            None
        };
        tracing::info!(device = %first.identity.author().device_id(), sync = %sync_addr, spaces = spaces.len(), relay, "node started");
        drop(first);
        Ok(Node { spaces, sync_addr, api_token, shutdown, tasks, daemon_file })
    }

    /// The address peers connect to.
    pub fn sync_addr(&self) -> SocketAddr {
        self.sync_addr
    }

    /// The sync URL (`http://addr`; the connection is always TLS between device keys).
    pub fn sync_url(&self) -> String {
        format!("http://{}", self.sync_addr)
    }

    /// The local case API address (of the first space).
    pub fn api_addr(&self) -> SocketAddr {
        self.spaces[0].api_addr
    }

    /// The local case API address of the space named `name`.
    pub fn api_addr_of(&self, name: &str) -> Option<SocketAddr> {
        self.spaces.iter().find(|s| s.name == name).map(|s| s.api_addr)
    }

    /// The shared state of the space named `name`.
    pub fn shared_of(&self, name: &str) -> Option<&Arc<Shared>> {
        self.spaces.iter().find(|s| s.name == name).map(|s| &s.shared)
    }

    /// Every space's name.
    pub fn space_names(&self) -> Vec<String> {
        self.spaces.iter().map(|s| s.name.clone()).collect()
    }

    /// The local API's token for this start.
    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// The shared state (store, identity, peers) of the first space.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.spaces[0].shared
    }

    /// Whether a failed write poisoned the store of any space (`supervise`).
    pub fn poisoned(&self) -> bool {
        self.spaces.iter().any(|space| space.shared.store.is_poisoned())
    }

    /// Writes one record durably in every space's store: whether the disk takes writes now. A
    /// failure poisons that store ([`Node::poisoned`]).
    pub async fn check_writable(&self) -> anyhow::Result<()> {
        for space in &self.spaces {
            let shared = space.shared.clone();
            tokio::task::spawn_blocking(move || shared.store.check_writable()).await??;
        }
        Ok(())
    }

    /// Stops every task and server and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for space in &self.spaces {
            space.shared.stopping.send_replace(true);
        }
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
        let held = |spaces: &[ServedSpace]| spaces.iter().any(|s| Arc::strong_count(&s.shared) > 1);
        while held(&self.spaces) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if held(&self.spaces) {
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

/// A loopback address beside `api`'s host with a free port (the API of a further space).
fn api_beside(api: &str) -> String {
    let host = api.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host);
    format!("{host}:0")
}

/// Concurrent gRPC calls (HTTP/2 streams) one connection may hold open.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 32;

/// Bytes a peer may send on one stream before this node reads them (HTTP/2's receive window).
/// What a stream waiting for room (`message_room`) or for the ingest holds besides; HTTP/2's
/// default is 1 MiB, which 32 member streams pushing large events held at once.
pub const STREAM_WINDOW_BYTES: u32 = 256 * 1024;

fn server_builder() -> Server {
    Server::builder()
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
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
