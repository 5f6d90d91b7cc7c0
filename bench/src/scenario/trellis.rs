//! The Trellis scenarios, built the way `meshctl local run` builds a pod: a controller
//! with a development CA on the bridge address, a ServiceAccount token per workload
//! signed by a key the controller trusts (a JWKS file), `trellis-proxy-init` in the
//! pod, and `trellis-proxy` as uid 2102 with that token. One hop puts a sidecar in
//! the client pod only (it forwards in plain TCP); two hops adds one in the server pod
//! and tells the client's sidecar the server's identity, so the middle is mTLS.
//!
//! The client's sidecar treats [`BACKEND_OPAQUE`] as an opaque port: HTTP to the
//! backend's main port rides one pooled HTTP/2 mTLS connection per peer, while each
//! connection to the opaque port is forwarded over an mTLS connection of its own, so
//! the `new_mtls_connection` workload pays a handshake per request. Its admin
//! metrics count those handshakes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use trellis_control_plane::config::DEFAULT_TOKEN_AUDIENCE;
use trellis_control_plane::token::mint;

use super::Programs;
use super::ports::BACKEND_OPAQUE;
use super::process::Daemon;
use super::topology::{Place, Topology};
use crate::Error;

pub const PROXY: &str = "trellis-proxy";
pub const PROXY_INIT: &str = "trellis-proxy-init";
pub const CONTROLLER: &str = "trellis-controller";

const PROXY_UID: u32 = 2102;
const ADMIN_PORT: u16 = 4191;
const CONTROLLER_PORT: u16 = 8086;
const NAMESPACE: &str = "bench";
const TRUST_DOMAIN: &str = "cluster.local";
/// How long a proxy may take to get its certificate.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running mesh: the controller and one or two sidecars.
pub struct Mesh {
    // Proxies stop before the controller (field order is drop order).
    proxies: Vec<Sidecar>,
    controller: Daemon,
    /// The client sidecar's admin port, whose metrics count its mTLS handshakes.
    client_admin: SocketAddr,
}

/// What one reading of every sidecar's metrics says.
#[derive(Debug, Clone, Default)]
pub struct MeshReading {
    /// The outbound mesh mTLS handshakes the client sidecar has completed, from its
    /// `tls_handshakes_total`; `None` without a mesh or when its metrics were unread.
    pub client_handshakes: Option<u64>,
    /// Each sidecar's scheduling policy and moves so far, by proxy name; `None` for
    /// one whose metrics were unread.
    pub scheduling: Vec<(String, Option<SchedulingReading>)>,
}

/// A sidecar and the admin port its metrics are read from.
struct Sidecar {
    daemon: Daemon,
    admin: SocketAddr,
}

/// What a sidecar's metrics say of its scheduling policy at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulingReading {
    /// `normal` or `batch`: the policy its threads run under.
    pub policy: String,
    /// Moves of its threads by `--scheduling auto` since it started.
    pub changes: u64,
}

impl Mesh {
    pub fn start(
        topology: &Topology,
        programs: &Programs,
        dir: &Path,
        two_hops: bool,
    ) -> Result<Self, Error> {
        let gateway = topology.gateway().ok_or_else(|| {
            Error::Netns("the Trellis scenarios need pods (root and network namespaces)".into())
        })?;
        let bin = |name: &str| programs.trellis_dir.join(name);
        let controller_addr = SocketAddr::from((gateway, CONTROLLER_PORT));

        let signer = KeyPair::generate().map_err(mint_error)?;
        let kid = "trellis-bench";
        let jwk = mint::es256_jwk(signer.public_key_raw(), kid).map_err(mint_error)?;
        let jwks = dir.join("jwks.json");
        write(&jwks, &mint::jwks(&[jwk]))?;
        let ca_dir = dir.join("ca");
        let mut command = trellis_command(Command::new(bin(CONTROLLER)));
        command
            .arg("--listen")
            .arg(controller_addr.to_string())
            // Beside the gRPC port, so that two meshes on one host never share it.
            .arg("--admin-addr")
            .arg(SocketAddr::new(controller_addr.ip(), 9990).to_string())
            .arg("--dev-ca")
            .arg(&ca_dir)
            .arg("--token-jwks")
            .arg(&jwks)
            .arg("--trust-domain")
            .arg(TRUST_DOMAIN);
        let mut controller = Daemon::start("controller", command, dir)?;
        // The client pod reaches the gateway, and has no redirect rules yet.
        topology
            .wait_listening(Place::Client, controller_addr, "trellis-controller")
            .map_err(|e| with_log(e, &mut controller))?;

        let server_id = spiffe_id("server");
        let mut sidecars = vec![(Place::Client, "client", topology.client_ip())];
        if two_hops {
            sidecars.push((Place::Server, "server", topology.server_ip()));
        }
        let mut proxies = Vec::new();
        for (place, account, pod_ip) in sidecars {
            let claims = mint::service_account_claims(
                NAMESPACE,
                account,
                Some(account),
                DEFAULT_TOKEN_AUDIENCE,
                Duration::from_secs(24 * 3600),
            );
            let token =
                mint::sign_es256(&signer.serialize_der(), kid, &claims).map_err(mint_error)?;
            let token_file = dir.join(format!("{account}.token"));
            write(&token_file, &token)?;

            let mut init = trellis_command(topology.command(place, bin(PROXY_INIT)));
            if let Some(algorithm) = &programs.trellis_local_congestion_control {
                init.arg("--local-congestion-control").arg(algorithm);
            }
            run_to_end(&mut init, PROXY_INIT)?;

            let mut proxy = trellis_command(topology.command_as(place, PROXY_UID, bin(PROXY)));
            proxy
                .arg("--controller-addr")
                .arg(controller_addr.to_string())
                .arg("--trust-domain")
                .arg(TRUST_DOMAIN)
                .arg("--trust-anchors")
                .arg(ca_dir.join("ca.crt"))
                .arg("--token-file")
                .arg(&token_file)
                .arg("--identity")
                .arg(spiffe_id(account));
            if place == Place::Client {
                // Only this port: every other workload still goes through the HTTP
                // plane and its pooled mesh connection.
                proxy.arg("--opaque-ports").arg(BACKEND_OPAQUE.to_string());
            }
            if two_hops && place == Place::Client {
                proxy
                    .arg("--peer")
                    .arg(format!("{}={server_id}", topology.server_ip()));
            }
            if let Some(workers) = programs.trellis_workers {
                proxy.arg("--workers").arg(workers.to_string());
            }
            if let Some(policy) = &programs.trellis_scheduling {
                proxy.arg("--scheduling").arg(policy);
            }
            // A log line per connection would be a cost HAProxy and nginx (logging
            // off) do not pay; warnings and errors still reach the log.
            proxy.env("RUST_LOG", "warn");
            let mut daemon = Daemon::start(&format!("trellis-proxy-{account}"), proxy, dir)?;
            let admin = (pod_ip, ADMIN_PORT).into();
            wait_ready(&mut daemon, admin)?;
            proxies.push(Sidecar { daemon, admin });
        }
        Ok(Mesh {
            proxies,
            controller,
            client_admin: (topology.client_ip(), ADMIN_PORT).into(),
        })
    }

    /// Reads every sidecar's metrics once.
    pub fn read(&self) -> MeshReading {
        let mut reading = MeshReading::default();
        for proxy in &self.proxies {
            let text = metrics(proxy.admin);
            if proxy.admin == self.client_admin {
                reading.client_handshakes = text.as_deref().map(outbound_handshakes);
            }
            let scheduling = text.as_deref().and_then(scheduling);
            reading
                .scheduling
                .push((proxy.daemon.name.clone(), scheduling));
        }
        reading
    }

    pub fn proxies(&self) -> Vec<(String, u32)> {
        self.proxies
            .iter()
            .map(|proxy| (proxy.daemon.name.clone(), proxy.daemon.pid()))
            .collect()
    }

    pub fn check_alive(&mut self) -> Result<(), Error> {
        self.controller.check_alive()?;
        self.proxies
            .iter_mut()
            .try_for_each(|proxy| proxy.daemon.check_alive())
    }
}

/// The binaries a Trellis scenario needs in `dir`, or what is missing.
pub fn missing_binaries(dir: &Path) -> Vec<PathBuf> {
    [PROXY, PROXY_INIT, CONTROLLER]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| !path.is_file())
        .collect()
}

fn spiffe_id(account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{account}")
}

/// Trellis binaries read `TRELLIS_*` variables as flags; the harness's own must not
/// leak into them.
fn trellis_command(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TRELLIS_") {
            command.env_remove(name);
        }
    }
    command
}

fn run_to_end(command: &mut Command, name: &str) -> Result<(), Error> {
    let output = command
        .output()
        .map_err(|e| Error::io(format!("run {name}"), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: name.to_string(),
        detail: format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

/// Polls the admin port's `/ready` until it answers 200.
fn wait_ready(proxy: &mut Daemon, admin: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        proxy.check_alive()?;
        if is_ready(admin) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::NotReady {
        what: format!("{} (GET http://{admin}/ready)", proxy.name),
        seconds: READY_WITHIN.as_secs(),
        hint: format!(
            "is the controller reachable? the proxy's log ends:\n{}",
            proxy.log_tail()
        ),
    })
}

fn is_ready(admin: SocketAddr) -> bool {
    admin_get(admin, "/ready").is_some_and(|answer| answer.starts_with("HTTP/1.1 200"))
}

/// The whole answer (status line, headers, body) to `GET path` on the admin port.
fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_millis(300)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    Some(answer)
}

/// The body of a proxy's `/metrics`, if it answered 200.
fn metrics(admin: SocketAddr) -> Option<String> {
    let answer = admin_get(admin, "/metrics")?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The policy whose `scheduling_policy` sample is 1 and the sum of
/// `scheduling_policy_changes_total`; `None` when no policy is marked in force.
fn scheduling(metrics: &str) -> Option<SchedulingReading> {
    let mut policy = None;
    let mut changes = 0;
    for (name, labels, value) in samples(metrics) {
        let Some(label) = labels
            .strip_prefix("policy=\"")
            .and_then(|rest| rest.strip_suffix('"'))
        else {
            continue;
        };
        match name {
            "scheduling_policy" if value == 1.0 => policy = Some(label.to_string()),
            "scheduling_policy_changes_total" => changes += value as u64,
            _ => {}
        }
    }
    Some(SchedulingReading {
        policy: policy?,
        changes,
    })
}

/// The successful outbound handshakes in a proxy's metrics text: the sample
/// `tls_handshakes_total{direction="outbound",outcome="ok"} N` (absent before the
/// first handshake, which counts as none).
fn outbound_handshakes(metrics: &str) -> u64 {
    samples(metrics)
        .filter(|(name, labels, _)| {
            *name == "tls_handshakes_total"
                && labels.contains("direction=\"outbound\"")
                && labels.contains("outcome=\"ok\"")
        })
        .map(|(_, _, value)| value as u64)
        .sum()
}

/// The samples of a Prometheus text exposition: each line's metric name, the text
/// between its braces (empty without labels) and its value; comments and lines
/// that do not parse are skipped.
fn samples(metrics: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some((name, labels, value.parse::<f64>().ok()?))
        })
}

fn with_log(error: Error, daemon: &mut Daemon) -> Error {
    match daemon.check_alive() {
        Err(died) => died,
        Ok(()) => error,
    }
}

fn mint_error(error: impl std::fmt::Display) -> Error {
    Error::Command {
        command: "minting ServiceAccount tokens".into(),
        detail: error.to_string(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_successful_outbound_handshakes_are_counted() {
        let metrics = "# TYPE tls_handshakes counter\n\
            tls_handshakes_total{direction=\"outbound\",outcome=\"ok\"} 1200\n\
            tls_handshakes_total{direction=\"outbound\",outcome=\"identity\"} 3\n\
            tls_handshakes_total{direction=\"inbound\",outcome=\"ok\"} 7\n\
            tcp_open_total{direction=\"outbound\",tls=\"true\"} 1203\n\
            # EOF\n";
        assert_eq!(outbound_handshakes(metrics), 1200);
        assert_eq!(outbound_handshakes("# EOF\n"), 0, "none yet");
    }

    #[test]
    fn the_policy_in_force_and_every_move_are_read_from_the_metrics() {
        let metrics = "# TYPE scheduling_policy gauge\n\
            scheduling_policy{policy=\"normal\"} 0\n\
            scheduling_policy{policy=\"batch\"} 1\n\
            # TYPE scheduling_policy_changes counter\n\
            scheduling_policy_changes_total{policy=\"normal\"} 2\n\
            scheduling_policy_changes_total{policy=\"batch\"} 3\n\
            tls_handshakes_total{direction=\"outbound\",outcome=\"ok\"} 1\n\
            # EOF\n";
        assert_eq!(
            scheduling(metrics),
            Some(SchedulingReading {
                policy: "batch".into(),
                changes: 5
            })
        );
        // A proxy from before the counter: the policy, no moves.
        let older = "scheduling_policy{policy=\"normal\"} 1\n\
            scheduling_policy{policy=\"batch\"} 0\n";
        assert_eq!(
            scheduling(older),
            Some(SchedulingReading {
                policy: "normal".into(),
                changes: 0
            })
        );
        assert_eq!(scheduling("# EOF\n"), None, "no policy marked in force");
    }
}
