//! What the path of a review tells the injector about the pod's namespace.
//!
//! A review does not carry the namespace's labels, which decide whether a pod is
//! meshed. The API server's selectors have looked at them already: the chart registers
//! one webhook entry per case, each posting to its own path, as Istio does. So the
//! injector reads nothing from the API (no watch, no RBAC, no token, no way to be
//! unsure): the path says which case the API server matched.

use std::collections::BTreeMap;

use crate::NAMESPACE_LABEL;

/// A namespace's labels, as [`crate::Request::Admission`] takes them.
pub type Labels = BTreeMap<String, String>;

/// One entry of the `MutatingWebhookConfiguration`, by the path it posts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /inject`: the namespace is labelled `trellis.io/inject=enabled` (its
    /// `namespaceSelector`), so every pod is meshed unless it opts out.
    LabelledNamespace,
    /// `POST /inject-opt-in`: the namespace has no `trellis.io/inject` label, and the
    /// pod opts in with the label `trellis.io/inject: enabled` (its `objectSelector`,
    /// which sees labels only), so it is meshed unless it also opts out.
    PodOptIn,
}

impl Route {
    pub const ALL: [Route; 2] = [Route::LabelledNamespace, Route::PodOptIn];

    /// The path the webhook entry posts to.
    pub fn path(self) -> &'static str {
        match self {
            Route::LabelledNamespace => "/inject",
            Route::PodOptIn => "/inject-opt-in",
        }
    }

    pub fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.path() == path)
    }

    /// The namespace labels the API server's selector vouched for: the label, or none.
    pub fn namespace_labels(self) -> Labels {
        match self {
            Route::LabelledNamespace => {
                Labels::from([(NAMESPACE_LABEL.to_owned(), "enabled".to_owned())])
            }
            Route::PodOptIn => Labels::new(),
        }
    }
}
