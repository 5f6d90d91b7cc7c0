//! One proxy's discovery stream, as the harness plays it: its own TLS connection
//! (verified against the mesh trust anchors, as the proxy's is), a subscription to
//! every type, and an ACK for every response, reported to the harness with its time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;
use trellis_proto::discovery::v1::discovery_client::DiscoveryClient;
use trellis_proto::discovery::v1::{DiscoveryRequest, Node, resource, type_url};

use super::NAMESPACE;

/// The largest response a stream accepts (the Endpoints set of 20,000 endpoints is
/// about 2 MB).
const MAX_MESSAGE: usize = 64 << 20;

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
    let mut client = DiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
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
    let mut responses = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .map_err(|e| format!("stream {index}: {e}"))?
        .into_inner();
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(format!("stream {index}: the controller ended it")),
            Err(e) => return Err(format!("stream {index}: {e}")),
        };
        let bytes = prost::Message::encoded_len(&response);
        let count = response
            .resources
            .iter()
            .map(|r| match &r.kind {
                Some(resource::Kind::Endpoints(e)) => e.endpoints.len(),
                _ => 1,
            })
            .sum();
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
            count,
            bytes,
            acked_at: Instant::now(),
        };
        if events.send(event).is_err() {
            return Ok(());
        }
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
