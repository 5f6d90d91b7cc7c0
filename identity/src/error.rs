//! What can be wrong with a name or a presented certificate chain.

/// A SPIFFE ID that is not of the shape Trellis issues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    NotSpiffe(String),
    #[error(
        "{0:?} is not a workload SPIFFE ID: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotWorkload(String),
    #[error("{id:?} has an invalid {part} {value:?}: use lowercase letters, digits, '-' and '.'")]
    InvalidPart {
        id: String,
        part: &'static str,
        value: String,
    },
}

/// Why a presented certificate chain is not accepted as a mesh identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the certificate does not chain to the mesh trust anchors: {0}")]
    Untrusted(String),
    #[error("the certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error("the certificate carries no SPIFFE ID (no spiffe:// URI SAN)")]
    NoSpiffeId,
    #[error("the certificate carries {0} URI SANs; a workload certificate has exactly one")]
    SeveralUris(usize),
    #[error("the certificate's SPIFFE ID is invalid: {0}")]
    InvalidSpiffeId(#[from] Error),
    #[error("the peer is {actual}, but {expected} was expected")]
    WrongIdentity {
        expected: crate::SpiffeId,
        actual: crate::SpiffeId,
    },
}
