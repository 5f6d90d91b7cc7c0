//! The Trellis controller: the mesh's certificate authority and its identity service.
//!
//! A sidecar proxy makes its own key pair, sends a CSR with its ServiceAccount token,
//! and gets back a short-lived ECDSA P-256 certificate whose only URI SAN is its
//! SPIFFE ID, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. The ID
//! comes from the verified token, never from the CSR. The controller serves this over
//! TLS with a certificate its own issuer signs, so proxies trust it through the same
//! anchors they use for each other.
//!
//! # Layout
//! - `config.rs`: the typed [`Config`] (flags live only in `main.rs`).
//! - `ca.rs`: loading the trust anchors and the issuer, signing leaves; `ca/dev.rs`
//!   generates a development CA for `--dev-ca`.
//! - `token.rs`: the JWKS and ServiceAccount token verification; `token/mint.rs` makes
//!   such tokens for places that play the API server (`meshctl local`, tests).
//! - `csr.rs`: what a CSR must be before its key is certified.
//! - `identity_service.rs`: the `trellis.identity.v1.Identity` gRPC service.
//! - `server.rs`: TLS and tonic on a bound listener; the controller's serving
//!   certificate.
//! - `error.rs`: start-up errors and per-request refusals with their gRPC codes.

pub mod ca;
pub mod config;
pub mod csr;
mod error;
pub mod identity_service;
pub mod server;
pub mod token;

#[cfg(test)]
mod fixtures;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use ca::Ca;
pub use config::{CaSource, Config, LogFormat};
pub use error::{CsrError, Error, Refusal, TokenError};
pub use identity_service::IdentityService;
pub use token::TokenVerifier;

/// Runs the controller on `listener` (bound by the caller to `config.listen`, or to
/// any address in tests) until `shutdown` completes.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    let ca = Arc::new(match &config.ca {
        CaSource::Dev(dir) => ca::dev::load_or_generate(dir)?,
        CaSource::Files {
            trust_anchors,
            issuer_cert,
            issuer_key,
        } => Ca::from_files(trust_anchors, issuer_cert, issuer_key)?,
    });
    let tokens = Arc::new(TokenVerifier::from_jwks_file(
        &config.token_jwks,
        &config.token_audience,
    )?);
    let controller_id = server::controller_identity(&config.trust_domain)?;
    let serving = server::ServingCert::new(ca.clone(), controller_id, config.cert_lifetime)?;
    let tls = Arc::new(server::tls_config(Arc::new(serving))?);
    let identity = IdentityService::new(ca, tokens, &config.trust_domain, config.cert_lifetime);

    tracing::info!(
        listen = listener.local_addr().ok().map(tracing::field::display),
        trust_domain = %config.trust_domain,
        token_audience = %config.token_audience,
        cert_lifetime = %humantime::format_duration(config.cert_lifetime),
        "serving the identity service"
    );
    server::serve(listener, tls, identity, shutdown).await
}
