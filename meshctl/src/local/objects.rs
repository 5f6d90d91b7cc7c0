//! The YAML objects that describe the local mesh to discovery, in the file source's
//! format (README, "The file source"): what `STATE/config/` holds.
//!
//! - `pod-NAME.yaml`: an `Endpoints` named `pod.NAME` holding the pod alone, named as
//!   the Kubernetes source names a pod's own Endpoints. No Service uses it: it is there
//!   because a proxy maps every endpoint's address to its identity, so a connection to
//!   the pod's own IP is mTLS to that identity whether or not the pod serves a service.
//!   A Service's name never holds a dot, so no service's Endpoints can take the name
//!   (`run web --service web` defines `web` and `pod.web`).
//! - `service-NS-SVC.yaml`: the `Service` (its virtual IP, one port per `--port` of
//!   its pods, the protocol left to detection) and its `Endpoints`: every pod of the
//!   service, ready once its app listens, as Kubernetes' endpoints follow readiness.
//!
//! Rendering is pure; `publish.rs` decides when to write what.

use std::collections::BTreeSet;

use serde::Serialize;
use trellis_control_plane::model::pod_endpoints_name;
use trellis_control_plane::source::files::API_VERSION;

use crate::Error;
use crate::state::{Phase, PodRecord, ServiceRecord};

/// The file of pod `name`'s own Endpoints, in the config directory. The file source
/// does not care what a file is called (the object in it is `pod.NAME`); `pod-` keeps
/// it apart from the `service-` files.
pub fn pod_file_name(name: &str) -> String {
    format!("pod-{name}.yaml")
}

/// The file of a service, in the config directory. Namespaces and names may hold '-'
/// too, so two services can map to one file: `publish.rs` refuses the second.
pub fn service_file_name(namespace: &str, name: &str) -> String {
    format!("service-{namespace}-{name}.yaml")
}

/// The pods of service `name` in `namespace`: those that name it and are not
/// stopping.
pub fn members_of<'a>(pods: &'a [PodRecord], namespace: &str, name: &str) -> Vec<&'a PodRecord> {
    pods.iter()
        .filter(|p| p.namespace == namespace && p.service.as_deref() == Some(name))
        .filter(|p| p.phase != Phase::Stopping)
        .collect()
}

/// The ports of a service: every port of its pods, in order.
pub fn service_ports(members: &[&PodRecord]) -> BTreeSet<u16> {
    members
        .iter()
        .flat_map(|p| p.ports.iter().copied())
        .collect()
}

/// `pod-NAME.yaml`: the pod as the one endpoint of an Endpoints of its own,
/// `pod.NAME`.
pub fn pod_objects(pod: &PodRecord) -> Result<String, Error> {
    let endpoints = Document::new(
        "Endpoints",
        pod_endpoints_name(&pod.name),
        &pod.namespace,
        EndpointsSpec {
            endpoints: vec![endpoint(pod)],
        },
    );
    Ok(format!(
        "# Pod {} in {}: its address and identity, for calls to the pod itself.\n# Written by meshctl local; removed with the pod.\n{}",
        pod.name,
        pod.namespace,
        to_yaml(&endpoints)?
    ))
}

/// `service-NS-SVC.yaml`: the Service and the Endpoints of its `members`, which are
/// the pods that name it (in its namespace) and are not stopping.
pub fn service_objects(service: &ServiceRecord, members: &[&PodRecord]) -> Result<String, Error> {
    let spec = ServiceSpec {
        cluster_ips: vec![service.vip.to_string()],
        // No targetPort: the port itself. No protocol: the proxy detects it.
        ports: service_ports(members)
            .into_iter()
            .map(|port| PortSpec {
                name: port_name(port),
                port,
            })
            .collect(),
    };
    let endpoints = EndpointsSpec {
        endpoints: members.iter().map(|pod| endpoint(pod)).collect(),
    };
    let pods: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "# Service {} in {} at {}, with pods: {}.\n# Written by meshctl local whenever one of its pods comes, becomes ready or goes.\n{}---\n{}",
        service.name,
        service.namespace,
        service.vip,
        pods.join(", "),
        to_yaml(&Document::new(
            "Service",
            service.name.clone(),
            &service.namespace,
            spec
        ))?,
        to_yaml(&Document::new(
            "Endpoints",
            service.name.clone(),
            &service.namespace,
            endpoints
        ))?,
    ))
}

fn endpoint(pod: &PodRecord) -> EndpointSpec {
    EndpointSpec {
        address: pod.ip.to_string(),
        identity: pod.identity.clone(),
        ports: pod
            .ports
            .iter()
            .map(|&port| PortSpec {
                name: port_name(port),
                port,
            })
            .collect(),
        ready: pod.phase == Phase::Ready,
        pod: format!("{}/{}", pod.namespace, pod.name),
    }
}

/// A service with several ports must name each; the number says all there is to say.
fn port_name(port: u16) -> String {
    format!("port-{port}")
}

fn to_yaml(value: &impl Serialize) -> Result<String, Error> {
    serde_yaml_ng::to_string(value).map_err(|e| Error::Render(e.to_string()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: S,
}

impl<S> Document<S> {
    fn new(kind: &'static str, name: String, namespace: &str, spec: S) -> Self {
        Document {
            api_version: API_VERSION,
            kind,
            metadata: Metadata {
                name,
                namespace: namespace.to_string(),
            },
            spec,
        }
    }
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    namespace: String,
}

#[derive(Serialize)]
struct ServiceSpec {
    #[serde(rename = "clusterIPs")]
    cluster_ips: Vec<String>,
    ports: Vec<PortSpec>,
}

#[derive(Serialize)]
struct PortSpec {
    name: String,
    port: u16,
}

#[derive(Serialize)]
struct EndpointsSpec {
    endpoints: Vec<EndpointSpec>,
}

#[derive(Serialize)]
struct EndpointSpec {
    address: String,
    identity: String,
    ports: Vec<PortSpec>,
    ready: bool,
    pod: String,
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;

    use super::*;

    fn pod(name: &str, last: u8, ports: &[u16], phase: Phase) -> PodRecord {
        PodRecord {
            name: name.into(),
            namespace: "shop".into(),
            service_account: "web".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
            ip: [10, 199, 0, last].into(),
            netns: format!("trellis0-{name}"),
            host_veth: format!("trellis0v{last}"),
            ports: ports.to_vec(),
            command: vec![],
            service: Some("web".into()),
            phase,
        }
    }

    #[test]
    fn a_pod_is_published_as_an_endpoints_of_its_own() {
        let text = pod_objects(&pod("web-1", 2, &[8080], Phase::Ready)).unwrap();
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            body,
            "apiVersion: trellis.io/v1alpha1
kind: Endpoints
metadata:
  name: pod.web-1
  namespace: shop
spec:
  endpoints:
  - address: 10.199.0.2
    identity: spiffe://cluster.local/ns/shop/sa/web
    ports:
    - name: port-8080
      port: 8080
    ready: true
    pod: shop/web-1
"
        );
    }

    #[test]
    fn a_service_has_every_port_of_its_pods_and_only_ready_pods_take_traffic() {
        let service = ServiceRecord {
            namespace: "shop".into(),
            name: "web".into(),
            vip: [10, 199, 0, 254].into(),
        };
        let ready = pod("web-1", 2, &[8080], Phase::Ready);
        let starting = pod("web-2", 3, &[8080, 9090], Phase::Starting);
        let text = service_objects(&service, &[&ready, &starting]).unwrap();
        let documents: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(documents.len(), 2, "{text}");
        let service_doc = &documents[0];
        assert_eq!(service_doc["kind"], "Service");
        assert_eq!(service_doc["spec"]["clusterIPs"][0], "10.199.0.254");
        let ports: Vec<u64> = service_doc["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [8080, 9090]);
        assert!(
            service_doc["spec"]["ports"][0].get("protocol").is_none(),
            "detect"
        );
        let endpoints = &documents[1];
        assert_eq!(endpoints["kind"], "Endpoints");
        assert_eq!(endpoints["metadata"]["name"], "web");
        assert_eq!(endpoints["spec"]["endpoints"][0]["ready"], true);
        assert_eq!(endpoints["spec"]["endpoints"][1]["ready"], false);
        assert_eq!(endpoints["spec"]["endpoints"][1]["pod"], "shop/web-2");
    }
}
