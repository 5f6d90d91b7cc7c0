//! `trellis-bench run`: every scenario of the plan in turn, each workload at each load,
//! warm-up then repeats, the proxies' `/proc` read around every repeat; a progress
//! line per measurement, the reports written at the end.
//!
//! The load generator runs as its own process (`trellis-bench load --json`) at the
//! client's place, so it is the same program in every scenario, inside a pod when
//! there are pods, and its cost never mixes with the harness's bookkeeping.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::load::{HoldReport, LoadReport};
use crate::plan::{Load, Plan, Workload};
use crate::report::{
    self, Cell, IdleResult, ProxyStart, ProxyUsage, Results, Run, ScenarioResult, SchedulingUsage,
};
use crate::resources::{self, Machine, Usage};
use crate::scenario::{
    self, Place, Programs, ScenarioKind, SchedulingReading, Stand, Topology, process_tree,
};

/// How a run is set up, beyond the plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub plan: Plan,
    /// Where the reports go.
    pub out: PathBuf,
    pub programs: Programs,
    /// Install missing reference proxies with apt-get (root only).
    pub install: bool,
    /// Use pods when possible (root, network namespaces); otherwise loopback.
    pub pods: bool,
    /// The TCP congestion control set in every pod; `None` keeps the host's.
    pub congestion_control: Option<String>,
    /// The command line, recorded in the report.
    pub command: String,
}

/// Runs the plan and writes the reports; returns the results.
pub fn run(options: &RunOptions) -> Result<Results, Error> {
    let started = Instant::now();
    raise_file_limit();
    let work = std::env::temp_dir().join(format!("trellis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)
        .map_err(|e| Error::io(format!("create {}", work.display()), e))?;
    let plan = &options.plan;
    let pods_reason = pods_unavailable(options);
    let congestion_control = options.congestion_control.as_deref();
    let (topology_name, tcp_congestion_control) = match &pods_reason {
        None => {
            let pods = Topology::pods(congestion_control)?;
            (pods.name(), pods.congestion_control()?)
        }
        Some(reason) => {
            // The host's own setting is not the harness's to change.
            if let Some(algorithm) = congestion_control {
                return Err(Error::InvalidSetting {
                    name: "--congestion-control",
                    value: format!("{algorithm} without pods ({reason})"),
                    reason: "it is set in the pods' network namespaces only",
                });
            }
            let loopback = Topology::Loopback;
            (loopback.name(), loopback.congestion_control()?)
        }
    };
    println!(
        "trellis-bench: {} scenario(s), {:?} mode, {} of load, topology: {topology_name}, \
         TCP congestion control: {tcp_congestion_control}",
        plan.scenarios.len(),
        plan.mode,
        humantime::format_duration(Duration::from_secs(plan.load_time().as_secs()))
    );

    let mut scenarios = Vec::new();
    for kind in plan.scenarios.iter().copied() {
        let mut result = ScenarioResult {
            kind,
            hops: kind.hops(),
            skipped: skip_reason(kind, options, pods_reason.as_deref()),
            failed: None,
            idle_rss_mb: None,
            proxies: Vec::new(),
            cells: Vec::new(),
        };
        if let Some(reason) = &result.skipped {
            println!("- {:<18} skipped: {reason}", kind.name());
            scenarios.push(result);
            continue;
        }
        let dir = work.join(kind.name());
        if let Err(error) = run_scenario(options, &mut result, &dir, pods_reason.is_none()) {
            println!("- {:<18} FAILED: {error}", kind.name());
            result.failed = Some(error.to_string());
        }
        scenarios.push(result);
    }
    if pods_reason.is_none() {
        Topology::remove_bridge();
    }
    let results = Results {
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        command: options.command.clone(),
        machine: Machine::detect(),
        topology: topology_name.to_string(),
        tcp_congestion_control,
        plan: plan.clone(),
        scenarios,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    report::write_all(&results, &options.out)?;
    let _ = std::fs::remove_dir_all(&work);
    print_summary(&results, options);
    Ok(results)
}

fn run_scenario(
    options: &RunOptions,
    result: &mut ScenarioResult,
    dir: &std::path::Path,
    pods: bool,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let kind = result.kind;
    println!("- {:<18} starting ({} hop(s))", kind.name(), kind.hops());
    for workload in options.plan.workloads.iter().copied() {
        // Idle connections cost memory in proxies; without one there is nothing to read.
        if workload == Workload::Idle && kind.hops() == 0 {
            continue;
        }
        // Every workload starts in fresh pods. A new connection per request leaves
        // tens of thousands of sockets in TIME_WAIT behind; every redirected
        // connection shares the sidecar's one listening address, so the next
        // workload's connections would meet them (SYNs dropped as old duplicates,
        // one-second retransmissions) and measure that, not themselves.
        let topology = if pods {
            Topology::pods(options.congestion_control.as_deref())?
        } else {
            Topology::Loopback
        };
        let mut stand = scenario::start(kind, &topology, &options.programs, dir)?;
        std::thread::sleep(Duration::from_millis(300));
        if result.idle_rss_mb.is_none() {
            result.idle_rss_mb = max_of(&stand, |u| u.rss_bytes);
            result.proxies = stand
                .proxies
                .iter()
                .map(|(name, pid)| {
                    Ok(ProxyStart {
                        name: name.clone(),
                        command: resources::command_line(*pid)?,
                    })
                })
                .collect::<Result<_, Error>>()?;
        }
        for load in options.plan.loads(workload) {
            stand.check_alive()?;
            let cell = measure(options, &topology, &stand, workload, load)?;
            println!("  {}", progress_line(kind, &cell));
            result.cells.push(cell);
        }
        // The stand's processes live in the topology's pods: they stop first.
        drop(stand);
        drop(topology);
    }
    Ok(())
}

/// One cell: warm-up, then the repeats, each with the proxies' usage around it.
fn measure(
    options: &RunOptions,
    topology: &Topology,
    stand: &Stand,
    workload: Workload,
    load: Load,
) -> Result<Cell, Error> {
    let plan = &options.plan;
    if let Load::Connections(count) = load {
        let idle = measure_idle(options, topology, stand, count)?;
        return Ok(Cell {
            workload,
            load,
            runs: Vec::new(),
            summary: None,
            idle: Some(idle),
        });
    }
    if !plan.warmup.is_zero() {
        generate(options, topology, stand, workload, load, plan.warmup)?;
    }
    let mut runs = Vec::new();
    for _ in 0..plan.repeats {
        for (_, pid) in &stand.proxies {
            for member in process_tree(*pid) {
                // Without the right to reset, the peak is the process's lifetime peak.
                let _ = resources::reset_peak(member);
            }
        }
        // The sidecars' metrics are read outside the span whose CPU is measured.
        let mesh_before = stand.mesh_reading();
        let before = usages(stand);
        let machine_before = resources::machine_clock().ok();
        let report = generate(options, topology, stand, workload, load, plan.duration)?;
        let machine = resources::machine_clock()
            .ok()
            .zip(machine_before)
            .map(|(after, before)| after.since(&before));
        let after = usages(stand);
        let mesh_after = stand.mesh_reading();
        let mesh_handshakes = match (mesh_before.client_handshakes, mesh_after.client_handshakes) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let proxies = before
            .iter()
            .zip(&after)
            .map(|((name, before), (_, after))| ProxyUsage {
                name: name.clone(),
                cpu_seconds: (after.cpu_seconds - before.cpu_seconds).max(0.0),
                user_seconds: (after.user_seconds - before.user_seconds).max(0.0),
                rss_mb: after.rss_bytes as f64 / 1e6,
                hwm_mb: after.hwm_bytes as f64 / 1e6,
                scheduling: scheduling_over(name, &mesh_before.scheduling, &mesh_after.scheduling),
            })
            .collect();
        runs.push(Run {
            load: report,
            proxies,
            mesh_handshakes,
            machine,
        });
    }
    let summary = report::summarize(&mut runs, stand.kind.hops(), load, plan.drops_worst());
    Ok(Cell {
        workload,
        load,
        runs,
        summary: Some(summary),
        idle: None,
    })
}

/// Runs the load generator at the client's place and reads its JSON report.
fn generate(
    options: &RunOptions,
    topology: &Topology,
    stand: &Stand,
    workload: Workload,
    load: Load,
    duration: Duration,
) -> Result<LoadReport, Error> {
    let mut command = topology.command(Place::Client, &options.programs.bench);
    let url = match workload {
        Workload::Grpc => &stand.grpc_url,
        Workload::NewMtlsConnection => &stand.opaque_url,
        _ => &stand.http_url,
    };
    command
        .arg("load")
        .arg(url)
        .arg("--json")
        .arg("--histogram");
    command
        .arg("--duration")
        .arg(format!("{}ms", duration.as_millis()));
    command.arg("--timeout").arg("5s");
    match load {
        Load::Rate(rate) => command.arg("--rate").arg(rate.to_string()),
        _ => command.arg("--max"),
    };
    let shape: &[&str] = match workload {
        Workload::Http1 => &["--connections", "16"],
        Workload::Grpc => &["--grpc", "--connections", "2", "--streams", "8"],
        Workload::NewConnection | Workload::NewMtlsConnection => {
            &["--new-connection-per-request", "--connections", "16"]
        }
        Workload::Bulk => &["--connections", "4", "--response-size", "1048576"],
        Workload::Idle => &[],
    };
    command.args(shape);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("start the load generator", e))?;
    let what = format!(
        "the load generator ({} at {})",
        workload.name(),
        load.label()
    );
    if !output.status.success() {
        return Err(Error::Report {
            what,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|e| Error::Report {
        what,
        detail: e.to_string(),
    })
}

/// Holds `count` idle connections through the scenario and reads the proxies' memory
/// before and while they are held.
fn measure_idle(
    options: &RunOptions,
    topology: &Topology,
    stand: &Stand,
    count: u32,
) -> Result<IdleResult, Error> {
    let hold = if options.plan.duration < Duration::from_secs(3) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let before = usages(stand);
    let mut child = topology
        .command(Place::Client, &options.programs.bench)
        .arg("hold")
        .arg(&stand.http_url)
        .arg("--connections")
        .arg(count.to_string())
        .arg("--duration")
        .arg(format!("{}ms", hold.as_millis()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("start the idle-connection holder", e))?;
    let stdout = child.stdout.take().ok_or_else(|| Error::Report {
        what: "hold".into(),
        detail: "no stdout".into(),
    })?;
    let mut lines = BufReader::new(stdout).lines();
    let mut held = None;
    let mut last = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if line.starts_with("ready") {
            // Let the proxies finish their side of the last connections.
            std::thread::sleep(Duration::from_millis(200));
            held = Some(usages(stand));
        } else if line.starts_with('{') {
            last = Some(line);
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("wait for the holder", e))?;
    let report: HoldReport = last
        .as_deref()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| Error::Report {
            what: "the idle-connection holder".into(),
            detail: format!("{status}, no report"),
        })?;
    let held = held.unwrap_or_else(|| before.clone());
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let growth = before
        .iter()
        .zip(&held)
        .map(|((_, b), (_, h))| h.rss_bytes.saturating_sub(b.rss_bytes))
        .max()
        .unwrap_or(0);
    Ok(IdleResult {
        connections: report.connections,
        errors: report.errors,
        rss_before_mb: before
            .iter()
            .map(|(_, u)| mb(u.rss_bytes))
            .fold(0.0, f64::max),
        rss_held_mb: held
            .iter()
            .map(|(_, u)| mb(u.rss_bytes))
            .fold(0.0, f64::max),
        kib_per_connection: growth as f64 / 1024.0 / report.connections.max(1) as f64,
    })
}

/// The sidecar `name`'s scheduling between two readings of every sidecar; `None`
/// for a proxy without one (not a Trellis sidecar, or its metrics unread).
fn scheduling_over(
    name: &str,
    before: &[(String, Option<SchedulingReading>)],
    after: &[(String, Option<SchedulingReading>)],
) -> Option<SchedulingUsage> {
    let find = |readings: &[(String, Option<SchedulingReading>)]| {
        readings
            .iter()
            .find(|(proxy, _)| proxy == name)
            .and_then(|(_, reading)| reading.clone())
    };
    let (before, after) = (find(before)?, find(after)?);
    Some(SchedulingUsage {
        start: before.policy,
        end: after.policy,
        changes: after.changes.saturating_sub(before.changes),
    })
}

/// Each proxy's usage, summed over its process tree (nginx's workers, say).
fn usages(stand: &Stand) -> Vec<(String, Usage)> {
    stand
        .proxies
        .iter()
        .map(|(name, pid)| {
            let total = process_tree(*pid)
                .into_iter()
                .filter_map(|member| resources::usage(member).ok())
                .fold(Usage::default(), |sum, u| Usage {
                    cpu_seconds: sum.cpu_seconds + u.cpu_seconds,
                    user_seconds: sum.user_seconds + u.user_seconds,
                    rss_bytes: sum.rss_bytes + u.rss_bytes,
                    hwm_bytes: sum.hwm_bytes + u.hwm_bytes,
                });
            (name.clone(), total)
        })
        .collect()
}

fn max_of(stand: &Stand, pick: fn(&Usage) -> u64) -> Option<f64> {
    usages(stand)
        .iter()
        .map(|(_, u)| pick(u) as f64 / 1e6)
        .reduce(f64::max)
}

fn progress_line(kind: ScenarioKind, cell: &Cell) -> String {
    let head = format!(
        "{:<18} {:<19} {:>9}",
        kind.name(),
        cell.workload.name(),
        cell.load.label()
    );
    if let Some(idle) = &cell.idle {
        return format!(
            "{head}  held {} conns, proxy RSS {:.1} → {:.1} MB ({:.1} KiB/conn), {} errors",
            idle.connections,
            idle.rss_before_mb,
            idle.rss_held_mb,
            idle.kib_per_connection,
            idle.errors
        );
    }
    let Some(s) = &cell.summary else { return head };
    let p = &s.pooled;
    let cpu = s
        .cpu_us_per_request_per_hop
        .map_or(String::new(), |c| format!(", {:.1} µs/req/hop", c.mean));
    let rss = s
        .peak_rss_mb
        .map_or(String::new(), |r| format!(", {r:.1} MB"));
    let handshakes = s
        .mesh_handshakes_per_request
        .map_or(String::new(), |h| format!(", {h:.2} mTLS handshakes/req"));
    // A busy neighbour on the host shows as stolen time: say so while it happens.
    let machine = s.machine.map_or(String::new(), |m| {
        format!(
            ", machine busy {:.0} % (steal {:.0} %)",
            m.busy_pct.mean, m.steal_pct.mean
        )
    });
    format!(
        "{head}  {:>8.0} req/s  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms{cpu}{rss}{handshakes}{machine}, {} errors",
        s.rate.mean, p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms, s.errors
    )
}

fn print_summary(results: &Results, options: &RunOptions) {
    let measured = results
        .scenarios
        .iter()
        .filter(|s| s.skipped.is_none() && s.failed.is_none())
        .count();
    let errors: u64 = results
        .scenarios
        .iter()
        .flat_map(|s| &s.cells)
        .map(Cell::errors)
        .sum();
    println!(
        "done in {:.0} s: {measured} scenario(s) measured, {} skipped, {} failed, {errors} request errors",
        results.wall_seconds,
        results
            .scenarios
            .iter()
            .filter(|s| s.skipped.is_some())
            .count(),
        results
            .scenarios
            .iter()
            .filter(|s| s.failed.is_some())
            .count(),
    );
    println!(
        "reports in {}: results.md, results.json and the charts",
        options.out.display()
    );
}

/// Why pods cannot be used here, or `None` if they can.
fn pods_unavailable(options: &RunOptions) -> Option<String> {
    if !options.pods {
        return Some("pods were turned off (--loopback)".into());
    }
    let report = trellis_netns::preflight();
    (!report.is_ok()).then(|| report.to_string().replace('\n', "; "))
}

fn skip_reason(
    kind: ScenarioKind,
    options: &RunOptions,
    pods_reason: Option<&str>,
) -> Option<String> {
    if kind.is_trellis() {
        if let Some(reason) = pods_reason {
            return Some(format!("needs pods: {reason}"));
        }
        let missing = scenario::missing_trellis_binaries(&options.programs.trellis_dir);
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
            return Some(format!(
                "missing {} (build them: cargo build --release -p trellis-proxy; cargo build --release -p trellis-proxy-init -p trellis-control-plane)",
                names.join(", ")
            ));
        }
    }
    let package = kind.package()?;
    if scenario::find_program(package).is_some() {
        return None;
    }
    if options.install && nix::unistd::geteuid().is_root() {
        println!("- installing {package} (apt-get install -y {package})");
        let installed = Command::new("sh")
            .arg("-c")
            .arg(format!("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}"))
            .status()
            .is_ok_and(|status| status.success());
        if installed && scenario::find_program(package).is_some() {
            return None;
        }
        return Some(format!(
            "{package} is not installed and `apt-get install -y {package}` failed"
        ));
    }
    Some(format!(
        "{package} is not installed (as root the harness installs it: apt-get install -y {package})"
    ))
}

/// Holding 1,000 connections through two proxies needs more descriptors than the
/// usual soft limit of 1,024; children inherit the raised limit.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
