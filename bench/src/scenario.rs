//! The scenarios: the same backend and the same load, with something different (or
//! nothing) between the client and the server. Starting one yields a [`Stand`]: the
//! URLs the load generator aims at, and the proxy processes whose CPU and memory are
//! the price of that scenario.

mod process;
mod reference;
mod topology;
mod trellis;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use process::{Daemon, process_tree};
pub use topology::{Place, Topology};
pub use trellis::missing_binaries as missing_trellis_binaries;
pub use trellis::{CONTROLLER, MeshReading, SchedulingReading};

use crate::Error;

/// The fixed ports of a scenario, away from the mesh's own (4140/4143/4191/8086) and
/// below Linux's ephemeral range (32768–60999): a port in that range can be taken by
/// one of the thousands of client connections a cell makes, and the next proxy to
/// bind it then fails with "address in use".
pub mod ports {
    /// The backend, on the server side.
    pub const BACKEND_HTTP: u16 = 27180;
    pub const BACKEND_GRPC: u16 = 27181;
    /// The same HTTP backend on a second port, which the Trellis client sidecar
    /// treats as opaque (`--opaque-ports`): every connection to it is a connection
    /// of its own between the hops, so `new_mtls_connection` pays a handshake each.
    pub const BACKEND_OPAQUE: u16 = 27182;
    /// Where a reference proxy in the sidecar's place listens, on the client side.
    pub const FRONT_HTTP: u16 = 27190;
    pub const FRONT_GRPC: u16 = 27191;
    /// The server-side HAProxy of the TLS pair.
    pub const TLS_HTTP: u16 = 27192;
    pub const TLS_GRPC: u16 = 27193;
    /// A reference proxy's way to [`BACKEND_OPAQUE`]: its front on the client side,
    /// and the TLS pair's server side.
    pub const FRONT_OPAQUE: u16 = 27194;
    pub const TLS_OPAQUE: u16 = 27195;
}

/// What sits between the load generator and the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Nothing: client → server.
    Baseline,
    /// client → its Trellis sidecar → server.
    TrellisOneHop,
    /// client → client sidecar → mTLS → server sidecar → server.
    TrellisTwoHops,
    HaproxyOneHop,
    /// client → HAProxy → mutual TLS → HAProxy → server.
    HaproxyTwoHops,
    NginxOneHop,
}

impl ScenarioKind {
    pub const ALL: [ScenarioKind; 6] = [
        ScenarioKind::Baseline,
        ScenarioKind::TrellisOneHop,
        ScenarioKind::TrellisTwoHops,
        ScenarioKind::HaproxyOneHop,
        ScenarioKind::HaproxyTwoHops,
        ScenarioKind::NginxOneHop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Baseline => "baseline",
            ScenarioKind::TrellisOneHop => "trellis-1hop",
            ScenarioKind::TrellisTwoHops => "trellis-2hop-mtls",
            ScenarioKind::HaproxyOneHop => "haproxy-1hop",
            ScenarioKind::HaproxyTwoHops => "haproxy-2hop-tls",
            ScenarioKind::NginxOneHop => "nginx-1hop",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        ScenarioKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    /// Proxies a request passes through.
    pub fn hops(self) -> u32 {
        match self {
            ScenarioKind::Baseline => 0,
            ScenarioKind::TrellisOneHop
            | ScenarioKind::HaproxyOneHop
            | ScenarioKind::NginxOneHop => 1,
            ScenarioKind::TrellisTwoHops | ScenarioKind::HaproxyTwoHops => 2,
        }
    }

    pub fn is_trellis(self) -> bool {
        matches!(
            self,
            ScenarioKind::TrellisOneHop | ScenarioKind::TrellisTwoHops
        )
    }

    /// The Debian package this scenario needs, if any.
    pub fn package(self) -> Option<&'static str> {
        match self {
            ScenarioKind::HaproxyOneHop | ScenarioKind::HaproxyTwoHops => Some("haproxy"),
            ScenarioKind::NginxOneHop => Some("nginx"),
            _ => None,
        }
    }
}

/// Where the harness finds the programs it starts, and how it starts Trellis's.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `trellis-bench` itself: the backend and the load generator.
    pub bench: PathBuf,
    /// The directory with `trellis-proxy`, `trellis-proxy-init`, `trellis-controller`.
    pub trellis_dir: PathBuf,
    /// `--workers` for the Trellis sidecars; `None` keeps the proxy's default (one
    /// per CPU).
    pub trellis_workers: Option<u16>,
    /// `--scheduling` for the Trellis sidecars; `None` keeps the proxy's default.
    pub trellis_scheduling: Option<String>,
    /// `--local-congestion-control` for trellis-proxy-init in the Trellis pods; `None`
    /// keeps its default.
    pub trellis_local_congestion_control: Option<String>,
}

/// A started scenario. Dropping it stops every process it started.
pub struct Stand {
    pub kind: ScenarioKind,
    pub http_url: String,
    pub grpc_url: String,
    /// The way to [`ports::BACKEND_OPAQUE`]: where each new connection is a new
    /// connection between the hops (mTLS between two sidecars).
    pub opaque_url: String,
    /// The proxies to measure, in path order; each is measured with its children.
    pub proxies: Vec<(String, u32)>,
    // Field order is drop order: proxies go before the backend, and the mesh (with the
    // controller) before the pods they run in.
    daemons: Vec<Daemon>,
    backend: Daemon,
    mesh: Option<trellis::Mesh>,
}

impl Stand {
    /// Fails with a log tail if any of the scenario's processes has died.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        self.backend.check_alive()?;
        for daemon in &mut self.daemons {
            daemon.check_alive()?;
        }
        match &mut self.mesh {
            Some(mesh) => mesh.check_alive(),
            None => Ok(()),
        }
    }

    /// One reading of the Trellis sidecars' metrics: the client's mesh handshakes
    /// and each one's scheduling (empty outside the Trellis scenarios).
    pub fn mesh_reading(&self) -> MeshReading {
        self.mesh
            .as_ref()
            .map_or_else(MeshReading::default, trellis::Mesh::read)
    }
}

/// Starts `kind` on `topology`: the backend, then what goes in front of it.
pub fn start(
    kind: ScenarioKind,
    topology: &Topology,
    programs: &Programs,
    dir: &Path,
) -> Result<Stand, Error> {
    let backend = start_backend(topology, programs, dir)?;
    let server = topology.server_ip();
    let direct = [
        ports::BACKEND_HTTP,
        ports::BACKEND_GRPC,
        ports::BACKEND_OPAQUE,
    ]
    .map(|port| format!("http://{server}:{port}/"));
    let front = [ports::FRONT_HTTP, ports::FRONT_GRPC, ports::FRONT_OPAQUE]
        .map(|port| format!("http://{}:{port}/", Ipv4Addr::LOCALHOST));
    let (daemons, mesh, [http_url, grpc_url, opaque_url]) = match kind {
        ScenarioKind::Baseline => (Vec::new(), None, direct),
        ScenarioKind::HaproxyOneHop => (reference::haproxy_one_hop(topology, dir)?, None, front),
        ScenarioKind::HaproxyTwoHops => (reference::haproxy_two_hops(topology, dir)?, None, front),
        ScenarioKind::NginxOneHop => (reference::nginx_one_hop(topology, dir)?, None, front),
        ScenarioKind::TrellisOneHop | ScenarioKind::TrellisTwoHops => {
            let mesh = trellis::Mesh::start(topology, programs, dir, kind.hops() == 2)?;
            (Vec::new(), Some(mesh), direct)
        }
    };
    let mut proxies: Vec<(String, u32)> = daemons
        .iter()
        .map(|daemon| (daemon.name.clone(), daemon.pid()))
        .collect();
    if let Some(mesh) = &mesh {
        proxies.extend(mesh.proxies());
    }
    Ok(Stand {
        kind,
        http_url,
        grpc_url,
        opaque_url,
        proxies,
        daemons,
        backend,
        mesh,
    })
}

fn start_backend(topology: &Topology, programs: &Programs, dir: &Path) -> Result<Daemon, Error> {
    let bind = topology.server_bind_ip();
    let mut command = topology.command(Place::Server, &programs.bench);
    command
        .arg("serve")
        .arg("--http")
        .arg(format!("{bind}:{}", ports::BACKEND_HTTP))
        .arg("--http")
        .arg(format!("{bind}:{}", ports::BACKEND_OPAQUE))
        .arg("--grpc")
        .arg(format!("{bind}:{}", ports::BACKEND_GRPC));
    let backend = Daemon::start("backend", command, dir)?;
    let server = topology.server_ip();
    for port in [
        ports::BACKEND_HTTP,
        ports::BACKEND_GRPC,
        ports::BACKEND_OPAQUE,
    ] {
        topology.wait_listening(Place::Client, (server, port).into(), "the backend")?;
    }
    Ok(backend)
}

/// The first executable `program` on PATH or in the sbin directories, where Debian
/// puts `haproxy` and `nginx` (and which a non-root PATH may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
