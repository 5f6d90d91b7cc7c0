//! What can go wrong in `meshctl`, each variant with what to check.
//!
//! A cause is said in its variant's message and not chained as a `#[source]`:
//! `main` prints the whole chain, which would say it twice (as `inject` and
//! `install` do for their own errors).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    HostNotReady(String),

    #[error(
        "cannot find `{name}` at {}: build it with `cargo build --workspace --bins`, or point --bin-dir (TRELLIS_BIN_DIR) at the directory that holds it",
        path.display()
    )]
    MissingBinary { name: &'static str, path: PathBuf },

    #[error(
        "cannot tell where meshctl itself is (to find its sibling binaries): {0}; pass --bin-dir"
    )]
    CurrentExe(std::io::Error),

    #[error("{what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{} is not valid {what}: {reason}", path.display())]
    InvalidFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("no local mesh at {}: run `meshctl local up` first (or pass the --state-dir it used)", dir.display())]
    NotUp { dir: PathBuf },

    #[error(
        "a local mesh already runs at {} on bridge {running_bridge} ({running_subnet}); `meshctl local down` it first to change bridge or subnet",
        dir.display()
    )]
    UpWithOtherSettings {
        dir: PathBuf,
        running_bridge: String,
        running_subnet: String,
    },

    #[error("invalid --{flag} {value:?}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error("pod {0:?} already exists: remove it with `meshctl local rm {0}` first")]
    PodExists(String),

    #[error("no pod {0:?}: `meshctl local ls` lists the pods")]
    NoSuchPod(String),

    #[error(
        "no service {name:?} in namespace {namespace:?}: `meshctl local ls` lists the services"
    )]
    NoSuchService { namespace: String, name: String },

    #[error(
        "the subnet {subnet} has no free address left: {pods} pods count up from its start and {services} service virtual IPs down from its end, and they have met; remove a pod or `meshctl local down` and `up --subnet` a larger one"
    )]
    SubnetFull {
        subnet: String,
        pods: usize,
        services: usize,
    },

    #[error("cannot render a discovery object: {0}")]
    Render(String),

    /// Not `#[error(transparent)]`: that would chain the netns error's own cause, which
    /// its message already says.
    #[error("{0}")]
    Netns(trellis_netns::Error),

    #[error("cannot start `{command}`: {error}")]
    Spawn {
        command: String,
        error: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },

    #[error("{what} did not become ready within {seconds} s{hint}")]
    NotReady {
        what: String,
        seconds: u64,
        /// The tail of the relevant log, or advice; starts with a newline when present.
        hint: String,
    },

    #[error("{what} exited during start-up{log}")]
    Died {
        what: String,
        /// The tail of its log, starting with a newline.
        log: String,
    },

    #[error("cannot sign a token: {0}")]
    Signing(String),

    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |error| Error::Io { what, path, error }
    }
}

impl From<trellis_netns::Error> for Error {
    fn from(error: trellis_netns::Error) -> Self {
        Error::Netns(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `main` prints: the message, then each source in the chain.
    fn printed(error: Error) -> String {
        format!("{:#}", anyhow::Error::from(error))
    }

    #[test]
    fn an_error_says_its_cause_once() {
        let missing = std::env::temp_dir().join("trellis-meshctl-error-test-missing");
        let cause = || std::fs::read(&missing).unwrap_err();
        let said = cause().to_string();
        let errors = [
            Error::io("cannot read", &missing)(cause()),
            Error::CurrentExe(cause()),
            Error::Spawn {
                command: missing.display().to_string(),
                error: std::process::Command::new(&missing).spawn().unwrap_err(),
            },
            Error::from(trellis_netns::run_in("trellis-error-test-missing", || ()).unwrap_err()),
        ];
        for error in errors {
            let text = printed(error);
            assert_eq!(text.matches(&said).count(), 1, "{text}");
        }
    }
}
