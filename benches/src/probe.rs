//! The harness's own view into running nodes: a bench device key that each node knows, used to
//! read a node's heads cheaply over the sync API (Status would hash every case on each poll), and
//! clients to the local case API.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use casesync_engine::codec::wire;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_proto::v1 as pb;
use casesync_proto::v1::cases_client::CasesClient;
use casesync_proto::v1::sync_client::SyncClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Largest message the harness accepts.
const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The harness's device identity.
#[derive(Clone, Debug)]
pub struct ProbeKey {
    /// Its key.
    pub key: DeviceKey,
    /// The space under test.
    pub space: SpaceId,
}

impl ProbeKey {
    /// A fixed bench key for `space`.
    pub fn new(space: SpaceId) -> ProbeKey {
        ProbeKey { key: DeviceKey::from_secret(*blake3::hash(b"casesync-bench-probe").as_bytes()), space }
    }

    /// The key in hex (granted a reader's role in the bench space).
    pub fn hex(&self) -> String {
        self.key.author().to_hex()
    }
}

/// Connects to a URL, retrying (bounded) while the server comes up.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match casesync_node::sync_client::connect(url).await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Where a node's local case API listens, and its token (from `daemon.json`).
#[derive(Clone, Debug)]
pub struct Api {
    /// `http://address:port`.
    pub url: String,
    /// The token every call carries.
    pub token: String,
}

/// A client of a node's local case API.
pub async fn cases_client(
    api: &Api,
) -> anyhow::Result<CasesClient<InterceptedService<Channel, casesync_node::api_token::WithToken>>> {
    let token = casesync_node::api_token::WithToken::new(&api.token).context("the API token is not valid text")?;
    Ok(CasesClient::with_interceptor(connect(&api.url).await?, token)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

/// A sync-API client over TLS as the probe's device key (a reader of the bench space), used to
/// read heads.
pub struct HeadsProbe {
    client: SyncClient<Channel>,
    key: ProbeKey,
}

impl HeadsProbe {
    /// Connects (retrying, bounded, while the node comes up); the harness trusts its own nodes'
    /// keys.
    pub async fn open(sync_url: &str, key: ProbeKey) -> anyhow::Result<HeadsProbe> {
        let cert = casesync_node::tls::DeviceCert::new(&key.key)?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let config = casesync_node::tls::client_config(&cert, std::sync::Arc::new(|_| Ok(())), seen)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            match casesync_node::sync_client::connect_peer(sync_url, config.clone()).await {
                Ok(channel) => break channel,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let client = SyncClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        Ok(HeadsProbe { client, key })
    }

    /// The node's version vector.
    pub async fn heads(&mut self) -> anyhow::Result<VersionVector> {
        let request = tonic::Request::new(pb::HeadsRequest {
            space: bytes::Bytes::copy_from_slice(self.key.space.as_bytes()),
            ..Default::default()
        });
        let reply = self.client.heads(request).await.map_err(|s| anyhow!("heads: {}", s.message()))?.into_inner();
        wire::vector_from_pb(&reply.heads.unwrap_or_default()).map_err(|e| anyhow!("heads: {e}"))
    }

    /// Polls heads every `every` until the node holds `events` events; fails after `timeout`.
    /// Returns the time at which the count was first seen.
    pub async fn wait_for_events(
        &mut self,
        events: u64,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut last = 0;
        loop {
            last = self.heads().await.map(|v| v.total()).unwrap_or(last);
            if last >= events {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("node holds {last} of {events} events after {timeout:?}");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Waits until a node's case views include every event it holds (a bulk catch-up ends with a
/// rebuild, which a sync is not done without); returns when they did.
pub async fn wait_views_current(api_url: &Api, every: Duration, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut client = cases_client(api_url).await?;
    loop {
        let request = pb::StatusRequest { skip_state_hash: true };
        let behind = match tokio::time::timeout(Duration::from_secs(30), client.status(request)).await {
            Ok(Ok(reply)) => reply.into_inner().projections_behind,
            _ => u64::MAX,
        };
        if behind == 0 {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the node's case views still lack {behind} events after {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// `events` and `state_hash` of a node, from its case API.
pub async fn status(api_url: &Api) -> anyhow::Result<pb::NodeStatus> {
    let mut client = cases_client(api_url).await?;
    let reply = tokio::time::timeout(Duration::from_secs(300), client.status(pb::StatusRequest::default()))
        .await
        .context("status timed out")?
        .map_err(|s| anyhow!("status: {}", s.message()))?;
    Ok(reply.into_inner())
}
