//! Outbound HTTP: the app's requests, balanced per request over the destination's
//! endpoints and sent to a meshed endpoint over the shared HTTP/2-over-mTLS
//! connection to its pod, or to an endpoint without a sidecar in plaintext, in the
//! protocol the app spoke.
//!
//! The destination is resolved again for every request, so a long-lived keep-alive
//! connection follows discovery updates. A request is retried on another endpoint
//! only when its connection could not be made: it was never sent, so retrying it is
//! safe whatever its method.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio_util::sync::CancellationToken;
use trellis_identity::SpiffeId;

use super::deadline;
use super::errors::Failure;
use super::observe::{Authority, Observer, Routes};
use super::pool::{Conn, LocalPool, MeshPool, SendError, Version};
use super::{
    Body, DST_PORT, ORIG_PROTO, PROXY_ERROR, is_grpc, is_upgrade, remove_all, restore, shape_for,
    strip_for_upgrade, strip_hop_by_hop, upgrade,
};
use crate::balance::InFlight;
use crate::directory::{Destination, Directory};
use crate::listener::Direction;
use crate::metrics::Metrics;
use crate::orig_dst::OrigDstAddr;
use crate::outbound::connect;
use crate::peers::Peers;
use crate::tally::Counted;
use crate::tls::MeshTls;

/// How many endpoints one request may try when connections cannot be made.
const MAX_ATTEMPTS: usize = 3;

/// The outbound HTTP proxy of this pod, shared by every outbound connection.
pub struct HttpOutbound {
    pub directory: Arc<ArcSwap<Directory>>,
    pub peers: Arc<Peers>,
    pub mesh: MeshPool,
    pub local: LocalPool,
    pub tls: MeshTls,
    pub metrics: Arc<Metrics>,
    /// How long a request may wait for its response headers once its body is sent.
    pub response_timeout: Duration,
}

/// The endpoint one request goes to.
struct Chosen {
    addr: SocketAddr,
    identity: Option<SpiffeId>,
    in_flight: Option<InFlight>,
}

impl Chosen {
    /// The endpoint answered: its latency counts, and it is healthy.
    fn succeeded(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.success();
        }
    }

    /// The endpoint could not be reached, or its sidecar could not reach its app:
    /// the balancer ejects it for a backoff.
    fn failed(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.failure();
        }
    }
}

/// The [`PROXY_ERROR`] kind a peer sidecar gives when it could not connect to its app:
/// the request never reached the app.
const UNREACHED: &str = "connect";

/// Whether `response`, from `chosen`, is its sidecar reporting that the endpoint
/// failed (it could not reach its app, or lost it mid-request), rather than the
/// app's own answer; the kind it gave. Only a peer sidecar sets [`PROXY_ERROR`]: the
/// inbound side removes it from every app response.
fn peer_failure(chosen: &Chosen, headers: &http::HeaderMap) -> Option<&'static str> {
    chosen.identity.as_ref()?;
    let kind = headers.get(PROXY_ERROR)?;
    [UNREACHED, "upstream"]
        .into_iter()
        .find(|k| kind.as_bytes() == k.as_bytes())
}

impl HttpOutbound {
    /// Serves the app's connection to `dst`, which speaks `version`.
    pub async fn serve<I>(
        self: Arc<Self>,
        io: I,
        version: Version,
        dst: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), hyper::Error>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let routes = Arc::new(Routes::new(self.metrics.clone(), Direction::Outbound));
        let service = service_fn(move |request| {
            let this = self.clone();
            let routes = routes.clone();
            async move { Ok::<_, Infallible>(this.proxy(request, version, dst, &routes).await) }
        });
        super::serve_connection(io, version, service, shutdown).await
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        version: Version,
        dst: SocketAddr,
        routes: &Routes,
    ) -> Response<Body> {
        let started = Instant::now();
        let grpc = is_grpc(request.headers());
        let destination = self.directory.load().resolve(OrigDstAddr(dst));
        let authority = match &destination {
            Destination::Service(service) => Authority::Named(&service.authority),
            Destination::Pod { .. } => Authority::Addr(dst),
            Destination::Passthrough => Authority::Passthrough(dst.port()),
        };
        let upgrading = version == Version::Http1 && is_upgrade(request.headers());
        let observe = |peer: &Option<SpiffeId>| {
            Observer::start(routes.route(authority, peer.as_ref()), started)
        };
        if upgrading {
            let chosen = match self.choose(&destination, dst, &[]) {
                Ok(chosen) => chosen,
                Err(failure) => return observe(&None).respond(failure.respond(grpc)),
            };
            let observer = observe(&chosen.identity);
            // Boxed, as upgrades are rare: their state (a connect, a handshake, the
            // relay) would otherwise be carried by every request's future.
            let response = Box::pin(self.upgrade(request, chosen)).await;
            return observer.respond(response.unwrap_or_else(|f| f.respond(false)));
        }

        let (mut request, mut sent) = deadline::watch(request);
        let mut tried = Vec::new();
        loop {
            let mut chosen = match self.choose(&destination, dst, &tried) {
                Ok(chosen) => chosen,
                Err(failure) => return observe(&None).respond(failure.respond(grpc)),
            };
            // Whether another endpoint may take this request if this one turns out
            // not to have passed it on.
            let another = match &destination {
                Destination::Service(service) => {
                    tried.len() + 1 < service.endpoints.len().min(MAX_ATTEMPTS)
                }
                Destination::Pod { .. } | Destination::Passthrough => false,
            };
            let prepared = prepare(request, version, &chosen, dst);
            // A peer sidecar that could not reach its app never passed the request on:
            // a request without a body can then go to another endpoint as it is. One
            // with a body cannot, since its body has been read (and is not kept).
            let replay = (another && chosen.identity.is_some() && prepared.body().is_end_stream())
                .then(|| super::replay_of(&prepared));
            let response = {
                let exchange = std::pin::pin!(self.exchange(&chosen, version, prepared));
                deadline::within(self.response_timeout, &mut sent, exchange).await
            };
            let response = match response {
                Some(Ok(response)) => response,
                Some(Err(SendError::Unsent(unsent, failure))) => {
                    tracing::debug!(endpoint = %chosen.addr, %failure, "request not sent");
                    chosen.failed();
                    if another {
                        tried.push(chosen.addr);
                        request = *unsent;
                        continue;
                    }
                    return observe(&chosen.identity).respond(failure.respond(grpc));
                }
                Some(Err(SendError::Closed(failure) | SendError::Failed(failure))) => {
                    chosen.failed();
                    return observe(&chosen.identity).respond(failure.respond(grpc));
                }
                None => {
                    return observe(&chosen.identity)
                        .respond(Failure::Timeout(self.response_timeout).respond(grpc));
                }
            };
            match peer_failure(&chosen, response.headers()) {
                None => chosen.succeeded(),
                Some(kind) => {
                    tracing::debug!(endpoint = %chosen.addr, kind, "the peer sidecar could not get a response from its app");
                    chosen.failed();
                    if let Some(replay) = replay.filter(|_| kind == UNREACHED) {
                        tried.push(chosen.addr);
                        request = replay;
                        continue;
                    }
                }
            }
            return observe(&chosen.identity).respond(restore(response, version));
        }
    }

    /// Sends `request` to `chosen`: over the shared mesh connection to its pod, or in
    /// plaintext over the local pool. A request that could not get a connection, or
    /// whose connection closed before it was written, comes back unsent.
    async fn exchange(
        &self,
        chosen: &Chosen,
        version: Version,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        match &chosen.identity {
            Some(identity) => match self.mesh.sender(chosen.addr.ip(), identity).await {
                Ok(sender) => Conn::Http2 { sender }.send(request).await,
                Err(failure) => Err(SendError::Unsent(Box::new(request), failure)),
            },
            None => self.local.send(chosen.addr, version, request).await,
        }
    }

    fn choose(
        &self,
        destination: &Destination,
        dst: SocketAddr,
        tried: &[SocketAddr],
    ) -> Result<Chosen, Failure> {
        match destination {
            Destination::Service(service) => match service.pick(tried) {
                Some(endpoint) => Ok(Chosen {
                    addr: endpoint.addr,
                    identity: endpoint.identity.clone(),
                    in_flight: Some(endpoint.load.start()),
                }),
                None if tried.is_empty() => Err(Failure::NoEndpoints(service.authority.clone())),
                None => Err(Failure::Connect(format!(
                    "no endpoint of {} could be reached",
                    service.authority
                ))),
            },
            Destination::Pod { identity } => Ok(Chosen {
                addr: dst,
                identity: Some(identity.clone()),
                in_flight: None,
            }),
            Destination::Passthrough => Ok(Chosen {
                addr: dst,
                identity: self.peers.lookup(OrigDstAddr(dst)),
                in_flight: None,
            }),
        }
    }

    /// An `Upgrade` request: over a connection of its own, to a meshed endpoint's
    /// inbound port as HTTP/1.1 in mTLS naming the app port (as on the shared
    /// connection), or straight to an endpoint without a sidecar.
    async fn upgrade(
        &self,
        mut request: Request<Incoming>,
        mut chosen: Chosen,
    ) -> Result<Response<Body>, Failure> {
        let headers = request.headers_mut();
        strip_for_upgrade(headers);
        // The mesh's own headers are the proxy's to set, never the app's.
        headers.remove(DST_PORT);
        headers.remove(ORIG_PROTO);
        let timeout = self.response_timeout;
        let result = match &chosen.identity {
            Some(identity) => {
                let peer = SocketAddr::new(chosen.addr.ip(), self.mesh.port());
                request
                    .headers_mut()
                    .insert(DST_PORT, super::port_value(chosen.addr.port()));
                match connect(peer).await {
                    Ok(tcp) => match self
                        .tls
                        .connect(
                            Counted::dialed(tcp, &self.metrics, Direction::Outbound),
                            peer.ip(),
                            identity,
                        )
                        .await
                    {
                        Ok(mut tls) => {
                            tls.get_mut().0.established(true, identity.to_string());
                            upgrade::relay(request, tls, timeout).await
                        }
                        Err(e) => Err(Failure::Connect(format!("{peer}: {e}"))),
                    },
                    Err(e) => Err(Failure::Connect(e.to_string())),
                }
            }
            None => match connect(chosen.addr).await {
                Ok(tcp) => {
                    let tcp = Counted::opened(tcp, &self.metrics, Direction::Outbound);
                    upgrade::relay(request, tcp, timeout).await
                }
                Err(e) => Err(Failure::Connect(e.to_string())),
            },
        };
        match &result {
            Ok(response) if peer_failure(&chosen, response.headers()).is_some() => chosen.failed(),
            Ok(_) => chosen.succeeded(),
            Err(Failure::Connect(_)) => chosen.failed(),
            // It was reached: slow or broken after that says nothing of its health.
            Err(_) => {}
        }
        result
    }
}

/// The app's request, as it travels to `chosen`: over the mesh as HTTP/2 with the
/// app port and the caller's HTTP version beside it, or in plaintext as the app sent
/// it.
fn prepare(
    request: Request<Body>,
    version: Version,
    chosen: &Chosen,
    dst: SocketAddr,
) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // hyper's server already answered `100 Continue` when the body was first read, and
    // the mesh's own headers are the proxy's to set, never the app's.
    remove_all(&mut parts.headers, &[header::EXPECT, DST_PORT, ORIG_PROTO]);
    let over_mesh = chosen.identity.is_some();
    let wire = if over_mesh { Version::Http2 } else { version };
    shape_for(&mut parts, wire, dst);
    if over_mesh {
        parts
            .headers
            .insert(DST_PORT, super::port_value(chosen.addr.port()));
        if version == Version::Http1 {
            parts
                .headers
                .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
        }
    }
    Request::from_parts(parts, body)
}
