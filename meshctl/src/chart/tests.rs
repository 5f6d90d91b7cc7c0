//! The renderer against Go's template rules, the embedded chart against the files on
//! disk, and the generated TLS material against the code that will use it. The
//! comparison with the real Helm is in `meshctl/tests/chart.rs`.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use trellis_injector::MeshConfig;

use super::*;

mod values_docs;

fn render_text(text: &str, values: &str) -> Result<String, ChartError> {
    let values = Value::from_yaml(values, "test values").unwrap();
    let root = root(values, NAMESPACE).unwrap();
    Template::parse("templates/test.yaml", text)?.render(&root)
}

fn rendered(text: &str, values: &str) -> String {
    render_text(text, values).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn trim_markers_remove_the_whitespace_on_their_side_only() {
    let text = "a:\n  {{- if .Values.on }}\n  b: 1\n{{- end }}\nc: {{ .Values.x -}}  \n  d";
    assert_eq!(rendered(text, "on: true\nx: 2"), "a:\n  b: 1\nc: 2d");
    assert_eq!(rendered(text, "on: false\nx: 2"), "a:\nc: 2d");
}

#[test]
fn if_else_nests_and_follows_go_truthiness() {
    let text = "{{ if .Values.a }}A{{ if .Values.b }}B{{ else }}b{{ end }}{{ else }}a{{ end }}";
    assert_eq!(rendered(text, "a: 1\nb: ''"), "Ab");
    assert_eq!(rendered(text, "a: [x]\nb: {k: v}"), "AB");
    assert_eq!(rendered(text, "a: {}\n"), "a");
    assert_eq!(
        rendered("{{ if not .Values.a }}n{{ end }}", "a: false"),
        "n"
    );
}

#[test]
fn fields_print_as_go_prints_them_and_a_missing_key_as_nothing() {
    let text = "{{ .Values.n }} {{ .Values.big }} {{ .Values.s }} {{ .Values.t }} [{{ .Values.none }}] {{ .Chart.AppVersion }} {{ .Release.Namespace }}";
    assert_eq!(
        rendered(text, "n: 8443\nbig: 2000000\ns: text\nt: true"),
        format!(
            "8443 2e+06 text true [] {} trellis-system",
            env!("CARGO_PKG_VERSION")
        )
    );
    let error = render_text("{{ .Values.a.b.c }}", "a: 1").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("nil pointer evaluating .Values.a.b.c"),
        "{error}"
    );
    let error = render_text("{{ .Values.a }}", "a: {b: 1}").unwrap_err();
    assert!(error.to_string().contains("use toYaml"), "{error}");
}

#[test]
fn functions_behave_as_sprig_and_helm_define_them() {
    assert_eq!(
        rendered(
            r#"{{ .Values.s | quote }}"#,
            "s: \"say \\\"hi\\\"\\n\\tback\\\\slash\""
        ),
        r#""say \"hi\"\n\tback\\slash""#
    );
    assert_eq!(rendered("[{{ .Values.none | quote }}]", "{}"), "[]");
    assert_eq!(rendered("{{ .Values.s | b64enc }}", "s: PEM"), "UEVN");
    assert_eq!(
        rendered(
            "r:\n  {{- toYaml .Values.r | nindent 2 }}",
            "r: {b: [1, x], a: {c: 1.5}}"
        ),
        "r:\n  a:\n    c: 1.5\n  b:\n  - 1\n  - x"
    );
    assert_eq!(
        rendered(r#"{{ required "need s" .Values.s }}"#, "s: v"),
        "v"
    );
    // hasKey sees a key set to nothing, which `if .Values.m.k` would take as unset.
    let has = r#"{{ if hasKey .Values.m "k" }}yes{{ else }}no{{ end }}"#;
    assert_eq!(rendered(has, "m: {k: ''}"), "yes");
    assert_eq!(rendered(has, "m: {j: 1}"), "no");
    assert!(render_text(r#"{{ hasKey .Values.s "k" }}"#, "s: x").is_err());
}

#[test]
fn fail_refuses_with_the_charts_message_and_line() {
    let text = "a: 1\n{{- if .Values.b }}\n{{- fail \"b: set c instead\" }}\n{{- end }}";
    assert_eq!(rendered(text, "{}"), "a: 1");
    let error = render_text(text, "b: 2").unwrap_err();
    assert_eq!(
        error.to_string(),
        "charts/trellis/templates/test.yaml:3: b: set c instead"
    );
}

#[test]
fn a_missing_required_value_fails_with_the_charts_message_and_line() {
    let error = render_text(
        "a: 1\nb: {{ required \"b is required\" .Values.b }}",
        "b: ''",
    )
    .unwrap_err();
    assert!(
        matches!(error, ChartError::Refused { line: 2, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "charts/trellis/templates/test.yaml:2: b is required"
    );
}

#[test]
fn anything_outside_the_subset_is_refused_at_parse_time_with_its_line() {
    for (text, expected) in [
        (
            "x\n{{ range .Values.l }}{{ end }}",
            "`range` is not in the subset",
        ),
        ("{{ include \"x\" . }}", "`include` is not in the subset"),
        (
            "{{ .Values.a | default \"x\" }}",
            "`default` is not in the subset",
        ),
        (
            "{{ if .Values.a }}{{ else if .Values.b }}{{ end }}",
            "`else if`",
        ),
        ("{{ if .Values.a }}", "`if` without `end`"),
        ("{{ end }}", "`end` without `if`"),
        ("{{ quote (lower .Values.a) }}", "not in the subset"),
        ("{{ $x := 1 }}", "not in the subset"),
        ("{{ .Values.a ", "`{{` without `}}`"),
    ] {
        let error = Template::parse("templates/test.yaml", text).unwrap_err();
        assert!(error.to_string().contains(expected), "{text:?}: {error}");
    }
}

#[test]
fn comments_and_braces_inside_strings_are_not_actions() {
    assert_eq!(rendered("{{- /* a }} comment */ -}}\nx", "{}"), "x");
    assert_eq!(
        rendered(r#"{{ required "}} in msg" .Values.a }}"#, "a: 1"),
        "1"
    );
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/trellis")
}

fn listed(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(chart_dir().join(dir))
        .unwrap()
        .map(|entry| format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

#[test]
fn every_file_of_the_chart_is_compiled_in() {
    let embedded = |files: &[ChartFile]| {
        files
            .iter()
            .map(|file| file.path.to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        embedded(TEMPLATES),
        listed("templates"),
        "add the new template to TEMPLATES in meshctl/src/chart.rs"
    );
    assert_eq!(
        embedded(CRDS),
        listed("crds"),
        "add the new CRD to CRDS in meshctl/src/chart.rs"
    );
}

#[test]
fn the_chart_the_images_and_meshctl_carry_one_version() {
    let chart = Value::from_yaml(CHART_YAML.text, "Chart.yaml").unwrap();
    let version = Value::String(env!("CARGO_PKG_VERSION").into());
    assert_eq!(chart.get(&["appVersion"]), Some(&version));
    assert_eq!(trellis_injector::VERSION, env!("CARGO_PKG_VERSION"));
    let values = Value::from_yaml(VALUES_YAML.text, "values.yaml").unwrap();
    for image in [
        &["controller", "image", "tag"][..],
        &["injector", "image", "tag"],
        &["injector", "meshConfig", "proxyImage", "tag"],
        &["injector", "meshConfig", "proxyInitImage", "tag"],
    ] {
        assert_eq!(
            values.get(image),
            Some(&version),
            "{image:?} in values.yaml"
        );
    }
}

/// `meshctl install` with generated certificates and nothing else given.
fn install_defaults() -> Vec<Manifest> {
    let mut values = values(&InstallArgs::default()).unwrap();
    generate_missing(&mut values, NAMESPACE).unwrap();
    render(&values, NAMESPACE).unwrap()
}

fn object(manifests: &[Manifest], kind: &str, name: &str) -> serde_yaml_ng::Value {
    manifests
        .iter()
        .map(|manifest| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&manifest.text).unwrap())
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_default_mesh_config_is_the_injectors_default_with_the_trust_anchors_inline() {
    let mut values = values(&InstallArgs::default()).unwrap();
    generate_missing(&mut values, NAMESPACE).unwrap();
    let manifests = render(&values, NAMESPACE).unwrap();
    let Some(Value::String(anchors)) = values.get(&["identity", "trustAnchorsPEM"]) else {
        panic!("no generated trust anchors");
    };
    let config_map = object(&manifests, "ConfigMap", "trellis-mesh-config");
    let text = config_map["data"]["mesh-config.yaml"].as_str().unwrap();
    let config = MeshConfig::from_yaml(text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    // The same PEM as the controller's ConfigMap, byte for byte, so that every
    // injected proxy trusts what the controller's certificates chain to.
    let controllers = object(&manifests, "ConfigMap", "trellis-trust-anchors");
    assert_eq!(
        controllers["data"]["ca.crt"].as_str(),
        Some(anchors.as_str())
    );
    assert_eq!(config.trust_anchors_pem.as_deref(), Some(anchors.as_str()));
    assert_eq!(
        config,
        MeshConfig {
            trust_anchors_pem: Some(anchors.clone()),
            ..MeshConfig::default()
        },
        "values.yaml's injector.meshConfig drifted from injector-webhook/src/config.rs"
    );
}

#[test]
fn the_output_is_in_an_order_kubectl_apply_can_create() {
    let manifests = install_defaults();
    let kinds: Vec<String> = manifests
        .iter()
        .map(|manifest| {
            let object: serde_yaml_ng::Value = serde_yaml_ng::from_str(&manifest.text).unwrap();
            object["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert_eq!(position("CustomResourceDefinition"), 0);
    assert!(position("Namespace") < position("ServiceAccount"));
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("MutatingWebhookConfiguration")
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshctl-chart-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_generated_mesh_ca_is_one_the_controller_accepts() {
    let ca = certs::mesh_ca().unwrap();
    let dir = temp_dir("ca");
    let files = [
        ("ca.crt", &ca.trust_anchors_pem),
        ("issuer.crt", &ca.issuer_cert_pem),
        ("issuer.key", &ca.issuer_key_pem),
    ];
    for (name, pem) in files {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    // The controller's own loader, which signs and verifies a probe certificate.
    let loaded = trellis_control_plane::Ca::from_files(
        &dir.join("ca.crt"),
        &dir.join("issuer.crt"),
        &dir.join("issuer.key"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    loaded.unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn the_generated_webhook_certificate_verifies_as_the_api_server_checks_it() {
    let tls = certs::webhook_tls(NAMESPACE).unwrap();
    let ca = CertificateDer::from_pem_slice(tls.ca_bundle_pem.as_bytes()).unwrap();
    let leaf = CertificateDer::from_pem_slice(tls.cert_pem.as_bytes()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
    let leaf = webpki::EndEntityCert::try_from(&leaf).unwrap();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    // The API server dials <service>.<namespace>.svc.
    let name = ServerName::try_from("trellis-injector.trellis-system.svc").unwrap();
    leaf.verify_is_valid_for_subject_name(&name).unwrap();
    let other = ServerName::try_from("trellis-injector.default.svc").unwrap();
    assert!(leaf.verify_is_valid_for_subject_name(&other).is_err());
}

#[test]
fn given_tls_material_is_used_and_half_of_it_is_refused() {
    let given = certs::webhook_tls(NAMESPACE).unwrap();
    let mut values = values(&InstallArgs::default()).unwrap();
    set_group(
        &mut values,
        &WEBHOOK_TLS,
        [
            given.ca_bundle_pem.clone(),
            given.cert_pem.clone(),
            given.key_pem,
        ],
    );
    let generated = generate_missing(&mut values, NAMESPACE).unwrap();
    assert_eq!(generated, ["a mesh root CA and issuer"]);
    assert_eq!(
        values.get(&["injector", "tls", "certPEM"]),
        Some(&Value::String(given.cert_pem))
    );

    let mut half = super::values(&InstallArgs {
        set: vec!["identity.issuer.certPEM=x".into()],
        ..InstallArgs::default()
    })
    .unwrap();
    let error = generate_missing(&mut half, NAMESPACE).unwrap_err();
    assert_eq!(
        error.to_string(),
        "identity.issuer.certPEM is given but identity.trustAnchorsPEM is not: give all of identity.trustAnchorsPEM, identity.issuer.certPEM and identity.issuer.keyPEM, or none and meshctl generates them"
    );
}

#[test]
fn an_external_issuer_generates_no_mesh_ca_and_still_needs_the_trust_anchors() {
    let mut values = values(&InstallArgs {
        set: vec!["identity.issuer.external=true".into()],
        ..InstallArgs::default()
    })
    .unwrap();
    let generated = generate_missing(&mut values, NAMESPACE).unwrap();
    assert_eq!(
        generated,
        ["a webhook CA and the injector's serving certificate"]
    );
    let error = render(&values, NAMESPACE).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("identity.trustAnchorsPEM is required"),
        "{error}"
    );
}

#[test]
fn values_files_set_and_set_file_layer_as_helm_layers_them() {
    let dir = temp_dir("values");
    std::fs::write(
        dir.join("a.yaml"),
        "controller: {replicas: 3, logFormat: plain}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "controller: {replicas: 2}\ntrustDomain: null\n",
    )
    .unwrap();
    std::fs::write(dir.join("anchors.pem"), "PEM\n").unwrap();
    let args = InstallArgs {
        values: vec![dir.join("a.yaml"), dir.join("b.yaml")],
        set: vec!["controller.replicas=4,injector.webhook.failurePolicy=Ignore".into()],
        set_file: vec![format!(
            "identity.trustAnchorsPEM={}",
            dir.join("anchors.pem").display()
        )],
        no_generate_certs: false,
    };
    let values = values(&args).unwrap();
    let missing = values_error(InstallArgs {
        values: vec![dir.join("missing.yaml")],
        ..InstallArgs::default()
    });
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(
        values.get(&["controller", "replicas"]),
        Some(&Value::Int(4))
    );
    assert_eq!(
        values.get(&["controller", "logFormat"]),
        Some(&Value::String("plain".into()))
    );
    assert_eq!(
        values.get(&["trustDomain"]),
        None,
        "a null override deletes the default"
    );
    assert_eq!(
        values.get(&["injector", "webhook", "failurePolicy"]),
        Some(&Value::String("Ignore".into()))
    );
    assert_eq!(
        values.get(&["identity", "trustAnchorsPEM"]),
        Some(&Value::String("PEM\n".into()))
    );
    assert_eq!(
        values.get(&["namespace", "create"]),
        Some(&Value::Bool(true))
    );
    assert!(missing.contains("missing.yaml"), "{missing}");
}

fn values_error(args: InstallArgs) -> String {
    values(&args).unwrap_err().to_string()
}
