//! Kubernetes objects into model objects: pure functions, no I/O, tested against
//! objects shaped exactly as the API server serves them.
//!
//! | from | to |
//! | --- | --- |
//! | Service | Service: cluster IPs (none when headless), TCP ports with their target port (number or name) and protocol hint |
//! | the EndpointSlices of a service (label `kubernetes.io/service-name`) | one Endpoints: every address, the slice's TCP ports, readiness, zone, the pod and its identity |
//! | Pod | the identity of its endpoints: `spiffe://<trust domain>/ns/<ns>/sa/<serviceAccountName>`, when it runs the proxy; and while it runs, an Endpoints of its own (`pod.<name>`) with that identity and the addresses of it no slice lists, so that calls to the pod itself are mTLS whether or not it backs a Service |
//! | Route, AuthorizationPolicy | the same, through `crate::crd` |
//!
//! What cannot be represented is left out rather than taking the whole object down:
//! UDP and SCTP ports (the mesh carries TCP), ExternalName services (no address to
//! route), FQDN slices; an address or port that is not one is reported as a
//! rejection of its slice, and the rest of the service's endpoints stay usable.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use trellis_identity::SpiffeId;
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::service_port;

use crate::crd::{self, AuthorizationPolicySpec, RouteSpec};
use crate::model::{Object, pod_endpoints_name};
use crate::source::Rejection;

/// The annotation on a Service listing ports whose traffic is opaque TCP: never
/// detected, never parsed (`"3306,5432,9000-9100"`). It wins over `appProtocol`.
pub const OPAQUE_PORTS: &str = "trellis.io/opaque-ports";

/// The label an EndpointSlice names its service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The proxy's container (a native sidecar, or a classic one): a pod without it is
/// not meshed, and its endpoints are reached in plaintext.
pub const PROXY_CONTAINER: &str = "trellis-proxy";

/// `namespace/name`, the form the model names objects by.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn rejection(kind: &str, namespace: &str, name: &str, field: String, message: String) -> Rejection {
    Rejection {
        origin: format!("{kind} {}", key(namespace, name)),
        line: None,
        column: None,
        field,
        message,
    }
}

/// The Service as the model holds it; `None` for an ExternalName service, which has
/// no address of its own to route.
pub fn service(service: &Service) -> Result<Option<pb::Service>, Rejection> {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let reject =
        |field: String, message: String| rejection("Service", &namespace, &name, field, message);
    let Some(spec) = &service.spec else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let opaque = match service
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(OPAQUE_PORTS))
    {
        Some(value) => opaque_ports(value)
            .map_err(|message| reject(format!("metadata.annotations[{OPAQUE_PORTS}]"), message))?,
        None => Vec::new(),
    };
    // `clusterIPs` holds `clusterIP` first and, when dual-stack, the other family's;
    // older objects may have `clusterIP` alone. "None" is how a headless service says
    // it has none.
    let cluster_ips = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    }
    .into_iter()
    .filter(|ip| !ip.is_empty() && ip != "None")
    .collect();
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
            continue;
        }
        let number = u32::try_from(port.port).map_err(|_| {
            reject(
                format!("spec.ports[{i}].port"),
                format!("{} is not a port", port.port),
            )
        })?;
        let target = match &port.target_port {
            Some(IntOrString::Int(target)) => {
                service_port::Target::TargetPort(u32::try_from(*target).map_err(|_| {
                    reject(
                        format!("spec.ports[{i}].targetPort"),
                        format!("{target} is not a port"),
                    )
                })?)
            }
            Some(IntOrString::String(name)) => service_port::Target::TargetPortName(name.clone()),
            None => service_port::Target::TargetPort(number),
        };
        let protocol = if opaque.iter().any(|range| range.contains(&number)) {
            pb::Protocol::Tcp
        } else {
            app_protocol(port.app_protocol.as_deref())
        };
        ports.push(pb::ServicePort {
            name: port.name.clone().unwrap_or_default(),
            port: number,
            target: Some(target),
            protocol: protocol as i32,
        });
    }
    Ok(Some(pb::Service {
        name,
        namespace,
        cluster_ips,
        ports,
    }))
}

/// The protocol hint a port's `appProtocol` gives. Standard names
/// (`kubernetes.io/h2c`), IANA service names (`http`, `https`) and the names mesh
/// users write (`grpc`, `tcp`) are known; anything else, or none, leaves the proxy to
/// detect the protocol from the first bytes.
pub fn app_protocol(app_protocol: Option<&str>) -> pb::Protocol {
    let Some(value) = app_protocol else {
        return pb::Protocol::Unspecified;
    };
    match value.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" | "h2c" | "http2" | "h2" => pb::Protocol::Http2,
        "http" | "http1" | "kubernetes.io/ws" => pb::Protocol::Http1,
        "grpc" | "grpc-web" => pb::Protocol::Grpc,
        // Already encrypted, or not HTTP at all: nothing to detect, and
        // server-speaks-first protocols would wait out the detection timeout.
        "tcp" | "opaque" | "https" | "tls" | "kubernetes.io/wss" | "mysql" | "postgresql"
        | "redis" | "mongo" | "mongodb" | "smtp" => pb::Protocol::Tcp,
        _ => pb::Protocol::Unspecified,
    }
}

/// The ranges of `trellis.io/opaque-ports`: comma-separated ports and `low-high`
/// ranges.
pub fn opaque_ports(value: &str) -> Result<Vec<std::ops::RangeInclusive<u32>>, String> {
    let port = |text: &str| -> Result<u32, String> {
        match text.trim().parse::<u32>() {
            Ok(port @ 1..=65535) => Ok(port),
            _ => Err(format!(
                "{text:?} in {value:?} is not a port (1-65535); list ports and ranges: \"3306,8000-8100\""
            )),
        }
    };
    let mut ranges = Vec::new();
    for item in value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let range = match item.split_once('-') {
            Some((low, high)) => port(low)?..=port(high)?,
            None => port(item)?..=port(item)?,
        };
        if range.is_empty() {
            return Err(format!("{item:?} in {value:?} is an empty range"));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// What the model's Endpoints for one service are made from.
pub struct ServiceSlices<'a> {
    pub namespace: &'a str,
    /// The service's name (the slices' `kubernetes.io/service-name`).
    pub name: &'a str,
    pub slices: Vec<&'a EndpointSlice>,
}

/// One address while the slices are merged.
struct Merged {
    endpoint: pb::Endpoint,
    /// Serving while terminating: used only when nothing else is ready.
    draining: bool,
}

/// Every address of every slice of the service, merged into one Endpoints; `identity`
/// gives a pod's (`namespace/name`) identity, if it is meshed.
///
/// Readiness follows the API's rules: a missing `ready` is true. Terminating
/// endpoints are not ready, but when a service has no ready endpoint at all, those
/// still serving take the traffic, as kube-proxy does during a rollout, so that the
/// last replicas can drain their clients. An address listed by two slices (an
/// endpoint moving between them) is one endpoint with the ports of both.
pub fn endpoints<'a>(
    slices: &ServiceSlices<'_>,
    identity: impl Fn(&str) -> Option<&'a str>,
) -> (pb::Endpoints, Vec<Rejection>) {
    let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
    let mut rejections = Vec::new();
    for slice in &slices.slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let reject = |field: String, message: String| {
            rejection(
                "EndpointSlice",
                slices.namespace,
                slice_name,
                field,
                message,
            )
        };
        // FQDN slices name hosts, not addresses: nothing a proxy can connect to.
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let mut ports = Vec::new();
        for (i, port) in slice.ports.iter().flatten().enumerate() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            // A port without a number means "every port": no mapping for a proxy.
            let Some(number) = port.port else { continue };
            match u32::try_from(number) {
                Ok(number @ 1..=65535) => ports.push(pb::EndpointPort {
                    name: port.name.clone().unwrap_or_default(),
                    port: number,
                }),
                _ => rejections.push(reject(
                    format!("ports[{i}].port"),
                    format!("{number} is not a port"),
                )),
            }
        }
        for (j, endpoint) in slice.endpoints.iter().enumerate() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            let draining =
                conditions.terminating == Some(true) && conditions.serving.unwrap_or(true);
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|target| target.kind.as_deref() == Some("Pod"))
                .and_then(|target| {
                    let namespace = target.namespace.as_deref().unwrap_or(slices.namespace);
                    Some(key(namespace, target.name.as_deref()?))
                })
                .unwrap_or_default();
            let identity = identity(&pod).unwrap_or_default();
            for (k, address) in endpoint.addresses.iter().enumerate() {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    rejections.push(reject(
                        format!("endpoints[{j}].addresses[{k}]"),
                        format!("{address:?} is not an IP address"),
                    ));
                    continue;
                };
                // The canonical spelling, so that one address is one key.
                let address = ip.to_string();
                let entry = merged.entry(address.clone()).or_insert_with(|| Merged {
                    endpoint: pb::Endpoint {
                        address,
                        ports: Vec::new(),
                        identity: identity.to_string(),
                        weight: 1,
                        zone: endpoint.zone.clone().unwrap_or_default(),
                        ready: false,
                        pod: pod.clone(),
                    },
                    draining: false,
                });
                entry.endpoint.ready |= ready;
                entry.draining |= draining;
                for port in &ports {
                    let known = entry.endpoint.ports.iter().any(|p| p.name == port.name);
                    if !known {
                        entry.endpoint.ports.push(port.clone());
                    }
                }
            }
        }
    }
    let any_ready = merged.values().any(|m| m.endpoint.ready);
    let endpoints = merged
        .into_values()
        .map(|mut m| {
            m.endpoint.ready |= !any_ready && m.draining;
            m.endpoint
        })
        .collect();
    let endpoints = pb::Endpoints {
        name: slices.name.to_string(),
        namespace: slices.namespace.to_string(),
        endpoints,
    };
    (endpoints, rejections)
}

/// The identity a pod's endpoints are reached as: its ServiceAccount's SPIFFE ID
/// when it runs the proxy; `None` (plaintext) otherwise, and for host-network pods,
/// whose address is the node's and is shared by everything on it.
pub fn pod_identity(pod: &Pod, trust_domain: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let meshed = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|container| container.name == PROXY_CONTAINER);
    if !meshed {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref()?;
    // The API server fills it in; "default" is what it would fill in.
    let account = spec
        .service_account_name
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or("default");
    let id = SpiffeId::for_service_account(trust_domain, namespace, account).ok()?;
    Some(id.to_string())
}

/// What the source keeps of a pod: all that translation reads of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// The identity its endpoints are reached as ([`pod_identity`]).
    pub identity: Option<String>,
    /// Its addresses while it runs meshed (phase `Running`, with a pod IP): what its
    /// own Endpoints lists. Empty otherwise, so that a finished pod's address, which
    /// the cluster may give to another pod, is nobody's.
    pub addresses: Vec<String>,
}

/// The part of `pod` that translation reads.
pub fn pod_view(pod: &Pod, trust_domain: &str) -> PodView {
    let identity = pod_identity(pod, trust_domain);
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let mut addresses = Vec::new();
    if identity.is_some() && running {
        // `podIPs` holds `podIP` first and, when dual-stack, the other family's;
        // older objects may have `podIP` alone.
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|ip| ip.ip.as_str());
        let single = status.and_then(|s| s.pod_ip.as_deref());
        for ip in listed.chain(single) {
            // The canonical spelling, as for slices, so one address is one entry.
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !addresses.contains(&ip.to_string())
            {
                addresses.push(ip.to_string());
            }
        }
    }
    PodView {
        identity,
        addresses,
    }
}

/// The Endpoints of a meshed, running pod itself (`pod.<name>`): each of its
/// addresses that no slice lists (`listed`), with its identity, so that a proxy
/// reaches the pod over mTLS when it is called by address, as it reaches the
/// addresses its Services' slices list. `None` when nothing is left to list, which
/// is the common case: most pods back a Service, and every push carries every
/// Endpoints, so listing them twice would double what each change sends.
pub fn pod_endpoints(
    namespace: &str,
    name: &str,
    pod: &PodView,
    listed: impl Fn(&str) -> bool,
) -> Option<pb::Endpoints> {
    let identity = pod.identity.as_deref()?;
    let endpoints: Vec<pb::Endpoint> = pod
        .addresses
        .iter()
        .filter(|address| !listed(address))
        .map(|address| pb::Endpoint {
            address: address.clone(),
            ports: Vec::new(),
            identity: identity.to_string(),
            weight: 1,
            zone: String::new(),
            // The pod's own address: readiness is for its Services' endpoints.
            ready: true,
            pod: key(namespace, name),
        })
        .collect();
    if endpoints.is_empty() {
        return None;
    }
    Some(pb::Endpoints {
        name: pod_endpoints_name(name),
        namespace: namespace.to_string(),
        endpoints,
    })
}

/// A Route custom resource, read as the raw object the API server served, so that
/// one malformed resource is one rejection rather than a failed watch.
pub fn route(object: &DynamicObject) -> Result<Object, Rejection> {
    custom(object, "Route", |namespace, name, spec: RouteSpec| {
        crd::route(namespace, name, spec)
    })
}

/// An AuthorizationPolicy custom resource, read as [`route`] reads a Route.
pub fn authorization_policy(object: &DynamicObject) -> Result<Object, Rejection> {
    custom(
        object,
        "AuthorizationPolicy",
        |namespace, name, spec: AuthorizationPolicySpec| {
            Ok(crd::authorization_policy(namespace, name, spec))
        },
    )
}

fn custom<S: serde::de::DeserializeOwned>(
    object: &DynamicObject,
    kind: &str,
    translate: impl FnOnce(String, String, S) -> Result<Object, crate::Invalid>,
) -> Result<Object, Rejection> {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let reject =
        |field: String, message: String| rejection(kind, &namespace, &name, field, message);
    let spec = match object.data.get("spec") {
        Some(spec) => spec.clone(),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    let spec = serde_json::from_value::<S>(spec)
        .map_err(|error| reject("spec".into(), error.to_string()))?;
    translate(namespace.clone(), name.clone(), spec)
        .map_err(|invalid| reject(invalid.field, invalid.reason))
}

#[cfg(test)]
pub(crate) mod tests;
