//! Terminating and originating mesh mTLS.
//!
//! Both directions present this workload's current certificate (resolved per
//! handshake from [`Identity`], so renewal needs no restart) and verify the peer's
//! chain against the mesh trust anchors. The inbound side takes the client's SPIFFE
//! ID as the caller's identity; the outbound side refuses a server that is not the
//! identity the destination is known by, before the app's first byte is sent. Every
//! handshake, whoever asked for it, is counted here by outcome.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use trellis_identity::{MESH_ALPN, SpiffeId, tls};

use crate::error::{ConnError, Error};
use crate::identity::Identity;
use crate::listener::Direction;
use crate::metrics::Metrics;

/// A handshake that takes longer is abandoned: it protects the listener from clients
/// that open a connection and stall mid-handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct MeshTls {
    identity: Identity,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    metrics: Arc<Metrics>,
}

impl MeshTls {
    pub fn new(identity: Identity, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let resolver = Arc::new(identity.clone());
        let server = tls::server_config(identity.anchors(), resolver.clone(), &[MESH_ALPN])?;
        let client = tls::client_config(identity.anchors(), Some(resolver), &[MESH_ALPN])?;
        Ok(MeshTls {
            identity,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            metrics,
        })
    }

    /// Terminates a peer sidecar's mTLS and returns the caller's verified identity.
    pub async fn accept<S>(&self, io: S) -> Result<(server::TlsStream<S>, SpiffeId), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let accepted = async {
            self.require_certificate()?;
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(io))
                .await
                .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
                .map_err(ConnError::Handshake)?;
            let client = tls::peer_identity(stream.get_ref().1.peer_certificates())?;
            Ok((stream, client))
        }
        .await;
        self.count(Direction::Inbound, &accepted);
        accepted
    }

    /// Opens mTLS to the peer sidecar at the other end of `tcp`, which must prove to
    /// be `expected`.
    pub async fn connect<S>(
        &self,
        tcp: S,
        ip: IpAddr,
        expected: &SpiffeId,
    ) -> Result<client::TlsStream<S>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let connected = async {
            self.require_certificate()?;
            // An IP server name: rustls sends no SNI for it, so no name leaks, and the
            // verifier never relies on it.
            let name = ServerName::IpAddress(ip.into());
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connector.connect(name, tcp))
                .await
                .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
                .map_err(ConnError::Handshake)?;
            tls::expect_peer(stream.get_ref().1.peer_certificates(), expected)?;
            Ok(stream)
        }
        .await;
        self.count(Direction::Outbound, &connected);
        connected
    }

    fn count<T>(&self, direction: Direction, result: &Result<T, ConnError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics.handshake(direction, outcome);
    }

    fn require_certificate(&self) -> Result<(), ConnError> {
        match self.identity.current() {
            Some(_) => Ok(()),
            None => Err(ConnError::NoCertificate),
        }
    }
}
