//! The Python apps of the gRPC and WebSocket stories (`tests/py/`), run inside pods
//! with the venv that `tests/py/setup.sh` makes at `target/trellis-py`: grpcio and
//! websockets are clients and servers written by others, so what they accept is what
//! real apps accept.
//!
//! A server is a [`Daemon`] in its pod that prints `listening` once it is; a client
//! runs to its end and prints one JSON object, what it saw.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use trellis_netns::exec_in;

use crate::mesh::STARTUP;
use crate::{Daemon, MeshPod};

/// The venv's interpreter, or a failure that says how to make it.
pub fn python() -> anyhow::Result<PathBuf> {
    let python = workspace().join("target/trellis-py/bin/python");
    anyhow::ensure!(
        python.is_file(),
        "{} is missing: run tests/py/setup.sh (tests/run.sh does) to make the venv \
         with grpcio and websockets that the Python apps of the end-to-end tests run in",
        python.display()
    );
    Ok(python)
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
}

/// `python -u tests/py/SCRIPT ARGS` inside `pod`, as its app (root, behind its rules).
fn command(pod: &MeshPod, script: &str, args: &[&str]) -> anyhow::Result<Command> {
    let mut command = exec_in(pod.netns(), python()?);
    command
        .arg("-u")
        .arg(workspace().join("tests/py").join(script))
        .args(args)
        // The source tree stays as it was: no __pycache__ next to the scripts.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // No proxy from the environment may stand between the app and the mesh.
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    Ok(command)
}

/// A Python server running as a pod's app; stopped when dropped.
pub struct PyServer {
    /// Held for its `Drop`, which stops the app with the story.
    _daemon: Daemon,
}

impl PyServer {
    /// Starts `tests/py/SCRIPT ARGS` in `pod` and waits until it prints `listening`.
    pub fn start(pod: &MeshPod, script: &str, args: &[&str]) -> anyhow::Result<PyServer> {
        let log = pod
            .dir
            .join(format!("{}.log", script.trim_end_matches(".py")));
        let what = format!("{script} in pod {}", pod.name);
        let mut daemon = Daemon::spawn(&what, command(pod, script, args)?, &log)?;
        daemon.wait_ready(STARTUP, "listening", || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("listening"))
        })?;
        Ok(PyServer { _daemon: daemon })
    }
}

/// Runs the Python client `tests/py/SCRIPT ARGS` in `pod` to its end and returns the
/// JSON object it printed last.
pub fn py_client(pod: &MeshPod, script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let output = command(pod, script, args)?
        .output()
        .with_context(|| format!("running {script} in pod {}", pod.name))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = || {
        format!(
            "{script} {args:?} in pod {} exited {}\nstdout:\n{stdout}\nstderr:\n{}",
            pod.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    };
    anyhow::ensure!(output.status.success(), "{}", said());
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("its last line is not JSON: {}", said()))
}
