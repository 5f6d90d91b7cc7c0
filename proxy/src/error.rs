//! Why the proxy could not start, or why one connection failed.
//!
//! [`Error`] is for start-up and the identity client; [`ConnError`] is per connection
//! and maps onto a small, bounded set of metric labels ([`ConnError::kind`]).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use trellis_identity::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {addr}: {source} (is another proxy already running in this pod?)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {message}")]
    PeersFile { path: PathBuf, message: String },
    #[error(
        "trust anchors from {origin}: {source} (it must be a PEM bundle of the mesh's root certificates, BEGIN and END lines included)"
    )]
    TrustAnchors { origin: String, source: VerifyError },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot make a key pair or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error(
        "cannot reach the controller at {addr}: {message} (is trellis-controller running and reachable from the pod?)"
    )]
    ControllerUnreachable { addr: String, message: String },
    #[error("the controller refused to certify this workload: {0}")]
    Refused(tonic::Status),
    #[error("discovery stream: {0}")]
    Discovery(String),
    #[error("the controller returned an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("cannot start a thread serving connections: {0}")]
    Shard(io::Error),
}

/// What went wrong with one proxied connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(
        "cannot read the original destination: {0} (was this connection redirected by trellis-proxy-init?)"
    )]
    OrigDst(io::Error),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("peer identity: {0}")]
    Identity(#[from] VerifyError),
    #[error("no workload certificate yet: this proxy is not ready for mesh traffic")]
    NoCertificate,
    #[error("plaintext connection refused: this pod requires mTLS")]
    PlaintextRefused,
    #[error("service {0} has no ready endpoints")]
    NoEndpoints(String),
    #[error("a connection to the proxy's own port {0} would loop")]
    Loop(u16),
    #[error("port {0} is the mesh transport: peer sidecars only, over mTLS, speaking HTTP")]
    NotMeshTransport(u16),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ConnError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnError::OrigDst(_) => "orig_dst",
            ConnError::Connect { .. } => "connect",
            ConnError::Handshake(_) => "handshake",
            ConnError::HandshakeTimeout(_) => "handshake_timeout",
            ConnError::Identity(_) => "identity",
            ConnError::NoCertificate => "no_certificate",
            ConnError::PlaintextRefused => "plaintext_refused",
            ConnError::NoEndpoints(_) => "no_endpoints",
            ConnError::Loop(_) => "loop",
            ConnError::NotMeshTransport(_) => "not_mesh_transport",
            ConnError::Http(_) => "http",
            ConnError::Io(_) => "io",
        }
    }
}
