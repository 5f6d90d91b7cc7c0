//! What can go wrong in the harness. Failures of single requests are not errors here:
//! the load generator counts them by kind in its report, because a benchmark must
//! keep going and say how many failed.

use std::path::PathBuf;

/// A failure of the harness itself; every variant names the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url:?} is not a usable target: {reason} (expected http://HOST:PORT/PATH)")]
    InvalidUrl { url: String, reason: String },

    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{name} = {value}: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("cannot bind {addr}: {source} (is something else listening there?)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {}: {source} (has the process exited?)", path.display())]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} has no usable {field} line", path.display())]
    ProcFormat { path: PathBuf, field: &'static str },

    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },

    #[error("{what} did not produce a usable report: {detail}")]
    Report { what: String, detail: String },

    #[error("network namespaces: {0}")]
    Netns(String),

    #[error("{what} did not become ready within {seconds} s: {hint}")]
    NotReady {
        what: String,
        seconds: u64,
        hint: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
