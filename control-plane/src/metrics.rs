//! The controller's Prometheus metrics, served on the admin port's `/metrics`.
//!
//! Label values are bounded: the four resource types, the three sync states and the
//! source names, never proxy names, versions or file paths (those are on `/proxies`
//! and `/sources`): a mesh of 10,000 proxies has as many series as one of two.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// `service`, `endpoints`, `route` or `authorization_policy`.
    pub r#type: &'static str,
}

impl TypeLabels {
    pub fn of(kind: Kind) -> Self {
        TypeLabels {
            r#type: kind.label(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub r#type: &'static str,
    /// `in_sync`, `nacked` or `pending` ([`crate::proxies::SyncState`]).
    pub state: &'static str,
}

/// 1 ms doubling to about 33 s: from a proxy on the same node to one far behind.
fn ack_latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `files` (and, later, `kubernetes`).
    pub source: String,
}

/// Every metric the controller records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connected_proxies: Gauge,
    pub authenticated_proxies: Gauge,
    pub proxies: Family<StateLabels, Gauge>,
    pub ack_latency: Family<TypeLabels, Histogram, fn() -> Histogram>,
    pub pushes: Family<TypeLabels, Counter>,
    pub acks: Family<TypeLabels, Counter>,
    pub nacks: Family<TypeLabels, Counter>,
    pub snapshots: Counter,
    pub resources: Family<TypeLabels, Gauge>,
    pub source_rejections: Family<SourceLabels, Counter>,
    pub source_rejected: Family<SourceLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected_proxies = Gauge::default();
        let authenticated_proxies = Gauge::default();
        let proxies = Family::<StateLabels, Gauge>::default();
        let ack_latency = Family::<TypeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            ack_latency_histogram,
        );
        let pushes = Family::<TypeLabels, Counter>::default();
        let acks = Family::<TypeLabels, Counter>::default();
        let nacks = Family::<TypeLabels, Counter>::default();
        let snapshots = Counter::default();
        let resources = Family::<TypeLabels, Gauge>::default();
        let source_rejections = Family::<SourceLabels, Counter>::default();
        let source_rejected = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "discovery_connected_proxies",
            "Discovery streams open now",
            connected_proxies.clone(),
        );
        registry.register(
            "discovery_authenticated_proxies",
            "Discovery streams whose connection presented a client certificate the controller verified",
            authenticated_proxies.clone(),
        );
        registry.register(
            "discovery_proxies",
            "Connected proxies by resource type and state: in_sync (runs the last version sent), nacked (last answer a NACK), pending",
            proxies.clone(),
        );
        registry.register(
            "discovery_ack_latency_seconds",
            "Time from sending a response to the proxy's ACK of it (the proxy ACKs once the set is in force)",
            ack_latency.clone(),
        );
        registry.register(
            "discovery_pushes",
            "Discovery responses sent, by resource type",
            pushes.clone(),
        );
        registry.register(
            "discovery_acks",
            "Responses a proxy accepted, by resource type",
            acks.clone(),
        );
        registry.register(
            "discovery_nacks",
            "Responses a proxy rejected, by resource type",
            nacks.clone(),
        );
        registry.register(
            "discovery_snapshots",
            "Snapshots published (each one a push to every subscribed stream)",
            snapshots.clone(),
        );
        registry.register(
            "model_resources",
            "Resources in the current snapshot, by resource type",
            resources.clone(),
        );
        registry.register(
            "source_rejections",
            "Documents or objects a source rejected, counted when first seen",
            source_rejections.clone(),
        );
        registry.register(
            "source_rejected_documents",
            "Documents or objects a source rejects now",
            source_rejected.clone(),
        );
        Metrics {
            registry,
            connected_proxies,
            authenticated_proxies,
            proxies,
            ack_latency,
            pushes,
            acks,
            nacks,
            snapshots,
            resources,
            source_rejections,
            source_rejected,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and the registry holds only well-formed
        // metrics, so an error here would be a bug in prometheus-client.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
