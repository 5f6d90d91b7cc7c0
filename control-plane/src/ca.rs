//! The certificate authority: the trust anchor (root) every workload trusts, the issuer
//! (intermediate) that signs, and the leaf certificates it signs.
//!
//! The root's key is never needed to run: the controller signs with the issuer only,
//! so an operator can keep the root offline and hand the controller just the root's
//! certificate, the issuer's certificate and the issuer's key. `--dev-ca` generates
//! all of them for a local mesh ([`dev`]).
//!
//! Every leaf has exactly one URI SAN, the SPIFFE ID, because that is how
//! `trellis_identity::spiffe_id_of` reads an identity: a certificate with two would be
//! refused by every peer.

pub mod dev;

use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use trellis_identity::{Presenter, SpiffeId, TrustAnchors, verify_chain};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// How far a leaf's `not_before` is set in the past, so that a peer whose clock is a
/// little behind ours does not refuse a certificate issued a moment ago.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The trust anchors and the issuer that signs workload certificates.
pub struct Ca {
    /// The roots, as proxies get them with `--trust-anchors`; used here to check that
    /// what we issue verifies, and by the controller's own clients in tests.
    anchors: TrustAnchors,
    /// Signs leaves. Built from the issuer certificate so that leaves name it as their
    /// issuer and carry its key identifier.
    issuer: Issuer<'static, KeyPair>,
    /// Sent after every leaf, so a peer holding only the root can build the path.
    issuer_der: CertificateDer<'static>,
    /// A leaf never outlives its issuer: webpki would refuse the chain anyway.
    issuer_not_after: OffsetDateTime,
}

/// A signed leaf and what the logs and the response say about it.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// `[leaf, issuer]`, DER.
    pub chain: Vec<CertificateDer<'static>>,
    pub not_after: OffsetDateTime,
    /// The serial number, hex, for logs: it is how an operator finds one certificate.
    pub serial: String,
}

impl IssuedCert {
    /// `not_after` as an RFC 3339 timestamp, for logs.
    pub fn not_after_rfc3339(&self) -> humantime::Rfc3339Timestamp {
        let seconds = self.not_after.unix_timestamp().max(0).unsigned_abs();
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
    }
}

impl Ca {
    /// Loads an operator's CA from three PEM files and checks that they fit together.
    pub fn from_files(
        trust_anchors: &Path,
        issuer_cert: &Path,
        issuer_key: &Path,
    ) -> Result<Self, Error> {
        let anchors_pem = read(trust_anchors, "trust anchors file (--trust-anchors)")?;
        let anchors =
            TrustAnchors::from_pem(anchors_pem.as_bytes()).map_err(|e| Error::InvalidFile {
                what: "trust anchors file",
                path: trust_anchors.to_path_buf(),
                reason: e.to_string(),
            })?;

        let cert_pem = read(issuer_cert, "issuer certificate (--issuer-cert)")?;
        let invalid_cert = |reason: String| Error::InvalidFile {
            what: "issuer certificate",
            path: issuer_cert.to_path_buf(),
            reason,
        };
        let issuer_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid_cert(format!("no PEM CERTIFICATE block: {e}")))?;

        let key_pem = read(issuer_key, "issuer key (--issuer-key)")?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::InvalidFile {
            what: "issuer key",
            path: issuer_key.to_path_buf(),
            reason: format!(
                "{e}; the key must be an unencrypted PKCS#8 PEM (BEGIN PRIVATE KEY), \
                 convert it with `openssl pkcs8 -topk8 -nocrypt`"
            ),
        })?;

        Self::new(anchors, issuer_der, key, issuer_cert)
    }

    /// Assembles a CA and proves it works: a probe leaf it signs must verify against
    /// the anchors. This catches, at start-up rather than at the first proxy, an issuer
    /// from another root, an expired issuer and a key that does not match.
    pub(crate) fn new(
        anchors: TrustAnchors,
        issuer_der: CertificateDer<'static>,
        key: KeyPair,
        issuer_path: &Path,
    ) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidFile {
            what: "issuer certificate",
            path: issuer_path.to_path_buf(),
            reason,
        };
        let (_, parsed) = X509Certificate::from_der(&issuer_der)
            .map_err(|e| invalid(format!("cannot parse it: {e}")))?;
        let issuer_not_after =
            OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
                .map_err(|e| invalid(format!("its notAfter is out of range: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&issuer_der, key)
            .map_err(|e| invalid(format!("cannot use it as an issuer: {e}")))?;
        let ca = Ca {
            anchors,
            issuer,
            issuer_der,
            issuer_not_after,
        };

        let probe_id = SpiffeId::for_service_account("probe.invalid", "probe", "probe")
            .map_err(|e| Error::IssuerUntrusted(e.to_string()))?;
        let probe_key = KeyPair::generate()?;
        let probe = ca.issue(&probe_key, &probe_id, Duration::from_secs(60))?;
        verify_chain(
            &probe.chain[0],
            &probe.chain[1..],
            &ca.anchors,
            UnixTime::now(),
            Presenter::Client,
        )
        .map_err(|e| Error::IssuerUntrusted(e.to_string()))?;
        Ok(ca)
    }

    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Signs a workload certificate for `id` over `key` (a P-256 key that the caller
    /// has already checked, see `csr::check`): usable as a TLS server and client, not
    /// a CA.
    pub fn issue(
        &self,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<IssuedCert, Error> {
        let params = self.leaf_params(
            id,
            &[],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            lifetime,
        )?;
        self.sign(&params, key)
    }

    /// Signs the controller's own serving certificate: its SPIFFE ID plus DNS names,
    /// server authentication only (the controller never dials a proxy).
    pub fn issue_server(
        &self,
        key: &KeyPair,
        id: &SpiffeId,
        dns_names: &[&str],
        lifetime: Duration,
    ) -> Result<IssuedCert, Error> {
        let params = self.leaf_params(
            id,
            dns_names,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            lifetime,
        )?;
        self.sign(&params, key)
    }

    fn leaf_params(
        &self,
        id: &SpiffeId,
        dns_names: &[&str],
        extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
        lifetime: Duration,
    ) -> Result<CertificateParams, Error> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        // The identity lives in the URI SAN; an empty subject keeps a CN from ever
        // being mistaken for one (rcgen then marks the SAN critical, per RFC 5280).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = extended_key_usages;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = now - CLOCK_SKEW;
        // Clamped rather than overflowing: `--cert-lifetime 1000years` means "as long
        // as the issuer lasts".
        params.not_after = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|lifetime| now.checked_add(lifetime))
            .map_or(self.issuer_not_after, |end| end.min(self.issuer_not_after));
        Ok(params)
    }

    fn sign(
        &self,
        params: &CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<IssuedCert, Error> {
        let leaf = params.signed_by(key, &self.issuer)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex(s.as_ref()))
            .unwrap_or_default();
        Ok(IssuedCert {
            chain: vec![leaf.der().clone(), self.issuer_der.clone()],
            not_after: params.not_after,
            serial,
        })
    }
}

/// 16 random bytes, positive and without a leading zero so that DER keeps all of them:
/// unpredictable serials are what RFC 5280 and the CA/B forum ask of a CA.
pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Sign(rcgen::Error::RingUnspecified))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path, what: &'static str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Read {
        what,
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests;
