//! The test's own ServiceAccount token issuer.
//!
//! The controller trusts whatever JWKS it is given; the test writes one for a key it
//! generated and signs each pod's token with it, as the Kubernetes API server would.
//! The JWK, the claims and the signature come from the controller's `token::mint`, the
//! one place that knows what a projected token looks like; the test owns only its key.

use std::path::Path;
use std::time::Duration;

use rcgen::KeyPair;
use trellis_control_plane::config::DEFAULT_TOKEN_AUDIENCE;
use trellis_control_plane::token::mint;

const KID: &str = "trellis-e2e";
/// Far longer than any test, as a projected token outlives its pod's first renewal.
const LIFETIME: Duration = Duration::from_secs(3600);

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
        let jwk = mint::es256_jwk(self.key.public_key_raw(), KID)?;
        std::fs::write(path, mint::jwks(&[jwk]))?;
        Ok(())
    }

    /// A projected ServiceAccount token for pod `pod` of `namespace`/`service_account`.
    pub fn token(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
    ) -> anyhow::Result<String> {
        let claims = mint::service_account_claims(
            namespace,
            service_account,
            Some(pod),
            DEFAULT_TOKEN_AUDIENCE,
            LIFETIME,
        );
        Ok(mint::sign_es256(&self.key.serialize_der(), KID, &claims)?)
    }
}
