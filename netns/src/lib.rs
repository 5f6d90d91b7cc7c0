//! Pods as network namespaces on a bridge.
//!
//! Outside Kubernetes, a Trellis pod is a Linux network namespace with one veth link
//! whose host end is enslaved to a bridge. Pods on one bridge are L2 neighbours; the
//! bridge's own address is their default gateway and the address the host's services
//! (the controller) listen on. `meshctl local` and the end-to-end tests both build on
//! this one concept, so it lives here rather than twice.
//!
//! This crate owns:
//! - [`Bridge`] and [`Pod`]: creating and deleting the links, namespaces and addresses,
//!   by shelling out to `ip` (iproute2) with errors that name the command, its exit
//!   status and its stderr;
//! - [`run_in`] and [`spawn_in`]: running a closure on a thread that has entered a
//!   pod's namespace, so a test can bind and connect sockets "inside the pod" without
//!   a child process;
//! - [`exec_in`] and [`exec_in_as`]: `std::process::Command`s that start a program
//!   inside a pod, as root or as a given uid/gid;
//! - [`preflight`]: saying exactly what this host lacks (root, `ip`, `iptables-restore`,
//!   network namespaces) and which `apt-get install` line fixes it.
//!
//! # Layout
//! - `cidr.rs`: [`Ipv4Cidr`], an address with its prefix length.
//! - `ifname.rs`: [`IfName`], a link name that fits the kernel's 15 bytes.
//! - `ip.rs`: running `ip` and `iptables` and turning failures into [`Error`]s.
//! - `bridge.rs`: the bridge and the one FORWARD rule bridged traffic may need.
//! - `pod.rs`: a pod's namespace, veth pair, address and default route.
//! - `enter.rs`: `setns(CLONE_NEWNET)` on a dedicated thread.
//! - `exec.rs`: command builders for `ip netns exec` and `setpriv`.
//! - `preflight.rs`: what is missing on this host, and how to install it.

mod bridge;
mod cidr;
mod enter;
mod error;
mod exec;
mod ifname;
mod ip;
mod pod;
mod preflight;

pub use bridge::Bridge;
pub use cidr::Ipv4Cidr;
pub use enter::{NetnsThread, run_in, spawn_in};
pub use error::Error;
pub use exec::{exec_in, exec_in_as};
pub use ifname::IfName;
pub use ip::display as command_line;
pub use pod::{Pod, delete_link, delete_netns, links, netns_exists, netns_list, netns_pids};
pub use preflight::{Missing, Preflight, find_program, preflight};
