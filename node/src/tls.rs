//! TLS 1.3 between device keys: the transport of every sync connection.
//!
//! Each node presents a self-signed certificate made from its ed25519 device key, as a server
//! and as a client. Neither side trusts a certificate authority: each verifies the other's
//! handshake signature with the ed25519 key the certificate carries, so a connection is
//! authenticated as exactly one device key, bound to this TLS session (nothing a listener
//! could capture and replay). Which keys are welcome is the caller's policy: the space's
//! membership (`shared.rs`), checked by the client before it sends anything and by the server
//! before it reads any request.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::signing::DeviceKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::transport::{Conn, SyncListener, Transport};

/// The TLS exporter label of the value a device signs to bind its key to one connection.
const BINDING_LABEL: &[u8] = b"EXPORTER-casesync-device-binding-v1";

/// What a server signs to prove its device key on a connection whose certificate does not carry
/// it (a relay behind a CA-issued certificate): this connection's exporter value.
pub fn binding_digest(binding: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"casesync-binding-v1");
    hasher.update(binding);
    *hasher.finalize().as_bytes()
}

/// How long a peer may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server to take them.
const ACCEPTED_BACKLOG: usize = 64;
/// Sync connections open at once, handshakes included: past it a new connection is closed at
/// once (a flood of connections holds no more than this many descriptors and tasks).
pub const SYNC_CONNECTIONS_MAX: usize = 256;
/// The name in every device certificate (the identity is the key, not a name).
const CERT_NAME: &str = "casesync";

/// An ed25519 public key as it sits in a certificate's SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// PKCS#8 v1 wrapping of an ed25519 private key (RFC 8410), before its 32 bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A device's certificate and private key, for both ends of a connection.
#[derive(Clone, Debug)]
pub struct DeviceCert {
    cert: CertificateDer<'static>,
    pkcs8: Vec<u8>,
}

impl DeviceCert {
    /// The self-signed certificate of a device key.
    pub fn new(key: &DeviceKey) -> anyhow::Result<DeviceCert> {
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&key.secret());
        let der = PrivatePkcs8KeyDer::from(pkcs8.clone());
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .context("making the device's TLS key")?;
        let params = rcgen::CertificateParams::new(vec![CERT_NAME.to_string()])
            .context("making the device's TLS certificate")?;
        let cert = params.self_signed(&pair).context("signing the device's TLS certificate")?;
        Ok(DeviceCert { cert: cert.der().clone(), pkcs8 })
    }

    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone())))
    }
}

/// The device key a certificate carries (its first ed25519 SubjectPublicKeyInfo). Sound as an
/// identity only because the handshake signature is then verified with this very key
/// ([`verify_handshake`]): a peer is whoever proved it holds the key we read here.
pub fn cert_device(cert: &CertificateDer<'_>) -> Option<AuthorId> {
    let bytes = cert.as_ref();
    let at = bytes.windows(ED25519_SPKI_PREFIX.len()).position(|w| w == ED25519_SPKI_PREFIX)?;
    let start = at + ED25519_SPKI_PREFIX.len();
    AuthorId::from_slice(bytes.get(start..start + 32)?).ok()
}

fn bad_cert() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// Verifies a TLS 1.3 handshake signature with the certificate's ed25519 key.
fn verify_handshake(
    message: &[u8],
    cert: &CertificateDer<'_>,
    signed: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if signed.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoSignatureSchemesInCommon));
    }
    let device = cert_device(cert).ok_or_else(bad_cert)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(device.as_bytes()).map_err(|_| bad_cert())?;
    let signature = ed25519_dalek::Signature::from_slice(signed.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    key.verify_strict(message, &signature)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
}

/// Which device keys a client accepts as the server: `Err` names why not.
pub type ServerPolicy = Arc<dyn Fn(&AuthorId) -> Result<(), String> + Send + Sync>;

/// The client's check of the server: a certificate carrying a device key the policy accepts,
/// and a handshake signed with that key. The key is noted for the caller.
struct ServerKeyVerifier {
    policy: ServerPolicy,
    seen: Arc<Mutex<Option<AuthorId>>>,
}

impl std::fmt::Debug for ServerKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeyVerifier")
    }
}

impl ServerCertVerifier for ServerKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let device = cert_device(end_entity).ok_or_else(bad_cert)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // A channel reconnects by itself: to the key it first verified, or not at all.
        let changed = seen.filter(|first| *first != device).map(|first| format!("it was {} before", first.device_id()));
        changed.map_or_else(|| (self.policy)(&device), Err).map_err(|why| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                PeerRefused(format!("server {} refused: {why}", device.device_id())),
            ))))
        })?;
        *seen = Some(device);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake(message, cert, signed)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Why a peer's key was refused (carried through rustls's error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerRefused(String);

/// The server's check of a client: a certificate carrying an ed25519 device key and a handshake
/// signed with it. Whether that device may sync is decided per request, from the membership.
#[derive(Debug)]
struct ClientKeyVerifier;

impl ClientCertVerifier for ClientKeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        cert_device(end_entity).ok_or_else(bad_cert)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake(message, cert, signed)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// aws-lc-rs, with the post-quantum hybrid key exchange preferred.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration builder: TLS 1.3 only, with this module's provider.
fn client_builder() -> anyhow::Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    Ok(rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?)
}

/// A client configuration speaking HTTP/2, shared.
fn h2_client(mut config: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A server's TLS configuration: this device's certificate; clients must present theirs.
pub fn server_config(cert: &DeviceCert) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = cert.chain();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientKeyVerifier))
        .with_single_cert(chain, key)
        .context("the device's TLS certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client's TLS configuration: this device's certificate, and `policy` for the server's key.
/// The server's key, once the handshake verified it, is left in `seen`.
pub fn client_config(
    cert: &DeviceCert,
    policy: ServerPolicy,
    seen: Arc<Mutex<Option<AuthorId>>>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (chain, key) = cert.chain();
    let config = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerKeyVerifier { policy, seen }))
        .with_client_auth_cert(chain, key)
        .context("the device's TLS certificate")?;
    Ok(h2_client(config))
}

/// A client configuration that presents no certificate (to show a server refuses it).
#[doc(hidden)]
pub fn anonymous_client_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let seen = Arc::new(Mutex::new(None));
    let policy: ServerPolicy = Arc::new(|_| Ok(()));
    let config = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerKeyVerifier { policy, seen }))
        .with_no_client_auth();
    Ok(h2_client(config))
}

/// Where a client leaves a connection's TLS exporter value, once its handshake is done.
pub type BindingSlot = Arc<Mutex<Option<[u8; 32]>>>;

/// How a client checks a server: by the device key its certificate carries (every node), or
/// by a CA-issued certificate for the host name, the device key proven after (a public relay).
#[derive(Clone)]
pub struct Dialer {
    /// The TLS configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// With a CA-issued certificate: the host name it must be for, and where this connection's
    /// exporter value is left for the device key's proof.
    pub ca: Option<(String, BindingSlot)>,
}

/// Opens a TLS connection to `host:port` over TCP.
pub async fn dial(host: &str, port: u16, dialer: &Dialer) -> std::io::Result<TlsClientStream> {
    dial_over(&Transport::Tcp, host, port, dialer).await
}

/// Opens a TLS connection to `host:port` over `transport`.
pub async fn dial_over(
    transport: &Transport,
    host: &str,
    port: u16,
    dialer: &Dialer,
) -> std::io::Result<TlsClientStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Some((_, slot)) = &dialer.ca {
        // A CA-certified relay proves its device key once per connection, in the session that
        // made it: a channel reconnecting by itself would skip that proof, so it may not; the
        // next session connects (and proves) afresh.
        if slot.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the relay's connection ended: a new session proves its device key again",
            ));
        }
    }
    let tcp = transport.connect(host, port).await?;
    let name = dialer.ca.as_ref().map_or(CERT_NAME.to_string(), |(name, _)| name.clone());
    let name = ServerName::try_from(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsConnector::from(dialer.config.clone()).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    if let Some((_, slot)) = &dialer.ca {
        let mut binding = [0u8; 32];
        stream
            .get_ref()
            .1
            .export_keying_material(&mut binding, BINDING_LABEL, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(binding);
    }
    Ok(TlsClientStream(stream))
}

/// A server configuration with a CA-issued certificate chain and its key (PEM files): for a
/// relay reachable from the internet under its host name. Clients still present device
/// certificates.
pub fn server_config_from_pem(
    chain: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .with_context(|| format!("reading the certificate chain {}", chain.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", chain.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientKeyVerifier))
        .with_single_cert(certs, key)
        .context("the relay's certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Roots from a PEM file (a private CA), beside the web's.
pub fn roots_from_pem(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))
}

/// A client configuration that checks a server's CA-issued certificate against the web's roots
/// (Mozilla's, compiled in) and `extra` roots, presenting this device's certificate.
pub fn ca_client_config(
    cert: &DeviceCert,
    extra: &[CertificateDer<'static>],
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for root in extra {
        roots.add(root.clone()).context("a configured root certificate is not usable")?;
    }
    let (chain, key) = cert.chain();
    let config = client_builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the device's TLS certificate")?;
    Ok(h2_client(config))
}

/// A client's TLS connection.
pub struct TlsClientStream(tokio_rustls::client::TlsStream<Conn>);

/// Who is at the other end of a server's connection: its device key, proven in the handshake.
#[derive(Clone, Copy, Debug)]
pub struct PeerDevice {
    /// The device key.
    pub device: AuthorId,
    /// Its address.
    pub remote: Option<SocketAddr>,
    /// This connection's exporter value (see [`binding_digest`]).
    pub binding: [u8; 32],
}

/// A server's TLS connection, with the device it authenticated.
pub struct TlsServerStream {
    io: tokio_rustls::server::TlsStream<Conn>,
    peer: PeerDevice,
    /// This connection's place among [`SYNC_CONNECTIONS_MAX`], given back when it closes.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for TlsServerStream {
    type ConnectInfo = PeerDevice;

    fn connect_info(&self) -> PeerDevice {
        self.peer
    }
}

macro_rules! delegate_io {
    ($type:ty, $($field:tt)+) => {
        impl AsyncRead for $type {
            fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.$($field)+).poll_read(cx, buf)
            }
        }

        impl AsyncWrite for $type {
            fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.$($field)+).poll_write(cx, buf)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.$($field)+).poll_flush(cx)
            }

            fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.$($field)+).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.$($field)+).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$($field)+.is_write_vectored()
            }
        }
    };
}

delegate_io!(TlsServerStream, io);
delegate_io!(TlsClientStream, 0);

/// The connections of a TLS listener, each handshaken on a task of its own (bounded in time), so
/// a slow or silent peer holds up nobody; at most [`SYNC_CONNECTIONS_MAX`] at once. Ends when
/// the server drops it.
pub fn incoming(
    listener: impl Into<SyncListener>,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsServerStream>> {
    incoming_at_most(listener, config, SYNC_CONNECTIONS_MAX)
}

/// How long the accept loop waits for the slot of a handshake it displaced to free.
const DISPLACED_SLOT_WAIT: Duration = Duration::from_millis(100);

/// [`incoming`] with at most `connections` open at once. When all are taken, a new connection
/// displaces the oldest one still in its handshake (a flood of silent connections cannot keep an
/// honest device out: its handshake takes milliseconds, theirs never ends); when every one has
/// completed its handshake, the new connection is closed at once.
pub fn incoming_at_most(
    listener: impl Into<SyncListener>,
    config: Arc<rustls::ServerConfig>,
    connections: usize,
) -> ReceiverStream<std::io::Result<TlsServerStream>> {
    let mut listener = listener.into();
    let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    // Handshakes under way, oldest first: (id, the task to abort when displaced).
    let handshaking: Arc<Mutex<std::collections::VecDeque<(u64, tokio::task::AbortHandle)>>> = Arc::default();
    tokio::spawn(async move {
        for id in 0u64.. {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, then go on.
                        tracing::warn!(%error, "accepting a sync connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    let oldest = {
                        let mut under_way = handshaking.lock().unwrap_or_else(|p| p.into_inner());
                        loop {
                            match under_way.pop_front() {
                                Some((_, task)) if task.is_finished() => continue,
                                other => break other,
                            }
                        }
                    };
                    let Some((_, task)) = oldest else {
                        tracing::debug!(%remote, "too many sync connections: closed");
                        drop(tcp);
                        continue;
                    };
                    task.abort();
                    match tokio::time::timeout(DISPLACED_SLOT_WAIT, slots.clone().acquire_owned()).await {
                        Ok(Ok(slot)) => slot,
                        _ => {
                            tracing::debug!(%remote, "too many sync connections: closed");
                            drop(tcp);
                            continue;
                        }
                    }
                }
            };
            let (acceptor, tx, under_way) = (acceptor.clone(), tx.clone(), handshaking.clone());
            let mut under_way_now = handshaking.lock().unwrap_or_else(|p| p.into_inner());
            let task = tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                under_way.lock().unwrap_or_else(|p| p.into_inner()).retain(|(other, _)| *other != id);
                let io = match handshake {
                    Ok(Ok(io)) => io,
                    Ok(Err(error)) => return tracing::debug!(%remote, %error, "TLS handshake refused"),
                    Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
                };
                let device = io.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(cert_device);
                let Some(device) = device else {
                    return tracing::debug!(%remote, "a peer without a device certificate");
                };
                let mut binding = [0u8; 32];
                if let Err(error) = io.get_ref().1.export_keying_material(&mut binding, BINDING_LABEL, None) {
                    return tracing::debug!(%remote, %error, "no TLS exporter");
                }
                let peer = PeerDevice { device, remote: Some(remote), binding };
                let _ = tx.send(Ok(TlsServerStream { io, peer, _slot: slot })).await;
            });
            // Registered before the task can run to its end (the list is locked meanwhile).
            under_way_now.push_back((id, task.abort_handle()));
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_certificate_carries_its_key() {
        let key = DeviceKey::from_secret([7; 32]);
        let cert = DeviceCert::new(&key).unwrap();
        assert_eq!(cert_device(&cert.cert), Some(key.author()));
        assert_eq!(cert_device(&CertificateDer::from(vec![0u8; 40])), None);
        server_config(&cert).unwrap();
    }
}
