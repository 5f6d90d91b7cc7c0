//! The TCP metrics of every connection the proxy accepts or opens, whatever it
//! carries (opaque bytes, HTTP/1, HTTP/2, TLS, an upgraded tunnel).
//!
//! Each socket is wrapped in [`Counted`] as soon as it exists: its reads and writes
//! add to the byte counters of its direction and end (`peer`: `src` for a
//! connection accepted from a client, `dst` for one the proxy opened to a server),
//! resolved once per connection, so a read costs one atomic add and no lock. An
//! accepted connection is counted open once by its [`Tally`] (with the identities
//! known by then) and closed once by the listener with its outcome. A connection
//! the proxy opens is counted open once it is established (its TCP connect, and for
//! mesh TLS the handshake with the server's identity verified) and closed when its
//! socket is dropped, which every path out of it does; one that failed to be
//! established is not counted (it shows in `tls_handshakes_total` and in the
//! statuses of its requests).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::listener::Direction;
use crate::metrics::{Metrics, Peer};

/// The open and close accounting of one accepted connection.
pub struct Tally {
    metrics: Arc<Metrics>,
    direction: Direction,
    opened: bool,
}

impl Tally {
    pub fn accepted(metrics: Arc<Metrics>, direction: Direction) -> Tally {
        Tally {
            metrics,
            direction,
            opened: false,
        }
    }

    /// Wraps the accepted socket so that its bytes are counted.
    pub fn count<I>(&self, io: I) -> Counted<I> {
        Counted::new(io, &self.metrics, self.direction, Peer::Src)
    }

    /// Counts the connection open, with what is known of it: whether it is mesh TLS,
    /// the caller's verified identity (inbound), the server's (outbound).
    pub fn open(&mut self, tls: bool, client_id: String, server_id: String) {
        if !self.opened {
            self.opened = true;
            self.metrics
                .opened(self.direction, Peer::Src, tls, client_id, server_id);
        }
    }

    /// Counts the connection closed with `outcome`: open first, if it ended before
    /// anything was known of it.
    pub fn close(mut self, tls: bool, outcome: &'static str) {
        self.open(tls, String::new(), String::new());
        self.metrics.closed(self.direction, Peer::Src, tls, outcome);
    }
}

/// The accounting of a connection the proxy opened: counted open once established,
/// closed when its socket is dropped.
struct Opened {
    metrics: Arc<Metrics>,
    direction: Direction,
    /// Set once the connection is established and counted open.
    tls: Option<bool>,
}

/// A socket whose bytes are counted as they move.
pub struct Counted<I> {
    io: I,
    read: Counter,
    written: Counter,
    /// For a socket the proxy opened; `None` for an accepted one.
    opened: Option<Opened>,
}

impl<I> Counted<I> {
    fn new(io: I, metrics: &Metrics, direction: Direction, peer: Peer) -> Self {
        let (read, written) = metrics.byte_counters(direction, peer);
        Counted {
            io,
            read,
            written,
            opened: None,
        }
    }

    /// A socket the proxy opened (`peer="dst"`), whose TLS handshake is still to
    /// come: its bytes count now, the connection once [`established`](Self::established).
    pub fn dialed(io: I, metrics: &Arc<Metrics>, direction: Direction) -> Self {
        let mut counted = Counted::new(io, metrics, direction, Peer::Dst);
        counted.opened = Some(Opened {
            metrics: metrics.clone(),
            direction,
            tls: None,
        });
        counted
    }

    /// A plaintext socket the proxy opened: counted open now, closed when dropped.
    pub fn opened(io: I, metrics: &Arc<Metrics>, direction: Direction) -> Self {
        let mut counted = Counted::dialed(io, metrics, direction);
        counted.established(false, String::new());
        counted
    }

    /// The connection this socket carries is established: counted open, with the
    /// server's verified identity if it is mesh TLS.
    pub fn established(&mut self, tls: bool, server_id: String) {
        if let Some(opened) = self.opened.as_mut().filter(|o| o.tls.is_none()) {
            opened.tls = Some(tls);
            opened
                .metrics
                .opened(opened.direction, Peer::Dst, tls, String::new(), server_id);
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I> Drop for Counted<I> {
    fn drop(&mut self) {
        if let Some(Opened {
            metrics,
            direction,
            tls: Some(tls),
        }) = &self.opened
        {
            metrics.closed(*direction, Peer::Dst, *tls, "ok");
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.read.inc_by((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.inc_by(n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.inc_by(n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sum(metrics: &Metrics, name: &str, needle: &str) -> u64 {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(needle))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn bytes_are_counted_as_they_move_and_an_opened_socket_closes_when_dropped() {
        let metrics = Arc::new(Metrics::new());
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = Counted::opened(near, &metrics, Direction::Outbound);
        conn.write_all(b"hello").await.unwrap();
        far.write_all(b"hi").await.unwrap();
        let mut two = [0u8; 2];
        conn.read_exact(&mut two).await.unwrap();
        let dst = "peer=\"dst\"";
        // Counted while the connection is still open.
        assert_eq!(sum(&metrics, "tcp_write_bytes_total", dst), 5);
        assert_eq!(sum(&metrics, "tcp_read_bytes_total", dst), 2);
        assert_eq!(sum(&metrics, "tcp_open_total", dst), 1);
        assert_eq!(sum(&metrics, "tcp_close_total", dst), 0);
        drop(conn);
        assert_eq!(sum(&metrics, "tcp_close_total", dst), 1);
    }

    #[test]
    fn a_socket_whose_handshake_failed_was_never_a_connection() {
        let metrics = Arc::new(Metrics::new());
        let (near, _far) = tokio::io::duplex(64);
        drop(Counted::dialed(near, &metrics, Direction::Outbound));
        let (near, _far) = tokio::io::duplex(64);
        let mut verified = Counted::dialed(near, &metrics, Direction::Outbound);
        verified.established(true, "spiffe://cluster.local/ns/a/sa/b".into());
        drop(verified);
        let dst = "peer=\"dst\"";
        assert_eq!(sum(&metrics, "tcp_open_total", dst), 1);
        assert_eq!(sum(&metrics, "tcp_open_total", "sa/b"), 1);
        assert_eq!(sum(&metrics, "tcp_close_total", dst), 1);
    }

    #[test]
    fn an_accepted_connection_is_opened_and_closed_once() {
        let metrics = Arc::new(Metrics::new());
        let mut tally = Tally::accepted(metrics.clone(), Direction::Inbound);
        tally.open(true, "client".into(), String::new());
        tally.open(true, "client".into(), String::new());
        tally.close(true, "ok");
        // One that failed before anything was known of it is still opened once.
        Tally::accepted(metrics.clone(), Direction::Inbound).close(false, "orig_dst");
        let src = "peer=\"src\"";
        assert_eq!(sum(&metrics, "tcp_open_total", src), 2);
        assert_eq!(sum(&metrics, "tcp_close_total", src), 2);
    }
}
