//! Copying bytes both ways between the two halves of a proxied connection.

use tokio::io::{AsyncRead, AsyncWrite};

/// Copies until both sides have closed, half-closes passed through. Returns the
/// bytes read from and written to `client` (both sockets count their own bytes, see
/// [`crate::tally`]; these are for the connection's close event).
pub async fn forward<C, S>(client: &mut C, server: &mut S) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // 16 KiB: one full TLS record per read on the mTLS side.
    const BUF: usize = 16 * 1024;
    tokio::io::copy_bidirectional_with_sizes(client, server, BUF, BUF).await
}
