//! Token verification with real keys: an ES256 key made here and an RS256 key from
//! `testdata/`, tokens shaped like projected ServiceAccount tokens.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::fixtures::{AUDIENCE, ES_KID, RSA_KID, ScratchDir, Signers, checkout_claims, now};

fn checkout() -> ServiceAccount {
    ServiceAccount {
        namespace: "shop".into(),
        name: "checkout".into(),
        pod: Some("checkout-7d9f-abcde".into()),
    }
}

#[test]
fn es256_and_rs256_tokens_name_their_service_account() {
    let signers = Signers::new();
    let verifier = signers.verifier();
    let claims = checkout_claims();
    assert_eq!(verifier.verify(&signers.es256(&claims)), Ok(checkout()));
    assert_eq!(verifier.verify(&signers.rs256(&claims)), Ok(checkout()));
}

#[test]
fn without_a_kid_every_key_of_the_token_type_is_tried() {
    let signers = Signers::new();
    let verifier = signers.verifier();
    let claims = checkout_claims();
    let es = signers.es256_with(&signers.es256, Header::new(Algorithm::ES256), &claims);
    assert_eq!(verifier.verify(&es), Ok(checkout()));
    let stranger = signers.es256_with(&signers.stranger, Header::new(Algorithm::ES256), &claims);
    assert_eq!(verifier.verify(&stranger), Err(TokenError::BadSignature));
}

#[test]
fn the_audience_may_be_a_string_or_a_list_but_must_include_ours() {
    let signers = Signers::new();
    let verifier = signers.verifier();
    let mut claims = checkout_claims();
    claims["aud"] = json!(AUDIENCE);
    assert!(verifier.verify(&signers.es256(&claims)).is_ok());
    claims["aud"] = json!(["https://kubernetes.default.svc", AUDIENCE]);
    assert!(verifier.verify(&signers.es256(&claims)).is_ok());

    for aud in [
        json!("https://kubernetes.default.svc"),
        json!([]),
        json!(["other"]),
    ] {
        claims["aud"] = aud;
        assert_eq!(
            verifier.verify(&signers.es256(&claims)),
            Err(TokenError::WrongAudience(AUDIENCE.into()))
        );
    }
    claims.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::WrongAudience(AUDIENCE.into()))
    );
}

#[test]
fn exp_and_nbf_are_enforced_with_a_small_leeway() {
    let signers = Signers::new();
    let verifier = signers.verifier();
    let mut claims = checkout_claims();
    claims["exp"] = json!(now() - 3600);
    assert_eq!(
        verifier.verify(&signers.rs256(&claims)),
        Err(TokenError::Expired)
    );
    claims["exp"] = json!(now() - 10);
    assert!(verifier.verify(&signers.rs256(&claims)).is_ok());

    let mut claims = checkout_claims();
    claims["nbf"] = json!(now() + 600);
    assert_eq!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::NotYetValid)
    );
    claims["nbf"] = json!(now() + 10);
    assert!(verifier.verify(&signers.es256(&claims)).is_ok());

    let mut claims = checkout_claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let signers = Signers::new();
    let verifier = signers.verifier();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(ES_KID.into());
    let forged = signers.es256_with(&signers.stranger, header, &checkout_claims());
    assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn a_tampered_payload_breaks_the_signature() {
    let signers = Signers::new();
    let token = signers.rs256(&checkout_claims());
    let mut other = checkout_claims();
    other["sub"] = json!("system:serviceaccount:kube-system:admin");
    other["kubernetes.io"]["namespace"] = json!("kube-system");
    other["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
    let other = signers.rs256(&other);
    let parts: Vec<&str> = token.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(
        signers.verifier().verify(&spliced),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn algorithms_and_key_ids_must_match_the_key_set() {
    let signers = Signers::new();
    let verifier = signers.verifier();
    let claims = checkout_claims();

    // RS256 claiming to be signed by the EC key.
    assert!(matches!(
        verifier.verify(&signers.rs256_as(ES_KID, &claims)),
        Err(TokenError::AlgorithmMismatch { .. })
    ));
    assert_eq!(
        verifier.verify(&signers.rs256_as("rotated-away", &claims)),
        Err(TokenError::UnknownKey("rotated-away".into()))
    );

    // HS256 with the RSA key's public modulus as the secret: the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(RSA_KID.into());
    let hs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"n")).unwrap();
    assert_eq!(
        verifier.verify(&hs),
        Err(TokenError::UnsupportedAlgorithm("HS256".into()))
    );

    // alg "none" is not even a header jsonwebtoken parses.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert!(matches!(
        verifier.verify(&none),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn both_places_that_name_the_service_account_must_agree() {
    let signers = Signers::new();
    let verifier = signers.verifier();

    let mut claims = checkout_claims();
    claims["kubernetes.io"]["serviceaccount"]["name"] = json!("payments");
    assert!(matches!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::ClaimsMismatch(_))
    ));

    let mut claims = checkout_claims();
    claims["kubernetes.io"]["namespace"] = json!("bank");
    assert!(matches!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::ClaimsMismatch(_))
    ));

    let mut claims = checkout_claims();
    claims.as_object_mut().unwrap().remove("kubernetes.io");
    assert!(matches!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::ClaimsMismatch(_))
    ));

    let mut claims = checkout_claims();
    claims["sub"] = json!("system:node:worker-1");
    assert!(matches!(
        verifier.verify(&signers.es256(&claims)),
        Err(TokenError::NotServiceAccount(_))
    ));
}

#[test]
fn garbage_is_malformed_never_a_panic() {
    let verifier = Signers::new().verifier();
    assert_eq!(verifier.verify(""), Err(TokenError::Missing));
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    for token in [
        "a",
        "a.b",
        "a.b.c",
        "..",
        "é.é.é",
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "eyJhbGciOiJFUzI1NiJ9.!!!.sig",
        &long,
    ] {
        let verdict = verifier.verify(token);
        assert!(
            matches!(
                verdict,
                Err(TokenError::Malformed(_) | TokenError::BadSignature)
            ),
            "{token}: {verdict:?}"
        );
    }
}

#[test]
fn key_sets_keep_usable_keys_and_explain_the_rest() {
    let signers = Signers::new();
    let es = mint::es256_jwk(signers.es256.public_key_raw(), "good").unwrap();
    let mut wrong_alg = es.clone();
    wrong_alg["alg"] = json!("RS256");
    wrong_alg["kid"] = json!("wrong-alg");
    let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
    let okp =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let secret = json!({"kty": "oct", "k": "c2VjcmV0"});
    let short = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});

    let json = mint::jwks(&[p384, okp, secret, short, wrong_alg, es]);
    let verifier = TokenVerifier::from_jwks(&json, AUDIENCE).unwrap();
    assert_eq!(verifier.keys.len(), 1);
    assert_eq!(verifier.keys[0].kid.as_deref(), Some("good"));

    for bad in [
        "",
        "{}",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#,
    ] {
        assert!(
            matches!(
                TokenVerifier::from_jwks(bad, AUDIENCE),
                Err(Error::InvalidJwks(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_key_set_file_error_names_the_file() {
    let dir = ScratchDir::new("jwks");
    let path = dir.path().join("jwks.json");
    let message = TokenVerifier::from_jwks_file(&path, AUDIENCE)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("jwks.json"), "{message}");

    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(&path, r#"{"keys": []}"#).unwrap();
    let message = TokenVerifier::from_jwks_file(&path, AUDIENCE)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("jwks.json") && message.contains("no RSA"),
        "{message}"
    );
}
