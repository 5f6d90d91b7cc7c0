//! Everything that can stop proxy-init, and the exit code each one maps to.
//!
//! An init container that fails leaves the pod stuck in `Init:Error`, and the operator
//! sees only the last line of its log and its exit code. So every variant renders as one
//! line that names the cause and what to change (the flag, the capability), and each
//! cause has its own exit code, listed in the crate documentation.

use std::io;
use std::process::ExitStatus;

/// Exit code for an I/O failure of our own (a pipe to a child, stdout).
pub const EXIT_IO: u8 = 1;
/// Exit code for an invalid invocation: an unknown flag, a malformed port or port list,
/// settings that contradict each other. Clap uses the same code for its own usage
/// errors, so "2" always means "fix the command line".
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a firewall binary (`iptables-*-save`/`-restore`, `nft`) cannot be run.
pub const EXIT_NO_BINARY: u8 = 3;
/// Exit code when the kernel refuses: not root, or no `CAP_NET_ADMIN`.
pub const EXIT_PERMISSION: u8 = 4;
/// Exit code when reading the current rules fails for another reason.
pub const EXIT_SAVE_FAILED: u8 = 5;
/// Exit code when the rules are rejected; nothing was changed.
pub const EXIT_RESTORE_FAILED: u8 = 6;
/// Exit code of `validate` when outbound traffic is not redirected to the proxy.
pub const EXIT_NOT_REDIRECTED: u8 = 7;
/// Exit code for a `--backend` that is none of `legacy`, `nft`, `nftables`, `auto`.
pub const EXIT_UNKNOWN_BACKEND: u8 = 8;
/// Exit code for a malformed address range in `--skip-outbound-cidrs` or
/// `--include-outbound-cidrs`.
pub const EXIT_BAD_CIDR: u8 = 9;

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

    #[error("invalid {flag} (env {env}) {value:?}: {reason}; expected one port, 1-65535")]
    InvalidPort {
        flag: &'static str,
        env: String,
        value: String,
        reason: PortListError,
    },

    #[error(
        "{first} and {second} are both {port}: the proxy needs a port of its own for each \
         listener, or one would be redirected into the other"
    )]
    SamePort {
        first: &'static str,
        second: &'static str,
        port: u16,
    },

    #[error(
        "invalid {flag} (env {env}) 0: every process running as root in the pod would \
         bypass the proxy; give the proxy an id of its own (2102)"
    )]
    RootExempted { flag: &'static str, env: String },

    #[error(
        "invalid {flag} (env {env}) {value:?}: expected keep, or the name of a TCP \
         congestion control such as reno or cubic (at most 15 letters, digits, _ or -)"
    )]
    InvalidCongestionControl {
        flag: &'static str,
        env: String,
        value: String,
    },

    #[error("invalid {flag} (env {env}) {value:?}: {reason}; expected e.g. 10.0.0.0/8,fd00::/8")]
    InvalidCidrs {
        flag: &'static str,
        env: String,
        value: String,
        reason: CidrListError,
    },

    #[error(
        "unknown --backend (env TRELLIS_BACKEND) {value:?}: expected legacy, nft, nftables or auto"
    )]
    UnknownBackend { value: String },

    #[error("{binary} not found: install {package}, or point {flag} (env {env}) at the binary")]
    BinaryNotFound {
        binary: String,
        package: &'static str,
        flag: &'static str,
        env: String,
    },

    #[error(
        "no firewall tools found: none of iptables-nft-restore, iptables-legacy-restore or nft \
         is on PATH; install iptables or nftables"
    )]
    NoBackend,

    #[error("cannot run {binary} (set by {flag}, env {env}): {source}")]
    CannotRun {
        binary: String,
        flag: &'static str,
        env: String,
        source: io::Error,
    },

    #[error(
        "{binary} was denied permission ({detail}): run trellis-proxy-init as root with \
         CAP_NET_ADMIN and CAP_NET_RAW in the pod's network namespace"
    )]
    PermissionDenied { binary: String, detail: String },

    #[error("`{command}` failed ({status}): {detail}")]
    SaveFailed {
        command: String,
        status: ExitStatus,
        detail: String,
    },

    #[error("{binary} rejected the rules ({status}), nothing was changed: {detail}")]
    RestoreFailed {
        binary: String,
        status: ExitStatus,
        detail: String,
    },

    #[error(
        "{failed}; undoing the {family} rules applied just before also failed ({undo}): run \
         trellis-proxy-init --cleanup"
    )]
    RollbackFailed {
        failed: Box<Error>,
        family: &'static str,
        undo: Box<Error>,
    },

    #[error("cannot exchange data with {binary}: {source}")]
    Pipe { binary: String, source: io::Error },

    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),

    #[error("validation failed: {0}")]
    NotRedirected(String),
}

impl Error {
    /// The process exit code for this failure (see the crate documentation).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidPorts { .. }
            | Error::InvalidPort { .. }
            | Error::SamePort { .. }
            | Error::RootExempted { .. }
            | Error::InvalidCongestionControl { .. } => EXIT_USAGE,
            Error::InvalidCidrs { .. } => EXIT_BAD_CIDR,
            Error::UnknownBackend { .. } => EXIT_UNKNOWN_BACKEND,
            Error::BinaryNotFound { .. } | Error::NoBackend | Error::CannotRun { .. } => {
                EXIT_NO_BINARY
            }
            Error::PermissionDenied { .. } => EXIT_PERMISSION,
            Error::SaveFailed { .. } => EXIT_SAVE_FAILED,
            Error::RestoreFailed { .. } => EXIT_RESTORE_FAILED,
            // The cause decides: a permission problem stays a permission problem.
            Error::RollbackFailed { failed, .. } => failed.exit_code(),
            Error::Pipe { .. } | Error::Stdout(_) => EXIT_IO,
            Error::NotRedirected(_) => EXIT_NOT_REDIRECTED,
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

/// Why a list of networks such as `10.0.0.0/8,fd00::/8` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrListError {
    #[error("empty entry (two commas in a row, or a trailing comma)")]
    EmptyEntry,
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("{0:?} has a bad prefix length: 0-32 for IPv4, 0-128 for IPv6")]
    BadPrefix(String),
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
