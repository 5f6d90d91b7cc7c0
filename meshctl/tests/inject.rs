//! `meshctl inject` as an operator runs it: YAML on stdin or in files, injected YAML on
//! stdout for `kubectl apply -f -`, what happened on stderr. What it writes must mean
//! the same to kubectl (YAML 1.1) as what it read: PyYAML reads it back, and
//! `kubernetes-validate --strict` checks it against the Kubernetes 1.33 schema.

mod support;

use std::path::PathBuf;

use serde_json::Value as Json;
use support::{Validator, assert_superset, meshctl, text, workspace};

/// A directory of this test's own, with the mesh's trust anchors in it (as an operator
/// has `ca.crt`), removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("meshctl-inject-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = rcgen::generate_simple_self_signed(vec!["mesh-root.test".into()]).unwrap();
        std::fs::write(dir.join("ca.crt"), root.cert.pem()).unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.dir.join(name), text).unwrap();
        self.path(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

/// A Deployment whose authors quoted every string that YAML 1.1 would read as a
/// boolean, null, number or timestamp.
const LOOKALIKES: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
  creationTimestamp: "2008-01-01T01:01:01Z"
  labels:
    app: checkout
    canary: "yes"
    tier: "on"
    legacy: "Off"
    "y": "n"
    release: "2024-01-01"
    build: "1_000"
    hex: "0x1F"
    sci: "1e3"
    nothing: "null"
  annotations:
    tilde: "~"
    empty: ""
    version: "1.2.3"
    sexagesimal: "1:30"
    octal: "017"
    merge: "<<"
    equals: "="
spec:
  replicas: 2
  selector:
    matchLabels: {app: checkout, canary: "yes"}
  template:
    metadata:
      labels: {app: checkout, canary: "yes", tier: "on"}
      annotations: {trellis.io/skip-outbound-ports: "5432", note: "NO"}
    spec:
      nodeSelector: {"true": "false"}
      containers:
      - name: app
        image: registry.example.com/checkout:1.4.2
        args: ["--verbose", "yes", "0o17", ".inf", "-.5", "+.5e3"]
        env:
        - {name: FEATURE, value: "on"}
        - {name: LIMIT, value: "1_000"}
        - {name: SINCE, value: "2001-12-14 21:59:43.10 -5"}
        - {name: RATIO, value: ".NaN"}
        - {name: MASK, value: "0b1010"}
"#;

fn succeeded(output: std::process::Output) -> String {
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// The documents of a stream as serde_yaml_ng (YAML 1.2) reads them, as JSON.
fn read_yaml_1_2(stream: &str) -> Vec<Json> {
    serde_yaml_ng::Deserializer::from_str(stream)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .filter(|document: &Json| !document.is_null())
        .collect()
}

#[test]
fn a_pod_on_stdin_comes_out_meshed_with_the_given_mesh_config() {
    let scratch = Scratch::new("config");
    let anchors = std::fs::read_to_string(scratch.path("ca.crt")).unwrap();
    let config = scratch.write(
        "mesh.yaml",
        &format!(
            "proxyImage: {{repository: example.com/proxy, tag: \"9.9\"}}\ntrustAnchorsPem: {}\n",
            serde_json::to_string(&anchors).unwrap()
        ),
    );
    let output = meshctl(&["inject", "--mesh-config", &config, "-"], POD);
    let stderr = text(&output.stderr);
    let stdout = succeeded(output);
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
    assert!(
        stdout.contains("name: TRELLIS_TRUST_ANCHORS_PEM\n"),
        "{stdout}"
    );
}

#[test]
fn without_the_mesh_config_or_anchors_it_says_which_flag_is_missing() {
    let output = meshctl(&["inject", "-"], POD);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--mesh-config FILE") && stderr.contains("--trust-anchors FILE"),
        "{stderr}"
    );
    // A mesh config without anchors works, but says what each pod's namespace needs.
    let scratch = Scratch::new("no-anchors");
    let config = scratch.write("mesh.yaml", "sidecar: native\n");
    let output = meshctl(&["inject", "--mesh-config", &config, "-"], POD);
    let stderr = text(&output.stderr);
    succeeded(output);
    assert!(
        stderr.contains("mounts the ConfigMap trellis-trust-anchors (key ca.crt)"),
        "{stderr}"
    );
    // And anchors that are not PEM are refused, naming the file.
    let bad = scratch.write("bad.crt", "not a certificate\n");
    let output = meshctl(&["inject", "--trust-anchors", &bad, "-"], POD);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(&bad),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn strings_that_look_like_other_types_stay_strings_for_kubectl() {
    let scratch = Scratch::new("lookalikes");
    let anchors = scratch.path("ca.crt");
    let stdout = succeeded(meshctl(
        &["inject", "--trust-anchors", &anchors, "-"],
        LOOKALIKES,
    ));
    assert!(stdout.contains("    canary: \"yes\"\n"), "{stdout}");
    assert!(stdout.contains("    \"y\": \"n\"\n"), "{stdout}");
    assert!(
        stdout.contains("  creationTimestamp: \"2008-01-01T01:01:01Z\"\n"),
        "{stdout}"
    );
    // YAML 1.2 (serde_yaml_ng) reads every original value back, unchanged.
    let (input, output) = (read_yaml_1_2(LOOKALIKES), read_yaml_1_2(&stdout));
    assert_eq!(output.len(), 1);
    assert_superset(&input[0], &output[0]);

    // And so does YAML 1.1 (PyYAML, as kubectl's go-yaml), and the schema agrees.
    let Some(validator) = Validator::find() else {
        return;
    };
    let (input, output) = (
        validator.read_yaml_1_1(LOOKALIKES),
        validator.read_yaml_1_1(&stdout),
    );
    assert_eq!(input[0]["metadata"]["labels"]["canary"], "yes");
    assert_superset(&input[0], &output[0]);
    let said = validator
        .validate("lookalikes", &stdout)
        .unwrap_or_else(|said| panic!("{said}\n{stdout}"));
    assert!(said.contains("passed"), "{said}");
}

#[test]
fn the_fuzzed_v1_33_pod_comes_out_a_valid_meshed_pod() {
    let path = workspace().join("injector-webhook/tests/testdata/v1.33.0/core.v1.Pod.json");
    let mut pod: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The fuzzer set hostNetwork, which would (rightly) skip the pod.
    pod["spec"]["hostNetwork"] = Json::Bool(false);
    let scratch = Scratch::new("fuzzed");
    let anchors = scratch.path("ca.crt");
    let stdout = succeeded(meshctl(
        &["inject", "--trust-anchors", &anchors, "-"],
        &pod.to_string(),
    ));
    let output = read_yaml_1_2(&stdout);
    assert_superset(&pod, &output[0]);
    assert_eq!(
        output[0]["spec"]["initContainers"][0]["name"],
        "trellis-proxy-init"
    );

    let Some(validator) = Validator::find() else {
        return;
    };
    assert_superset(&pod, &validator.read_yaml_1_1(&stdout)[0]);
    validator
        .validate("fuzzed-pod", &stdout)
        .unwrap_or_else(|said| panic!("{said}\n{stdout}"));
}

#[test]
fn a_bad_annotation_fails_with_nothing_on_stdout() {
    let pod = POD.replace("\"5432\"", "\"70000\"");
    let scratch = Scratch::new("bad-annotation");
    let anchors = scratch.path("ca.crt");
    let output = meshctl(&["inject", "--trust-anchors", &anchors, "-"], &pod);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr
            .contains("pod/web: not injected: annotation trellis.io/skip-outbound-ports=\"70000\""),
        "{stderr}"
    );
}

#[test]
fn stdin_is_read_when_named_as_with_linkerd_inject() {
    let scratch = Scratch::new("stdin");
    let anchors = scratch.path("ca.crt");
    // No file: an error naming `-` rather than a silent wait on the terminal.
    let output = meshctl(&["inject", "--trust-anchors", &anchors], POD);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("or - to read stdin"), "{stderr}");
    // Files and stdin together, in the order given.
    let file = scratch.write(
        "first.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
    let stdout = succeeded(meshctl(
        &["inject", "--trust-anchors", &anchors, &file, "-"],
        POD,
    ));
    assert!(
        stdout.starts_with("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Pod\n"),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let scratch = Scratch::new("missing");
    let anchors = scratch.path("ca.crt");
    let output = meshctl(
        &[
            "inject",
            "--trust-anchors",
            &anchors,
            "/nonexistent/shop.yaml",
        ],
        "",
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("reading /nonexistent/shop.yaml"),
        "{stderr}"
    );
}
