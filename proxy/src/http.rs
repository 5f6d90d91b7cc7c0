//! The HTTP data plane: what the proxy does once detection says a connection speaks
//! HTTP/1.x or HTTP/2.
//!
//! Outbound, the app's requests are balanced over the destination's endpoints and
//! carried over one multiplexed HTTP/2-over-mTLS connection per peer pod, to the
//! peer's inbound port; the app port and the caller's HTTP version travel with each
//! request as headers ([`DST_PORT`], [`ORIG_PROTO`]), so one connection serves every
//! port of the peer. Inbound, those requests (and plaintext HTTP from outside the
//! mesh) are given the caller's verified identity ([`CLIENT_ID`]) and sent to the app
//! over a local pool, in the protocol the caller spoke. Bodies stream frame by frame
//! both ways; nothing holds a whole body.
//!
//! - [`outbound`] and [`inbound`]: the two request paths;
//! - [`pool`]: the mesh HTTP/2 connections and the local (app-side) connections;
//! - [`upgrade`]: `Upgrade` requests (WebSocket), which become opaque tunnels;
//! - [`errors`]: failures as statuses an HTTP or gRPC client can read;
//! - [`deadline`]: the response timeout, counted once the request body is sent;
//! - [`observe`]: the golden metrics of each request.

pub mod deadline;
pub mod errors;
pub mod inbound;
pub mod observe;
pub mod outbound;
pub mod pool;
pub mod upgrade;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

/// Any error a body can end with, boxed: bodies from hyper, from the proxy itself,
/// and wrapped bodies meet in one type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy handles.
pub type Body = BoxBody<Bytes, BoxError>;

/// The verified SPIFFE ID of the caller, set by the inbound sidecar after removing
/// any such header that came from outside.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("trellis-client-id");

/// The app port a request on the mesh transport is for (it arrives on the peer's
/// inbound port, shared by every app port).
pub const DST_PORT: HeaderName = HeaderName::from_static("trellis-dst-port");

/// The HTTP version the original caller spoke, when it was not HTTP/2: the receiving
/// sidecar speaks it to the app.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("trellis-orig-proto");

/// Set on every response the proxy makes itself, with the reason.
pub const PROXY_ERROR: HeaderName = HeaderName::from_static("trellis-proxy-error");

/// Wraps any body into the proxy's body type.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    boxed(http_body_util::Empty::new())
}

/// A body of one chunk.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(http_body_util::Full::new(bytes.into()))
}

/// Headers that describe one connection rather than the message, which a proxy must
/// not forward (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, including every header the `Connection` header
/// names. `TE: trailers` survives: gRPC needs it end to end, and HTTP/2 allows it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // As in `holds_any`: most messages have none of them, found in one pass.
    if !headers
        .keys()
        .any(|name| name == header::TE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let trailers_only = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        headers.remove(header::TE);
    }
}

/// Removes every header named in `names`.
pub fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    if holds_any(headers, names) {
        for name in names {
            headers.remove(name);
        }
    }
}

/// Whether `headers` holds any of `names`. Most messages hold none of the names the
/// proxy removes, and one pass over their few names (a tag compare for the standard
/// ones) costs a fraction of hashing each of `names` into the map.
fn holds_any(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    headers.keys().any(|name| names.contains(name))
}

/// Removes the hop-by-hop headers of an `Upgrade` request except the two the next hop
/// needs to switch: `Connection: upgrade` and `Upgrade` itself.
pub fn strip_for_upgrade(headers: &mut HeaderMap) {
    let protocols: Vec<HeaderValue> = headers.get_all(header::UPGRADE).iter().cloned().collect();
    strip_hop_by_hop(headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    for protocol in protocols {
        headers.append(header::UPGRADE, protocol);
    }
}

/// Whether the message asks to switch protocols (RFC 9110 §7.8): an `Upgrade` header
/// named by `Connection`.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether the request is gRPC, whose clients read failures from `grpc-status`
/// rather than from the HTTP status.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Shapes a request's head for the HTTP version it travels in next: HTTP/2 carries
/// the authority in the URI (`:authority`), HTTP/1.1 in `Host` with an origin-form
/// target. `fallback` is the authority when the caller sent none (HTTP/1.0).
pub fn shape_for(parts: &mut http::request::Parts, version: pool::Version, fallback: SocketAddr) {
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        })
        .or_else(|| Authority::try_from(fallback.to_string()).ok());
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match version {
        pool::Version::Http2 => {
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = authority;
            uri.path_and_query = Some(path);
            parts.uri = Uri::from_parts(uri).unwrap_or_default();
            parts.headers.remove(header::HOST);
            parts.version = http::Version::HTTP_2;
        }
        pool::Version::Http1 => {
            if !parts.headers.contains_key(header::HOST)
                && let Some(host) = authority.and_then(|a| HeaderValue::try_from(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, host);
            }
            parts.uri = Uri::from(path);
            parts.version = http::Version::HTTP_11;
        }
    }
}

/// A response from upstream, as the caller's protocol (`version`) carries it back.
pub fn restore(
    response: http::Response<hyper::body::Incoming>,
    version: pool::Version,
) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = match version {
        pool::Version::Http1 => http::Version::HTTP_11,
        pool::Version::Http2 => http::Version::HTTP_2,
    };
    http::Response::from_parts(parts, boxed(body))
}

/// A copy of a request without a body, to send again.
pub fn replay_of(request: &http::Request<Body>) -> http::Request<Body> {
    let mut copy = http::Request::new(empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether a request may be sent again after the connection closed under it
/// without an answer: it has no body and is idempotent (RFC 9110 §9.2.2), so a
/// server that did see it would do the same thing twice, as Go's client assumes.
pub fn is_replayable(request: &http::Request<Body>) -> bool {
    use http::Method;
    http_body::Body::is_end_stream(request.body())
        && matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
}

/// The header value of a port number.
pub fn port_value(port: u16) -> HeaderValue {
    HeaderValue::from(port)
}

/// Serves one client connection that speaks `version`, handing each request to
/// `service`, until the client closes it or `shutdown` asks it to finish its
/// in-flight requests and close (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
pub async fn serve_connection<I, S>(
    io: I,
    version: pool::Version,
    service: S,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let io = TokioIo::new(io);
    match version {
        pool::Version::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .max_buf_size(MAX_BUF)
                // An app keeps its connections open between requests as long as it
                // likes, as it would without a proxy.
                .header_read_timeout(None)
                .serve_connection(io, BoxFutures(service))
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => return result,
                () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            conn.await
        }
        // Boxed: an HTTP/2 server connection's state is three times an HTTP/1.1 one's,
        // and the connection's task would be sized for it whichever it serves.
        pool::Version::Http2 => {
            Box::pin(async move {
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .initial_stream_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(CONNECTION_WINDOW)
                    .max_frame_size(MAX_FRAME)
                    .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                    .serve_connection(io, service);
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => return result,
                    () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                }
                conn.await
            })
            .await
        }
    }
}

/// An HTTP/1.1 service whose request futures live on the heap while they run.
///
/// hyper keeps a slot for the request future on every HTTP/1.1 connection for as
/// long as the connection lives, sized for the future: several KiB held by each idle
/// keep-alive connection. Boxed, the slot is a pointer and the future's memory is
/// only taken while a request is in flight.
struct BoxFutures<S>(S);

impl<S, R> hyper::service::Service<R> for BoxFutures<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<S::Future>>;

    fn call(&self, request: R) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// HTTP/2 flow control: how much one stream, and one connection, may send before the
/// receiver reads. The protocol's 64 KiB default throttles a large body to 64 KiB per
/// round trip; these let one stream fill a link, while a reader that stops still
/// bounds what waits for it.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// The largest frame the proxy accepts: fewer frame headers and wake-ups per body.
/// A full DATA frame and its 9-byte header make 64 KiB: four full TLS records, and
/// what rustls takes in one write (its send buffer holds 64 KiB). With a 64 KiB
/// payload the last 9 bytes of every frame went out in a TLS record, a system call
/// and a TCP segment of their own.
const MAX_FRAME: u32 = 64 * 1024 - FRAME_HEADER;
const FRAME_HEADER: u32 = 9;
/// The most an HTTP/1.1 connection (from the app, or to it) reads ahead: one frame's
/// worth. hyper's default, about 400 KiB, read bodies in larger bites for no gain in
/// throughput and held 4–5 MB more at the peak of 1 MiB bodies through two hops
/// (BENCHMARKS.md). It also bounds a message's head (status or request line and
/// headers): one far larger is refused with 431, as Envoy's 60 KiB default does.
pub(crate) const MAX_BUF: usize = 64 * 1024;

/// Streams one client may have open on an HTTP/2 connection: the mesh carries every
/// request between two pods on one connection, so this is well above a single app's
/// usual concurrency.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

#[cfg(test)]
mod tests;
