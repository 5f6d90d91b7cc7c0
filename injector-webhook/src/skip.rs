//! Whether a pod is injected at all: the reasons to leave a pod exactly as it came.
//!
//! A skipped pod gets no patch at all, not even an annotation: the webhook must never
//! change a pod it was not asked to mesh. The reason is returned instead, for the
//! webhook's metrics and audit annotation and for `meshctl inject`'s report.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::annotations::{self, InjectChoice};
use crate::error::Rejection;
use crate::{PROXY_CONTAINER, PROXY_INIT_CONTAINER, Request};

/// Namespaces never meshed, whatever their labels or the pod's annotations say: the
/// cluster's own components, and the mesh's (the controller cannot wait for a
/// certificate from itself).
pub const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "trellis-system"];

/// The namespace label that meshes every new pod of its namespace.
pub const NAMESPACE_LABEL: &str = "trellis.io/inject";

/// Why a pod was left untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// It already has the injector's annotation or containers: injecting twice is
    /// injecting once.
    AlreadyInjected,
    /// `trellis.io/inject: disabled` on the pod.
    OptedOut,
    /// `kube-system` or `trellis-system`.
    SystemNamespace(String),
    /// `hostNetwork: true`: its iptables rules would be the node's.
    HostNetwork,
    /// The webhook was called for a pod whose namespace has no `trellis.io/inject`
    /// label and which does not opt in itself.
    NamespaceNotEnabled,
    /// The namespace is labelled `trellis.io/inject` with a value other than `enabled`
    /// (`disabled`, typically): it opts out all its pods, whatever they ask for.
    NamespaceDisabled(String),
}

impl SkipReason {
    /// A short, fixed name for metrics labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::AlreadyInjected => "already-injected",
            SkipReason::OptedOut => "opted-out",
            SkipReason::SystemNamespace(_) => "system-namespace",
            SkipReason::HostNetwork => "host-network",
            SkipReason::NamespaceNotEnabled => "namespace-not-enabled",
            SkipReason::NamespaceDisabled(_) => "namespace-disabled",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::AlreadyInjected => write!(f, "already injected"),
            SkipReason::OptedOut => {
                write!(f, "the pod opts out ({}: disabled)", annotations::INJECT)
            }
            SkipReason::SystemNamespace(ns) => {
                write!(f, "namespace {ns} is never meshed")
            }
            SkipReason::HostNetwork => write!(
                f,
                "the pod uses the host's network (hostNetwork: true); its rules would be the node's"
            ),
            SkipReason::NamespaceNotEnabled => write!(
                f,
                "the namespace is not labelled {NAMESPACE_LABEL}=enabled and the pod does not opt in ({}: enabled, as a label or an annotation)",
                annotations::INJECT
            ),
            SkipReason::NamespaceDisabled(value) => write!(
                f,
                "the namespace is labelled {NAMESPACE_LABEL}={value}, which opts out all its pods"
            ),
        }
    }
}

/// The reason to skip `pod`, if any. Checks run in an order that makes the reason the
/// most useful one: "already injected" first (so re-injection is silent); then what
/// rules the pod out whatever it asks for (a system namespace, the host's network, a
/// namespace that opted out), so that a typo in its `trellis.io/inject` cannot get a
/// pod refused that would never be meshed anyway; then the pod's own choice, whose
/// value is checked here; then whether it needed to opt in at all.
pub fn reason(
    pod: &Value,
    annotations: &BTreeMap<&str, &str>,
    request: &Request<'_>,
) -> Result<Option<SkipReason>, Rejection> {
    if is_injected(pod, annotations) {
        return Ok(Some(SkipReason::AlreadyInjected));
    }
    let namespace = match request {
        Request::Admission { namespace, .. } => Some(*namespace),
        Request::Explicit { namespace } => {
            namespace.or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        }
    };
    if let Some(ns) = namespace.filter(|ns| SYSTEM_NAMESPACES.contains(ns)) {
        return Ok(Some(SkipReason::SystemNamespace(ns.to_owned())));
    }
    if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        return Ok(Some(SkipReason::HostNetwork));
    }
    // The namespace's label, where the webhook knows it: `None` for meshctl inject.
    let namespace_label = match request {
        Request::Admission {
            namespace_labels, ..
        } => Some(namespace_labels.get(NAMESPACE_LABEL).map(String::as_str)),
        Request::Explicit { .. } => None,
    };
    if let Some(Some(value)) = namespace_label
        && value != "enabled"
    {
        return Ok(Some(SkipReason::NamespaceDisabled(value.to_owned())));
    }
    let choice = annotations::inject_choice(pod, annotations)?;
    if choice == Some(InjectChoice::Disabled) {
        return Ok(Some(SkipReason::OptedOut));
    }
    if namespace_label == Some(None) && choice != Some(InjectChoice::Enabled) {
        return Ok(Some(SkipReason::NamespaceNotEnabled));
    }
    Ok(None)
}

/// Injected means our annotation, or one of our containers: a pod copied from a live
/// one with its annotations stripped still has the containers, and adding them again
/// would give two containers of one name, which the API server refuses.
fn is_injected(pod: &Value, annotations: &BTreeMap<&str, &str>) -> bool {
    if annotations.contains_key(annotations::INJECTED) {
        return true;
    }
    ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|list| pod.pointer(list).and_then(Value::as_array))
        .flatten()
        .filter_map(|container| container.get("name").and_then(Value::as_str))
        .any(|name| name == PROXY_CONTAINER || name == PROXY_INIT_CONTAINER)
}
