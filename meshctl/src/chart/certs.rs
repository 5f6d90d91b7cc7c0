//! The TLS material `meshctl install` makes when it is given none, so that one
//! command installs a working mesh for trying Trellis: a mesh root and issuer (the
//! controller's CA) and a webhook CA with the injector's serving certificate.
//!
//! The roots' private keys are never written anywhere: nothing can sign under them
//! again, so rotating the issuer or the serving certificate means installing anew.
//! That is the price of not leaving a root key lying around; production installs
//! bring their own CA (see the README).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::error::ChartError;

/// The controller's CA: what `identity.trustAnchorsPEM`, `identity.issuer.certPEM` and
/// `identity.issuer.keyPEM` hold.
#[derive(Debug, Clone)]
pub struct MeshCa {
    pub trust_anchors_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
}

/// The webhook's TLS: `injector.webhook.caBundlePEM`, `injector.tls.certPEM`,
/// `injector.tls.keyPEM`.
#[derive(Debug, Clone)]
pub struct WebhookTls {
    pub ca_bundle_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

const ROOT_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 365;

/// A root (ECDSA P-256, ten years) and an issuer under it (P-256, one year, path
/// length 0), shaped as the controller's `--dev-ca` makes them, so the controller
/// takes them through the same checks.
pub fn mesh_ca() -> Result<MeshCa, ChartError> {
    let generate = |error| ChartError::Generate {
        what: "the mesh CA",
        error,
    };
    let root = self_signed_ca("Trellis mesh root CA (meshctl install)").map_err(generate)?;
    let mut issuer = ca_params("Trellis mesh issuer (meshctl install)", LEAF_DAYS);
    issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuer.use_authority_key_identifier_extension = true;
    let issuer = KeyPair::generate()
        .and_then(|key| CertifiedIssuer::signed_by(issuer, key, &root))
        .map_err(generate)?;
    Ok(MeshCa {
        trust_anchors_pem: root.pem(),
        issuer_cert_pem: issuer.pem(),
        issuer_key_pem: issuer.key().serialize_pem(),
    })
}

/// A webhook CA and a serving certificate under it for the injector's Service in
/// `namespace`, by every name the API server may use for it.
pub fn webhook_tls(namespace: &str) -> Result<WebhookTls, ChartError> {
    let generate = |error| ChartError::Generate {
        what: "the injector's webhook certificate",
        error,
    };
    let ca = self_signed_ca("Trellis injector webhook CA (meshctl install)").map_err(generate)?;
    let service = format!("trellis-injector.{namespace}.svc");
    let names = vec![
        service.clone(),
        format!("{service}.cluster.local"),
        format!("trellis-injector.{namespace}"),
    ];
    let mut leaf = CertificateParams::new(names).map_err(generate)?;
    leaf.distinguished_name = name(&service);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    validity(&mut leaf, LEAF_DAYS);
    let key = KeyPair::generate().map_err(generate)?;
    let cert = leaf.signed_by(&key, &ca).map_err(generate)?;
    Ok(WebhookTls {
        ca_bundle_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn self_signed_ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = ca_params(common_name, ROOT_DAYS);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

fn ca_params(common_name: &str, days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    params
}

/// From an hour ago (a node whose clock is a little behind still accepts it) for
/// `days` days.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Trellis");
    name.push(DnType::CommonName, common_name);
    name
}
