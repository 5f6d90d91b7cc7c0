//! What can go wrong while building or tearing down pods.

use std::path::PathBuf;

/// A failure of this crate; every variant names the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name:?} is not a usable link name: {reason}")]
    InvalidLinkName { name: String, reason: &'static str },

    #[error("{name:?} is not a usable network namespace name: {reason}")]
    InvalidNetnsName { name: String, reason: &'static str },

    #[error("{value:?} is not an IPv4 address with a prefix length (like 10.199.0.1/24)")]
    InvalidCidr { value: String },

    #[error("could not start `{command}`: {source} (is it installed and on PATH?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },

    #[error("cannot open network namespace {netns:?} at {}: {source}", path.display())]
    OpenNetns {
        netns: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot enter network namespace {netns:?} (setns): {source}; entering needs root (CAP_SYS_ADMIN)"
    )]
    Setns {
        netns: String,
        #[source]
        source: nix::Error,
    },

    #[error("cannot start a thread for network namespace {netns:?}: {source}")]
    Thread {
        netns: String,
        #[source]
        source: std::io::Error,
    },
}
