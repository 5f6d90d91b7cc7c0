//! Bringing a local mesh up and tearing all of it down.

use std::fs;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use trellis_netns::{
    Bridge, IfName, Ipv4Cidr, delete_link, delete_netns, links, netns_list, netns_pids,
};

use super::{Local, hosts, with_prefix, without_trellis_env};
use crate::binaries::CONTROLLER;
use crate::install::{Install, ensure_host};
use crate::issuer::TokenIssuer;
use crate::probe::{accepts, wait_for};
use crate::state::{LocalSettings, log_tail, make_dir, write_file, write_json};
use crate::{Error, process};

/// The controller's admin port (`/proxies`, `/metrics`), on the bridge's gateway.
const CONTROLLER_ADMIN_PORT: u16 = 9990;

/// How long the controller may take to accept connections.
const CONTROLLER_START: Duration = Duration::from_secs(20);

/// The choices of `meshctl local up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub bridge: String,
    pub subnet: Ipv4Cidr,
    pub trust_domain: String,
}

impl Local {
    /// Creates the bridge, the state directory (with the controller's config
    /// directory), the token issuer's key and JWKS, and starts the controller.
    /// Running it again on a running mesh changes nothing.
    pub fn up(&self, options: &UpOptions) -> Result<LocalSettings, Error> {
        ensure_host(Install::Never)?;
        self.bins.check_all()?;
        let settings = settings_for(options)?;
        let state = &self.state;
        state.create()?;
        match state.load_settings() {
            Ok(running) if running != settings => {
                return Err(Error::UpWithOtherSettings {
                    dir: state.root().to_path_buf(),
                    running_bridge: running.bridge,
                    running_subnet: running.subnet,
                });
            }
            Ok(_) => {}
            Err(_) => write_json(&state.settings(), &settings)?,
        }

        let gateway = settings.gateway()?;
        step(format_args!(
            "bridge {} with gateway {gateway}",
            settings.bridge
        ));
        Bridge::create(&settings.bridge, gateway)?;

        let issuer = self.issuer_or_create()?;
        write_file(&state.jwks(), issuer.jwks().as_bytes(), 0o644)?;
        self.start_controller(&settings)?;
        Ok(settings)
    }

    /// The token issuer of this mesh, created on first use.
    pub(super) fn issuer_or_create(&self) -> Result<TokenIssuer, Error> {
        let path = self.state.signing_key();
        match fs::read_to_string(&path) {
            Ok(pem) => TokenIssuer::from_pem(&pem).map_err(|reason| Error::InvalidFile {
                what: "token signing key",
                path,
                reason,
            }),
            Err(_) => {
                let issuer = TokenIssuer::generate()?;
                write_file(&path, issuer.to_pem().as_bytes(), 0o600)?;
                Ok(issuer)
            }
        }
    }

    fn start_controller(&self, settings: &LocalSettings) -> Result<(), Error> {
        let state = &self.state;
        let addr = settings.controller_addr()?;
        if let Some(pid) = process::running(&state.controller_pid()) {
            step(format_args!(
                "controller already running (pid {pid}) on {addr}"
            ));
        } else {
            step(format_args!("controller on {addr}"));
            make_dir(&state.ca_dir())?;
            let mut command = Command::new(self.bins.path(CONTROLLER)?);
            without_trellis_env(&mut command)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--admin-addr")
                .arg(std::net::SocketAddr::new(addr.ip(), CONTROLLER_ADMIN_PORT).to_string())
                .arg("--dev-ca")
                .arg(state.ca_dir())
                .arg("--token-jwks")
                .arg(state.jwks())
                .arg("--config-dir")
                .arg(state.config_dir())
                .arg("--trust-domain")
                .arg(&settings.trust_domain);
            process::spawn_detached(
                &mut command,
                &state.controller_log(),
                &state.controller_pid(),
            )?;
        }
        let pid_file = state.controller_pid();
        let log = state.controller_log();
        let root_cert = state.ca_root();
        let started = wait_for(CONTROLLER_START, || {
            if process::running(&pid_file).is_none() {
                return Some(Err(Error::Died {
                    what: "the controller".into(),
                    log: log_tail(&log, 20),
                }));
            }
            (accepts(addr) && root_cert.exists()).then_some(Ok(()))
        })?;
        match started {
            Some(result) => result?,
            None => {
                return Err(Error::NotReady {
                    what: format!("the controller on {addr}"),
                    seconds: CONTROLLER_START.as_secs(),
                    hint: log_tail(&log, 20),
                });
            }
        }
        // Proxies run as uid 2102 and may not be able to enter the CA directory, which
        // also holds the issuer's key: give them a world-readable copy of the root.
        let anchors = fs::read(&root_cert).map_err(Error::io("cannot read", &root_cert))?;
        write_file(&state.trust_anchors(), &anchors, 0o644)
    }

    /// Removes every pod, the controller, the bridge (and its FORWARD rule) and the
    /// state directory. Anything already gone is skipped; every failure is reported,
    /// but only after everything else was tried.
    pub fn down(&self) -> Result<(), Error> {
        let state = &self.state;
        if !state.root().exists() {
            step(format_args!(
                "nothing to remove: {} does not exist",
                state.root().display()
            ));
            return Ok(());
        }
        let settings = state.load_settings().ok();
        let mut first_error = None;
        let mut note = |result: Result<(), Error>| {
            if let Err(error) = result {
                eprintln!("meshctl: {error}");
                first_error.get_or_insert(error);
            }
        };
        if let Some(settings) = &settings {
            for pod in state.pods().unwrap_or_default() {
                step(format_args!("removing pod {}", pod.name));
                note(self.remove_pod(settings, &pod));
            }
            note(sweep(settings));
        }
        if process::read_pid(&state.controller_pid()).is_some() {
            step(format_args!("stopping the controller"));
        }
        process::stop_recorded(&state.controller_pid(), Duration::from_secs(5));
        if let Some(settings) = &settings {
            step(format_args!("removing bridge {}", settings.bridge));
            note(settings.gateway().and_then(|gateway| {
                Bridge::new(&settings.bridge, gateway)?.delete()?;
                Ok(())
            }));
            step(format_args!("removing {}", state.root().display()));
            note(
                fs::remove_dir_all(state.root()).map_err(Error::io("cannot remove", state.root())),
            );
        } else {
            eprintln!(
                "meshctl: {} holds no local.json, so it was not made by `meshctl local up`; left in place",
                state.root().display()
            );
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Removes pods of this mesh that have no record (a `run` interrupted before it wrote
/// one, or a record deleted by hand): their namespaces carry the bridge's name.
fn sweep(settings: &LocalSettings) -> Result<(), Error> {
    let prefix = format!("{}-", settings.bridge);
    for netns in netns_list()?.into_iter().filter(|n| n.starts_with(&prefix)) {
        step(format_args!("removing leftover namespace {netns}"));
        for pid in netns_pids(&netns)? {
            process::signal(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        delete_netns(&netns)?;
        hosts::remove(&netns)?;
    }
    let veth_prefix = format!("{}v", settings.bridge);
    for link in links()?
        .into_iter()
        .filter(|l| is_pod_veth(l, &veth_prefix))
    {
        step(format_args!("removing leftover link {link}"));
        if let Err(error) = delete_link(&link) {
            // A namespace deleted just above takes its veth peers with it, in the
            // kernel's own time: a link listed a moment ago may be gone by now.
            if links()?.contains(&link) {
                return Err(error.into());
            }
        }
    }
    Ok(())
}

fn is_pod_veth(link: &str, veth_prefix: &str) -> bool {
    link.strip_prefix(veth_prefix)
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

fn settings_for(options: &UpOptions) -> Result<LocalSettings, Error> {
    let subnet = options.subnet;
    if !(8..=29).contains(&subnet.prefix()) {
        return Err(Error::InvalidFlag {
            flag: "subnet",
            value: subnet.to_string(),
            reason: "use a prefix between /8 and /29 (room for a gateway and pods)".into(),
        });
    }
    let subnet = with_prefix(subnet.network(), subnet);
    // The longest pod link name is the bridge's name, `v`, and the last host index.
    let last_index = (1u64 << (32 - u32::from(subnet.prefix()))) - 2;
    let longest = format!("{}v{last_index}", options.bridge);
    IfName::new(&options.bridge)?;
    if IfName::new(&longest).is_err() {
        return Err(Error::InvalidFlag {
            flag: "bridge",
            value: options.bridge.clone(),
            reason: format!(
                "pod links are named after the bridge (e.g. {longest}) and must fit 15 bytes: use a name of at most {} characters for a /{} subnet",
                15 - 1 - last_index.to_string().len(),
                subnet.prefix()
            ),
        });
    }
    Ok(LocalSettings {
        bridge: options.bridge.clone(),
        subnet: subnet.to_string(),
        trust_domain: options.trust_domain.clone(),
    })
}

/// A progress line on stderr, so stdout stays for results.
pub(super) fn step(what: std::fmt::Arguments<'_>) {
    eprintln!("==> {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(bridge: &str, subnet: &str) -> UpOptions {
        UpOptions {
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            trust_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn the_subnet_is_normalised_to_its_network() {
        let settings = settings_for(&options("trellis0", "10.199.0.77/24")).unwrap();
        assert_eq!(settings.subnet, "10.199.0.0/24");
    }

    #[test]
    fn a_bridge_name_that_leaves_no_room_for_pod_links_is_refused_with_the_limit() {
        let err = settings_for(&options("trellis-bridge0", "10.199.0.0/24")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--bridge") && text.contains("at most 11 characters"),
            "{text}"
        );
        assert!(settings_for(&options("trellisbr01", "10.199.0.0/24")).is_ok());
    }

    #[test]
    fn only_numbered_links_of_the_bridge_are_pod_links() {
        assert!(is_pod_veth("trellis0v12", "trellis0v"));
        assert!(!is_pod_veth("trellis0v", "trellis0v"));
        assert!(!is_pod_veth("trellis0vx", "trellis0v"));
    }
}
