//! Which pods the injector leaves alone (and says why), and which it refuses (and names
//! the annotation to fix).

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::{inject_labelled, shop_pod};
use trellis_injector::{MeshConfig, Outcome, Rejection, Request, SkipReason, inject};

fn admission(pod: &Value, namespace: &str, labels: &[(&str, &str)]) -> Result<Outcome, Rejection> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let request = Request::Admission {
        namespace,
        namespace_labels: &labels,
    };
    inject(pod, &request, &MeshConfig::default())
}

fn annotated(annotations: &[(&str, &str)]) -> Value {
    let mut pod = shop_pod();
    for (key, value) in annotations {
        pod["metadata"]["annotations"][*key] = json!(value);
    }
    pod
}

fn skipped(outcome: Result<Outcome, Rejection>) -> SkipReason {
    match outcome {
        Ok(Outcome::Skipped(reason)) => reason,
        other => panic!("expected a skip, got {other:?}"),
    }
}

const ENABLED: &[(&str, &str)] = &[("trellis.io/inject", "enabled")];

#[test]
fn a_pod_that_opts_out_is_left_alone_even_in_a_meshed_namespace() {
    let pod = annotated(&[("trellis.io/inject", "disabled")]);
    let reason = skipped(admission(&pod, "shop", ENABLED));
    assert_eq!(reason, SkipReason::OptedOut);
    assert_eq!(reason.label(), "opted-out");
    // meshctl inject honours the opt-out too.
    assert_eq!(
        skipped(inject(
            &pod,
            &Request::Explicit { namespace: None },
            &MeshConfig::default()
        )),
        SkipReason::OptedOut
    );
    // And skipping means no patch at all.
    assert!(
        admission(&pod, "shop", ENABLED)
            .unwrap()
            .patch()
            .0
            .is_empty()
    );
}

#[test]
fn host_network_pods_are_left_alone() {
    let mut pod = shop_pod();
    pod["spec"]["hostNetwork"] = json!(true);
    let reason = skipped(admission(&pod, "shop", ENABLED));
    assert_eq!(reason, SkipReason::HostNetwork);
    assert!(reason.to_string().contains("hostNetwork"));
    // hostNetwork: false is an ordinary pod.
    pod["spec"]["hostNetwork"] = json!(false);
    assert!(matches!(
        admission(&pod, "shop", ENABLED),
        Ok(Outcome::Injected { .. })
    ));
}

#[test]
fn the_system_namespaces_are_never_meshed() {
    let pod = annotated(ENABLED);
    for ns in ["kube-system", "trellis-system"] {
        assert_eq!(
            skipped(admission(&pod, ns, ENABLED)),
            SkipReason::SystemNamespace(ns.into())
        );
        // meshctl inject reads the namespace from the object itself.
        let mut pod = pod.clone();
        pod["metadata"]["namespace"] = json!(ns);
        assert_eq!(
            skipped(inject(
                &pod,
                &Request::Explicit { namespace: None },
                &MeshConfig::default()
            )),
            SkipReason::SystemNamespace(ns.into())
        );
        // ... or, for a workload's pod template (which has none), from the workload.
        let template = json!({"spec": {"containers": [{"name": "app"}]}});
        let request = Request::Explicit {
            namespace: Some(ns),
        };
        assert_eq!(
            skipped(inject(&template, &request, &MeshConfig::default())),
            SkipReason::SystemNamespace(ns.into())
        );
    }
}

#[test]
fn the_webhook_meshes_only_labelled_namespaces_or_pods_that_opt_in() {
    let pod = shop_pod();
    let reason = skipped(admission(&pod, "shop", &[]));
    assert_eq!(reason, SkipReason::NamespaceNotEnabled);
    assert_eq!(reason.label(), "namespace-not-enabled");
    // In a namespace without the label, the pod's own choice is enough: as a label
    // (which the webhook's objectSelector sees) or as an annotation.
    let mut labelled = shop_pod();
    labelled["metadata"]["labels"]["trellis.io/inject"] = json!("enabled");
    for opted_in in [labelled.clone(), annotated(ENABLED)] {
        assert!(matches!(
            admission(&opted_in, "shop", &[]),
            Ok(Outcome::Injected { .. })
        ));
        // A namespace labelled anything but enabled opts all its pods out, as the
        // chart's two webhooks call the injector for neither.
        let reason = skipped(admission(
            &opted_in,
            "shop",
            &[("trellis.io/inject", "disabled")],
        ));
        assert_eq!(reason, SkipReason::NamespaceDisabled("disabled".into()));
        assert_eq!(reason.label(), "namespace-disabled");
    }
    // meshctl inject does not look at the namespace.
    assert!(matches!(
        inject(
            &pod,
            &Request::Explicit { namespace: None },
            &MeshConfig::default()
        ),
        Ok(Outcome::Injected { .. })
    ));
}

#[test]
fn a_pod_opted_out_by_label_or_annotation_stays_out_whatever_the_other_says() {
    for (label, annotation) in [
        (Some("disabled"), None),
        (Some("disabled"), Some("enabled")),
        (Some("enabled"), Some("disabled")),
    ] {
        let mut pod = shop_pod();
        if let Some(value) = label {
            pod["metadata"]["labels"]["trellis.io/inject"] = json!(value);
        }
        if let Some(value) = annotation {
            pod["metadata"]["annotations"]["trellis.io/inject"] = json!(value);
        }
        for namespace_labels in [ENABLED, &[]] {
            assert_eq!(
                skipped(admission(&pod, "shop", namespace_labels)),
                SkipReason::OptedOut,
                "label {label:?}, annotation {annotation:?}"
            );
        }
    }
    // A typo in the label is refused as one in the annotation is, naming the label.
    let mut pod = shop_pod();
    pod["metadata"]["labels"]["trellis.io/inject"] = json!("disable");
    assert_eq!(
        admission(&pod, "shop", ENABLED).unwrap_err().to_string(),
        "label trellis.io/inject=\"disable\": must be enabled or disabled"
    );
}

#[test]
fn every_bad_override_rejects_the_pod_naming_its_annotation() {
    let cases = [
        ("trellis.io/inject", "yes", "must be enabled or disabled"),
        (
            "trellis.io/skip-inbound-ports",
            "70000",
            "port 70000 is out of range 1-65535",
        ),
        (
            "trellis.io/skip-outbound-ports",
            "0",
            "port 0 is out of range 1-65535",
        ),
        (
            "trellis.io/skip-outbound-ports",
            "8100-8000",
            "ends before it starts",
        ),
        (
            "trellis.io/skip-outbound-ports",
            "postgres",
            "is not a port number",
        ),
        (
            "trellis.io/skip-outbound-cidrs",
            "10.0.0.0/33",
            "the prefix must be 0-32",
        ),
        (
            "trellis.io/skip-outbound-cidrs",
            "db.example.com",
            "not an IP address",
        ),
        ("trellis.io/opaque-ports", "3306-3310", "is a range"),
        (
            "trellis.io/proxy-sidecar",
            "sidecar",
            "must be native or classic",
        ),
        (
            "trellis.io/proxy-scheduling",
            "fifo",
            "must be normal, batch or auto",
        ),
        (
            "trellis.io/local-congestion-control",
            "reno;reboot",
            "must be keep or the name of a TCP congestion control",
        ),
        ("trellis.io/proxy-cpu-request", "1.2.3", "is not a quantity"),
        ("trellis.io/proxy-cpu-limit", "-1", "is not a quantity"),
        (
            "trellis.io/proxy-memory-request",
            "64MB",
            "is not a quantity",
        ),
        ("trellis.io/proxy-memory-limit", "lots", "is not a quantity"),
        // The default memory request is 64Mi: a 32Mi limit would be below it.
        (
            "trellis.io/proxy-memory-limit",
            "32Mi",
            "request (64Mi) would exceed its limit (32Mi)",
        ),
    ];
    for (annotation, value, reason) in cases {
        let pod = annotated(&[(annotation, value)]);
        let rejection = admission(&pod, "shop", ENABLED).expect_err(annotation);
        let message = rejection.to_string();
        assert!(
            message.starts_with(&format!("annotation {annotation}={value:?}: ")),
            "{message}"
        );
        assert!(message.contains(reason), "{annotation}={value}: {message}");
    }
}

#[test]
fn a_request_above_its_limit_names_the_request_when_both_are_set() {
    let pod = annotated(&[
        ("trellis.io/proxy-cpu-request", "2"),
        ("trellis.io/proxy-cpu-limit", "500m"),
    ]);
    assert_eq!(
        admission(&pod, "shop", ENABLED).unwrap_err(),
        Rejection::InvalidAnnotation {
            annotation: "trellis.io/proxy-cpu-request",
            value: "2".into(),
            reason: "the proxy's cpu request (2) would exceed its limit (500m)".into(),
        }
    );
}

#[test]
fn bad_overrides_on_a_pod_that_is_not_injected_are_none_of_our_business() {
    let pod = annotated(&[
        ("trellis.io/inject", "disabled"),
        ("trellis.io/skip-outbound-ports", "70000"),
    ]);
    assert_eq!(
        skipped(admission(&pod, "shop", ENABLED)),
        SkipReason::OptedOut
    );
    let pod = annotated(&[("trellis.io/skip-outbound-ports", "70000")]);
    assert_eq!(
        skipped(admission(&pod, "shop", &[])),
        SkipReason::NamespaceNotEnabled
    );
}

#[test]
fn a_typo_in_the_inject_choice_never_refuses_a_pod_that_would_be_skipped_anyway() {
    let typo = annotated(&[("trellis.io/inject", "disable")]);
    let mut labelled_typo = shop_pod();
    labelled_typo["metadata"]["labels"]["trellis.io/inject"] = json!("enable");
    for pod in [typo, labelled_typo] {
        for ns in ["kube-system", "trellis-system"] {
            assert_eq!(
                skipped(admission(&pod, ns, ENABLED)),
                SkipReason::SystemNamespace(ns.into())
            );
        }
        let mut host = pod.clone();
        host["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            skipped(admission(&host, "shop", ENABLED)),
            SkipReason::HostNetwork
        );
        assert_eq!(
            skipped(admission(
                &pod,
                "legacy",
                &[("trellis.io/inject", "disabled")]
            )),
            SkipReason::NamespaceDisabled("disabled".into())
        );
        // Where the pod would be meshed, or where its choice decides, the typo is
        // refused rather than guessed.
        assert!(matches!(
            admission(&pod, "shop", ENABLED),
            Err(Rejection::InvalidAnnotation { .. } | Rejection::InvalidLabel { .. })
        ));
        assert!(admission(&pod, "lab", &[]).is_err());
    }
}

#[test]
fn what_is_not_a_pod_is_refused_rather_than_patched() {
    for (pod, what) in [
        (json!({"metadata": {}}), "no spec object"),
        (json!({"spec": {}}), "no containers list"),
        (
            json!({"spec": {"containers": [], "volumes": {}}}),
            "spec.volumes is not a list",
        ),
        (
            json!({"metadata": {"annotations": "x"}, "spec": {"containers": []}}),
            "annotations is not a map",
        ),
        (
            json!({"metadata": {"labels": ["x"]}, "spec": {"containers": []}}),
            "labels is not a map",
        ),
    ] {
        let rejection = admission(&pod, "shop", ENABLED).unwrap_err();
        assert!(matches!(rejection, Rejection::NotAPod(_)), "{rejection}");
        assert!(rejection.to_string().contains(what), "{rejection}");
    }
}

#[test]
fn a_volume_named_like_ours_is_refused_rather_than_duplicated() {
    let mut pod = shop_pod();
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "trellis-trust-anchors", "emptyDir": {}}));
    assert_eq!(
        admission(&pod, "shop", ENABLED).unwrap_err(),
        Rejection::NameTaken {
            kind: "volume",
            name: "trellis-trust-anchors".into()
        }
    );
}

#[test]
fn the_mesh_config_reports_bad_fields_by_name() {
    let cases = [
        ("proxyUid: 0", "proxyUid"),
        ("ports: {inbound: 4140}", "ports"),
        ("ports: {admin: 0}", "ports.admin"),
        ("skipOutboundPorts: \"70000\"", "skipOutboundPorts"),
        ("skipOutboundCidrs: 10.0.0.0/40", "skipOutboundCidrs"),
        (
            "proxyResources: {memoryRequest: 1Gi, memoryLimit: 64Mi}",
            "proxyResources",
        ),
        ("proxyInitResources: {cpuLimit: lots}", "proxyInitResources"),
        ("tokenExpirationSeconds: 60", "tokenExpirationSeconds"),
        ("controllerAddr: trellis-controller", "controllerAddr"),
        (
            "proxyImage: {repository: x, tag: y, pullPolicy: Sometimes}",
            "proxyImage",
        ),
        // A path where the PEM belongs, and a bundle cut short.
        ("trustAnchorsPem: /etc/trellis/ca.crt", "trustAnchorsPem"),
        (
            "trustAnchorsPem: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n\"",
            "trustAnchorsPem",
        ),
    ];
    for (yaml, field) in cases {
        let error = MeshConfig::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(
            error.starts_with(&format!("mesh config field {field}=")),
            "{yaml}: {error}"
        );
    }
    let error = MeshConfig::from_yaml("proxyUID: 2102")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `proxyUID`"), "{error}");
    // A policy the proxy does not have is refused with where it was written.
    let error = MeshConfig::from_yaml("sidecar: native\nproxyScheduling: fifo")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("proxyScheduling") && error.contains("line 2"),
        "{error}"
    );
    let error = MeshConfig::from_yaml("sidecar: native\nlocalCongestionControl: reno cubic")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("localCongestionControl")
            && error.contains("line 2")
            && error.contains("must be keep or the name"),
        "{error}"
    );
    assert_eq!(MeshConfig::from_yaml("").unwrap(), MeshConfig::default());
    assert_eq!(MeshConfig::from_yaml("{}").unwrap(), MeshConfig::default());
    // The default config survives its own YAML.
    let yaml = serde_yaml_ng::to_string(&MeshConfig::default()).unwrap();
    assert_eq!(MeshConfig::from_yaml(&yaml).unwrap(), MeshConfig::default());
}

#[test]
fn skip_reasons_have_bounded_labels_for_metrics() {
    let reasons = [
        SkipReason::AlreadyInjected,
        SkipReason::OptedOut,
        SkipReason::SystemNamespace("kube-system".into()),
        SkipReason::HostNetwork,
        SkipReason::NamespaceNotEnabled,
        SkipReason::NamespaceDisabled("disabled".into()),
    ];
    let labels: Vec<_> = reasons.iter().map(SkipReason::label).collect();
    assert_eq!(
        labels,
        [
            "already-injected",
            "opted-out",
            "system-namespace",
            "host-network",
            "namespace-not-enabled",
            "namespace-disabled",
        ]
    );
    // The opted-out pod used above would have passed everything else.
    assert!(matches!(
        inject_labelled(&shop_pod()),
        Outcome::Injected { .. }
    ));
}
