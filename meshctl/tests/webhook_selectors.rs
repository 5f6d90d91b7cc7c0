//! The chart's `MutatingWebhookConfiguration` as the API server applies it: for each
//! pod created, the entries whose `namespaceSelector` and `objectSelector` match are
//! called, at their paths; the injector then decides as that path tells it
//! ([`Route`]). Together this is what an operator sees: which pods come out meshed.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::{meshctl, text};
use trellis_injector::server::Route;
use trellis_injector::{MeshConfig, Outcome, Request, inject};

/// The webhook entries `meshctl install` renders (the same as `helm template`'s, as
/// `tests/chart.rs` shows).
fn webhooks() -> Vec<Value> {
    let output = meshctl(&["install"], "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stream = text(&output.stdout);
    let config: Value = serde_yaml_ng::Deserializer::from_str(&stream)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .find(|object: &Value| object["kind"] == "MutatingWebhookConfiguration")
        .expect("a MutatingWebhookConfiguration");
    config["webhooks"].as_array().unwrap().clone()
}

/// A `metav1.LabelSelector` against `labels`, as the API server evaluates it; an
/// absent selector matches everything.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    let expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten();
    match_labels
        .into_iter()
        .all(|(key, value)| labels.get(key).map(String::as_str) == value.as_str())
        && expressions.into_iter().all(|expression| {
            let value = labels.get(expression["key"].as_str().unwrap());
            let values: Vec<&str> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let listed = value.is_some_and(|value| values.contains(&value.as_str()));
            match expression["operator"].as_str().unwrap() {
                "In" => listed,
                "NotIn" => !listed,
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("operator {other}"),
            }
        })
}

/// One pod created in one namespace.
struct Case {
    story: &'static str,
    namespace: &'static str,
    namespace_label: Option<&'static str>,
    pod_label: Option<&'static str>,
    pod_annotation: Option<&'static str>,
    meshed: bool,
}

#[test]
fn pods_are_meshed_by_their_namespaces_label_or_their_own() {
    let cases = [
        Case {
            story: "a pod of a labelled namespace",
            namespace: "shop",
            namespace_label: Some("enabled"),
            pod_label: None,
            pod_annotation: None,
            meshed: true,
        },
        Case {
            story: "a pod that opts out by label there",
            namespace: "shop",
            namespace_label: Some("enabled"),
            pod_label: Some("disabled"),
            pod_annotation: None,
            meshed: false,
        },
        Case {
            story: "a pod that opts out by annotation there",
            namespace: "shop",
            namespace_label: Some("enabled"),
            pod_label: None,
            pod_annotation: Some("disabled"),
            meshed: false,
        },
        Case {
            story: "a pod labelled to opt in, in a namespace without the label",
            namespace: "lab",
            namespace_label: None,
            pod_label: Some("enabled"),
            pod_annotation: None,
            meshed: true,
        },
        Case {
            story: "a pod that opts in by label and out by annotation",
            namespace: "lab",
            namespace_label: None,
            pod_label: Some("enabled"),
            pod_annotation: Some("disabled"),
            meshed: false,
        },
        Case {
            story: "a pod annotated (not labelled) to opt in: no selector sees it",
            namespace: "lab",
            namespace_label: None,
            pod_label: None,
            pod_annotation: Some("enabled"),
            meshed: false,
        },
        Case {
            story: "an ordinary pod of an unlabelled namespace",
            namespace: "lab",
            namespace_label: None,
            pod_label: None,
            pod_annotation: None,
            meshed: false,
        },
        Case {
            story: "a pod labelled to opt in, in a namespace that opted out",
            namespace: "legacy",
            namespace_label: Some("disabled"),
            pod_label: Some("enabled"),
            pod_annotation: None,
            meshed: false,
        },
        Case {
            story: "a pod labelled to opt in, in kube-system",
            namespace: "kube-system",
            namespace_label: None,
            pod_label: Some("enabled"),
            pod_annotation: None,
            meshed: false,
        },
        Case {
            story: "a pod of trellis-system, even labelled for the mesh",
            namespace: "trellis-system",
            namespace_label: Some("enabled"),
            pod_label: Some("enabled"),
            pod_annotation: None,
            meshed: false,
        },
    ];
    let webhooks = webhooks();
    assert_eq!(webhooks.len(), 2);
    for case in cases {
        let mut namespace_labels = BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            case.namespace.to_owned(),
        )]);
        if let Some(value) = case.namespace_label {
            namespace_labels.insert("trellis.io/inject".into(), value.into());
        }
        let mut pod = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        });
        if let Some(value) = case.pod_label {
            pod["metadata"]["labels"]["trellis.io/inject"] = json!(value);
        }
        if let Some(value) = case.pod_annotation {
            pod["metadata"]["annotations"]["trellis.io/inject"] = json!(value);
        }
        let pod_labels: BTreeMap<String, String> =
            serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap();

        let called: Vec<&str> = webhooks
            .iter()
            .filter(|webhook| {
                selects(&webhook["namespaceSelector"], &namespace_labels)
                    && selects(&webhook["objectSelector"], &pod_labels)
            })
            .map(|webhook| webhook["clientConfig"]["service"]["path"].as_str().unwrap())
            .collect();
        assert!(called.len() <= 1, "{}: called twice", case.story);
        let meshed = called.first().is_some_and(|path| {
            let route =
                Route::from_path(path).unwrap_or_else(|| panic!("the injector serves no {path}"));
            let request = Request::Admission {
                namespace: case.namespace,
                namespace_labels: &route.namespace_labels(),
            };
            matches!(
                inject(&pod, &request, &MeshConfig::default()),
                Ok(Outcome::Injected { .. })
            )
        });
        assert_eq!(meshed, case.meshed, "{} (called: {called:?})", case.story);
    }
}
