//! The test's own ServiceAccount token issuer.
//!
//! The controller trusts whatever JWKS it is given; the test writes one for a key it
//! generated and signs each pod's token with it, exactly as the Kubernetes API server
//! would. Kept apart from meshctl's issuer on purpose: the test checks the controller
//! against an independent implementation of the same contract.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::json;

const KID: &str = "trellis-e2e";

pub struct TestIssuer {
    key: KeyPair,
}

impl TestIssuer {
    pub fn generate() -> anyhow::Result<Self> {
        Ok(TestIssuer {
            key: KeyPair::generate()?,
        })
    }

    /// Writes the JWKS that `--token-jwks` reads.
    pub fn write_jwks(&self, path: &Path) -> anyhow::Result<()> {
        let raw = self.key.public_key_raw();
        anyhow::ensure!(
            raw.len() == 65 && raw[0] == 4,
            "not an uncompressed P-256 point"
        );
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        }]});
        std::fs::write(path, serde_json::to_vec_pretty(&jwks)?)?;
        Ok(())
    }

    /// A projected ServiceAccount token for pod `pod` of `namespace`/`service_account`.
    pub fn token(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
    ) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = json!({
            "iss": "trellis-e2e",
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
            "aud": ["identity.trellis.io"],
            "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": service_account, "uid": "00000000-0000-4000-8000-000000000001"},
                "pod": {"name": pod, "uid": "00000000-0000-4000-8000-000000000002"},
            },
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_string());
        let key = EncodingKey::from_ec_der(&self.key.serialize_der());
        Ok(jsonwebtoken::encode(&header, &claims, &key)?)
    }
}
