//! The cast of the mTLS-path stories: the client and server pods of [`PodPair`], with
//! an echo app on the server.

use std::net::SocketAddrV4;

use crate::{EchoServer, Mesh, MeshPod, PodPair};

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
        let pods = PodPair::start_with(controller_args, &[], server_proxy_args)?;
        let target = pods.server_at(port);
        let echo = EchoServer::start_in(pods.server.netns(), port)?;
        let PodPair {
            client,
            server,
            mesh,
        } = pods;
        Ok(TwoPods {
            echo,
            client,
            server,
            mesh,
            target,
        })
    }
}
