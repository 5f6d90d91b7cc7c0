//! One proxy's discovery stream, as the harness plays it: its own TLS connection
//! (verified against the mesh trust anchors, as the proxy's is), a subscription to
//! every type, and an ACK for every response, reported to the harness with its time.
//!
//! # What the harness decodes
//! A proxy decodes each response into its own types on its own node. The harness
//! plays every proxy on the controller's cores, where 200 full decodes of the
//! 20,000-endpoint set (about 15 ms each) would be measured as the controller's
//! latency. So by default it [`Decode::Count`]s: it reads the type, version and
//! nonce, and walks the resources only far enough to count them, which is what the
//! harness needs to judge convergence. [`Decode::Full`] builds the proxy's types, as
//! the harness did before, for figures comparable with those runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use prost::Message;
use prost::bytes::Buf;
use rustls_pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Endpoint;
use trellis_proto::discovery::v1::{DiscoveryRequest, DiscoveryResponse, Node, resource, type_url};

use super::NAMESPACE;

/// The largest response a stream accepts (the Endpoints set of 20,000 endpoints is
/// about 2 MB).
const MAX_MESSAGE: usize = 64 << 20;

/// The discovery stream's gRPC path, as the generated client names it.
const STREAM_PATH: &str = "/trellis.discovery.v1.Discovery/Stream";

/// How much of each response the harness decodes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// The type, version and nonce; resources and endpoints only counted.
    Count,
    /// Every resource into the proxy's types, as a proxy does.
    Full,
}

/// One response a stream received and ACKed.
pub struct Event {
    pub stream: usize,
    pub type_url: String,
    /// Services in a Service set, endpoints in an Endpoints set, else resources.
    pub count: usize,
    /// The response's encoded size.
    pub bytes: usize,
    pub acked_at: Instant,
}

/// One proxy's stream: connect over TLS, subscribe to every type, ACK every response
/// and report it.
pub async fn open_stream(
    index: usize,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    decode: Decode,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from("trellis-controller.trellis-system.svc")?;
            let stream = TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_static("http://trellis-controller")
        .connect_timeout(Duration::from_secs(30))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("stream {index}: connect: {}", chain(&e)))?;
    let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let (requests, outgoing) = mpsc::channel(16);
    for (n, type_url) in type_url::ALL.iter().enumerate() {
        let node = (n == 0).then(|| Node {
            pod: format!("scale-{index:04}"),
            namespace: NAMESPACE.into(),
            identity: format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/scale-{index:04}"),
            proxy_version: "trellis-bench".into(),
        });
        let subscribe = DiscoveryRequest {
            node,
            type_url: type_url.to_string(),
            ..Default::default()
        };
        let _ = requests.send(subscribe).await;
    }
    client
        .ready()
        .await
        .map_err(|e| format!("stream {index}: connect: {}", chain(&e)))?;
    let mut responses = client
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing)),
            http::uri::PathAndQuery::from_static(STREAM_PATH),
            HarnessCodec(decode),
        )
        .await
        .map_err(|e| format!("stream {index}: {e}"))?
        .into_inner();
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(format!("stream {index}: the controller ended it")),
            Err(e) => return Err(format!("stream {index}: {e}")),
        };
        let ack = DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info,
            response_nonce: response.nonce,
            ..Default::default()
        };
        if requests.send(ack).await.is_err() {
            return Err(format!("stream {index}: the request stream closed"));
        }
        let event = Event {
            stream: index,
            type_url: response.type_url,
            count: response.count,
            bytes: response.bytes,
            acked_at: Instant::now(),
        };
        if events.send(event).is_err() {
            return Ok(());
        }
    }
}

/// What the harness keeps of one response.
struct Received {
    type_url: String,
    version_info: String,
    nonce: String,
    /// Services in a Service set, endpoints in an Endpoints set, else resources.
    count: usize,
    /// The encoded size.
    bytes: usize,
}

/// A `DiscoveryResponse` read as [`Decode::Count`] reads it: the Resource's other
/// kinds are skipped as unknown fields, and each Endpoint is only delimited.
#[derive(Clone, PartialEq, Message)]
struct CountedResponse {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    version_info: String,
    #[prost(string, tag = "3")]
    nonce: String,
    #[prost(message, repeated, tag = "4")]
    resources: Vec<CountedResource>,
}

#[derive(Clone, PartialEq, Message)]
struct CountedResource {
    /// `Resource.endpoints`; absent for the other kinds.
    #[prost(message, optional, tag = "2")]
    endpoints: Option<CountedEndpoints>,
}

#[derive(Clone, PartialEq, Message)]
struct CountedEndpoints {
    /// `Endpoints.endpoints`, each left encoded: views into the received message,
    /// not copies, and none of their fields is read.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    endpoints: Vec<prost::bytes::Bytes>,
}

impl Received {
    fn read(decode: Decode, buf: &mut impl Buf) -> Result<Received, prost::DecodeError> {
        let bytes = buf.remaining();
        Ok(match decode {
            Decode::Count => {
                let response = CountedResponse::decode(buf)?;
                let count = response
                    .resources
                    .iter()
                    .map(|r| r.endpoints.as_ref().map_or(1, |e| e.endpoints.len()))
                    .sum();
                Received {
                    type_url: response.type_url,
                    version_info: response.version_info,
                    nonce: response.nonce,
                    count,
                    bytes,
                }
            }
            Decode::Full => {
                let response = DiscoveryResponse::decode(buf)?;
                let count = response
                    .resources
                    .iter()
                    .map(|r| match &r.kind {
                        Some(resource::Kind::Endpoints(e)) => e.endpoints.len(),
                        _ => 1,
                    })
                    .sum();
                Received {
                    type_url: response.type_url,
                    version_info: response.version_info,
                    nonce: response.nonce,
                    count,
                    bytes,
                }
            }
        })
    }
}

/// Requests encoded as prost encodes them; responses read as [`Decode`] says.
struct HarnessCodec(Decode);

impl Codec for HarnessCodec {
    type Encode = DiscoveryRequest;
    type Decode = Received;
    type Encoder = RequestEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder(self.0)
    }
}

struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = DiscoveryRequest;
    type Error = Status;

    fn encode(&mut self, item: DiscoveryRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a request: {e}")))
    }
}

struct ResponseDecoder(Decode);

impl Decoder for ResponseDecoder {
    type Item = Received;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Received>, Status> {
        Received::read(self.0, src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding a response: {e}")))
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use trellis_proto::discovery::v1 as pb;

    use super::*;

    fn endpoints(name: &str, count: usize) -> pb::Resource {
        pb::Resource {
            kind: Some(resource::Kind::Endpoints(pb::Endpoints {
                name: name.into(),
                namespace: NAMESPACE.into(),
                endpoints: (0..count)
                    .map(|n| pb::Endpoint {
                        address: format!("10.0.0.{n}"),
                        identity: "spiffe://cluster.local/ns/scale/sa/web".into(),
                        ..Default::default()
                    })
                    .collect(),
            })),
        }
    }

    #[test]
    fn counting_reads_what_a_full_decode_reads() {
        let service = pb::Resource {
            kind: Some(resource::Kind::Service(pb::Service {
                name: "web".into(),
                ..Default::default()
            })),
        };
        for (resources, expected) in [
            (vec![endpoints("web", 3), endpoints("db", 2)], 5),
            (vec![service.clone(), service], 2),
            (vec![], 0),
        ] {
            let response = DiscoveryResponse {
                type_url: type_url::ENDPOINTS.into(),
                version_info: "0123456789abcdef".into(),
                nonce: "7-1".into(),
                resources,
                ..Default::default()
            }
            .encode_to_vec();
            let counted = Received::read(Decode::Count, &mut response.as_slice()).unwrap();
            let full = Received::read(Decode::Full, &mut response.as_slice()).unwrap();
            for received in [&counted, &full] {
                assert_eq!(received.count, expected);
                assert_eq!(received.bytes, response.len());
                assert_eq!(
                    (received.version_info.as_str(), received.nonce.as_str()),
                    ("0123456789abcdef", "7-1")
                );
                assert_eq!(received.type_url, type_url::ENDPOINTS);
            }
        }
    }
}
