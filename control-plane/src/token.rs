//! Authenticating a workload by its Kubernetes ServiceAccount token.
//!
//! A proxy proves who it is with the projected ServiceAccount token mounted into its
//! pod: a JWT signed by the cluster's service-account issuer. [`TokenAuthenticator`]
//! is the seam with two ways to check it: here, against the issuer's keys
//! (`--token-jwks`), or by asking the API server with a TokenReview
//! (`--token-review`, `review.rs`). Both yield a [`ServiceAccount`] or a refusal of
//! the same kinds.
//!
//! The JWKS path checks the token against that issuer's public keys (a JWKS file read at start-up, as served by the
//! API server at `/openid/v1/jwks`): signature (RS256 or ES256), `exp`, `nbf` and
//! `aud`. The identity then comes from the claims alone, and Kubernetes writes it
//! twice, in `sub` (`system:serviceaccount:<ns>:<sa>`) and in the `kubernetes.io`
//! claim; both must agree, so a token that is inconsistent in any way names nobody.
//!
//! Key selection never trusts the token beyond its `kid` and `alg`: a `jwk` or `jku`
//! header is ignored, and a key is only ever used with the one algorithm its type
//! allows (no RS256/HS256 confusion).

pub mod mint;
pub mod review;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use self::review::TokenReviewer;
use crate::{Error, Refusal, TokenError};

/// How the identity service checks tokens.
pub enum TokenAuthenticator {
    /// Against the service-account issuer's keys (`--token-jwks`).
    Jwks(TokenVerifier),
    /// By a TokenReview to the API server (`--token-review`).
    TokenReview(TokenReviewer),
}

impl TokenAuthenticator {
    /// The ServiceAccount `token` speaks for.
    pub async fn authenticate(&self, token: &str) -> Result<ServiceAccount, Refusal> {
        match self {
            TokenAuthenticator::Jwks(verifier) => Ok(verifier.verify(token)?),
            TokenAuthenticator::TokenReview(reviewer) => reviewer.review(token).await,
        }
    }
}

impl From<TokenVerifier> for TokenAuthenticator {
    fn from(verifier: TokenVerifier) -> Self {
        TokenAuthenticator::Jwks(verifier)
    }
}

/// How far `exp` and `nbf` may be off, for clocks that disagree a little.
pub const LEEWAY_SECS: u64 = 30;

/// Far above a real ServiceAccount token (about 1 KiB), so the parser never sees
/// megabytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The token issuer's public keys and the audience tokens must be minted for.
pub struct TokenVerifier {
    keys: Vec<TokenKey>,
    audience: String,
}

/// One usable key of the JWKS.
struct TokenKey {
    kid: Option<String>,
    /// The only algorithm this key verifies: RS256 for RSA, ES256 for P-256.
    alg: Algorithm,
    key: DecodingKey,
}

/// The ServiceAccount a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    /// The pod the token was bound to, if any: for logs, so that an operator can tell
    /// which replica asked.
    pub pod: Option<String>,
}

/// The claims this module reads; everything else in the token is ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: String,
    serviceaccount: ObjectRef,
    pod: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    name: String,
}

impl TokenVerifier {
    /// Reads the JWKS file given with `--token-jwks`.
    pub fn from_jwks_file(path: &Path, audience: &str) -> Result<Self, Error> {
        let json = std::fs::read_to_string(path).map_err(|error| Error::Read {
            what: "token key set (--token-jwks)",
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_jwks(&json, audience).map_err(|e| Error::InvalidFile {
            what: "token key set (--token-jwks)",
            path: path.to_path_buf(),
            reason: match e {
                Error::InvalidJwks(reason) => reason,
                other => other.to_string(),
            },
        })
    }

    /// Reads an RFC 7517 key set (`{"keys": [...]}`). Keys the mesh cannot use (other
    /// types or curves, encryption keys) are skipped with a warning, as a cluster may
    /// publish them; a set with no usable key is an error.
    pub fn from_jwks(json: &str, audience: &str) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<serde_json::Value>,
        }
        let set: KeySet = serde_json::from_str(json)
            .map_err(|e| Error::InvalidJwks(format!("not a JSON {{\"keys\": [...]}}: {e}")))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, value) in set.keys.into_iter().enumerate() {
            match token_key(value) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    tracing::warn!(index, %reason, "skipping a key of the token key set");
                    skipped.push(format!("key {index}: {reason}"));
                }
            }
        }
        if keys.is_empty() {
            return Err(Error::InvalidJwks(format!(
                "it holds no RSA or EC P-256 signing key{}{}",
                if skipped.is_empty() { "" } else { "; " },
                skipped.join("; ")
            )));
        }
        Ok(TokenVerifier {
            keys,
            audience: audience.to_string(),
        })
    }

    /// Verifies `token` and returns the ServiceAccount it speaks for.
    pub fn verify(&self, token: &str) -> Result<ServiceAccount, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!(
                "it is {} bytes long, more than {MAX_TOKEN_LEN}",
                token.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Malformed(format!("bad header: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::UnsupportedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let candidates = self.candidates(header.alg, header.kid.as_deref())?;

        // Without a `kid`, each key of the right type is tried; only a signature that
        // fails moves on, any other verdict is the token's.
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.alg)) {
                Ok(data) => return service_account(data.claims),
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => return Err(self.refusal(e.into_kind())),
            }
        }
        Err(TokenError::BadSignature)
    }

    fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<&TokenKey>, TokenError> {
        let alg_name = || format!("{alg:?}");
        match kid {
            Some(kid) => {
                let named: Vec<&TokenKey> = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .collect();
                let Some(first) = named.first() else {
                    return Err(TokenError::UnknownKey(kid.to_string()));
                };
                let usable: Vec<&TokenKey> =
                    named.iter().copied().filter(|key| key.alg == alg).collect();
                if usable.is_empty() {
                    return Err(TokenError::AlgorithmMismatch {
                        token: alg_name(),
                        key: format!("{:?}", first.alg),
                        kid: kid.to_string(),
                    });
                }
                Ok(usable)
            }
            None => {
                let usable: Vec<&TokenKey> =
                    self.keys.iter().filter(|key| key.alg == alg).collect();
                if usable.is_empty() {
                    return Err(TokenError::NoKeyForAlgorithm(alg_name()));
                }
                Ok(usable)
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation
    }

    fn refusal(&self, kind: ErrorKind) -> TokenError {
        match kind {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::WrongAudience(self.audience.clone()),
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                TokenError::WrongAudience(self.audience.clone())
            }
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => TokenError::Malformed(
                "it has no \"exp\" claim; legacy Secret-based ServiceAccount tokens never \
                 expire and are not accepted: mount a projected token"
                    .into(),
            ),
            ErrorKind::MissingRequiredClaim(claim) => {
                TokenError::Malformed(format!("it has no {claim:?} claim"))
            }
            other => TokenError::Malformed(format!("{other:?}")),
        }
    }
}

/// The ServiceAccount named by both `sub` and the `kubernetes.io` claim.
fn service_account(claims: Claims) -> Result<ServiceAccount, TokenError> {
    let (namespace, name) = claims
        .sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| TokenError::NotServiceAccount(claims.sub.clone()))?;
    let Some(kubernetes) = claims.kubernetes else {
        return Err(TokenError::ClaimsMismatch(
            "it has no kubernetes.io claim to confirm its subject".into(),
        ));
    };
    if kubernetes.namespace != namespace || kubernetes.serviceaccount.name != name {
        return Err(TokenError::ClaimsMismatch(format!(
            "sub names {namespace}/{name} but kubernetes.io names {}/{}",
            kubernetes.namespace, kubernetes.serviceaccount.name
        )));
    }
    Ok(ServiceAccount {
        namespace: namespace.to_string(),
        name: name.to_string(),
        pod: kubernetes.pod.map(|pod| pod.name),
    })
}

/// Turns one JWK into a key, or says why the mesh cannot use it.
fn token_key(value: serde_json::Value) -> Result<TokenKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a usable JWK: {e}"))?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("it is an encryption key (\"use\": \"enc\")".into());
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = decode_part("n", &rsa.n)?;
            // ring verifies RS256 only with moduli of 2048 bits and more.
            if n.len() < 256 {
                return Err(format!(
                    "its RSA modulus has {} bits, under 2048",
                    n.len() * 8
                ));
            }
            (Algorithm::RS256, KeyAlgorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            for (part, value) in [("x", &ec.x), ("y", &ec.y)] {
                if decode_part(part, value)?.len() != 32 {
                    return Err(format!("its {part} is not a 32-byte P-256 coordinate"));
                }
            }
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            return Err(format!("curve {:?} is not supported, only P-256", ec.curve));
        }
        _ => return Err("only RSA and EC P-256 keys are supported".into()),
    };
    if let Some(other) = jwk.common.key_algorithm.filter(|a| *a != declared) {
        return Err(format!(
            "its \"alg\" is {other}; the mesh uses such a key only with {declared}"
        ));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(TokenKey {
        kid: jwk.common.key_id,
        alg,
        key,
    })
}

fn decode_part(name: &str, value: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|e| format!("its {name} is not base64url: {e}"))
}

#[cfg(test)]
mod tests;
