//! Accepting connections: listening sockets, no new accepts once shutdown begins,
//! one span per connection, and its accounting when it ends. Which thread serves a
//! connection is [`crate::shard`]'s choice.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{ConnError, Error};
use crate::tally::Tally;

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

/// Binds `addr`, and when `ipv6` is set the same port on the IPv6 twin of the address
/// (`[::]` for `0.0.0.0`, `[::1]` for `127.0.0.1`). The twin is optional: a pod
/// without IPv6 cannot bind it, and then has no IPv6 traffic to redirect either.
pub fn bind_with_twin(addr: SocketAddr, ipv6: bool) -> Result<Vec<TcpListener>, Error> {
    let mut listeners = vec![bind(addr)?];
    let twin = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Some(Ipv6Addr::UNSPECIFIED),
        IpAddr::V4(ip) if ip.is_loopback() => Some(Ipv6Addr::LOCALHOST),
        _ => None,
    };
    if let Some(ip) = twin.filter(|_| ipv6) {
        let twin = SocketAddr::new(
            IpAddr::V6(ip),
            listeners[0].local_addr().map_or(addr.port(), |a| a.port()),
        );
        match bind(twin) {
            Ok(listener) => listeners.push(listener),
            Err(error) => tracing::info!(%error, "no IPv6 listener"),
        }
    }
    Ok(listeners)
}

/// A listening socket on `addr`. IPv6 sockets are IPv6-only, so that `[::]` and
/// `0.0.0.0` can share a port and each connection's original destination is read
/// with the option of its own family.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let failed = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(failed)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(failed)?;
    }
    socket.set_reuse_address(true).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    socket.bind(&addr.into()).map_err(failed)?;
    socket.listen(1024).map_err(failed)?;
    TcpListener::from_std(socket.into()).map_err(failed)
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

/// How a connection was served, once it ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Forwarded as opaque bytes: read from and written to the client.
    Bytes { read: u64, written: u64 },
    /// Served as HTTP: its requests are counted and logged on their own.
    Http,
}

impl Served {
    pub fn bytes((read, written): (u64, u64)) -> Served {
        Served::Bytes { read, written }
    }
}

/// Accounts for a connection that ended: counted by outcome and logged once, in its
/// span, with its byte counts or its error.
pub fn closed(tally: Tally, tls: bool, result: &Result<Served, ConnError>, started: Instant) {
    let duration = started.elapsed();
    match result {
        Ok(Served::Bytes { read, written }) => {
            tally.close(tls, "ok");
            tracing::info!(read, written, ?duration, "closed");
        }
        Ok(Served::Http) => {
            tally.close(tls, "ok");
            tracing::info!(?duration, "closed");
        }
        Err(error) => {
            tally.close(tls, error.kind());
            tracing::info!(%error, kind = error.kind(), ?duration, "failed");
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts on `listener` until `shutdown`, giving each connection, Nagle off, to
/// `dispatch`.
pub async fn accept<F>(
    listener: TcpListener,
    direction: Direction,
    shutdown: CancellationToken,
    mut dispatch: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => {
                // Latency over batching: the proxy forwards whatever it has at once.
                let _ = stream.set_nodelay(true);
                dispatch(stream, client);
            }
            Err(error) => {
                // Usually EMFILE/ENFILE: back off instead of spinning on the error.
                tracing::warn!(dir = direction.as_str(), %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The task of one accepted connection: `handle` in a span carrying a
/// process-unique id, so that the logs of one connection can be found together.
pub fn connection<F, Fut>(
    direction: Direction,
    stream: TcpStream,
    client: SocketAddr,
    handle: F,
) -> tracing::instrument::Instrumented<Fut>
where
    F: FnOnce(Accepted) -> Fut,
{
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "conn",
        id,
        src = %client,
        dir = direction.as_str(),
        dst = tracing::field::Empty
    );
    handle(Accepted { id, stream, client }).instrument(span)
}
