//! What a sidecar's `/config` says discovery told it: the versions in force, the
//! service addresses with their endpoints, and the pod identities.
//!
//! Tests wait on it to know that an edit has reached a proxy before they look at
//! traffic, so that a slow push shows up as a timeout with the last view in the
//! message rather than as a wrong answer.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::Context as _;

use crate::http_get;

/// One `GET /config`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    json: serde_json::Value,
}

impl ProxyConfig {
    /// Fetches `http://admin/config`.
    pub fn fetch(admin: SocketAddr) -> anyhow::Result<ProxyConfig> {
        let (status, body) = http_get(admin, "/config")?;
        anyhow::ensure!(
            status == 200,
            "GET http://{admin}/config answered {status}: {body}"
        );
        let json = serde_json::from_str(&body)
            .with_context(|| format!("GET http://{admin}/config is not JSON: {body}"))?;
        Ok(ProxyConfig { json })
    }

    fn service(&self, addr: SocketAddrV4) -> &serde_json::Value {
        &self.json["discovery"]["services"][addr.to_string()]
    }

    /// The endpoints the service address `addr` is balanced over, in order; none if
    /// the proxy does not know `addr` as a service.
    pub fn endpoints_of(&self, addr: SocketAddrV4) -> Vec<SocketAddrV4> {
        self.service(addr)["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|endpoint| endpoint["addr"].as_str()?.parse().ok())
            .collect()
    }

    /// The consecutive failures the balancer holds against `endpoint` of the service
    /// at `addr` (each one ejects it for a longer backoff); `None` if it is not listed.
    pub fn failures_of(&self, addr: SocketAddrV4, endpoint: SocketAddrV4) -> Option<u64> {
        self.service(addr)["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["addr"].as_str() == Some(endpoint.to_string().as_str()))?["balancer"]
            ["failures"]
            .as_u64()
    }

    /// How the proxy treats the service port at `addr`: `detect`, `tcp`, `http1`, ….
    pub fn protocol_of(&self, addr: SocketAddrV4) -> Option<&str> {
        self.service(addr)["protocol"].as_str()
    }

    /// The identity the proxy expects of whoever answers at `ip`.
    pub fn identity_at(&self, ip: Ipv4Addr) -> Option<&str> {
        self.json["discovery"]["pods"][ip.to_string()].as_str()
    }

    /// A field of the flags and environment the proxy started with (`workers`,
    /// `scheduling`, …), as JSON.
    pub fn flag(&self, name: &str) -> &serde_json::Value {
        &self.json["config"][name]
    }

    /// The version of the set of `type_url` in force, if one has arrived.
    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.json["discovery"]["versions"][type_url]["version"].as_str()
    }
}

impl std::fmt::Display for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string_pretty(&self.json["discovery"]).unwrap_or_default();
        f.write_str(&text)
    }
}
