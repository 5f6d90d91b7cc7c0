//! `trellis-bench run --quick` as CI runs it: every scenario this host can run
//! produces results for every workload (the handshake workload `new_mtls_connection`
//! included), with no failed request. Times are never asserted: this is a smoke test
//! of the harness, not a benchmark. What is asserted beyond that is what a workload
//! means: through two Trellis sidecars, `new_connection` rides the pooled mesh
//! connection and `new_mtls_connection` costs a handshake per request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use trellis_bench::plan::{Load, Workload};
use trellis_bench::report::Results;
use trellis_bench::scenario::find_program;

/// The runs use fixed ports and both want the two cores: one at a time.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn quick_run(scenarios: &[&str], extra: &[&str], out: &Path) -> Results {
    let _guard = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
        .args([
            "run",
            "--quick",
            "--no-install",
            "--scenarios",
            &scenarios.join(","),
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run trellis-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let markdown = std::fs::read_to_string(out.join("results.md")).expect("results.md written");
    assert!(markdown.contains("## Where the CPU went") && out.join("knee.svg").is_file());
    serde_json::from_str(&json).expect("results.json parses")
}

/// Every measured scenario has a result for every workload, and nothing failed.
fn assert_complete(results: &Results, expected: &[&str]) {
    assert_eq!(
        results.plan.workloads,
        Workload::ALL,
        "a quick run covers every workload"
    );
    for scenario in &results.scenarios {
        let name = scenario.kind.name();
        assert!(expected.contains(&name), "unexpected scenario {name}");
        assert_eq!(scenario.failed, None, "{name} failed");
        assert_eq!(scenario.skipped, None, "{name} was skipped");
        for workload in &results.plan.workloads {
            if *workload == Workload::Idle && scenario.hops == 0 {
                continue;
            }
            for load in results.plan.loads(*workload) {
                let cell = scenario
                    .cell(*workload, load)
                    .unwrap_or_else(|| panic!("{name}: no {workload:?} at {load:?}"));
                assert!(
                    cell.has_results(),
                    "{name}: {workload:?} at {load:?} measured nothing"
                );
                assert_eq!(
                    cell.errors(),
                    0,
                    "{name}: errors in {workload:?} at {load:?}"
                );
                if let Some(summary) = &cell.summary {
                    let machine = summary
                        .machine
                        .unwrap_or_else(|| panic!("{name}: no machine CPU at {load:?}"));
                    assert!(
                        machine.cpu_us_per_request.mean > 0.0 && machine.busy_pct.mean > 0.0,
                        "{name}: a run that sent requests kept no core busy: {machine:?}"
                    );
                    // A proxy's CPU comes in clock ticks: a quick low-rate run may
                    // not cost one, so only its absence without proxies is certain.
                    if scenario.hops == 0 {
                        assert_eq!(machine.proxy_user_pct, None, "{name}: no proxy");
                    }
                }
            }
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("trellis-bench-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_quick_run_measures_the_baseline_and_every_installed_reference_proxy_without_errors() {
    let mut scenarios = vec!["baseline"];
    if find_program("haproxy").is_some() {
        scenarios.extend(["haproxy-1hop", "haproxy-2hop-tls"]);
    } else {
        eprintln!("haproxy is not installed: its scenarios are left out");
    }
    if find_program("nginx").is_some() {
        scenarios.push("nginx-1hop");
    } else {
        eprintln!("nginx is not installed: its scenario is left out");
    }
    let out = scratch("loopback");
    let results = quick_run(&scenarios, &["--loopback"], &out);
    assert_eq!(results.scenarios.len(), scenarios.len());
    assert_complete(&results, &scenarios);
    for scenario in results.scenarios.iter().filter(|s| s.hops > 0) {
        // HAProxy and nginx each run the configuration file the harness wrote.
        let starts = &scenario.proxies;
        assert_eq!(starts.len(), scenario.hops as usize, "{starts:?}");
        assert!(
            starts.iter().all(|p| p
                .command
                .iter()
                .any(|arg| arg.ends_with(".cfg") || arg.ends_with(".conf"))),
            "{starts:?}"
        );
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_congestion_control_the_kernel_lacks_is_refused_before_anything_runs() {
    let output = Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
        .args([
            "run",
            "--quick",
            "--congestion-control",
            "no-such-algorithm",
        ])
        .arg("--out")
        .arg(scratch("no-such-cc"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run trellis-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("this kernel offers") && stderr.contains("\"no-such-algorithm\""),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing started");
}

/// The Trellis binaries next to this test's build (`target/<profile>/`).
fn trellis_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("tests live in target/<profile>/deps")
}

/// Whether this host can run pods and has the Trellis binaries. Otherwise prints why
/// and skips, or fails under `TRELLIS_E2E=require` (as CI sets it).
fn can_run_trellis(bin: &Path) -> bool {
    let mut reasons = Vec::new();
    let preflight = trellis_netns::preflight();
    if !preflight.is_ok() {
        reasons.push(preflight.to_string());
    }
    let missing = trellis_bench::scenario::missing_trellis_binaries(bin);
    if !missing.is_empty() {
        reasons.push(format!(
            "missing {missing:?}: run cargo build --workspace --bins first"
        ));
    }
    if reasons.is_empty() {
        return true;
    }
    let reason = reasons.join("; ");
    if std::env::var("TRELLIS_E2E").as_deref() == Ok("require") {
        panic!("TRELLIS_E2E=require, but {reason}");
    }
    eprintln!("skipping (set TRELLIS_E2E=require to make this a failure): {reason}");
    false
}

#[test]
fn a_quick_run_drives_every_workload_through_one_and_two_trellis_hops_in_pods() {
    let bin = trellis_bin_dir();
    if !can_run_trellis(&bin) {
        return;
    }
    let scenarios = ["baseline", "trellis-1hop", "trellis-2hop-mtls"];
    let out = scratch("pods");
    let bin = bin.display().to_string();
    // Two workers, the proxy's own default on CI's two cores, but asked for: the
    // flag must reach every sidecar's command line. Reno, built into every kernel,
    // as the pods' congestion control: read back from both.
    let results = quick_run(
        &scenarios,
        &[
            "--trellis-bin",
            &bin,
            "--proxy-workers",
            "2",
            "--congestion-control",
            "reno",
        ],
        &out,
    );
    assert!(results.topology.starts_with("pods"), "{}", results.topology);
    assert_eq!(results.tcp_congestion_control, "reno");
    assert_complete(&results, &scenarios);
    for scenario in results.scenarios.iter().filter(|s| s.hops > 0) {
        let starts = &scenario.proxies;
        assert_eq!(starts.len(), scenario.hops as usize, "{starts:?}");
        for start in starts {
            assert!(start.command[0].ends_with("trellis-proxy"), "{start:?}");
            assert!(
                start.command.windows(2).any(|w| w == ["--workers", "2"]),
                "{start:?}"
            );
        }
    }
    let two_hops = results
        .scenarios
        .iter()
        .find(|s| s.kind.name() == "trellis-2hop-mtls")
        .expect("two hops measured");
    let http1 = two_hops
        .cells
        .iter()
        .find(|c| c.workload == Workload::Http1)
        .expect("http1");
    let proxies = &http1.runs[0].proxies;
    assert_eq!(proxies.len(), 2, "both sidecars are measured: {proxies:?}");
    assert!(proxies.iter().all(|p| p.rss_mb > 0.0));
    // And each one's scheduling policy over the repeat, read from its metrics.
    for proxy in proxies {
        let scheduling = proxy
            .scheduling
            .as_ref()
            .unwrap_or_else(|| panic!("{}: its scheduling read", proxy.name));
        for policy in [&scheduling.start, &scheduling.end] {
            assert!(
                ["normal", "batch"].contains(&policy.as_str()),
                "{scheduling:?}"
            );
        }
    }
    let markdown = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(markdown.contains("## The Trellis sidecars' scheduling"));

    // The client sidecar's own count of mesh handshakes, per successful request.
    let handshakes_per_request = |workload: Workload| {
        two_hops
            .cell(workload, Load::Max)
            .and_then(|cell| cell.summary.as_ref())
            .and_then(|summary| summary.mesh_handshakes_per_request)
            .unwrap_or_else(|| panic!("{workload:?}: handshakes counted"))
    };
    let pooled = handshakes_per_request(Workload::NewConnection);
    assert!(
        pooled < 0.01,
        "a new app connection rides the pooled mesh connection: {pooled} handshakes per request"
    );
    let own = handshakes_per_request(Workload::NewMtlsConnection);
    assert!(
        (0.98..=1.02).contains(&own),
        "every app connection to the opaque port is its own mTLS connection: {own} handshakes per request"
    );
    let _ = std::fs::remove_dir_all(out);
}
