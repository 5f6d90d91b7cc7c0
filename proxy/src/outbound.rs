//! Connections from the app to the world: find out where they were going, resolve
//! that through discovery (a service's virtual IP → its endpoints; a meshed pod →
//! its identity), detect what the app speaks, and hand HTTP to the HTTP data plane
//! ([`crate::http::outbound`]); anything else is forwarded as opaque bytes, over mTLS
//! to a meshed endpoint's sidecar (its inbound port, the app port named in a
//! [`crate::transport`] header).
//!
//! A destination the mesh does not know is still detected, as Linkerd does: its HTTP
//! is proxied to the original address (counted, with failures as statuses), anything
//! else is passed through as bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use trellis_identity::SpiffeId;

use crate::balance::InFlight;
use crate::detect::{self, Protocol};
use crate::directory::{Destination, Directory};
use crate::error::ConnError;
use crate::forward::forward;
use crate::http::outbound::HttpOutbound;
use crate::http::pool::Version;
use crate::listener::{self, Accepted, Direction, Served};
use crate::metrics::Metrics;
use crate::opaque::OpaqueMemory;
use crate::orig_dst::{OrigDstAddr, orig_dst};
use crate::peers::Peers;
use crate::tally::{Counted, Tally};
use crate::tls::MeshTls;
use crate::transport;

/// How many endpoints one opaque connection may try when connects fail.
const MAX_ATTEMPTS: usize = 3;

#[derive(Clone)]
pub struct Outbound {
    pub tls: MeshTls,
    /// What discovery says: services (balanced) and meshed pods.
    pub directory: Arc<ArcSwap<Directory>>,
    /// Static identities for destinations discovery does not know.
    pub peers: Arc<Peers>,
    pub metrics: Arc<Metrics>,
    /// The outbound listeners' own addresses: a connection made straight to one was
    /// not redirected, and forwarding it would loop back here.
    pub own_addrs: Vec<SocketAddr>,
    pub http: Arc<HttpOutbound>,
    /// Ports never detected (server-speaks-first protocols the operator named).
    pub opaque_ports: Arc<[u16]>,
    /// Destinations whose clients were silent until the detection deadline.
    pub opaque_memory: Arc<OpaqueMemory>,
    pub detect_timeout: Duration,
    pub shutdown: CancellationToken,
}

impl Outbound {
    pub async fn handle(self, conn: Accepted) {
        let started = Instant::now();
        let mut tally = Tally::accepted(self.metrics.clone(), Direction::Outbound);
        let (tls, result) = self.proxy(conn.stream, &mut tally).await;
        listener::closed(tally, tls, &result, started);
    }

    async fn proxy(&self, app: TcpStream, tally: &mut Tally) -> (bool, Result<Served, ConnError>) {
        let dst = match orig_dst(&app) {
            Ok(dst) => dst,
            Err(e) => return (false, Err(ConnError::OrigDst(e))),
        };
        let app = tally.count(app);
        tracing::Span::current().record("dst", tracing::field::display(dst));
        if self.own_addrs.contains(&dst.0) {
            return (false, Err(ConnError::Loop(dst.0.port())));
        }
        let destination = self.directory.load().resolve(dst);
        let opaque_port = self.opaque_ports.contains(&dst.0.port())
            || matches!(&destination, Destination::Service(s) if s.is_opaque());
        if let Some(reason) = self.opaque_memory.skip_detection(opaque_port, dst.0) {
            self.metrics.detected(Direction::Outbound, reason);
            // The relay is boxed where it starts (here and below), so that an HTTP
            // connection's task does not carry its state.
            return Box::pin(self.opaque(app, &destination, dst, tally)).await;
        }

        let (detection, io) = match detect::detect(app, self.detect_timeout).await {
            Ok(detected) => detected,
            Err(e) => return (false, Err(ConnError::Io(e))),
        };
        if detection.timed_out {
            self.metrics.detected(Direction::Outbound, "opaque_timeout");
            // Only a client that sent nothing at all waits for the server; one that
            // stalled mid-line is not evidence about the destination.
            let silent = io.replay_len() == 0;
            if silent {
                self.opaque_memory.learn_silent(
                    dst.0,
                    self.detect_timeout,
                    "on its Service (every client's sidecar) or on this workload's pod \
                     template (this sidecar alone)",
                );
            }
        } else {
            self.metrics
                .detected(Direction::Outbound, detection.protocol.label());
        }
        let version = match detection.protocol {
            Protocol::Http1 => Version::Http1,
            Protocol::Http2 => Version::Http2,
            Protocol::MeshTls | Protocol::Tls | Protocol::Opaque => {
                return Box::pin(self.opaque(io, &destination, dst, tally)).await;
            }
        };
        tally.open(false, String::new(), String::new());
        let result = self
            .http
            .clone()
            .serve(io, version, dst.0, self.shutdown.clone())
            .await;
        (
            false,
            result.map(|()| Served::Http).map_err(ConnError::from),
        )
    }

    /// Forwards the connection's bytes as they are: to an endpoint of the service
    /// (balanced), to the pod, or to wherever it was going.
    async fn opaque<C>(
        &self,
        mut app: C,
        destination: &Destination,
        dst: OrigDstAddr,
        tally: &mut Tally,
    ) -> (bool, Result<Served, ConnError>)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let (server, addr, identity, in_flight) = match self.connect_to(destination, dst).await {
            Ok(connected) => connected,
            Err(e) => return (false, Err(e)),
        };
        if addr != dst.0 {
            tracing::debug!(endpoint = %addr, "balanced");
        }
        // The connection counts as in flight on the endpoint for as long as it lasts.
        let _in_flight = in_flight;
        let mut server = Counted::dialed(server, &self.metrics, Direction::Outbound);
        match identity {
            Some(expected) => {
                let mut tls = match self.tls.connect(server, addr.ip(), &expected).await {
                    Ok(tls) => tls,
                    Err(e) => return (true, Err(e)),
                };
                tls.get_mut().0.established(true, expected.to_string());
                if let Err(e) = transport::write_header(&mut tls, addr.port()).await {
                    return (true, Err(ConnError::Io(e)));
                }
                tracing::debug!(server_id = %expected, "mTLS established");
                tally.open(true, String::new(), expected.to_string());
                (
                    true,
                    forward(&mut app, &mut tls)
                        .await
                        .map(Served::bytes)
                        .map_err(ConnError::Io),
                )
            }
            None => {
                tally.open(false, String::new(), String::new());
                server.established(false, String::new());
                (
                    false,
                    forward(&mut app, &mut server)
                        .await
                        .map(Served::bytes)
                        .map_err(ConnError::Io),
                )
            }
        }
    }

    /// Where the connection for app address `addr` goes: a meshed one to the peer
    /// sidecar's inbound port (the app port follows in the [`transport`] header),
    /// any other to the address itself.
    fn dial(&self, addr: SocketAddr, identity: &Option<SpiffeId>) -> SocketAddr {
        match identity {
            Some(_) => SocketAddr::new(addr.ip(), self.http.mesh.port()),
            None => addr,
        }
    }

    /// A TCP connection to where `destination` says, trying other endpoints of a
    /// service when one cannot be reached: the app address it is for, its identity.
    async fn connect_to(
        &self,
        destination: &Destination,
        dst: OrigDstAddr,
    ) -> Result<(TcpStream, SocketAddr, Option<SpiffeId>, Option<InFlight>), ConnError> {
        let service = match destination {
            Destination::Service(service) => service,
            Destination::Pod { identity } => {
                let identity = Some(identity.clone());
                let tcp = connect(self.dial(dst.0, &identity)).await?;
                return Ok((tcp, dst.0, identity, None));
            }
            Destination::Passthrough => {
                let identity = self.peers.lookup(dst);
                let tcp = connect(self.dial(dst.0, &identity)).await?;
                return Ok((tcp, dst.0, identity, None));
            }
        };
        let mut tried = Vec::new();
        loop {
            let Some(endpoint) = service.pick(&tried) else {
                return Err(ConnError::NoEndpoints(service.name.clone()));
            };
            let mut in_flight = endpoint.load.start();
            match connect(self.dial(endpoint.addr, &endpoint.identity)).await {
                Ok(tcp) => {
                    in_flight.established();
                    return Ok((
                        tcp,
                        endpoint.addr,
                        endpoint.identity.clone(),
                        Some(in_flight),
                    ));
                }
                Err(e) => {
                    in_flight.failure();
                    tried.push(endpoint.addr);
                    if tried.len() >= MAX_ATTEMPTS || tried.len() >= service.endpoints.len() {
                        return Err(e);
                    }
                    tracing::debug!(endpoint = %endpoint.addr, error = %e, "trying another endpoint");
                }
            }
        }
    }
}

/// A destination that does not answer within this is reported to the app as a reset
/// rather than left to the kernel's two-minute SYN retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, ConnError> {
    let failed = |source| ConnError::Connect { addr, source };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
