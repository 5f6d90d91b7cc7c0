//! What the rules depend on: the proxy's ports and ids, and what bypasses the proxy.
//!
//! `main` builds one [`Settings`] from the flags; tests build it directly. Everything
//! that can be wrong with a combination of values is checked here, by [`Settings::check`],
//! before any rule is rendered, so a contradiction never reaches the kernel.

use crate::cidr::CidrList;
use crate::error::{Error, env_of};
use crate::ports::PortList;

/// The inputs of rendering: everything that decides which rules a pod gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The proxy's inbound listener; inbound TCP to the pod is redirected here.
    pub inbound_port: u16,
    /// The proxy's outbound listener; outbound TCP from the app is redirected here.
    pub outbound_port: u16,
    /// The proxy's admin port (`/metrics`, `/ready`, `/live`). Never redirected: kubelet
    /// probes and Prometheus must reach the proxy itself, not the inbound listener.
    pub admin_port: u16,
    /// The UID the proxy runs as. Its own outbound connections bypass the redirect, or
    /// every connection the proxy opens would be sent back into the proxy.
    pub proxy_uid: u32,
    /// A GID whose traffic bypasses the redirect like the proxy UID's, for platforms
    /// that run the proxy under an arbitrary UID but a fixed group (OpenShift).
    pub proxy_gid: Option<u32>,
    /// Inbound destination ports that reach the app directly, without the proxy.
    pub skip_inbound_ports: PortList,
    /// Outbound destination ports that leave the pod directly, without the proxy.
    pub skip_outbound_ports: PortList,
    /// Outbound destinations (either family) that are reached directly.
    pub skip_outbound_cidrs: CidrList,
    /// When not empty, only outbound connections to these networks are redirected.
    pub include_outbound_cidrs: CidrList,
    /// When not empty, only inbound connections to these ports are redirected.
    pub redirect_inbound_ports: PortList,
    /// Whether IPv6 gets the same rules. Off only where the operator says so: an
    /// unredirected family is a way around the mesh.
    pub ipv6: bool,
}

impl Default for Settings {
    /// The numbers of DESIGN.md ("Names and numbers"): nothing skipped, IPv6 covered.
    fn default() -> Self {
        Settings {
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            proxy_uid: 2102,
            proxy_gid: None,
            skip_inbound_ports: PortList::default(),
            skip_outbound_ports: PortList::default(),
            skip_outbound_cidrs: CidrList::default(),
            include_outbound_cidrs: CidrList::default(),
            redirect_inbound_ports: PortList::default(),
            ipv6: true,
        }
    }
}

impl Settings {
    /// Refuses combinations that would make the rules loop or leak: two proxy
    /// listeners on one port, or root's traffic exempted as the proxy's.
    pub fn check(&self) -> Result<(), Error> {
        let ports = [
            ("--inbound-port", self.inbound_port),
            ("--outbound-port", self.outbound_port),
            ("--admin-port", self.admin_port),
        ];
        for (index, &(first, port)) in ports.iter().enumerate() {
            if let Some(&(second, _)) = ports[index + 1..].iter().find(|(_, p)| *p == port) {
                return Err(Error::SamePort {
                    first,
                    second,
                    port,
                });
            }
        }
        let root = |flag| Error::RootExempted {
            flag,
            env: env_of(flag),
        };
        if self.proxy_uid == 0 {
            return Err(root("--proxy-uid"));
        }
        if self.proxy_gid == Some(0) {
            return Err(root("--proxy-gid"));
        }
        Ok(())
    }

    /// The ports that are never redirected in either direction: the admin server and
    /// the proxy's own listeners.
    pub fn proxy_ports(&self) -> PortList {
        PortList::of(&[self.admin_port, self.inbound_port, self.outbound_port])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass() {
        assert!(Settings::default().check().is_ok());
        assert_eq!(
            Settings::default().proxy_ports().to_string(),
            "4191,4143,4140"
        );
    }

    #[test]
    fn two_listeners_on_one_port_are_refused_naming_both_flags() {
        let settings = Settings {
            admin_port: 4140,
            ..Settings::default()
        };
        let err = settings.check().expect_err("clash");
        assert!(
            err.to_string()
                .starts_with("--outbound-port and --admin-port are both 4140"),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn root_is_never_the_proxy() {
        let uid = Settings {
            proxy_uid: 0,
            ..Settings::default()
        };
        let err = uid.check().expect_err("uid 0");
        assert!(
            err.to_string()
                .contains("--proxy-uid (env TRELLIS_PROXY_UID) 0")
        );
        let gid = Settings {
            proxy_gid: Some(0),
            ..Settings::default()
        };
        let err = gid.check().expect_err("gid 0");
        assert!(
            err.to_string()
                .contains("--proxy-gid (env TRELLIS_PROXY_GID) 0")
        );
    }
}
