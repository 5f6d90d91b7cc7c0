//! What discovery says about the world, in the shape the data path asks about it:
//! "where was this connection going?" → a service (and its endpoints), a known pod
//! (and its identity), or somewhere outside the mesh.
//!
//! A [`Directory`] is built whole from the four resource sets the controller pushed
//! and is swapped in atomically, so a connection never sees half of an update (the
//! discovery client swaps once per snapshot, with every set of it). Each pushed set
//! is validated first ([`check`]); a set that does not validate is refused (NACKed)
//! and the previous one stays in force.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use trellis_identity::SpiffeId;
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::{resource::Kind, service_port::Target, type_url};

use crate::balance::{self, EndpointLoad, Registry};
use crate::orig_dst::OrigDstAddr;

/// Why a pushed set was refused; the message goes back to the controller in the NACK.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {name}: {message}")]
pub struct Invalid {
    kind: &'static str,
    name: String,
    message: String,
}

/// Where a connection goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A service's virtual IP and port: balanced over its endpoints.
    Service(Arc<ServiceTarget>),
    /// A meshed pod addressed directly: it must present `identity`.
    Pod { identity: SpiffeId },
    /// Not in the mesh's directory: forwarded as it is.
    Passthrough,
}

/// One port of a service, with the endpoints behind it.
#[derive(Debug, Serialize)]
pub struct ServiceTarget {
    /// `namespace/name:port`, for logs.
    pub name: String,
    /// `name.namespace.svc.cluster.local:port`: the request authority in metrics.
    pub authority: String,
    pub protocol: &'static str,
    pub endpoints: Vec<EndpointTarget>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointTarget {
    pub addr: SocketAddr,
    /// `None`: the endpoint has no sidecar, and is reached in plaintext.
    #[serde(serialize_with = "crate::config::display_opt")]
    pub identity: Option<SpiffeId>,
    pub weight: u32,
    /// Its latency and health as the balancer sees them, kept across updates.
    #[serde(rename = "balancer", serialize_with = "load_view")]
    pub load: Arc<EndpointLoad>,
}

fn load_view<S: serde::Serializer>(load: &Arc<EndpointLoad>, s: S) -> Result<S::Ok, S::Error> {
    load.view().serialize(s)
}

impl ServiceTarget {
    /// The endpoint the balancer chooses, among those not in `tried`; `None` when
    /// there is none left.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<&EndpointTarget> {
        if tried.is_empty() {
            return balance::pick(&self.endpoints, |e| (&e.load, e.weight));
        }
        let left: Vec<&EndpointTarget> = self
            .endpoints
            .iter()
            .filter(|e| !tried.contains(&e.addr))
            .collect();
        balance::pick(&left, |e| (&e.load, e.weight)).copied()
    }

    /// Whether the service says this port is opaque TCP: never detected or parsed.
    pub fn is_opaque(&self) -> bool {
        self.protocol == "tcp"
    }
}

/// The pushed resources of every type, validated, with the version of each set.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    sets: BTreeMap<&'static str, (String, Arc<Vec<pb::Resource>>)>,
}

impl Resources {
    /// These resources with the set of `type_url` replaced, if the new set validates.
    pub fn with(
        &self,
        type_url: &'static str,
        version: String,
        set: Vec<pb::Resource>,
    ) -> Result<Resources, Invalid> {
        check(type_url, &set)?;
        let mut next = self.clone();
        next.replace(type_url, version, set);
        Ok(next)
    }

    /// Replaces the set of `type_url` with one that [`check`] accepted.
    pub fn replace(&mut self, type_url: &'static str, version: String, set: Vec<pb::Resource>) {
        self.sets.insert(type_url, (version, Arc::new(set)));
    }

    /// Whether a set of every type in `types` has arrived.
    pub fn has_all(&self, types: &[&str]) -> bool {
        types.iter().all(|t| self.sets.contains_key(t))
    }

    /// How many resources the set of `type_url` holds.
    pub fn count(&self, type_url: &str) -> usize {
        self.sets.get(type_url).map_or(0, |(_, set)| set.len())
    }

    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.sets.get(type_url).map(|(v, _)| v.as_str())
    }

    fn kinds(&self, type_url: &str) -> impl Iterator<Item = &Kind> {
        self.sets
            .get(type_url)
            .into_iter()
            .flat_map(|(_, set)| set.iter())
            .filter_map(|r| r.kind.as_ref())
    }
}

/// The lookup tables of one consistent set of resources.
#[derive(Debug, Default)]
pub struct Directory {
    resources: Resources,
    /// The balancer's view of every endpoint, shared with the next directory.
    loads: Arc<Registry>,
    services: HashMap<SocketAddr, Arc<ServiceTarget>>,
    pods: HashMap<IpAddr, SpiffeId>,
}

impl Directory {
    /// The tables of `resources`, with the endpoints' balancer state from `loads`
    /// (the previous directory's, so that an update does not forget latencies).
    pub fn build(resources: Resources, loads: Arc<Registry>) -> Directory {
        let endpoints: HashMap<(&str, &str), &pb::Endpoints> = resources
            .kinds(type_url::ENDPOINTS)
            .filter_map(|k| match k {
                Kind::Endpoints(e) => Some(((e.namespace.as_str(), e.name.as_str()), e)),
                _ => None,
            })
            .collect();

        let mut pods = HashMap::new();
        for endpoint in endpoints.values().flat_map(|e| &e.endpoints) {
            if let (Ok(ip), Some(identity)) = (endpoint.address.parse(), identity_of(endpoint)) {
                pods.insert(ip, identity);
            }
        }

        let mut services = HashMap::new();
        for kind in resources.kinds(type_url::SERVICE) {
            let Kind::Service(service) = kind else {
                continue;
            };
            let backing = endpoints.get(&(service.namespace.as_str(), service.name.as_str()));
            for port in &service.ports {
                let target = Arc::new(ServiceTarget {
                    name: format!("{}/{}:{}", service.namespace, service.name, port.port),
                    authority: format!(
                        "{}.{}.svc.cluster.local:{}",
                        service.name, service.namespace, port.port
                    ),
                    protocol: protocol_name(port.protocol),
                    endpoints: backing
                        .map(|e| endpoint_targets(e, port, &loads))
                        .unwrap_or_default(),
                });
                for ip in service.cluster_ips.iter().filter_map(|ip| ip.parse().ok()) {
                    let Ok(port_number) = u16::try_from(port.port) else {
                        continue;
                    };
                    services.insert(SocketAddr::new(ip, port_number), target.clone());
                }
            }
        }
        Directory {
            resources,
            loads,
            services,
            pods,
        }
    }

    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    pub fn loads(&self) -> &Arc<Registry> {
        &self.loads
    }

    pub fn resolve(&self, dst: OrigDstAddr) -> Destination {
        if let Some(service) = self.services.get(&dst.0) {
            return Destination::Service(service.clone());
        }
        match self.pods.get(&dst.0.ip()) {
            Some(identity) => Destination::Pod {
                identity: identity.clone(),
            },
            None => Destination::Passthrough,
        }
    }

    /// The effective view served on the admin port's `/config`.
    pub fn view(&self) -> DirectoryView<'_> {
        DirectoryView {
            versions: self
                .resources
                .sets
                .iter()
                .map(|(t, (v, set))| {
                    (
                        *t,
                        VersionView {
                            version: v,
                            resources: set.len(),
                        },
                    )
                })
                .collect(),
            services: self
                .services
                .iter()
                .map(|(addr, target)| (addr.to_string(), target.as_ref()))
                .collect(),
            pods: self
                .pods
                .iter()
                .map(|(ip, id)| (ip.to_string(), id.as_str()))
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct DirectoryView<'a> {
    versions: BTreeMap<&'static str, VersionView<'a>>,
    services: BTreeMap<String, &'a ServiceTarget>,
    pods: BTreeMap<String, &'a str>,
}

#[derive(Serialize)]
struct VersionView<'a> {
    version: &'a str,
    resources: usize,
}

/// The ready endpoints of `endpoints` at the port `port` targets.
fn endpoint_targets(
    endpoints: &pb::Endpoints,
    port: &pb::ServicePort,
    loads: &Registry,
) -> Vec<EndpointTarget> {
    endpoints
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .filter_map(|e| {
            let ip: IpAddr = e.address.parse().ok()?;
            let target_port = match &port.target {
                Some(Target::TargetPort(p)) => *p,
                Some(Target::TargetPortName(name)) => {
                    e.ports.iter().find(|p| &p.name == name)?.port
                }
                None => port.port,
            };
            let addr = SocketAddr::new(ip, u16::try_from(target_port).ok()?);
            Some(EndpointTarget {
                addr,
                identity: identity_of(e),
                weight: e.weight.max(1),
                load: loads.get(addr),
            })
        })
        .collect()
}

fn identity_of(endpoint: &pb::Endpoint) -> Option<SpiffeId> {
    if endpoint.identity.is_empty() {
        return None;
    }
    endpoint.identity.parse().ok()
}

fn protocol_name(protocol: i32) -> &'static str {
    match pb::Protocol::try_from(protocol) {
        Ok(pb::Protocol::Tcp) => "tcp",
        Ok(pb::Protocol::Http1) => "http1",
        Ok(pb::Protocol::Http2) => "http2",
        Ok(pb::Protocol::Grpc) => "grpc",
        Ok(pb::Protocol::Unspecified) | Err(_) => "detect",
    }
}

/// Whether every resource of a pushed set of `type_url` can be used: the first
/// problem found is the reason the set is refused.
pub fn check(type_url: &'static str, set: &[pb::Resource]) -> Result<(), Invalid> {
    set.iter()
        .try_for_each(|resource| validate(type_url, resource))
}

/// The checks a pushed resource must pass before the proxy uses it.
fn validate(type_url: &'static str, resource: &pb::Resource) -> Result<(), Invalid> {
    let invalid = |kind, name: &str, message: String| Invalid {
        kind,
        name: name.to_string(),
        message,
    };
    let kind = resource
        .kind
        .as_ref()
        .ok_or_else(|| invalid("resource", "?", "has no kind".into()))?;
    let expected = match kind {
        Kind::Service(_) => type_url::SERVICE,
        Kind::Endpoints(_) => type_url::ENDPOINTS,
        Kind::Route(_) => type_url::ROUTE,
        Kind::AuthorizationPolicy(_) => type_url::AUTHORIZATION_POLICY,
    };
    if expected != type_url {
        return Err(invalid(
            "resource",
            "?",
            format!("a {expected} in a {type_url} response"),
        ));
    }
    match kind {
        Kind::Service(s) => {
            let name = format!("{}/{}", s.namespace, s.name);
            for ip in &s.cluster_ips {
                ip.parse::<IpAddr>().map_err(|_| {
                    invalid(
                        "Service",
                        &name,
                        format!("cluster IP {ip:?} is not an IP address"),
                    )
                })?;
            }
            for port in &s.ports {
                if port.port == 0 || port.port > 65535 {
                    return Err(invalid(
                        "Service",
                        &name,
                        format!("port {} is out of range", port.port),
                    ));
                }
                if let Some(Target::TargetPort(p)) = port.target
                    && (p == 0 || p > 65535)
                {
                    return Err(invalid(
                        "Service",
                        &name,
                        format!("target port {p} is out of range"),
                    ));
                }
            }
        }
        Kind::Endpoints(e) => {
            let name = format!("{}/{}", e.namespace, e.name);
            for endpoint in &e.endpoints {
                endpoint.address.parse::<IpAddr>().map_err(|_| {
                    invalid(
                        "Endpoints",
                        &name,
                        format!("address {:?} is not an IP address", endpoint.address),
                    )
                })?;
                if !endpoint.identity.is_empty() {
                    endpoint.identity.parse::<SpiffeId>().map_err(|e| {
                        invalid(
                            "Endpoints",
                            &name,
                            format!("endpoint {}: {e}", endpoint.address),
                        )
                    })?;
                }
                if let Some(p) = endpoint
                    .ports
                    .iter()
                    .find(|p| p.port == 0 || p.port > 65535)
                {
                    return Err(invalid(
                        "Endpoints",
                        &name,
                        format!("port {} is out of range", p.port),
                    ));
                }
            }
        }
        // Carried now, enforced by the HTTP data plane: nothing here depends on them.
        Kind::Route(_) | Kind::AuthorizationPolicy(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
