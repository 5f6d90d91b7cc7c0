//! The discovery service on the wire: the gRPC route tonic serves, with each
//! stream's responses framed here rather than by a tonic codec.
//!
//! A tonic codec encodes every response into a buffer of the stream's own: a change
//! pushed to 200 proxies copies the whole Endpoints set (1.87 MiB at 2,000 services)
//! 200 times, and each stream's buffer keeps its last copy alive, about 2 MiB per
//! proxy. Here a response leaves as three HTTP/2 data frames: the gRPC message prefix
//! with the type, version and nonce; the resources as the snapshot's own [`Bytes`]
//! ([`crate::model::TypeSnapshot::encoded`]), which hyper hands to TLS without
//! copying; and the snapshot marks (fields 5 and 6, after the resources in prost's
//! field order). A proxy receives byte for byte what the generated server sends;
//! requests are decoded by tonic, as the generated server decodes them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use hyper::body::Frame;
use prost::Message;
use prost::bytes::{BufMut, Bytes};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::{Request, Status, Streaming};
use trellis_proto::discovery::v1::{DiscoveryRequest, DiscoveryResponse};

use super::DiscoveryService;
use crate::model::Kind;

/// The one method's path, as the generated client calls it.
const STREAM_PATH: &str = "/trellis.discovery.v1.Discovery/Stream";

/// The gRPC message prefix: a compression flag and a big-endian length.
const PREFIX_LEN: usize = 5;

/// One response, ready for the wire. Its resources were encoded when the snapshot
/// was built; pushing it encodes only what differs between streams.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    pub kind: Kind,
    pub version_info: String,
    /// Unique per response on a stream.
    pub nonce: String,
    /// The `resources` field of the `DiscoveryResponse`, encoded.
    pub resources: Bytes,
    /// How many resources `resources` holds.
    pub count: usize,
    /// The id of the snapshot it was cut from.
    pub snapshot: u64,
    /// Whether more responses of the same push follow it on its stream.
    pub more_in_snapshot: bool,
}

impl Push {
    /// The message as its frames: the gRPC message prefix and the
    /// `DiscoveryResponse` up to its resources, the resources, and the fields after
    /// them, in prost's field order; together one whole message.
    fn frames(&self) -> Result<[Bytes; 3], Status> {
        let head = DiscoveryResponse {
            type_url: self.kind.type_url().to_string(),
            version_info: self.version_info.clone(),
            nonce: self.nonce.clone(),
            ..Default::default()
        };
        let tail = DiscoveryResponse {
            snapshot: self.snapshot,
            more_in_snapshot: self.more_in_snapshot,
            ..Default::default()
        }
        .encode_to_vec();
        let head_len = head.encoded_len();
        let total = head_len + self.resources.len() + tail.len();
        let message_len = u32::try_from(total).map_err(|_| {
            Status::resource_exhausted(format!(
                "a {} response of {total} bytes is too large for one gRPC message",
                self.kind,
            ))
        })?;
        let mut buf = Vec::with_capacity(PREFIX_LEN + head_len);
        buf.put_u8(0);
        buf.put_u32(message_len);
        // A Vec grows as needed: writing to one cannot run out of room.
        let _ = head.encode(&mut buf);
        Ok([Bytes::from(buf), self.resources.clone(), Bytes::from(tail)])
    }

    /// The response as prost would encode it, for tests to decode.
    #[cfg(test)]
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let [head, resources, tail] = self.frames().unwrap();
        let mut message = head[PREFIX_LEN..].to_vec();
        message.extend_from_slice(&resources);
        message.extend_from_slice(&tail);
        message
    }
}

/// The discovery service as tonic routes it.
#[derive(Clone)]
pub struct DiscoveryServer {
    service: DiscoveryService,
    /// The largest request accepted.
    max_request_len: usize,
}

impl DiscoveryServer {
    pub fn new(service: DiscoveryService, max_request_len: usize) -> Self {
        DiscoveryServer {
            service,
            max_request_len,
        }
    }

    /// Starts a stream, or refuses what this server does not serve as tonic would.
    fn respond(&self, request: http::Request<Body>) -> http::Response<Body> {
        if request.uri().path() != STREAM_PATH {
            return Status::unimplemented(format!("{} serves only {STREAM_PATH}", Self::NAME))
                .into_http();
        }
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Status::unimplemented(format!(
                "requests compressed with {encoding:?} are not accepted; send them uncompressed"
            ))
            .into_http();
        }
        let request = request.map(|body| {
            Streaming::new_request(RequestDecoder, body, None, Some(self.max_request_len))
        });
        let pushes = self.service.stream(Request::from_http(request));
        let mut response = http::Response::new(Body::new(PushBody {
            pushes,
            rest: VecDeque::new(),
            ended: false,
        }));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }
}

impl NamedService for DiscoveryServer {
    const NAME: &'static str = "trellis.discovery.v1.Discovery";
}

impl Service<http::Request<Body>> for DiscoveryServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        ready(Ok(self.respond(request)))
    }
}

/// One stream's response body: each push as one gRPC message in (up to) three
/// frames, then the stream's status as trailers, as tonic ends a server stream.
struct PushBody {
    /// What the stream's task sends; an error ends the stream with that status.
    pushes: mpsc::Receiver<Result<Push, Status>>,
    /// The frames of the message being sent that are still to go.
    rest: VecDeque<Bytes>,
    /// The trailers went out.
    ended: bool,
}

impl hyper::body::Body for PushBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let body = self.get_mut();
        if let Some(frame) = body.rest.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if body.ended {
            return Poll::Ready(None);
        }
        let status = match body.pushes.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(push))) => match push.frames() {
                Ok([head, resources, tail]) => {
                    body.rest
                        .extend([resources, tail].into_iter().filter(|f| !f.is_empty()));
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                Err(status) => status,
            },
            Poll::Ready(Some(Err(status))) => status,
            // The stream's task ended without an error (the proxy closed its side, or
            // its requests broke): OK, as tonic ends a finished response stream.
            Poll::Ready(None) => Status::ok(""),
        };
        body.ended = true;
        let mut trailers = HeaderMap::new();
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| Frame::trailers(trailers)),
        ))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.rest.is_empty()
    }
}

/// Requests, decoded by prost.
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = DiscoveryRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<DiscoveryRequest>, Status> {
        DiscoveryRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a DiscoveryRequest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    use trellis_proto::discovery::v1 as pb;

    use super::*;

    fn endpoints(name: &str, address: &str) -> pb::Resource {
        pb::Resource {
            kind: Some(pb::resource::Kind::Endpoints(pb::Endpoints {
                name: name.into(),
                namespace: "shop".into(),
                endpoints: vec![pb::Endpoint {
                    address: address.into(),
                    ..Default::default()
                }],
            })),
        }
    }

    fn push(resources: &[pb::Resource]) -> Push {
        let only_resources = DiscoveryResponse {
            resources: resources.to_vec(),
            ..Default::default()
        };
        Push {
            kind: Kind::Endpoints,
            version_info: "0123456789abcdef".into(),
            nonce: "3-14".into(),
            resources: only_resources.encode_to_vec().into(),
            count: resources.len(),
            snapshot: 9,
            more_in_snapshot: true,
        }
    }

    #[test]
    fn a_push_is_one_grpc_message_of_what_prost_would_encode() {
        let resources = [endpoints("web", "10.0.0.1"), endpoints("db", "10.0.0.9")];
        let push = push(&resources);
        let whole = DiscoveryResponse {
            type_url: Kind::Endpoints.type_url().into(),
            version_info: push.version_info.clone(),
            nonce: push.nonce.clone(),
            resources: resources.to_vec(),
            snapshot: 9,
            more_in_snapshot: true,
        };
        assert_eq!(push.encode_to_vec(), whole.encode_to_vec());
        let decoded = DiscoveryResponse::decode(push.encode_to_vec().as_slice()).unwrap();
        assert_eq!((decoded.snapshot, decoded.more_in_snapshot), (9, true));

        let [head, ..] = push.frames().unwrap();
        assert_eq!(head[0], 0, "not compressed");
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        assert_eq!(length as usize, whole.encoded_len());

        // The last response of a push says so by leaving the field out, as prost does.
        let last = Push {
            more_in_snapshot: false,
            ..push
        };
        let whole = DiscoveryResponse {
            more_in_snapshot: false,
            ..whole
        };
        assert_eq!(last.encode_to_vec(), whole.encode_to_vec());
    }

    #[tokio::test]
    async fn a_body_sends_each_push_then_the_streams_status() {
        let (pushes, rx) = mpsc::channel(4);
        let mut body = PushBody {
            pushes: rx,
            rest: VecDeque::new(),
            ended: false,
        };
        let sent = push(&[endpoints("web", "10.0.0.1")]);
        let empty = Push {
            resources: Bytes::new(),
            count: 0,
            ..sent.clone()
        };
        pushes.send(Ok(sent.clone())).await.unwrap();
        pushes.send(Ok(empty.clone())).await.unwrap();
        pushes
            .send(Err(Status::unavailable("the controller is shutting down")))
            .await
            .unwrap();
        drop(pushes);

        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap());
        }
        assert!(body.is_end_stream());
        let data: Vec<Bytes> = frames
            .iter()
            .filter_map(|f| f.data_ref().cloned())
            .collect();
        let [sent_head, _, sent_tail] = sent.frames().unwrap();
        let [empty_head, _, empty_tail] = empty.frames().unwrap();
        assert_eq!(
            data,
            [
                sent_head,
                sent.resources.clone(),
                sent_tail,
                empty_head,
                empty_tail
            ],
            "the resources are the push's own bytes; an empty set is no frame"
        );
        let trailers = frames.last().and_then(Frame::trailers_ref).unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        assert_eq!(frames.len(), 6);
    }

    /// A server whose streams would never see a snapshot.
    fn server() -> DiscoveryServer {
        let (_, snapshots) = tokio::sync::watch::channel(None);
        let proxies = crate::Proxies::new(std::sync::Arc::new(crate::Metrics::new()));
        let service = DiscoveryService::new(
            snapshots,
            proxies,
            tokio_util::sync::CancellationToken::new(),
        );
        DiscoveryServer::new(service, 1024)
    }

    #[tokio::test]
    async fn what_it_does_not_serve_is_refused_as_tonic_refuses_it() {
        let other_method = http::Request::post("/trellis.discovery.v1.Discovery/Fetch")
            .body(Body::empty())
            .unwrap();
        let refused = server().respond(other_method);
        assert_eq!(refused.headers()["grpc-status"], "12", "UNIMPLEMENTED");

        let compressed = http::Request::post(STREAM_PATH)
            .header("grpc-encoding", "gzip")
            .body(Body::empty())
            .unwrap();
        let refused = server().respond(compressed);
        assert_eq!(refused.headers()["grpc-status"], "12");
        assert!(
            refused.headers()["grpc-message"]
                .to_str()
                .unwrap()
                .contains("uncompressed")
        );
    }

    #[tokio::test]
    async fn a_stream_its_task_ended_ends_ok() {
        let (pushes, rx) = mpsc::channel(1);
        drop(pushes);
        let mut body = PushBody {
            pushes: rx,
            rest: VecDeque::new(),
            ended: false,
        };
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.trailers_ref().unwrap()["grpc-status"], "0");
        assert!(body.frame().await.is_none());
    }
}
