//! Trust anchors and the verification of a presented chain.
//!
//! Path building and signature checks are rustls-webpki's; this module adds the one
//! rule the mesh has on top: the leaf names exactly one SPIFFE ID, and that ID is the
//! peer's identity. Names elsewhere in the certificate (DNS SANs, the subject) never
//! grant an identity.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime, pem::PemObject};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{SpiffeId, VerifyError};

/// The roots of the mesh: the certificates every workload chain must lead to.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    /// For webpki path building.
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    /// The same roots for rustls's client-certificate verifier.
    roots: Arc<rustls::RootCertStore>,
}

impl TrustAnchors {
    /// Reads every `CERTIFICATE` block of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VerifyError::Malformed(format!("trust anchors PEM: {e}")))?;
        Self::from_der(certs)
    }

    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, VerifyError> {
        if certs.is_empty() {
            return Err(VerifyError::Malformed(
                "the trust anchors bundle holds no certificate".into(),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        let mut anchors = Vec::with_capacity(certs.len());
        for cert in &certs {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| VerifyError::Malformed(format!("trust anchor: {e}")))?;
            anchors.push(anchor.to_owned());
            roots
                .add(cert.clone())
                .map_err(|e| VerifyError::Malformed(format!("trust anchor: {e}")))?;
        }
        Ok(TrustAnchors {
            anchors: Arc::new(anchors),
            roots: Arc::new(roots),
        })
    }

    pub(crate) fn root_store(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }
}

/// Which side of a handshake the chain was presented by: the extended key usage it
/// must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presenter {
    Server,
    Client,
}

/// Verifies `end_entity` (with `intermediates`) against `anchors` at `now`, for the
/// given usage, and returns the SPIFFE ID it carries.
pub fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &TrustAnchors,
    now: UnixTime,
    presenter: Presenter,
) -> Result<SpiffeId, VerifyError> {
    let cert =
        EndEntityCert::try_from(end_entity).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let usage = match presenter {
        Presenter::Server => KeyUsage::server_auth(),
        Presenter::Client => KeyUsage::client_auth(),
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors.anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(|e| VerifyError::Untrusted(e.to_string()))?;
    spiffe_id_of(end_entity)
}

/// The SPIFFE ID named by a certificate's URI SAN. The chain is not checked here:
/// call it only on a certificate that was verified (or that this process issued).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, VerifyError> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris[..] {
        [] => Err(VerifyError::NoSpiffeId),
        [uri] => Ok(uri.parse()?),
        _ => Err(VerifyError::SeveralUris(uris.len())),
    }
}

#[cfg(test)]
mod tests;
