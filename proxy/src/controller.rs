//! The gRPC channel to the controller, shared by the identity client and the
//! discovery client: TLS 1.3 verified against the mesh trust anchors, and the
//! controller must present the controller's SPIFFE ID. The proxy has no certificate
//! of its own when it first calls, so it authenticates with its token inside the
//! identity request instead.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
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
    tls: Arc<ClientConfig>,
}

impl Controller {
    pub fn new(addr: String, identity: SpiffeId, anchors: &TrustAnchors) -> Result<Self, Error> {
        let tls = tls::client_config(anchors, None, &[b"h2"])?;
        Ok(Controller {
            addr,
            identity,
            tls: Arc::new(tls),
        })
    }

    /// A connected channel. The identity client makes one per certification round (a
    /// few a day); the discovery client holds one for its stream's lifetime.
    pub async fn connect(&self) -> Result<Channel, Error> {
        let unreachable = |message: String| Error::ControllerUnreachable {
            addr: self.addr.clone(),
            message,
        };
        let this = self.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let this = this.clone();
            async move { this.handshake().await }
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
    ) -> Result<
        TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await??;
        let _ = tcp.set_nodelay(true);
        // The name is not what gets verified (the SPIFFE ID below is); it only fills SNI.
        let name = ServerName::try_from("trellis-controller.trellis-system.svc")?;
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await??;
        tls::expect_peer(stream.get_ref().1.peer_certificates(), &self.identity)?;
        Ok(TokioIo::new(stream))
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
