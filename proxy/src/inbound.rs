//! Connections from outside the pod to the app: detect what they speak, terminate
//! mesh mTLS and record the caller's identity, serve HTTP through the HTTP data plane
//! ([`crate::http::inbound`]), and forward anything else to the app on
//! `127.0.0.1:<original port>`.
//!
//! Peer sidecars arrive on this proxy's inbound port itself, always: HTTP (the
//! multiplexed HTTP/2 mesh transport, or HTTP/1.1 for an upgrade, naming each
//! request's app port), or opaque TCP behind a [`crate::transport`] header naming
//! its app port. A connection redirected from an app port is a client outside the
//! mesh, so a declared opaque port skips detection altogether, and so does an app
//! port whose last silent client showed that the app speaks first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use trellis_identity::SpiffeId;

use crate::detect::{self, Protocol};
use crate::error::ConnError;
use crate::forward::forward;
use crate::http::inbound::HttpInbound;
use crate::http::pool::Version;
use crate::listener::{self, Accepted, Direction, Served};
use crate::metrics::Metrics;
use crate::opaque::OpaqueMemory;
use crate::orig_dst::{OrigDstAddr, orig_dst};
use crate::outbound::connect;
use crate::tally::{Counted, Tally};
use crate::tls::MeshTls;
use crate::transport;

#[derive(Clone)]
pub struct Inbound {
    pub tls: MeshTls,
    pub require_mtls: bool,
    /// This proxy's inbound port (the mesh transport's) and outbound port (a
    /// connection to it from outside would loop).
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// App ports whose connections are never detected: forwarded to the app as
    /// they are (plaintext clients only, refused under `require_mtls`).
    pub opaque_ports: Arc<[u16]>,
    /// App ports whose clients were silent until the detection deadline (shared with
    /// the outbound side: both remember servers that speak first).
    pub opaque_memory: Arc<OpaqueMemory>,
    pub detect_timeout: Duration,
    pub http: Arc<HttpInbound>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl Inbound {
    pub async fn handle(self, conn: Accepted) {
        let started = Instant::now();
        let mut tally = Tally::accepted(self.metrics.clone(), Direction::Inbound);
        let (tls, result) = self.proxy(conn.stream, &mut tally).await;
        listener::closed(tally, tls, &result, started);
    }

    async fn proxy(
        &self,
        stream: TcpStream,
        tally: &mut Tally,
    ) -> (bool, Result<Served, ConnError>) {
        let dst = match self.destination(&stream) {
            Ok(dst) => dst,
            Err(e) => return (false, Err(ConnError::OrigDst(e))),
        };
        tracing::Span::current().record("dst", tracing::field::display(dst));
        if dst.0.port() == self.outbound_port {
            return (false, Err(ConnError::Loop(dst.0.port())));
        }
        let mesh_port = dst.0.port() == self.inbound_port;
        let stream = tally.count(stream);
        // Peer sidecars only ever connect to the inbound port itself (see
        // [`crate::transport`]): a connection to a declared opaque app port, or to
        // one whose clients were silent before, is a client outside the mesh,
        // possibly one waiting for the app to speak first.
        let skip = if mesh_port {
            None
        } else {
            let declared = self.opaque_ports.contains(&dst.0.port());
            self.opaque_memory.skip_detection(declared, dst.0)
        };
        if let Some(reason) = skip {
            self.metrics.detected(Direction::Inbound, reason);
            if self.require_mtls {
                return (false, Err(ConnError::PlaintextRefused));
            }
            tally.open(false, String::new(), String::new());
            return (false, self.to_app(stream, dst).await);
        }
        let (detection, io) = match detect::detect(stream, self.detect_timeout).await {
            Ok(detected) => detected,
            Err(e) => return (false, Err(ConnError::Io(e))),
        };
        // A client outside the mesh that sent nothing waits for the app to speak (a
        // peer sidecar always speaks first, on the inbound port).
        if detection.timed_out && !mesh_port && io.replay_len() == 0 {
            self.opaque_memory.learn_silent(
                dst.0,
                self.detect_timeout,
                "on this workload's pod template",
            );
        }
        self.metrics.detected(
            Direction::Inbound,
            if detection.timed_out {
                "opaque_timeout"
            } else {
                detection.protocol.label()
            },
        );
        if detection.protocol == Protocol::MeshTls {
            // Boxed: a mesh connection's state (TLS, the HTTP/2 server) is several
            // times a plaintext one's, and every inbound connection's task would
            // otherwise be sized for it.
            return Box::pin(async move {
                let (tls, client_id) = match self.tls.accept(io).await {
                    Ok(accepted) => accepted,
                    Err(e) => return (true, Err(e)),
                };
                tracing::info!(client_id = %client_id, "mTLS accepted");
                tally.open(true, client_id.to_string(), String::new());
                (true, self.decrypted(tls, dst, client_id, mesh_port).await)
            })
            .await;
        }
        if self.require_mtls {
            return (false, Err(ConnError::PlaintextRefused));
        }
        if mesh_port {
            return (false, Err(ConnError::NotMeshTransport(dst.0.port())));
        }
        tally.open(false, String::new(), String::new());
        let version = match detection.protocol {
            Protocol::Http1 => Version::Http1,
            Protocol::Http2 => Version::Http2,
            _ => return (false, self.to_app(io, dst).await),
        };
        let served = self
            .http
            .clone()
            .serve(io, version, dst.0, None, self.shutdown.clone())
            .await;
        (
            false,
            served.map(|()| Served::Http).map_err(ConnError::from),
        )
    }

    /// What a peer sidecar sent inside mTLS to the inbound port: HTTP (the shared
    /// HTTP/2 connection, or HTTP/1.1 for an upgrade), or opaque bytes behind a
    /// [`transport`] header naming the app port, which the peer sends at once (the
    /// app may be one that speaks first: waiting for its client would stall it).
    /// Mesh TLS redirected from an app port (from sidecars older than the transport
    /// header; never on a declared opaque port, which is not detected) is forwarded
    /// to that port as it is.
    async fn decrypted<S>(
        &self,
        tls: S,
        dst: OrigDstAddr,
        client_id: SpiffeId,
        mesh_port: bool,
    ) -> Result<Served, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if !mesh_port {
            return self.to_app(tls, dst).await;
        }
        let (detection, mut io) = detect::detect(tls, self.detect_timeout).await?;
        let version = match detection.protocol {
            Protocol::Http1 => Version::Http1,
            Protocol::Http2 => Version::Http2,
            Protocol::Opaque if !detection.timed_out => {
                // A sidecar writes it at once, before any app byte: a peer that
                // stalls in it is not one.
                let header = transport::read_header(&mut io);
                let port = tokio::time::timeout(self.detect_timeout, header)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(ConnError::NotMeshTransport(dst.0.port()))?;
                if port == self.inbound_port || port == self.outbound_port {
                    return Err(ConnError::Loop(port));
                }
                let app = OrigDstAddr(SocketAddr::new(dst.0.ip(), port));
                tracing::Span::current().record("dst", tracing::field::display(app));
                return self.to_app(io, app).await;
            }
            _ => return Err(ConnError::NotMeshTransport(dst.0.port())),
        };
        self.http
            .clone()
            .serve(io, version, dst.0, Some(client_id), self.shutdown.clone())
            .await?;
        Ok(Served::Http)
    }

    /// Where the connection was going: the app port it was redirected from, or, for
    /// the mesh transport (never redirected), this proxy's inbound port.
    fn destination(&self, stream: &TcpStream) -> std::io::Result<OrigDstAddr> {
        match orig_dst(stream) {
            Ok(dst) => Ok(dst),
            Err(e) => match stream.local_addr() {
                Ok(local) if local.port() == self.inbound_port => Ok(OrigDstAddr(local)),
                _ => Err(e),
            },
        }
    }

    async fn to_app<C>(&self, mut client: C, dst: OrigDstAddr) -> Result<Served, ConnError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let app = app_addr(dst.0.ip(), dst.0.port());
        let server = connect(app).await?;
        let mut server = Counted::opened(server, &self.metrics, Direction::Inbound);
        let bytes = forward(&mut client, &mut server).await?;
        Ok(Served::bytes(bytes))
    }
}

/// Where the app listens for connections to `port` of the pod address `pod_ip`:
/// loopback, which proxy-init never redirects, of the same family.
pub fn app_addr(pod_ip: IpAddr, port: u16) -> SocketAddr {
    let loopback = match pod_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(loopback, port)
}
