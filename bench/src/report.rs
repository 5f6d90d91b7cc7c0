//! The results of a `trellis-bench run` and how repeats become one figure: the worst
//! repeat dropped (Buoyant's method: by max latency, or by lowest rate for the knee),
//! mean ± standard deviation over the rest, and their histograms pooled into one
//! distribution for the percentiles. Rendering lives beside it: `markdown.rs` for the
//! tables (and the targets of issue 3), `svg.rs` for the charts.

mod markdown;
mod svg;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use markdown::markdown;
pub use svg::charts;

use crate::Error;
use crate::load::{self, LoadReport, Percentiles};
use crate::plan::{Load, Plan, Workload};
use crate::resources::{Machine, MachineCpu};
use crate::scenario::ScenarioKind;

/// Everything one run measured, as written to `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// RFC 3339, UTC.
    pub date: String,
    /// The command line that produced these results.
    pub command: String,
    pub machine: Machine,
    pub topology: String,
    /// The TCP congestion control of the connections measured, read back from the
    /// pods (or the host's on loopback).
    #[serde(default)]
    pub tcp_congestion_control: String,
    pub plan: Plan,
    pub scenarios: Vec<ScenarioResult>,
    pub wall_seconds: f64,
}

/// One scenario's measurements, or why it was not measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub kind: ScenarioKind,
    pub hops: u32,
    /// Set when the scenario could not run here (not root, proxy not installed).
    pub skipped: Option<String>,
    /// Set when the scenario started but failed part-way.
    pub failed: Option<String>,
    /// The proxies' resident memory right after start, before any load (max over
    /// the scenario's proxies), in MB.
    pub idle_rss_mb: Option<f64>,
    /// How each proxy was started, read back from the running process.
    #[serde(default)]
    pub proxies: Vec<ProxyStart>,
    pub cells: Vec<Cell>,
}

/// One proxy of a scenario and the command line it runs with (`/proc/PID/cmdline`):
/// its configuration file, or for Trellis every flag the harness passed. A program
/// that rewrites its title shows the title: nginx's master is one argument,
/// `nginx: master process nginx -p … -c …/nginx.conf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStart {
    pub name: String,
    pub command: Vec<String>,
}

impl ScenarioResult {
    pub fn cell(&self, workload: Workload, load: Load) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|cell| cell.workload == workload && cell.load == load)
    }
}

/// One workload at one load in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub workload: Workload,
    pub load: Load,
    pub runs: Vec<Run>,
    pub summary: Option<Summary>,
    pub idle: Option<IdleResult>,
}

impl Cell {
    /// Requests that failed, over every repeat (the dropped one too).
    pub fn errors(&self) -> u64 {
        match (&self.summary, &self.idle) {
            (Some(summary), _) => summary.errors,
            (None, Some(idle)) => idle.errors,
            (None, None) => 0,
        }
    }

    /// Whether this cell measured anything at all.
    pub fn has_results(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.requests > 0)
            || self.idle.as_ref().is_some_and(|i| i.connections > 0)
    }
}

/// One repeat: the generator's report and what each proxy spent meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub load: LoadReport,
    pub proxies: Vec<ProxyUsage>,
    /// Mesh mTLS handshakes the Trellis client sidecar completed during the repeat,
    /// from its metrics: what tells a pooled mesh connection (none) from one per app
    /// connection (one per request). `None` outside the Trellis scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_handshakes: Option<u64>,
    /// What the whole machine spent during the repeat (`/proc/stat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineCpu>,
}

/// A proxy (with its child processes) over one repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyUsage {
    pub name: String,
    pub cpu_seconds: f64,
    /// The part of `cpu_seconds` in the proxy's own code; the rest is the kernel
    /// working for it (system calls, and the network stack they run).
    #[serde(default)]
    pub user_seconds: f64,
    pub rss_mb: f64,
    /// Peak resident memory during this repeat (`VmHWM` after a reset).
    pub hwm_mb: f64,
    /// A Trellis sidecar's scheduling policy over the repeat, from its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingUsage>,
}

/// The CPU scheduling policy a Trellis sidecar ran under during a repeat: what a
/// CPU figure of a sidecar under `--scheduling auto` cannot be read without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulingUsage {
    /// `normal` or `batch`, in force when the repeat began.
    pub start: String,
    /// In force when it ended.
    pub end: String,
    /// Moves of the sidecar's threads from one policy to the other in between.
    pub changes: u64,
}

impl Run {
    /// All proxies' CPU per successful request, divided by the hops it crossed.
    pub fn cpu_us_per_request_per_hop(&self, hops: u32) -> Option<f64> {
        if hops == 0 || self.proxies.is_empty() || self.load.requests == 0 {
            return None;
        }
        let cpu: f64 = self.proxies.iter().map(|p| p.cpu_seconds).sum();
        Some(cpu * 1e6 / self.load.requests as f64 / hops as f64)
    }

    /// The whole machine's busy CPU per successful request.
    pub fn machine_cpu_us_per_request(&self) -> Option<f64> {
        let machine = self.machine?;
        (self.load.requests > 0).then(|| machine.busy_seconds * 1e6 / self.load.requests as f64)
    }

    /// The largest single proxy's peak memory.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.proxies
            .iter()
            .map(|p| p.hwm_mb.max(p.rss_mb))
            .reduce(f64::max)
    }
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        if values.is_empty() {
            return Stat::default();
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Stat { mean, sd }
    }
}

/// The repeats of a cell, reduced to the figures the report shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Index of the repeat left out, if one was.
    pub dropped_run: Option<usize>,
    /// Percentiles of the kept repeats' histograms pooled together.
    pub pooled: Percentiles,
    pub rate: Stat,
    pub p50_ms: Stat,
    pub p99_ms: Stat,
    pub p999_ms: Stat,
    pub max_ms: Stat,
    pub throughput_mb_s: Stat,
    pub cpu_us_per_request_per_hop: Option<Stat>,
    pub peak_rss_mb: Option<f64>,
    /// The kept repeats' mesh mTLS handshakes per successful request (Trellis only).
    #[serde(default)]
    pub mesh_handshakes_per_request: Option<f64>,
    /// Successful requests over the kept repeats.
    pub requests: u64,
    /// Failed requests over all repeats, the dropped one included.
    pub errors: u64,
    pub generator_cpu_us_per_request: f64,
    /// Where the CPU went, when the repeats read the machine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineSummary>,
}

/// The whole machine over a cell's kept repeats: what bounds a scenario that keeps
/// every core busy, and whether a neighbour on the host took time from it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MachineSummary {
    /// Busy CPU of every process and the kernel, per successful request.
    pub cpu_us_per_request: Stat,
    /// Busy share of all the cores' time, %.
    pub busy_pct: Stat,
    /// Share of all the cores' time the hypervisor took away, %.
    pub steal_pct: Stat,
    /// The proxies' CPU spent in their own code, % of their CPU; the rest is the
    /// kernel working for them. `None` without proxies.
    pub proxy_user_pct: Option<f64>,
}

/// Reduces the repeats of one cell. Histograms are pooled and then removed from the
/// runs, so the raw JSON stays small.
pub fn summarize(runs: &mut [Run], hops: u32, load: Load, drop_worst: bool) -> Summary {
    let dropped_run = (drop_worst && runs.len() >= 3)
        .then(|| worst(runs, load))
        .flatten();
    let kept: Vec<&Run> = runs
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != dropped_run)
        .map(|(_, run)| run)
        .collect();
    let mut pooled = load::new_histogram();
    for run in &kept {
        if let Some(buckets) = &run.load.histogram {
            load::pool(&mut pooled, buckets);
        }
    }
    let stat =
        |f: &dyn Fn(&Run) -> f64| Stat::of(&kept.iter().map(|run| f(run)).collect::<Vec<_>>());
    let cpu: Vec<f64> = kept
        .iter()
        .filter_map(|run| run.cpu_us_per_request_per_hop(hops))
        .collect();
    let summary = Summary {
        dropped_run,
        pooled: Percentiles::of(&pooled),
        rate: stat(&|run| run.load.rate),
        p50_ms: stat(&|run| run.load.p50_ms),
        p99_ms: stat(&|run| run.load.p99_ms),
        p999_ms: stat(&|run| run.load.p999_ms),
        max_ms: stat(&|run| run.load.max_ms),
        throughput_mb_s: stat(&|run| run.load.throughput_mb_s),
        cpu_us_per_request_per_hop: (!cpu.is_empty()).then(|| Stat::of(&cpu)),
        peak_rss_mb: kept
            .iter()
            .filter_map(|run| run.peak_rss_mb())
            .reduce(f64::max),
        mesh_handshakes_per_request: handshakes_per_request(&kept),
        requests: kept.iter().map(|run| run.load.requests).sum(),
        errors: runs.iter().map(|run| run.load.errors).sum(),
        generator_cpu_us_per_request: stat(&|run| run.load.generator_cpu_us_per_request).mean,
        machine: machine_summary(&kept),
    };
    for run in runs.iter_mut() {
        run.load.histogram = None;
    }
    summary
}

/// Handshakes over successful requests, when every kept repeat counted them.
fn handshakes_per_request(kept: &[&Run]) -> Option<f64> {
    let handshakes: u64 = kept
        .iter()
        .map(|run| run.mesh_handshakes)
        .sum::<Option<u64>>()?;
    let requests: u64 = kept.iter().map(|run| run.load.requests).sum();
    (requests > 0).then(|| handshakes as f64 / requests as f64)
}

/// The machine's figures, when every kept repeat read them.
fn machine_summary(kept: &[&Run]) -> Option<MachineSummary> {
    let per_run: Vec<(f64, (f64, f64))> = kept
        .iter()
        .map(|run| Some((run.machine_cpu_us_per_request()?, run.machine?.shares()?)))
        .collect::<Option<_>>()?;
    if per_run.is_empty() {
        return None;
    }
    let of = |pick: fn(&(f64, (f64, f64))) -> f64| {
        Stat::of(&per_run.iter().map(pick).collect::<Vec<_>>())
    };
    let proxies = kept.iter().flat_map(|run| &run.proxies);
    let (user, cpu) = proxies.fold((0.0, 0.0), |(user, cpu), p| {
        (user + p.user_seconds, cpu + p.cpu_seconds)
    });
    Some(MachineSummary {
        cpu_us_per_request: of(|r| r.0),
        busy_pct: of(|r| r.1.0),
        steal_pct: of(|r| r.1.1),
        proxy_user_pct: (cpu > 0.0).then(|| 100.0 * user / cpu),
    })
}

/// The worst repeat: the slowest tail at a fixed rate, the lowest rate at the knee.
fn worst(runs: &[Run], load: Load) -> Option<usize> {
    let badness = |run: &Run| match load {
        Load::Max => -run.load.rate,
        _ => run.load.max_ms,
    };
    (0..runs.len()).max_by(|&a, &b| badness(&runs[a]).total_cmp(&badness(&runs[b])))
}

/// 1,000 idle connections held open through a scenario's proxies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleResult {
    pub connections: u64,
    pub errors: u64,
    /// The largest proxy's resident memory before and while holding, MB.
    pub rss_before_mb: f64,
    pub rss_held_mb: f64,
    /// The largest per-proxy growth divided by the connections, KiB.
    pub kib_per_connection: f64,
}

/// Writes `results.json`, `results.md` and the charts into `dir`.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<String>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
    };
    let json = serde_json::to_string_pretty(results).map_err(|e| Error::Report {
        what: "results.json".into(),
        detail: e.to_string(),
    })?;
    write("results.json", &json)?;
    let charts = charts(results);
    for (name, svg) in &charts {
        write(name, svg)?;
    }
    let names: Vec<String> = charts.into_iter().map(|(name, _)| name).collect();
    write("results.md", &markdown(results, &names))?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, max_ms: f64, cpu_seconds: f64) -> Run {
        let mut histogram = load::new_histogram();
        histogram
            .record((max_ms * 1000.0) as u64)
            .expect("in range");
        Run {
            load: LoadReport {
                url: "http://x/".into(),
                protocol: "http1".into(),
                connections: 1,
                target_rate: Some(rate),
                duration_s: 1.0,
                requests: 1_000,
                errors: 0,
                errors_by_kind: Default::default(),
                rate,
                p50_ms: max_ms,
                p90_ms: max_ms,
                p99_ms: max_ms,
                p999_ms: max_ms,
                p9999_ms: max_ms,
                max_ms,
                mean_ms: max_ms,
                service_p99_ms: max_ms,
                bytes_received: 0,
                throughput_mb_s: 0.0,
                generator_cpu_us_per_request: 5.0,
                histogram: Some(load::export(&histogram)),
            },
            proxies: vec![ProxyUsage {
                name: "p".into(),
                cpu_seconds,
                user_seconds: cpu_seconds / 4.0,
                rss_mb: 10.0,
                hwm_mb: 12.0,
                scheduling: None,
            }],
            mesh_handshakes: None,
            machine: None,
        }
    }

    #[test]
    fn the_repeat_with_the_slowest_tail_is_dropped_and_the_rest_averaged() {
        let mut runs = vec![
            run(100.0, 1.0, 0.02),
            run(100.0, 50.0, 0.02),
            run(100.0, 3.0, 0.04),
        ];
        let summary = summarize(&mut runs, 2, Load::Rate(100), true);
        assert_eq!(summary.dropped_run, Some(1));
        assert_eq!(
            summary.max_ms,
            Stat {
                mean: 2.0,
                sd: 2f64.sqrt()
            }
        );
        // 0.02 s and 0.04 s over 1,000 requests and two hops: 10 and 20 µs.
        let cpu = summary
            .cpu_us_per_request_per_hop
            .expect("proxies measured");
        assert!((cpu.mean - 15.0).abs() < 1e-9, "{cpu:?}");
        assert_eq!(summary.peak_rss_mb, Some(12.0));
        assert!(summary.pooled.max_ms < 4.0, "the dropped run is not pooled");
        assert!(runs.iter().all(|run| run.load.histogram.is_none()));
    }

    #[test]
    fn at_the_knee_the_slowest_repeat_is_the_one_dropped() {
        let mut runs = vec![
            run(9_000.0, 1.0, 0.1),
            run(10_000.0, 9.0, 0.1),
            run(7_000.0, 2.0, 0.1),
        ];
        assert_eq!(
            summarize(&mut runs, 1, Load::Max, true).dropped_run,
            Some(2)
        );
    }

    #[test]
    fn handshakes_per_request_cover_the_kept_repeats_and_only_counted_ones() {
        let counted = |handshakes| Run {
            mesh_handshakes: Some(handshakes),
            ..run(100.0, 1.0, 0.01)
        };
        let mut runs = vec![counted(1_000), counted(0), counted(500)];
        let summary = summarize(&mut runs, 2, Load::Rate(100), false);
        assert_eq!(summary.mesh_handshakes_per_request, Some(0.5));
        let mut runs = vec![counted(1_000), run(100.0, 1.0, 0.01)];
        let summary = summarize(&mut runs, 2, Load::Rate(100), false);
        assert_eq!(
            summary.mesh_handshakes_per_request, None,
            "one was not counted"
        );
    }

    #[test]
    fn the_machine_figures_cover_the_kept_repeats_when_all_read_them() {
        let measured = |busy_seconds, steal_seconds| Run {
            machine: Some(MachineCpu {
                busy_seconds,
                idle_seconds: 2.0 - busy_seconds - steal_seconds,
                steal_seconds,
            }),
            ..run(100.0, 1.0, 0.01)
        };
        let mut runs = vec![measured(1.0, 0.0), measured(1.5, 0.5)];
        let machine = summarize(&mut runs, 1, Load::Rate(100), false)
            .machine
            .expect("every repeat read the machine");
        // 1 s and 1.5 s of busy CPU over 1,000 requests; of 2 s of cores' time.
        assert!((machine.cpu_us_per_request.mean - 1_250.0).abs() < 1e-6);
        assert!((machine.busy_pct.mean - 62.5).abs() < 1e-9);
        assert!((machine.steal_pct.mean - 12.5).abs() < 1e-9);
        assert_eq!(machine.proxy_user_pct, Some(25.0));
        let mut runs = vec![measured(1.0, 0.0), run(100.0, 1.0, 0.01)];
        assert!(
            summarize(&mut runs, 1, Load::Rate(100), false)
                .machine
                .is_none(),
            "one repeat did not read it"
        );
    }

    #[test]
    fn a_single_repeat_is_kept_and_has_no_spread() {
        let mut runs = vec![run(100.0, 1.0, 0.0)];
        let summary = summarize(&mut runs, 0, Load::Rate(100), true);
        assert_eq!(summary.dropped_run, None);
        assert_eq!(
            summary.rate,
            Stat {
                mean: 100.0,
                sd: 0.0
            }
        );
        assert_eq!(summary.cpu_us_per_request_per_hop, None, "no proxy, no hop");
    }
}
