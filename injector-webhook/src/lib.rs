//! The Trellis injector: turning a Pod into a meshed Pod.
//!
//! [`inject`] is a pure function from a pod (raw JSON, exactly as the API server or a
//! manifest gave it), how it was asked for (the admission webhook, with the namespace's
//! labels, or `meshctl inject`, explicitly) and the [`MeshConfig`] to an RFC 6902 JSON
//! Patch, or a recorded reason to leave the pod alone, or a rejection naming the bad
//! annotation. The HTTPS admission webhook ([`server`], the `trellis-injector` binary,
//! port 8443) and `meshctl inject` are thin wrappers around it, so both inject exactly
//! the same pod.
//!
//! An injected pod gets, in this order of init containers: `trellis-proxy-init` (the
//! redirect rules must exist before any other container opens a connection), then the
//! proxy `trellis-proxy` as a native sidecar (its startup probe holds back what follows
//! until it has a certificate), then the pod's own init containers, which thus already
//! talk through the mesh. With the classic sidecar mode the proxy is instead the first
//! app container. Annotations record what was added; a second injection is a no-op.
//!
//! # Layout
//! - `lib.rs`: [`inject`] and its inputs and outcome.
//! - `skip.rs`: the reasons to leave a pod untouched ([`SkipReason`]).
//! - `annotations.rs`: the `trellis.io/` annotations, read, validated and written.
//! - `values.rs`: port lists, networks and quantities as operators write them.
//! - `containers.rs`: the JSON of the added containers and volumes.
//! - `patch.rs`: add-only JSON Patch operations against the raw pod.
//! - `config.rs`: [`MeshConfig`], the mesh-wide settings, from YAML.
//! - `error.rs`: [`Rejection`] (a pod refused), [`ConfigError`], and the webhook's
//!   [`MalformedReview`] and [`CertError`].
//! - `server.rs` and `server/`: the admission webhook, HTTPS around [`inject`].
//! - `main.rs`: the `trellis-injector serve` binary (flags, logs, signals).

mod annotations;
mod config;
mod containers;
mod error;
mod patch;
pub mod server;
mod skip;
mod values;

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::annotations::{
    INJECT, INJECTED, INJECTED_SIDECAR, INJECTOR_VERSION, LOCAL_CONGESTION_CONTROL, OPAQUE_PORTS,
    PROXY_CPU_LIMIT, PROXY_CPU_REQUEST, PROXY_IMAGE, PROXY_MEMORY_LIMIT, PROXY_MEMORY_REQUEST,
    PROXY_SCHEDULING, PROXY_SIDECAR, SKIP_INBOUND_PORTS, SKIP_OUTBOUND_CIDRS, SKIP_OUTBOUND_PORTS,
};
pub use crate::config::{
    Image, MeshConfig, Ports, ProxyScheduling, Resources, SidecarMode, VERSION,
};
pub use crate::containers::{TOKEN_VOLUME, TRUST_ANCHORS_VOLUME, XTABLES_LOCK_VOLUME};
pub use crate::error::{CertError, ConfigError, MalformedReview, Rejection};
pub use crate::skip::{NAMESPACE_LABEL, SYSTEM_NAMESPACES, SkipReason};
pub use json_patch::Patch;

/// The init container that installs the redirect rules.
pub const PROXY_INIT_CONTAINER: &str = "trellis-proxy-init";
/// The sidecar proxy's container.
pub const PROXY_CONTAINER: &str = "trellis-proxy";

/// Who asks for the injection; it decides whether the namespace's label matters.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// The admission webhook, for a pod being created in `namespace` (the review's
    /// namespace: a new pod's own `metadata.namespace` may be empty).
    Admission {
        namespace: &'a str,
        namespace_labels: &'a BTreeMap<String, String>,
    },
    /// `meshctl inject`: the operator names the object, so the namespace label is not
    /// consulted (as `linkerd inject`); the pod's opt-out and the system namespaces
    /// still are. `namespace` is where the object will live, if known (a workload's
    /// `metadata.namespace`: its pod template has none); else the pod's own.
    Explicit { namespace: Option<&'a str> },
}

/// What [`inject`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The patch that meshes the pod, and how the proxy was added.
    Injected { patch: Patch, sidecar: SidecarMode },
    /// The pod is left exactly as it is (no patch at all).
    Skipped(SkipReason),
}

impl Outcome {
    /// The patch to send or apply: empty when skipped.
    pub fn patch(&self) -> Patch {
        match self {
            Outcome::Injected { patch, .. } => patch.clone(),
            Outcome::Skipped(_) => Patch(Vec::new()),
        }
    }
}

/// Meshes `pod`, or says why not.
///
/// `pod` is a Pod (or a workload's pod template, which has the same `metadata` and
/// `spec`) as raw JSON. The patch only adds; it never rewrites what the pod holds.
pub fn inject(
    pod: &Value,
    request: &Request<'_>,
    config: &MeshConfig,
) -> Result<Outcome, Rejection> {
    check_shape(pod)?;
    let annotations = annotations::of(pod);
    if let Some(reason) = skip::reason(pod, &annotations, request)? {
        return Ok(Outcome::Skipped(reason));
    }
    let effective = annotations::effective(&annotations, config)?;
    let volumes = containers::volumes(config);
    check_names_free(pod, &volumes)?;

    let sidecar = effective.sidecar;
    let proxy_init = containers::proxy_init(config, &effective);
    let proxy = containers::proxy(config, &effective, sidecar);
    let mut builder = patch::PatchBuilder::new(pod);
    match sidecar {
        SidecarMode::Native => {
            builder.prepend(&["spec", "initContainers"], vec![proxy_init, proxy])
        }
        SidecarMode::Classic => {
            builder.prepend(&["spec", "initContainers"], vec![proxy_init]);
            // First, so that its postStart hold delays the app containers' start.
            builder.prepend(&["spec", "containers"], vec![proxy]);
        }
    }
    builder.append(&["spec", "volumes"], volumes);
    builder.annotate(vec![
        (
            annotations::INJECTED,
            format!("{PROXY_INIT_CONTAINER},{PROXY_CONTAINER}"),
        ),
        (annotations::INJECTED_SIDECAR, sidecar.as_str().into()),
        (annotations::INJECTOR_VERSION, VERSION.into()),
        (annotations::PROXY_IMAGE, config.proxy_image.reference()),
    ]);
    Ok(Outcome::Injected {
        patch: builder.finish(),
        sidecar,
    })
}

/// A pod has an object `spec` with a `containers` list; anything else is refused rather
/// than patched into something stranger.
fn check_shape(pod: &Value) -> Result<(), Rejection> {
    let Some(spec) = pod.get("spec").filter(|spec| spec.is_object()) else {
        return Err(Rejection::NotAPod("it has no spec object".into()));
    };
    if !spec.get("containers").is_some_and(Value::is_array) {
        return Err(Rejection::NotAPod("its spec has no containers list".into()));
    }
    for list in ["initContainers", "volumes"] {
        if spec
            .get(list)
            .is_some_and(|v| !(v.is_array() || v.is_null()))
        {
            return Err(Rejection::NotAPod(format!("its spec.{list} is not a list")));
        }
    }
    if pod
        .get("metadata")
        .is_some_and(|m| !(m.is_object() || m.is_null()))
    {
        return Err(Rejection::NotAPod("its metadata is not an object".into()));
    }
    for map in ["labels", "annotations"] {
        let value = pod.pointer(&format!("/metadata/{map}"));
        if value.is_some_and(|v| !(v.is_object() || v.is_null())) {
            return Err(Rejection::NotAPod(format!(
                "its metadata.{map} is not a map"
            )));
        }
    }
    Ok(())
}

/// The volumes we add must not collide with the pod's (our containers' names were
/// already checked: a pod holding them counts as injected).
fn check_names_free(pod: &Value, ours: &[Value]) -> Result<(), Rejection> {
    let ours: Vec<&str> = ours
        .iter()
        .filter_map(|volume| volume.get("name").and_then(Value::as_str))
        .collect();
    let taken = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.get("name").and_then(Value::as_str));
    for name in taken {
        if ours.contains(&name) {
            return Err(Rejection::NameTaken {
                kind: "volume",
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}
