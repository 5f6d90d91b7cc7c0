//! The `trellis.io/` pod annotations: the ones a pod sets to steer its injection, read
//! and validated here, and the ones the injector writes to record what it did.
//!
//! Every override is parsed before anything is built, so one bad value rejects the pod
//! with a message naming the annotation, instead of a pod whose proxy-init or proxy
//! cannot start.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::{MeshConfig, ProxyScheduling, Resources, SidecarMode};
use crate::error::Rejection;
use crate::values::{CidrList, CongestionControl, PortList, quantity};

/// On a pod, as a label or an annotation: `enabled` meshes the pod in a namespace
/// without the label; `disabled` opts it out. Only the label form is visible to the
/// webhook configuration's `objectSelector`, so only it brings the webhook to a pod in
/// an unlabelled namespace. (On a namespace, `trellis.io/inject=enabled` meshes every
/// pod of the namespace, and any other value none.)
pub const INJECT: &str = "trellis.io/inject";
/// Inbound ports that bypass the proxy, added to the mesh config's.
pub const SKIP_INBOUND_PORTS: &str = "trellis.io/skip-inbound-ports";
/// Outbound ports that bypass the proxy, added to the mesh config's.
pub const SKIP_OUTBOUND_PORTS: &str = "trellis.io/skip-outbound-ports";
/// Outbound networks that bypass the proxy, added to the mesh config's.
pub const SKIP_OUTBOUND_CIDRS: &str = "trellis.io/skip-outbound-cidrs";
/// Ports the proxy forwards without detecting a protocol (server-speaks-first).
pub const OPAQUE_PORTS: &str = "trellis.io/opaque-ports";
/// `native` or `classic`: this pod's sidecar mode, instead of the mesh config's.
pub const PROXY_SIDECAR: &str = "trellis.io/proxy-sidecar";
/// `normal`, `batch` or `auto`: this pod's proxy scheduling policy, instead of the mesh config's.
pub const PROXY_SCHEDULING: &str = "trellis.io/proxy-scheduling";
/// `keep` or an algorithm: the congestion control of this pod's local routes, instead
/// of the mesh config's.
pub const LOCAL_CONGESTION_CONTROL: &str = "trellis.io/local-congestion-control";
pub const PROXY_CPU_REQUEST: &str = "trellis.io/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "trellis.io/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "trellis.io/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "trellis.io/proxy-memory-limit";

/// Written by the injector: the containers it added (`trellis-proxy-init,trellis-proxy`).
/// Its presence is what makes a second injection a no-op.
pub const INJECTED: &str = "trellis.io/injected";
/// Written by the injector: `native` or `classic`, how the proxy was added.
pub const INJECTED_SIDECAR: &str = "trellis.io/injected-sidecar";
/// Written by the injector: the injector's version.
pub const INJECTOR_VERSION: &str = "trellis.io/injector-version";
/// Written by the injector: the proxy image it added, so `kubectl get -o yaml` tells
/// which proxy version a pod runs without reading its containers.
pub const PROXY_IMAGE: &str = "trellis.io/proxy-image";

/// What the pod's `trellis.io/inject` label or annotation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectChoice {
    Enabled,
    Disabled,
}

/// The pod's annotations as a map of strings; a missing or null map is empty. A
/// non-string value cannot come from the API server, but is skipped rather than trusted.
pub fn of(pod: &Value) -> BTreeMap<&str, &str> {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(key, value)| Some((key.as_str(), value.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `trellis.io/inject` as the pod's label and as its annotation. Anything but `enabled`
/// or `disabled` is refused, since a typo (`disable`) would otherwise silently mesh a
/// pod that meant to opt out; and `disabled` in either form wins over `enabled` in the
/// other, so no pod is meshed against one of its author's wishes.
pub fn inject_choice(
    pod: &Value,
    annotations: &BTreeMap<&str, &str>,
) -> Result<Option<InjectChoice>, Rejection> {
    let parse = |value: &str| match value {
        "enabled" => Some(InjectChoice::Enabled),
        "disabled" => Some(InjectChoice::Disabled),
        _ => None,
    };
    let must_be = || "must be enabled or disabled".to_owned();
    let label = pod
        .pointer("/metadata/labels")
        .and_then(|labels| labels.get(INJECT))
        .and_then(Value::as_str);
    let from_label = match label {
        None => None,
        Some(value) => Some(parse(value).ok_or_else(|| Rejection::InvalidLabel {
            label: INJECT,
            value: value.to_owned(),
            reason: must_be(),
        })?),
    };
    let from_annotation = match annotations.get(INJECT).copied() {
        None => None,
        Some(value) => Some(parse(value).ok_or_else(|| invalid(INJECT, value, must_be()))?),
    };
    Ok(match (from_label, from_annotation) {
        (Some(InjectChoice::Disabled), _) | (_, Some(InjectChoice::Disabled)) => {
            Some(InjectChoice::Disabled)
        }
        (None, None) => None,
        _ => Some(InjectChoice::Enabled),
    })
}

/// What the mesh config and the pod's annotations together say about this pod's
/// proxy-init and proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub skip_inbound_ports: PortList,
    pub skip_outbound_ports: PortList,
    pub skip_outbound_cidrs: CidrList,
    pub opaque_ports: Vec<u16>,
    pub sidecar: SidecarMode,
    pub proxy_scheduling: ProxyScheduling,
    pub local_congestion_control: CongestionControl,
    pub proxy_resources: Resources,
}

/// Parses every override; the first bad one rejects the pod.
pub fn effective(
    annotations: &BTreeMap<&str, &str>,
    config: &MeshConfig,
) -> Result<Effective, Rejection> {
    // The config was checked when loaded, so its lists parse; an error here would be
    // a config built in code without `check`, reported as the field it came from.
    let config_ports = |field: &'static str, text: &str| {
        PortList::parse(text).map_err(|reason| invalid(field, text, reason))
    };
    let ports = |name: &'static str| -> Result<PortList, Rejection> {
        match annotations.get(name) {
            Some(text) => PortList::parse(text).map_err(|reason| invalid(name, text, reason)),
            None => Ok(PortList::default()),
        }
    };
    let skip_inbound_ports = config_ports("skipInboundPorts", &config.skip_inbound_ports)?
        .union(&ports(SKIP_INBOUND_PORTS)?);
    let skip_outbound_ports = config_ports("skipOutboundPorts", &config.skip_outbound_ports)?
        .union(&ports(SKIP_OUTBOUND_PORTS)?);
    let config_cidrs = CidrList::parse(&config.skip_outbound_cidrs)
        .map_err(|reason| invalid("skipOutboundCidrs", &config.skip_outbound_cidrs, reason))?;
    let pod_cidrs = match annotations.get(SKIP_OUTBOUND_CIDRS) {
        Some(text) => {
            CidrList::parse(text).map_err(|reason| invalid(SKIP_OUTBOUND_CIDRS, text, reason))?
        }
        None => CidrList::default(),
    };
    let opaque_ports = ports(OPAQUE_PORTS)?.single_ports().map_err(|reason| {
        invalid(
            OPAQUE_PORTS,
            annotations.get(OPAQUE_PORTS).copied().unwrap_or_default(),
            reason,
        )
    })?;
    let sidecar = match annotations.get(PROXY_SIDECAR).copied() {
        None => config.sidecar,
        Some("native") => SidecarMode::Native,
        Some("classic") => SidecarMode::Classic,
        Some(other) => {
            return Err(invalid(
                PROXY_SIDECAR,
                other,
                "must be native or classic".into(),
            ));
        }
    };
    let proxy_scheduling = match annotations.get(PROXY_SCHEDULING).copied() {
        None => config.proxy_scheduling,
        Some("normal") => ProxyScheduling::Normal,
        Some("batch") => ProxyScheduling::Batch,
        Some("auto") => ProxyScheduling::Auto,
        Some(other) => {
            return Err(invalid(
                PROXY_SCHEDULING,
                other,
                "must be normal, batch or auto".into(),
            ));
        }
    };
    let local_congestion_control = match annotations.get(LOCAL_CONGESTION_CONTROL) {
        None => config.local_congestion_control.clone(),
        Some(text) => CongestionControl::parse(text)
            .map_err(|reason| invalid(LOCAL_CONGESTION_CONTROL, text, reason))?,
    };
    Ok(Effective {
        skip_inbound_ports,
        skip_outbound_ports,
        skip_outbound_cidrs: config_cidrs.union(&pod_cidrs),
        opaque_ports,
        sidecar,
        proxy_scheduling,
        local_congestion_control,
        proxy_resources: proxy_resources(annotations, &config.proxy_resources)?,
    })
}

/// The config's proxy resources with the pod's overrides.
fn proxy_resources(
    annotations: &BTreeMap<&str, &str>,
    defaults: &Resources,
) -> Result<Resources, Rejection> {
    let mut resources = defaults.clone();
    let cpu = [PROXY_CPU_REQUEST, PROXY_CPU_LIMIT];
    let memory = [PROXY_MEMORY_REQUEST, PROXY_MEMORY_LIMIT];
    let Resources {
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    } = &mut resources;
    override_pair(annotations, "cpu", cpu, [cpu_request, cpu_limit])?;
    override_pair(
        annotations,
        "memory",
        memory,
        [memory_request, memory_limit],
    )?;
    Ok(resources)
}

/// Overrides one resource's request and limit. A request above its limit is refused
/// here, naming the annotation, because the API server would refuse the pod with a
/// message about a container its author never wrote.
fn override_pair(
    annotations: &BTreeMap<&str, &str>,
    resource: &str,
    names: [&'static str; 2],
    [request, limit]: [&mut Option<String>; 2],
) -> Result<(), Rejection> {
    for (name, slot) in names.into_iter().zip([&mut *request, &mut *limit]) {
        if let Some(text) = annotations.get(name) {
            quantity(text).map_err(|reason| invalid(name, text, reason))?;
            *slot = Some((*text).to_owned());
        }
    }
    let parse = |value: &Option<String>| value.as_deref().and_then(|v| quantity(v).ok());
    if let (Some(r), Some(l)) = (parse(request), parse(limit))
        && r > l
    {
        // Name an annotation the pod set: the request if it set it, else the limit.
        let name = match annotations.contains_key(names[0]) {
            true => names[0],
            false => names[1],
        };
        let value = annotations.get(name).copied().unwrap_or_default();
        let reason = format!(
            "the proxy's {resource} request ({}) would exceed its limit ({})",
            request.as_deref().unwrap_or_default(),
            limit.as_deref().unwrap_or_default()
        );
        return Err(invalid(name, value, reason));
    }
    Ok(())
}

fn invalid(annotation: &'static str, value: &str, reason: String) -> Rejection {
    Rejection::InvalidAnnotation {
        annotation,
        value: value.to_owned(),
        reason,
    }
}
