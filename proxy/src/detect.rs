//! What an inbound connection speaks, decided from its first bytes.
//!
//! The bytes read to decide are not lost: they come back first from [`Prefixed`], so
//! whatever handles the connection next (the TLS acceptor, or the byte forwarder)
//! sees the stream from its start. A client that says nothing within the detection
//! timeout is taken to wait for the server to speak first, and goes opaque.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use trellis_identity::MESH_ALPN;

/// The largest ClientHello record we wait for (a TLS record's maximum plaintext).
const MAX_HELLO: usize = 5 + 16 * 1024;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello offering the mesh ALPN: a peer sidecar.
    MeshTls,
    /// TLS the app speaks itself, or anything else: forwarded as opaque bytes.
    Opaque,
}

/// Reads enough of `io` to tell mesh TLS from anything else, within `timeout`.
pub async fn detect<S: AsyncRead + Unpin>(
    mut io: S,
    timeout: Duration,
) -> io::Result<(Protocol, Prefixed<S>)> {
    let mut buf = Vec::with_capacity(1024);
    let protocol = match tokio::time::timeout(timeout, read_hello(&mut io, &mut buf)).await {
        Ok(Ok(protocol)) => protocol,
        Ok(Err(e)) => return Err(e),
        Err(_elapsed) => Protocol::Opaque,
    };
    Ok((protocol, Prefixed::new(buf, io)))
}

async fn read_hello<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> io::Result<Protocol> {
    loop {
        match classify(buf) {
            Some(protocol) => return Ok(protocol),
            None if buf.len() >= MAX_HELLO => return Ok(Protocol::Opaque),
            None => {}
        }
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_HELLO - buf.len());
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            // The client closed before we could decide: whatever it sent is opaque.
            return Ok(Protocol::Opaque);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Decides from the bytes so far, or `None` when more are needed.
fn classify(buf: &[u8]) -> Option<Protocol> {
    const HANDSHAKE: u8 = 0x16;
    let first = *buf.first()?;
    if first != HANDSHAKE {
        return Some(Protocol::Opaque);
    }
    if buf.len() < 5 {
        return None;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len {
        return None;
    }
    let offers_mesh = client_hello_alpn(&buf[5..5 + record_len])
        .is_some_and(|mut protocols| protocols.any(|p| p == MESH_ALPN));
    Some(if offers_mesh {
        Protocol::MeshTls
    } else {
        Protocol::Opaque
    })
}

/// The ALPN protocols a ClientHello handshake message offers, if it is one and it
/// parses. Anything malformed reads as "no ALPN", which makes the connection opaque.
fn client_hello_alpn(msg: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let mut r = Reader(msg);
    if r.u8()? != 0x01 {
        return None; // not a ClientHello
    }
    let body_len = r.u24()?;
    let mut body = Reader(r.take(body_len)?);
    body.take(2 + 32)?; // legacy_version, random
    let session_id_len = usize::from(body.u8()?);
    body.take(session_id_len)?;
    let suites_len = usize::from(body.u16()?);
    body.take(suites_len)?;
    let compression_len = usize::from(body.u8()?);
    body.take(compression_len)?;
    let extensions_len = usize::from(body.u16()?);
    let mut extensions = Reader(body.take(extensions_len)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        const ALPN: u16 = 16;
        if kind == ALPN {
            let mut list = Reader(data);
            let list_len = usize::from(list.u16()?);
            let mut names = Reader(list.take(list_len)?);
            return Some(std::iter::from_fn(move || {
                let len = usize::from(names.u8()?);
                names.take(len)
            }));
        }
    }
    None
}

/// A cursor over a byte slice that fails (with `None`) instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// A stream whose first bytes were already read: they are returned again before
/// anything else is read from the inner stream. Writes go straight through.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been returned already.
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
