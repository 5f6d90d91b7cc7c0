//! The state directory of a local mesh: what lives where, and the records that let
//! one `meshctl` invocation pick up what another made.
//!
//! ```text
//! STATE/local.json            bridge, subnet, trust domain (written first by `up`)
//! STATE/ca/                   the controller's --dev-ca directory
//! STATE/trust-anchors.pem     a world-readable copy of the root, for proxies (uid 2102)
//! STATE/signing-key.pem       the token issuer's private key (0600)
//! STATE/jwks.json             its public key, trusted by the controller
//! STATE/config/               the controller's --config-dir (see `local/objects.rs`):
//!   pod-NAME.yaml             each pod's own Endpoints (its address and identity)
//!   service-NS-SVC.yaml       each service: its Service and its Endpoints
//! STATE/controller.{pid,log}
//! STATE/pods/NAME/pod.json    the pod's record (written before anything is created)
//! STATE/pods/NAME/token       its ServiceAccount token (0644: the proxy must read it)
//! STATE/pods/NAME/{proxy,app}.{pid,log}
//! STATE/services/NS.SVC.json  a service's record: its virtual IP
//! STATE/.lock                 serialises address allocation and every change to
//!                             config/ and the pods' hosts files (/etc/netns/NETNS/)
//! ```
//!
//! Everything a proxy reads is world-readable and every directory on the way is 0755,
//! because proxies run as uid 2102, not root.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use trellis_netns::Ipv4Cidr;

use crate::Error;

/// The controller's gRPC port (DESIGN.md), on the bridge's gateway address.
pub const CONTROLLER_PORT: u16 = 8086;

/// Paths inside one local mesh's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: PathBuf) -> Self {
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn settings(&self) -> PathBuf {
        self.root.join("local.json")
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// Where the controller's `--dev-ca` writes the root certificate.
    pub fn ca_root(&self) -> PathBuf {
        self.ca_dir().join("ca.crt")
    }
    pub fn trust_anchors(&self) -> PathBuf {
        self.root.join("trust-anchors.pem")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing-key.pem")
    }
    pub fn jwks(&self) -> PathBuf {
        self.root.join("jwks.json")
    }
    /// The controller's `--config-dir`: what discovery tells every proxy.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn services_dir(&self) -> PathBuf {
        self.root.join("services")
    }
    /// The record of service `name` in `namespace`. A dot cannot occur in either
    /// (both are DNS labels), so the file name is unambiguous.
    pub fn service(&self, namespace: &str, name: &str) -> PathBuf {
        self.services_dir().join(format!("{namespace}.{name}.json"))
    }
    pub fn controller_pid(&self) -> PathBuf {
        self.root.join("controller.pid")
    }
    pub fn controller_log(&self) -> PathBuf {
        self.root.join("controller.log")
    }
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }
    pub fn pod(&self, name: &str) -> PodFiles {
        PodFiles {
            dir: self.pods_dir().join(name),
        }
    }

    /// Creates the directory and its subdirectories (0755) if needed.
    pub fn create(&self) -> Result<(), Error> {
        make_dir(&self.root)?;
        make_dir(&self.pods_dir())?;
        make_dir(&self.services_dir())?;
        make_dir(&self.config_dir())
    }

    /// The settings `up` wrote, or [`Error::NotUp`].
    pub fn load_settings(&self) -> Result<LocalSettings, Error> {
        if !self.settings().exists() {
            return Err(Error::NotUp {
                dir: self.root.clone(),
            });
        }
        read_json(&self.settings(), "local mesh settings")
    }

    /// Every pod record, sorted by name; unreadable records are skipped with a warning.
    pub fn pods(&self) -> Result<Vec<PodRecord>, Error> {
        let mut pods = Vec::new();
        for dir in entries(&self.pods_dir())? {
            let files = PodFiles { dir };
            match read_json::<PodRecord>(&files.record(), "pod record") {
                Ok(pod) => pods.push(pod),
                Err(error) => eprintln!("warning: skipping {}: {error}", files.dir.display()),
            }
        }
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Every service record, sorted by namespace and name.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, Error> {
        let mut services = Vec::new();
        for path in entries(&self.services_dir())? {
            // Skips `write_file`'s temporary files.
            if path.extension().is_some_and(|e| e == "json") {
                services.push(read_json::<ServiceRecord>(&path, "service record")?);
            }
        }
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(services)
    }

    /// Holds an exclusive lock on the state directory until dropped.
    pub fn lock(&self) -> Result<Flock<File>, Error> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("cannot open", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::Io {
            what: "cannot lock",
            path,
            error: errno.into(),
        })
    }
}

/// What `local up` chose, for every later command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalSettings {
    pub bridge: String,
    /// The pods' subnet, e.g. `10.199.0.0/24`; the gateway is its first address.
    pub subnet: String,
    pub trust_domain: String,
}

impl LocalSettings {
    pub fn subnet(&self) -> Result<Ipv4Cidr, Error> {
        self.subnet.parse().map_err(|_| Error::InvalidFlag {
            flag: "subnet",
            value: self.subnet.clone(),
            reason: "not an IPv4 subnet like 10.199.0.0/24".into(),
        })
    }

    /// The bridge's own address: the first host of the subnet.
    pub fn gateway(&self) -> Result<Ipv4Cidr, Error> {
        let subnet = self.subnet()?;
        subnet.host(1).ok_or_else(|| Error::InvalidFlag {
            flag: "subnet",
            value: self.subnet.clone(),
            reason: "too small for a gateway and a pod".into(),
        })
    }

    pub fn controller_addr(&self) -> Result<SocketAddr, Error> {
        Ok(SocketAddr::from((self.gateway()?.addr(), CONTROLLER_PORT)))
    }

    /// Pod namespaces carry the bridge's name, so meshes on two bridges never collide.
    pub fn netns_of(&self, pod: &str) -> String {
        format!("{}-{pod}", self.bridge)
    }

    /// The host end of a pod's veth: bridge name, `v`, and the pod's host index.
    pub fn host_veth_of(&self, host_index: u32) -> String {
        format!("{}v{host_index}", self.bridge)
    }
}

/// One pod, as `local run` made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub identity: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub host_veth: String,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub command: Vec<String>,
    /// The service (in the pod's namespace) whose endpoint the pod is.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub phase: Phase,
}

/// Where a pod is in its life, which decides how discovery shows it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Created, but its app may not listen yet: a not-ready endpoint of its service.
    #[default]
    Starting,
    /// Its sidecar is ready and its app listens: a ready endpoint.
    Ready,
    /// Being removed: no longer an endpoint, even if another `run` rewrites its
    /// service's file before the record is gone.
    Stopping,
}

/// One service of `local run --service`: its endpoints are the pods that name it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceRecord {
    pub namespace: String,
    pub name: String,
    /// Its virtual IP, which every pod's hosts file gives for its names.
    pub vip: Ipv4Addr,
}

/// The files of one pod.
#[derive(Debug, Clone)]
pub struct PodFiles {
    dir: PathBuf,
}

impl PodFiles {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("pod.json")
    }
    pub fn token(&self) -> PathBuf {
        self.dir.join("token")
    }
    pub fn proxy_pid(&self) -> PathBuf {
        self.dir.join("proxy.pid")
    }
    pub fn proxy_log(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }
    pub fn app_pid(&self) -> PathBuf {
        self.dir.join("app.pid")
    }
    pub fn app_log(&self) -> PathBuf {
        self.dir.join("app.log")
    }
}

/// The paths of the entries of `dir`; none if it does not exist.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().map(|entry| entry.path()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("cannot list", dir)(e)),
    }
}

/// Creates `dir` (and parents) and makes it 0755 whatever the umask.
pub fn make_dir(dir: &Path) -> Result<(), Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(Error::io("cannot create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(Error::io("cannot set permissions of", dir))
}

/// Writes `contents` to `path` with `mode`, atomically (temporary file, then rename),
/// so a reader (the controller's file source, a later `meshctl`) never sees half a
/// file. The temporary file's extension is `.tmp`, which the file source ignores.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io("cannot write", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all())
        .map_err(Error::io("cannot write", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("cannot replace", path))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| Error::InvalidFile {
        what: "JSON",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    write_file(path, &text, 0o644)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    what: &'static str,
) -> Result<T, Error> {
    let text = fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidFile {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The last `lines` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return format!("\n  (no log at {})", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    let mut out = format!("\n  last lines of {}:", path.display());
    for line in tail {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_bridge_and_fit_the_kernel() {
        let settings = LocalSettings {
            bridge: "trellis0".into(),
            subnet: "10.199.0.0/24".into(),
            trust_domain: "cluster.local".into(),
        };
        assert_eq!(settings.gateway().unwrap().to_string(), "10.199.0.1/24");
        assert_eq!(
            settings.controller_addr().unwrap().to_string(),
            "10.199.0.1:8086"
        );
        assert_eq!(settings.netns_of("web"), "trellis0-web");
        assert_eq!(settings.host_veth_of(254), "trellis0v254");
    }
}
