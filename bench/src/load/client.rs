//! One request on the wire: connecting, the HTTP/1.1, h2c and gRPC codecs (hyper's
//! client connections, no pool and no tower stack, so the generator's own cost per
//! request stays small), and reading the answer to its last byte.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::net::TcpStream;
use trellis_proto::bench::v1::EchoRequest;

use super::{Protocol, Target};

/// The header that asks the built-in HTTP backend for an answer of a given size.
pub const RESPONSE_SIZE_HEADER: &str = "x-response-size";

/// The gRPC method of the built-in echo backend.
pub const ECHO_PATH: &str = "/trellis.bench.v1.Echo/Echo";

/// Why one request failed; the name is the key in the report's `errors_by_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Handshake,
    /// The connection broke while sending or receiving.
    Io,
    /// An HTTP status other than 2xx.
    Status,
    /// A gRPC status other than OK, or no status at all.
    GrpcStatus,
    Timeout,
    /// Due during the run but never sent before the drain deadline: far above the knee.
    Unsent,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Handshake => "handshake",
            Failure::Io => "io",
            Failure::Status => "status",
            Failure::GrpcStatus => "grpc_status",
            Failure::Timeout => "timeout",
            Failure::Unsent => "unsent",
        }
    }
}

/// A client connection: HTTP/1.1 carries one request at a time, h2 many.
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// Waits until the connection can take a request; `false` if it has closed.
pub async fn ready(sender: &mut Sender) -> bool {
    match sender {
        Sender::Http1(sender) => sender.ready().await.is_ok(),
        Sender::Http2(sender) => sender.ready().await.is_ok(),
    }
}

/// Opens a TCP connection and runs the protocol's handshake; the connection's driver
/// runs as a task on the current runtime and ends when the sender is dropped.
pub async fn connect(addr: SocketAddr, protocol: Protocol) -> Result<Sender, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    // Small requests must leave at once, not wait for Nagle's timer.
    stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
    let io = TokioIo::new(stream);
    match protocol {
        Protocol::Http1 => {
            let (sender, connection) =
                http1::handshake(io).await.map_err(|_| Failure::Handshake)?;
            tokio::task::spawn_local(connection);
            Ok(Sender::Http1(sender))
        }
        Protocol::Http2 | Protocol::Grpc => {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(8 << 20)
                .handshake(io)
                .await
                .map_err(|_| Failure::Handshake)?;
            tokio::task::spawn_local(connection);
            Ok(Sender::Http2(sender))
        }
    }
}

/// Everything about the request that is the same for every send: built once.
#[derive(Clone)]
pub struct RequestTemplate {
    protocol: Protocol,
    uri: Uri,
    host: HeaderValue,
    body: Bytes,
    response_size: Option<HeaderValue>,
    close: bool,
}

impl RequestTemplate {
    pub fn new(
        target: &Target,
        protocol: Protocol,
        body_size: usize,
        response_size: Option<usize>,
        close: bool,
    ) -> Self {
        let body = match protocol {
            Protocol::Grpc => grpc_frame(&EchoRequest {
                payload: vec![b'x'; body_size],
                response_size: response_size.unwrap_or(0).min(u32::MAX as usize) as u32,
            }),
            Protocol::Http1 | Protocol::Http2 => Bytes::from(vec![b'x'; body_size]),
        };
        // HTTP/1.1 sends the origin form plus Host; h2 needs scheme and authority for
        // its pseudo-headers.
        let uri = match protocol {
            Protocol::Http1 => target.path_and_query.parse(),
            Protocol::Http2 => target.uri.parse(),
            Protocol::Grpc => format!("http://{}{ECHO_PATH}", target.authority).parse(),
        }
        .unwrap_or_else(|_| Uri::from_static("/"));
        RequestTemplate {
            protocol,
            uri,
            host: HeaderValue::from_str(&target.authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            body,
            response_size: response_size
                .filter(|_| protocol != Protocol::Grpc)
                .map(HeaderValue::from),
            close,
        }
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let method = if self.body.is_empty() && self.protocol != Protocol::Grpc {
            Method::GET
        } else {
            Method::POST
        };
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = method;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        if self.protocol == Protocol::Http1 {
            headers.insert(HOST, self.host.clone());
            if self.close {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
        }
        if self.protocol == Protocol::Grpc {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        if let Some(size) = &self.response_size {
            headers.insert(RESPONSE_SIZE_HEADER, size.clone());
        }
        request
    }
}

/// A length-prefixed gRPC message (uncompressed).
fn grpc_frame(message: &EchoRequest) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
    frame.put_u8(0);
    frame.put_u32(message.encoded_len() as u32);
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = message.encode(&mut frame);
    frame.freeze()
}

/// Sends one request on a [`ready`] connection and reads the whole answer; returns the
/// body bytes received.
pub async fn send(sender: &mut Sender, template: &RequestTemplate) -> Result<u64, Failure> {
    let request = template.build();
    let response = match sender {
        Sender::Http1(sender) => sender.send_request(request).await,
        Sender::Http2(sender) => sender.send_request(request).await,
    }
    .map_err(|_| Failure::Io)?;
    if !response.status().is_success() {
        return Err(Failure::Status);
    }
    let grpc = template.protocol == Protocol::Grpc;
    // A trailers-only gRPC answer carries its status in the headers.
    let mut grpc_ok = grpc_status_ok(response.headers());
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Io)?;
        match frame.into_data() {
            Ok(data) => bytes += data.len() as u64,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    grpc_ok = grpc_status_ok(&trailers);
                }
            }
        }
    }
    if grpc && grpc_ok != Some(true) {
        return Err(Failure::GrpcStatus);
    }
    Ok(bytes)
}

fn grpc_status_ok(headers: &http::HeaderMap) -> Option<bool> {
    headers
        .get("grpc-status")
        .map(|status| status.as_bytes() == b"0")
}
