//! The connections the HTTP data plane reuses.
//!
//! - [`MeshPool`]: one HTTP/2-over-mTLS connection per peer pod (address and
//!   identity), to its inbound port, shared by every request to every port of that
//!   pod. A broken connection is replaced on the next request; a peer that cannot be
//!   reached is retried after a growing backoff, and requests meanwhile fail at once
//!   instead of each waiting on a connect that will not succeed.
//! - [`LocalPool`] (`local.rs`): plaintext connections to one address (the app on
//!   loopback, or an endpoint without a sidecar): idle HTTP/1.1 connections for
//!   reuse, and one HTTP/2 connection per address.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use trellis_identity::SpiffeId;

use super::Body;
use super::errors::Failure;
use crate::backoff::Backoff;
use crate::listener::Direction;
use crate::lock;
use crate::metrics::Metrics;
use crate::outbound::connect;
use crate::tally::Counted;
use crate::tls::MeshTls;

mod local;

use local::IdleHttp1;
pub use local::LocalPool;

/// Pings keep an idle mesh connection warm through NAT and conntrack, and notice a
/// peer that vanished without a FIN.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP/1.1 client connection's settings: it reads ahead at most
/// [`super::MAX_BUF`], as the app's connections to the proxy do.
pub(super) fn h1_client() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.max_buf_size(super::MAX_BUF);
    builder
}

fn h2_client() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(super::STREAM_WINDOW)
        .initial_connection_window_size(super::CONNECTION_WINDOW)
        .max_frame_size(super::MAX_FRAME)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    builder
}

/// One shared HTTP/2 connection, made on first use and remade after it breaks.
#[derive(Default)]
struct H2Slot {
    /// Held across a connect, so that concurrent first requests share one connection
    /// instead of racing to make one each.
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    sender: Option<http2::SendRequest<Body>>,
    backoff: Option<(Backoff, Instant)>,
}

impl H2Slot {
    async fn sender<F, Fut>(&self, connect: F) -> Result<http2::SendRequest<Body>, Failure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<http2::SendRequest<Body>, Failure>>,
    {
        let mut state = self.state.lock().await;
        if let Some(sender) = state.sender.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        state.sender = None;
        if let Some((_, retry_at)) = &state.backoff {
            let wait = retry_at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                return Err(Failure::Connect(format!(
                    "the last attempt failed; next attempt in {wait:.1?}"
                )));
            }
        }
        match connect().await {
            Ok(sender) => {
                state.backoff = None;
                state.sender = Some(sender.clone());
                Ok(sender)
            }
            Err(failure) => {
                let (mut backoff, _) = state.backoff.take().unwrap_or_else(|| {
                    (
                        Backoff::between(Duration::from_millis(100), Duration::from_secs(10)),
                        Instant::now(),
                    )
                });
                let retry_at = Instant::now() + backoff.next_delay();
                state.backoff = Some((backoff, retry_at));
                Err(failure)
            }
        }
    }

    /// Whether nothing uses the slot: no live connection and nobody connecting.
    fn is_idle(&self) -> bool {
        self.state
            .try_lock()
            .is_ok_and(|state| state.sender.as_ref().is_none_or(|s| s.is_closed()))
    }
}

/// A map of slots that forgets the idle ones when it grows, so peers that left the
/// mesh do not accumulate.
struct Slots<K> {
    slots: Mutex<HashMap<K, Arc<H2Slot>>>,
}

impl<K: std::hash::Hash + Eq + Clone> Slots<K> {
    fn new() -> Self {
        Slots {
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Arc<H2Slot> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || !slot.is_idle());
        slots.entry(key.clone()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// Handshakes HTTP/1.1 over `io` and drives the connection on its own task.
async fn h1_handshake<I>(io: I, peer: String) -> Result<http1::SendRequest<Body>, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = h1_client()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Connect(format!("{peer}: {e}")))?;
    drive(conn, peer, "HTTP/1.1");
    Ok(sender)
}

/// Handshakes HTTP/2 over `io` and drives the connection on its own task.
async fn h2_handshake<I>(io: I, peer: String) -> Result<http2::SendRequest<Body>, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = h2_client()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Connect(format!("{peer}: HTTP/2 handshake: {e}")))?;
    drive(conn, peer, "HTTP/2");
    Ok(sender)
}

/// Runs a client connection on a task of its own until it ends; its senders see the
/// end, so an error is only worth a debug line.
fn drive<C>(conn: C, peer: String, protocol: &'static str)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%peer, %error, "{protocol} connection ended");
        }
    });
}

/// The mesh connections of this proxy, one per peer pod.
pub struct MeshPool {
    tls: MeshTls,
    /// The peers' inbound port: every sidecar listens on the same one (DESIGN.md).
    port: u16,
    metrics: Arc<Metrics>,
    slots: Slots<(IpAddr, SpiffeId)>,
}

impl MeshPool {
    pub fn new(tls: MeshTls, port: u16, metrics: Arc<Metrics>) -> Self {
        MeshPool {
            tls,
            port,
            metrics,
            slots: Slots::new(),
        }
    }

    /// The peers' inbound port, where the mesh transport arrives.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection to the sidecar of the pod at `ip`, which must prove to be
    /// `identity`: the live one, or a new one.
    pub async fn sender(
        &self,
        ip: IpAddr,
        identity: &SpiffeId,
    ) -> Result<http2::SendRequest<Body>, Failure> {
        let slot = self.slots.get(&(ip, identity.clone()));
        // Boxed: the connect (TCP, TLS, HTTP/2 handshakes) is kilobytes of state that
        // every request's future would otherwise carry, and is needed once per peer.
        slot.sender(|| Box::pin(self.connect(ip, identity))).await
    }

    async fn connect(
        &self,
        ip: IpAddr,
        identity: &SpiffeId,
    ) -> Result<http2::SendRequest<Body>, Failure> {
        let addr = SocketAddr::new(ip, self.port);
        let tcp = connect(addr)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let tcp = Counted::dialed(tcp, &self.metrics, Direction::Outbound);
        let mut tls = self
            .tls
            .connect(tcp, ip, identity)
            .await
            .map_err(|e| Failure::Connect(format!("{addr}: {e}")))?;
        tls.get_mut().0.established(true, identity.to_string());
        tracing::debug!(%addr, server_id = %identity, "mesh HTTP/2 connection established");
        h2_handshake(tls, addr.to_string()).await
    }
}

/// Which HTTP the proxy speaks to a local address: the one the caller spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// A connection ready to carry one request.
pub enum Conn {
    /// Returned to its pool once the request is sent.
    Http1 {
        addr: SocketAddr,
        sender: http1::SendRequest<Body>,
        idle: IdleHttp1,
    },
    Http2 {
        sender: http2::SendRequest<Body>,
    },
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The connection had closed before the request was written (hyper handed it
    /// back): nothing reached the server, so it may go out again, whatever its method.
    Unsent(Box<Request<Body>>, Failure),
    /// Written, and the connection closed before any answer: what a server closing
    /// an idle connection as the request went out looks like (it never read it).
    Closed(Failure),
    /// Written, at least in part, and then the connection failed.
    Failed(Failure),
}

impl SendError {
    pub fn into_failure(self) -> Failure {
        match self {
            SendError::Unsent(_, failure)
            | SendError::Closed(failure)
            | SendError::Failed(failure) => failure,
        }
    }
}

/// A hyper send error as a [`SendError`], keeping the request when hyper gives it back.
fn send_error(
    mut error: hyper::client::conn::TrySendError<Request<Body>>,
    peer: impl std::fmt::Display,
) -> SendError {
    let message = error.take_message();
    let failure = Failure::Upstream(format!("{peer}: {}", error.error()));
    match message {
        Some(request) => SendError::Unsent(Box::new(request), failure),
        None if closed_before_answer(error.error()) => SendError::Closed(failure),
        None => SendError::Failed(failure),
    }
}

/// Whether the connection ended (closed or reset) before any of the answer came.
fn closed_before_answer(error: &hyper::Error) -> bool {
    use std::error::Error as _;
    error.is_incomplete_message()
        || error
            .source()
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            })
}

impl Conn {
    /// Sends `request`, returning when the response headers arrive.
    pub async fn send(self, request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        match self {
            Conn::Http2 { mut sender } => sender
                .try_send_request(request)
                .await
                .map_err(|e| send_error(e, "HTTP/2")),
            Conn::Http1 {
                addr,
                mut sender,
                idle,
            } => {
                let response = sender.try_send_request(request);
                // Back in the pool at once: it reads as ready again only when this
                // response has been read to its end.
                lock(&idle).park(addr, sender);
                response.await.map_err(|e| send_error(e, addr))
            }
        }
    }
}

#[cfg(test)]
mod tests;
