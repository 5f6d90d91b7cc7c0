//! Making sure the host can run pods, and installing what a package can fix.
//!
//! `meshctl local` only reports (an operator's machine is theirs to change);
//! `meshctl demo` is meant to work on a fresh Debian machine, so as root it installs
//! the missing packages itself with `apt-get`, saying so first.

use std::process::Command;

use trellis_netns::{command_line, find_program, preflight};

use crate::Error;

/// Whether missing packages may be installed with apt-get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    Never,
    IfRoot,
}

/// Returns once the host has everything pods need, or says exactly what is missing.
pub fn ensure_host(install: Install) -> Result<(), Error> {
    let report = preflight();
    if report.is_ok() {
        return Ok(());
    }
    let root = nix::unistd::geteuid().is_root();
    let apt = find_program("apt-get").is_some();
    if install == Install::IfRoot && root && apt && !report.packages().is_empty() {
        install_packages(&report.packages())?;
        let after = preflight();
        return if after.is_ok() {
            Ok(())
        } else {
            Err(Error::HostNotReady(after.to_string()))
        };
    }
    Err(Error::HostNotReady(report.to_string()))
}

fn install_packages(packages: &[&str]) -> Result<(), Error> {
    eprintln!("==> installing {} (apt-get)", packages.join(" "));
    let mut update = Command::new("apt-get");
    update.arg("update");
    run_visible(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_visible(install)
}

fn run_visible(mut command: Command) -> Result<(), Error> {
    let status = command.status().map_err(|error| Error::Spawn {
        command: command_line(&command),
        error,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command: command_line(&command),
            status,
            output: "see its output above".into(),
        })
    }
}
