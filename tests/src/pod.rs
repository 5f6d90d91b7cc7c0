//! A pod of a [`Mesh`](crate::Mesh): its network namespace and, once started, its
//! sidecar; and what a test does with it: connect as its app, ask a named echo app
//! who answers, read the sidecar's `/config` and `/metrics`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trellis_netns::{Pod, exec_in, exec_in_as, netns_pids};

use crate::mesh::{STARTUP, TRUST_DOMAIN};
use crate::{Daemon, Metrics, ProxyConfig, ask, binary, http_get, wait_until};

pub const PROXY_UID: u32 = 2102;
pub const ADMIN_PORT: u16 = 4191;
/// Where the sidecar takes every connection into the pod, mesh or plaintext.
pub const INBOUND_PORT: u16 = 4143;
/// Ample for a file edit to reach a connected proxy (it takes a few hundred ms).
const PUSHED: Duration = Duration::from_secs(10);

/// A pod and, once started, its sidecar.
pub struct MeshPod {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    /// `spiffe://cluster.local/ns/NS/sa/SA`, what its token entitles it to.
    pub identity: String,
    pub(crate) dir: PathBuf,
    pub(crate) pod: Pod,
    pub(crate) proxy: Option<Daemon>,
    pub(crate) controller_addr: SocketAddr,
    pub(crate) trust_anchors: PathBuf,
}

impl MeshPod {
    pub fn netns(&self) -> &str {
        self.pod.netns()
    }

    /// The host end of its veth, where a capture sees all of the pod's traffic.
    pub fn host_veth(&self) -> &str {
        self.pod.host_veth().as_str()
    }

    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ADMIN_PORT))
    }

    /// Starts the sidecar as uid 2102 and waits for `/ready`: a certificate and a
    /// first set of every discovery type.
    pub fn start_sidecar(&mut self) -> anyhow::Result<()> {
        self.start_sidecar_with(&[])
    }

    /// [`start_sidecar`](Self::start_sidecar), with more flags for the proxy (such as
    /// a short `--drain-timeout`).
    pub fn start_sidecar_with(&mut self, proxy_args: &[&str]) -> anyhow::Result<()> {
        let mut proxy = exec_in_as(self.netns(), PROXY_UID, PROXY_UID, binary("trellis-proxy"));
        proxy
            .arg("--controller-addr")
            .arg(self.controller_addr.to_string())
            .args(["--trust-domain", TRUST_DOMAIN])
            .arg("--trust-anchors")
            .arg(&self.trust_anchors)
            .arg("--token-file")
            .arg(self.dir.join("token"))
            .arg("--identity")
            .arg(&self.identity)
            .args(["--pod-name", &self.name, "--pod-namespace", &self.namespace])
            .args(proxy_args);
        let what = format!("the proxy of pod {}", self.name);
        let mut daemon = Daemon::spawn(&what, proxy, &self.dir.join("proxy.log"))?;
        let admin = self.admin();
        daemon.wait_ready(STARTUP, &format!("ready on http://{admin}/ready"), || {
            http_get(admin, "/ready").is_ok_and(|(status, _)| status == 200)
        })?;
        self.proxy = Some(daemon);
        Ok(())
    }

    /// The sidecar's process id: the same id before and after a change, with the
    /// admin port still answering, shows the change was applied without a restart.
    pub fn sidecar_pid(&self) -> Option<u32> {
        self.proxy.as_ref().map(Daemon::pid)
    }

    /// A TCP connection made by this pod's app: it goes through the pod's rules, so
    /// through its sidecar, like any connection the app makes.
    pub fn connect(&self, target: SocketAddrV4) -> anyhow::Result<TcpStream> {
        let conn = trellis_netns::run_in(self.netns(), move || {
            TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
        })?
        .with_context(|| format!("connecting to {target} from pod {}", self.name))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    /// Calls the named echo app behind `target` on a new connection and returns the
    /// name it answered with.
    pub fn who_answers(&self, target: SocketAddrV4) -> anyhow::Result<String> {
        let question = format!("who answers {target}?");
        let mut conn = self.connect(target)?;
        let answer = ask(&mut conn, &question)
            .with_context(|| format!("calling {target} from pod {}", self.name))?;
        answer
            .strip_suffix(&format!(": {question}"))
            .map(str::to_string)
            .with_context(|| format!("{target} answered {answer:?} to {question:?}"))
    }

    /// The sidecar's peak resident memory (`VmHWM` in `/proc/PID/status`), in bytes:
    /// the most it ever held, so one reading after a transfer covers all of it.
    pub fn sidecar_peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self
            .sidecar_pid()
            .context("the sidecar was never started")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading the status of the sidecar of {}", self.name))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in /proc/{pid}/status:\n{status}"))?;
        Ok(kib * 1024)
    }

    /// The established TCP connections in this pod whose local port is `port` and
    /// whose peer is `peer`, as `ss` run inside the pod lists them.
    pub fn established(&self, port: u16, peer: Ipv4Addr) -> anyhow::Result<usize> {
        let output = exec_in(self.netns(), "ss")
            .args(["-Htn", "state", "established"])
            .output()
            .with_context(|| format!("running ss in pod {}", self.name))?;
        anyhow::ensure!(
            output.status.success(),
            "ss in pod {} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let listing = String::from_utf8_lossy(&output.stdout);
        Ok(count_established(&listing, port, peer))
    }

    /// The sidecar's `/config`.
    pub fn config(&self) -> anyhow::Result<ProxyConfig> {
        ProxyConfig::fetch(self.admin())
    }

    /// Polls the sidecar's `/config` until `check` holds, for at most `timeout`; how
    /// long it took, or a failure with the last view and the sidecar's log.
    pub fn wait_for_config(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&ProxyConfig) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last = None;
        let held = wait_until(timeout, || {
            last = self.config().ok();
            last.as_ref().is_some_and(&check)
        });
        if held {
            return Ok(started.elapsed());
        }
        anyhow::bail!(
            "the sidecar of {} did not get {what} within {timeout:?}; its /config:\n{}\n{}",
            self.name,
            last.map(|c| c.to_string()).unwrap_or_default(),
            self.proxy_log()
        )
    }

    /// Waits until discovery has told the sidecar that whoever answers at `ip` must
    /// present `identity`.
    pub fn wait_for_identity(&self, ip: Ipv4Addr, identity: &str) -> anyhow::Result<Duration> {
        self.wait_for_config(
            &format!("the identity of {ip}, {identity}"),
            PUSHED,
            |config| config.identity_at(ip) == Some(identity),
        )
    }

    /// Sends SIGTERM to the sidecar, as the kubelet does when the pod is deleted.
    pub fn terminate_sidecar(&self) -> anyhow::Result<()> {
        let proxy = self
            .proxy
            .as_ref()
            .context("the sidecar was never started")?;
        proxy.terminate()
    }

    /// Kills the sidecar with SIGKILL, as a crash or an OOM kill would.
    pub fn kill_sidecar(&mut self) -> anyhow::Result<()> {
        self.proxy
            .as_mut()
            .context("the sidecar was never started")?
            .kill()
    }

    /// Waits up to `timeout` for the sidecar to exit; how it exited, if it did.
    pub fn wait_for_sidecar_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proxy.as_mut()?.wait_exit(timeout)
    }

    /// The sidecar's `/metrics`.
    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        Metrics::fetch(self.admin())
    }

    /// Everything the sidecar logged so far.
    pub fn proxy_log_text(&self) -> String {
        self.proxy
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default()
    }

    /// The end of the sidecar's log, for failure messages.
    pub fn proxy_log(&self) -> String {
        self.proxy
            .as_ref()
            .map(|p| p.log_tail(30))
            .unwrap_or_default()
    }
}

impl Drop for MeshPod {
    fn drop(&mut self) {
        self.proxy.take();
        // Anything else still in the namespace would keep it (and its veth) alive.
        for pid in netns_pids(self.netns()).unwrap_or_default() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Err(error) = self.pod.delete() {
            eprintln!("cleanup: {error}");
        }
    }
}

/// Counts the lines of `ss -Htn state established` (`RECV-Q SEND-Q LOCAL PEER`) whose
/// local port is `port` and whose peer address is `peer`.
fn count_established(listing: &str, port: u16, peer: Ipv4Addr) -> usize {
    listing
        .lines()
        .filter_map(|line| {
            let mut addrs = line.split_whitespace().filter_map(|word| {
                // IPv4-mapped addresses, as a dual-stack listener reports them.
                let word = word.replace("[::ffff:", "").replace(']', "");
                word.parse::<SocketAddrV4>().ok()
            });
            Some((addrs.next()?, addrs.next()?))
        })
        .filter(|(local, remote)| local.port() == port && *remote.ip() == peer)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_count_by_local_port_and_peer_address() {
        let listing = "\
0      0        10.240.3.2:4143     10.240.3.3:40122
0      0        10.240.3.2:4143     10.240.3.3:40124
0      0        10.240.3.2:4143     10.240.3.4:40124
0      0        10.240.3.2:7070     10.240.3.3:40126
0      0   [::ffff:10.240.3.2]:4143 [::ffff:10.240.3.3]:40128
0      0         127.0.0.1:7070      127.0.0.1:50000
";
        let client = Ipv4Addr::new(10, 240, 3, 3);
        assert_eq!(count_established(listing, 4143, client), 3);
        assert_eq!(count_established(listing, 7070, client), 1);
        assert_eq!(count_established("", 4143, client), 0);
    }
}
