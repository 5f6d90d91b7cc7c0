//! The cast of the discovery stories: service `shop/echo` over two server pods, "a"
//! and "b", whose echo apps answer with their pod's name, and a "client" pod calling
//! it; and the YAML an operator writes for the service.

use std::net::Ipv4Addr;

use crate::{EchoServer, Mesh, MeshPod};

/// The port the echo apps listen on, which the service's port targets.
pub const ECHO_PORT: u16 = 7070;
/// The service's own port, on its virtual IP.
pub const SERVICE_PORT: u16 = 80;

/// Pods "a" and "b" (namespace `shop`, ServiceAccount `echo`) and "client".
pub struct EchoPods {
    // Declared in teardown order: the apps, then the pods.
    apps: Vec<EchoServer>,
    pub a: MeshPod,
    pub b: MeshPod,
    pub client: MeshPod,
}

impl EchoPods {
    /// Creates the three pods; [`start`](Self::start) starts their sidecars and apps.
    pub fn create(mesh: &mut Mesh) -> anyhow::Result<EchoPods> {
        Ok(EchoPods {
            apps: Vec::new(),
            a: mesh.pod("a", "shop", "echo")?,
            b: mesh.pod("b", "shop", "echo")?,
            client: mesh.pod("client", "shop", "client")?,
        })
    }

    /// Starts every sidecar (each ready: certificate and first config) and, on port
    /// [`ECHO_PORT`] of "a" and "b", an echo app answering as "a" and "b".
    pub fn start(&mut self) -> anyhow::Result<()> {
        for pod in [&mut self.a, &mut self.b, &mut self.client] {
            pod.start_sidecar()?;
        }
        self.apps
            .push(EchoServer::start_named_in(self.a.netns(), ECHO_PORT, "a")?);
        self.apps
            .push(EchoServer::start_named_in(self.b.netns(), ECHO_PORT, "b")?);
        Ok(())
    }
}

/// `echo.yaml`: Service `shop/echo` on `vip`, port [`SERVICE_PORT`] to `target_port`
/// (and `protocol`, if given), and its Endpoints: each of `pods` with its identity
/// and both echo ports, or an empty list, a service with no ready endpoint.
pub fn echo_service_yaml(
    vip: Ipv4Addr,
    target_port: u16,
    protocol: Option<&str>,
    pods: &[&MeshPod],
) -> String {
    let protocol = protocol.map_or(String::new(), |p| format!(", protocol: {p}"));
    let endpoints: String = pods
        .iter()
        .map(|pod| {
            format!(
                "\n  - {{address: {}, identity: \"{}\", pod: shop/{}, ports: [{{port: 7070}}, {{port: 7071}}]}}",
                pod.ip, pod.identity, pod.name
            )
        })
        .collect();
    let endpoints = if endpoints.is_empty() {
        " []".to_string()
    } else {
        endpoints
    };
    format!(
        "apiVersion: trellis.io/v1alpha1
kind: Service
metadata: {{name: echo, namespace: shop}}
spec:
  clusterIPs: [{vip}]
  ports:
  - {{port: {SERVICE_PORT}, targetPort: {target_port}{protocol}}}
---
apiVersion: trellis.io/v1alpha1
kind: Endpoints
metadata: {{name: echo, namespace: shop}}
spec:
  endpoints:{endpoints}
"
    )
}
