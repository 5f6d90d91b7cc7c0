//! Helpers shared by the injector's tests: applying a patch with `json-patch` (as the
//! API server applies it), the "keeps everything it had" check, and typed views.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_injector::{MeshConfig, Outcome, Request, inject};

/// The pod after `patch`, or the patch's error.
pub fn apply(pod: &Value, patch: &json_patch::Patch) -> Value {
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, patch).expect("the patch applies to the pod it was made for");
    patched
}

/// Injects through the webhook's path, in a namespace labelled for injection.
pub fn inject_labelled(pod: &Value) -> Outcome {
    let labels = BTreeMap::from([("trellis.io/inject".to_owned(), "enabled".to_owned())]);
    let request = Request::Admission {
        namespace: "shop",
        namespace_labels: &labels,
    };
    inject(pod, &request, &MeshConfig::default()).expect("injectable")
}

/// Injects and applies: the pod as the API server would store it.
pub fn meshed(pod: &Value) -> Value {
    match inject_labelled(pod) {
        Outcome::Injected { patch, .. } => apply(pod, &patch),
        Outcome::Skipped(reason) => panic!("skipped: {reason}"),
    }
}

/// Every field and value of `original` is in `patched`: objects key by key, lists as an
/// in-order subsequence (the injector inserts into lists, but never drops or reorders).
pub fn assert_superset(original: &Value, patched: &Value) {
    if let Err(path) = superset(original, patched, String::new()) {
        panic!("the patched object lost or changed {path}");
    }
}

fn superset(original: &Value, patched: &Value, path: String) -> Result<(), String> {
    match (original, patched) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                let path = format!("{path}/{key}");
                match new.get(key) {
                    Some(new_value) => superset(value, new_value, path)?,
                    None => return Err(path),
                }
            }
            Ok(())
        }
        (Value::Array(old), Value::Array(new)) => {
            let mut candidates = new.iter();
            for (index, element) in old.iter().enumerate() {
                let path = format!("{path}/{index}");
                let found = candidates
                    .by_ref()
                    .any(|candidate| superset(element, candidate, path.clone()).is_ok());
                if !found {
                    return Err(path);
                }
            }
            Ok(())
        }
        (old, new) if old == new => Ok(()),
        _ => Err(path),
    }
}

/// The names of a list of containers in the pod (`initContainers`, `containers`).
pub fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The container named `name` in `list`.
pub fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in spec.{list}"))
}

/// The pod as `k8s-openapi` reads it: proof the patched JSON is a well-formed Pod.
pub fn typed(pod: &Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(pod.clone()).expect("deserializes into k8s_openapi's Pod")
}

/// A Deployment's pod, as a team would write it: an app and a log shipper, a
/// migration init container, volumes, and pod- and container-level security contexts.
pub fn shop_pod() -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "checkout-7d9f8b6c5-x2x4k",
            "namespace": "shop",
            "labels": {"app": "checkout", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8b6c5",
                "uid": "5f1e0b9a-7c36-4c1b-9d0c-2f4f5b7c8d9e", "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "serviceAccountName": "checkout",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000},
            "initContainers": [{
                "name": "migrate",
                "image": "registry.example.com/checkout:1.4.2",
                "command": ["/app/migrate", "--database", "postgres://db.shop:5432/checkout"],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout"}]
            }],
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/checkout:1.4.2",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true},
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/checkout"},
                        {"name": "tmp", "mountPath": "/tmp"}
                    ]
                },
                {
                    "name": "log-shipper",
                    "image": "fluent/fluent-bit:3.0",
                    "volumeMounts": [{"name": "tmp", "mountPath": "/var/log/app", "readOnly": true}]
                }
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "checkout-config"}},
                {"name": "tmp", "emptyDir": {}}
            ]
        }
    })
}
