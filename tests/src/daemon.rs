//! A background process that is stopped when dropped, so a failing test leaves no
//! controller or proxy running behind it.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A child in its own process group, its output going to a log file.
#[derive(Debug)]
pub struct Daemon {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with stdout and stderr in `log`.
    pub fn spawn(what: &str, mut command: Command, log: &Path) -> anyhow::Result<Daemon> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // The mesh binaries must get exactly the flags the test passes.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRELLIS_") {
                command.env_remove(key);
            }
        }
        let child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: stopping it stops whatever it forked, and the terminal's
            // Ctrl-C reaches only the test runner, whose guards then clean up.
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!("starting {what}: {}", trellis_netns::command_line(&command))
            })?;
        Ok(Daemon {
            what: what.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `None` while it runs; its exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for `ready` to hold (`ready` says what that means, for
    /// the error); fails with the end of its log if it exits first or time runs out.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        ready: &str,
        mut check: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let held = crate::wait_until(timeout, || self.exited().is_some() || check());
        match self.exited() {
            Some(status) => anyhow::bail!(
                "{} exited ({status}) before {ready}\n{}",
                self.what,
                self.log_tail(30)
            ),
            None if !held => anyhow::bail!(
                "{} was not {ready} within {timeout:?}\n{}",
                self.what,
                self.log_tail(30)
            ),
            None => Ok(()),
        }
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.what,
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Kills it and whatever it forked with SIGKILL, as a crashed node or an OOM kill
    /// would: nothing gets to close cleanly. Returns once it has exited.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        killpg(self.leader(), Signal::SIGKILL)
            .with_context(|| format!("sending SIGKILL to {} ({})", self.what, self.pid()))?;
        self.child
            .wait()
            .with_context(|| format!("waiting for {} to exit", self.what))?;
        Ok(())
    }

    /// Sends SIGTERM to the program alone, not its group: it must stop by itself,
    /// as it would in a container. `ip netns exec` and `setpriv` both exec, so the
    /// child is the program.
    pub fn terminate(&self) -> anyhow::Result<()> {
        kill(self.leader(), Signal::SIGTERM)
            .with_context(|| format!("sending SIGTERM to {} ({})", self.what, self.pid()))
    }

    /// The child's pid, which is also its process group's id (`process_group(0)`).
    fn leader(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = killpg(self.leader(), Signal::SIGTERM);
        let stopped = self.wait_exit(Duration::from_secs(5)).is_some();
        // Whatever it forked goes too, whether or not it stopped in time.
        let _ = killpg(self.leader(), Signal::SIGKILL);
        if !stopped {
            let _ = self.child.wait();
        }
    }
}
