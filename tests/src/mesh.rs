//! A mesh built by a test: a bridge, a controller on the host listening on the bridge's
//! address, and pods whose sidecars run as uid 2102 behind proxy-init's rules.
//!
//! Unlike `meshctl local`, every piece is a value the test holds, so the story can
//! change one piece (a peers map, a missing sidecar) and each piece is removed by its
//! `Drop` however the test ends. When the test fails, the directory with the logs is
//! kept and its path printed.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trellis_netns::{Bridge, Pod, exec_in, exec_in_as, netns_pids};

use crate::{Daemon, Metrics, Names, TestIssuer, binary, http_get, wait_until};

pub const PROXY_UID: u32 = 2102;
pub const ADMIN_PORT: u16 = 4191;
const CONTROLLER_PORT: u16 = 8086;
const TRUST_DOMAIN: &str = "cluster.local";
const STARTUP: Duration = Duration::from_secs(20);

/// The bridge, the controller and the token issuer of one test.
pub struct Mesh {
    pub names: Names,
    dir: PathBuf,
    bridge: Bridge,
    issuer: TestIssuer,
    controller: Option<Daemon>,
    /// The next pod's host index in the subnet (1 is the bridge).
    next_index: u32,
}

impl Mesh {
    /// Creates the bridge and starts the controller with a development CA and the
    /// test's JWKS; returns once the controller accepts connections.
    pub fn start() -> anyhow::Result<Mesh> {
        Mesh::start_with(&[])
    }

    /// [`start`](Self::start), with more flags for the controller: a story that must
    /// see a renewal asks for `--cert-lifetime 20s` rather than wait a day.
    pub fn start_with(controller_args: &[&str]) -> anyhow::Result<Mesh> {
        let names = Names::new();
        let dir = std::env::temp_dir().join(format!("trellis-e2e-{}", names.tag));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        // Proxies run as uid 2102 and read their tokens and the trust anchors here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let gateway = names.subnet.host(1).context("subnet too small")?;
        let bridge = Bridge::create(&names.bridge(), gateway)?;
        let mut mesh = Mesh {
            names,
            dir,
            bridge,
            issuer: TestIssuer::generate()?,
            controller: None,
            next_index: 2,
        };
        mesh.issuer.write_jwks(&mesh.dir.join("jwks.json"))?;
        let mut controller = Command::new(binary("trellis-controller"));
        controller
            .arg("--listen")
            .arg(mesh.controller_addr().to_string())
            .arg("--admin-addr")
            .arg(SocketAddr::new(mesh.controller_addr().ip(), 9990).to_string())
            .arg("--dev-ca")
            .arg(mesh.dir.join("ca"))
            .arg("--token-jwks")
            .arg(mesh.dir.join("jwks.json"))
            .args(["--trust-domain", TRUST_DOMAIN])
            .args(controller_args);
        let log = mesh.dir.join("controller.log");
        mesh.controller = Some(Daemon::spawn("the controller", controller, &log)?);

        let (addr, root) = (mesh.controller_addr(), mesh.dir.join("ca/ca.crt"));
        let up = wait_until(STARTUP, || {
            root.exists() && TcpStream::connect(addr).is_ok()
        });
        if !up {
            let tail = mesh
                .controller
                .as_ref()
                .map(|c| c.log_tail(20))
                .unwrap_or_default();
            anyhow::bail!("the controller did not come up on {addr}\n{tail}");
        }
        let anchors = mesh.trust_anchors();
        fs::copy(&root, &anchors)?;
        fs::set_permissions(&anchors, fs::Permissions::from_mode(0o644))?;
        Ok(mesh)
    }

    pub fn controller_addr(&self) -> SocketAddr {
        SocketAddr::from((self.bridge.gateway().addr(), CONTROLLER_PORT))
    }

    fn trust_anchors(&self) -> PathBuf {
        self.dir.join("trust-anchors.pem")
    }

    /// Everything the controller logged so far.
    pub fn controller_log(&self) -> String {
        self.controller
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default()
    }

    /// Where the test may put files (captures) that should go away with the mesh.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates pod `name` (namespace, veth, address), installs proxy-init's rules in it
    /// and writes its ServiceAccount token. Its sidecar starts with
    /// [`MeshPod::start_sidecar`].
    pub fn pod(
        &mut self,
        name: &str,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<MeshPod> {
        let index = self.next_index;
        self.next_index += 1;
        let ip = self.names.subnet.host(index).context("subnet full")?;
        let netns = self.names.netns(name);
        let pod = Pod::create(&netns, &self.bridge, ip, &self.names.veth(index))?;
        let pod = MeshPod {
            name: name.to_string(),
            ip: ip.addr(),
            identity: format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"),
            dir: self.dir.join(name),
            pod,
            proxy: None,
            controller_addr: self.controller_addr(),
            trust_anchors: self.trust_anchors(),
        };
        fs::create_dir_all(&pod.dir)?;
        fs::set_permissions(&pod.dir, fs::Permissions::from_mode(0o755))?;
        let token = pod.dir.join("token");
        fs::write(&token, self.issuer.token(namespace, service_account, name)?)?;
        fs::set_permissions(&token, fs::Permissions::from_mode(0o644))?;

        let init = exec_in(&netns, binary("trellis-proxy-init")).output()?;
        anyhow::ensure!(
            init.status.success(),
            "trellis-proxy-init failed in {netns} ({}): {}",
            init.status,
            String::from_utf8_lossy(&init.stderr)
        );
        Ok(pod)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.controller.take();
        if let Err(error) = self.bridge.delete() {
            eprintln!("cleanup: {error}");
        }
        if std::thread::panicking() {
            eprintln!("the mesh's logs are kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A pod of a [`Mesh`] and, once started, its sidecar.
pub struct MeshPod {
    pub name: String,
    pub ip: Ipv4Addr,
    /// `spiffe://cluster.local/ns/NS/sa/SA`, what its token entitles it to.
    pub identity: String,
    dir: PathBuf,
    pod: Pod,
    proxy: Option<Daemon>,
    controller_addr: SocketAddr,
    trust_anchors: PathBuf,
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

    /// Starts the sidecar as uid 2102 with `peers` (pod IP → the identity its server
    /// must present) as its peers map, and waits for `/ready`.
    pub fn start_sidecar(&mut self, peers: &[(Ipv4Addr, &str)]) -> anyhow::Result<()> {
        self.start_sidecar_with(peers, &[])
    }

    /// [`start_sidecar`](Self::start_sidecar), with more flags for the proxy (such as
    /// a short `--drain-timeout`).
    pub fn start_sidecar_with(
        &mut self,
        peers: &[(Ipv4Addr, &str)],
        proxy_args: &[&str],
    ) -> anyhow::Result<()> {
        let peers_file = self.dir.join("peers.yaml");
        let yaml: String = peers
            .iter()
            .map(|(ip, id)| format!("\"{ip}\": \"{id}\"\n"))
            .collect();
        fs::write(
            &peers_file,
            if yaml.is_empty() {
                "{}\n".to_string()
            } else {
                yaml
            },
        )?;
        fs::set_permissions(&peers_file, fs::Permissions::from_mode(0o644))?;

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
            .arg("--peers")
            .arg(&peers_file)
            .args(proxy_args);
        let what = format!("the proxy of pod {}", self.name);
        let mut daemon = Daemon::spawn(&what, proxy, &self.dir.join("proxy.log"))?;
        let admin = self.admin();
        let ready = wait_until(STARTUP, || {
            daemon.exited().is_some()
                || http_get(admin, "/ready").is_ok_and(|(status, _)| status == 200)
        });
        if !ready || daemon.exited().is_some() {
            anyhow::bail!(
                "{what} did not become ready on {admin}\n{}",
                daemon.log_tail(30)
            );
        }
        self.proxy = Some(daemon);
        Ok(())
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

    /// Sends SIGTERM to the sidecar, as the kubelet does when the pod is deleted.
    pub fn terminate_sidecar(&self) -> anyhow::Result<()> {
        let proxy = self
            .proxy
            .as_ref()
            .context("the sidecar was never started")?;
        proxy.terminate()
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
