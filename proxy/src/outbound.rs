//! Connections from the app to the world: find out where they were going, and reach
//! a mesh peer over mTLS as the identity it is known by, or anything else as plain
//! TCP (passthrough).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{ConnError, Error};
use crate::forward::forward;
use crate::identity::Identity;
use crate::listener::{self, Accepted, Direction};
use crate::metrics::Metrics;
use crate::orig_dst::{OrigDstAddr, orig_dst};
use crate::peers::Peers;
use crate::tls::MeshTls;

#[derive(Clone)]
pub struct Outbound {
    tls: MeshTls,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    /// The outbound listener's own address: a connection made straight to it was not
    /// redirected, and forwarding it would loop back here.
    own_addr: Option<std::net::SocketAddr>,
}

impl Outbound {
    pub fn new(
        identity: Identity,
        peers: Arc<Peers>,
        metrics: Arc<Metrics>,
        own_addr: Option<std::net::SocketAddr>,
    ) -> Result<Self, Error> {
        Ok(Outbound {
            tls: MeshTls::new(identity)?,
            peers,
            metrics,
            own_addr,
        })
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
        if Some(dst.0) == self.own_addr {
            return (false, Err(ConnError::Loop(dst.0.port())));
        }
        let server = match connect(dst).await {
            Ok(server) => server,
            Err(e) => return (false, Err(e)),
        };
        match self.peers.lookup(dst) {
            Some(expected) => {
                let mut tls = match self.tls.connect(server, dst.0.ip(), &expected).await {
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

async fn connect(dst: OrigDstAddr) -> Result<TcpStream, ConnError> {
    let failed = |source| ConnError::Connect {
        addr: dst.0,
        source,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst.0))
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
