//! Optional client certificates: a proxy that holds a workload certificate presents
//! it, and the controller verifies it with the mesh's own rules (a chain to the trust
//! anchors, a client usage, one SPIFFE URI SAN), the same ones a sidecar applies to
//! its callers. A client without a certificate is let in (a proxy asks for its
//! first certificate without one); a client with one that does not verify is not.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use trellis_identity::{Presenter, TrustAnchors, verify_chain};

#[derive(Debug)]
pub struct OptionalClientCert {
    anchors: TrustAnchors,
    provider: Arc<CryptoProvider>,
}

impl OptionalClientCert {
    pub fn new(anchors: TrustAnchors, provider: Arc<CryptoProvider>) -> Self {
        OptionalClientCert { anchors, provider }
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a proxy has exactly one certificate to offer.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_chain(
            end_entity,
            intermediates,
            &self.anchors,
            now,
            Presenter::Client,
        )
        .map(|_| ClientCertVerified::assertion())
        .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
