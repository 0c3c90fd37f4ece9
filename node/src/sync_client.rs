//! Outbound sync: connect to a peer over TLS between device keys, and exchange missing ranges —
//! once (`sync_once`) or live (`live_session`: a following pull and a following push on one
//! HTTP/2 connection with keep-alive).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use casesync_engine::codec::wire;
use casesync_engine::log::ingest::PreparedBatch;
use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::limits::VECTOR_PAGE_AUTHORS_MAX;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::bulk_catch_up::{batch_is_full, BulkCatchUp, FloodWatch, BULK_IDLE_MAX};
use crate::event_stream::{stream_events, STREAM_BUFFER_BATCHES, SYNC_MESSAGE_BYTES_MAX};
use crate::ingest_thread::{Pipeline, WAITING_LANDS_AFTER};
use crate::shared::{now_ms, PeerState, Shared};
use crate::tls;
use crate::transport::Transport;

/// How long a one-shot pull waits for the peer's next batch.
pub const PULL_IDLE_MAX: Duration = Duration::from_secs(60);

/// The port of a peer URL that names none.
pub const DEFAULT_PORT: u16 = 7000;

/// An endpoint with keep-alive, so a connection through a healed partition is noticed in seconds
/// rather than minutes.
fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(endpoint_without_keep_alive(url)?
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// An endpoint that never pings (only a simulation test's network asks for one, to show what
/// keep-alive is for: `Transport::http2_keep_alive`).
fn endpoint_without_keep_alive(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{url:?} is not a valid peer URL (like http://127.0.0.1:7000)"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true))
}

/// Connects to a node's local case API (plain HTTP/2 on loopback; every call carries the API
/// token, `api_token.rs`).
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    endpoint(url)?.connect().await.with_context(|| format!("cannot reach {url}"))
}

/// Connects to a peer's sync service over TLS between device keys (`tls.rs`), with `config`
/// (this device's certificate and its policy for the server's key). The URL's scheme is not
/// read: sync is always TLS.
pub async fn connect_peer(url: &str, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Channel> {
    connect_with(url, tls::Dialer { config, ca: None }).await
}

/// Connects with a [`tls::Dialer`] (a device-key server, or a CA-certified relay).
pub async fn connect_with(url: &str, dialer: tls::Dialer) -> anyhow::Result<Channel> {
    connect_over(Transport::Tcp, url, dialer).await
}

/// [`connect_with`] over `transport`.
pub async fn connect_over(transport: Transport, url: &str, dialer: tls::Dialer) -> anyhow::Result<Channel> {
    let endpoint = if transport.http2_keep_alive() { endpoint(url)? } else { endpoint_without_keep_alive(url)? };
    let connector = tower::service_fn(move |uri: tonic::transport::Uri| {
        let (dialer, transport) = (dialer.clone(), transport.clone());
        async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the peer URL names no host"))?
                .to_string();
            let stream = tls::dial_over(&transport, &host, uri.port_u16().unwrap_or(DEFAULT_PORT), &dialer).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connector).await.with_context(|| format!("cannot reach peer {url}"))
}

/// The host name of an `https://` URL, when it names one (not an address): such a peer is
/// checked by its CA-issued certificate for that name.
pub fn ca_host(url: &str) -> Option<String> {
    let uri: tonic::transport::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>().is_err().then(|| host.to_string())
}

/// What one sync exchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Events received and stored.
    pub received: u64,
    /// Events sent and accepted by the peer.
    pub sent: u64,
}

/// The ingests of one incoming stream: each returns how many events it stored.
pub type IngestPipeline = Pipeline<anyhow::Result<u64>>;

/// How many events these ingests stored, or the first one's failure.
fn stored(results: Vec<anyhow::Result<u64>>) -> anyhow::Result<u64> {
    results.into_iter().sum()
}

/// Waits until every batch handed on has landed; returns how many events they stored.
async fn landed(shared: &Shared, pipeline: &mut IngestPipeline) -> anyhow::Result<u64> {
    stored(pipeline.finish(&shared.ingest).await?)
}

/// An authenticated connection to one peer.
pub struct PeerClient {
    shared: Arc<Shared>,
    client: SyncClient<Channel>,
    /// The peer's device key.
    pub server: AuthorId,
}

impl PeerClient {
    /// Connects over TLS as this device; the server's device key is the one its handshake
    /// proved, and it must be welcome (`Shared::server_policy`) before anything is sent.
    ///
    /// An `https://` URL with a host name is a relay behind a CA-issued certificate: the
    /// certificate is checked for that name, then the relay proves its device key by signing
    /// this connection's TLS exporter value (`Hello`), and that key must be welcome too.
    pub async fn open(shared: Arc<Shared>, url: &str) -> anyhow::Result<PeerClient> {
        let (channel, server) = match ca_host(url) {
            None => {
                let seen = Arc::new(std::sync::Mutex::new(None));
                let config = tls::client_config(&shared.cert, shared.server_policy(), seen.clone())?;
                let channel = connect_over(shared.transport.clone(), url, tls::Dialer { config, ca: None }).await?;
                let server = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .ok_or_else(|| anyhow!("peer {url}: the TLS handshake proved no device key"))?;
                (channel, server)
            }
            Some(host) => {
                let binding = Arc::new(std::sync::Mutex::new(None));
                let config = tls::ca_client_config(&shared.cert, &shared.tls_roots)?;
                let dialer = tls::Dialer { config, ca: Some((host, binding.clone())) };
                let channel = connect_over(shared.transport.clone(), url, dialer).await?;
                let hello = SyncClient::new(channel.clone())
                    .hello(pb::HelloRequest {})
                    .await
                    .with_context(|| format!("peer {url} did not answer hello"))?
                    .into_inner();
                let binding = binding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .ok_or_else(|| anyhow!("peer {url}: no TLS exporter value"))?;
                let server = AuthorId::from_slice(&hello.device)
                    .map_err(|_| anyhow!("peer {url} sent a malformed device key"))?;
                casesync_engine::model::signing::VerifyingKey::new(&server)
                    .and_then(|key| key.verify(&tls::binding_digest(&binding), &hello.binding_signature))
                    .map_err(|_| anyhow!("peer {url} did not prove a device key on this connection"))?;
                (shared.server_policy())(&server)
                    .map_err(|why| anyhow!("peer {url}: server {} refused: {why}", server.device_id()))?;
                (channel, server)
            }
        };
        let client = SyncClient::new(channel)
            .max_decoding_message_size(SYNC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(SYNC_MESSAGE_BYTES_MAX);
        Ok(PeerClient { shared, client, server })
    }

    /// A request for the session's space (named in metadata too: a push's messages do not).
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.shared.space.to_hex().parse() {
            request.metadata_mut().insert(crate::shared::SPACE_HEADER, value);
        }
        request
    }

    fn space_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self.shared.space.as_bytes())
    }

    /// The peer's version vector, read in pages ([`VECTOR_PAGE_AUTHORS_MAX`] authors each);
    /// notes when it holds this device's events beyond the local head (local writes then wait
    /// until they are fetched). A peer that does not admit this device yet is shown the grant
    /// this device holds, once (`introduce.rs`), and asked again.
    pub async fn heads(&mut self) -> anyhow::Result<VersionVector> {
        match self.heads_pages().await {
            Err(refused) if is_permission_denied(&refused) => {
                let admitted = crate::introduce::introduce(&self.shared, &mut self.client)
                    .await
                    .with_context(|| format!("{refused:#}; showing the peer this device's grant failed"))?;
                if !admitted {
                    return Err(refused);
                }
                tracing::info!(peer = %self.server.device_id(), "the peer admits this device once shown its grant");
                self.heads_pages().await
            }
            other => other,
        }
    }

    async fn heads_pages(&mut self) -> anyhow::Result<VersionVector> {
        let mut vector = VersionVector::new();
        let mut after: Option<bytes::Bytes> = None;
        for _ in 0..HEADS_PAGES_MAX {
            let request = self.request(pb::HeadsRequest {
                space: self.space_bytes(),
                after: after.clone().unwrap_or_default(),
                limit: 0,
            });
            let reply = self.client.heads(request).await.context("heads refused")?.into_inner();
            let page = reply.heads.unwrap_or_default();
            let (first, last) = (page.heads.first().map(|dot| dot.author.clone()), page.heads.last());
            // Every page starts after the one before: a peer repeating a page cannot keep us here.
            if let (Some(previous), Some(first)) = (&after, &first) {
                if first <= previous {
                    bail!("peer sent a page of heads that does not start after the one before");
                }
            }
            vector.merge(&wire::vector_from_pb(&page).context("peer sent a malformed version vector")?);
            match (reply.more, last) {
                (true, Some(last)) => after = Some(last.author.clone()),
                (true, None) => bail!("peer said more heads follow but sent none"),
                (false, _) => return Ok(self.noted_heads(vector)),
            }
        }
        bail!("peer's heads span more than {HEADS_PAGES_MAX} pages")
    }

    /// Notes what the peer holds (see [`PeerClient::heads`]).
    fn noted_heads(&self, vector: VersionVector) -> VersionVector {
        let me = self.shared.identity.author();
        if vector.get(&me) > self.shared.store.vector(&self.shared.space).get(&me) {
            // A claim, not evidence: the fence rises only when the events themselves arrive
            // (`Shared::store_from_peer`), which this session's pull asks for next.
            tracing::info!(seq = vector.get(&me), "a peer says it holds this device's events beyond the local head");
        }
        self.shared.reset_known(&self.server, &vector);
        vector
    }

    /// The ingests of one stream from this peer. Each fails on a refusal of the peer's own
    /// events (after the honest part landed); refused events of other authors it relays are
    /// noted and the stream goes on (`Shared::session_ending`).
    fn pipeline(&self) -> IngestPipeline {
        let (shared, server) = (self.shared.clone(), self.server);
        IngestPipeline::new(move |batch| {
            let report = shared.store_from_peer(&server, batch)?;
            if let Some(first) = shared.session_ending(&server, &report) {
                bail!("peer {} sent an event we refuse: {}", server.device_id(), first.reason);
            }
            Ok(report.accepted)
        })
    }

    /// Decodes and hashes one received batch here and hands it to the ingest thread (see
    /// [`Pipeline::push`]); returns how many events the ingests that ended meanwhile stored.
    async fn ingest(&self, pipeline: &mut IngestPipeline, batch: pb::EventBatch) -> anyhow::Result<u64> {
        let prepared = PreparedBatch::received(self.shared.space, batch.events, now_ms());
        stored(pipeline.push(&self.shared.ingest, prepared).await?)
    }

    /// Pulls once what we lack of what the peer holds (`peer_has`, its heads): Pulls that list
    /// the authors we lack events of, [`VECTOR_PAGE_AUTHORS_MAX`] a request, so no request grows
    /// with the authors both hold. `progress` is told the running count of received events.
    pub async fn pull_once(&mut self, peer_has: &VersionVector, mut progress: impl FnMut(u64)) -> anyhow::Result<u64> {
        let wanted = wanted_from(peer_has, &self.shared.store.vector(&self.shared.space));
        let mut received = 0;
        for page in wanted.chunks(VECTOR_PAGE_AUTHORS_MAX) {
            let request = self.request(pb::PullRequest {
                space: self.space_bytes(),
                have: Some(pb::VersionVector { heads: page.to_vec() }),
                follow: false,
                listed: true,
            });
            received += self.pull_stream(request, received, &mut progress).await?;
        }
        Ok(received)
    }

    /// Receives one non-following Pull to its end; `progress` is told the running count of
    /// received events from `before`. Returns how many this stream's ingests stored.
    async fn pull_stream(
        &mut self,
        request: Request<pb::PullRequest>,
        before: u64,
        progress: &mut impl FnMut(u64),
    ) -> anyhow::Result<u64> {
        let mut stream = self.client.pull(request).await.context("pull refused")?.into_inner();
        let mut received = 0;
        let mut pipeline = self.pipeline();
        // A peer that stops sending mid-pull ends the session (and a bulk catch-up with it);
        // what waits behind the ingest in flight lands as soon as it goes quiet.
        loop {
            let quiet_after = if pipeline.holds_waiting() { WAITING_LANDS_AFTER } else { PULL_IDLE_MAX };
            match tokio::time::timeout(quiet_after, stream.message()).await {
                Ok(message) => match message.context("pull stream failed")? {
                    Some(batch) => received += self.ingest(&mut pipeline, batch).await?,
                    None => break,
                },
                Err(_) if pipeline.holds_waiting() => received += landed(&self.shared, &mut pipeline).await?,
                Err(_) => bail!("the peer sent nothing for {} s", PULL_IDLE_MAX.as_secs()),
            }
            progress(before + received);
        }
        received += landed(&self.shared, &mut pipeline).await?;
        progress(before + received);
        Ok(received)
    }

    /// Pushes what the peer lacks once.
    pub async fn push_once(&mut self, peer_has: VersionVector) -> anyhow::Result<u64> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_BATCHES);
        tokio::spawn(stream_events(self.shared.clone(), self.server, peer_has, false, tx));
        let outgoing = ReceiverStream::new(rx).filter_map(|r| r.ok());
        let reply = self.client.push(self.request(outgoing)).await.context("push refused")?.into_inner();
        Ok(reply.accepted)
    }
}

/// Most pages of heads one session reads ([`PeerClient::heads`]): 67M authors.
const HEADS_PAGES_MAX: usize = 4096;

/// The authors `peer_has` holds events of beyond `local`, each with the seq `local` holds (0:
/// none), in key order: what a listed Pull asks for.
fn wanted_from(peer_has: &VersionVector, local: &VersionVector) -> Vec<pb::Dot> {
    peer_has
        .iter()
        .filter(|(author, seq)| **seq > local.get(author))
        .map(|(author, _)| pb::Dot { author: bytes::Bytes::copy_from_slice(author.as_bytes()), seq: local.get(author) })
        .collect()
}

/// Reads the peer's heads and pulls what they show we lack.
async fn pull_what_heads_show(peer: &mut PeerClient) -> anyhow::Result<()> {
    let heads = peer.heads().await?;
    if !heads.missing_in(&peer.shared.store.vector(&peer.shared.space)).is_empty() {
        peer.pull_once(&heads, |_| {}).await?;
    }
    Ok(())
}

/// One sync in both directions: push what the peer lacks, pull what we lack.
pub async fn sync_once(shared: Arc<Shared>, url: &str, progress: impl FnMut(u64, u64)) -> anyhow::Result<SyncCounts> {
    let mut progress = progress;
    let mut peer = PeerClient::open(shared.clone(), url).await?;
    let peer_has = peer.heads().await?;
    let local = shared.store.vector(&shared.space);
    let expected: u64 = peer_has.missing_in(&local).iter().map(|r| r.len()).sum();
    let sent = peer.push_once(peer_has.clone()).await?;
    let bulk = BulkCatchUp::start_if_worth_it(&shared, expected);
    let received = peer.pull_once(&peer_has, |n| progress(n, expected)).await?;
    bulk.finish().await?;
    shared.update_peer(url, |info| {
        info.last_sync_ms = now_ms();
        info.device = Some(peer.server);
    });
    Ok(SyncCounts { received, sent })
}

/// A live session: catch up both ways, then follow both ways until the connection fails or
/// `shutdown` fires. With `pull_every`, also checks the peer's heads on that schedule.
pub async fn live_session(
    shared: Arc<Shared>,
    url: &str,
    pull_every: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut peer = PeerClient::open(shared.clone(), url).await?;
    shared.update_peer(url, |info| {
        info.state = PeerState::Syncing;
        info.device = Some(peer.server);
        info.last_error.clear();
    });
    let peer_has = peer.heads().await?;
    let missing: u64 = peer_has.missing_in(&shared.store.vector(&shared.space)).iter().map(|r| r.len()).sum();
    let mut flood = FloodWatch::with(BulkCatchUp::start_if_worth_it(&shared, missing));
    let (tx, rx) = mpsc::channel(STREAM_BUFFER_BATCHES);
    let producer = tokio::spawn(stream_events(shared.clone(), peer.server, peer_has.clone(), true, tx));
    // Caught-up markers (empty batches) are pushed too: they end a bulk catch-up at the peer.
    let outgoing = ReceiverStream::new(rx).filter_map(|r| r.ok());
    let mut push_client = peer.client.clone();
    let push_request = peer.request(outgoing);
    let mut push = Box::pin(async move { push_client.push(push_request).await });

    // The following pull lists the authors we lack events of (past one request's worth, a
    // one-shot pull catches up first). The peer takes us to hold the rest up to its heads when
    // it reads the request: what it stored since its heads were read is fetched once the stream
    // has caught up (`gap_closed`).
    if wanted_from(&peer_has, &shared.store.vector(&shared.space)).len() > VECTOR_PAGE_AUTHORS_MAX {
        peer.pull_once(&peer_has, |_| {}).await?;
    }
    let wanted = wanted_from(&peer_has, &shared.store.vector(&shared.space));
    let request = peer.request(pb::PullRequest {
        space: peer.space_bytes(),
        have: Some(pb::VersionVector { heads: wanted }),
        follow: true,
        listed: true,
    });
    let mut gap_closed = false;
    let mut stream = peer.client.pull(request).await.context("pull refused")?.into_inner();
    let mut pipeline = peer.pipeline();
    let period = pull_every.unwrap_or(Duration::from_secs(3600)).max(Duration::from_millis(100));
    let mut schedule = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let result = loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(batch)) if batch.events.is_empty() => {
                    if let Err(e) = landed(&shared, &mut pipeline).await { break Err(e); }
                    if let Err(e) = flood.finish().await { break Err(e); }
                    if !gap_closed {
                        gap_closed = true;
                        if let Err(e) = pull_what_heads_show(&mut peer).await { break Err(e); }
                    }
                    shared.update_peer(url, |info| { info.state = PeerState::Connected; info.last_sync_ms = now_ms(); });
                }
                Ok(Some(batch)) => {
                    let full = batch_is_full(&batch);
                    match flood.before(&shared, &batch).await {
                        Err(e) => break Err(e),
                        Ok(true) => {
                            // A replay, not a flood: the catch-up ends.
                            if let Err(e) = landed(&shared, &mut pipeline).await { break Err(e); }
                            if let Err(e) = flood.finish().await { break Err(e); }
                        }
                        Ok(false) => {}
                    }
                    if let Err(e) = peer.ingest(&mut pipeline, batch).await { break Err(e); }
                    if !full && flood.in_bulk() {
                        // The flood ended: its last batch lands before the views are completed.
                        if let Err(e) = landed(&shared, &mut pipeline).await { break Err(e); }
                        if let Err(e) = flood.finish().await { break Err(e); }
                    }
                    shared.update_peer(url, |info| info.last_sync_ms = now_ms());
                }
                Ok(None) => break Err(anyhow!("peer ended the live stream")),
                Err(status) => break Err(anyhow!("live stream failed: {}", status.message())),
            },
            pushed = &mut push => break match pushed {
                Ok(_) => Err(anyhow!("peer closed the push stream")),
                Err(status) => Err(anyhow!("peer refused a push: {}", status.message())),
            },
            _ = schedule.tick(), if pull_every.is_some() => {
                if let Err(e) = landed(&shared, &mut pipeline).await { break Err(e); }
                if let Err(e) = pull_what_heads_show(&mut peer).await { break Err(e); }
            }
            // A backlog announced (or a flood begun) and then not sent: the bulk catch-up ends
            // and commands wait no longer.
            _ = tokio::time::sleep(BULK_IDLE_MAX), if flood.in_bulk() => {
                if let Err(e) = landed(&shared, &mut pipeline).await { break Err(e); }
                if let Err(e) = flood.finish().await { break Err(e); }
            }
            // A quiet stream lands what waits, so it holds no room others need.
            _ = tokio::time::sleep(WAITING_LANDS_AFTER), if pipeline.holds_waiting() => {
                if let Err(e) = landed(&shared, &mut pipeline).await { break Err(e); }
            }
            _ = shutdown.changed() => break Ok(()),
        }
    };
    producer.abort();
    // A batch still in flight lands (or fails) before the session reports its end; a bulk
    // catch-up still running ends with it (dropping it would complete the views in the
    // background).
    let last = landed(&shared, &mut pipeline).await;
    let views = flood.finish().await;
    result.and(last.map(|_| ())).and(views)
}

/// Whether a call failed because the peer does not admit this device.
fn is_permission_denied(error: &anyhow::Error) -> bool {
    error.downcast_ref::<tonic::Status>().is_some_and(|status| status.code() == tonic::Code::PermissionDenied)
}
