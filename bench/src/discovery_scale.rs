//! Discovery at scale (issue 5): one real `trellis-controller` reading a config
//! directory of many services, and many discovery streams that behave like proxies
//! (subscribe to the four types, ACK every response). Measured: how long until every
//! stream has the whole first snapshot, how long from one edit of an Endpoints file
//! until each stream has ACKed the new Endpoints set (p50, p99, and the last ACK),
//! and the controller's resident memory before the streams, after the first sync, and
//! at its peak.
//!
//! Convergence is judged by content, not by version strings: a stream has a snapshot
//! when its Service set has every service and its Endpoints set every endpoint
//! (one more after each change). The streams count what a response carries rather
//! than decode it, unless told to ([`Decode`]): they run on the controller's cores.

mod stream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use serde::Serialize;
use tokio::sync::mpsc;
use trellis_control_plane::token::mint;
use trellis_identity::{TrustAnchors, tls};
use trellis_proto::discovery::v1::type_url;

pub use self::stream::Decode;
use self::stream::{Event, open_stream};
use crate::Error;
use crate::resources::{self, Usage};
use crate::scenario::Daemon;

const NAMESPACE: &str = "scale";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub services: usize,
    /// Endpoints per service.
    pub endpoints: usize,
    /// Discovery streams, each on its own TLS connection, as proxies open them.
    pub streams: usize,
    /// Endpoint additions, one at a time, each measured.
    pub changes: usize,
    /// The `trellis-controller` binary.
    pub controller: PathBuf,
    /// The config directory, the dev CA, the JWKS and the controller's log go here.
    pub dir: PathBuf,
    /// How long any one phase (start, first sync, one change) may take.
    pub timeout: Duration,
    /// How much of each response the streams decode (see `stream.rs`).
    pub decode: Decode,
}

/// Percentiles of per-stream times, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub streams: usize,
    /// How much of each response the streams decoded before ACKing it.
    pub decode: Decode,
    /// From the first connection attempt until the last stream has ACKed the whole
    /// first snapshot (all four types).
    pub initial_sync_all_ms: f64,
    /// Per stream: from its own connection attempt to its full first snapshot ACKed.
    pub initial_sync: Spread,
    /// Per change: from the file's rename into place to each stream's ACK of the new
    /// Endpoints set; `max_ms` is the last ACK.
    pub changes: Vec<Spread>,
    /// The controller once ready, before any stream.
    pub memory_idle: Usage,
    /// Right after every stream has the first snapshot.
    pub memory_synced: Usage,
    /// At the end; `hwm_bytes` is the peak over the whole run.
    pub memory_end: Usage,
    /// Streams `/proxies` lists with every type in sync, at the end.
    pub proxies_in_sync: usize,
    /// The encoded size of the largest response (the whole Endpoints set).
    pub largest_response_bytes: usize,
    /// The controller's CPU seconds (user + system) over the changes, per change.
    pub controller_cpu_seconds_per_change: f64,
    /// This harness's own CPU seconds over the changes, per change (it shares the
    /// cores with the controller: decoding every set on every stream).
    pub harness_cpu_seconds_per_change: f64,
}

/// What the harness knows about one stream.
#[derive(Default, Clone)]
struct StreamState {
    services: usize,
    endpoints: usize,
    routes: bool,
    policies: bool,
    endpoints_acked_at: Option<Instant>,
}

/// Writes the config, starts the controller, opens the streams and measures.
pub fn run(config: &ScaleConfig) -> Result<ScaleReport, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the stream runtime", e))?;
    runtime.block_on(measure(config))
}

async fn measure(config: &ScaleConfig) -> Result<ScaleReport, Error> {
    let objects = config.dir.join("objects");
    std::fs::create_dir_all(&objects)
        .map_err(|e| Error::io(format!("create {}", objects.display()), e))?;
    for service in 0..config.services {
        write(
            &objects.join(format!("svc-{service:05}.yaml")),
            &service_yaml(service),
        )?;
        write(
            &endpoints_file(&objects, service),
            &endpoints_yaml(service, config.endpoints),
        )?;
    }
    let grpc = free_port()?;
    let admin = free_port()?;
    let ca_dir = config.dir.join("ca");
    let mut controller = start_controller(config, &objects, &ca_dir, grpc, admin)?;
    wait_until(config.timeout, "trellis-controller /ready", || {
        controller.check_alive()?;
        Ok(http_get(admin, "/ready").is_ok_and(|(status, _)| status == 200))
    })?;
    let pid = controller.pid();
    let memory_idle = resources::usage(pid)?;

    let anchors = std::fs::read(ca_dir.join("ca.crt"))
        .map_err(|e| Error::io("read the dev CA's ca.crt", e))?;
    let anchors = TrustAnchors::from_pem(&anchors).map_err(|e| Error::Command {
        command: "reading the dev CA".into(),
        detail: e.to_string(),
    })?;
    let tls = tls::client_config(&anchors, None, &[b"h2"]).map_err(|e| Error::Command {
        command: "building the TLS client".into(),
        detail: e.to_string(),
    })?;
    let tls = Arc::new(tls);

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut states = vec![StreamState::default(); config.streams];
    let mut started = Vec::with_capacity(config.streams);
    let mut tasks = tokio::task::JoinSet::new();
    let first_attempt = Instant::now();
    for index in 0..config.streams {
        started.push(Instant::now());
        tasks.spawn(open_stream(
            index,
            grpc,
            tls.clone(),
            config.decode,
            events_tx.clone(),
        ));
    }
    drop(events_tx);

    let mut synced_at = vec![None; config.streams];
    let mut largest_response_bytes = 0;
    let expected_endpoints = config.services * config.endpoints;
    let deadline = Instant::now() + config.timeout;
    while synced_at.iter().any(Option::is_none) {
        let event = next_event(&mut events, &mut tasks, deadline, "the first snapshot").await?;
        largest_response_bytes = largest_response_bytes.max(event.bytes);
        let state = apply(&mut states, &event);
        if synced_at[event.stream].is_none()
            && state.services == config.services
            && state.endpoints == expected_endpoints
            && state.routes
            && state.policies
        {
            synced_at[event.stream] = Some(event.acked_at);
        }
    }
    let initial: Vec<Duration> = synced_at
        .iter()
        .zip(&started)
        .map(|(at, start)| at.unwrap_or(*start) - *start)
        .collect();
    let initial_sync_all = synced_at
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(first_attempt)
        - first_attempt;
    let memory_synced = resources::usage(pid)?;
    let harness_cpu = resources::self_cpu_seconds()?;

    let mut changes = Vec::new();
    for change in 1..=config.changes {
        // Far enough apart that each change is its own debounced burst.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let expected = expected_endpoints + change;
        let file = endpoints_file(&objects, 0);
        let staged = objects.join(".staged.yaml");
        write(&staged, &endpoints_yaml(0, config.endpoints + change))?;
        std::fs::rename(&staged, &file)
            .map_err(|e| Error::io(format!("rename into {}", file.display()), e))?;
        let written = Instant::now();
        let deadline = written + config.timeout;
        while states.iter().any(|s| s.endpoints != expected) {
            let event = next_event(&mut events, &mut tasks, deadline, "an endpoint change").await?;
            largest_response_bytes = largest_response_bytes.max(event.bytes);
            apply(&mut states, &event);
        }
        let times: Vec<Duration> = states
            .iter()
            .map(|s| {
                s.endpoints_acked_at
                    .map_or(Duration::ZERO, |at| at - written)
            })
            .collect();
        changes.push(spread(times));
    }

    let changed = resources::usage(pid)?;
    let per_change = |seconds: f64| seconds / config.changes.max(1) as f64;
    let controller_cpu_seconds_per_change =
        per_change(changed.cpu_seconds - memory_synced.cpu_seconds);
    let harness_cpu_seconds_per_change = per_change(resources::self_cpu_seconds()? - harness_cpu);
    let proxies_in_sync = wait_in_sync(admin, config.streams, config.timeout).await;
    let memory_end = resources::usage(pid)?;
    tasks.abort_all();
    Ok(ScaleReport {
        services: config.services,
        endpoints_per_service: config.endpoints,
        streams: config.streams,
        decode: config.decode,
        initial_sync_all_ms: millis(initial_sync_all),
        initial_sync: spread(initial),
        changes,
        memory_idle,
        memory_synced,
        memory_end,
        proxies_in_sync,
        largest_response_bytes,
        controller_cpu_seconds_per_change,
        harness_cpu_seconds_per_change,
    })
}

fn start_controller(
    config: &ScaleConfig,
    objects: &Path,
    ca_dir: &Path,
    grpc: SocketAddr,
    admin: SocketAddr,
) -> Result<Daemon, Error> {
    let mint_error = |e: String| Error::Command {
        command: "minting the JWKS".into(),
        detail: e,
    };
    let signer = KeyPair::generate().map_err(|e| mint_error(e.to_string()))?;
    let jwk = mint::es256_jwk(signer.public_key_raw(), "trellis-bench")
        .map_err(|e| mint_error(e.to_string()))?;
    let jwks = config.dir.join("jwks.json");
    write(&jwks, &mint::jwks(&[jwk]))?;
    let mut command = Command::new(&config.controller);
    // Trellis binaries read `TRELLIS_*` variables as flags; ours must not leak in.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TRELLIS_") {
            command.env_remove(name);
        }
    }
    command
        .arg("--listen")
        .arg(grpc.to_string())
        .arg("--admin-addr")
        .arg(admin.to_string())
        .arg("--dev-ca")
        .arg(ca_dir)
        .arg("--token-jwks")
        .arg(&jwks)
        .arg("--config-dir")
        .arg(objects)
        .env("RUST_LOG", "warn");
    Daemon::start("controller", command, &config.dir)
}

fn apply<'a>(states: &'a mut [StreamState], event: &Event) -> &'a StreamState {
    let state = &mut states[event.stream];
    match event.type_url.as_str() {
        type_url::SERVICE => state.services = event.count,
        type_url::ENDPOINTS => {
            state.endpoints = event.count;
            state.endpoints_acked_at = Some(event.acked_at);
        }
        type_url::ROUTE => state.routes = true,
        type_url::AUTHORIZATION_POLICY => state.policies = true,
        _ => {}
    }
    state
}

/// The next ACKed response, or why none will come: a stream failed, or `deadline`.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    tasks: &mut tokio::task::JoinSet<Result<(), String>>,
    deadline: Instant,
    waiting_for: &str,
) -> Result<Event, Error> {
    let failed = |detail: String| Error::Command {
        command: format!("discovery stream (waiting for {waiting_for})"),
        detail,
    };
    tokio::select! {
        // Responses already received count before a stream's end.
        biased;
        event = events.recv() => event.ok_or_else(|| failed("every stream ended".into())),
        Some(ended) = tasks.join_next() => Err(failed(match ended {
            Ok(Err(e)) => e,
            Ok(Ok(())) => "a stream ended".into(),
            Err(e) => e.to_string(),
        })),
        _ = tokio::time::sleep_until(deadline.into()) => {
            Err(failed("timed out (see controller.log)".into()))
        }
    }
}

/// Polls `/proxies` until `streams` streams are in sync on every type, or gives up
/// and returns how many are.
async fn wait_in_sync(admin: SocketAddr, streams: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let in_sync = http_get(admin, "/proxies")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .map_or(0, |proxies| count_in_sync(&proxies));
        if in_sync >= streams || Instant::now() > deadline {
            return in_sync;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Proxies whose four types are all `in_sync` in a `/proxies` answer.
fn count_in_sync(proxies: &serde_json::Value) -> usize {
    let Some(list) = proxies["proxies"].as_array() else {
        return 0;
    };
    list.iter()
        .filter(|proxy| {
            type_url::ALL
                .iter()
                .all(|t| proxy["types"][*t]["in_sync"] == true)
        })
        .count()
}

fn service_yaml(service: usize) -> String {
    format!(
        "apiVersion: trellis.io/v1alpha1\nkind: Service\nmetadata: {{name: svc-{service:05}, namespace: {NAMESPACE}}}\nspec:\n  clusterIPs: [10.96.{}.{}]\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: HTTP1}}\n",
        (service + 1) >> 8,
        (service + 1) & 255
    )
}

/// The Endpoints of `service`, with `count` endpoints, each with its own identity.
fn endpoints_yaml(service: usize, count: usize) -> String {
    let mut yaml = format!(
        "apiVersion: trellis.io/v1alpha1\nkind: Endpoints\nmetadata: {{name: svc-{service:05}, namespace: {NAMESPACE}}}\nspec:\n  endpoints:\n"
    );
    for endpoint in 0..count {
        // 256 addresses per service: an added endpoint never takes another's address.
        let n = service * 256 + endpoint + 1;
        yaml.push_str(&format!(
            "  - {{address: 10.{}.{}.{}, ports: [{{name: http, port: 8080}}], identity: \"spiffe://cluster.local/ns/{NAMESPACE}/sa/svc-{service:05}\", pod: {NAMESPACE}/svc-{service:05}-{endpoint}}}\n",
            128 + (n >> 16),
            (n >> 8) & 255,
            n & 255
        ));
    }
    yaml
}

fn endpoints_file(objects: &Path, service: usize) -> PathBuf {
    objects.join(format!("ep-{service:05}.yaml"))
}

fn spread(mut times: Vec<Duration>) -> Spread {
    times.sort();
    let at = |q: f64| {
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len().max(1));
        times.get(rank - 1).map_or(0.0, |d| millis(*d))
    };
    Spread {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn free_port() -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Bind {
        addr: "127.0.0.1:0".into(),
        source,
    })?;
    listener
        .local_addr()
        .map_err(|e| Error::io("read a free port", e))
}

/// A plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}

fn wait_until(
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::NotReady {
        what: what.into(),
        seconds: timeout.as_secs(),
        hint: "see controller.log in the work directory".into(),
    })
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

impl std::fmt::Display for ScaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let spread = |s: &Spread| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
                s.p50_ms, s.p99_ms, s.max_ms
            )
        };
        let decode = match self.decode {
            Decode::Count => "responses counted, not decoded",
            Decode::Full => "responses decoded in full",
        };
        writeln!(
            f,
            "{} services x {} endpoints, {} streams ({decode})",
            self.services, self.endpoints_per_service, self.streams
        )?;
        writeln!(
            f,
            "first snapshot on every stream: {:.1} ms (per stream: {})",
            self.initial_sync_all_ms,
            spread(&self.initial_sync)
        )?;
        for (n, change) in self.changes.iter().enumerate() {
            writeln!(f, "change {}: write -> ACK {}", n + 1, spread(change))?;
        }
        writeln!(
            f,
            "controller memory: idle {:.1} MiB, synced {:.1} MiB, end {:.1} MiB, peak {:.1} MiB",
            mib(self.memory_idle.rss_bytes),
            mib(self.memory_synced.rss_bytes),
            mib(self.memory_end.rss_bytes),
            mib(self.memory_end.hwm_bytes)
        )?;
        writeln!(
            f,
            "per change: controller {:.2} CPU s, this harness {:.2} CPU s; largest response {:.2} MiB",
            self.controller_cpu_seconds_per_change,
            self.harness_cpu_seconds_per_change,
            mib(self.largest_response_bytes as u64)
        )?;
        write!(
            f,
            "/proxies: {} of {} streams in sync",
            self.proxies_in_sync, self.streams
        )
    }
}
