//! The proxy's effective configuration, built once at start-up by `main` from flags
//! and `TRELLIS_*` variables (tests build it directly).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Serialize;
use trellis_identity::SpiffeId;

use crate::peers::PeerSource;
use crate::scheduling::Scheduling;

/// Everything the proxy needs to know before it accepts its first connection.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Where redirected inbound connections arrive (iptables `PREROUTING` → here).
    pub inbound_addr: SocketAddr,
    /// Where the app's redirected outbound connections arrive (`OUTPUT` → here).
    pub outbound_addr: SocketAddr,
    /// Also listen on the IPv6 twins of the inbound and outbound addresses.
    pub ipv6: bool,
    /// `/live`, `/ready`, `/metrics`, `/shutdown`; never redirected by proxy-init.
    pub admin_addr: SocketAddr,
    /// The controller's identity service, `host:port`.
    pub controller_addr: String,
    /// The identity the controller must present; anything else is an impostor.
    #[serde(serialize_with = "display")]
    pub controller_identity: SpiffeId,
    /// The mesh roots every peer chain must lead to: a PEM file, or the PEM itself.
    pub trust_anchors: TrustAnchorsSource,
    /// The ServiceAccount token proving who this workload is; re-read at every
    /// renewal, since the kubelet rotates it.
    pub token_file: PathBuf,
    /// The identity this workload expects to be issued, requested in the CSR. The
    /// controller decides from the token; this only makes a mismatch loud.
    #[serde(serialize_with = "display_opt")]
    pub identity: Option<SpiffeId>,
    /// This pod's name and namespace, reported to the controller.
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    /// Where the static destination → identity map comes from.
    pub peers: PeerSource,
    /// Refuse inbound connections that are not mesh mTLS.
    pub require_mtls: bool,
    /// How long open connections may take to finish after shutdown begins.
    #[serde(serialize_with = "duration")]
    pub drain_timeout: Duration,
    /// The fraction of a certificate's lifetime after which it is renewed.
    pub renew_at: f64,
    /// How long a client may stay silent before its connection is taken to be a
    /// server-speaks-first protocol and forwarded opaque.
    #[serde(serialize_with = "duration")]
    pub detect_timeout: Duration,
    /// How long an HTTP request may wait for its response headers (504 after).
    #[serde(serialize_with = "duration")]
    pub response_timeout: Duration,
    /// Ports never parsed as HTTP (MySQL, SMTP…). Outbound they skip detection
    /// altogether; inbound the first bytes are still read, to tell a peer sidecar's
    /// mTLS from plaintext.
    pub opaque_ports: Vec<u16>,
    /// Threads serving connections, each a single-threaded event loop with pools of
    /// its own ([`crate::shard`]); the first also runs the control plane.
    pub workers: usize,
    /// The CPU scheduling policy of those threads, set by `main` before it starts
    /// them ([`crate::scheduling`]).
    pub scheduling: Scheduling,
    /// Where procfs is mounted: `--scheduling auto` reads the CPUs' idle time from
    /// its `stat`.
    pub procfs: PathBuf,
}

impl Config {
    /// The addresses and defaults of DESIGN.md, for the given controller, anchors and
    /// token.
    pub fn new(
        controller_addr: String,
        controller_identity: SpiffeId,
        trust_anchors: TrustAnchorsSource,
        token_file: PathBuf,
    ) -> Self {
        Config {
            inbound_addr: ([0, 0, 0, 0], 4143).into(),
            outbound_addr: ([127, 0, 0, 1], 4140).into(),
            ipv6: true,
            admin_addr: ([0, 0, 0, 0], 4191).into(),
            controller_addr,
            controller_identity,
            trust_anchors,
            token_file,
            identity: None,
            pod_name: None,
            pod_namespace: None,
            peers: PeerSource::default(),
            require_mtls: false,
            drain_timeout: Duration::from_secs(30),
            renew_at: 0.7,
            detect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            opaque_ports: Vec::new(),
            workers: default_workers(),
            scheduling: Scheduling::default(),
            procfs: PathBuf::from("/proc"),
        }
    }
}

/// The most worker threads the proxy starts unless told otherwise: Istio's default
/// sidecar concurrency. A sidecar shares its pod's CPUs with the app, and every worker
/// adds a mesh connection per peer and its own pools; on this many workers the two-hop
/// knee was measured (BENCHMARKS.md, "one worker or one per CPU"). A CPU limit the
/// injector passes on (`TRELLIS_WORKERS`) decides instead.
const DEFAULT_MAX_WORKERS: usize = 2;

/// One worker per CPU the proxy may use (its cgroup's quota and its affinity, as the
/// standard library counts them), at most [`DEFAULT_MAX_WORKERS`]: without a CPU limit
/// a sidecar on a 64-core node would otherwise start 64.
fn default_workers() -> usize {
    workers_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn workers_for(cpus: usize) -> usize {
    cpus.clamp(1, DEFAULT_MAX_WORKERS)
}

/// Where the trust anchors come from. Read once, at start-up: a new root reaches a
/// proxy with its next restart either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustAnchorsSource {
    /// A PEM file (`--trust-anchors`), e.g. a mounted ConfigMap.
    File(PathBuf),
    /// The PEM bundle itself (`--trust-anchors-pem`, `TRELLIS_TRUST_ANCHORS_PEM`), as
    /// the injector writes it into the pod spec, so that no object has to exist in the
    /// pod's namespace.
    Inline(String),
}

impl TrustAnchorsSource {
    /// The flag it came from, as an operator would look for it, for errors.
    pub fn origin(&self) -> String {
        match self {
            TrustAnchorsSource::File(path) => format!("--trust-anchors {}", path.display()),
            TrustAnchorsSource::Inline(_) => {
                "--trust-anchors-pem (TRELLIS_TRUST_ANCHORS_PEM)".to_owned()
            }
        }
    }
}

/// `/config` shows the file's path, or how many certificates an inline bundle holds,
/// not the PEM itself: it is public, but would drown the rest of the page.
impl Serialize for TrustAnchorsSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TrustAnchorsSource::File(path) => path.serialize(s),
            TrustAnchorsSource::Inline(pem) => {
                let count = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .filter(Result::is_ok)
                    .count();
                let noun = if count == 1 {
                    "certificate"
                } else {
                    "certificates"
                };
                s.collect_str(&format_args!("inline ({count} {noun})"))
            }
        }
    }
}

fn display<S: serde::Serializer>(id: &SpiffeId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

pub(crate) fn display_opt<S: serde::Serializer>(
    id: &Option<SpiffeId>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

fn duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_runs_one_worker_per_cpu_up_to_two() {
        assert_eq!(workers_for(1), 1);
        assert_eq!(workers_for(2), 2);
        assert_eq!(workers_for(64), 2, "a big node without a CPU limit");
    }

    #[test]
    fn the_config_page_shows_where_the_anchors_are_not_the_pem() {
        let root = |name: &str| {
            rcgen::generate_simple_self_signed(vec![name.to_owned()])
                .unwrap()
                .cert
                .pem()
        };
        let bundle = format!("{}{}", root("a.test"), root("b.test"));
        let shown = |source: TrustAnchorsSource| serde_json::to_value(source).unwrap();
        assert_eq!(
            shown(TrustAnchorsSource::Inline(bundle)),
            "inline (2 certificates)"
        );
        assert_eq!(
            shown(TrustAnchorsSource::Inline(root("a.test"))),
            "inline (1 certificate)"
        );
        assert_eq!(
            shown(TrustAnchorsSource::File("/etc/trellis/ca.crt".into())),
            "/etc/trellis/ca.crt"
        );
    }
}
