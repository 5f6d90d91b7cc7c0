//! The gRPC channel to the controller, shared by the identity client and the
//! discovery client: TLS 1.3 verified against the mesh trust anchors, and the
//! controller must present the controller's SPIFFE ID. The proxy has no certificate
//! of its own when it first calls, so it authenticates with its token inside the
//! identity request instead; the discovery client presents the workload certificate
//! it holds as a TLS client certificate, which the controller verifies and records.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use trellis_identity::{SpiffeId, TrustAnchors, tls};

use crate::Error;

/// How long connecting to the controller (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Controller {
    addr: String,
    identity: SpiffeId,
    anchors: TrustAnchors,
    /// Without a client certificate.
    anonymous: Arc<ClientConfig>,
}

impl Controller {
    pub fn new(addr: String, identity: SpiffeId, anchors: &TrustAnchors) -> Result<Self, Error> {
        let tls = tls::client_config(anchors, None, &[b"h2"])?;
        Ok(Controller {
            addr,
            identity,
            anchors: anchors.clone(),
            anonymous: Arc::new(tls),
        })
    }

    /// A connected channel, presenting `certificate` as the TLS client certificate
    /// if given. The identity client makes one per certification round (a few a
    /// day); the discovery client holds one for its stream's lifetime.
    pub async fn connect(&self, certificate: Option<Arc<CertifiedKey>>) -> Result<Channel, Error> {
        let unreachable = |message: String| Error::ControllerUnreachable {
            addr: self.addr.clone(),
            message,
        };
        let tls = match certificate {
            None => self.anonymous.clone(),
            Some(key) => Arc::new(tls::client_config(
                &self.anchors,
                Some(Arc::new(Presenting(key))),
                &[b"h2"],
            )?),
        };
        let this = self.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let (this, tls) = (this.clone(), tls.clone());
            async move { this.handshake(tls).await }
        });
        Endpoint::from_static("http://trellis-controller")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connector)
            .await
            .map_err(|e| unreachable(error_chain(&e)))
    }

    async fn handshake(
        &self,
        tls: Arc<ClientConfig>,
    ) -> Result<
        TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await??;
        let _ = tcp.set_nodelay(true);
        // The name is not what gets verified (the SPIFFE ID below is); it only fills SNI.
        let name = ServerName::try_from("trellis-controller.trellis-system.svc")?;
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, TlsConnector::from(tls).connect(name, tcp))
                .await??;
        tls::expect_peer(stream.get_ref().1.peer_certificates(), &self.identity)?;
        Ok(TokioIo::new(stream))
    }
}

/// One certificate, presented whenever the controller asks for one: the one in force
/// when the channel was made (a renewed one is presented by the next channel).
#[derive(Debug)]
struct Presenting(Arc<CertifiedKey>);

impl ResolvesClientCert for Presenting {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `a: b: c`, so that the root cause (refused, timed out, wrong identity) shows.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
