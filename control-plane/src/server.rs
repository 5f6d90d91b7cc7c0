//! Serving the controller's gRPC services (identity and discovery, on one port) over
//! TLS, on a listener the caller bound (so tests bind `127.0.0.1:0`).
//!
//! TLS 1.3, ALPN `h2`, and a certificate the issuer signs for the controller's own
//! SPIFFE ID, which proxies check with `trellis_identity::tls::expect_peer`. A client
//! certificate is optional: a proxy has none when it first calls (getting one is why
//! it calls, and that call authenticates by token), but once it has one it presents
//! it on its discovery stream, and the handshake verifies it with the mesh's own rules
//! (`trellis_identity::tls::server_config_optional_client`: a chain to the trust
//! anchors, a client usage, one SPIFFE URI SAN), the ones a sidecar applies to its
//! callers. The SPIFFE ID of a verified client certificate travels with each request
//! as its [`Peer`].
//!
//! Each TLS handshake runs in its own task under a deadline, so a slow or broken
//! client never holds up the accept loop; tonic only sees finished handshakes.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
// tonic re-exports tokio-stream for its generated code; the channel adapter is all
// the server needs from it.
use tonic::Request;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tracing::Instrument;
use trellis_identity::SpiffeId;
use trellis_identity::tls::{peer_identity, server_config_optional_client};

use crate::Error;
use crate::ca::Ca;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The controller's ServiceAccount, which its SPIFFE ID names.
pub const CONTROLLER_NAMESPACE: &str = "trellis-system";
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "trellis-controller";

/// DNS names in the serving certificate, for tools that check names rather than SPIFFE
/// IDs (grpcurl, browsers); proxies ignore them.
pub const CONTROLLER_DNS_NAMES: &[&str] = &["trellis-controller.trellis-system.svc", "localhost"];

/// Finished handshakes waiting for tonic; beyond this, handshake tasks wait.
const HANDSHAKE_BACKLOG: usize = 64;

/// Discovery streams live for as long as their proxy: HTTP/2 pings find the ones
/// whose proxy vanished without closing (a node lost, a partition), so that their
/// tasks end and `/proxies` stops listing them.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `spiffe://<trust-domain>/ns/trellis-system/sa/trellis-controller`.
pub fn controller_identity(trust_domain: &str) -> Result<SpiffeId, Error> {
    SpiffeId::for_service_account(
        trust_domain,
        CONTROLLER_NAMESPACE,
        CONTROLLER_SERVICE_ACCOUNT,
    )
    .map_err(|e| Error::InvalidFlag {
        flag: "trust-domain",
        value: trust_domain.to_string(),
        reason: e.to_string(),
    })
}

/// The rustls server configuration: TLS 1.3, ALPN `h2`, an optional client
/// certificate verified against the CA's trust anchors, and the serving certificate
/// `cert` holds.
pub fn tls_config(cert: Arc<ServingCert>) -> Result<ServerConfig, Error> {
    let anchors = cert.ca.anchors().clone();
    Ok(server_config_optional_client(&anchors, cert, &[b"h2"])?)
}

/// Serves the gRPC services in `routes` on `listener` until `shutdown` completes.
/// Open streams must end by themselves on shutdown (the discovery service's do):
/// tonic waits for them.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (handshaken, incoming) = mpsc::channel(HANDSHAKE_BACKLOG);
    let accepting = tokio::spawn(accept(listener, TlsAcceptor::from(tls), handshaken));
    let served = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_routes(routes)
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await;
    accepting.abort();
    Ok(served?)
}

/// Accepts TCP connections forever and hands each to its own handshake task.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<io::Result<TlsConnection>>,
) {
    let mut next_id: u64 = 0;
    while !handshaken.is_closed() {
        let (tcp, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: pausing lets connections close.
                tracing::warn!(%error, "cannot accept a connection; retrying in 100ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let span = tracing::info_span!("conn", id = next_id, %src);
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        tokio::spawn(
            async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // A closed channel means the server is shutting down: the
                        // connection is dropped, which is what the client should see.
                        let _ = handshaken.send(Ok(TlsConnection(tls))).await;
                    }
                    Ok(Err(error)) => tracing::info!(%error, "TLS handshake failed"),
                    Err(_) => tracing::info!(
                        timeout = ?HANDSHAKE_TIMEOUT,
                        "TLS handshake timed out"
                    ),
                }
            }
            .instrument(span),
        );
    }
}

/// A server-side TLS connection, as tonic needs it: readable, writable, and able to
/// say who is on the other end (its [`Peer`], in every request's extensions).
pub struct TlsConnection(TlsStream<TcpStream>);

/// Who sent a request: the client's address, and the SPIFFE ID of the client
/// certificate it presented, which the handshake verified; `None` without one.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    pub identity: Option<SpiffeId>,
}

impl Peer {
    pub fn of<T>(request: &Request<T>) -> Option<&Peer> {
        request.extensions().get::<Peer>()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        let (tcp, tls) = self.0.get_ref();
        let addr = tcp.peer_addr().ok();
        // Only a chain the verifier accepted gets here; it carries one SPIFFE ID.
        let identity = peer_identity(tls.peer_certificates()).ok();
        Peer { addr, identity }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The controller's serving certificate. It lasts `--cert-lifetime` like a workload's
/// and is re-issued, during a handshake, once 70 % of that has passed: a controller
/// that runs for weeks never presents an expired certificate, and live connections
/// keep the one they started with.
pub struct ServingCert {
    ca: Arc<Ca>,
    id: SpiffeId,
    lifetime: Duration,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    renew_at: Instant,
}

impl ServingCert {
    /// Issues the first serving certificate for `id`.
    pub fn new(ca: Arc<Ca>, id: SpiffeId, lifetime: Duration) -> Result<Self, Error> {
        let current = issue(&ca, &id, lifetime)?;
        Ok(ServingCert {
            ca,
            id,
            lifetime,
            current: RwLock::new(current),
        })
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }
}

fn issue(ca: &Ca, id: &SpiffeId, lifetime: Duration) -> Result<Current, Error> {
    let key = KeyPair::generate()?;
    let issued = ca.issue_server(&key, id, CONTROLLER_DNS_NAMES, lifetime)?;
    let signing_key = trellis_identity::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))?;
    tracing::info!(
        spiffe_id = %id,
        serial = %issued.serial,
        not_after = %issued.not_after_rfc3339(),
        "issued the controller's serving certificate"
    );
    // From what the certificate really got (the issuer may have cut it short), so
    // the arithmetic is bounded whatever `--cert-lifetime` says.
    let remaining =
        Duration::try_from(issued.not_after - OffsetDateTime::now_utc()).unwrap_or_default();
    Ok(Current {
        key: Arc::new(CertifiedKey::new(issued.chain, signing_key)),
        renew_at: Instant::now()
            .checked_add(remaining.mul_f64(0.7))
            .unwrap_or_else(Instant::now),
    })
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if Instant::now() < current.renew_at {
                return Some(current.key.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Another handshake may have renewed it while this one waited for the lock.
        if Instant::now() >= current.renew_at {
            match issue(&self.ca, &self.id, self.lifetime) {
                Ok(renewed) => *current = renewed,
                // The old certificate is still valid for 30 % of its life: keep
                // serving it and try again at the next handshake.
                Err(error) => tracing::warn!(%error, "cannot renew the serving certificate"),
            }
        }
        Some(current.key.clone())
    }
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("id", &self.id)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
