//! The webhook's Prometheus metrics, served on `GET /metrics` (OpenMetrics text).
//!
//! - `injector_admissions_total{outcome, reason}`: every review answered; `outcome` is
//!   `injected`, `skipped` (with `reason` the skip's fixed label), `rejected` (a bad
//!   annotation) or `error` (a malformed review);
//!   `reason` is empty but for skips, so the label values stay a small fixed set.
//! - `injector_certificate_reloads_total{result}`: `loaded` or `refused` new serving
//!   certificates.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// The registry and the counters in it.
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "injector_admissions",
            "Admission reviews answered, by outcome and skip reason",
            admissions.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "injector_certificate_reloads",
            "New serving certificates read from disk, loaded or refused",
            reloads.clone(),
        );
        // Present from the start, so that a rate over them is never "no data".
        for outcome in ["injected", "rejected", "error"] {
            admissions
                .get_or_create(&AdmissionLabels {
                    outcome,
                    reason: "",
                })
                .get();
        }
        for result in ["loaded", "refused"] {
            reloads.get_or_create(&ReloadLabels { result }).get();
        }
        Metrics {
            registry,
            admissions,
            reloads,
        }
    }

    /// Counts one answered review.
    pub fn admitted(&self, outcome: &'static str, reason: &'static str) {
        self.admissions
            .get_or_create(&AdmissionLabels { outcome, reason })
            .inc();
    }

    /// Counts one certificate reload, `loaded` or `refused`.
    pub fn certificate_reloaded(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode the metrics");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
