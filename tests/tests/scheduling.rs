//! `--scheduling batch` runs every thread of the proxy under `SCHED_BATCH` (the main
//! thread, the shards, tokio's blocking pool), because it is set before any of them
//! starts; the default leaves them under `SCHED_OTHER`. A client sidecar with the flag
//! and a server sidecar without it carry a 1 MiB download between them, and the
//! kernel's own view of each thread (`/proc/PID/task/TID/stat`) says which policy it
//! runs under.

use std::fs;

use anyhow::Context as _;
use trellis_tests::{HttpApp, PodPair, host_can_run_pods};

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
    let pods = PodPair::start_with(&[], &["--scheduling", "batch", "--workers", "2"], &[])?;
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
