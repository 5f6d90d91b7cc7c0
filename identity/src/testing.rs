//! A real CA for tests: a root, an issuer under it, and leaves under the issuer, as
//! the controller issues them.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::TrustAnchors;

pub struct Ca {
    pub root: CertificateDer<'static>,
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} root"));
    let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} issuer"));
    let issuer = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root).unwrap();
    Ca {
        root: root.der().clone(),
        issuer,
    }
}

/// A leaf certificate with the given URI SANs, and its key.
pub fn leaf_with_key(
    ca: &Ca,
    sans: &[&str],
    not_after: OffsetDateTime,
) -> (CertificateDer<'static>, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI(s.to_string().try_into().unwrap()))
        .collect();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    params.not_after = not_after;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap().der().clone();
    (cert, key)
}

pub fn leaf(ca: &Ca, sans: &[&str], not_after: OffsetDateTime) -> CertificateDer<'static> {
    leaf_with_key(ca, sans, not_after).0
}

pub fn tomorrow() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(1)
}

pub fn anchors(ca: &Ca) -> TrustAnchors {
    TrustAnchors::from_der(vec![ca.root.clone()]).unwrap()
}
