//! `trellis-bench`: the command line over the harness. Every flag also reads a
//! `TRELLIS_BENCH_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trellis_bench::discovery_scale::{self, Decode, ScaleConfig};
use trellis_bench::load::{self, LoadConfig, Pacing, Protocol, Target};
use trellis_bench::plan::{Load, Mode, Plan, Workload};
use trellis_bench::run::{self, RunOptions};
use trellis_bench::scenario::{Programs, ScenarioKind};
use trellis_bench::serve::{self, Backend};

#[derive(Parser)]
#[command(
    name = "trellis-bench",
    version,
    about = "The Trellis benchmark harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load to a URL and report latency percentiles, the achieved rate and errors.
    Load(LoadArgs),
    /// Run the built-in backends (HTTP/1.1 + h2c, gRPC echo) until interrupted.
    Serve(ServeArgs),
    /// Run the benchmark scenarios and write the reports.
    Run(RunArgs),
    /// Open connections, make one request on each, and hold them idle.
    Hold(HoldArgs),
    /// One controller, many discovery streams: time to sync, change to last ACK, memory.
    DiscoveryScale(DiscoveryScaleArgs),
}

#[derive(Args)]
struct DiscoveryScaleArgs {
    /// Services in the config directory (each a cluster IP and one port).
    #[arg(long, env = "TRELLIS_BENCH_SERVICES", default_value_t = 2000)]
    services: usize,
    /// Endpoints per service (at most 255).
    #[arg(long, env = "TRELLIS_BENCH_ENDPOINTS", default_value_t = 10)]
    endpoints: usize,
    /// Discovery streams, each on its own TLS connection.
    #[arg(long, env = "TRELLIS_BENCH_STREAMS", default_value_t = 200)]
    streams: usize,
    /// Endpoint additions to measure, one after the other.
    #[arg(long, env = "TRELLIS_BENCH_CHANGES", default_value_t = 5)]
    changes: usize,
    /// Where trellis-controller is (default: next to this binary).
    #[arg(long, env = "TRELLIS_BENCH_TRELLIS_BIN")]
    trellis_bin: Option<PathBuf>,
    /// The work directory (config, dev CA, controller log); default: a new one in /tmp.
    #[arg(long, env = "TRELLIS_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// How long starting, the first sync or one change may take.
    #[arg(long, env = "TRELLIS_BENCH_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Decode every response into the proxy's types before ACKing it, as a proxy
    /// does (the streams share the controller's cores, so this cost lands on the
    /// controller's figures); by default responses are only counted.
    #[arg(long, env = "TRELLIS_BENCH_FULL_DECODE")]
    full_decode: bool,
    /// Print one JSON object instead of the summary.
    #[arg(long, env = "TRELLIS_BENCH_JSON")]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Every scenario and workload once for about a second (a smoke test).
    #[arg(long, env = "TRELLIS_BENCH_QUICK", conflicts_with = "full")]
    quick: bool,
    /// Five repeats of 10 s per measurement after a 5 s warm-up (the default is three
    /// of 10 s after 3 s).
    #[arg(long, env = "TRELLIS_BENCH_FULL")]
    full: bool,
    /// Where the reports go.
    #[arg(long, env = "TRELLIS_BENCH_OUT", default_value = "bench-results")]
    out: PathBuf,
    /// Only these scenarios (comma-separated names, e.g. baseline,trellis-1hop).
    #[arg(long, env = "TRELLIS_BENCH_SCENARIOS", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Only these workloads (http1, grpc, new_connection, new_mtls_connection,
    /// bulk_1mib, idle).
    #[arg(long, env = "TRELLIS_BENCH_WORKLOADS", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Only these loads (comma-separated: requests per second, `max`, or e.g.
    /// `1000conns` for the idle workload).
    #[arg(long, env = "TRELLIS_BENCH_LOADS", value_delimiter = ',')]
    loads: Vec<String>,
    /// Override the measured seconds of each repeat.
    #[arg(long, env = "TRELLIS_BENCH_DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Override the number of repeats.
    #[arg(long, env = "TRELLIS_BENCH_REPEATS")]
    repeats: Option<usize>,
    /// Override the warm-up before each measurement.
    #[arg(long, env = "TRELLIS_BENCH_WARMUP", value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Where trellis-proxy, trellis-proxy-init and trellis-controller are (default:
    /// next to this binary).
    #[arg(long, env = "TRELLIS_BENCH_TRELLIS_BIN")]
    trellis_bin: Option<PathBuf>,
    /// Event-loop threads per Trellis sidecar (`trellis-proxy --workers`); by default
    /// the proxy's own, one per CPU. The reference proxies run one thread each.
    #[arg(long, env = "TRELLIS_BENCH_PROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    proxy_workers: Option<u16>,
    /// The CPU scheduling policy of the Trellis sidecars (`trellis-proxy
    /// --scheduling`: auto, batch or normal); by default the proxy's own, auto. The
    /// reference proxies run under the kernel's default.
    #[arg(long, env = "TRELLIS_BENCH_PROXY_SCHEDULING", value_parser = ["auto", "batch", "normal"])]
    proxy_scheduling: Option<String>,
    /// The TCP congestion control trellis-proxy-init names on the Trellis pods' local
    /// routes (`--local-congestion-control`: an algorithm, or keep); by default its own,
    /// reno.
    #[arg(long, env = "TRELLIS_BENCH_LOCAL_CONGESTION_CONTROL")]
    local_congestion_control: Option<String>,
    /// The TCP congestion control of the pods (`cubic`, `bbr`, …; one this kernel
    /// offers); by default they keep the host's. With BBR, the kernel paces every
    /// connection with a timer per burst, which on some hosts caps even the direct
    /// path's throughput (BENCHMARKS.md).
    #[arg(long, env = "TRELLIS_BENCH_CONGESTION_CONTROL")]
    congestion_control: Option<String>,
    /// Run everything on loopback, even as root (skips the Trellis scenarios).
    #[arg(long, env = "TRELLIS_BENCH_LOOPBACK")]
    loopback: bool,
    /// Never apt-get install a missing reference proxy; skip its scenarios instead.
    #[arg(long, env = "TRELLIS_BENCH_NO_INSTALL")]
    no_install: bool,
}

#[derive(Args)]
struct HoldArgs {
    /// The target, `http://HOST:PORT/PATH`.
    url: String,
    #[arg(long, env = "TRELLIS_BENCH_CONNECTIONS", default_value_t = 1000)]
    connections: usize,
    /// How long to hold them once all are open.
    #[arg(long, env = "TRELLIS_BENCH_DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Args)]
struct LoadArgs {
    /// The target, `http://HOST:PORT/PATH`.
    #[arg(env = "TRELLIS_BENCH_URL")]
    url: String,
    /// Requests per second on a fixed timetable (open loop).
    #[arg(
        long,
        env = "TRELLIS_BENCH_RATE",
        required_unless_present = "max",
        conflicts_with = "max"
    )]
    rate: Option<f64>,
    /// Closed loop: every connection sends as fast as it is answered (finds the knee).
    #[arg(long, env = "TRELLIS_BENCH_MAX")]
    max: bool,
    /// How long to send, e.g. `10s`, `1m`.
    #[arg(long, env = "TRELLIS_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Connections kept open (with --new-connection-per-request: requests in flight).
    #[arg(long, env = "TRELLIS_BENCH_CONNECTIONS", default_value_t = 16)]
    connections: usize,
    /// Concurrent requests per connection (h2 and gRPC only).
    #[arg(long, env = "TRELLIS_BENCH_STREAMS", default_value_t = 1)]
    streams: usize,
    /// Speak HTTP/2 over cleartext (prior knowledge).
    #[arg(long, env = "TRELLIS_BENCH_HTTP2", conflicts_with = "grpc")]
    http2: bool,
    /// Make gRPC unary calls to the built-in echo service.
    #[arg(long, env = "TRELLIS_BENCH_GRPC")]
    grpc: bool,
    /// Open a fresh connection for every request.
    #[arg(long, env = "TRELLIS_BENCH_NEW_CONNECTION_PER_REQUEST")]
    new_connection_per_request: bool,
    /// Request body bytes (sent as a POST when non-zero).
    #[arg(long, env = "TRELLIS_BENCH_BODY_SIZE", default_value_t = 0)]
    body_size: usize,
    /// Ask the built-in backends for this many response bytes.
    #[arg(long, env = "TRELLIS_BENCH_RESPONSE_SIZE")]
    response_size: Option<usize>,
    /// A request not answered within this counts as an error.
    #[arg(long, env = "TRELLIS_BENCH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Generator threads, each with its own single-threaded runtime.
    #[arg(long, env = "TRELLIS_BENCH_THREADS", default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long, env = "TRELLIS_BENCH_JSON")]
    json: bool,
    /// Include the latency histogram in the JSON, for pooling runs.
    #[arg(long, env = "TRELLIS_BENCH_HISTOGRAM")]
    histogram: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Where the HTTP/1.1 + h2c backend listens; repeat it (or separate with commas)
    /// for the same backend on several ports.
    #[arg(
        long,
        env = "TRELLIS_BENCH_HTTP",
        value_delimiter = ',',
        required_unless_present = "grpc"
    )]
    http: Vec<SocketAddr>,
    /// Where the gRPC echo backend listens.
    #[arg(long, env = "TRELLIS_BENCH_GRPC")]
    grpc: Option<SocketAddr>,
    /// Body bytes of an answer when the request asks for no size.
    #[arg(long, env = "TRELLIS_BENCH_RESPONSE_SIZE", default_value_t = 13)]
    response_size: usize,
    /// Worker threads; 1 runs a single-threaded runtime, as the reference backend does.
    #[arg(long, env = "TRELLIS_BENCH_THREADS", default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => run_load(args),
        Command::Serve(args) => run_serve(args),
        Command::Run(args) => run_scenarios(args),
        Command::Hold(args) => run_hold(args),
        Command::DiscoveryScale(args) => run_discovery_scale(args),
    }
}

fn run_discovery_scale(args: DiscoveryScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=255).contains(&args.endpoints),
        "--endpoints {}: must be 1 to 255",
        args.endpoints
    );
    anyhow::ensure!(
        args.services >= 1 && args.streams >= 1,
        "--services and --streams must be at least 1"
    );
    let controller = match args.trellis_bin {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("cannot find this program's own path")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    }
    .join(trellis_bench::scenario::CONTROLLER);
    anyhow::ensure!(
        controller.is_file(),
        "{} is missing (cargo build --release -p trellis-control-plane, or --trellis-bin DIR)",
        controller.display()
    );
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            std::env::temp_dir().join(format!("trellis-discovery-scale-{}", std::process::id()))
        }
    };
    let config = ScaleConfig {
        services: args.services,
        endpoints: args.endpoints,
        streams: args.streams,
        changes: args.changes,
        controller,
        dir,
        timeout: args.timeout,
        decode: if args.full_decode {
            Decode::Full
        } else {
            Decode::Count
        },
    };
    let report = discovery_scale::run(&config)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
        println!("work directory: {}", config.dir.display());
    }
    anyhow::ensure!(
        report.proxies_in_sync == report.streams,
        "/proxies lists {} of {} streams in sync",
        report.proxies_in_sync,
        report.streams
    );
    Ok(())
}

fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let protocol = match (args.http2, args.grpc) {
        (_, true) => Protocol::Grpc,
        (true, false) => Protocol::Http2,
        (false, false) => Protocol::Http1,
    };
    let pacing = match args.rate {
        Some(rate) => Pacing::Rate(rate),
        None => Pacing::Max,
    };
    let config = LoadConfig {
        target: Target::parse(&args.url)?,
        protocol,
        pacing,
        duration: args.duration,
        connections: args.connections,
        streams: args.streams,
        new_connection_per_request: args.new_connection_per_request,
        body_size: args.body_size,
        response_size: args.response_size,
        timeout: args.timeout,
        threads: args.threads,
        keep_histogram: args.histogram,
    };
    let report = load::run(config)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

fn run_scenarios(args: RunArgs) -> anyhow::Result<()> {
    let mode = match (args.quick, args.full) {
        (true, _) => Mode::Quick,
        (_, true) => Mode::Full,
        _ => Mode::Standard,
    };
    let mut plan = Plan::new(mode);
    if !args.scenarios.is_empty() {
        plan.scenarios = args
            .scenarios
            .iter()
            .map(|name| {
                ScenarioKind::parse(name).with_context(|| {
                    format!(
                        "--scenarios: no scenario {name:?}; known: {}",
                        names(ScenarioKind::ALL.map(ScenarioKind::name))
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if !args.workloads.is_empty() {
        plan.workloads = args
            .workloads
            .iter()
            .map(|name| {
                Workload::parse(name).with_context(|| {
                    format!(
                        "--workloads: no workload {name:?}; known: {}",
                        names(Workload::ALL.map(Workload::name))
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if !args.loads.is_empty() {
        let loads = args
            .loads
            .iter()
            .map(|name| {
                Load::parse(name).with_context(|| {
                    format!("--loads: {name:?} is not a rate (2000), max, or a count (1000conns)")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        plan.only_loads = Some(loads);
    }
    plan.duration = args.duration.unwrap_or(plan.duration);
    plan.repeats = args.repeats.unwrap_or(plan.repeats).max(1);
    plan.warmup = args.warmup.unwrap_or(plan.warmup);
    if let Some(algorithm) = &args.congestion_control {
        let available = trellis_bench::resources::available_congestion_controls()?;
        anyhow::ensure!(
            available.contains(algorithm),
            "--congestion-control: this kernel offers {}, not {algorithm:?}",
            available.join(", ")
        );
    }
    let bench = std::env::current_exe().context("cannot find this program's own path")?;
    let trellis_dir = match args.trellis_bin {
        Some(dir) => dir,
        None => bench.parent().map(PathBuf::from).unwrap_or_default(),
    };
    let options = RunOptions {
        plan,
        out: args.out,
        programs: Programs {
            bench,
            trellis_dir,
            trellis_workers: args.proxy_workers,
            trellis_scheduling: args.proxy_scheduling,
            trellis_local_congestion_control: args.local_congestion_control,
        },
        install: !args.no_install,
        pods: !args.loopback,
        congestion_control: args.congestion_control,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let results = run::run(&options)?;
    let failed: Vec<&str> = results
        .scenarios
        .iter()
        .filter(|s| s.failed.is_some())
        .map(|s| s.kind.name())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "scenario(s) failed: {}",
        failed.join(", ")
    );
    Ok(())
}

fn names<const N: usize>(names: [&str; N]) -> String {
    names.join(", ")
}

fn run_hold(args: HoldArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let report = load::hold(&target, args.connections, args.duration, |ready| {
        println!(
            "ready {} connections, {} errors",
            ready.connections, ready.errors
        );
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("cannot start the backend runtime")?;
    let backend = Backend {
        response_size: args.response_size,
    };
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for addr in args.http {
            let listener = bind(addr).await?;
            println!("http listening on {}", listener.local_addr()?);
            tasks.spawn(serve::serve_http(listener, backend));
        }
        if let Some(addr) = args.grpc {
            let listener = bind(addr).await?;
            println!("grpc listening on {}", listener.local_addr()?);
            tasks.spawn(serve::serve_grpc(listener, backend));
        }
        tokio::select! {
            Some(finished) = tasks.join_next() => finished?.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminated() => Ok(()),
        }
    })
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| trellis_bench::Error::Bind {
            addr: addr.to_string(),
            source,
        })?)
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
