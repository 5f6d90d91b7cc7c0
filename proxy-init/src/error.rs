//! Everything that can stop proxy-init, and the exit code each one maps to.
//!
//! An init container that fails leaves the pod stuck in `Init:Error`, and the operator
//! sees only the last line of its log and its exit code. So every variant renders as one
//! line that names the cause and what to change (the flag, the capability), and each
//! cause has its own exit code, listed in the crate documentation.

use std::io;
use std::process::ExitStatus;

/// Exit code for an invalid invocation: a malformed flag value. Clap uses the same code
/// for its own usage errors, so "2" always means "fix the command line".
pub const EXIT_USAGE: u8 = 2;
/// Exit code when `iptables-save` or `iptables-restore` cannot be run at all.
pub const EXIT_NO_BINARY: u8 = 3;
/// Exit code when the kernel refuses: not root, or no `CAP_NET_ADMIN`.
pub const EXIT_PERMISSION: u8 = 4;
/// Exit code when `iptables-save` fails for another reason.
pub const EXIT_SAVE_FAILED: u8 = 5;
/// Exit code when `iptables-restore` rejects the document (nothing was changed).
pub const EXIT_RESTORE_FAILED: u8 = 6;
/// Exit code for an I/O failure of our own (a pipe to a child, stdout).
pub const EXIT_IO: u8 = 1;

/// Why proxy-init stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {flag} (env {env}) {value:?}: {reason}; expected e.g. 25,443,8000-8100")]
    InvalidPorts {
        flag: &'static str,
        env: String,
        value: String,
        reason: PortListError,
    },

    #[error("{binary} not found: install iptables, or point {flag} (env {env}) at the binary")]
    BinaryNotFound {
        binary: String,
        flag: &'static str,
        env: String,
    },

    #[error("cannot run {binary} (set by {flag}, env {env}): {source}")]
    CannotRun {
        binary: String,
        flag: &'static str,
        env: String,
        source: io::Error,
    },

    #[error(
        "{binary} was denied permission ({detail}): run trellis-proxy-init as root with CAP_NET_ADMIN and CAP_NET_RAW in the pod's network namespace"
    )]
    PermissionDenied { binary: String, detail: String },

    #[error("{binary} -t nat failed ({status}): {detail}")]
    SaveFailed {
        binary: String,
        status: ExitStatus,
        detail: String,
    },

    #[error("{binary} rejected the rules ({status}), nothing was changed: {detail}")]
    RestoreFailed {
        binary: String,
        status: ExitStatus,
        detail: String,
    },

    #[error("cannot exchange data with {binary}: {source}")]
    Pipe { binary: String, source: io::Error },

    #[error("cannot write the document to stdout: {0}")]
    Stdout(#[source] io::Error),
}

impl Error {
    /// The process exit code for this failure (see the crate documentation).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidPorts { .. } => EXIT_USAGE,
            Error::BinaryNotFound { .. } | Error::CannotRun { .. } => EXIT_NO_BINARY,
            Error::PermissionDenied { .. } => EXIT_PERMISSION,
            Error::SaveFailed { .. } => EXIT_SAVE_FAILED,
            Error::RestoreFailed { .. } => EXIT_RESTORE_FAILED,
            Error::Pipe { .. } | Error::Stdout(_) => EXIT_IO,
        }
    }
}

/// Why a port list such as `25,443,8000-8100` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortListError {
    #[error("empty entry (two commas in a row, or a trailing comma)")]
    EmptyEntry,
    #[error("{0:?} is not a port number")]
    NotANumber(String),
    #[error("{0:?} is out of range: ports are 1-65535")]
    OutOfRange(String),
    #[error("range {first}-{last} ends before it starts")]
    BackwardsRange { first: u16, last: u16 },
}

/// The `TRELLIS_*` environment variable that sets `flag`: `--skip-inbound-ports` is
/// `TRELLIS_SKIP_INBOUND_PORTS`. `main` declares the same names to clap, and a test there
/// checks they agree.
pub fn env_of(flag: &str) -> String {
    let name = flag
        .trim_start_matches('-')
        .replace('-', "_")
        .to_uppercase();
    format!("TRELLIS_{name}")
}
