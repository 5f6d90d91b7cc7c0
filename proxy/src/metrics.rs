//! The proxy's Prometheus metrics, served as text on the admin port's `/metrics`.
//!
//! Label values are bounded: directions, booleans, outcomes, and peer SPIFFE IDs
//! (one per ServiceAccount, as Linkerd's `client_id`), never addresses or paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::listener::Direction;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenLabels {
    pub direction: &'static str,
    pub tls: &'static str,
    /// The caller's verified SPIFFE ID (inbound mTLS), else empty.
    pub client_id: String,
    /// The server's verified SPIFFE ID (outbound mTLS), else empty.
    pub server_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub direction: &'static str,
    pub tls: &'static str,
    /// `ok`, or the [`crate::error::ConnError::kind`] that ended the connection.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub direction: &'static str,
    /// `ok`, or the [`crate::error::ConnError::kind`] of the failure.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertifyLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryLabels {
    pub type_url: &'static str,
    /// `ack` (applied) or `nack` (refused, previous set kept).
    pub outcome: &'static str,
}

/// Every metric the proxy records; cheap to clone (the families are shared).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub tcp_open: Family<OpenLabels, Counter>,
    pub tcp_close: Family<CloseLabels, Counter>,
    /// Bytes read from the connection's client (the app for outbound, the peer for
    /// inbound).
    pub tcp_read_bytes: Family<DirectionLabels, Counter>,
    /// Bytes written back to the connection's client.
    pub tcp_write_bytes: Family<DirectionLabels, Counter>,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub cert_expiration: Gauge,
    pub certify: Family<CertifyLabels, Counter>,
    pub discovery_updates: Family<DiscoveryLabels, Counter>,
    /// 1 while the discovery stream is open.
    pub discovery_connected: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tcp_open = Family::<OpenLabels, Counter>::default();
        let tcp_close = Family::<CloseLabels, Counter>::default();
        let tcp_read_bytes = Family::<DirectionLabels, Counter>::default();
        let tcp_write_bytes = Family::<DirectionLabels, Counter>::default();
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        let cert_expiration = Gauge::default();
        let certify = Family::<CertifyLabels, Counter>::default();
        let discovery_updates = Family::<DiscoveryLabels, Counter>::default();
        let discovery_connected = Gauge::default();
        registry.register("tcp_open", "TCP connections accepted", tcp_open.clone());
        registry.register("tcp_close", "TCP connections closed", tcp_close.clone());
        registry.register(
            "tcp_read_bytes",
            "Bytes read from the client side of proxied connections",
            tcp_read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to the client side of proxied connections",
            tcp_write_bytes.clone(),
        );
        registry.register(
            "tls_handshakes",
            "Mesh TLS handshakes by outcome",
            tls_handshakes.clone(),
        );
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "When the workload certificate expires (Unix time)",
            cert_expiration.clone(),
        );
        registry.register(
            "identity_certify_requests",
            "Certificate requests to the identity service by outcome",
            certify.clone(),
        );
        registry.register(
            "discovery_updates",
            "Discovery responses applied (ack) or refused (nack), by type",
            discovery_updates.clone(),
        );
        registry.register(
            "discovery_connected",
            "Whether the discovery stream to the controller is open",
            discovery_connected.clone(),
        );
        Metrics {
            registry,
            tcp_open,
            tcp_close,
            tcp_read_bytes,
            tcp_write_bytes,
            tls_handshakes,
            cert_expiration,
            certify,
            discovery_updates,
            discovery_connected,
        }
    }

    pub fn handshake(&self, direction: Direction, outcome: &'static str) {
        self.tls_handshakes
            .get_or_create(&HandshakeLabels {
                direction: direction.as_str(),
                outcome,
            })
            .inc();
    }

    /// A connection was accepted (inbound: and its caller verified, if mTLS).
    pub fn opened(&self, direction: Direction, tls: bool, client_id: String, server_id: String) {
        self.tcp_open
            .get_or_create(&OpenLabels {
                direction: direction.as_str(),
                tls: bool_label(tls),
                client_id,
                server_id,
            })
            .inc();
    }

    /// A connection ended, with `outcome` (`ok` or an error kind).
    pub fn closed(&self, direction: Direction, tls: bool, outcome: &'static str) {
        self.tcp_close
            .get_or_create(&CloseLabels {
                direction: direction.as_str(),
                tls: bool_label(tls),
                outcome,
            })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn bool_label(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
