//! The local stand-in for the cluster's ServiceAccount token issuer.
//!
//! In Kubernetes the API server signs each pod's projected ServiceAccount token, and
//! the controller checks it against the issuer's published keys (JWKS). `meshctl local`
//! plays that issuer: one ES256 key per local mesh, its JWKS handed to the controller
//! with `--token-jwks`, and a token per pod with the claims the API server would put
//! there. Identities therefore come through the same path as in a cluster.
//!
//! This module owns only the key: making it, persisting it and naming it. What a JWK,
//! the claims and a signed token look like is the controller's `token::mint`, so the
//! tokens meshctl writes are exactly those the controller's own tests verify.

use std::time::Duration;

use rcgen::KeyPair;
use serde_json::Value;
use trellis_control_plane::config::DEFAULT_TOKEN_AUDIENCE;
use trellis_control_plane::token::mint;

use crate::Error;

/// Long enough for any local session; the kubelet would rotate sooner.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The signing key and its key id.
pub struct TokenIssuer {
    key: KeyPair,
    /// The RFC 7638 thumbprint of the public key: stable, so tokens and JWKS agree,
    /// also after the key is read back from the state directory.
    kid: String,
    /// The public half as the controller reads it, named `kid`.
    jwk: Value,
}

/// Which workload a token speaks for.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod: &'a str,
}

impl TokenIssuer {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(|e| Error::Signing(e.to_string()))?;
        Self::from_key(key).map_err(|e| Error::Signing(e.to_string()))
    }

    /// The key as [`to_pem`](Self::to_pem) wrote it.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        Self::from_key(key).map_err(|e| e.to_string())
    }

    /// Fails for a key that is not P-256, which only a hand-edited state directory
    /// can hold.
    fn from_key(key: KeyPair) -> Result<Self, trellis_control_plane::Error> {
        let kid = mint::es256_thumbprint(key.public_key_raw())?;
        let jwk = mint::es256_jwk(key.public_key_raw(), &kid)?;
        Ok(TokenIssuer { key, kid, jwk })
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
    pub fn jwks(&self) -> String {
        mint::jwks(std::slice::from_ref(&self.jwk))
    }

    /// A ServiceAccount token for `workload`, valid from now for seven days, for the
    /// audience the controller expects by default.
    pub fn token(&self, workload: &Workload<'_>) -> Result<String, Error> {
        let claims = mint::service_account_claims(
            workload.namespace,
            workload.service_account,
            Some(workload.pod),
            DEFAULT_TOKEN_AUDIENCE,
            LIFETIME,
        );
        mint::sign_es256(&self.key.serialize_der(), &self.kid, &claims)
            .map_err(|e| Error::Signing(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::json;
    use trellis_control_plane::TokenVerifier;
    use trellis_control_plane::token::ServiceAccount;
    use trellis_control_plane::token::mint::ISSUER;

    const AUDIENCE: &str = DEFAULT_TOKEN_AUDIENCE;

    fn parsed(jwks: &str) -> Value {
        serde_json::from_str(jwks).unwrap()
    }

    fn checker(jwks: &Value) -> DecodingKey {
        let key = &jwks["keys"][0];
        DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap())
            .unwrap()
    }

    #[test]
    fn a_pod_token_verifies_against_the_published_jwks_and_names_the_workload() {
        let issuer = TokenIssuer::generate().unwrap();
        let jwks = parsed(&issuer.jwks());
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
        let token = issuer.token(&workload).unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));

        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let claims = jsonwebtoken::decode::<Value>(&token, &checker(&jwks), &validation)
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
    fn the_controller_takes_the_jwks_and_learns_the_pod_from_the_token() {
        let issuer = TokenIssuer::generate().unwrap();
        let verifier = TokenVerifier::from_jwks(&issuer.jwks(), AUDIENCE).unwrap();
        let workload = Workload {
            namespace: "demo",
            service_account: "client",
            pod: "client-1",
        };
        let account = verifier.verify(&issuer.token(&workload).unwrap());
        assert_eq!(
            account,
            Ok(ServiceAccount {
                namespace: "demo".into(),
                name: "client".into(),
                pod: Some("client-1".into()),
            })
        );
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
        let forged = theirs.token(&workload).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        assert!(
            jsonwebtoken::decode::<Value>(&forged, &checker(&parsed(&ours.jwks())), &validation)
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
}
