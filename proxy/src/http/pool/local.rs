//! Plaintext connections to one address (the app on loopback, or an endpoint
//! without a sidecar): idle HTTP/1.1 connections kept for reuse, and one HTTP/2
//! connection per address; and the one retry a request gets when the app closed its
//! idle connection under it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::net::TcpStream;

use super::{Conn, SendError, Slots, Version, h1_handshake, h2_handshake, lock};
use crate::http::Body;
use crate::http::errors::Failure;
use crate::listener::Direction;
use crate::metrics::Metrics;
use crate::outbound::connect;
use crate::tally::Counted;

/// At most this many idle HTTP/1.1 connections are kept per address; beyond it a
/// connection is closed once its response ends.
const MAX_IDLE_HTTP1: usize = 64;

/// The fewest addresses at which [`IdleHttp1`] looks for ones without a live
/// connection.
pub(super) const MIN_PRUNE: usize = 64;

/// Idle HTTP/1.1 connections by address, shared with the [`Conn`]s that return them.
pub(super) type IdleHttp1 = Arc<Mutex<Idle>>;

/// Idle HTTP/1.1 connections by address. An address whose connections have all
/// closed is forgotten: at once when a checkout finds none left, and otherwise when
/// the map has doubled since it was last swept, so that the passthrough destinations
/// an app called once do not accumulate (O(1) per new address over time).
#[derive(Default)]
pub struct Idle {
    by_addr: HashMap<SocketAddr, Vec<http1::SendRequest<Body>>>,
    /// The size at which the next new address sweeps the map.
    prune_at: usize,
}

impl Idle {
    /// Keeps `sender` for reuse, unless `addr` already has as many as it may.
    pub(super) fn park(&mut self, addr: SocketAddr, sender: http1::SendRequest<Body>) {
        // A known address (every response of a kept-alive connection) is one lookup.
        if let Some(parked) = self.by_addr.get_mut(&addr) {
            if parked.len() < MAX_IDLE_HTTP1 {
                parked.push(sender);
            }
            return;
        }
        if self.by_addr.len() >= self.prune_at {
            self.by_addr.retain(|_, parked| {
                parked.retain(|s| !s.is_closed());
                !parked.is_empty()
            });
            self.prune_at = (2 * self.by_addr.len()).max(MIN_PRUNE);
        }
        self.by_addr.insert(addr, vec![sender]);
    }

    /// A live connection to `addr` that is ready for a request.
    fn take(&mut self, addr: SocketAddr) -> Option<http1::SendRequest<Body>> {
        let parked = self.by_addr.get_mut(&addr)?;
        parked.retain(|s| !s.is_closed());
        if parked.is_empty() {
            self.by_addr.remove(&addr);
            return None;
        }
        let ready = parked.iter().position(|s| s.is_ready())?;
        Some(parked.swap_remove(ready))
    }
}

/// Plaintext connections to local apps and to endpoints without a sidecar.
pub struct LocalPool {
    http1: IdleHttp1,
    http2: Slots<SocketAddr>,
    /// The side of the proxy its connections count on (inbound: to the app).
    direction: Direction,
    metrics: Arc<Metrics>,
}

impl LocalPool {
    pub fn new(direction: Direction, metrics: Arc<Metrics>) -> Self {
        LocalPool {
            http1: Arc::default(),
            http2: Slots::new(),
            direction,
            metrics,
        }
    }

    /// A new plaintext connection to `addr`, counted.
    async fn dial(&self, addr: SocketAddr) -> Result<Counted<TcpStream>, Failure> {
        let tcp = connect(addr)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        Ok(Counted::opened(tcp, &self.metrics, self.direction))
    }

    /// Sends `request` to `addr` in `version` over an idle connection or a new one.
    ///
    /// An app may close an idle connection just as a request goes out on it. When
    /// hyper says the request was never written (it hands it back), or, for an
    /// idempotent request without a body, that the connection closed before any of
    /// the answer came, the request is sent once more on a new connection: the app
    /// never saw it. A request that could not get a connection at all comes back
    /// [`SendError::Unsent`].
    pub async fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let (conn, reused) = match self.checkout(addr, version).await {
            Ok(checked_out) => checked_out,
            Err(failure) => return Err(SendError::Unsent(Box::new(request), failure)),
        };
        if !reused {
            return conn.send(request).await;
        }
        let replay = crate::http::is_replayable(&request).then(|| crate::http::replay_of(&request));
        let again = match conn.send(request).await {
            Err(SendError::Unsent(request, _)) => *request,
            Err(SendError::Closed(failure)) => match replay {
                Some(replay) => replay,
                None => return Err(SendError::Failed(failure)),
            },
            sent => return sent,
        };
        tracing::debug!(%addr, "the idle connection had closed; sending again on a new one");
        let conn = match self.connect(addr, version).await {
            Ok(conn) => conn,
            Err(failure) => return Err(SendError::Unsent(Box::new(again), failure)),
        };
        conn.send(again).await
    }

    /// A connection to `addr` speaking `version`: an idle one (true), or a new one.
    async fn checkout(&self, addr: SocketAddr, version: Version) -> Result<(Conn, bool), Failure> {
        if version == Version::Http1
            && let Some(sender) = self.idle_http1(addr)
        {
            let idle = self.http1.clone();
            return Ok((Conn::Http1 { addr, sender, idle }, true));
        }
        // An HTTP/2 connection is shared, never idle: a request it hands back went
        // out just as it closed, and the slot makes a new one next time.
        Ok((
            self.connect(addr, version).await?,
            version == Version::Http2,
        ))
    }

    /// A new HTTP/1.1 connection to `addr`, or the HTTP/2 one (made if need be).
    ///
    /// The connecting is boxed: its state would otherwise be carried by the future of
    /// every request, even the many that reuse a connection.
    async fn connect(&self, addr: SocketAddr, version: Version) -> Result<Conn, Failure> {
        match version {
            Version::Http2 => {
                let slot = self.http2.get(&addr);
                let sender = slot
                    .sender(|| {
                        Box::pin(async {
                            let tcp = self.dial(addr).await?;
                            h2_handshake(tcp, addr.to_string()).await
                        })
                    })
                    .await?;
                Ok(Conn::Http2 { sender })
            }
            Version::Http1 => {
                let sender = Box::pin(async {
                    let tcp = self.dial(addr).await?;
                    h1_handshake(tcp, addr.to_string()).await
                })
                .await?;
                Ok(Conn::Http1 {
                    addr,
                    sender,
                    idle: self.http1.clone(),
                })
            }
        }
    }

    pub(super) fn idle_http1(&self, addr: SocketAddr) -> Option<http1::SendRequest<Body>> {
        lock(&self.http1).take(addr)
    }

    /// How many addresses the idle HTTP/1.1 map holds.
    #[cfg(test)]
    pub(super) fn idle_addresses(&self) -> usize {
        lock(&self.http1).by_addr.len()
    }
}
