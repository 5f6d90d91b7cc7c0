//! A mesh built by a test: a bridge, a controller on the host listening on the bridge's
//! address and watching the mesh's config directory, and pods ([`MeshPod`]) whose
//! sidecars run as uid 2102 behind proxy-init's rules.
//!
//! Unlike `meshctl local`, every piece is a value the test holds, so the story can
//! change one piece (an object in the config directory, a dead controller, a missing
//! sidecar) and each piece is removed by its `Drop` however the test ends. When the
//! test fails, the directory with the logs is kept and its path printed.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use trellis_netns::{Bridge, Pod, exec_in};

use crate::{Daemon, MeshPod, Names, TestIssuer, binary, http_get};

const CONTROLLER_PORT: u16 = 8086;
const CONTROLLER_ADMIN_PORT: u16 = 9990;
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
pub(crate) const STARTUP: Duration = Duration::from_secs(20);

/// The bridge, the controller and the token issuer of one test.
pub struct Mesh {
    pub names: Names,
    dir: PathBuf,
    bridge: Bridge,
    issuer: TestIssuer,
    controller: Option<Daemon>,
    /// The flags the controller was first started with: a restart is the same
    /// controller, with the same CA, JWKS and config directory.
    controller_args: Vec<String>,
    /// How often the controller was started; each run logs to its own file.
    controller_runs: u32,
    /// The next pod's host index in the subnet (1 is the bridge).
    next_index: u32,
}

impl Mesh {
    /// Creates the bridge and starts the controller with a development CA, the
    /// test's JWKS and an empty config directory; returns once the controller accepts
    /// connections.
    pub fn start() -> anyhow::Result<Mesh> {
        Mesh::start_with(&[])
    }

    /// [`start`](Self::start), with more flags for the controller: a story that must
    /// see a renewal asks for `--cert-lifetime 20s` rather than wait a day.
    pub fn start_with(controller_args: &[&str]) -> anyhow::Result<Mesh> {
        let mut mesh = Mesh::without_controller()?;
        mesh.controller_args = controller_args.iter().map(ToString::to_string).collect();
        mesh.start_controller()?;
        mesh.install_trust_anchors()?;
        Ok(mesh)
    }

    /// The bridge, the directories and the token issuer, with nothing listening on
    /// the controller's address yet: for a story that plays the controller itself.
    pub fn without_controller() -> anyhow::Result<Mesh> {
        let names = Names::new();
        let dir = std::env::temp_dir().join(format!("trellis-e2e-{}", names.tag));
        let _ = fs::remove_dir_all(&dir);
        // Proxies run as uid 2102 and read their tokens and the trust anchors here.
        make_readable_dir(&dir)?;
        make_readable_dir(&dir.join("config"))?;
        let gateway = names.subnet.host(1).context("subnet too small")?;
        let bridge = Bridge::create(&names.bridge(), gateway)?;
        let mesh = Mesh {
            names,
            dir,
            bridge,
            issuer: TestIssuer::generate()?,
            controller: None,
            controller_args: Vec::new(),
            controller_runs: 0,
            next_index: 2,
        };
        mesh.issuer.write_jwks(&mesh.jwks())?;
        Ok(mesh)
    }

    /// Starts the controller (again) and waits until it accepts connections.
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.controller.is_none(), "the controller is running");
        let mut controller = Command::new(binary("trellis-controller"));
        controller
            .arg("--listen")
            .arg(self.controller_addr().to_string())
            .arg("--admin-addr")
            .arg(self.controller_admin().to_string())
            .arg("--dev-ca")
            .arg(self.ca_dir())
            .arg("--token-jwks")
            .arg(self.jwks())
            .arg("--config-dir")
            .arg(self.config_dir())
            .args(["--trust-domain", TRUST_DOMAIN])
            .args(&self.controller_args);
        self.controller_runs += 1;
        let log = self
            .dir
            .join(format!("controller.{}.log", self.controller_runs));
        let mut daemon = Daemon::spawn("the controller", controller, &log)?;
        let (addr, root) = (self.controller_addr(), self.ca_dir().join("ca.crt"));
        daemon.wait_ready(STARTUP, &format!("accepting connections on {addr}"), || {
            root.exists() && TcpStream::connect(addr).is_ok()
        })?;
        self.controller = Some(daemon);
        Ok(())
    }

    /// Kills the controller with SIGKILL: no stream is closed politely.
    pub fn kill_controller(&mut self) -> anyhow::Result<()> {
        let mut controller = self
            .controller
            .take()
            .context("the controller is not running")?;
        controller.kill()
    }

    /// Copies the development CA's root where proxies (uid 2102) can read it.
    pub fn install_trust_anchors(&self) -> anyhow::Result<()> {
        let anchors = self.trust_anchors();
        fs::copy(self.ca_dir().join("ca.crt"), &anchors)?;
        fs::set_permissions(&anchors, fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    pub fn controller_addr(&self) -> SocketAddr {
        SocketAddr::from((self.bridge.gateway().addr(), CONTROLLER_PORT))
    }

    /// The controller's HTTP admin server: `/proxies`, `/sources`, `/metrics`.
    pub fn controller_admin(&self) -> SocketAddr {
        SocketAddr::from((self.bridge.gateway().addr(), CONTROLLER_ADMIN_PORT))
    }

    /// The controller's `GET /proxies`: every connected proxy and what it ACKed.
    pub fn proxies(&self) -> anyhow::Result<serde_json::Value> {
        let (status, body) = http_get(self.controller_admin(), "/proxies")?;
        anyhow::ensure!(status == 200, "GET /proxies answered {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// The `--dev-ca` directory (`ca.crt`, `issuer.crt` and their keys).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// The JWKS the controller checks tokens against.
    pub fn jwks(&self) -> PathBuf {
        self.dir.join("jwks.json")
    }

    fn trust_anchors(&self) -> PathBuf {
        self.dir.join("trust-anchors.pem")
    }

    /// The controller's `--config-dir`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Writes `yaml` as `file` in the config directory the way an editor saving it
    /// or a ConfigMap update would: whole, by renaming a hidden temporary file over
    /// it, so the controller never reads half of it.
    pub fn write_config(&self, file: &str, yaml: &str) -> anyhow::Result<()> {
        let path = self.config_dir().join(file);
        let tmp = self.config_dir().join(format!(".{file}.tmp"));
        fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
    }

    /// Publishes `pod`'s address and identity as `meshctl local` does, an Endpoints
    /// of its own (`pod.NAME`, in `pod-NAME.yaml`), so that every proxy calls it over mTLS.
    pub fn publish_pod(&self, pod: &MeshPod) -> anyhow::Result<()> {
        self.write_config(
            &format!("pod-{}.yaml", pod.name),
            &format!(
                "apiVersion: trellis.io/v1alpha1
kind: Endpoints
metadata: {{name: pod.{name}, namespace: {namespace}}}
spec:
  endpoints:
  - {{address: {ip}, identity: \"{identity}\", pod: {namespace}/{name}}}
",
                name = pod.name,
                namespace = pod.namespace,
                ip = pod.ip,
                identity = pod.identity,
            ),
        )
    }

    /// The `n`-th virtual IP, counting down from the top of the subnet as `meshctl
    /// local` does, far from the pods, which count up.
    pub fn virtual_ip(&self, n: u32) -> anyhow::Result<Ipv4Addr> {
        let host = self.names.subnet.host(254 - n).context("no such address")?;
        Ok(host.addr())
    }

    /// Everything the controller logged so far, over all its runs.
    pub fn controller_log(&self) -> String {
        (1..=self.controller_runs)
            .filter_map(|run| {
                fs::read_to_string(self.dir.join(format!("controller.{run}.log"))).ok()
            })
            .collect()
    }

    /// The serials of the certificates the controller logged issuing for `identity`,
    /// from its `issued a workload certificate spiffe_id=... serial=...` events.
    pub fn serials_issued(&self, identity: &str) -> std::collections::BTreeSet<String> {
        fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        }
        self.controller_log()
            .lines()
            .filter(|line| line.contains("issued a workload certificate"))
            .filter(|line| field(line, "spiffe_id") == Some(identity))
            .filter_map(|line| field(line, "serial").map(str::to_string))
            .collect()
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
        let dir = self.dir.join(name);
        make_readable_dir(&dir)?;
        let token = dir.join("token");
        fs::write(&token, self.issuer.token(namespace, service_account, name)?)?;
        fs::set_permissions(&token, fs::Permissions::from_mode(0o644))?;

        let init = exec_in(&netns, binary("trellis-proxy-init")).output()?;
        anyhow::ensure!(
            init.status.success(),
            "trellis-proxy-init failed in {netns} ({}): {}",
            init.status,
            String::from_utf8_lossy(&init.stderr)
        );
        Ok(MeshPod {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ip: ip.addr(),
            identity: format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"),
            dir,
            pod,
            proxy: None,
            controller_addr: self.controller_addr(),
            trust_anchors: self.trust_anchors(),
        })
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

/// Creates `dir` and makes it 0755 whatever the umask: proxies read from it.
fn make_readable_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    Ok(())
}
