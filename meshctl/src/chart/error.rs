//! What can go wrong rendering the chart, each with the file, flag or value to fix.

use std::path::PathBuf;

// The causes are in the messages, not chained as sources: main prints the chain, which
// would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{origin} is not a valid values file: {reason}")]
    InvalidValues { origin: String, reason: String },

    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("cannot write the manifests: {0}")]
    Write(std::io::Error),

    #[error("invalid --set {argument:?}: {reason}")]
    InvalidSet { argument: String, reason: String },

    /// The template itself is wrong (or uses more than the subset meshctl renders):
    /// a bug of the chart, found by the tests before any user sees it.
    #[error(
        "charts/trellis/{file}:{line}: {message} (meshctl renders only the chart's template subset: see the README, \"Installing on Kubernetes\")"
    )]
    Template {
        file: String,
        line: usize,
        message: String,
    },

    /// A `required` value is missing, or the chart's `fail` refused a value: the
    /// message is the chart's own, which says which value and what to do instead.
    #[error("charts/trellis/{file}:{line}: {message}")]
    Refused {
        file: String,
        line: usize,
        message: String,
    },

    #[error(
        "{given} is given but {missing} is not: give all of {group}, or none and meshctl generates them"
    )]
    PartialTls {
        given: &'static str,
        missing: &'static str,
        group: &'static str,
    },

    #[error("cannot generate {what}: {error}")]
    Generate {
        what: &'static str,
        error: rcgen::Error,
    },
}
