//! Checking a workload's certificate signing request before its key is certified.
//!
//! Only two things are taken from a CSR: its public key, and its proof that the caller
//! holds the private key (the signature). Its subject, extensions and requested
//! usages are ignored: the certificate's contents come from the token and the mesh's
//! rules. The requested names are still checked, so that a proxy that asks for the
//! wrong identity learns it at once instead of getting a certificate it did not expect.

use rcgen::{PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm, SubjectPublicKeyInfo};
use trellis_identity::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::oid_registry::{OID_SIG_ECDSA_WITH_SHA256, Oid};
use x509_parser::prelude::FromDer;

use crate::CsrError;

/// Far above any real P-256 CSR (about 250 bytes with one SAN), far below what would
/// cost the parser anything.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// A P-256 public key whose holder signed the request, asking for no name other than
/// the caller's identity.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    key: SubjectPublicKeyInfo,
}

impl PublicKeyData for CheckedCsr {
    fn der_bytes(&self) -> &[u8] {
        self.key.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key.algorithm()
    }
}

/// Checks `der` for a certificate naming `identity`: parse, key type, signature,
/// requested names, in that order (a refusal names the first problem).
pub fn check(der: &[u8], identity: &SpiffeId) -> Result<CheckedCsr, CsrError> {
    if der.is_empty() {
        return Err(CsrError::Malformed("the request carries no CSR".into()));
    }
    if der.len() > MAX_CSR_LEN {
        return Err(CsrError::Malformed(format!(
            "it is {} bytes long; a CSR for a P-256 key is under {MAX_CSR_LEN}",
            der.len()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::Malformed(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} bytes follow the request",
            rest.len()
        )));
    }

    let spki = &csr.certification_request_info.subject_pki;
    // rcgen matches the whole algorithm identifier, curve included: a P-384 key is not
    // mistaken for a P-256 one, whatever hash the request was signed with.
    let key = SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|_| CsrError::KeyNotP256(describe_key(spki)))?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::KeyNotP256(describe_key(spki)));
    }
    // An uncompressed point (0x04 || x || y) is what rustls and webpki accept.
    let point = key.der_bytes();
    if point.len() != 65 || point[0] != 0x04 {
        return Err(CsrError::KeyNotP256(
            "a P-256 key that is not an uncompressed point".into(),
        ));
    }

    if csr.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
        return Err(CsrError::Malformed(format!(
            "it is signed with {}; a P-256 key signs with ecdsa-with-SHA256",
            name_of(&csr.signature_algorithm.algorithm)
        )));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    check_names(&csr, identity)?;
    Ok(CheckedCsr { key })
}

/// The requested SANs must be none, or exactly the URI of `identity`.
fn check_names(csr: &X509CertificationRequest<'_>, identity: &SpiffeId) -> Result<(), CsrError> {
    let names: Vec<&GeneralName<'_>> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    match names[..] {
        [] => Ok(()),
        [GeneralName::URI(uri)] if *uri == identity.as_str() => Ok(()),
        _ => Err(CsrError::ForeignName {
            requested: names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            identity: identity.clone(),
        }),
    }
}

/// "an EC key on secp384r1", "an Ed25519 key": what the caller sent, for the status.
fn describe_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    let algorithm = name_of(&spki.algorithm.algorithm);
    match spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
    {
        Some(curve) => format!("{algorithm} on {}", name_of(&curve)),
        None => algorithm,
    }
}

fn name_of(oid: &Oid<'_>) -> String {
    oid2sn(oid, oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| oid.to_id_string())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn checkout() -> SpiffeId {
        "spiffe://cluster.local/ns/shop/sa/checkout"
            .parse()
            .unwrap()
    }

    fn csr(key: &KeyPair, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn a_p256_request_without_names_or_with_its_own_passes() {
        let key = KeyPair::generate().unwrap();
        let checked = check(&csr(&key, vec![]), &checkout()).unwrap();
        assert_eq!(checked.der_bytes(), key.public_key_raw());
        check(&csr(&key, vec![uri(checkout().as_str())]), &checkout()).unwrap();
    }

    #[test]
    fn garbage_is_malformed() {
        for der in [&b""[..], b"\x30\x03\x02\x01", b"not a csr at all"] {
            assert!(matches!(
                check(der, &checkout()),
                Err(CsrError::Malformed(_))
            ));
        }
        let mut der = csr(&KeyPair::generate().unwrap(), vec![]);
        der.push(0);
        assert!(matches!(
            check(&der, &checkout()),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn other_key_types_are_named_in_the_refusal() {
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let Err(CsrError::KeyNotP256(what)) = check(&csr(&p384, vec![]), &checkout()) else {
            panic!("a P-384 key was accepted");
        };
        assert!(what.contains("384"), "{what}");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(
            check(&csr(&ed, vec![]), &checkout()),
            Err(CsrError::KeyNotP256(_))
        ));
    }

    #[test]
    fn other_names_are_foreign() {
        let key = KeyPair::generate().unwrap();
        for sans in [
            vec![uri("spiffe://cluster.local/ns/shop/sa/payments")],
            vec![SanType::DnsName("checkout.shop.svc".try_into().unwrap())],
            vec![uri(checkout().as_str()), uri(checkout().as_str())],
            vec![
                uri(checkout().as_str()),
                SanType::DnsName("x".try_into().unwrap()),
            ],
        ] {
            assert!(matches!(
                check(&csr(&key, sans), &checkout()),
                Err(CsrError::ForeignName { .. })
            ));
        }
    }
}
