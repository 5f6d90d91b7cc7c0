//! `charts/trellis` as an operator meets it: linted and rendered by the real Helm,
//! rendered by `meshctl install`, every object checked against the Kubernetes 1.33
//! schema, the two renderings shown to be the same objects, and the command lines of
//! the Deployments accepted by the binaries they run.
//!
//! The tools come from `tests/tools/setup.sh` (which `tests/run.sh` runs): Helm at
//! `target/tools/helm` and PyPI's `kubernetes-validate` in `target/trellis-kv`.
//! Without them these tests say so and pass, unless `TRELLIS_E2E=require` (CI), where
//! they fail.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_yaml_ng::Value as Yaml;
use support::{Validator, run, setup_tools, text, workspace_binary};
use trellis_injector::{MeshConfig, Outcome, Request, inject};

struct Tools {
    helm: PathBuf,
    validator: Validator,
}

/// Helm and kubernetes-validate, or `None` (after saying why) where this host has not
/// run `tests/tools/setup.sh`; under `TRELLIS_E2E=require` their absence fails.
fn tools() -> Option<Tools> {
    let [helm] = setup_tools(["tools/helm"])?;
    let validator = Validator::find()?;
    Some(Tools { helm, validator })
}

/// PEM files standing in for an operator's CA and webhook certificate, and the flags
/// that give them to Helm and meshctl alike.
struct Pems {
    dir: PathBuf,
}

impl Pems {
    fn new(test: &str) -> Pems {
        let dir = std::env::temp_dir().join(format!("meshctl-chart-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = rcgen::generate_simple_self_signed(vec!["root.test".into()]).unwrap();
        let leaf =
            rcgen::generate_simple_self_signed(vec!["trellis-injector.trellis-system.svc".into()])
                .unwrap();
        for (name, pem) in [
            ("anchors.pem", root.cert.pem()),
            ("issuer.pem", root.cert.pem()),
            ("issuer.key", root.signing_key.serialize_pem()),
            ("tls.crt", leaf.cert.pem()),
            ("tls.key", leaf.signing_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Pems { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `--set-file` flags for every required PEM, less those named in `except`.
    fn flags(&self, except: &[&str]) -> Vec<String> {
        [
            ("identity.trustAnchorsPEM", "anchors.pem"),
            ("identity.issuer.certPEM", "issuer.pem"),
            ("identity.issuer.keyPEM", "issuer.key"),
            ("injector.tls.certPEM", "tls.crt"),
            ("injector.tls.keyPEM", "tls.key"),
            ("injector.webhook.caBundlePEM", "tls.crt"),
        ]
        .into_iter()
        .filter(|(key, _)| !except.contains(key))
        .flat_map(|(key, file)| {
            [
                "--set-file".to_owned(),
                format!("{key}={}", self.path(file)),
            ]
        })
        .collect()
    }
}

impl Drop for Pems {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `helm template` as the README runs it, plus the namespace meshctl adds.
fn helm_template(tools: &Tools, flags: &[String]) -> Output {
    let mut args: Vec<String> = [
        "template",
        "trellis",
        "charts/trellis",
        "--namespace",
        "trellis-system",
        "--include-crds",
        "--set",
        "namespace.create=true",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend_from_slice(flags);
    run(&tools.helm, &args)
}

fn meshctl_install(flags: &[String]) -> Output {
    let mut args = vec!["install".to_owned()];
    args.extend_from_slice(flags);
    run(Path::new(env!("CARGO_BIN_EXE_meshctl")), &args)
}

fn succeeded(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The objects of a YAML stream in order, each with its `kind namespace/name`. The YAML documents inside a
/// ConfigMap (keys ending in `.yaml`) are parsed too: `toYaml` may lay them out
/// differently (quotes, key order) while meaning the same.
fn objects(stream: &str) -> Vec<(String, Yaml)> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(stream) {
        let mut object: Yaml = serde::Deserialize::deserialize(document).unwrap();
        if object.is_null() {
            continue;
        }
        if object["kind"] == "ConfigMap"
            && let Some(Yaml::Mapping(data)) = object.get_mut("data")
        {
            for (key, value) in data.iter_mut() {
                if key.as_str().is_some_and(|key| key.ends_with(".yaml")) {
                    let parsed: Yaml = serde_yaml_ng::from_str(value.as_str().unwrap()).unwrap();
                    *value = parsed;
                }
            }
        }
        let key = format!(
            "{} {}/{}",
            object["kind"].as_str().unwrap_or("?"),
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap_or("?")
        );
        assert!(objects.iter().all(|(seen, _)| *seen != key), "{key} twice");
        objects.push((key, object));
    }
    objects
}

fn assert_same_objects(helm: &str, meshctl: &str, case: &str) {
    let (helm, meshctl) = (objects(helm), objects(meshctl));
    let keys = |objects: &[(String, Yaml)]| {
        objects
            .iter()
            .map(|(key, _)| key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&helm),
        keys(&meshctl),
        "{case}: helm and meshctl render different objects, or in another order"
    );
    for ((key, helm), (_, meshctl)) in helm.iter().zip(&meshctl) {
        assert_eq!(
            serde_yaml_ng::to_string(helm).unwrap(),
            serde_yaml_ng::to_string(meshctl).unwrap(),
            "{case}: {key} differs (left: helm, right: meshctl)"
        );
    }
}

fn validate(tools: &Tools, name: &str, stream: &str) -> Result<String, String> {
    tools.validator.validate(name, stream)
}

#[test]
fn helm_lints_the_chart_given_its_required_values() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("lint");
    let mut args = vec![
        "lint".to_owned(),
        "--strict".to_owned(),
        "charts/trellis".to_owned(),
    ];
    args.extend(pems.flags(&[]));
    let output = succeeded("helm lint", run(&tools.helm, &args));
    assert!(output.contains("0 chart(s) failed"), "{output}");
}

#[test]
fn meshctl_install_renders_the_objects_helm_template_renders() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("same");
    let dir = &pems.dir;
    std::fs::write(
        dir.join("values.yaml"),
        "trustDomain: example.org\n\
         controller: {replicas: 2, resources: {limits: {memory: 1Gi}}}\n\
         injector:\n  webhook: {failurePolicy: Ignore, timeoutSeconds: 5}\n  \
         meshConfig: {sidecar: classic, skipOutboundCidrs: \"10.0.0.0/8\"}\n",
    )
    .unwrap();
    let jwks = r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "k"}]}"#;
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("the defaults", vec![]),
        (
            "a values file and --set over it",
            vec![
                "-f".into(),
                pems.path("values.yaml"),
                "--set".into(),
                "controller.replicas=3,injector.meshConfig.proxyUid=2200".into(),
            ],
        ),
        (
            "a JWKS instead of TokenReview",
            vec![
                "--set".into(),
                "controller.tokenReview=false".into(),
                "--set-file".into(),
                format!("controller.tokenJwks={}", pems.path("jwks.json")),
            ],
        ),
        (
            "an issuer managed outside the chart",
            vec!["--set".into(), "identity.issuer.external=true".into()],
        ),
    ];
    for (case, extra) in cases {
        let mut flags = pems.flags(&[]);
        flags.extend(extra);
        let helm = succeeded(case, helm_template(&tools, &flags));
        let meshctl = succeeded(case, meshctl_install(&flags));
        assert_same_objects(&helm, &meshctl, case);
    }
}

#[test]
fn a_pod_injected_with_the_installed_mesh_config_carries_the_trust_anchors() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("anchors");
    let anchors = std::fs::read_to_string(pems.dir.join("anchors.pem")).unwrap();
    let helm = succeeded("helm template", helm_template(&tools, &pems.flags(&[])));
    let meshctl = succeeded("meshctl install", meshctl_install(&pems.flags(&[])));
    for (who, stream) in [("helm", &helm), ("meshctl", &meshctl)] {
        let (_, config_map) = objects(stream)
            .into_iter()
            .find(|(key, _)| key == "ConfigMap trellis-system/trellis-mesh-config")
            .unwrap_or_else(|| panic!("{who}: no trellis-mesh-config"));
        // objects() has parsed the YAML inside the ConfigMap.
        let mesh_config = &config_map["data"]["mesh-config.yaml"];
        assert_eq!(
            mesh_config["trustAnchorsPem"].as_str(),
            Some(anchors.as_str()),
            "{who}: the injector's mesh config must carry identity.trustAnchorsPEM"
        );
        let config = MeshConfig::from_yaml(&serde_yaml_ng::to_string(mesh_config).unwrap())
            .unwrap_or_else(|error| panic!("{who}: {error}"));

        // A pod created in a namespace that was only labelled: its proxy has the
        // anchors in its environment, and mounts nothing that namespace lacks.
        let pod = serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        });
        let labels = BTreeMap::from([("trellis.io/inject".to_owned(), "enabled".to_owned())]);
        let request = Request::Admission {
            namespace: "shop",
            namespace_labels: &labels,
        };
        let Outcome::Injected { patch, .. } = inject(&pod, &request, &config).unwrap() else {
            panic!("{who}: the pod was not injected");
        };
        let mut meshed = pod.clone();
        json_patch::patch(&mut meshed, &patch).unwrap();
        let proxy = &meshed["spec"]["initContainers"][1];
        assert_eq!(proxy["name"], "trellis-proxy");
        let env = proxy["env"].as_array().unwrap();
        assert!(
            env.contains(
                &serde_json::json!({"name": "TRELLIS_TRUST_ANCHORS_PEM", "value": anchors})
            ),
            "{who}: {env:?}"
        );
        let volumes = meshed["spec"]["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .all(|volume| volume.get("configMap").is_none()),
            "{who}: {volumes:?}"
        );
    }
}

#[test]
fn every_object_either_renders_is_valid_kubernetes_1_33() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("valid");
    let helm = succeeded("helm template", helm_template(&tools, &pems.flags(&[])));
    // meshctl's own certificates, generated because none are given.
    let meshctl = succeeded("meshctl install", meshctl_install(&[]));
    for (name, stream) in [("helm", &helm), ("meshctl", &meshctl)] {
        let said = validate(&tools, name, stream).unwrap_or_else(|said| panic!("{name}: {said}"));
        // One line per object: the CRDs, the namespace and everything else.
        assert_eq!(
            said.matches(" passed for resource ").count(),
            objects(stream).len(),
            "{name}: {said}"
        );
    }
    // The validator is strict: a field Kubernetes does not know is an error.
    let misspelt = meshctl.replacen("replicas:", "replica:", 1);
    let said = validate(&tools, "misspelt", &misspelt).expect_err("a misspelt field passed");
    assert!(said.contains("replica"), "{said}");
}

#[test]
fn a_missing_required_value_stops_helm_and_meshctl_with_the_same_message() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("required");
    for missing in [
        "identity.trustAnchorsPEM",
        "identity.issuer.keyPEM",
        "injector.tls.keyPEM",
        "injector.webhook.caBundlePEM",
    ] {
        let flags = pems.flags(&[missing]);
        let helm = helm_template(&tools, &flags);
        let mut meshctl_flags = flags.clone();
        meshctl_flags.push("--no-generate-certs".into());
        let meshctl = meshctl_install(&meshctl_flags);
        let expected = format!("{missing} is required: ");
        for (who, output) in [("helm", helm), ("meshctl", meshctl)] {
            assert!(!output.status.success(), "{who} rendered without {missing}");
            let stderr = text(&output.stderr);
            assert!(
                stderr.contains(&expected),
                "{who} without {missing}: {stderr}"
            );
        }
    }
}

#[test]
fn meshctl_refuses_half_of_a_ca_rather_than_generate_the_rest() {
    let pems = Pems::new("half");
    let output = meshctl_install(&[
        "--set-file".into(),
        format!("identity.issuer.certPEM={}", pems.path("issuer.pem")),
    ]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("identity.issuer.certPEM is given but identity.trustAnchorsPEM is not"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing half-rendered reaches kubectl"
    );
}

#[test]
fn the_chart_runs_each_binary_with_flags_it_accepts() {
    let pems = Pems::new("flags");
    // Both ways of checking tokens, so both branches of the controller's flags.
    for token_flags in [
        vec![],
        vec![
            "--set".to_owned(),
            "controller.tokenReview=false".to_owned(),
        ],
    ] {
        let mut flags = pems.flags(&[]);
        flags.extend(token_flags.iter().cloned());
        flags.extend([
            "--set-file".to_owned(),
            format!("controller.tokenJwks={}", pems.path("anchors.pem")),
        ]);
        let stream = succeeded("meshctl install", meshctl_install(&flags));
        for (key, object) in objects(&stream) {
            if object["kind"] != "Deployment" {
                continue;
            }
            let container = &object["spec"]["template"]["spec"]["containers"][0];
            let strings = |value: &Yaml| -> Vec<String> {
                value
                    .as_sequence()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| item.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let command = strings(&container["command"]);
            let Some(binary) = command.first().and_then(|name| workspace_binary(name)) else {
                continue;
            };
            // Clap parses every flag and its value before it acts on a trailing
            // --help, so an unknown flag or a bad value fails here as it would in the pod.
            let mut args = strings(&container["args"]);
            args.push("--help".into());
            let output = run(&binary, &args);
            assert!(
                output.status.success(),
                "{key} ({token_flags:?}): {} {} refused:\n{}",
                binary.display(),
                args.join(" "),
                text(&output.stderr)
            );
        }
    }
}
