//! The rustls configuration every mesh connection uses, on the `ring` provider.
//!
//! Both sides verify the other's chain against the mesh trust anchors. The server
//! name a client dials never decides the peer's identity: a client verifies the chain
//! during the handshake and then compares the SPIFFE ID in the leaf with the identity
//! discovery promised for that destination ([`expect_peer`]) before it writes a byte.
//! Likewise SNI, ALPN and headers never grant an identity: only a verified leaf does.
//!
//! A server either requires a client certificate ([`server_config`], the sidecars)
//! or lets in a client without one ([`server_config_optional_client`], the
//! controller, whose proxies ask for their first certificate before they hold one);
//! a certificate that is presented is verified either way.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{ClientConfig, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{Presenter, SpiffeId, TrustAnchors, VerifyError, spiffe_id_of, verify_chain};

/// The ALPN protocol that marks a connection as sidecar-to-sidecar mesh traffic, so
/// that an inbound proxy can tell it apart from TLS the application speaks itself.
pub const MESH_ALPN: &[u8] = b"trellis.io/mesh/1";

/// The `ring` crypto provider, the one provider of the whole mesh, preferring
/// `TLS13_AES_128_GCM_SHA256`: SHA-256 runs on the SHA extensions of current x86 and
/// ARM cores while SHA-384 does not, and the benchmark profile showed the default
/// (`TLS13_AES_256_GCM_SHA384`) spending the handshake's hashing in software. Both
/// suites stay offered; only the order changes.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != TLS13_AES_128_GCM_SHA256.suite());
    Arc::new(provider)
}

/// A server configuration that requires and verifies a client certificate chained to
/// `anchors`, presents the certificate `resolver` holds at handshake time (so a renewed
/// certificate applies to new connections without touching live ones), and speaks
/// TLS 1.3 only.
pub fn server_config(
    anchors: &TrustAnchors,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(anchors.root_store(), provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    server_config_with(provider, verifier, resolver, alpn)
}

/// Like [`server_config`], but a client that presents no certificate is let in (its
/// connection then has no [`peer_identity`]); one that presents a certificate must
/// pass the same chain and SPIFFE checks as a server's ([`verify_chain`], for client
/// usage), or the handshake fails.
pub fn server_config_optional_client(
    anchors: &TrustAnchors,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(MeshVerifier::new(anchors, &provider));
    server_config_with(provider, verifier, resolver, alpn)
}

fn server_config_with(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ClientCertVerifier>,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration that verifies the server's chain against `anchors` and,
/// when `resolver` is given, presents the workload's own certificate.
pub fn client_config(
    anchors: &TrustAnchors,
    resolver: Option<Arc<dyn ResolvesClientCert>>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(MeshVerifier::new(anchors, &provider));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match resolver {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The identity of a peer whose chain rustls has already verified (the server side:
/// the client verifier ran during the handshake).
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, VerifyError> {
    match certs {
        Some([leaf, ..]) => spiffe_id_of(leaf),
        _ => Err(VerifyError::NoCertificate),
    }
}

/// The identity of a server whose chain rustls has verified, checked against the one
/// the client expected to reach.
pub fn expect_peer(
    certs: Option<&[CertificateDer<'_>]>,
    expected: &SpiffeId,
) -> Result<SpiffeId, VerifyError> {
    let actual = peer_identity(certs)?;
    if &actual != expected {
        return Err(VerifyError::WrongIdentity {
            expected: expected.clone(),
            actual,
        });
    }
    Ok(actual)
}

/// Verifies a peer's chain against the mesh anchors with [`verify_chain`], so a
/// server's and a client's certificate meet the same chain and SPIFFE rules.
///
/// As a client's verifier of servers it deliberately ignores the dialled server name,
/// unlike rustls's `WebPkiServerVerifier`: mesh peers are named by SPIFFE IDs, which
/// [`expect_peer`] checks once the handshake is done and before any application byte
/// is sent. As a server's verifier of clients it lets in a client that presents no
/// certificate ([`server_config_optional_client`]).
#[derive(Debug)]
struct MeshVerifier {
    anchors: TrustAnchors,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshVerifier {
    fn new(anchors: &TrustAnchors, provider: &CryptoProvider) -> Self {
        MeshVerifier {
            anchors: anchors.clone(),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        presenter: Presenter,
    ) -> Result<(), rustls::Error> {
        verify_chain(end_entity, intermediates, &self.anchors, now, presenter)
            .map(drop)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for MeshVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, Presenter::Server)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The signature checks are the server verifier's own, whichever side presented.
impl ClientCertVerifier for MeshVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a workload has exactly one certificate to offer.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, Presenter::Client)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}

#[cfg(test)]
mod tests;
