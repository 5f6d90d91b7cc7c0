//! `meshctl local`: a whole mesh on one Linux host, pods as network namespaces.
//!
//! [`Local`] is one local mesh, named by its state directory. Each command is a method
//! that reads what earlier commands recorded there, so `up`, `run` and `down` can be
//! separate invocations (or one, as in `meshctl demo`). Every step that creates
//! something records it first, so `rm` and `down` can remove half-made pods too.
//!
//! Pods and services reach the proxies through discovery: meshctl writes them as YAML
//! objects into the controller's config directory, and names resolve through each
//! pod's own hosts file.
//!
//! # Layout
//! - `mesh.rs`: `up` and `down` (bridge, issuer key, controller).
//! - `pod.rs`: `run` and `rm` (namespace, proxy-init, proxy, app).
//! - `inspect.rs`: `exec`, `ls`, `logs`.
//! - `publish.rs`: keeping the config directory and hosts files in step with the
//!   pods; `objects.rs`: the YAML it writes; `hosts.rs`: the hosts files.
//! - `addresses.rs`: pod addresses and service virtual IPs in the subnet.

mod addresses;
mod hosts;
mod inspect;
mod mesh;
mod objects;
mod pod;
mod publish;

use std::ffi::OsString;
use std::process::Command;

use trellis_netns::Ipv4Cidr;

use crate::binaries::Binaries;
use crate::state::StateDir;

pub use mesh::UpOptions;
pub use pod::RunOptions;

/// The proxy's ports and uid (DESIGN.md), which proxy-init's defaults also assume.
pub const PROXY_UID: u32 = 2102;
pub const ADMIN_PORT: u16 = 4191;

/// The defaults of `meshctl local up`.
pub const DEFAULT_BRIDGE: &str = "trellis0";
pub const DEFAULT_SUBNET: &str = "10.199.0.0/24";
pub const DEFAULT_STATE_DIR: &str = "/run/trellis-local";

/// One local mesh: its state directory and where its binaries are.
#[derive(Debug, Clone)]
pub struct Local {
    state: StateDir,
    bins: Binaries,
}

impl Local {
    pub fn new(state: StateDir, bins: Binaries) -> Self {
        Local { state, bins }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }
}

/// The mesh binaries get exactly the flags meshctl passes: `TRELLIS_*` variables meant
/// for meshctl itself (TRELLIS_STATE_DIR, ...) must not turn into their flags.
fn without_trellis_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRELLIS_") {
            command.env_remove(key);
        }
    }
    command
}

/// `ip` wants the pod's address with the subnet's prefix.
fn with_prefix(ip: std::net::Ipv4Addr, subnet: Ipv4Cidr) -> Ipv4Cidr {
    Ipv4Cidr::new(ip, subnet.prefix()).unwrap_or(subnet)
}

/// A command line as given after `--`, split into program and arguments.
fn split_command(command: &[OsString]) -> Option<(&OsString, &[OsString])> {
    command.split_first()
}
