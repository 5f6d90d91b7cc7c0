//! The controller's Prometheus metrics, served on the admin port's `/metrics`.
//!
//! Label values are bounded: the four resource types and the source names, never
//! proxy names or file paths (those are on `/proxies` and `/sources`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
pub struct SourceLabels {
    /// `files` (and, later, `kubernetes`).
    pub source: String,
}

/// Every metric the controller records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connected_proxies: Gauge,
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
