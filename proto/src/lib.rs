//! The wire protocols of Trellis and nothing else: the `.proto` files under `proto/`
//! and the prost messages and tonic clients and servers generated from them at build
//! time. The proxy and the controller meet only here.

/// `trellis.identity.v1`: workload certificates for CSRs, authenticated by
/// ServiceAccount tokens.
pub mod identity {
    pub mod v1 {
        tonic::include_proto!("trellis.identity.v1");
    }
}
