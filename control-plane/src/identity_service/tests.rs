//! `Certify` called as tonic would call it, with real tokens, CSRs and a development
//! CA: what a proxy gets back, and the exact status of every refusal.

use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use tonic::Code;
use trellis_identity::{Presenter, verify_chain};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::fixtures::{CHECKOUT, ScratchDir, Signers, TRUST_DOMAIN, checkout_claims, csr, now};

struct Harness {
    _dir: ScratchDir,
    ca: Arc<Ca>,
    signers: Signers,
    service: IdentityService,
}

fn harness(lifetime: Duration) -> Harness {
    let (dir, ca) = crate::fixtures::dev_ca();
    let ca = Arc::new(ca);
    let signers = Signers::new();
    let service = IdentityService::new(
        ca.clone(),
        Arc::new(signers.verifier().into()),
        TRUST_DOMAIN,
        lifetime,
    );
    Harness {
        _dir: dir,
        ca,
        signers,
        service,
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Harness {
    async fn certify(&self, token: String, csr_der: Vec<u8>) -> Result<CertifyResponse, Status> {
        self.service
            .certify(Request::new(CertifyRequest { csr_der, token }))
            .await
            .map(Response::into_inner)
    }

    async fn refusal(&self, token: String, csr_der: Vec<u8>) -> Code {
        match self.certify(token, csr_der).await {
            Ok(response) => panic!("issued {}", response.spiffe_id),
            Err(status) => status.code(),
        }
    }

    /// A valid CSR with a token for `claims`.
    async fn with_claims(&self, claims: &Value) -> Code {
        let key = KeyPair::generate().unwrap();
        self.refusal(self.signers.es256(claims), csr(&key, &[]))
            .await
    }
}

#[tokio::test]
async fn a_proxy_gets_a_chain_for_the_identity_its_token_proves() {
    let h = harness(DAY);
    let key = KeyPair::generate().unwrap();
    let before = now() as i64;
    let response = h
        .certify(h.signers.es256(&checkout_claims()), csr(&key, &[]))
        .await
        .unwrap();

    assert_eq!(response.spiffe_id, CHECKOUT);
    let chain: Vec<CertificateDer<'static>> = response
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    assert_eq!(chain.len(), 2, "[leaf, issuer]");
    let id = verify_chain(
        &chain[0],
        &chain[1..],
        h.ca.anchors(),
        UnixTime::now(),
        Presenter::Client,
    )
    .unwrap();
    assert_eq!(id.as_str(), CHECKOUT);

    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the certificate is for the proxy's own P-256 key"
    );
    let not_after = leaf.validity().not_after.timestamp();
    assert_eq!(response.not_after_unix, not_after);
    let lifetime = not_after - before;
    assert!((86_398..=86_402).contains(&lifetime), "{lifetime}");
}

#[tokio::test]
async fn the_lifetime_follows_the_configuration() {
    let h = harness(Duration::from_secs(20));
    let key = KeyPair::generate().unwrap();
    let before = now() as i64;
    let response = h
        .certify(h.signers.rs256(&checkout_claims()), csr(&key, &[CHECKOUT]))
        .await
        .unwrap();
    let lifetime = response.not_after_unix - before;
    assert!((18..=22).contains(&lifetime), "{lifetime}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_both_accepted() {
    let h = harness(DAY);
    for token in [
        h.signers.rs256(&checkout_claims()),
        h.signers.es256(&checkout_claims()),
    ] {
        let key = KeyPair::generate().unwrap();
        let response = h.certify(token, csr(&key, &[])).await.unwrap();
        assert_eq!(response.spiffe_id, CHECKOUT);
    }
}

#[tokio::test]
async fn the_identity_comes_from_the_token_not_from_the_csr_subject() {
    let h = harness(DAY);
    let key = KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "spiffe://cluster.local/ns/bank/sa/payments",
    );
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    let response = h
        .certify(h.signers.es256(&checkout_claims()), der)
        .await
        .unwrap();
    assert_eq!(response.spiffe_id, CHECKOUT);
    let (_, leaf) = X509Certificate::from_der(&response.chain_der[0]).unwrap();
    assert!(
        !leaf.basic_constraints().unwrap().unwrap().value.ca,
        "a CSR cannot ask to be a CA"
    );
}

#[tokio::test]
async fn token_refusals_are_unauthenticated() {
    let h = harness(DAY);

    let mut expired = checkout_claims();
    expired["exp"] = json!(now() - 3600);
    let mut not_yet = checkout_claims();
    not_yet["nbf"] = json!(now() + 3600);
    let mut wrong_aud = checkout_claims();
    wrong_aud["aud"] = json!(["https://kubernetes.default.svc"]);
    let mut mismatch = checkout_claims();
    mismatch["kubernetes.io"]["serviceaccount"]["name"] = json!("payments");
    // A name Kubernetes would never issue, so no SPIFFE ID can carry it.
    let mut bad_name = checkout_claims();
    bad_name["sub"] = json!("system:serviceaccount:Shop:checkout");
    bad_name["kubernetes.io"]["namespace"] = json!("Shop");

    for (what, claims) in [
        ("expired", expired),
        ("nbf in the future", not_yet),
        ("wrong audience", wrong_aud),
        ("sub and kubernetes.io disagree", mismatch),
        ("invalid namespace", bad_name),
    ] {
        assert_eq!(
            h.with_claims(&claims).await,
            Code::Unauthenticated,
            "{what}"
        );
    }

    let key = KeyPair::generate().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(crate::fixtures::ES_KID.into());
    let forged = h
        .signers
        .es256_with(&h.signers.stranger, header, &checkout_claims());
    let alg_mismatch = h
        .signers
        .rs256_as(crate::fixtures::ES_KID, &checkout_claims());
    for (what, token) in [
        ("signed by another key", forged),
        ("RS256 under an EC key id", alg_mismatch),
        ("no token", String::new()),
        ("garbage", "not.a.token".to_string()),
    ] {
        assert_eq!(
            h.refusal(token, csr(&key, &[])).await,
            Code::Unauthenticated,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_csr_with_a_bad_signature_is_an_invalid_argument() {
    let h = harness(DAY);
    let key = KeyPair::generate().unwrap();
    let mut der = csr(&key, &[]);
    // The signature's last byte is the DER's last byte: flipping it keeps the request
    // parseable and breaks only the proof of possession.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    assert_eq!(
        crate::csr::check(&der, &CHECKOUT.parse().unwrap()).err(),
        Some(crate::CsrError::BadSignature)
    );
    let token = h.signers.es256(&checkout_claims());
    assert_eq!(h.refusal(token, der).await, Code::InvalidArgument);
}

#[tokio::test]
async fn a_csr_for_another_identity_is_permission_denied() {
    let h = harness(DAY);
    let key = KeyPair::generate().unwrap();
    for uris in [
        &["spiffe://cluster.local/ns/bank/sa/payments"][..],
        &["spiffe://other.domain/ns/shop/sa/checkout"],
        &[CHECKOUT, "spiffe://cluster.local/ns/bank/sa/payments"],
    ] {
        let token = h.signers.es256(&checkout_claims());
        assert_eq!(
            h.refusal(token, csr(&key, uris)).await,
            Code::PermissionDenied,
            "{uris:?}"
        );
    }
}

#[tokio::test]
async fn a_csr_for_a_key_other_than_p256_is_an_invalid_argument() {
    let h = harness(DAY);
    for alg in [&PKCS_ECDSA_P384_SHA384, &PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let token = h.signers.es256(&checkout_claims());
        assert_eq!(
            h.refusal(token, csr(&key, &[])).await,
            Code::InvalidArgument,
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn malformed_csrs_are_invalid_arguments() {
    let h = harness(DAY);
    let valid = csr(&KeyPair::generate().unwrap(), &[]);
    for der in [
        vec![],
        b"garbage".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        vec![0x30; 20_000],
    ] {
        let token = h.signers.es256(&checkout_claims());
        assert_eq!(h.refusal(token, der).await, Code::InvalidArgument);
    }
}
