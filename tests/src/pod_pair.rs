//! The cast of the HTTP, gRPC and WebSocket stories: a "server" pod (ServiceAccount
//! `shop/server`) and a "client" pod (`storefront/web`), both with sidecars, the
//! server published to discovery and known to the client's sidecar. The story starts
//! whatever apps it needs in them; [`TwoPods`](crate::TwoPods) is this cast with a
//! TCP echo app.

use std::net::SocketAddrV4;

use crate::{CurlRun, Mesh, MeshPod, curl_in};

pub struct PodPair {
    // Declared in teardown order: the pods, then the mesh they live on.
    pub client: MeshPod,
    pub server: MeshPod,
    pub mesh: Mesh,
}

impl PodPair {
    /// The two pods, each sidecar started with `proxy_args`.
    pub fn start(proxy_args: &[&str]) -> anyhow::Result<PodPair> {
        PodPair::start_with(&[], proxy_args, proxy_args)
    }

    /// A mesh whose controller gets `controller_args`, and the two pods, their
    /// sidecars with `client_proxy_args` and `server_proxy_args`.
    pub fn start_with(
        controller_args: &[&str],
        client_proxy_args: &[&str],
        server_proxy_args: &[&str],
    ) -> anyhow::Result<PodPair> {
        let mut mesh = Mesh::start_with(controller_args)?;
        let mut server = mesh.pod("server", "shop", "server")?;
        let mut client = mesh.pod("client", "storefront", "web")?;
        server.start_sidecar_with(server_proxy_args)?;
        client.start_sidecar_with(client_proxy_args)?;
        mesh.publish_pod(&server)?;
        client.wait_for_identity(server.ip, &server.identity)?;
        Ok(PodPair {
            client,
            server,
            mesh,
        })
    }

    /// Port `port` of the server pod: where the client calls an app there.
    pub fn server_at(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.server.ip, port)
    }

    /// curl in the client pod downloads `bytes` over HTTP/1.1 from the server pod's
    /// [`HttpApp`](crate::HttpApp) on `port`, through both sidecars, and discards
    /// them: curl's run, whose transfer says how it went.
    pub fn download(&self, port: u16, bytes: u64) -> anyhow::Result<CurlRun> {
        let url = format!("http://{}/download/{bytes}", self.server_at(port));
        curl_in(
            self.client.netns(),
            &["--http1.1", "--output", "/dev/null", &url],
        )
    }

    /// [`download`](Self::download), which must arrive whole with a 200: curl checks
    /// the body against its Content-Length, so a short one is an error. A failure
    /// carries curl's stderr and both sidecars' logs.
    pub fn download_whole(&self, port: u16, bytes: u64) -> anyhow::Result<()> {
        let run = self.download(port, bytes)?;
        let transfer = run.transfer()?;
        anyhow::ensure!(
            transfer.status == 200 && transfer.error.is_none(),
            "curl: status {}, error {:?}: {}\nclient sidecar:\n{}\nserver sidecar:\n{}",
            transfer.status,
            transfer.error,
            run.stderr,
            self.client.proxy_log(),
            self.server.proxy_log()
        );
        Ok(())
    }
}
