//! `trellis-proxy`: flags and environment into a [`Config`], logging, signals, and
//! the run loop of the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use tokio_util::sync::CancellationToken;
use trellis_identity::SpiffeId;
use trellis_proxy::config::TrustAnchorsSource;
use trellis_proxy::peers::{PeerKey, PeerSource};
use trellis_proxy::scheduling::Scheduling;
use trellis_proxy::{Config, Listeners};

// jemalloc, as linkerd2-proxy uses: it keeps no bookkeeping inside or beside a
// block, so the pages of a connection's buffers that nothing writes to never become
// resident (hyper takes 8 KiB each way per HTTP/1.1 connection; a request fills a
// few hundred bytes). Measured with 1,000 idle connections: 8-9 KiB each against
// 14 with glibc's allocator, and no more CPU per request (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Trellis sidecar proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
// The anchors come from a file or inline, never both: two sources could disagree.
#[command(group(
    ArgGroup::new("anchors")
        .args(["trust_anchors", "trust_anchors_pem"])
        .required(true)
        .multiple(false)
))]
struct Args {
    /// The controller's identity service, host:port.
    #[arg(long, env = "TRELLIS_CONTROLLER_ADDR")]
    controller_addr: String,
    /// The SPIFFE ID the controller must present [default: the trust domain's
    /// trellis-system/trellis-controller].
    #[arg(long, env = "TRELLIS_CONTROLLER_IDENTITY")]
    controller_identity: Option<SpiffeId>,
    /// The mesh's trust domain.
    #[arg(long, env = "TRELLIS_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// PEM file of the mesh trust anchors (root certificates). Exactly one of this
    /// and --trust-anchors-pem.
    #[arg(long, env = "TRELLIS_TRUST_ANCHORS")]
    trust_anchors: Option<PathBuf>,
    /// The mesh trust anchors themselves, as a PEM bundle (the injector sets the
    /// variable in the pod spec, so no ConfigMap is needed in the pod's namespace).
    // A PEM starts with "-----BEGIN", which clap would otherwise take for a flag; and
    // --help need not print the whole bundle.
    #[arg(
        long,
        env = "TRELLIS_TRUST_ANCHORS_PEM",
        value_name = "PEM",
        allow_hyphen_values = true,
        hide_env_values = true
    )]
    trust_anchors_pem: Option<String>,
    /// The workload's ServiceAccount token, re-read at every renewal.
    #[arg(long, env = "TRELLIS_TOKEN_FILE")]
    token_file: PathBuf,
    /// The SPIFFE ID this workload expects; requested in the CSR.
    #[arg(long, env = "TRELLIS_IDENTITY")]
    identity: Option<SpiffeId>,
    /// This pod's name, reported to the controller (the injector sets it from the
    /// downward API).
    #[arg(long, env = "TRELLIS_POD_NAME")]
    pod_name: Option<String>,
    /// This pod's namespace, reported to the controller.
    #[arg(long, env = "TRELLIS_POD_NAMESPACE")]
    pod_namespace: Option<String>,
    #[arg(long, env = "TRELLIS_INBOUND_ADDR", default_value = "0.0.0.0:4143")]
    inbound_addr: SocketAddr,
    #[arg(long, env = "TRELLIS_OUTBOUND_ADDR", default_value = "127.0.0.1:4140")]
    outbound_addr: SocketAddr,
    /// Also listen on the IPv6 twins of the inbound and outbound addresses (`[::]`,
    /// `[::1]`), as proxy-init redirects IPv6 too; skipped where the pod has no IPv6.
    #[arg(long, env = "TRELLIS_IPV6", default_value_t = true, action = clap::ArgAction::Set)]
    ipv6: bool,
    #[arg(long, env = "TRELLIS_ADMIN_ADDR", default_value = "0.0.0.0:4191")]
    admin_addr: SocketAddr,
    /// YAML map of destination (IP or IP:port) to the SPIFFE ID it must present;
    /// re-read on SIGHUP.
    #[arg(long, env = "TRELLIS_PEERS")]
    peers: Option<PathBuf>,
    /// One destination and its identity, ADDR=SPIFFE-ID (repeatable).
    #[arg(long = "peer", value_parser = parse_peer, env = "TRELLIS_PEER", value_delimiter = ',')]
    peer: Vec<(PeerKey, String)>,
    /// Refuse inbound connections that are not mesh mTLS.
    #[arg(long, env = "TRELLIS_REQUIRE_MTLS")]
    require_mtls: bool,
    /// How long open connections may finish after SIGTERM.
    #[arg(long, env = "TRELLIS_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Renew the certificate after this fraction of its lifetime.
    #[arg(long, env = "TRELLIS_RENEW_AT", default_value_t = 0.7, value_parser = parse_fraction)]
    renew_at: f64,
    /// How long a client may stay silent before its connection is forwarded as
    /// opaque TCP (server-speaks-first protocols such as SMTP or MySQL).
    #[arg(long, env = "TRELLIS_DETECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    detect_timeout: Duration,
    /// How long an HTTP request may wait for its response headers before the proxy
    /// answers 504 (gRPC: DEADLINE_EXCEEDED).
    #[arg(long, env = "TRELLIS_RESPONSE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    response_timeout: Duration,
    /// Ports never parsed as HTTP (comma-separated); outbound they also skip
    /// detection.
    #[arg(long, env = "TRELLIS_OPAQUE_PORTS", value_delimiter = ',')]
    opaque_ports: Vec<u16>,
    /// Threads that serve connections, each with its own event loop and connection
    /// pools [default: one per CPU, at most 2]. In a pod, match the proxy's CPU limit:
    /// more threads than CPUs only take turns.
    #[arg(long, env = "TRELLIS_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// How the kernel schedules the proxy's threads: `normal` (SCHED_OTHER, the
    /// kernel's default), `batch` (SCHED_BATCH: a woken proxy thread never preempts
    /// the running one; less CPU per request where CPUs are idle, a longer tail where
    /// every CPU is busy), or `auto` (batch while the proxy's CPUs have idle time,
    /// normal while they have almost none).
    #[arg(long, env = "TRELLIS_SCHEDULING", default_value_t = Scheduling::default())]
    scheduling: Scheduling,
    /// Where procfs is mounted; `--scheduling auto` reads the CPUs' idle time from
    /// its `stat`.
    #[arg(long, env = "TRELLIS_PROCFS", default_value = "/proc")]
    procfs: PathBuf,
    /// Log format.
    #[arg(long, env = "TRELLIS_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
}

fn parse_peer(s: &str) -> Result<(PeerKey, String), String> {
    let (addr, id) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ADDR=SPIFFE-ID"))?;
    let key = addr.parse()?;
    id.parse::<SpiffeId>().map_err(|e| e.to_string())?;
    Ok((key, id.to_string()))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?}: expected a fraction between 0 and 1, such as 0.7"
        )),
    }
}

impl Args {
    fn into_config(self) -> Result<Config, String> {
        let controller_identity = match self.controller_identity {
            Some(id) => id,
            None => SpiffeId::for_service_account(
                &self.trust_domain,
                "trellis-system",
                "trellis-controller",
            )
            .map_err(|e| format!("--trust-domain {:?}: {e}", self.trust_domain))?,
        };
        let trust_anchors = match (self.trust_anchors, self.trust_anchors_pem) {
            (Some(path), None) => TrustAnchorsSource::File(path),
            (None, Some(pem)) => TrustAnchorsSource::Inline(pem),
            // clap's group already refuses both and neither; this keeps it so.
            _ => return Err("give exactly one of --trust-anchors and --trust-anchors-pem".into()),
        };
        let mut config = Config::new(
            self.controller_addr,
            controller_identity,
            trust_anchors,
            self.token_file,
        );
        config.identity = self.identity;
        config.pod_name = self.pod_name;
        config.pod_namespace = self.pod_namespace;
        config.inbound_addr = self.inbound_addr;
        config.outbound_addr = self.outbound_addr;
        config.ipv6 = self.ipv6;
        config.admin_addr = self.admin_addr;
        config.peers = PeerSource {
            file: self.peers,
            inline: self.peer,
        };
        config.require_mtls = self.require_mtls;
        config.drain_timeout = self.drain_timeout;
        config.renew_at = self.renew_at;
        config.detect_timeout = self.detect_timeout;
        config.response_timeout = self.response_timeout;
        config.opaque_ports = self.opaque_ports;
        if let Some(workers) = self.workers {
            config.workers = usize::from(workers);
        }
        config.scheduling = self.scheduling;
        config.procfs = self.procfs;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    // Before any other thread exists, so that all of them inherit the policy. A
    // kernel that refuses it costs speed, not correctness.
    if let Err(error) = config.scheduling.initial().apply_to_this_thread() {
        tracing::warn!(%error, scheduling = %config.scheduling, "cannot set the scheduling policy; running under the kernel's default");
    }
    // The control plane and the first shard run here; `trellis_proxy::run` starts a
    // thread with an event loop of its own for each further worker.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "proxy failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), trellis_proxy::Error> {
    tracing::info!(config = %serde_json::to_string(&config).unwrap_or_default(), "starting");
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    trellis_proxy::run(config, listeners, shutdown).await
}

/// SIGTERM (the kubelet) and SIGINT (a terminal) both start a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; only POST /shutdown stops the proxy");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn parse(anchors: &[&str]) -> Result<Args, clap::Error> {
        let mut args = vec![
            "trellis-proxy",
            "--controller-addr=trellis-controller:8086",
            "--token-file=/var/run/trellis/identity/token",
        ];
        args.extend_from_slice(anchors);
        Args::try_parse_from(args)
    }

    fn anchors_of(args: Args) -> TrustAnchorsSource {
        args.into_config().unwrap().trust_anchors
    }

    #[test]
    fn workers_default_to_one_per_cpu_up_to_two_and_must_be_at_least_one() {
        let anchors = "--trust-anchors=/ca.crt";
        let default = parse(&[anchors]).unwrap().into_config().unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(default.workers, cpus.min(2));
        let one = parse(&[anchors, "--workers=1"]).unwrap();
        assert_eq!(one.into_config().unwrap().workers, 1);
        let eight = parse(&[anchors, "--workers=8"]).unwrap();
        assert_eq!(
            eight.into_config().unwrap().workers,
            8,
            "a limit passed on wins"
        );
        let zero = parse(&[anchors, "--workers=0"]).unwrap_err();
        assert_eq!(zero.kind(), ErrorKind::ValueValidation, "{zero}");
    }

    #[test]
    fn the_anchors_come_from_exactly_one_of_a_file_and_the_pem_itself() {
        assert_eq!(
            anchors_of(parse(&["--trust-anchors=/etc/trellis/ca.crt"]).unwrap()),
            TrustAnchorsSource::File("/etc/trellis/ca.crt".into())
        );
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            anchors_of(parse(&["--trust-anchors-pem", pem]).unwrap()),
            TrustAnchorsSource::Inline(pem.into())
        );

        let neither = parse(&[]).unwrap_err();
        assert_eq!(neither.kind(), ErrorKind::MissingRequiredArgument);
        assert!(
            neither.to_string().contains("--trust-anchors-pem"),
            "{neither}"
        );
        let both = parse(&["--trust-anchors=/ca.crt", "--trust-anchors-pem", pem]).unwrap_err();
        assert_eq!(both.kind(), ErrorKind::ArgumentConflict, "{both}");
    }
}
