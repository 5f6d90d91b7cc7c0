//! Where a scenario's processes run: the client side (the load generator and whatever
//! sits next to it: a sidecar, or a reference proxy in the sidecar's place) and the
//! server side (the backend, and the server's sidecar).
//!
//! Every scenario of one run uses the same topology, so that the baseline and each
//! proxy cross the same links. As root, that is two pods (network namespaces on a
//! bridge, as `meshctl local` makes them), re-created for each scenario so that no
//! redirect rules leak from one to the next; without root, everything shares the
//! host's loopback and the Trellis scenarios, which need pods, are skipped.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use trellis_netns::{Bridge, Ipv4Cidr, Pod, exec_in, exec_in_as, run_in};

use crate::Error;
use crate::resources;

/// The bridge of the benchmark's pods: a subnet of its own, away from `meshctl local`.
const BRIDGE: &str = "tbench0";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 250, 7, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 7, 2);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 7, 3);
const CLIENT_NETNS: &str = "tbench-client";
const SERVER_NETNS: &str = "tbench-server";

/// Which side of the path a process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Client,
    Server,
}

/// The two pods of one scenario; deleted when dropped.
#[derive(Debug)]
pub struct Pods {
    pub bridge: Bridge,
    pub client: Pod,
    pub server: Pod,
}

impl Drop for Pods {
    fn drop(&mut self) {
        // Best effort: the processes inside were stopped first, and a leftover is
        // swept by the next run's `create`.
        let _ = self.client.delete();
        let _ = self.server.delete();
    }
}

/// Where this run's scenarios place their processes.
#[derive(Debug)]
pub enum Topology {
    /// Everything on 127.0.0.1 in the host's namespace.
    Loopback,
    /// A client pod and a server pod on a bridge.
    Pods(Pods),
}

impl Topology {
    /// Fresh client and server pods on the benchmark bridge (made if absent), with
    /// `congestion_control` as their TCP congestion control when given (otherwise
    /// they keep the one a new network namespace inherits from the host).
    pub fn pods(congestion_control: Option<&str>) -> Result<Self, Error> {
        let netns = |e: trellis_netns::Error| Error::Netns(e.to_string());
        let gateway =
            Ipv4Cidr::new(GATEWAY, 24).ok_or_else(|| Error::Netns("bad gateway".into()))?;
        let bridge = Bridge::create(BRIDGE, gateway).map_err(netns)?;
        let mut pods = Vec::new();
        for (name, ip, veth) in [
            (CLIENT_NETNS, CLIENT_IP, "tbench0v2"),
            (SERVER_NETNS, SERVER_IP, "tbench0v3"),
        ] {
            let cidr = Ipv4Cidr::new(ip, 24).ok_or_else(|| Error::Netns("bad pod ip".into()))?;
            // A previous run that was killed may have left the pod behind.
            let _ = Pod::new(name, cidr, veth).map(|pod| pod.delete());
            pods.push(Pod::create(name, &bridge, cidr, veth).map_err(netns)?);
            tune_for_connection_churn(name)?;
            if let Some(algorithm) = congestion_control {
                set_in(name, resources::CONGESTION_CONTROL, algorithm)?;
            }
        }
        let server = pods
            .pop()
            .ok_or_else(|| Error::Netns("no server pod".into()))?;
        let client = pods
            .pop()
            .ok_or_else(|| Error::Netns("no client pod".into()))?;
        Ok(Topology::Pods(Pods {
            bridge,
            client,
            server,
        }))
    }

    /// Removes the benchmark bridge (after the last scenario).
    pub fn remove_bridge() {
        if let Some(gateway) = Ipv4Cidr::new(GATEWAY, 24) {
            let _ = Bridge::new(BRIDGE, gateway).map(|bridge| bridge.delete());
        }
    }

    /// The TCP congestion control the measured connections use, read back from
    /// both pods (`client A, server B` should they differ), or the host's on
    /// loopback.
    pub fn congestion_control(&self) -> Result<String, Error> {
        let Topology::Pods(pods) = self else {
            return resources::congestion_control();
        };
        let read = |pod: &Pod| {
            run_in(pod.netns(), resources::congestion_control)
                .map_err(|e| Error::Netns(e.to_string()))?
        };
        let (client, server) = (read(&pods.client)?, read(&pods.server)?);
        Ok(if client == server {
            client
        } else {
            format!("client {client}, server {server}")
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Topology::Loopback => "loopback (one network namespace)",
            Topology::Pods(_) => "pods (client and server network namespaces on a bridge)",
        }
    }

    /// A command that runs `program` at `place`, as root.
    pub fn command(&self, place: Place, program: impl AsRef<OsStr>) -> Command {
        match self.netns(place) {
            Some(netns) => exec_in(netns, program),
            None => Command::new(program),
        }
    }

    /// A command that runs `program` at `place` as `uid` (the proxy's own user, which
    /// the redirect rules exempt). Pods only: on loopback there are no such rules.
    pub fn command_as(&self, place: Place, uid: u32, program: impl AsRef<OsStr>) -> Command {
        match self.netns(place) {
            Some(netns) => exec_in_as(netns, uid, uid, program),
            None => Command::new(program),
        }
    }

    pub fn netns(&self, place: Place) -> Option<&str> {
        match (self, place) {
            (Topology::Loopback, _) => None,
            (Topology::Pods(pods), Place::Client) => Some(pods.client.netns()),
            (Topology::Pods(pods), Place::Server) => Some(pods.server.netns()),
        }
    }

    /// The address the server side is reached at from the client side.
    pub fn server_ip(&self) -> Ipv4Addr {
        match self {
            Topology::Loopback => Ipv4Addr::LOCALHOST,
            Topology::Pods(_) => SERVER_IP,
        }
    }

    /// The address the server side's processes listen on.
    pub fn server_bind_ip(&self) -> Ipv4Addr {
        match self {
            Topology::Loopback => Ipv4Addr::LOCALHOST,
            Topology::Pods(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The client pod's own address (loopback without pods).
    pub fn client_ip(&self) -> Ipv4Addr {
        match self {
            Topology::Loopback => Ipv4Addr::LOCALHOST,
            Topology::Pods(_) => CLIENT_IP,
        }
    }

    /// The host's address on the bridge, where host services (the controller) listen.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        matches!(self, Topology::Pods(_)).then_some(GATEWAY)
    }

    /// Waits until something accepts connections at `addr` as seen from `place`.
    pub fn wait_listening(&self, place: Place, addr: SocketAddr, what: &str) -> Result<(), Error> {
        let limit = Duration::from_secs(10);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.connects(place, addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::NotReady {
            what: what.to_string(),
            seconds: limit.as_secs(),
            hint: format!("nothing accepted connections at {addr}"),
        })
    }

    fn connects(&self, place: Place, addr: SocketAddr) -> bool {
        let attempt = move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        match self.netns(place) {
            Some(netns) => run_in(netns, attempt).unwrap_or(false),
            None => attempt(),
        }
    }
}

/// A new connection per request at thousands per second leaves tens of thousands of
/// sockets in TIME_WAIT in the client pod (the load generator's, and a sidecar's to
/// the backend), and the default ephemeral range (32768–60999) runs out within a few
/// cells: connects then fail or wait for seconds, in every scenario, baseline
/// included. The pod gets the whole port range, as load-testing hosts are set up.
/// `tcp_tw_reuse` is left off on purpose: a sidecar reusing a port whose TIME_WAIT
/// conntrack entry still carries the app's redirect would connect to itself.
fn tune_for_connection_churn(netns: &str) -> Result<(), Error> {
    set_in(
        netns,
        "/proc/sys/net/ipv4/ip_local_port_range",
        "1024 65535",
    )
}

/// Writes `value` to the sysctl file `path` inside pod `netns`.
fn set_in(netns: &str, path: &'static str, value: &str) -> Result<(), Error> {
    let owned = value.to_string();
    let written = run_in(netns, move || {
        std::fs::write(path, &owned).map_err(|e| format!("{path}: {e}"))
    })
    .map_err(|e| Error::Netns(e.to_string()))?;
    written.map_err(|e| Error::Netns(format!("tuning pod {netns}: {e}")))
}
