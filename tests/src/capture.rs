//! tcpdump on one link, for tests that assert what was on the wire.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `tcpdump -i LINK --immediate-mode -U -w FILE tcp`.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing TCP on `link` into `file` and returns once tcpdump says it is
    /// listening, so no packet of the test is missed.
    pub fn start(link: &str, file: &Path) -> anyhow::Result<Capture> {
        let mut child = Command::new("tcpdump")
            // --immediate-mode: without it packets wait in the kernel's ring until a
            // block fills or times out, and tcpdump drops that block when stopped, so a
            // short test would capture nothing. -U: write each packet at once.
            // -Z root: Debian's tcpdump otherwise drops to user tcpdump, which may not
            // write into the test's directory.
            .args([
                "-i",
                link,
                "-n",
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-w",
            ])
            .arg(file)
            .arg("tcp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        let stderr = child.stderr.take().context("tcpdump's stderr")?;
        let (lines_tx, lines_rx) = mpsc::channel();
        // Reads stderr to its end, so tcpdump never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match lines_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    anyhow::bail!(
                        "tcpdump did not start listening on {link}: {}",
                        seen.join("\n")
                    );
                }
            }
        }
        Ok(Capture {
            child,
            file: file.to_path_buf(),
        })
    }

    /// Stops tcpdump (it flushes on SIGINT) and returns the pcap file's bytes.
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        // Let the last segments of the test cross the link first.
        std::thread::sleep(Duration::from_millis(300));
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGINT)?;
        self.child.wait()?;
        std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
