//! What this host lacks for running pods, said exactly.
//!
//! A person trying `meshctl local` on a fresh machine should learn in one message
//! everything that is missing and the one `apt-get install` line that fixes what a
//! package can fix, rather than meet the missing pieces one failure at a time.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, unshare};
use nix::unistd::geteuid;

/// One missing prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing and why it matters, as a sentence for a person.
    pub what: String,
    /// The Debian package that provides it, if a package can.
    pub package: Option<&'static str>,
}

/// The outcome of [`preflight`]: empty when the host can run pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    pub missing: Vec<Missing>,
}

/// Checks for root, `ip`, `iptables`, `iptables-restore`, `setpriv` and working network
/// namespaces. Add more programs with [`Preflight::require_program`].
pub fn preflight() -> Preflight {
    let mut report = Preflight::default();
    let euid = geteuid();
    let root = euid.is_root();
    if !root {
        report.missing.push(Missing {
            what: format!(
                "root: running as uid {euid}, but creating network namespaces, links and \
                 iptables rules needs root (try sudo)"
            ),
            package: None,
        });
    }
    report = report
        .require_program("ip", "iproute2")
        .require_program("iptables", "iptables")
        .require_program("iptables-restore", "iptables")
        .require_program("setpriv", "util-linux");
    if !Path::new("/proc/self/ns/net").exists() {
        report.missing.push(Missing {
            what: "network namespaces: the kernel has none (/proc/self/ns/net is absent; \
                   it needs CONFIG_NET_NS)"
                .to_string(),
            package: None,
        });
    } else if root && let Err(errno) = try_new_netns() {
        report.missing.push(Missing {
            what: format!(
                "network namespaces: creating one failed ({errno}); inside a container \
                 this needs --privileged or CAP_SYS_ADMIN and CAP_NET_ADMIN"
            ),
            package: None,
        });
    }
    report
}

impl Preflight {
    /// Also requires `program` on PATH, installed by Debian package `package`.
    pub fn require_program(mut self, program: &str, package: &'static str) -> Self {
        if find_program(program).is_none() {
            self.missing.push(Missing {
                what: format!("`{program}`: not found on PATH (Debian package {package})"),
                package: Some(package),
            });
        }
        self
    }

    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
    }

    /// The Debian packages that would fix what is missing, each once, in order.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = Vec::new();
        for package in self.missing.iter().filter_map(|m| m.package) {
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
        packages
    }

    /// `apt-get install -y PACKAGES`, when a package would fix anything.
    pub fn apt_line(&self) -> Option<String> {
        let packages = self.packages();
        (!packages.is_empty()).then(|| format!("apt-get install -y {}", packages.join(" ")))
    }
}

impl fmt::Display for Preflight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return f.write_str("this host can run pods as network namespaces");
        }
        f.write_str("this host cannot run pods as network namespaces; missing:")?;
        for missing in &self.missing {
            write!(f, "\n  - {}", missing.what)?;
        }
        if let Some(line) = self.apt_line() {
            write!(f, "\ninstall with: apt-get update && {line}")?;
        }
        Ok(())
    }
}

/// The first executable file called `program` on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Creates a throwaway network namespace on a thread that then exits, taking the
/// namespace with it: the one sure test that the kernel and our capabilities allow it.
fn try_new_netns() -> Result<(), nix::Error> {
    std::thread::spawn(|| unshare(CloneFlags::CLONE_NEWNET))
        .join()
        .unwrap_or(Err(nix::Error::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_gap_and_one_install_line() {
        let report = Preflight::default()
            .require_program("trellis-no-such-ip", "iproute2")
            .require_program("trellis-no-such-iptables", "iptables")
            .require_program("trellis-no-such-iptables-restore", "iptables")
            .require_program("sh", "dash");
        assert_eq!(report.packages(), ["iproute2", "iptables"]);
        assert_eq!(
            report.apt_line().as_deref(),
            Some("apt-get install -y iproute2 iptables")
        );
        let text = report.to_string();
        assert!(
            text.contains("`trellis-no-such-ip`: not found on PATH"),
            "{text}"
        );
        assert!(text.contains("apt-get update && apt-get install -y iproute2 iptables"));
        assert!(!text.contains("`sh`"), "sh is on PATH: {text}");
    }

    #[test]
    fn a_complete_host_reports_nothing_missing() {
        let report = Preflight::default();
        assert!(report.is_ok());
        assert_eq!(report.apt_line(), None);
    }
}
