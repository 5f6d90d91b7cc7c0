//! What a process costs, read from `/proc`: CPU seconds (user + system, from
//! `/proc/PID/stat`) and resident memory, current (`VmRSS`) and peak (`VmHWM`, from
//! `/proc/PID/status`). The harness samples each proxy before and after a run, and
//! resets the peak in between (`/proc/PID/clear_refs`), so every run reports its own.
//! Around each run it also reads what the whole machine spent (`/proc/stat` and the
//! clock): every process and the kernel on every core, and the time the hypervisor
//! took away. Each proxy's command line is read once, as the report's record of how
//! it was started.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// User + system CPU time since the process started.
    pub cpu_seconds: f64,
    /// The part of it spent in the process's own code rather than in the kernel.
    pub user_seconds: f64,
    pub rss_bytes: u64,
    /// Peak resident memory since start or since the last [`reset_peak`].
    pub hwm_bytes: u64,
}

/// Reads the CPU time and memory of process `pid`.
pub fn usage(pid: u32) -> Result<Usage, Error> {
    let (rss_bytes, hwm_bytes) = memory(pid)?;
    let cpu = cpu_times(&format!("/proc/{pid}/stat"))?;
    Ok(Usage {
        cpu_seconds: cpu.user + cpu.system,
        user_seconds: cpu.user,
        rss_bytes,
        hwm_bytes,
    })
}

/// This process's CPU time, all threads included.
pub fn self_cpu_seconds() -> Result<f64, Error> {
    cpu_times("/proc/self/stat").map(|cpu| cpu.user + cpu.system)
}

/// The calling thread's CPU time.
pub fn thread_cpu_seconds() -> Result<f64, Error> {
    cpu_times("/proc/thread-self/stat").map(|cpu| cpu.user + cpu.system)
}

/// A process's CPU time in seconds, in its own code and in the kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    user: f64,
    system: f64,
}

fn cpu_times(path: &str) -> Result<CpuTimes, Error> {
    let stat = read(path)?;
    parse_cpu_times(&stat, clock_ticks()).ok_or_else(|| Error::ProcFormat {
        path: path.into(),
        field: "utime/stime",
    })
}

/// utime and stime are fields 14 and 15, counted after the `(comm)` field, whose
/// name may itself contain spaces and parentheses: hence the split at the last `)`.
fn parse_cpu_times(stat: &str, ticks_per_second: f64) -> Option<CpuTimes> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some(CpuTimes {
        user: utime / ticks_per_second,
        system: stime / ticks_per_second,
    })
}

/// What the whole machine's cores spent over a stretch of time, in seconds summed
/// over the cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineCpu {
    /// Running anything: processes in their own code or in the kernel, interrupts.
    pub busy_seconds: f64,
    /// Nothing to run (idle and waiting for I/O).
    pub idle_seconds: f64,
    /// Taken by the hypervisor for other guests while this one had work to run.
    pub steal_seconds: f64,
}

impl MachineCpu {
    /// Busy and stolen time as shares (%) of all the cores' time.
    pub fn shares(&self) -> Option<(f64, f64)> {
        let total = self.busy_seconds + self.idle_seconds + self.steal_seconds;
        (total > 0.0).then(|| {
            (
                100.0 * self.busy_seconds / total,
                100.0 * self.steal_seconds / total,
            )
        })
    }
}

/// One reading of the machine's clocks. Busy time is what the cores' wall time leaves
/// once idle and stolen time are taken out, because those two are the exact ones:
/// with the tick stopped on idle cores (`NO_HZ_IDLE`), `/proc/stat` measures idle
/// time with a clock, while user and system time are sampled by the tick, which a
/// proxy woken for 20 µs every 500 µs mostly misses (a fixed 2,000 req/s read as
/// 0–41 % busy from one run to the next).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineClock {
    at: Instant,
    cores: usize,
    idle_seconds: f64,
    steal_seconds: f64,
}

impl MachineClock {
    /// What the cores spent between `earlier` and this reading.
    pub fn since(&self, earlier: &MachineClock) -> MachineCpu {
        let wall = self.at.saturating_duration_since(earlier.at).as_secs_f64() * self.cores as f64;
        let idle_seconds = (self.idle_seconds - earlier.idle_seconds).clamp(0.0, wall);
        let steal_seconds =
            (self.steal_seconds - earlier.steal_seconds).clamp(0.0, wall - idle_seconds);
        MachineCpu {
            busy_seconds: wall - idle_seconds - steal_seconds,
            idle_seconds,
            steal_seconds,
        }
    }
}

/// Reads the machine's idle and stolen time from `/proc/stat`, and the time now.
pub fn machine_clock() -> Result<MachineClock, Error> {
    let path = "/proc/stat";
    let stat = read(path)?;
    parse_machine_clock(&stat, clock_ticks(), Instant::now()).ok_or_else(|| Error::ProcFormat {
        path: path.into(),
        field: "cpu",
    })
}

/// The reading `stat` gives at `at`: the cores online (a `cpuN` line each), and idle +
/// iowait and steal from the first line, which sums every core: `cpu user nice system
/// idle iowait irq softirq steal guest guest_nice`, in clock ticks.
fn parse_machine_clock(stat: &str, ticks_per_second: f64, at: Instant) -> Option<MachineClock> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let field = |index: usize| ticks.get(index).copied();
    let cores = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    if cores == 0 {
        return None;
    }
    Some(MachineClock {
        at,
        cores,
        idle_seconds: (field(3)? + field(4)?) / ticks_per_second,
        steal_seconds: field(7)? / ticks_per_second,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn memory(pid: u32) -> Result<(u64, u64), Error> {
    let path = format!("/proc/{pid}/status");
    let status = read(&path)?;
    let field = |name: &'static str| {
        parse_kib(&status, name).ok_or_else(|| Error::ProcFormat {
            path: PathBuf::from(&path),
            field: name,
        })
    };
    Ok((field("VmRSS:")? * 1024, field("VmHWM:")? * 1024))
}

fn parse_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Makes `VmHWM` start again from the current RSS (Linux ≥ 4.0; needs the right to
/// write the target's `/proc` files: the same user, or root).
pub fn reset_peak(pid: u32) -> Result<(), Error> {
    let path = PathBuf::from(format!("/proc/{pid}/clear_refs"));
    std::fs::write(&path, "5").map_err(|source| Error::Proc { path, source })
}

/// How process `pid` was started: its program and arguments, as the kernel keeps
/// them (`/proc/PID/cmdline`), whatever wrapper (`ip netns exec`, `setpriv`) ran it.
pub fn command_line(pid: u32) -> Result<Vec<String>, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let bytes = std::fs::read(&path).map_err(|source| Error::Proc { path, source })?;
    Ok(parse_command_line(&bytes))
}

/// Each argument ends with a NUL byte; an empty one is kept, as the program got it.
fn parse_command_line(bytes: &[u8]) -> Vec<String> {
    let Some(args) = bytes.strip_suffix(&[0]) else {
        return Vec::new();
    };
    args.split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Where a network namespace keeps its TCP congestion control (one per namespace
/// since Linux 4.15; a new namespace starts with the host's).
pub const CONGESTION_CONTROL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// The TCP congestion control of the calling thread's network namespace.
pub fn congestion_control() -> Result<String, Error> {
    read(CONGESTION_CONTROL).map(|name| name.trim().to_string())
}

/// The congestion controls this kernel offers, as `--congestion-control` may name.
pub fn available_congestion_controls() -> Result<Vec<String>, Error> {
    let list = read("/proc/sys/net/ipv4/tcp_available_congestion_control")?;
    Ok(list.split_whitespace().map(str::to_string).collect())
}

fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Proc {
        path: path.into(),
        source,
    })
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// The host's default TCP congestion control, which new pods inherit.
    #[serde(default)]
    pub tcp_congestion_control: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map_or("unknown".to_string(), |(_, model)| model.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = parse_kib(&meminfo, "MemTotal:").unwrap_or(0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            tcp_congestion_control: congestion_control().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (evil) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(
            parse_cpu_times(stat, 100.0),
            Some(CpuTimes {
                user: 2.5,
                system: 0.5
            })
        );
    }

    #[test]
    fn busy_time_is_what_the_wall_clock_leaves_after_idle_and_stolen_time() {
        let stat = "cpu  100 20 30 400 50 6 4 40 7 0\ncpu0 50 10 15 200 25 3 2 20 7 0\n\
                    cpu1 50 10 15 200 25 3 2 20 0 0\nintr 1\n";
        let at = Instant::now();
        // Two cores; idle + iowait; steal. The sampled user and system are not used.
        let earlier = MachineClock {
            at,
            cores: 2,
            idle_seconds: 45.0,
            steal_seconds: 4.0,
        };
        assert_eq!(parse_machine_clock(stat, 10.0, at), Some(earlier));
        assert_eq!(
            parse_machine_clock("cpu  1 2 3\n", 10.0, at),
            None,
            "too short"
        );
        assert_eq!(
            parse_machine_clock("cpu  1 2 3 4 5 6 7 8\nintr 1\n", 10.0, at),
            None,
            "no core"
        );

        let later = MachineClock {
            at: earlier.at + Duration::from_secs(2),
            idle_seconds: 46.0,
            steal_seconds: 4.5,
            ..earlier
        };
        // 4 core-seconds of wall time: 1 idle, 0.5 stolen, the rest busy.
        let spent = later.since(&earlier);
        assert_eq!(
            spent,
            MachineCpu {
                busy_seconds: 2.5,
                idle_seconds: 1.0,
                steal_seconds: 0.5
            }
        );
        assert_eq!(spent.shares(), Some((62.5, 12.5)));
        assert_eq!(MachineCpu::default().shares(), None, "no time, no share");
        // Counters a little ahead of the clock never make busy time negative.
        let ahead = MachineClock {
            idle_seconds: 50.0,
            ..later
        };
        assert_eq!(ahead.since(&earlier).busy_seconds, 0.0);
    }

    #[test]
    fn a_command_line_is_split_at_its_nul_bytes() {
        assert_eq!(
            parse_command_line(b"trellis-proxy\0--workers\x002\0--identity\0a b\0\0"),
            ["trellis-proxy", "--workers", "2", "--identity", "a b", ""]
        );
        assert!(parse_command_line(b"").is_empty());
        let own = command_line(std::process::id()).expect("own /proc entry");
        let exe = std::env::current_exe().expect("own executable");
        assert!(own[0].ends_with(exe.file_name().and_then(|n| n.to_str()).unwrap_or("?")));
    }

    #[test]
    fn memory_lines_are_read_in_kib() {
        let status = "Name:\tproxy\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(parse_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        let usage = usage(std::process::id()).expect("own /proc entry");
        assert!(usage.rss_bytes > 0 && usage.hwm_bytes >= usage.rss_bytes);
        assert!(usage.user_seconds <= usage.cpu_seconds);
        assert!(self_cpu_seconds().expect("own stat") >= 0.0);
        let before = machine_clock().expect("/proc/stat");
        // This core is busy all along: the machine cannot have been idle throughout.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin);
        }
        let spent = machine_clock().expect("/proc/stat").since(&before);
        assert!(spent.busy_seconds > 0.0 && spent.shares().is_some());
    }
}
