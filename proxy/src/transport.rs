//! The header that opens an opaque connection on the mesh transport.
//!
//! Every connection between two sidecars goes to the peer's inbound port (4143), never
//! to an app port: HTTP as the shared HTTP/2 connection (the app port in a request
//! header), and opaque TCP as an mTLS connection of its own whose first bytes inside
//! the TLS are this header, naming the app port (as Linkerd's transport header does).
//! So a connection that arrives redirected from an app port is never a peer sidecar's,
//! and an app port the operator declared opaque needs no detection on inbound either:
//! a server-speaks-first app behind it greets a client outside the mesh at once.
//!
//! The header is fixed-size: [`MAGIC`] then the port, big-endian. Its first byte is
//! 0, which no HTTP request line or preface starts with, so detection on the inbound
//! port tells it from HTTP at its first byte.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What an opaque mesh connection starts with, before the port.
const MAGIC: &[u8; 8] = b"\0trellis";

/// The header's length: the magic and a 16-bit port.
const LEN: usize = MAGIC.len() + 2;

/// The header announcing an opaque stream for app port `port`.
fn encode(port: u16) -> [u8; LEN] {
    let mut header = [0u8; LEN];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()..].copy_from_slice(&port.to_be_bytes());
    header
}

/// The app port a header names, or what is wrong with it.
fn decode(header: &[u8; LEN]) -> Result<u16, io::Error> {
    if header[..MAGIC.len()] != MAGIC[..] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a Trellis opaque transport header",
        ));
    }
    match u16::from_be_bytes([header[MAGIC.len()], header[MAGIC.len() + 1]]) {
        0 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the opaque transport header names port 0",
        )),
        port => Ok(port),
    }
}

/// Opens an opaque stream to app port `port` on a fresh mesh connection.
pub async fn write_header<S: AsyncWrite + Unpin>(io: &mut S, port: u16) -> io::Result<()> {
    io.write_all(&encode(port)).await
}

/// Reads the header at the start of an opaque mesh connection; the app port it names.
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<u16> {
    let mut header = [0u8; LEN];
    io.read_exact(&mut header).await?;
    decode(&header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_header_names_its_port_and_the_bytes_after_it_are_untouched() {
        let (mut client, mut server) = tokio::io::duplex(64);
        write_header(&mut client, 5432).await.unwrap();
        client.write_all(b"app bytes").await.unwrap();
        assert_eq!(read_header(&mut server).await.unwrap(), 5432);
        let mut rest = [0u8; 9];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"app bytes");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bytes in [&b"GET / HTTP/1.1\r\n"[..], &encode(0)[..]] {
            let (mut client, mut server) = tokio::io::duplex(64);
            client.write_all(bytes).await.unwrap();
            let error = read_header(&mut server).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{bytes:?}");
        }
        // A peer that closes mid-header.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&MAGIC[..3]).await.unwrap();
        drop(client);
        assert!(read_header(&mut server).await.is_err());
    }

    #[tokio::test]
    async fn detection_tells_it_from_http_at_its_first_byte() {
        let (detection, _) = crate::detect::detect(&encode(80)[..1], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(detection.protocol, crate::detect::Protocol::Opaque);
        assert!(!detection.timed_out);
    }
}
