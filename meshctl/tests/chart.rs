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

use serde_yaml_ng::Value as Yaml;
use support::chart::{
    Pems, assert_same_objects, assert_valid, helm_template, meshctl_install, objects, succeeded,
    tools, validate,
};
use support::{run, text, workspace_binary};

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
        // Each rendering is valid Kubernetes, not only the defaults (the same objects,
        // so one of the two suffices).
        assert_valid(&tools, case, &helm);
    }
}

#[test]
fn every_object_either_one_renders_is_valid_kubernetes_1_33() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("valid");
    let helm = succeeded("helm template", helm_template(&tools, &pems.flags(&[])));
    // meshctl's own certificates, generated because none are given.
    let meshctl = succeeded("meshctl install", meshctl_install(&[]));
    for (name, stream) in [("helm", &helm), ("meshctl", &meshctl)] {
        assert_valid(&tools, name, stream);
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
