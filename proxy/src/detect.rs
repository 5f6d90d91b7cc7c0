//! What a connection speaks, decided from its first bytes: mesh TLS from a peer
//! sidecar, the app's own TLS, HTTP/1, HTTP/2 with prior knowledge, or opaque bytes.
//!
//! Detection owns the question "what is this?" and nothing else: it reads only as
//! many bytes as the answer needs, decides as soon as those bytes rule out every
//! protocol but one, and gives up (opaque) past a bounded prefix. The bytes read to
//! decide are not lost: they come back first from [`Prefixed`], so whatever handles
//! the connection next (the TLS acceptor, the HTTP server, or the byte forwarder)
//! sees the stream from its start. A client that says nothing decisive within the
//! detection timeout is taken to wait for the server to speak first, and goes opaque
//! with [`Detection::timed_out`] set so the caller can remember the destination.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use trellis_identity::MESH_ALPN;

/// A TLS record header: content type, legacy version, length.
const TLS_HEADER: usize = 5;

/// The largest TLS record payload (2^14); a longer claimed length is not TLS.
const MAX_TLS_RECORD: usize = 16 * 1024;

/// The most any decision reads: a whole ClientHello record.
const MAX_PREFIX: usize = TLS_HEADER + MAX_TLS_RECORD;

/// The longest HTTP/1 request line waited for; past it the client is not speaking
/// HTTP we want to parse (hyper's default is of the same order).
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The longest method token accepted. Registered methods are at most 17 bytes
/// (`UPDATEREDIRECTREF`); the cap lets a long run of letters go opaque early.
const MAX_METHOD: usize = 24;

/// The most one read during detection takes.
const READ_CHUNK: usize = 2048;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello offering the mesh ALPN: a peer sidecar.
    MeshTls,
    /// A TLS ClientHello without the mesh ALPN: the app's own TLS, forwarded opaque.
    Tls,
    /// An HTTP/1.x request line (`METHOD SP target SP HTTP/1.x CRLF`).
    Http1,
    /// The HTTP/2 connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (prior
    /// knowledge / h2c).
    Http2,
    /// Anything else, including a client that closed before deciding.
    Opaque,
}

impl Protocol {
    /// The protocol's value of the `detect_total` metric's `protocol` label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::MeshTls => "mesh_tls",
            Protocol::Tls => "tls",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Opaque => "opaque",
        }
    }
}

/// The outcome of detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    pub protocol: Protocol,
    /// The client sent nothing decisive before the timeout (server-speaks-first).
    /// Always comes with [`Protocol::Opaque`]; whatever bytes did arrive are still
    /// replayed by the [`Prefixed`].
    pub timed_out: bool,
}

/// Reads enough of `io` to tell what it speaks, within `timeout`.
///
/// Errors are only the read errors of `io`; everything the client sends, however
/// malformed, is an answer.
pub async fn detect<S: AsyncRead + Unpin>(
    mut io: S,
    timeout: Duration,
) -> io::Result<(Detection, Prefixed<S>)> {
    // Owned out here so that the bytes read before a timeout survive the read future.
    // One read's worth, so that the first read (usually the only one) does not grow it.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let detection = match tokio::time::timeout(timeout, read_until_decided(&mut io, &mut buf)).await
    {
        Ok(Ok(protocol)) => Detection {
            protocol,
            timed_out: false,
        },
        Ok(Err(e)) => return Err(e),
        Err(_elapsed) => Detection {
            protocol: Protocol::Opaque,
            timed_out: true,
        },
    };
    Ok((detection, Prefixed::new(buf, io)))
}

async fn read_until_decided<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Protocol> {
    loop {
        match classify(buf) {
            Some(protocol) => return Ok(protocol),
            // Unreachable while every rule below decides within MAX_PREFIX; kept so
            // a future rule cannot make detection read without bound.
            None if buf.len() >= MAX_PREFIX => return Ok(Protocol::Opaque),
            None => {}
        }
        // Straight into the buffer: a chunk on the stack would live in every
        // connection's future, for as long as the connection.
        let want = READ_CHUNK.min(MAX_PREFIX - buf.len());
        buf.reserve(want);
        let n = io.read_buf(&mut (&mut *buf).limit(want)).await?;
        if n == 0 {
            // The client closed before we could decide: whatever it sent is opaque.
            return Ok(Protocol::Opaque);
        }
    }
}

/// Decides from the bytes so far, or `None` when more are needed.
///
/// The first byte picks the only rule that can still match: 0x16 (a TLS handshake
/// record), a token byte (an HTTP/1 method, or `PRI` of the HTTP/2 preface), or
/// anything else, which is opaque at once.
fn classify(buf: &[u8]) -> Option<Protocol> {
    const HANDSHAKE: u8 = 0x16;
    let first = *buf.first()?;
    if first == HANDSHAKE {
        return classify_tls(buf);
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    // `PRI` is also a well-formed method, so a prefix of the preface must wait until
    // it either completes or diverges.
    if H2_PREFACE.starts_with(buf) {
        return None;
    }
    classify_http1(buf)
}

fn classify_tls(buf: &[u8]) -> Option<Protocol> {
    let opaque = Some(Protocol::Opaque);
    // Every TLS version so far puts 3 in the record's major version byte.
    if buf.get(1).is_some_and(|&major| major != 0x03) {
        return opaque;
    }
    if buf.len() < TLS_HEADER {
        return None;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if record_len > MAX_TLS_RECORD {
        return opaque;
    }
    const CLIENT_HELLO: u8 = 0x01;
    if buf
        .get(TLS_HEADER)
        .is_some_and(|&kind| kind != CLIENT_HELLO)
    {
        return opaque;
    }
    let record = buf.get(TLS_HEADER..TLS_HEADER + record_len)?;
    // A hello that does not parse within its record (a lie, or one fragmented over
    // several records, which no sidecar sends) is not worth a TLS code path.
    let Some(mut alpn) = client_hello_alpn(record) else {
        return opaque;
    };
    Some(if alpn.any(|p| p == MESH_ALPN) {
        Protocol::MeshTls
    } else {
        Protocol::Tls
    })
}

/// The ALPN protocols a ClientHello handshake message offers (none when it has no
/// ALPN extension), or `None` when it is not a ClientHello or does not parse.
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
    // A hello may end here: no extensions at all, so no ALPN.
    let extensions_len = if body.0.is_empty() {
        0
    } else {
        usize::from(body.u16()?)
    };
    let mut extensions = Reader(body.take(extensions_len)?);
    let mut names = Reader(&[]);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        const ALPN: u16 = 16;
        if kind == ALPN {
            let mut list = Reader(data);
            let list_len = usize::from(list.u16()?);
            names = Reader(list.take(list_len)?);
            break;
        }
    }
    Some(std::iter::from_fn(move || {
        let len = usize::from(names.u8()?);
        names.take(len)
    }))
}

/// Matches an HTTP/1 request line (RFC 9112 §3): `method SP request-target SP
/// HTTP/1.x CRLF`, deciding opaque on the first byte that cannot belong to one.
fn classify_http1(buf: &[u8]) -> Option<Protocol> {
    let opaque = Some(Protocol::Opaque);
    // The line must end within the cap wherever the reads happened to split it, so
    // only the bytes up to the cap are looked at, and past it nothing is waited for.
    let buf = &buf[..buf.len().min(MAX_REQUEST_LINE)];
    let wait = if buf.len() == MAX_REQUEST_LINE {
        opaque
    } else {
        None
    };

    let method_len = buf.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len > MAX_METHOD {
        return opaque;
    }
    let Some(&after_method) = buf.get(method_len) else {
        return wait;
    };
    if method_len == 0 || after_method != b' ' {
        return opaque;
    }

    let rest = &buf[method_len + 1..];
    let target_len = rest.iter().take_while(|&&b| is_target_byte(b)).count();
    let Some(&after_target) = rest.get(target_len) else {
        return wait;
    };
    if target_len == 0 || after_target != b' ' {
        return opaque;
    }

    let version = &rest[target_len + 1..];
    const VERSIONS: [&[u8]; 2] = [b"HTTP/1.1\r\n", b"HTTP/1.0\r\n"];
    if VERSIONS.iter().any(|v| version.starts_with(v)) {
        Some(Protocol::Http1)
    } else if VERSIONS.iter().any(|v| v.starts_with(version)) {
        wait
    } else {
        opaque
    }
}

/// A token character (RFC 9110 §5.6.2), the alphabet of a method.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte a request target may hold: anything but space and control characters.
/// Bytes above ASCII are let through, as hyper's parser lets them through.
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
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

    /// How many of the bytes read during detection are still to be replayed.
    pub fn replay_len(&self) -> usize {
        self.prefix.len() - self.pos
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
