//! The YAML spelling of the four kinds, and its translation into model objects.
//!
//! Each `spec` mirrors its discovery message in camelCase, as Kubernetes spells its
//! own objects (`clusterIPs`, `targetPort`), with `deny_unknown_fields` everywhere so
//! that a misspelt field is an error rather than a silently missing setting. Defaults
//! are filled in here, so proxies always receive complete objects: a missing
//! `targetPort` is the port itself, an endpoint is ready with weight 1.
//!
//! `Route` and `AuthorizationPolicy` specs are the custom resources' own types
//! (`crate::crd`), shared with the Kubernetes source, translated there once.
//!
//! Translation reports what the types cannot ([`Invalid`], with the field's path);
//! everything else is checked by the model's own validation, for every source alike.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::service_port;

use crate::crd;
pub use crate::crd::{AuthorizationPolicySpec, RouteSpec};
use crate::error::Invalid;
use crate::model::Object;

/// The only `apiVersion` this format has.
pub const API_VERSION: &str = "trellis.io/v1alpha1";

/// One document with the spec type of its kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    #[allow(
        dead_code,
        reason = "checked before this typed pass, kept for deny_unknown_fields"
    )]
    api_version: String,
    #[allow(
        dead_code,
        reason = "checked before this typed pass, kept for deny_unknown_fields"
    )]
    kind: String,
    metadata: Metadata,
    spec: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    /// Accepted so that Kubernetes-shaped documents need no trimming; not used.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted, not used")]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code, reason = "accepted, not used")]
    annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "clusterIPs", default)]
    cluster_ips: Vec<String>,
    #[serde(default)]
    ports: Vec<ServicePortSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServicePortSpec {
    #[serde(default)]
    name: String,
    port: u32,
    target_port: Option<TargetPort>,
    /// Omitted: the proxy detects the protocol from the first bytes.
    protocol: Option<Protocol>,
}

/// `targetPort: 8080` or `targetPort: http`, as Kubernetes' IntOrString.
#[derive(Debug)]
enum TargetPort {
    Number(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expect;
        impl Visitor<'_> for Expect {
            type Value = TargetPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or the name of an endpoint port")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<TargetPort, E> {
                u32::try_from(n)
                    .map(TargetPort::Number)
                    .map_err(|_| E::custom(format!("{n} is not a port (1-65535)")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<TargetPort, E> {
                Err(E::custom(format!("{n} is not a port (1-65535)")))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<TargetPort, E> {
                Ok(TargetPort::Name(name.to_string()))
            }
        }
        deserializer.deserialize_any(Expect)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum Protocol {
    Tcp,
    Http1,
    Http2,
    Grpc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSpec {
    #[serde(default)]
    endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    address: String,
    #[serde(default)]
    ports: Vec<EndpointPortSpec>,
    /// Omitted: not meshed, reached in plaintext.
    #[serde(default)]
    identity: String,
    #[serde(default = "yes")]
    ready: bool,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    pod: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointPortSpec {
    #[serde(default)]
    name: String,
    port: u32,
}

impl Document<ServiceSpec> {
    pub fn into_object(self) -> Result<Object, Invalid> {
        let ports = self
            .spec
            .ports
            .into_iter()
            .map(|port| pb::ServicePort {
                target: Some(match port.target_port {
                    Some(TargetPort::Number(number)) => service_port::Target::TargetPort(number),
                    Some(TargetPort::Name(name)) => service_port::Target::TargetPortName(name),
                    None => service_port::Target::TargetPort(port.port),
                }),
                protocol: port
                    .protocol
                    .map_or(pb::Protocol::Unspecified, |p| match p {
                        Protocol::Tcp => pb::Protocol::Tcp,
                        Protocol::Http1 => pb::Protocol::Http1,
                        Protocol::Http2 => pb::Protocol::Http2,
                        Protocol::Grpc => pb::Protocol::Grpc,
                    }) as i32,
                name: port.name,
                port: port.port,
            })
            .collect();
        Ok(Object::Service(pb::Service {
            name: self.metadata.name,
            namespace: self.metadata.namespace,
            cluster_ips: self.spec.cluster_ips,
            ports,
        }))
    }
}

impl Document<EndpointsSpec> {
    pub fn into_object(self) -> Result<Object, Invalid> {
        let endpoints = self
            .spec
            .endpoints
            .into_iter()
            .map(|endpoint| pb::Endpoint {
                address: endpoint.address,
                ports: endpoint
                    .ports
                    .into_iter()
                    .map(|port| pb::EndpointPort {
                        name: port.name,
                        port: port.port,
                    })
                    .collect(),
                identity: endpoint.identity,
                weight: endpoint.weight,
                zone: endpoint.zone,
                ready: endpoint.ready,
                pod: endpoint.pod,
            })
            .collect();
        Ok(Object::Endpoints(pb::Endpoints {
            name: self.metadata.name,
            namespace: self.metadata.namespace,
            endpoints,
        }))
    }
}

impl Document<RouteSpec> {
    pub fn into_object(self) -> Result<Object, Invalid> {
        crd::route(self.metadata.namespace, self.metadata.name, self.spec)
    }
}

impl Document<AuthorizationPolicySpec> {
    pub fn into_object(self) -> Result<Object, Invalid> {
        Ok(crd::authorization_policy(
            self.metadata.namespace,
            self.metadata.name,
            self.spec,
        ))
    }
}
