//! The bridge that pods hang off, and the gateway address the host listens on.
//!
//! # Bridged traffic and the host firewall
//!
//! Pods on one bridge are L2 neighbours: a frame from one pod's veth to another's is
//! switched by the bridge and never routed, so `ip_forward` plays no part. It is not
//! filtered either, *unless* `br_netfilter` is loaded and
//! `/proc/sys/net/bridge/bridge-nf-call-iptables` is 1: then every bridged IPv4 frame
//! also walks the host's iptables `FORWARD` chain. What we found on the Debian hosts we
//! run on: `br_netfilter` loaded, `bridge-nf-call-iptables = 1`, and `FORWARD` empty with
//! policy ACCEPT, so nothing blocks pod-to-pod traffic. A host running Docker, ufw or
//! firewalld is different: Docker sets the `FORWARD` policy to DROP, and then traffic
//! between two pods vanishes without an error.
//!
//! We handle it minimally: only when bridged frames are filtered *and* `FORWARD` is not
//! the empty ACCEPT chain, [`Bridge::create`] inserts one rule at the top,
//! `-A FORWARD -i BRIDGE -o BRIDGE -j ACCEPT`, which matches nothing but frames that
//! enter and leave this very bridge. [`Bridge::delete`] removes it whenever it is
//! present, so deleting is stateless. We never flip the host-wide sysctl.

use std::path::Path;

use crate::ip::{self, link_exists};
use crate::{Error, IfName, Ipv4Cidr};

const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// A Linux bridge with the gateway address of its pods' subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    name: IfName,
    /// The bridge's own address: pods' default route and where host services listen.
    gateway: Ipv4Cidr,
}

impl Bridge {
    /// Names a bridge without touching the host, for a process that did not create it
    /// (`meshctl local down`) or before [`create`](Self::create).
    pub fn new(name: &str, gateway: Ipv4Cidr) -> Result<Self, Error> {
        Ok(Bridge {
            name: IfName::new(name)?,
            gateway,
        })
    }

    /// Creates the bridge, gives it `gateway` (e.g. `10.199.0.1/24`) and brings it up.
    /// An existing bridge (and rule) of that name is reused, so creating twice is
    /// harmless.
    pub fn create(name: &str, gateway: Ipv4Cidr) -> Result<Self, Error> {
        let bridge = Bridge::new(name, gateway)?;
        let name = bridge.name.as_str();
        if !link_exists(name)? {
            ip::ip(["link", "add", name, "type", "bridge"])?;
        }
        let gateway = bridge.gateway.to_string();
        ip::ip(["addr", "replace", &gateway, "dev", name])?;
        ip::ip(["link", "set", name, "up"])?;
        let present = || ip::run("iptables", forward_rule("-C", name)).is_ok();
        if bridged_frames_are_filtered() && forward_chain_may_drop()? && !present() {
            ip::run("iptables", forward_rule("-I", name))?;
        }
        Ok(bridge)
    }

    /// Removes the bridge and its FORWARD rule. Whatever is already gone is skipped.
    pub fn delete(&self) -> Result<(), Error> {
        let name = self.name.as_str();
        // `iptables -C` exits 1 when the rule is absent, and fails to start when
        // iptables is not installed, in which case no rule of ours can exist.
        while ip::run("iptables", forward_rule("-C", name)).is_ok() {
            ip::run("iptables", forward_rule("-D", name))?;
        }
        if link_exists(name)? {
            ip::ip(["link", "del", name])?;
        }
        Ok(())
    }

    pub fn name(&self) -> &IfName {
        &self.name
    }

    pub fn gateway(&self) -> Ipv4Cidr {
        self.gateway
    }
}

/// `-w`: with the legacy backend, iptables fails at once if another process (a
/// parallel proxy-init, say) holds the xtables lock, instead of waiting its turn.
fn forward_rule<'a>(action: &'a str, bridge: &'a str) -> [&'a str; 9] {
    [
        "-w", action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ]
}

fn bridged_frames_are_filtered() -> bool {
    // Absent file: br_netfilter is not loaded and bridged frames skip iptables.
    std::fs::read_to_string(Path::new(BRIDGE_NF_CALL_IPTABLES))
        .map(|value| value.trim() == "1")
        .unwrap_or(false)
}

/// Anything but an empty FORWARD chain with policy ACCEPT might drop bridged frames.
fn forward_chain_may_drop() -> Result<bool, Error> {
    let rules = ip::run("iptables", ["-w", "-S", "FORWARD"])?;
    Ok(rules.lines().any(|line| line.trim() != "-P FORWARD ACCEPT"))
}
