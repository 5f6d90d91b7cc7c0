//! Starting the mesh's long-running processes detached, and stopping them again.
//!
//! `local run` returns while the proxy and the app keep running, and a later `local rm`
//! (another process) stops them: so each is started in its own session (`setsid`),
//! detached from the terminal, with stdout and stderr appended to a log file and its
//! pid in a pid file. Its own session makes it a process-group leader: stopping the
//! group stops whatever it forked too, and Ctrl-C in the terminal never reaches it.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use trellis_netns::command_line;

use crate::Error;
use crate::state::write_file;

/// Spawns `command` in a new session with output appended to `log`; writes its pid to
/// `pid_file` and returns it.
pub fn spawn_detached(command: &mut Command, log: &Path, pid_file: &Path) -> Result<Pid, Error> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io("cannot open log", log))?;
    let err = out.try_clone().map_err(Error::io("cannot open log", log))?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent, which is
    // all that is allowed between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let child = command.spawn().map_err(|error| Error::Spawn {
        command: command_line(command),
        error,
    })?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    write_file(pid_file, format!("{pid}\n").as_bytes(), 0o644)?;
    Ok(pid)
}

/// The pid recorded in `pid_file`, if the file exists and holds one.
pub fn read_pid(pid_file: &Path) -> Option<Pid> {
    let text = fs::read_to_string(pid_file).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

/// The live process recorded in `pid_file`.
pub fn running(pid_file: &Path) -> Option<Pid> {
    read_pid(pid_file).filter(|pid| is_alive(*pid))
}

/// Whether `pid` exists and is not a zombie. A child of ours that exited stays a
/// zombie until reaped, so reap it here if it is ours.
pub fn is_alive(pid: Pid) -> bool {
    if pid.as_raw() <= 0 {
        return false;
    }
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    stat(pid).is_some_and(|stat| stat.live)
}

/// Whether any live (non-zombie) process is in process group `pgid`. `killpg(pgid, 0)`
/// cannot tell: where pid 1 does not reap orphans (some containers), a group's
/// zombies linger and would look alive forever.
fn group_alive(pgid: Pid) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return killpg(pgid, None).is_ok();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(|pid| stat(Pid::from_raw(pid)))
        .any(|stat| stat.live && stat.pgrp == pgid.as_raw())
}

struct Stat {
    live: bool,
    pgrp: i32,
}

/// The state and process group of `pid` from `/proc/PID/stat`, which reads
/// `pid (comm) STATE PPID PGRP ...` (comm may hold spaces and parentheses).
fn stat(pid: Pid) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some(Stat {
        live: state != "Z" && state != "X",
        pgrp,
    })
}

/// Sends `signal` to `pid` (not its group), ignoring a process that is already gone.
pub fn signal(pid: Pid, signal: Signal) {
    let _ = kill(pid, signal);
}

/// Stops the process group led by `leader`: SIGTERM, up to `grace` to exit, then
/// SIGKILL. Returns once the leader is gone.
pub fn stop_group(leader: Pid, grace: Duration) {
    if leader.as_raw() <= 1 {
        return;
    }
    if killpg(leader, Signal::SIGTERM) == Err(Errno::ESRCH) && !is_alive(leader) {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(leader) && !group_alive(leader) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(leader, Signal::SIGKILL);
    let _ = kill(leader, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while (is_alive(leader) || group_alive(leader)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the process recorded in `pid_file` (and its group) and removes the file.
pub fn stop_recorded(pid_file: &Path, grace: Duration) {
    if let Some(pid) = read_pid(pid_file) {
        stop_group(pid, grace);
    }
    let _ = fs::remove_file(pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_process_is_recorded_and_its_whole_group_is_stopped() {
        let dir = std::env::temp_dir().join(format!("meshctl-process-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (log, pid_file) = (dir.join("sleep.log"), dir.join("sleep.pid"));
        // The shell forks a child into the same group: stopping must take both.
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; sleep 30 & wait"]);
        let pid = spawn_detached(&mut command, &log, &pid_file).unwrap();
        assert_eq!(running(&pid_file), Some(pid));
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        stop_recorded(&pid_file, Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "SIGTERM was enough"
        );
        assert!(!is_alive(pid));
        assert!(!group_alive(pid), "the sleeping child is gone too");
        assert!(!pid_file.exists());
        assert_eq!(fs::read_to_string(&log).unwrap(), "started\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
