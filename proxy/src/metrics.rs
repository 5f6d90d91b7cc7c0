//! The proxy's Prometheus metrics, served as text on the admin port's `/metrics`.
//!
//! Label values are bounded: directions, booleans, outcomes, peer SPIFFE IDs (one per
//! ServiceAccount, as Linkerd's `client_id`), and request authorities the directory
//! knows (services, pods, the app's ports); never paths or client-chosen names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::listener::Direction;
use crate::scheduling::Policy;

/// Which end of the proxy a connection is, as Linkerd's `peer` label: accepted from
/// its client (`src`), or opened by the proxy to a server (`dst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Src,
    Dst,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Src => "src",
            Peer::Dst => "dst",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenLabels {
    pub direction: &'static str,
    pub peer: &'static str,
    pub tls: &'static str,
    /// The caller's verified SPIFFE ID (inbound mTLS), else empty.
    pub client_id: String,
    /// The server's verified SPIFFE ID (outbound mTLS), else empty.
    pub server_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub direction: &'static str,
    pub peer: &'static str,
    pub tls: &'static str,
    /// `ok`, or the [`crate::error::ConnError::kind`] that ended the connection.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub direction: &'static str,
    pub peer: &'static str,
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

/// One HTTP request: which way, to what, and with whom.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    /// Outbound: the service (`name.namespace.svc.cluster.local:port`) or the pod
    /// address the request went to; inbound: the app's address. Never a Host header,
    /// which the caller controls.
    pub authority: String,
    /// The peer's verified SPIFFE ID (the server outbound, the caller inbound), or
    /// empty for plaintext.
    pub peer_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub direction: &'static str,
    pub authority: String,
    pub peer_id: String,
    /// `2xx`, `4xx`, `5xx`…
    pub status_class: &'static str,
    /// The gRPC status code from the headers or trailers, empty when not gRPC.
    pub grpc_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgetLabels {
    /// `expired` (its TTL passed) or `evicted` (the memory was full).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectLabels {
    pub direction: &'static str,
    /// `http1`, `http2`, `mesh_tls`, `tls`, `opaque`, or how detection was skipped or
    /// gave up: `opaque_port` (configured), `opaque_timeout` (the client said nothing
    /// in time), `opaque_remembered` (it said nothing last time).
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedulingLabels {
    /// `normal` or `batch` ([`crate::scheduling`]).
    pub policy: &'static str,
}

/// Response latency buckets, in milliseconds (Linkerd's `response_latency_ms`).
const LATENCY_BUCKETS_MS: [f64; 19] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1_000.0, 5_000.0, 10_000.0, 30_000.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

/// Every metric the proxy records; cheap to clone (the families are shared).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub tcp_open: Family<OpenLabels, Counter>,
    pub tcp_close: Family<CloseLabels, Counter>,
    /// Bytes read from the connection's other end: its client for an accepted one
    /// (the app outbound, the peer inbound), its server for one the proxy opened.
    pub tcp_read_bytes: Family<BytesLabels, Counter>,
    /// Bytes written to the connection's other end.
    pub tcp_write_bytes: Family<BytesLabels, Counter>,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub cert_expiration: Gauge,
    pub certify: Family<CertifyLabels, Counter>,
    pub discovery_updates: Family<DiscoveryLabels, Counter>,
    /// 1 while the discovery stream is open.
    pub discovery_connected: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    pub response_latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub detections: Family<DetectLabels, Counter>,
    /// Destinations (outbound) and own app ports (inbound) remembered as
    /// server-speaks-first.
    pub opaque_destinations: Gauge,
    pub opaque_forgotten: Family<ForgetLabels, Counter>,
    /// 1 for the scheduling policy the proxy's threads run under, 0 for the other.
    pub scheduling: Family<SchedulingLabels, Gauge>,
    /// Moves of every thread to a policy by `--scheduling auto`, by the policy moved to.
    pub scheduling_changes: Family<SchedulingLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tcp_open = Family::<OpenLabels, Counter>::default();
        let tcp_close = Family::<CloseLabels, Counter>::default();
        let tcp_read_bytes = Family::<BytesLabels, Counter>::default();
        let tcp_write_bytes = Family::<BytesLabels, Counter>::default();
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        let cert_expiration = Gauge::default();
        let certify = Family::<CertifyLabels, Counter>::default();
        let discovery_updates = Family::<DiscoveryLabels, Counter>::default();
        let discovery_connected = Gauge::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let response_latency =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let detections = Family::<DetectLabels, Counter>::default();
        let opaque_destinations = Gauge::default();
        let opaque_forgotten = Family::<ForgetLabels, Counter>::default();
        let scheduling = Family::<SchedulingLabels, Gauge>::default();
        let scheduling_changes = Family::<SchedulingLabels, Counter>::default();
        registry.register(
            "tcp_open",
            "TCP connections accepted (peer=src) or opened (peer=dst)",
            tcp_open.clone(),
        );
        registry.register("tcp_close", "TCP connections closed", tcp_close.clone());
        registry.register(
            "tcp_read_bytes",
            "Bytes read from the other end of each connection",
            tcp_read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to the other end of each connection",
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
        registry.register("request", "HTTP requests", requests.clone());
        registry.register(
            "response",
            "HTTP responses, counted when their body ends",
            responses.clone(),
        );
        registry.register(
            "response_latency_ms",
            "Time from a request to its response headers, in milliseconds",
            response_latency.clone(),
        );
        registry.register(
            "detect",
            "Connections by the protocol detection found (or why it was skipped)",
            detections.clone(),
        );
        registry.register(
            "opaque_destinations",
            "Destinations remembered as server-speaks-first (detection skipped)",
            opaque_destinations.clone(),
        );
        registry.register(
            "opaque_forgotten",
            "Server-speaks-first destinations forgotten, by reason",
            opaque_forgotten.clone(),
        );
        registry.register(
            "scheduling_policy",
            "1 for the CPU scheduling policy the proxy's threads run under, by policy",
            scheduling.clone(),
        );
        registry.register(
            "scheduling_policy_changes",
            "Moves of the proxy's threads to a CPU scheduling policy by --scheduling auto, by the policy moved to",
            scheduling_changes.clone(),
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
            requests,
            responses,
            response_latency,
            detections,
            opaque_destinations,
            opaque_forgotten,
            scheduling,
            scheduling_changes,
        }
    }

    /// Records the policy the threads run under at start; the change counters appear
    /// at zero, so that their rate is defined before the first change.
    pub fn set_scheduling(&self, now: Policy) {
        for policy in [Policy::Normal, Policy::Batch] {
            let labels = SchedulingLabels {
                policy: policy.as_str(),
            };
            self.scheduling
                .get_or_create(&labels)
                .set(i64::from(policy == now));
            let _ = self.scheduling_changes.get_or_create(&labels);
        }
    }

    /// Records that `--scheduling auto` moved every thread to `now`.
    pub fn scheduling_changed(&self, now: Policy) {
        self.set_scheduling(now);
        self.scheduling_changes
            .get_or_create(&SchedulingLabels {
                policy: now.as_str(),
            })
            .inc();
    }

    /// The `expired` and `evicted` counters of `opaque_forgotten`.
    pub fn opaque_forgotten_counters(&self) -> (Counter, Counter) {
        let counter = |reason| {
            self.opaque_forgotten
                .get_or_create(&ForgetLabels { reason })
                .clone()
        };
        (counter("expired"), counter("evicted"))
    }

    pub fn detected(&self, direction: Direction, protocol: &'static str) {
        self.detections
            .get_or_create(&DetectLabels {
                direction: direction.as_str(),
                protocol,
            })
            .inc();
    }

    pub fn handshake(&self, direction: Direction, outcome: &'static str) {
        self.tls_handshakes
            .get_or_create(&HandshakeLabels {
                direction: direction.as_str(),
                outcome,
            })
            .inc();
    }

    /// A connection was accepted (inbound: and its caller verified, if mTLS), or
    /// opened.
    pub fn opened(
        &self,
        direction: Direction,
        peer: Peer,
        tls: bool,
        client_id: String,
        server_id: String,
    ) {
        self.tcp_open
            .get_or_create(&OpenLabels {
                direction: direction.as_str(),
                peer: peer.as_str(),
                tls: bool_label(tls),
                client_id,
                server_id,
            })
            .inc();
    }

    /// A connection ended, with `outcome` (`ok` or an error kind).
    pub fn closed(&self, direction: Direction, peer: Peer, tls: bool, outcome: &'static str) {
        self.tcp_close
            .get_or_create(&CloseLabels {
                direction: direction.as_str(),
                peer: peer.as_str(),
                tls: bool_label(tls),
                outcome,
            })
            .inc();
    }

    /// The read and written byte counters of one connection, resolved once so that
    /// each read or write is one atomic add.
    pub fn byte_counters(&self, direction: Direction, peer: Peer) -> (Counter, Counter) {
        let labels = BytesLabels {
            direction: direction.as_str(),
            peer: peer.as_str(),
        };
        (
            self.tcp_read_bytes.get_or_create(&labels).clone(),
            self.tcp_write_bytes.get_or_create(&labels).clone(),
        )
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
