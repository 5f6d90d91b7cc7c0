//! Starting a pod (namespace, redirect rules, sidecar, app) and removing it again.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use trellis_identity::SpiffeId;
use trellis_netns::{Bridge, Pod, command_line, exec_in, exec_in_as, netns_pids, run_in};

use super::mesh::step;
use super::without_trellis_env;
use super::{ADMIN_PORT, Local, PROXY_UID, addresses, hosts, split_command, with_prefix};
use crate::binaries::{PROXY, PROXY_INIT};
use crate::install::{Install, ensure_host};
use crate::issuer::Workload;
use crate::probe::{is_ready, wait_for};
use crate::state::{LocalSettings, Phase, PodRecord, log_tail, make_dir, write_file, write_json};
use crate::{Error, process};

/// How long a new proxy may take to get its certificate and report ready.
const PROXY_READY: Duration = Duration::from_secs(20);
/// How long the app may take to listen on its declared ports.
const APP_LISTENING: Duration = Duration::from_secs(10);
/// How long a stopped process may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The choices of `meshctl local run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub name: String,
    pub namespace: String,
    /// Defaults to the pod's name.
    pub service_account: Option<String>,
    /// Ports the app listens on; `run` waits until it does. They are the ports of
    /// its service, if it has one.
    pub ports: Vec<u16>,
    /// The service (in the pod's namespace) the pod is an endpoint of.
    pub service: Option<String>,
    /// The app; empty for a pod that only runs `local exec` commands.
    pub command: Vec<OsString>,
}

impl Local {
    /// Creates pod `options.name` and returns its record once its proxy is ready and its
    /// app (if any) listens on the declared ports.
    pub fn run(&self, options: &RunOptions) -> Result<PodRecord, Error> {
        ensure_host(Install::Never)?;
        let settings = self.state.load_settings()?;
        let (proxy_bin, init_bin) = (self.bins.path(PROXY)?, self.bins.path(PROXY_INIT)?);
        if process::running(&self.state.controller_pid()).is_none() {
            return Err(Error::Died {
                what: "the controller of this local mesh".into(),
                log: format!(
                    "{}\n  run `meshctl local up` again to restart it",
                    log_tail(&self.state.controller_log(), 10)
                ),
            });
        }
        let pod = self.register(&settings, options)?;
        let files = self.state.pod(&pod.name);
        step(format_args!(
            "pod {} at {} as {}",
            pod.name, pod.ip, pod.identity
        ));

        let issuer = self.issuer_or_create()?;
        let workload = Workload {
            namespace: &pod.namespace,
            service_account: &pod.service_account,
            pod: &pod.name,
        };
        let token = issuer.token(&workload)?;
        // 0644: the proxy reads it as uid 2102. It grants nothing beyond this pod's
        // identity on this host, which root could take anyway.
        write_file(&files.token(), token.as_bytes(), 0o644)?;

        let subnet = settings.subnet()?;
        let bridge = Bridge::new(&settings.bridge, settings.gateway()?)?;
        Pod::create(
            &pod.netns,
            &bridge,
            with_prefix(pod.ip, subnet),
            &pod.host_veth,
        )?;

        let mut init = exec_in(&pod.netns, &init_bin);
        let output = without_trellis_env(&mut init)
            .output()
            .map_err(|error| Error::Spawn {
                command: command_line(&init),
                error,
            })?;
        if !output.status.success() {
            return Err(Error::CommandFailed {
                command: command_line(&init),
                status: output.status,
                output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }

        let mut proxy = exec_in_as(&pod.netns, PROXY_UID, PROXY_UID, &proxy_bin);
        without_trellis_env(&mut proxy)
            .arg("--controller-addr")
            .arg(settings.controller_addr()?.to_string())
            .arg("--trust-domain")
            .arg(&settings.trust_domain)
            .arg("--trust-anchors")
            .arg(self.state.trust_anchors())
            .arg("--token-file")
            .arg(files.token())
            .arg("--identity")
            .arg(&pod.identity)
            .arg("--pod-name")
            .arg(&pod.name)
            .arg("--pod-namespace")
            .arg(&pod.namespace);
        let proxy_pid =
            process::spawn_detached(&mut proxy, &files.proxy_log(), &files.proxy_pid())?;
        self.wait_ready(&pod, proxy_pid)?;

        if let Some((program, args)) = split_command(&options.command) {
            let mut app = exec_in(&pod.netns, program);
            app.args(args);
            let app_pid = process::spawn_detached(&mut app, &files.app_log(), &files.app_pid())?;
            self.wait_listening(&pod, app_pid)?;
        }
        self.publish_ready(&pod.name)
    }

    /// Allocates the pod's address (and its new service's virtual IP), writes its
    /// record and publishes it as not ready yet, all under the state lock so that two
    /// `run`s never take the same address. The pod's hosts file exists from here on,
    /// before any of its programs starts.
    fn register(&self, settings: &LocalSettings, options: &RunOptions) -> Result<PodRecord, Error> {
        check_name("name", &options.name)?;
        if let Some(service) = &options.service {
            check_service(service, &options.ports)?;
        }
        let service_account = options.service_account.as_deref().unwrap_or(&options.name);
        let identity = SpiffeId::for_service_account(
            &settings.trust_domain,
            &options.namespace,
            service_account,
        )
        .map_err(|e| Error::InvalidFlag {
            flag: "namespace/--service-account",
            value: format!("{}/{service_account}", options.namespace),
            reason: e.to_string(),
        })?;
        let _lock = self.state.lock()?;
        let files = self.state.pod(&options.name);
        if files.record().exists() {
            return Err(Error::PodExists(options.name.clone()));
        }
        let subnet = settings.subnet()?;
        let (pods, services) = (self.state.pods()?, self.state.services()?);
        let mut taken: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
        taken.extend(services.iter().map(|s| s.vip));
        let (index, ip) =
            addresses::pod_address(subnet, &taken).ok_or_else(|| Error::SubnetFull {
                subnet: subnet.to_string(),
                pods: pods.len(),
                services: services.len(),
            })?;
        taken.push(ip);
        let new_service = match &options.service {
            Some(name) => {
                self.service_or_create(settings, &options.namespace, name, &taken)?
                    .1
            }
            None => false,
        };
        let pod = PodRecord {
            name: options.name.clone(),
            namespace: options.namespace.clone(),
            service_account: service_account.to_string(),
            identity: identity.to_string(),
            ip,
            netns: settings.netns_of(&options.name),
            host_veth: settings.host_veth_of(index),
            ports: options.ports.clone(),
            command: options
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            service: options.service.clone(),
            phase: Phase::Starting,
        };
        make_dir(files.dir())?;
        write_json(&files.record(), &pod)?;
        self.publish_new(&pod, new_service)?;
        Ok(pod)
    }

    fn wait_ready(&self, pod: &PodRecord, proxy_pid: Pid) -> Result<(), Error> {
        let admin = SocketAddr::from((pod.ip, ADMIN_PORT));
        let log = self.state.pod(&pod.name).proxy_log();
        let ready = wait_for(PROXY_READY, || {
            if !process::is_alive(proxy_pid) {
                return Some(Err(Error::Died {
                    what: format!("the proxy of pod {}", pod.name),
                    log: log_tail(&log, 20),
                }));
            }
            is_ready(admin).then_some(Ok(()))
        })?;
        ready.unwrap_or_else(|| {
            Err(Error::NotReady {
                what: format!("the proxy of pod {} (GET http://{admin}/ready)", pod.name),
                seconds: PROXY_READY.as_secs(),
                hint: format!(
                    "{}\n  the pod is left for inspection: `meshctl local logs {name} --proxy`, then `meshctl local rm {name}`",
                    log_tail(&log, 20),
                    name = pod.name
                ),
            })
        })
    }

    /// Waits until the app accepts connections on each declared port, probing from
    /// inside the pod over loopback (which the redirect rules leave alone).
    fn wait_listening(&self, pod: &PodRecord, app_pid: Pid) -> Result<(), Error> {
        let log = self.state.pod(&pod.name).app_log();
        for &port in &pod.ports {
            let listening = wait_for(APP_LISTENING, || {
                if !process::is_alive(app_pid) {
                    return Some(Err(Error::Died {
                        what: format!("the app of pod {}", pod.name),
                        log: log_tail(&log, 20),
                    }));
                }
                let netns = pod.netns.clone();
                let probe = run_in(&netns, move || {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
                });
                probe.unwrap_or(false).then_some(Ok(()))
            })?;
            match listening {
                Some(result) => result?,
                None => eprintln!(
                    "meshctl: warning: the app of pod {} is not listening on port {port} after {} s (see `meshctl local logs {}`)",
                    pod.name,
                    APP_LISTENING.as_secs(),
                    pod.name
                ),
            }
        }
        Ok(())
    }

    /// Takes pod `name` out of discovery, stops it, and removes its namespace, links
    /// and files.
    pub fn rm(&self, name: &str) -> Result<(), Error> {
        let settings = self.state.load_settings()?;
        let files = self.state.pod(name);
        let pod = match crate::state::read_json::<PodRecord>(&files.record(), "pod record") {
            Ok(pod) => pod,
            Err(_)
                if trellis_netns::netns_exists(&settings.netns_of(name))
                    || files.dir().exists() =>
            {
                // A `run` that stopped before its record was complete: remove what
                // can be found by name.
                let netns = settings.netns_of(name);
                kill_everything_in(&netns);
                trellis_netns::delete_netns(&netns)?;
                hosts::remove(&netns)?;
                let _ = fs::remove_dir_all(files.dir());
                return Ok(());
            }
            Err(_) => return Err(Error::NoSuchPod(name.to_string())),
        };
        step(format_args!("removing pod {name}"));
        self.remove_pod(&settings, &pod)
    }

    pub(super) fn remove_pod(
        &self,
        settings: &LocalSettings,
        pod: &PodRecord,
    ) -> Result<(), Error> {
        let files = self.state.pod(&pod.name);
        // Out of discovery first, so that no new connection is sent to a pod on its
        // way out; if that fails, the pod goes all the same and the error is reported.
        let unpublished = self.unpublish(pod);
        process::stop_recorded(&files.app_pid(), STOP_GRACE);
        process::stop_recorded(&files.proxy_pid(), STOP_GRACE);
        // `local exec` commands still running inside keep the namespace alive.
        kill_everything_in(&pod.netns);
        Pod::new(
            &pod.netns,
            with_prefix(pod.ip, settings.subnet()?),
            &pod.host_veth,
        )?
        .delete()?;
        hosts::remove(&pod.netns)?;
        let _lock = self.state.lock()?;
        fs::remove_dir_all(files.dir()).map_err(Error::io("cannot remove", files.dir()))?;
        unpublished
    }
}

fn kill_everything_in(netns: &str) {
    for pid in netns_pids(netns).unwrap_or_default() {
        process::signal(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Pod and service names become namespace, file and Kubernetes-style names: DNS-1123
/// labels of at most 63 bytes (a pod's own Endpoints, `pod.NAME`, is a DNS subdomain
/// and has room).
fn check_name(flag: &'static str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidFlag {
            flag,
            value: value.to_string(),
            reason: "use lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit"
                .into(),
        })
    }
}

/// A service is a DNS label (so no pod's own Endpoints, `pod.NAME`, can take its
/// name) and has the ports of its pods.
fn check_service(name: &str, ports: &[u16]) -> Result<(), Error> {
    check_name("service", name)?;
    if ports.is_empty() {
        return Err(Error::InvalidFlag {
            flag: "service",
            value: name.to_string(),
            reason: "a service needs the ports its pods serve: give at least one --port".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_dns_labels() {
        assert!(check_name("name", "web-1").is_ok());
        for bad in ["", "Web", "web_1", "-web", "web-", "a/b", "web.1"] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("name", &"a".repeat(63)).is_ok());
        assert!(check_name("name", &"a".repeat(64)).is_err());
    }

    #[test]
    fn a_service_needs_ports_and_a_dns_label_name() {
        assert!(check_service("echo", &[7070]).is_ok());
        let text = check_service("echo", &[]).unwrap_err().to_string();
        assert!(text.contains("--port"), "{text}");
        // `pod-web` is no pod's Endpoints (those are `pod.NAME`), and `pod.web` is no label.
        assert!(check_service("pod-web", &[80]).is_ok());
        assert!(check_service("pod.web", &[80]).is_err());
    }
}
