//! `results.md`: how the figures were made, the targets of issue 3 next to what was
//! measured, then one table per workload (latency added over the baseline, proxy CPU
//! per request per hop, proxy memory, the Trellis client sidecar's mTLS handshakes
//! per request), where the machine's CPU went, the idle-connection memory, and each
//! proxy's command line.

use std::fmt::Write;

use std::collections::BTreeMap;

use super::{Cell, Results, Run, ScenarioResult, Stat};
use crate::plan::{Load, Workload};
use crate::scenario::ScenarioKind;

pub fn markdown(results: &Results, charts: &[String]) -> String {
    let mut out = String::new();
    let plan = &results.plan;
    let m = &results.machine;
    let _ = writeln!(out, "# Trellis benchmark results\n");
    let _ = writeln!(out, "- date: {}", results.date);
    let _ = writeln!(out, "- command: `{}`", results.command);
    let _ = writeln!(
        out,
        "- machine: {} ({} cores, {:.0} GiB, Linux {})",
        m.cpu_model, m.cores, m.memory_gib, m.kernel
    );
    let _ = writeln!(out, "- topology: {}", results.topology);
    let _ = writeln!(
        out,
        "- TCP congestion control: {}",
        congestion_control(&results.tcp_congestion_control, &m.tcp_congestion_control)
    );
    let _ = writeln!(
        out,
        "- method: {:?} mode; per cell {} s warm-up, then {} repeat(s) of {} s{}; open-loop \
         latencies from each request's intended send time (coordinated omission corrected); \
         percentiles from the kept repeats' histograms pooled, ± is the standard deviation \
         across repeats",
        plan.mode,
        plan.warmup.as_secs_f64(),
        plan.repeats,
        plan.duration.as_secs_f64(),
        if plan.drops_worst() {
            ", the worst dropped"
        } else {
            ""
        },
    );
    let _ = writeln!(out, "- wall time: {:.0} s\n", results.wall_seconds);

    for scenario in &results.scenarios {
        if let Some(reason) = &scenario.skipped {
            let _ = writeln!(out, "- **{}** skipped: {reason}", scenario.kind.name());
        }
        if let Some(reason) = &scenario.failed {
            let _ = writeln!(out, "- **{}** failed: {reason}", scenario.kind.name());
        }
    }
    out.push('\n');
    targets(&mut out, results);

    for workload in plan
        .workloads
        .iter()
        .copied()
        .filter(|w| *w != Workload::Idle)
    {
        let _ = writeln!(out, "## {}\n", workload.title());
        if let Some(about) = about(workload) {
            let _ = writeln!(out, "{about}\n");
        }
        let _ = writeln!(
            out,
            "| scenario | load | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | +p50 | +p99 | MB/s | proxy CPU µs/req/hop | proxy peak RSS MB | mTLS handshakes/req | errors |"
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for load in plan.loads(workload) {
            let baseline = results
                .scenarios
                .iter()
                .find(|s| s.kind == ScenarioKind::Baseline)
                .and_then(|s| s.cell(workload, load))
                .and_then(|c| c.summary.as_ref());
            for scenario in results.scenarios.iter().filter(|s| s.skipped.is_none()) {
                let Some(cell) = scenario.cell(workload, load) else {
                    continue;
                };
                let Some(s) = &cell.summary else { continue };
                let p = &s.pooled;
                let added = |value: f64, base: Option<f64>| match (scenario.kind, base) {
                    (ScenarioKind::Baseline, _) | (_, None) => "–".to_string(),
                    (_, Some(base)) => format!("{:+.3}", value - base),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.1} | {} | {} | {} | {} |",
                    scenario.kind.name(),
                    load.label(),
                    stat(s.rate, 0),
                    p.p50_ms,
                    p.p90_ms,
                    p.p99_ms,
                    p.p999_ms,
                    p.max_ms,
                    added(p.p50_ms, baseline.map(|b| b.pooled.p50_ms)),
                    added(p.p99_ms, baseline.map(|b| b.pooled.p99_ms)),
                    s.throughput_mb_s.mean,
                    s.cpu_us_per_request_per_hop
                        .map_or("–".into(), |c| stat(c, 1)),
                    s.peak_rss_mb.map_or("–".into(), |r| format!("{r:.1}")),
                    s.mesh_handshakes_per_request
                        .map_or("–".into(), |h| format!("{h:.2}")),
                    cell.errors(),
                );
            }
        }
        out.push('\n');
    }

    cpu_breakdown(&mut out, results);
    scheduling(&mut out, results);

    if plan.workloads.contains(&Workload::Idle) {
        let _ = writeln!(out, "## {}\n", Workload::Idle.title());
        let _ = writeln!(
            out,
            "| scenario | proxy RSS idle MB | holding MB | KiB per connection | held | errors |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for scenario in results.scenarios.iter().filter(|s| s.kind.hops() > 0) {
            for cell in scenario
                .cells
                .iter()
                .filter(|c| c.workload == Workload::Idle)
            {
                if let Some(idle) = &cell.idle {
                    let _ = writeln!(
                        out,
                        "| {} | {:.1} | {:.1} | {:.1} | {} | {} |",
                        scenario.kind.name(),
                        idle.rss_before_mb,
                        idle.rss_held_mb,
                        idle.kib_per_connection,
                        idle.connections,
                        idle.errors
                    );
                }
            }
        }
        out.push('\n');
    }

    proxy_commands(&mut out, results);

    if !charts.is_empty() {
        let _ = writeln!(out, "## Charts\n");
        for chart in charts {
            let _ = writeln!(out, "![{chart}]({chart})\n");
        }
    }
    out
}

/// Each proxy's command line as the running process had it: with the configuration
/// files it names (in the run's scratch directory), how to start it again.
fn proxy_commands(out: &mut String, results: &Results) {
    let started: Vec<_> = results
        .scenarios
        .iter()
        .flat_map(|s| s.proxies.iter().map(move |p| (s.kind.name(), p)))
        .collect();
    if started.is_empty() {
        return;
    }
    let _ = writeln!(out, "## How the proxies were started\n");
    for (scenario, proxy) in started {
        let command: Vec<_> = proxy.command.iter().map(|arg| quoted(arg)).collect();
        let _ = writeln!(out, "- {scenario}, {}: `{}`", proxy.name, command.join(" "));
    }
    out.push('\n');
}

/// What the measured connections ran with, and whether that is the host's default.
fn congestion_control(used: &str, host: &str) -> String {
    match (used, host) {
        ("", _) => "not recorded".to_string(),
        (used, host) if used == host => format!("{used} (the host's default)"),
        (used, "") => used.to_string(),
        (used, host) => format!("{used}, set in the pods (the host's default: {host})"),
    }
}

/// An argument as a shell reads it back.
fn quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The whole machine's CPU at each knee and at the targets' fixed rate, and who
/// spent it: what limits a scenario that keeps every core busy.
fn cpu_breakdown(out: &mut String, results: &Results) {
    let rate = target_rate(results);
    let mut rows = Vec::new();
    for workload in results.plan.workloads.iter().copied() {
        for load in results.plan.loads(workload) {
            if load != Load::Max && !(workload == Workload::Http1 && load == rate) {
                continue;
            }
            for scenario in results.scenarios.iter().filter(|s| s.skipped.is_none()) {
                let Some(s) = scenario
                    .cell(workload, load)
                    .and_then(|c| c.summary.as_ref())
                else {
                    continue;
                };
                let Some(m) = s.machine else { continue };
                let proxies = s.cpu_us_per_request_per_hop.map_or("–".into(), |c| {
                    format!("{:.1}", c.mean * f64::from(scenario.hops))
                });
                rows.push(format!(
                    "| {} | {} | {} | {:.0} | {} | {:.0} | {:.1} | {} | {} | {:.1} |",
                    workload.name(),
                    load.label(),
                    scenario.kind.name(),
                    s.rate.mean,
                    stat(m.cpu_us_per_request, 1),
                    m.busy_pct.mean,
                    m.steal_pct.mean,
                    proxies,
                    m.proxy_user_pct.map_or("–".into(), |u| format!("{u:.0} %")),
                    s.generator_cpu_us_per_request,
                ));
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let cores = results.machine.cores;
    let _ = writeln!(out, "## Where the CPU went\n");
    let _ = writeln!(
        out,
        "The whole machine over each repeat (every process and the kernel, on all \
         {cores} cores: the cores' wall time less the idle and stolen time of \
         `/proc/stat`), per successful request; busy and steal are shares of the \
         cores' time, steal being what the hypervisor gave other guests. The proxies' \
         column sums every hop, and splits into their own code and the kernel working \
         for them (system calls and the network stack they drive). Where busy is near \
         100 %, the machine is the limit: {cores} × 10⁶ / machine µs per request is the \
         most it can carry, and the other columns say who spends it.\n"
    );
    table(
        out,
        "| workload | load | scenario | req/s | machine CPU µs/req | busy % | steal % | proxies CPU µs/req | proxies in their own code | load generator µs/req |",
        &rows,
    );
}

/// A Markdown table: `header`, the line under it, then `rows`, then a blank line.
fn table(out: &mut String, header: &str, rows: &[String]) {
    let columns = header.matches('|').count().saturating_sub(1);
    let _ = writeln!(out, "{header}\n|{}", "---|".repeat(columns));
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
    out.push('\n');
}

/// The Trellis sidecars' scheduling policy in every repeat, which their CPU per
/// request depends on: a row per repeat of each cell in which `--scheduling auto`
/// moved a sidecar, and, for the other cells, the policy they ran under throughout.
fn scheduling(out: &mut String, results: &Results) {
    let mut rows = Vec::new();
    let mut steady: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for scenario in results.scenarios.iter().filter(|s| s.kind.is_trellis()) {
        for cell in &scenario.cells {
            let readings = || {
                cell.runs
                    .iter()
                    .flat_map(|run| &run.proxies)
                    .filter_map(|proxy| proxy.scheduling.as_ref())
            };
            if readings().next().is_none() {
                continue;
            }
            if readings().any(|s| s.changes > 0 || s.start != s.end) {
                let dropped = cell.summary.as_ref().and_then(|s| s.dropped_run);
                for (index, run) in cell.runs.iter().enumerate() {
                    rows.push(format!(
                        "| {} | {} | {} | {}{} | {} | {} |",
                        cell.workload.name(),
                        cell.load.label(),
                        scenario.kind.name(),
                        index + 1,
                        if dropped == Some(index) {
                            " (dropped)"
                        } else {
                            ""
                        },
                        run.cpu_us_per_request_per_hop(scenario.hops)
                            .map_or("–".into(), |c| format!("{c:.1}")),
                        sidecars(run),
                    ));
                }
            } else {
                let mut policies: Vec<&str> = readings().map(|s| s.end.as_str()).collect();
                policies.sort_unstable();
                policies.dedup();
                steady
                    .entry(policies.join(" and "))
                    .or_default()
                    .push(format!(
                        "{} {} {}",
                        cell.workload.name(),
                        cell.load.label(),
                        scenario.kind.name()
                    ));
            }
        }
    }
    if rows.is_empty() && steady.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## The Trellis sidecars' scheduling
"
    );
    let _ = writeln!(
        out,
        "Each sidecar's CPU scheduling policy when a repeat began and when it ended, and \
         the moves `--scheduling auto` made in between, from its metrics \
         (`scheduling_policy`, `scheduling_policy_changes_total`) read just outside the \
         span whose CPU is measured.\n"
    );
    if !rows.is_empty() {
        table(
            out,
            "| workload | load | scenario | repeat | proxy CPU µs/req/hop | sidecars |",
            &rows,
        );
    }
    for (policies, cells) in steady {
        let _ = writeln!(
            out,
            "- `{policies}` throughout, without a move: {}",
            cells.join(", ")
        );
    }
    out.push('\n');
}

/// A repeat's sidecars, each as `client batch` or `server batch → normal, 3 moves`.
fn sidecars(run: &Run) -> String {
    let described: Vec<String> = run
        .proxies
        .iter()
        .filter_map(|proxy| {
            let s = proxy.scheduling.as_ref()?;
            let name = proxy
                .name
                .strip_prefix("trellis-proxy-")
                .unwrap_or(&proxy.name);
            Some(match s.changes {
                0 if s.start == s.end => format!("{name} {}", s.start),
                1 => format!("{name} {} → {}, 1 move", s.start, s.end),
                n => format!("{name} {} → {}, {n} moves", s.start, s.end),
            })
        })
        .collect();
    described.join("; ")
}

/// The busiest fixed rate this plan has, 2,000/s outside quick mode.
fn target_rate(results: &Results) -> Load {
    results
        .plan
        .loads(Workload::Http1)
        .into_iter()
        .rfind(|l| matches!(l, Load::Rate(r) if *r <= 2_000))
        .unwrap_or(Load::Max)
}

fn targets(out: &mut String, results: &Results) {
    let find = |kind: ScenarioKind| {
        results
            .scenarios
            .iter()
            .find(|s| s.kind == kind && s.skipped.is_none())
    };
    let summary = |kind, workload, load| {
        find(kind)
            .and_then(|s: &ScenarioResult| s.cell(workload, load))
            .and_then(|c: &Cell| c.summary.clone())
    };
    let base_max = summary(ScenarioKind::Baseline, Workload::Http1, Load::Max).map(|s| s.rate.mean);
    let share = |kind| -> String {
        match (summary(kind, Workload::Http1, Load::Max), base_max) {
            (Some(s), Some(base)) if base > 0.0 => share_of_direct(s.rate.mean, base),
            _ => "not measured".into(),
        }
    };
    let rate = target_rate(results);
    let cpu = |kind| {
        summary(kind, Workload::Http1, rate)
            .and_then(|s| s.cpu_us_per_request_per_hop)
            .map_or("not measured".into(), |c| format!("{} µs", stat(c, 1)))
    };
    let added = |pick: fn(&super::Summary) -> f64| match (
        summary(ScenarioKind::TrellisTwoHops, Workload::Http1, rate),
        summary(ScenarioKind::Baseline, Workload::Http1, rate),
    ) {
        (Some(t), Some(b)) => format!("{:+.3} ms", pick(&t) - pick(&b)),
        _ => "not measured".into(),
    };
    let idle_rss = |kind| {
        find(kind)
            .and_then(|s| s.idle_rss_mb)
            .map_or("not measured".into(), |r| format!("{r:.1} MB"))
    };
    let loaded_rss = |kind: ScenarioKind| {
        find(kind)
            .and_then(|s| {
                s.cells
                    .iter()
                    .filter_map(|c| c.summary.as_ref()?.peak_rss_mb)
                    .reduce(f64::max)
            })
            .map_or("not measured".into(), |r| format!("{r:.1} MB"))
    };
    let bulk = summary(ScenarioKind::TrellisTwoHops, Workload::Bulk, Load::Max)
        .map_or("not measured".into(), |s| {
            format!("{:.2} GB/s", s.throughput_mb_s.mean / 1000.0)
        });
    // A request of `new_mtls_connection` is a connection of its own between the two
    // hops; `new_connection` rides a pooled one and is in its own table.
    let handshakes = |kind| {
        summary(kind, Workload::NewMtlsConnection, Load::Max).map_or("not measured".into(), |s| {
            let counted = s.mesh_handshakes_per_request.map_or(String::new(), |h| {
                format!(" ({h:.2} handshakes per request)")
            });
            match s.cpu_us_per_request_per_hop {
                Some(cpu) if cpu.mean > 0.0 => format!(
                    "{:.0}/s through the pair{counted}; {:.0} per CPU-second per proxy",
                    s.rate.mean,
                    1e6 / cpu.mean
                ),
                _ => format!("{:.0}/s{counted}", s.rate.mean),
            }
        })
    };
    let errors_below_knee: u64 = results
        .scenarios
        .iter()
        .filter(|s| s.kind.is_trellis())
        .flat_map(|s| s.cells.iter())
        .filter(|c| matches!(c.load, Load::Rate(_)))
        .map(Cell::errors)
        .sum();
    let trellis_ran = results
        .scenarios
        .iter()
        .any(|s| s.kind.is_trellis() && s.skipped.is_none());

    let _ = writeln!(out, "## Targets (issue 3)\n");
    let _ = writeln!(out, "| target | goal | Trellis | for reference |");
    let _ = writeln!(out, "|---|---|---|---|");
    let rows = [
        (
            "one hop, max throughput vs direct",
            "≥ 35 %",
            share(ScenarioKind::TrellisOneHop),
            format!(
                "HAProxy {}, nginx {}",
                share(ScenarioKind::HaproxyOneHop),
                share(ScenarioKind::NginxOneHop)
            ),
        ),
        (
            "two hops (mTLS), max throughput vs direct",
            "≥ 20 %",
            share(ScenarioKind::TrellisTwoHops),
            format!("HAProxy TLS pair {}", share(ScenarioKind::HaproxyTwoHops)),
        ),
        (
            &*format!("CPU per request per hop at {}", rate.label()),
            "≤ 30 µs",
            format!(
                "1 hop {}, 2 hops {}",
                cpu(ScenarioKind::TrellisOneHop),
                cpu(ScenarioKind::TrellisTwoHops)
            ),
            format!(
                "HAProxy {}, nginx {}",
                cpu(ScenarioKind::HaproxyOneHop),
                cpu(ScenarioKind::NginxOneHop)
            ),
        ),
        (
            &*format!("two hops at {}: added p99", rate.label()),
            "≤ 0.4 ms",
            added(|s| s.pooled.p99_ms),
            String::new(),
        ),
        (
            &*format!("two hops at {}: added p99.9", rate.label()),
            "≤ 1 ms",
            added(|s| s.pooled.p999_ms),
            String::new(),
        ),
        (
            "resident memory idle",
            "≤ 10 MB",
            idle_rss(ScenarioKind::TrellisTwoHops),
            format!(
                "HAProxy {}, nginx {}",
                idle_rss(ScenarioKind::HaproxyOneHop),
                idle_rss(ScenarioKind::NginxOneHop)
            ),
        ),
        (
            "resident memory under load (peak)",
            "≤ 20 MB",
            loaded_rss(ScenarioKind::TrellisTwoHops),
            format!(
                "HAProxy {}, nginx {}",
                loaded_rss(ScenarioKind::HaproxyOneHop),
                loaded_rss(ScenarioKind::NginxOneHop)
            ),
        ),
        (
            "1 MiB bodies over two mTLS hops",
            "≥ 1 GB/s",
            bulk,
            String::new(),
        ),
        (
            "new mTLS connections (`new_mtls_connection` at max)",
            "≥ 2,000/s/core",
            handshakes(ScenarioKind::TrellisTwoHops),
            format!(
                "HAProxy TLS pair {}",
                handshakes(ScenarioKind::HaproxyTwoHops)
            ),
        ),
        (
            "errors below the knee",
            "0",
            if trellis_ran {
                errors_below_knee.to_string()
            } else {
                "not measured".into()
            },
            String::new(),
        ),
    ];
    for (name, goal, value, reference) in rows {
        let _ = writeln!(out, "| {name} | {goal} | {value} | {reference} |");
    }
    out.push('\n');
}

/// What a workload measures, where its name alone does not say.
fn about(workload: Workload) -> Option<&'static str> {
    match workload {
        Workload::NewConnection => Some(
            "Each request on a fresh app connection to the backend's HTTP port. Between \
             two Trellis sidecars it rides their one pooled HTTP/2 mTLS connection (no \
             handshake: see the handshakes column), and HAProxy and nginx reuse their \
             pooled upstream connections (`http-reuse always`, `keepalive 64`): this is \
             what accepting an app connection costs a proxy. The handshake cost is \
             `new_mtls_connection`'s.",
        ),
        Workload::NewMtlsConnection => Some(
            "Each request on a fresh app connection to the backend's second port (27182, \
             the same server), which the Trellis client sidecar forwards unparsed \
             (`--opaque-ports 27182`): in `trellis-2hop-mtls` every app connection is an \
             mTLS connection of its own between the sidecars, a TLS 1.3 handshake each \
             (`trellis-1hop`: a TCP connection to the backend each). The HAProxy pair \
             forwards that port in TCP mode, so every connection is likewise a TLS 1.3 \
             connection of its own between the two HAProxies, the comparable figure \
             (its HTTP ports, `http-reuse always`, would reuse a pooled one). Both keep \
             their TLS session caches on, as they ship (rustls for Trellis, OpenSSL for \
             HAProxy), so a repeat handshake to the same peer may be a resumed one. \
             HAProxy one hop forwards the port in TCP mode too, nginx proxies it without \
             upstream keep-alive (a new upstream connection per request), and the \
             baseline connects to it directly.",
        ),
        _ => None,
    }
}

/// A knee as a share of the direct one, with a decimal: next to a goal of 35 %, a
/// rounded "35 %" would hide a 34.8.
fn share_of_direct(rate: f64, direct: f64) -> String {
    format!(
        "{:.1} % ({rate:.0} of {direct:.0} req/s)",
        100.0 * rate / direct
    )
}

fn stat(value: Stat, decimals: usize) -> String {
    if value.sd == 0.0 {
        format!("{:.*}", decimals, value.mean)
    } else {
        format!("{:.*} ± {:.*}", decimals, value.mean, decimals, value.sd)
    }
}

#[cfg(test)]
mod tests {
    use super::{congestion_control, quoted, share_of_direct, sidecars};
    use crate::report::{ProxyUsage, Run, SchedulingUsage};

    #[test]
    fn the_congestion_control_says_whether_the_pods_kept_the_hosts() {
        assert_eq!(congestion_control("bbr", "bbr"), "bbr (the host's default)");
        assert_eq!(
            congestion_control("cubic", "bbr"),
            "cubic, set in the pods (the host's default: bbr)"
        );
        assert_eq!(congestion_control("", "bbr"), "not recorded");
    }

    #[test]
    fn a_share_just_under_its_goal_does_not_round_up_to_it() {
        assert_eq!(
            share_of_direct(62_582.0, 180_019.0),
            "34.8 % (62582 of 180019 req/s)"
        );
    }

    #[test]
    fn each_sidecar_says_the_policy_it_ran_under_and_how_often_it_moved() {
        let proxy = |name: &str, scheduling: Option<(&str, &str, u64)>| ProxyUsage {
            name: name.into(),
            cpu_seconds: 0.1,
            user_seconds: 0.05,
            rss_mb: 10.0,
            hwm_mb: 10.0,
            scheduling: scheduling.map(|(start, end, changes)| SchedulingUsage {
                start: start.into(),
                end: end.into(),
                changes,
            }),
        };
        let run = |proxies| Run {
            load: serde_json::from_value(serde_json::json!({
                "url": "http://x/", "protocol": "http1", "connections": 1,
                "target_rate": 2000.0, "duration_s": 1.0, "requests": 2000, "errors": 0,
                "errors_by_kind": {},
                "rate": 2000.0, "p50_ms": 0.1, "p90_ms": 0.1, "p99_ms": 0.2,
                "p999_ms": 0.3, "p9999_ms": 0.3, "max_ms": 0.4, "mean_ms": 0.1,
                "service_p99_ms": 0.2, "bytes_received": 0, "throughput_mb_s": 0.0,
                "generator_cpu_us_per_request": 5.0
            }))
            .expect("a load report"),
            proxies,
            mesh_handshakes: None,
            machine: None,
        };
        let steady = run(vec![
            proxy("trellis-proxy-client", Some(("batch", "batch", 0))),
            proxy("trellis-proxy-server", Some(("batch", "batch", 0))),
        ]);
        assert_eq!(sidecars(&steady), "client batch; server batch");
        let moved = run(vec![
            proxy("trellis-proxy-client", Some(("batch", "batch", 2))),
            proxy("trellis-proxy-server", Some(("batch", "normal", 1))),
        ]);
        assert_eq!(
            sidecars(&moved),
            "client batch → batch, 2 moves; server batch → normal, 1 move"
        );
        // Proxies without a reading (HAProxy, nginx, an older Trellis) say nothing.
        assert_eq!(sidecars(&run(vec![proxy("haproxy", None)])), "");
    }

    #[test]
    fn arguments_are_quoted_only_where_a_shell_would_split_or_expand_them() {
        assert_eq!(quoted("--workers=2"), "--workers=2");
        assert_eq!(
            quoted("/tmp/trellis-bench-1/ca.crt"),
            "/tmp/trellis-bench-1/ca.crt"
        );
        assert_eq!(
            quoted("spiffe://cluster.local/ns/bench/sa/client"),
            "spiffe://cluster.local/ns/bench/sa/client"
        );
        assert_eq!(quoted(""), "''");
        assert_eq!(quoted("a b"), "'a b'");
        assert_eq!(quoted("it's $HOME"), r"'it'\''s $HOME'");
    }
}
