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

/// `trellis.discovery.v1`: services, endpoints, routes and authorization policies,
/// pushed to every proxy over one stream (ADS-style, state of the world).
pub mod discovery {
    pub mod v1 {
        tonic::include_proto!("trellis.discovery.v1");

        /// The type URLs a proxy subscribes to.
        pub mod type_url {
            pub const SERVICE: &str = "trellis.discovery.v1.Service";
            pub const ENDPOINTS: &str = "trellis.discovery.v1.Endpoints";
            pub const ROUTE: &str = "trellis.discovery.v1.Route";
            pub const AUTHORIZATION_POLICY: &str = "trellis.discovery.v1.AuthorizationPolicy";
            pub const ALL: [&str; 4] = [SERVICE, ENDPOINTS, ROUTE, AUTHORIZATION_POLICY];
        }
    }
}

/// `trellis.bench.v1`: the benchmark harness's gRPC echo backend.
pub mod bench {
    pub mod v1 {
        tonic::include_proto!("trellis.bench.v1");
    }
}
