//! What can go wrong in `meshctl`, each variant with what to check.

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
    CurrentExe(#[source] std::io::Error),

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
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

    #[error(transparent)]
    Netns(#[from] trellis_netns::Error),

    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
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
        move |source| Error::Io { what, path, source }
    }
}
