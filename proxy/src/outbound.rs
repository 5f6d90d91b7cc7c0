//! Connections from the app to the world: find out where they were going, resolve
//! that through discovery (a service's virtual IP → one of its endpoints; a meshed
//! pod → its identity), and reach a meshed endpoint over mTLS as the identity it is
//! known by, or anything else as plain TCP (passthrough).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use crate::directory::{Destination, Directory};
use crate::error::ConnError;
use crate::forward::forward;
use crate::listener::{self, Accepted, Direction};
use crate::metrics::Metrics;
use crate::orig_dst::orig_dst;
use crate::peers::Peers;
use crate::tls::MeshTls;

#[derive(Clone)]
pub struct Outbound {
    tls: MeshTls,
    /// What discovery says: services (balanced) and meshed pods.
    directory: Arc<ArcSwap<Directory>>,
    /// Static identities for destinations discovery does not know.
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    /// The outbound listeners' own addresses: a connection made straight to one was
    /// not redirected, and forwarding it would loop back here.
    own_addrs: Vec<SocketAddr>,
}

impl Outbound {
    pub fn new(
        tls: MeshTls,
        directory: Arc<ArcSwap<Directory>>,
        peers: Arc<Peers>,
        metrics: Arc<Metrics>,
        own_addrs: Vec<SocketAddr>,
    ) -> Self {
        Outbound {
            tls,
            directory,
            peers,
            metrics,
            own_addrs,
        }
    }

    pub async fn handle(self, conn: Accepted) {
        let started = std::time::Instant::now();
        let (tls, result) = self.proxy(conn.stream).await;
        listener::closed(&self.metrics, Direction::Outbound, tls, &result, started);
    }

    async fn proxy(&self, mut app: TcpStream) -> (bool, Result<(u64, u64), ConnError>) {
        let dst = match orig_dst(&app) {
            Ok(dst) => dst,
            Err(e) => return (false, Err(ConnError::OrigDst(e))),
        };
        tracing::Span::current().record("dst", tracing::field::display(dst));
        if self.own_addrs.contains(&dst.0) {
            return (false, Err(ConnError::Loop(dst.0.port())));
        }
        let (addr, identity) = match self.directory.load().resolve(dst) {
            Destination::Service(service) => match service.pick() {
                Some(endpoint) => (endpoint.addr, endpoint.identity.clone()),
                None => return (false, Err(ConnError::NoEndpoints(service.name.clone()))),
            },
            Destination::Pod { identity } => (dst.0, Some(identity)),
            Destination::Passthrough => (dst.0, self.peers.lookup(dst)),
        };
        if addr != dst.0 {
            tracing::debug!(endpoint = %addr, "balanced");
        }
        let server = match connect(addr).await {
            Ok(server) => server,
            Err(e) => return (false, Err(e)),
        };
        match identity {
            Some(expected) => {
                let mut tls = match self.tls.connect(server, addr.ip(), &expected).await {
                    Ok(tls) => {
                        self.metrics.handshake(Direction::Outbound, "ok");
                        tls
                    }
                    Err(e) => {
                        self.metrics.handshake(Direction::Outbound, e.kind());
                        return (true, Err(e));
                    }
                };
                tracing::debug!(server_id = %expected, "mTLS established");
                self.metrics.opened(
                    Direction::Outbound,
                    true,
                    String::new(),
                    expected.to_string(),
                );
                (
                    true,
                    forward(&mut app, &mut tls, Direction::Outbound, &self.metrics)
                        .await
                        .map_err(ConnError::Io),
                )
            }
            None => {
                self.metrics
                    .opened(Direction::Outbound, false, String::new(), String::new());
                let mut server = server;
                (
                    false,
                    forward(&mut app, &mut server, Direction::Outbound, &self.metrics)
                        .await
                        .map_err(ConnError::Io),
                )
            }
        }
    }
}

/// A destination that does not answer within this is reported to the app as a reset
/// rather than left to the kernel's two-minute SYN retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(addr: SocketAddr) -> Result<TcpStream, ConnError> {
    let failed = |source| ConnError::Connect { addr, source };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
