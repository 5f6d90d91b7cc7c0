//! The cast of the mTLS-path stories: a "server" pod (ServiceAccount `shop/server`)
//! running an echo app, and a "client" pod (`storefront/web`), both with sidecars,
//! the server published to discovery and known to the client's sidecar.

use std::net::SocketAddrV4;

use crate::{EchoServer, Mesh, MeshPod};

pub struct TwoPods {
    // Declared in teardown order: the app, the pods, then the mesh they live on.
    pub echo: EchoServer,
    pub client: MeshPod,
    pub server: MeshPod,
    pub mesh: Mesh,
    /// The server pod's address and the app's port: where the client calls.
    pub target: SocketAddrV4,
}

impl TwoPods {
    /// A mesh whose controller gets `controller_args`, the two pods (the server's
    /// sidecar with `server_proxy_args`), and the echo app on `port`.
    pub fn start(
        controller_args: &[&str],
        server_proxy_args: &[&str],
        port: u16,
    ) -> anyhow::Result<TwoPods> {
        let mut mesh = Mesh::start_with(controller_args)?;
        let mut server = mesh.pod("server", "shop", "server")?;
        let mut client = mesh.pod("client", "storefront", "web")?;
        server.start_sidecar_with(server_proxy_args)?;
        client.start_sidecar()?;
        mesh.publish_pod(&server)?;
        client.wait_for_identity(server.ip, &server.identity)?;
        let echo = EchoServer::start_in(server.netns(), port)?;
        let target = SocketAddrV4::new(server.ip, port);
        Ok(TwoPods {
            echo,
            client,
            server,
            mesh,
            target,
        })
    }
}
