//! proxy-init in real network namespaces: each test builds a pod and a peer, installs
//! the rules with one backend, and checks one thing a user would observe, such as where
//! a connection lands and what original destination the proxy would read there.
//!
//! Every behaviour runs against each backend (`legacy`, `nft`, `nftables`); the test
//! names say which: `redirect::nftables::outbound_connections_land_on_the_outbound_port`.

mod lifecycle;
mod local_routes;
mod redirect;
mod support;
mod validate;

/// Declares `legacy`, `nft` and `nftables` modules, each with one `#[test]` per named
/// function, which takes the backend to test.
macro_rules! for_each_backend {
    ($($test:ident),* $(,)?) => {
        mod legacy {
            $(#[test] fn $test() -> anyhow::Result<()> { super::$test(crate::support::Backend::Legacy) })*
        }
        mod nft {
            $(#[test] fn $test() -> anyhow::Result<()> { super::$test(crate::support::Backend::Nft) })*
        }
        mod nftables {
            $(#[test] fn $test() -> anyhow::Result<()> { super::$test(crate::support::Backend::Nftables) })*
        }
    };
}
pub(crate) use for_each_backend;
