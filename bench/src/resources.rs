//! What a process costs, read from `/proc`: CPU seconds (user + system, from
//! `/proc/PID/stat`) and resident memory, current (`VmRSS`) and peak (`VmHWM`, from
//! `/proc/PID/status`). The harness samples each proxy before and after a run, and
//! resets the peak in between (`/proc/PID/clear_refs`), so every run reports its own.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// User + system CPU time since the process started.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Peak resident memory since start or since the last [`reset_peak`].
    pub hwm_bytes: u64,
}

/// Reads the CPU time and memory of process `pid`.
pub fn usage(pid: u32) -> Result<Usage, Error> {
    let (rss_bytes, hwm_bytes) = memory(pid)?;
    Ok(Usage {
        cpu_seconds: cpu_seconds(&format!("/proc/{pid}/stat"))?,
        rss_bytes,
        hwm_bytes,
    })
}

/// This process's CPU time, all threads included.
pub fn self_cpu_seconds() -> Result<f64, Error> {
    cpu_seconds("/proc/self/stat")
}

/// The calling thread's CPU time.
pub fn thread_cpu_seconds() -> Result<f64, Error> {
    cpu_seconds("/proc/thread-self/stat")
}

fn cpu_seconds(path: &str) -> Result<f64, Error> {
    let stat = read(path)?;
    parse_cpu_seconds(&stat, clock_ticks()).ok_or_else(|| Error::ProcFormat {
        path: path.into(),
        field: "utime/stime",
    })
}

/// utime and stime are fields 14 and 15, counted after the `(comm)` field, whose
/// name may itself contain spaces and parentheses: hence the split at the last `)`.
fn parse_cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (evil) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_seconds(stat, 100.0), Some(3.0));
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
        assert!(self_cpu_seconds().expect("own stat") >= 0.0);
    }
}
