//! `--scheduling batch` runs every thread of the proxy under `SCHED_BATCH` (the main
//! thread, the shards, tokio's blocking pool), because it is set before any of them
//! starts; `--scheduling normal` leaves them under `SCHED_OTHER`. A client sidecar
//! with the one and a server sidecar with the other carry a 1 MiB download between them, and the
//! kernel's own view of each thread (`/proc/PID/task/TID/stat`) says which policy it
//! runs under.
//!
//! `--scheduling auto` moves every thread between the two by the CPUs' idle time in
//! `/proc/stat`. The test cannot make this machine idle or busy, so it gives the
//! sidecar a procfs of its own (`--procfs`) whose `stat` it keeps advancing, first as
//! CPUs that idle, then as CPUs that never do, and reads each thread's policy as the
//! kernel reports it after each turn.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use trellis_tests::{HttpApp, Metrics, PodPair, host_can_run_pods};

const APP_PORT: u16 = 7070;
const CURL: (&str, &str) = ("curl", "curl");
const BODY: u64 = 1024 * 1024;
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

#[test]
fn a_sidecar_started_with_batch_runs_every_thread_under_sched_batch() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let pods = PodPair::start_with(
        &[],
        &["--scheduling", "batch", "--workers", "2"],
        &["--scheduling", "normal"],
    )?;
    let _app = HttpApp::start_in(pods.server.netns(), APP_PORT, "server")?;
    pods.download_whole(APP_PORT, BODY)?;

    let client = pods.client.sidecar_pid().context("the client sidecar")?;
    let server = pods.server.sidecar_pid().context("the server sidecar")?;
    let client_threads = thread_policies(client)?;
    // The main thread and at least the second shard, named as the proxy names them.
    assert!(
        client_threads
            .iter()
            .any(|(name, _)| name == "trellis-shard-1"),
        "{client_threads:?}"
    );
    assert!(
        client_threads
            .iter()
            .all(|(_, policy)| *policy == SCHED_BATCH),
        "{client_threads:?}"
    );
    let server_threads = thread_policies(server)?;
    assert!(
        server_threads
            .iter()
            .all(|(_, policy)| *policy == SCHED_OTHER),
        "{server_threads:?}"
    );
    // And the admin port says what the proxy runs under.
    assert_eq!(pods.client.config()?.flag("scheduling"), "batch");
    assert_eq!(pods.server.config()?.flag("scheduling"), "normal");
    Ok(())
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const STOP: u8 = 2;

#[test]
fn a_sidecar_started_with_auto_follows_the_idle_time_of_its_cpus() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let procfs = FakeProcfs::new()?;
    let procfs_arg = procfs.dir.to_string_lossy().into_owned();
    let pods = PodPair::start_with(
        &[],
        &[
            "--scheduling",
            "auto",
            "--procfs",
            &procfs_arg,
            "--workers",
            "2",
        ],
        &[],
    )?;
    let client = pods.client.sidecar_pid().context("the client sidecar")?;
    assert_eq!(pods.client.config()?.flag("scheduling"), "auto");
    // The server's sidecar, started without the flag, has the same default.
    assert_eq!(pods.server.config()?.flag("scheduling"), "auto");

    // CPUs that idle 95 % of the time: batch, on every thread.
    wait_for_policy(client, SCHED_BATCH)?;
    let metrics = pods.client.metrics()?;
    assert_eq!(
        metrics.sum("scheduling_policy", &[("policy", "batch")]),
        1.0
    );
    assert_eq!(
        metrics.sum("scheduling_policy", &[("policy", "normal")]),
        0.0
    );
    assert_eq!(changes(&metrics), (0.0, 1.0), "(to normal, to batch)");
    // Serving as before.
    let _app = HttpApp::start_in(pods.server.netns(), APP_PORT, "server")?;
    pods.download_whole(APP_PORT, BODY)?;

    // CPUs that never idle: back to normal.
    procfs.set(BUSY);
    wait_for_policy(client, SCHED_OTHER)?;
    let metrics = pods.client.metrics()?;
    assert_eq!(
        metrics.sum("scheduling_policy", &[("policy", "normal")]),
        1.0
    );
    assert_eq!(
        metrics.sum("scheduling_policy", &[("policy", "batch")]),
        0.0
    );
    assert_eq!(changes(&metrics), (1.0, 1.0), "(to normal, to batch)");
    let log = pods.client.proxy_log_text();
    assert!(
        log.contains("scheduling policy changed"),
        "each change is logged: {log}"
    );
    Ok(())
}

/// The moves `--scheduling auto` counted, to `normal` and to `batch`.
fn changes(metrics: &Metrics) -> (f64, f64) {
    let to = |policy| metrics.sum("scheduling_policy_changes_total", &[("policy", policy)]);
    (to("normal"), to("batch"))
}

/// Waits until every thread of `pid` runs under `policy`, or fails with what they
/// run under.
fn wait_for_policy(pid: u32, policy: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let threads = thread_policies(pid)?;
        if threads.iter().all(|(_, p)| *p == policy) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every thread moved to policy {policy}: {threads:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory holding only a `stat`, rewritten every 20 ms with the `cpuN` lines of
/// this machine's own, their counters advancing as CPUs that idle 95 % of the time
/// or, after [`FakeProcfs::set`] `BUSY`, never.
struct FakeProcfs {
    dir: PathBuf,
    mode: Arc<AtomicU8>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl FakeProcfs {
    fn new() -> anyhow::Result<FakeProcfs> {
        let dir = std::env::temp_dir().join(format!("trellis-procfs-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        // The sidecar runs under its own uid and must read it.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let cpus: Vec<String> = fs::read_to_string("/proc/stat")?
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.len() > 3 && name.starts_with("cpu"))
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(!cpus.is_empty(), "no cpuN line in /proc/stat");
        let mode = Arc::new(AtomicU8::new(IDLE));
        write_stat(&dir, &cpus, 0, 0)?;
        let writer = {
            let (dir, mode) = (dir.clone(), mode.clone());
            std::thread::spawn(move || {
                let (mut busy, mut idle) = (0u64, 0u64);
                loop {
                    match mode.load(Ordering::Relaxed) {
                        IDLE => (busy, idle) = (busy + 1, idle + 19),
                        BUSY => busy += 20,
                        _ => return,
                    }
                    if let Err(error) = write_stat(&dir, &cpus, busy, idle) {
                        eprintln!("fake procfs: {error}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Ok(FakeProcfs {
            dir,
            mode,
            writer: Some(writer),
        })
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }
}

impl Drop for FakeProcfs {
    fn drop(&mut self) {
        self.set(STOP);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Replaces `dir/stat` whole (a rename), so the sidecar never reads half a file.
fn write_stat(dir: &Path, cpus: &[String], busy: u64, idle: u64) -> std::io::Result<()> {
    let mut text = String::from("cpu  0 0 0 0 0 0 0 0 0 0\n");
    for cpu in cpus {
        text += &format!("{cpu} {busy} 0 0 {idle} 0 0 0 0 0 0\n");
    }
    text += "ctxt 0\nbtime 0\n";
    let next = dir.join("stat.next");
    fs::write(&next, text)?;
    fs::set_permissions(&next, fs::Permissions::from_mode(0o644))?;
    fs::rename(next, dir.join("stat"))
}

/// Each thread of `pid`: its name and its scheduling policy, field 41 of its `stat`
/// (proc(5)), counted after the name, which is in parentheses and may hold spaces.
fn thread_policies(pid: u32) -> anyhow::Result<Vec<(String, u32)>> {
    let mut threads = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = fs::read_to_string(task?.path().join("stat"))?;
        let (open, close) = (stat.find('('), stat.rfind(')'));
        let (Some(open), Some(close)) = (open, close) else {
            anyhow::bail!("unexpected stat: {stat}");
        };
        let name = stat[open + 1..close].to_owned();
        // Fields after the name start at field 3 (state); policy is field 41.
        let policy = stat[close + 1..]
            .split_whitespace()
            .nth(41 - 3)
            .with_context(|| format!("no policy in {stat}"))?
            .parse()?;
        threads.push((name, policy));
    }
    Ok(threads)
}
