//! Minting ServiceAccount-shaped tokens and the JWKS that verifies them, for whatever
//! plays the Kubernetes API server's part: `meshctl local` (no cluster, so someone
//! must give each proxy a token) and the tests.
//!
//! The tokens have the shape of a projected ServiceAccount token, so they go through
//! exactly the checks a real one does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::Error;

/// The issuer Kubernetes puts in its tokens; the controller does not check it.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The JWK of an ES256 key, from its uncompressed SEC1 point (`0x04 || x || y`, what
/// rcgen's `KeyPair::public_key_raw()` returns for a P-256 key).
pub fn es256_jwk(public_key_raw: &[u8], kid: &str) -> Result<Value, Error> {
    let (x, y) = es256_coordinates(public_key_raw)?;
    Ok(json!({
        "kty": "EC",
        "crv": "P-256",
        "use": "sig",
        "alg": "ES256",
        "kid": kid,
        "x": x,
        "y": y,
    }))
}

/// The RFC 7638 thumbprint of an ES256 key (same input as [`es256_jwk`]): a `kid`
/// that stays the same for as long as the key does, so that a persisted key and the
/// tokens it signed keep agreeing.
pub fn es256_thumbprint(public_key_raw: &[u8]) -> Result<String, Error> {
    let (x, y) = es256_coordinates(public_key_raw)?;
    // The required members only, in lexicographic order, without whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// The base64url affine coordinates of an uncompressed P-256 point.
fn es256_coordinates(public_key_raw: &[u8]) -> Result<(String, String), Error> {
    if public_key_raw.len() != 65 || public_key_raw[0] != 0x04 {
        return Err(Error::Mint(
            "an ES256 key must be an uncompressed P-256 point of 65 bytes".into(),
        ));
    }
    Ok((
        URL_SAFE_NO_PAD.encode(&public_key_raw[1..33]),
        URL_SAFE_NO_PAD.encode(&public_key_raw[33..65]),
    ))
}

/// A JWKS document (`{"keys": [...]}`) holding `keys`, ready to write to the file
/// given with `--token-jwks`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// The claims of a projected token for `namespace`/`service_account` (and `pod`, if
/// given), valid from now for `lifetime`, for `audience`.
pub fn service_account_claims(
    namespace: &str,
    service_account: &str,
    pod: Option<&str>,
    audience: &str,
    lifetime: Duration,
) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut kubernetes = json!({
        "namespace": namespace,
        "serviceaccount": { "name": service_account, "uid": "00000000-0000-0000-0000-000000000000" },
    });
    if let Some(pod) = pod {
        kubernetes["pod"] = json!({ "name": pod, "uid": "00000000-0000-0000-0000-000000000000" });
    }
    json!({
        "iss": ISSUER,
        "aud": [audience],
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "kubernetes.io": kubernetes,
    })
}

/// Signs `claims` with an ES256 key given as PKCS#8 DER (rcgen's
/// `KeyPair::serialize_der()`), naming the key `kid` in the header.
pub fn sign_es256(pkcs8_der: &[u8], kid: &str, claims: &Value) -> Result<String, Error> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(pkcs8_der))
        .map_err(|e| Error::Mint(format!("cannot sign with this key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384};

    #[test]
    fn an_es256_jwk_carries_the_two_32_byte_coordinates_of_its_point() {
        let key = KeyPair::generate().unwrap();
        let jwk = es256_jwk(key.public_key_raw(), "k1").unwrap();
        assert_eq!(jwk["kid"], "k1");
        for part in ["x", "y"] {
            let bytes = URL_SAFE_NO_PAD.decode(jwk[part].as_str().unwrap()).unwrap();
            assert_eq!(bytes.len(), 32, "{part}");
        }
    }

    #[test]
    fn a_thumbprint_names_one_key_and_no_other() {
        let key = KeyPair::generate().unwrap();
        let again = KeyPair::from_pem(&key.serialize_pem()).unwrap();
        let other = KeyPair::generate().unwrap();
        let thumbprint = es256_thumbprint(key.public_key_raw()).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&thumbprint).unwrap().len(),
            32,
            "a SHA-256 digest"
        );
        assert_eq!(
            es256_thumbprint(again.public_key_raw()).unwrap(),
            thumbprint
        );
        assert_ne!(
            es256_thumbprint(other.public_key_raw()).unwrap(),
            thumbprint
        );
    }

    #[test]
    fn a_key_that_is_not_p256_makes_no_jwk() {
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            es256_jwk(p384.public_key_raw(), "k"),
            Err(Error::Mint(_))
        ));
        assert!(matches!(
            es256_thumbprint(p384.public_key_raw()),
            Err(Error::Mint(_))
        ));
    }
}
