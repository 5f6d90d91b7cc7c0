//! The chart's tests' cast: Helm and kubernetes-validate, the PEM files an operator
//! brings, `helm template` and `meshctl install` run alike, and the objects of their
//! output, compared as Kubernetes would read them.

use std::path::PathBuf;
use std::process::Output;

use serde_yaml_ng::Value as Yaml;

use super::{Validator, run, setup_tools, text};

pub struct Tools {
    pub helm: PathBuf,
    pub validator: Validator,
}

/// Helm and kubernetes-validate, or `None` (after saying why) where this host has not
/// run `tests/tools/setup.sh`; under `TRELLIS_E2E=require` their absence fails.
pub fn tools() -> Option<Tools> {
    let [helm] = setup_tools(["tools/helm"])?;
    let validator = Validator::find()?;
    Some(Tools { helm, validator })
}

/// PEM files standing in for an operator's CA and webhook certificate, and the flags
/// that give them to Helm and meshctl alike.
pub struct Pems {
    pub dir: PathBuf,
}

impl Pems {
    pub fn new(test: &str) -> Pems {
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

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `--set-file` flags for every required PEM, less those named in `except`.
    pub fn flags(&self, except: &[&str]) -> Vec<String> {
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
pub fn helm_template(tools: &Tools, flags: &[String]) -> Output {
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

pub fn meshctl_install(flags: &[String]) -> Output {
    let mut args = vec!["install".to_owned()];
    args.extend_from_slice(flags);
    run(std::path::Path::new(env!("CARGO_BIN_EXE_meshctl")), &args)
}

pub fn succeeded(what: &str, output: Output) -> String {
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
pub fn objects(stream: &str) -> Vec<(String, Yaml)> {
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

pub fn assert_same_objects(helm: &str, meshctl: &str, case: &str) {
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

pub fn validate(tools: &Tools, name: &str, stream: &str) -> Result<String, String> {
    tools.validator.validate(name, stream)
}

/// Every object of `stream` passes `kubernetes-validate --strict` for 1.33: one line
/// per object (the CRDs, the namespace and everything else).
pub fn assert_valid(tools: &Tools, name: &str, stream: &str) {
    let said = validate(tools, name, stream).unwrap_or_else(|said| panic!("{name}: {said}"));
    assert_eq!(
        said.matches(" passed for resource ").count(),
        objects(stream).len(),
        "{name}: {said}"
    );
}
