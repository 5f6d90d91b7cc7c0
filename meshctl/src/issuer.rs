//! The local stand-in for the cluster's ServiceAccount token issuer.
//!
//! In Kubernetes the API server signs each pod's projected ServiceAccount token, and
//! the controller checks it against the issuer's published keys (JWKS). `meshctl local`
//! plays that issuer: one ES256 key per local mesh, its JWKS handed to the controller
//! with `--token-jwks`, and a token per pod with the claims the API server would put
//! there. Identities therefore come through the same path as in a cluster.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde_json::json;

use crate::Error;

/// The `iss` of every token we sign.
pub const ISSUER: &str = "meshctl-local";
/// The audience the controller expects by default (`--token-audience`).
pub const AUDIENCE: &str = "identity.trellis.io";
/// Long enough for any local session; the kubelet would rotate sooner.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The signing key and its key id.
pub struct TokenIssuer {
    key: KeyPair,
    /// The RFC 7638 thumbprint of the public key: stable, so tokens and JWKS agree.
    kid: String,
}

/// Which workload a token speaks for.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    sub: String,
    aud: [&'static str; 1],
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims<'a>,
}

#[derive(Serialize)]
struct KubernetesClaims<'a> {
    namespace: &'a str,
    serviceaccount: NameUid<'a>,
    pod: NameUid<'a>,
}

#[derive(Serialize)]
struct NameUid<'a> {
    name: &'a str,
    uid: String,
}

impl TokenIssuer {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(|e| Error::Signing(e.to_string()))?;
        Ok(Self::from_key(key))
    }

    /// The key as [`to_pem`](Self::to_pem) wrote it.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        KeyPair::from_pem(pem)
            .map(Self::from_key)
            .map_err(|e| e.to_string())
    }

    fn from_key(key: KeyPair) -> Self {
        let (x, y) = coordinates(&key);
        // Members in lexicographic order and no whitespace, as RFC 7638 requires.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        TokenIssuer { key, kid }
    }

    /// PKCS#8 PEM of the private key, for the state directory.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    #[cfg(test)]
    fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS the controller trusts: `{"keys":[{"kty":"EC",...}]}`.
    pub fn jwks(&self) -> serde_json::Value {
        let (x, y) = coordinates(&self.key);
        json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": x,
                "y": y,
                "kid": self.kid,
                "alg": "ES256",
                "use": "sig",
            }]
        })
    }

    /// A ServiceAccount token for `workload`, valid from `now` for seven days.
    pub fn token(&self, workload: &Workload<'_>, now: SystemTime) -> Result<String, Error> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: ISSUER,
            sub: format!(
                "system:serviceaccount:{}:{}",
                workload.namespace, workload.service_account
            ),
            aud: [AUDIENCE],
            iat: now,
            nbf: now,
            exp: now + LIFETIME.as_secs(),
            kubernetes: KubernetesClaims {
                namespace: workload.namespace,
                serviceaccount: NameUid {
                    name: workload.service_account,
                    uid: random_uid()?,
                },
                pod: NameUid {
                    name: workload.pod,
                    uid: random_uid()?,
                },
            },
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| Error::Signing(e.to_string()))
    }
}

/// The base64url (no padding) affine coordinates of the public key: the raw key is
/// the uncompressed SEC1 point `04 || x || y`.
fn coordinates(key: &KeyPair) -> (String, String) {
    let raw = key.public_key_raw();
    let (x, y) = raw
        .get(1..)
        .unwrap_or_default()
        .split_at(raw.len().saturating_sub(1) / 2);
    (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
}

/// A random (version 4) UUID, as Kubernetes gives objects.
fn random_uid() -> Result<String, Error> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Signing("the system random source failed".into()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn checker(jwks: &serde_json::Value) -> DecodingKey {
        let key = &jwks["keys"][0];
        DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap())
            .unwrap()
    }

    #[test]
    fn a_pod_token_verifies_against_the_published_jwks_and_names_the_workload() {
        let issuer = TokenIssuer::generate().unwrap();
        let jwks = issuer.jwks();
        assert_eq!(jwks["keys"][0]["kty"], "EC");
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["kid"], issuer.kid());

        let workload = Workload {
            namespace: "demo",
            service_account: "client",
            pod: "client",
        };
        let token = issuer.token(&workload, SystemTime::now()).unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));

        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(&token, &checker(&jwks), &validation)
                .unwrap()
                .claims;
        assert_eq!(claims["sub"], "system:serviceaccount:demo:client");
        assert_eq!(claims["aud"], json!(["identity.trellis.io"]));
        assert_eq!(claims["kubernetes.io"]["namespace"], "demo");
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "client");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "client");
        let uid = claims["kubernetes.io"]["pod"]["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 36, "{uid}");
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, 7 * 24 * 3600);
    }

    #[test]
    fn a_token_from_another_issuer_key_does_not_verify() {
        let ours = TokenIssuer::generate().unwrap();
        let theirs = TokenIssuer::generate().unwrap();
        let workload = Workload {
            namespace: "default",
            service_account: "web",
            pod: "web",
        };
        let forged = theirs.token(&workload, SystemTime::now()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&forged, &checker(&ours.jwks()), &validation)
                .is_err()
        );
    }

    #[test]
    fn the_key_survives_the_state_directory() {
        let issuer = TokenIssuer::generate().unwrap();
        let again = TokenIssuer::from_pem(&issuer.to_pem()).unwrap();
        assert_eq!(again.kid(), issuer.kid());
        assert_eq!(again.jwks(), issuer.jwks());
    }

    #[test]
    fn the_public_point_splits_into_32_byte_coordinates() {
        let issuer = TokenIssuer::generate().unwrap();
        let (x, y) = coordinates(&issuer.key);
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(y).unwrap().len(), 32);
    }
}
