//! A pod: a network namespace joined to a bridge by a veth pair.
//!
//! Inside, the pod sees `lo` and `eth0` with its address and a default route via the
//! bridge, as a Kubernetes pod would; outside, the host sees one veth on the bridge.

use std::path::Path;

use crate::ifname::check_netns_name;
use crate::ip::{self, link_exists};
use crate::{Bridge, Error, IfName, Ipv4Cidr};

/// Where `ip netns add` bind-mounts named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The pod's side of the veth pair, named as in a Kubernetes pod.
const POD_LINK: &str = "eth0";

/// A pod's network namespace, its address, and the host end of its veth pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    netns: String,
    /// Set on `eth0` inside the pod; the prefix is the bridge's subnet.
    ip: Ipv4Cidr,
    /// The host end, enslaved to the bridge. Deleting it deletes `eth0` too.
    host_veth: IfName,
}

impl Pod {
    /// Names a pod without touching the host, for a process that did not create it.
    pub fn new(netns: &str, ip: Ipv4Cidr, host_veth: &str) -> Result<Self, Error> {
        check_netns_name(netns)?;
        Ok(Pod {
            netns: netns.to_string(),
            ip,
            host_veth: IfName::new(host_veth)?,
        })
    }

    /// Creates namespace `netns` with `eth0` at `ip` (e.g. `10.199.0.2/24`), `lo` up and a
    /// default route via the bridge; the host end `host_veth` joins `bridge`. On failure
    /// whatever was made is removed again.
    pub fn create(
        netns: &str,
        bridge: &Bridge,
        ip: Ipv4Cidr,
        host_veth: &str,
    ) -> Result<Self, Error> {
        let pod = Pod::new(netns, ip, host_veth)?;
        if let Err(error) = pod.build(bridge) {
            // The build error is the one worth reporting; a cleanup failure would only
            // hide it, and `delete` is safe to run again later.
            let _ = pod.delete();
            return Err(error);
        }
        Ok(pod)
    }

    fn build(&self, bridge: &Bridge) -> Result<(), Error> {
        let (netns, veth) = (self.netns.as_str(), self.host_veth.as_str());
        ip::ip(["netns", "add", netns])?;
        // The peer is born inside the namespace, already called eth0: no temporary
        // name in the host namespace that could collide with another pod's.
        ip::ip([
            "link", "add", veth, "type", "veth", "peer", "name", POD_LINK, "netns", netns,
        ])?;
        ip::ip(["link", "set", veth, "master", bridge.name().as_str(), "up"])?;
        let pod_ip = self.ip.to_string();
        let gateway = bridge.gateway().addr().to_string();
        ip::ip(["-n", netns, "link", "set", "lo", "up"])?;
        ip::ip(["-n", netns, "addr", "add", &pod_ip, "dev", POD_LINK])?;
        ip::ip(["-n", netns, "link", "set", POD_LINK, "up"])?;
        ip::ip(["-n", netns, "route", "add", "default", "via", &gateway])?;
        Ok(())
    }

    /// Removes the veth pair and the namespace. Whatever is already gone is skipped.
    ///
    /// Processes still inside the namespace keep it alive (without its name) until
    /// they exit: stop them first, see [`netns_pids`].
    pub fn delete(&self) -> Result<(), Error> {
        delete_link(self.host_veth.as_str())?;
        delete_netns(&self.netns)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn ip(&self) -> Ipv4Cidr {
        self.ip
    }

    pub fn host_veth(&self) -> &IfName {
        &self.host_veth
    }
}

/// Deletes link `name` from the host namespace (both ends, for a veth), if it exists.
pub fn delete_link(name: &str) -> Result<(), Error> {
    let name = IfName::new(name)?;
    if link_exists(name.as_str())? {
        ip::ip(["link", "del", name.as_str()])?;
    }
    Ok(())
}

/// Deletes the named network namespace, if it exists.
pub fn delete_netns(netns: &str) -> Result<(), Error> {
    if netns_exists(netns) {
        ip::ip(["netns", "del", netns])?;
    }
    Ok(())
}

/// Whether a named network namespace exists (`ip netns list` would show it).
pub fn netns_exists(netns: &str) -> bool {
    check_netns_name(netns).is_ok() && Path::new(NETNS_DIR).join(netns).exists()
}

/// The names of all named network namespaces on the host.
pub fn netns_list() -> Result<Vec<String>, Error> {
    let listing = ip::ip(["netns", "list"])?;
    // Lines look like `name (id: 3)` or just `name`.
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The processes whose network namespace is `netns`.
pub fn netns_pids(netns: &str) -> Result<Vec<i32>, Error> {
    if !netns_exists(netns) {
        return Ok(Vec::new());
    }
    let listing = ip::ip(["netns", "pids", netns])?;
    Ok(listing
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// The names of all links in the caller's (host) network namespace.
pub fn links() -> Result<Vec<String>, Error> {
    let listing = ip::ip(["-o", "link", "show"])?;
    // Lines look like `7: trellis0v2@if2: <BROADCAST,...> ...`.
    Ok(listing
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect())
}
