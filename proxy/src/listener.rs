//! Accepting connections: one task and one span per connection, and no new accepts
//! once shutdown begins.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::ConnError;
use crate::metrics::Metrics;

/// Which way a connection crosses the pod boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a peer into this pod's app.
    Inbound,
    /// From this pod's app out to a peer.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// A connection just accepted: what is known before any byte is read.
#[derive(Debug)]
pub struct Accepted {
    /// Process-unique, also in the connection's span, so logs of one connection can
    /// be found together.
    pub id: u64,
    pub stream: TcpStream,
    pub client: SocketAddr,
}

/// Accounts for a connection that ended: counted by outcome and logged once, in its
/// span, with its byte counts or its error.
pub fn closed(
    metrics: &Metrics,
    direction: Direction,
    tls: bool,
    result: &Result<(u64, u64), ConnError>,
    started: Instant,
) {
    let duration = started.elapsed();
    match result {
        Ok((read, written)) => {
            metrics.closed(direction, tls, "ok");
            tracing::info!(read, written, ?duration, "closed");
        }
        Err(error) => {
            metrics.closed(direction, tls, error.kind());
            tracing::info!(%error, kind = error.kind(), ?duration, "failed");
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts on `listener` until `shutdown`, handing each connection to `handle` on
/// its own task tracked by `connections` (so shutdown can wait for them to drain).
pub async fn serve<F, Fut>(
    listener: TcpListener,
    direction: Direction,
    connections: TaskTracker,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(Accepted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    tracing::info!(dir = direction.as_str(), addr = ?local, "listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE/ENFILE: back off instead of spinning on the error.
                tracing::warn!(dir = direction.as_str(), %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Latency over batching: the proxy forwards whatever it has at once.
        let _ = stream.set_nodelay(true);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "conn",
            id,
            src = %client,
            dir = direction.as_str(),
            dst = tracing::field::Empty
        );
        connections.spawn(handle(Accepted { id, stream, client }).instrument(span));
    }
    tracing::info!(dir = direction.as_str(), "stopped accepting");
}
