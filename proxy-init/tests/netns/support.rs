//! A pod and a peer, for real: two network namespaces joined by one veth pair, with
//! listeners that say who they are and where each connection was going.
//!
//! Nothing here touches the host's own namespace: both ends of the veth are born inside
//! the two namespaces, and deleting the namespaces deletes everything. The addresses
//! (10.230.0.0/24, fd00:230::/64) exist only on that private link, so no test sends a
//! packet anywhere else; every test uses the same ones, because no two pairs can see
//! each other.
//!
//! Tests need root, `ip`, `setpriv`, `bash`, `timeout` and the backend's tools. Without
//! them a test says why and passes, unless `TRELLIS_E2E=require` (CI), where a test that
//! cannot run fails with the reason instead.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
use trellis_netns::{exec_in, exec_in_as, find_program, run_in};

pub const PROXY_INIT: &str = env!("CARGO_BIN_EXE_trellis-proxy-init");

pub const POD_IP: &str = "10.230.0.2";
pub const PEER_IP: &str = "10.230.0.1";
/// A second address of the peer, for rules that treat two destinations differently.
pub const PEER_IP_2: &str = "10.230.0.3";
pub const POD_IP6: &str = "fd00:230::2";
pub const PEER_IP6: &str = "fd00:230::1";
pub const PEER_IP6_2: &str = "fd00:230::3";

/// How long a connection may take before a test calls it lost.
const PATIENCE: Duration = Duration::from_secs(5);

/// The three backends `--backend` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
    Nftables,
}

impl Backend {
    pub fn flag(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
            Backend::Nftables => "nftables",
        }
    }

    fn programs(self) -> &'static [&'static str] {
        match self {
            Backend::Legacy => &[
                "iptables-legacy",
                "iptables-legacy-save",
                "iptables-legacy-restore",
                "ip6tables-legacy",
                "ip6tables-legacy-save",
                "ip6tables-legacy-restore",
            ],
            Backend::Nft => &[
                "iptables-nft",
                "iptables-nft-save",
                "iptables-nft-restore",
                "ip6tables-nft",
                "ip6tables-nft-save",
                "ip6tables-nft-restore",
            ],
            Backend::Nftables => &["nft"],
        }
    }
}

/// A pod's namespace and a peer's, joined by a veth pair; deleted when dropped.
pub struct Pod {
    pub netns: String,
    pub peer: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Pod {
    /// A fresh pod for a test of `backend`, or `None` after saying why the test cannot
    /// run here. Under `TRELLIS_E2E=require` a reason not to run is a failure.
    pub fn create(backend: Backend) -> anyhow::Result<Option<Pod>> {
        Pod::create_for(&[backend])
    }

    /// A fresh pod for a test that uses each of `backends`.
    pub fn create_for(backends: &[Backend]) -> anyhow::Result<Option<Pod>> {
        let made = backends
            .iter()
            .find_map(|backend| missing_prerequisite(*backend))
            .map_or_else(|| Pod::build(backends), Err);
        match made {
            Ok(pod) => Ok(Some(pod)),
            Err(reason) if std::env::var("TRELLIS_E2E").as_deref() == Ok("require") => {
                bail!("TRELLIS_E2E=require, but {reason}")
            }
            Err(reason) => {
                eprintln!("skipping: {reason} (set TRELLIS_E2E=require to fail instead)");
                Ok(None)
            }
        }
    }

    fn build(backends: &[Backend]) -> Result<Pod, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("trellis-pi-{}-{n}", std::process::id());
        let pod = Pod {
            netns: format!("{name}-pod"),
            peer: format!("{name}-peer"),
        };
        // On failure, dropping `pod` removes whatever was made.
        let ip = |args: &[&str]| -> Result<(), String> {
            let output = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`ip {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        };
        let (a, b) = (pod.netns.as_str(), pod.peer.as_str());
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        for netns in [a, b] {
            // Duplicate address detection would hold IPv6 addresses back for a second
            // or two; on a private link there is nothing to detect.
            let dad = "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad";
            pod_command(netns, "sh", ["-c", dad])
                .map_err(|e| format!("cannot turn off IPv6 DAD: {e}"))?;
        }
        ip(&[
            "link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b,
        ])?;
        for (netns, v4, v6) in [
            (a, &[POD_IP][..], &[POD_IP6][..]),
            (b, &[PEER_IP, PEER_IP_2][..], &[PEER_IP6, PEER_IP6_2][..]),
        ] {
            ip(&["-n", netns, "link", "set", "lo", "up"])?;
            for addr in v4 {
                ip(&[
                    "-n",
                    netns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ])?;
            }
            for addr in v6 {
                let cidr = format!("{addr}/64");
                ip(&["-n", netns, "addr", "add", &cidr, "dev", "eth0", "nodad"])?;
            }
            ip(&["-n", netns, "link", "set", "eth0", "up"])?;
        }
        if backends.contains(&Backend::Legacy) {
            // The tools may be installed on a kernel without the legacy modules.
            pod_command(a, "iptables-legacy-save", ["-t", "nat"]).map_err(|e| {
                format!(
                    "this kernel cannot run legacy iptables (no ip_tables / iptable_nat: \
                     CONFIG_IP_NF_IPTABLES_LEGACY, CONFIG_IP_NF_NAT): {e}"
                )
            })?;
        }
        Ok(pod)
    }

    /// Runs trellis-proxy-init in the pod with `--backend` and `flags`; fails unless it
    /// succeeds.
    pub fn proxy_init(&self, backend: Backend, flags: &[&str]) -> anyhow::Result<()> {
        let output = self.proxy_init_output(backend, flags)?;
        if !output.status.success() {
            bail!(
                "trellis-proxy-init {flags:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Runs trellis-proxy-init in the pod, whatever its outcome.
    pub fn proxy_init_output(&self, backend: Backend, flags: &[&str]) -> anyhow::Result<Output> {
        self.proxy_init_command(backend.flag(), flags)
            .output()
            .context("running trellis-proxy-init")
    }

    /// trellis-proxy-init in the pod with `--backend <backend>` and `flags`, seeing no
    /// `TRELLIS_*` variable but those a test adds.
    pub fn proxy_init_command(&self, backend: &str, flags: &[&str]) -> Command {
        let mut command = exec_in(&self.netns, PROXY_INIT);
        command.args(["--backend", backend]).args(flags);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRELLIS_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// `program args` inside the pod, as root; its stdout.
    pub fn run<const N: usize>(&self, program: &str, args: [&str; N]) -> anyhow::Result<String> {
        pod_command(&self.netns, program, args).map_err(anyhow::Error::msg)
    }

    /// Every rule `backend` shows, without timestamps and counters: what "the state of
    /// the tables" means when a test compares before with after.
    pub fn ruleset(&self, backend: Backend) -> anyhow::Result<String> {
        let commands: &[&str] = match backend {
            Backend::Legacy => &["iptables-legacy-save", "ip6tables-legacy-save"],
            Backend::Nft => &["iptables-nft-save", "ip6tables-nft-save"],
            Backend::Nftables => &["nft"],
        };
        let mut ruleset = String::new();
        for program in commands {
            let dump = if *program == "nft" {
                self.run(program, ["list", "ruleset"])?
            } else {
                self.run(program, [])?
            };
            ruleset.push_str(&normalise(&dump));
        }
        Ok(ruleset)
    }

    /// A listener in the pod that answers each connection with `name` and the original
    /// destination it reads (see [`Listener`]).
    pub fn listen(&self, name: &str, addr: &str) -> anyhow::Result<Listener> {
        Listener::start(&self.netns, name, addr)
    }

    pub fn peer_listen(&self, name: &str, addr: &str) -> anyhow::Result<Listener> {
        Listener::start(&self.peer, name, addr)
    }

    /// Connects from the pod (as root, like an app) and returns the greeting.
    pub fn connect(&self, addr: &str) -> anyhow::Result<String> {
        connect_in(&self.netns, addr)
    }

    /// Connects from the peer, into the pod.
    pub fn peer_connect(&self, addr: &str) -> anyhow::Result<String> {
        connect_in(&self.peer, addr)
    }

    /// Connects from the pod as `uid`/`gid` (the proxy's, say), from a separate process:
    /// the owner match looks at who created the socket.
    pub fn connect_as(&self, uid: u32, gid: u32, addr: &str) -> anyhow::Result<String> {
        let addr: SocketAddr = addr.parse().context("a socket address")?;
        let script = "exec 3<>\"/dev/tcp/$0/$1\" && cat <&3";
        let output = exec_in_as(&self.netns, uid, gid, "timeout")
            .args(["5", "bash", "-c", script])
            .args([addr.ip().to_string(), addr.port().to_string()])
            .output()
            .context("running bash as another user")?;
        if !output.status.success() {
            bail!(
                "connecting to {addr} as {uid}:{gid} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for netns in [&self.netns, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
    }
}

/// A TCP listener inside a namespace, served on its own thread until dropped. Each
/// connection is answered with one line, `NAME ORIGINAL-DESTINATION` (`-` when the
/// kernel knows none), then closed: who answered says where the rules sent it.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(netns: &str, name: &str, addr: &str) -> anyhow::Result<Listener> {
        let addr: SocketAddr = addr.parse().context("a socket address")?;
        // Bound inside the namespace; the socket stays there whichever thread serves it.
        let listener = run_in(netns, move || TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in {netns}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_owned();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let orig = original_destination(&stream)
                            .map_or_else(|| "-".to_owned(), |addr| addr.to_string());
                        let _ = stream.set_nonblocking(false);
                        let _ = writeln!(stream, "{name} {orig}");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` on an IPv6 socket, as the proxy reads it.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst)
            .ok()
            .map(|addr| SocketAddr::from(SockaddrIn::from(addr))),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|addr| SocketAddr::from(SockaddrIn6::from(addr))),
    }
}

fn connect_in(netns: &str, addr: &str) -> anyhow::Result<String> {
    let addr: SocketAddr = addr.parse().context("a socket address")?;
    let greeting = run_in(netns, move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, PATIENCE)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut greeting = String::new();
        stream.read_to_string(&mut greeting)?;
        Ok(greeting)
    })?
    .with_context(|| format!("connecting to {addr} from {netns}"))?;
    Ok(greeting.trim().to_owned())
}

fn pod_command<const N: usize>(
    netns: &str,
    program: &str,
    args: [&str; N],
) -> Result<String, String> {
    let output = exec_in(netns, program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{program} {}` in {netns} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn missing_prerequisite(backend: Backend) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(format!(
            "network namespace tests need root, and this runs as uid {}",
            nix::unistd::geteuid()
        ));
    }
    let programs = ["ip", "setpriv", "bash", "timeout", "sh"];
    for program in programs.iter().chain(backend.programs()) {
        if find_program(program).is_none() {
            return Some(format!(
                "`{program}` is not installed (the {} backend's tests need it)",
                backend.flag()
            ));
        }
    }
    None
}

/// A dump without its timestamped `#` lines and its packet counters, which change with
/// traffic rather than rules.
fn normalise(dump: &str) -> String {
    let mut table = String::new();
    for line in dump.lines().filter(|line| !line.starts_with('#')) {
        let line = if line.starts_with(':') {
            // `:OUTPUT ACCEPT [12:720]`
            line.rsplit_once(" [")
                .map_or(line, |(declaration, _)| declaration)
        } else {
            line
        };
        table.push_str(line);
        table.push('\n');
    }
    table
}
