//! `meshctl inject` as an operator runs it: YAML on stdin or in files, injected YAML on
//! stdout for `kubectl apply -f -`, what happened on stderr.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    trellis.io/skip-outbound-ports: \"5432\"
spec:
  containers:
  - name: web
    image: nginx:1.27
";

fn meshctl(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshctl starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_pod_on_stdin_comes_out_meshed_with_the_given_mesh_config() {
    let dir = std::env::temp_dir().join(format!("meshctl-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("mesh.yaml");
    std::fs::write(
        &config,
        "proxyImage: {repository: example.com/proxy, tag: \"9.9\"}\n",
    )
    .unwrap();

    let output = meshctl(&["inject", "--config", config.to_str().unwrap(), "-"], POD);
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "pod/web injected (native sidecar)\n");
    assert!(
        stdout.starts_with("apiVersion: v1\nkind: Pod\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("image: example.com/proxy:9.9\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- --skip-outbound-ports=5432\n"),
        "{stdout}"
    );
}

#[test]
fn a_bad_annotation_fails_with_nothing_on_stdout() {
    let pod = POD.replace("\"5432\"", "\"70000\"");
    let output = meshctl(&["inject", "-"], &pod);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr
            .contains("pod/web: not injected: annotation trellis.io/skip-outbound-ports=\"70000\""),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let output = meshctl(&["inject", "/nonexistent/shop.yaml"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("reading /nonexistent/shop.yaml"),
        "{stderr}"
    );
}
