//! What the meshctl tests share: running meshctl and other programs, and the tools of
//! `tests/tools/setup.sh` (which `tests/run.sh` runs): Helm at `target/tools/helm`, and
//! PyPI's `kubernetes-validate` in the venv `target/trellis-kv`, whose PyYAML is also
//! the YAML 1.1 reader the tests read meshctl's output with. Without them a test says
//! so and passes, unless `TRELLIS_E2E=require` (CI), where it fails.

#![allow(dead_code)] // each test file uses its own subset

pub mod chart;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Kubernetes version whose schema every object must satisfy.
pub const KUBERNETES_VERSION: &str = "1.33.0";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `None` after saying why a test cannot run here; under `TRELLIS_E2E=require`, a
/// failure instead.
pub fn unavailable<T>(reason: &str) -> Option<T> {
    if std::env::var("TRELLIS_E2E").as_deref() == Ok("require") {
        panic!("TRELLIS_E2E=require, but {reason}");
    }
    eprintln!("skipping (set TRELLIS_E2E=require to make this a failure): {reason}");
    None
}

/// The files under `target/` that `tests/tools/setup.sh` puts there, or `None` after
/// naming the missing ones.
pub fn setup_tools<const N: usize>(relative: [&str; N]) -> Option<[PathBuf; N]> {
    let target = workspace().join("target");
    let paths = relative.map(|path| target.join(path));
    let missing: Vec<String> = paths
        .iter()
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(paths);
    }
    unavailable(&format!(
        "missing {}: run `bash tests/tools/setup.sh` (tests/run.sh does)",
        missing.join(" and ")
    ))
}

/// A binary of the workspace, built next to this test (`cargo build --workspace
/// --bins`, as tests/run.sh does first), or `None` after saying it is missing.
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test>-<hash> → target/debug/<name>
    let path = exe.parent()?.parent()?.join(name);
    if path.is_file() {
        return Some(path);
    }
    unavailable(&format!(
        "{} is not built: cargo build --workspace --bins",
        path.display()
    ))
}

/// `kubernetes-validate` and the Python of its venv.
pub struct Validator {
    validate: PathBuf,
    python: PathBuf,
}

impl Validator {
    pub fn find() -> Option<Validator> {
        let [validate, python] = setup_tools([
            "trellis-kv/bin/kubernetes-validate",
            "trellis-kv/bin/python",
        ])?;
        Some(Validator { validate, python })
    }

    /// Runs `kubernetes-validate --strict` over a stream; `Err` carries what it said.
    pub fn validate(&self, name: &str, stream: &str) -> Result<String, String> {
        let dir =
            std::env::temp_dir().join(format!("meshctl-validate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("manifests.yaml");
        std::fs::write(&file, stream).unwrap();
        let output = run(
            &self.validate,
            &[
                "--strict".into(),
                "--kubernetes-version".into(),
                KUBERNETES_VERSION.into(),
                file.display().to_string(),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
        let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
        if output.status.success() {
            Ok(said)
        } else {
            Err(said)
        }
    }

    /// The documents of a stream as PyYAML (YAML 1.1, as kubectl) reads them, as JSON;
    /// a value JSON cannot hold (a timestamp, say) is written as Python's `repr`, so it
    /// can never equal the string it was meant to be.
    pub fn read_yaml_1_1(&self, stream: &str) -> Vec<serde_json::Value> {
        let script = "import json, sys, yaml\n\
                      docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
                      print(json.dumps(docs, default=repr))";
        let output = run_with_stdin(&self.python, &["-c".into(), script.into()], stream);
        assert!(output.status.success(), "PyYAML: {}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

pub fn run(program: &Path, args: &[String]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()))
}

pub fn run_with_stdin(program: &Path, args: &[String], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    let mut input = child.stdin.take().unwrap();
    // A program that exits early closes its stdin; what it said tells why.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

/// meshctl with `args` and `stdin`.
pub fn meshctl(args: &[&str], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    run_with_stdin(Path::new(env!("CARGO_BIN_EXE_meshctl")), &args, stdin)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every field and value of `original` is in `output`: maps key by key, lists as an
/// in-order subsequence (injection inserts into lists, never drops or reorders).
pub fn assert_superset(original: &serde_json::Value, output: &serde_json::Value) {
    if let Err(path) = superset(original, output, String::new()) {
        panic!("the output lost or changed {path}");
    }
}

fn superset(
    original: &serde_json::Value,
    output: &serde_json::Value,
    path: String,
) -> Result<(), String> {
    use serde_json::Value;
    match (original, output) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                let path = format!("{path}/{key}");
                match new.get(key) {
                    Some(found) => superset(value, found, path)?,
                    None => return Err(path),
                }
            }
            Ok(())
        }
        (Value::Array(old), Value::Array(new)) => {
            let mut candidates = new.iter();
            for (index, item) in old.iter().enumerate() {
                let path = format!("{path}/{index}");
                if !candidates
                    .by_ref()
                    .any(|candidate| superset(item, candidate, path.clone()).is_ok())
                {
                    return Err(path);
                }
            }
            Ok(())
        }
        _ if original == output => Ok(()),
        _ => Err(format!("{path} ({original} became {output})")),
    }
}
