//! `--scheduling auto`: moves the proxy's threads between `SCHED_OTHER` and
//! `SCHED_BATCH` by how idle the CPUs it may run on are.
//!
//! `batch` makes a request wait only where the CPU a proxy thread is woken on runs a
//! thread that does not go back to sleep and the kernel found no idle CPU to wake it
//! on instead: the proxy then waits for a scheduler tick. That needs a node with
//! almost no idle time left, so the governor reads the CPUs' idle time from
//! `/proc/stat` every [`WINDOW`]. In a window where less than [`BUSY`] of their time
//! was idle it moves every thread to `normal` at once; after [`CALM_WINDOWS`] windows
//! in a row with at least [`CALM`] of it idle, back to `batch`. The gap between the
//! two thresholds and the run of calm windows keep a node near one threshold from
//! switching at every window. Only the CPUs in the proxy's affinity mask count: a pod
//! pinned to a cpuset contends only for those.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::Policy;
use crate::metrics::Metrics;

/// How often the CPUs' idle time is read: long enough to hold tens of the kernel's
/// `USER_HZ` ticks per CPU, short enough that a node that fills up gets `normal`
/// within a quarter of a second.
pub const WINDOW: Duration = Duration::from_millis(250);
/// Below this share of idle time in one window, `normal`.
pub const BUSY: f64 = 0.2;
/// At or above this share, for [`CALM_WINDOWS`] windows in a row, `batch`.
pub const CALM: f64 = 0.4;
pub const CALM_WINDOWS: u32 = 4;

/// Time the kernel counted for a set of CPUs since boot, in `USER_HZ` ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub idle: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Sums the `cpuN` lines of a `/proc/stat` text for the CPUs `allowed` accepts;
    /// `None` if there is none, or a line is not as proc(5) describes it.
    pub fn parse(stat: &str, allowed: impl Fn(usize) -> bool) -> Option<CpuTimes> {
        let mut times = CpuTimes::default();
        let mut found = false;
        for line in stat.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(cpu) = fields.next().and_then(|name| name.strip_prefix("cpu")) else {
                continue;
            };
            // The first line, "cpu", sums every CPU.
            let Ok(cpu) = cpu.parse::<usize>() else {
                continue;
            };
            if !allowed(cpu) {
                continue;
            }
            // user nice system idle iowait irq softirq steal; guest time is already
            // in user and nice, and the fields after these are guest time.
            let counters: Vec<u64> = fields
                .take(8)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let [_, _, _, idle, iowait, ..] = counters[..] else {
                return None;
            };
            times.idle += idle + iowait;
            times.total += counters.iter().sum::<u64>();
            found = true;
        }
        found.then_some(times)
    }

    /// The share of the time counted between `earlier` and `self` that was idle;
    /// `None` if no time was counted, or the counters went back.
    pub fn idle_share_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0 && idle <= total).then(|| idle as f64 / total as f64)
    }
}

/// The policy the windows seen so far call for.
#[derive(Debug)]
pub struct Hysteresis {
    policy: Policy,
    calm: u32,
}

impl Hysteresis {
    pub fn new(policy: Policy) -> Hysteresis {
        Hysteresis { policy, calm: 0 }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The policy after a window in which `idle_share` of the time was idle.
    pub fn observe(&mut self, idle_share: f64) -> Policy {
        if idle_share < BUSY {
            self.calm = 0;
            self.policy = Policy::Normal;
        } else if idle_share >= CALM {
            self.calm = self.calm.saturating_add(1);
            if self.calm >= CALM_WINDOWS {
                self.policy = Policy::Batch;
            }
        } else {
            self.calm = 0;
        }
        self.policy
    }
}

/// Runs `--scheduling auto` until `shutdown`, reading `procfs/stat`. The threads start
/// under `normal` (set by `main`); a policy the kernel refuses ends the governing
/// with a warning, leaving the threads as they are.
pub async fn govern(procfs: PathBuf, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let allowed = match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => set,
        Err(error) => {
            tracing::warn!(%error, "--scheduling auto: cannot read the CPUs this proxy may run on; staying on normal");
            return;
        }
    };
    let path = procfs.join("stat");
    let read = || {
        let text = std::fs::read_to_string(&path).ok()?;
        CpuTimes::parse(&text, |cpu| is_allowed(&allowed, cpu))
    };
    let Some(mut last) = read() else {
        tracing::warn!(path = %path.display(), "--scheduling auto: cannot read the CPUs' idle time; staying on normal");
        return;
    };
    let mut state = Hysteresis::new(Policy::Normal);
    metrics.set_scheduling(state.policy());
    let mut windows = tokio::time::interval(WINDOW);
    windows.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    windows.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = windows.tick() => {}
        }
        let Some(now) = read() else {
            tracing::debug!(path = %path.display(), "unreadable; window skipped");
            continue;
        };
        let idle = now.idle_share_since(&last);
        last = now;
        let Some(idle) = idle else {
            continue;
        };
        let before = state.policy();
        let after = state.observe(idle);
        if after == before {
            continue;
        }
        if let Err(error) = after.apply_to_every_thread() {
            tracing::warn!(%error, policy = after.as_str(), "--scheduling auto: cannot change the threads' policy; governing stops");
            return;
        }
        metrics.scheduling_changed(after);
        tracing::info!(
            policy = after.as_str(),
            idle = format!("{:.0} %", idle * 100.0),
            "scheduling policy changed"
        );
    }
}

fn is_allowed(set: &CpuSet, cpu: usize) -> bool {
    set.is_set(cpu).unwrap_or(false)
}

#[cfg(test)]
mod tests;
