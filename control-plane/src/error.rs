//! What can go wrong in the controller, in two kinds.
//!
//! - [`Error`]: the controller cannot start or keep serving. The operator must fix a
//!   flag or a file, so each variant names the flag or file and, where it helps, what
//!   to check.
//! - [`Refusal`] (made of [`TokenError`] and [`CsrError`]): one certificate request is
//!   refused. The caller gets a gRPC status whose code says whose fault it is, and the
//!   log gets a bounded `reason` label.
//! - [`Invalid`]: one object from a source of truth is not accepted into the model;
//!   it names the field at fault so that the source can point the operator at it.

use std::path::PathBuf;

use tonic::{Code, Status};
use trellis_identity::SpiffeId;

/// Why the controller cannot start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --{flag} {value:?}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read the {what} {}: {error}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the {what} {} is not usable: {reason}", path.display())]
    InvalidFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "the development CA in {} is incomplete: {present} exists but {missing} does not; \
         restore the missing file or empty the directory to generate a new CA",
        dir.display()
    )]
    PartialDevCa {
        dir: PathBuf,
        present: String,
        missing: String,
    },
    #[error("the token key set is not usable: {0}")]
    InvalidJwks(String),
    #[error(
        "certificates signed by the issuer do not verify against the trust anchors ({0}); \
         was the issuer certificate signed by a root in the trust anchors file, is it \
         still valid, and does the issuer key belong to it?"
    )]
    IssuerUntrusted(String),
    #[error("cannot mint a token: {0}")]
    Mint(String),
    #[error("cannot sign a certificate: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("cannot build the TLS server configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(
        "cannot watch the config directory {} for changes: {error} (are the inotify \
         limits, fs.inotify.max_user_instances and max_user_watches, exhausted?)",
        dir.display()
    )]
    Watch { dir: PathBuf, error: notify::Error },
    #[error(
        "--{flag} needs the Kubernetes API, but no client can be configured: {error} (in a \
         pod: is the ServiceAccount token mounted? elsewhere: is KUBECONFIG set?)"
    )]
    KubernetesClient {
        flag: &'static str,
        error: Box<kube::Error>,
    },
}

/// Why an object is not accepted into the model: the field at fault, as a path in the
/// API's camelCase spelling (`spec.ports[1].targetPort`), and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

/// Why a ServiceAccount token does not authenticate its bearer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the request carries no token")]
    Missing,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("the token's audience does not include {0:?}")]
    WrongAudience(String),
    #[error("the token's signature does not verify with the token key set")]
    BadSignature,
    #[error("the token is signed by key {0:?}, which the token key set does not hold")]
    UnknownKey(String),
    #[error("the token key set holds no key for the token's algorithm {0}")]
    NoKeyForAlgorithm(String),
    #[error("the token is signed with {token}, but its key {kid:?} is a {key} key")]
    AlgorithmMismatch {
        token: String,
        key: String,
        kid: String,
    },
    #[error("the token is signed with {0}; only RS256 and ES256 are accepted")]
    UnsupportedAlgorithm(String),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's subject {0:?} is not a ServiceAccount (system:serviceaccount:<ns>:<sa>)")]
    NotServiceAccount(String),
    #[error("the token's claims disagree: {0}")]
    ClaimsMismatch(String),
    #[error("the token's ServiceAccount is not a valid workload identity: {0}")]
    InvalidIdentity(#[from] trellis_identity::Error),
    #[error("the Kubernetes API does not authenticate the token: {0}")]
    NotAuthenticated(String),
}

impl TokenError {
    /// A bounded label for logs (and, later, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongAudience(_) => "token_wrong_audience",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::UnknownKey(_) | TokenError::NoKeyForAlgorithm(_) => "token_unknown_key",
            TokenError::AlgorithmMismatch { .. } | TokenError::UnsupportedAlgorithm(_) => {
                "token_bad_algorithm"
            }
            TokenError::Malformed(_) => "token_malformed",
            TokenError::NotServiceAccount(_) => "token_not_service_account",
            TokenError::ClaimsMismatch(_) => "token_claims_mismatch",
            TokenError::InvalidIdentity(_) => "token_invalid_identity",
            TokenError::NotAuthenticated(_) => "token_not_authenticated",
        }
    }
}

/// Why a certificate signing request is not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is malformed: {0}")]
    Malformed(String),
    #[error("the CSR's signature does not verify with the key it carries")]
    BadSignature,
    #[error("the CSR's key is {0}; the mesh issues certificates only for ECDSA P-256 keys")]
    KeyNotP256(String),
    #[error("the CSR asks for {requested}, but the token proves {identity}")]
    ForeignName {
        requested: String,
        identity: SpiffeId,
    },
}

impl CsrError {
    /// A bounded label for logs (and, later, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            CsrError::Malformed(_) => "csr_malformed",
            CsrError::BadSignature => "csr_bad_signature",
            CsrError::KeyNotP256(_) => "csr_key_not_p256",
            CsrError::ForeignName { .. } => "csr_foreign_name",
        }
    }
}

/// Why one `Certify` call is refused: the kind decides the gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The controller failed, not the caller (the issuer cannot sign).
    #[error("the controller cannot issue the certificate: {0}")]
    Internal(#[from] Error),
    /// The API server could not be asked about the token (`--token-review`): the
    /// caller may retry.
    #[error("cannot review the token with the Kubernetes API: {0}")]
    ReviewUnavailable(String),
}

impl Refusal {
    pub fn code(&self) -> Code {
        match self {
            Refusal::Token(_) => Code::Unauthenticated,
            Refusal::Csr(CsrError::ForeignName { .. }) => Code::PermissionDenied,
            Refusal::Csr(_) => Code::InvalidArgument,
            Refusal::Internal(_) => Code::Internal,
            Refusal::ReviewUnavailable(_) => Code::Unavailable,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.reason(),
            Refusal::Csr(e) => e.reason(),
            Refusal::Internal(_) => "internal",
            Refusal::ReviewUnavailable(_) => "token_review_unavailable",
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        let message = match &refusal {
            // The caller cannot fix it and need not learn the CA's inner workings.
            Refusal::Internal(_) => {
                "the controller cannot issue certificates now; see its log".into()
            }
            Refusal::ReviewUnavailable(_) => {
                "the controller cannot check tokens with the Kubernetes API now; retry, and \
                 see its log"
                    .into()
            }
            other => other.to_string(),
        };
        Status::new(refusal.code(), message)
    }
}
