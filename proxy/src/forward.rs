//! Copying bytes both ways between the two halves of a proxied connection, and
//! accounting for them.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::listener::Direction;
use crate::metrics::{DirectionLabels, Metrics};

/// Copies until both sides have closed, half-closes passed through. Returns the
/// bytes read from and written to `client`.
pub async fn forward<C, S>(
    client: &mut C,
    server: &mut S,
    direction: Direction,
    metrics: &Metrics,
) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // 16 KiB: one full TLS record per read on the mTLS side.
    const BUF: usize = 16 * 1024;
    let result = tokio::io::copy_bidirectional_with_sizes(client, server, BUF, BUF).await;
    if let Ok((read, written)) = result {
        let labels = DirectionLabels {
            direction: direction.as_str(),
        };
        metrics.tcp_read_bytes.get_or_create(&labels).inc_by(read);
        metrics
            .tcp_write_bytes
            .get_or_create(&labels)
            .inc_by(written);
    }
    result
}
