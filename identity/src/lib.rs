//! Workload identity, the one concept the proxy and the controller must agree on.
//!
//! A Trellis workload is named by a SPIFFE ID,
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, carried as the only
//! URI subject alternative name of an ECDSA P-256 certificate issued by the mesh's
//! certificate authority. This crate owns:
//!
//! - [`SpiffeId`]: parsing and formatting that name, and nothing looser;
//! - [`TrustAnchors`] and [`verify_chain`]: checking a presented chain against the
//!   mesh's roots with `rustls-webpki` and reading its SPIFFE ID;
//! - [`tls`]: the rustls verifiers and the post-handshake identity check that every
//!   mTLS connection of the mesh goes through.
//!
//! # Layout
//! - `spiffe.rs`: the [`SpiffeId`] type.
//! - `chain.rs`: trust anchors, chain verification, SAN extraction.
//! - `tls.rs`: rustls glue (server configs with a required or optional client
//!   certificate, the client config, [`MESH_ALPN`]).

mod chain;
mod error;
mod spiffe;
pub mod tls;

#[cfg(test)]
mod testing;

pub use chain::{Presenter, TrustAnchors, spiffe_id_of, verify_chain};
pub use error::{Error, VerifyError};
pub use spiffe::SpiffeId;
pub use tls::MESH_ALPN;
