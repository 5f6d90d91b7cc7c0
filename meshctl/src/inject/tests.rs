//! `meshctl inject` over the kind of stream people pipe into `kubectl apply`.

use serde_yaml_ng::Value as Yaml;
use trellis_injector::MeshConfig;

use super::{InjectError, Input, inject_all};

const STREAM: &str = r#"# the shop, as its team deploys it
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: checkout}
  template:
    metadata:
      labels: {app: checkout}
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com/checkout:1.4.2
      containers:
        - name: app
          image: registry.example.com/checkout:1.4.2
          ports:
            - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: checkout
  namespace: shop
spec:
  selector: {app: checkout}
  ports:
    - {port: 80, targetPort: http}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: debug}
    spec:
      containers: [{name: shell, image: busybox}]
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {mode: fast}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly-report
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: registry.example.com/report:2}]
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy
  annotations:
    trellis.io/inject: disabled
spec:
  containers: [{name: app, image: legacy:1}]
---
"#;

fn run(text: &str) -> Result<(String, Vec<String>), InjectError> {
    let inputs = [Input {
        name: "shop.yaml".into(),
        text: text.into(),
    }];
    inject_all(&inputs, &MeshConfig::default())
}

fn documents(text: &str) -> Vec<Yaml> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Yaml| !d.is_null())
        .collect()
}

fn names(pod_spec: &Yaml, list: &str) -> Vec<String> {
    pod_spec[list]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_pod_in_the_stream_is_injected_and_everything_else_passes_through() {
    let (output, report) = run(STREAM).unwrap();
    let input = documents(STREAM);
    let output_docs = documents(&output);
    assert_eq!(output_docs.len(), 5, "{output}");

    // The Deployment's template: proxy-init, the proxy, then its own init container.
    let template = &output_docs[0]["spec"]["template"];
    assert_eq!(
        names(&template["spec"], "initContainers"),
        ["trellis-proxy-init", "trellis-proxy", "migrate"]
    );
    assert_eq!(names(&template["spec"], "containers"), ["app"]);
    assert_eq!(
        template["metadata"]["annotations"]["trellis.io/injected"],
        Yaml::from("trellis-proxy-init,trellis-proxy")
    );
    assert_eq!(
        output_docs[0]["spec"]["replicas"],
        input[0]["spec"]["replicas"]
    );

    // The Service is untouched.
    assert_eq!(output_docs[1], input[1]);

    // In the List, the Pod is injected and the ConfigMap is not.
    let items = output_docs[2]["items"].as_sequence().unwrap();
    assert_eq!(
        names(&items[0]["spec"], "initContainers"),
        ["trellis-proxy-init", "trellis-proxy"]
    );
    assert_eq!(items[1], input[2]["items"][1]);

    // The CronJob's pod is two templates down.
    let cron_pod = &output_docs[3]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        names(&cron_pod["spec"], "initContainers"),
        ["trellis-proxy-init", "trellis-proxy"]
    );
    assert_eq!(
        cron_pod["metadata"]["annotations"]["trellis.io/injected-sidecar"],
        Yaml::from("native")
    );

    // The pod that opts out is exactly as it was.
    assert_eq!(output_docs[4], input[4]);

    assert_eq!(
        report,
        [
            "deployment/checkout -n shop injected (native sidecar)",
            "pod/debug injected (native sidecar)",
            "cronjob/nightly-report injected (native sidecar)",
            "pod/legacy skipped: the pod opts out (trellis.io/inject: disabled)",
        ]
    );
}

#[test]
fn the_authors_field_order_survives() {
    let (output, _) = run(STREAM).unwrap();
    let first = output.split("---\n").next().unwrap();
    assert!(
        first.starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\n"),
        "{first}"
    );
    // The new containers start with their name, like the ones people write.
    assert!(
        first.contains("initContainers:\n      - name: trellis-proxy-init\n"),
        "{first}"
    );
    // And the Service document, which holds no pod, is byte for byte what was read.
    assert_eq!(output.split("---\n").nth(1), STREAM.split("---\n").nth(1));
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    let (once, _) = run(STREAM).unwrap();
    let (twice, report) = run(&once).unwrap();
    assert_eq!(documents(&once), documents(&twice));
    assert!(
        report[0].ends_with("skipped: already injected"),
        "{report:?}"
    );
}

#[test]
fn workloads_in_system_namespaces_are_left_alone() {
    let text = STREAM.replacen("namespace: shop", "namespace: kube-system", 1);
    let (output, report) = run(&text).unwrap();
    assert_eq!(documents(&output)[0], documents(&text)[0]);
    assert_eq!(
        report[0],
        "deployment/checkout -n kube-system skipped: namespace kube-system is never meshed"
    );
}

#[test]
fn a_bad_annotation_fails_the_run_naming_the_object_and_the_annotation() {
    let text = STREAM.replace(
        "      labels: {app: checkout}\n",
        "      labels: {app: checkout}\n      annotations: {trellis.io/skip-outbound-ports: \"70000\"}\n",
    );
    let error = run(&text).unwrap_err().to_string();
    assert_eq!(
        error,
        "deployment/checkout -n shop: not injected: annotation trellis.io/skip-outbound-ports=\"70000\": port 70000 is out of range 1-65535"
    );
}

#[test]
fn broken_yaml_names_the_source_and_the_document() {
    let error = run("kind: ConfigMap\n---\nkind: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("shop.yaml: document 2 (from line 2) is not valid YAML"),
        "{error}"
    );
}

#[test]
fn the_mesh_config_is_read_from_the_configmap_or_as_itself() {
    let dir = std::env::temp_dir().join(format!("meshctl-inject-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let configmap = dir.join("cm.yaml");
    std::fs::write(
        &configmap,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: trellis-mesh-config}\n\
         data:\n  mesh-config.yaml: |\n    proxyUid: 2200\n",
    )
    .unwrap();
    let bare = dir.join("mesh.yaml");
    std::fs::write(&bare, "proxyUid: 2200\n").unwrap();
    let other = dir.join("other.yaml");
    std::fs::write(&other, "kind: ConfigMap\ndata: {settings: x}\n").unwrap();

    for path in [&configmap, &bare] {
        let (config, warning) = super::config::read(Some(path), None).unwrap();
        assert_eq!(config.proxy_uid, 2200);
        assert!(warning.unwrap().contains("trellis-trust-anchors"));
    }
    let error = super::config::read(Some(&other), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the ConfigMap has no data key mesh-config.yaml"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A workload of `kind` in `shop`, its pod template with one container.
fn workload(kind: &str, api_version: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: shop\n\
         spec:\n{extra_spec}  template:\n    metadata:\n      labels: {{app: {name}}}\n    \
         spec:\n      containers:\n      - {{name: app, image: \"app:1\"}}\n",
        name = kind.to_lowercase()
    )
}

#[test]
fn statefulsets_daemonsets_replicasets_and_jobs_get_the_proxy_in_their_pod_template() {
    let selector = "  selector: {matchLabels: {app: x}}\n";
    let stream = [
        workload(
            "StatefulSet",
            "apps/v1",
            &format!("{selector}  serviceName: db\n"),
        ),
        workload("DaemonSet", "apps/v1", selector),
        workload("ReplicaSet", "apps/v1", selector),
        workload("Job", "batch/v1", "  backoffLimit: 2\n"),
    ]
    .join("---\n")
    // A Job's pod must say how it restarts.
    .replace(
        "      containers:\n      - {name: app, image: \"app:1\"}\n",
        "      restartPolicy: Never\n      containers:\n      - {name: app, image: \"app:1\"}\n",
    );
    let (output, report) = run(&stream).unwrap();
    let (input, output) = (documents(&stream), documents(&output));
    assert_eq!(output.len(), 4);
    for (before, after) in input.iter().zip(&output) {
        let kind = before["kind"].as_str().unwrap();
        let pod = &after["spec"]["template"];
        assert_eq!(
            names(&pod["spec"], "initContainers"),
            ["trellis-proxy-init", "trellis-proxy"],
            "{kind}"
        );
        assert_eq!(names(&pod["spec"], "containers"), ["app"], "{kind}");
        // A native sidecar, so a Job's pod completes when its app does.
        assert_eq!(
            pod["spec"]["initContainers"][1]["restartPolicy"],
            Yaml::from("Always"),
            "{kind}"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["trellis.io/injected"],
            Yaml::from("trellis-proxy-init,trellis-proxy"),
            "{kind}"
        );
        // Everything else of the workload is as it was.
        assert_eq!(after["metadata"], before["metadata"], "{kind}");
        for (key, value) in before["spec"].as_mapping().unwrap() {
            if key != "template" {
                assert_eq!(&after["spec"][key], value, "{kind} {key:?}");
            }
        }
    }
    assert_eq!(
        report,
        [
            "statefulset/statefulset -n shop injected (native sidecar)",
            "daemonset/daemonset -n shop injected (native sidecar)",
            "replicaset/replicaset -n shop injected (native sidecar)",
            "job/job -n shop injected (native sidecar)",
        ]
    );
}

/// Objects holding no pod to inject, as people write them: comments, flow style,
/// quotes, block scalars, strings that look like other types.
const UNTOUCHED_BEFORE: &str = r#"# the shop's namespace and settings
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {trellis.io/inject: enabled}   # meshed
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data:
  fast: "yes"
  retries: '3'
  script: |
    #!/bin/sh
    exec "$@"
"#;

const UNTOUCHED_AFTER: &str = r#"--- # routes are the controller's business
apiVersion: trellis.io/v1alpha1
kind: Route
metadata:
  name: checkout
  namespace: shop
spec: {hosts: [checkout], rules: [{backends: [{service: checkout, weight: 100}]}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy
  namespace: shop
  labels: {trellis.io/inject: disabled}
spec:
  containers: [{name: app, image: "legacy:1", args: ["on", "0x1F"]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: shop}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostNetwork: true
      containers: [{name: agent, image: "agent:1"}]
...
"#;

#[test]
fn documents_without_a_pod_to_inject_pass_through_byte_for_byte() {
    let deployment = STREAM.split("---\n").next().unwrap();
    let stream = format!("{UNTOUCHED_BEFORE}---\n{deployment}{UNTOUCHED_AFTER}");
    let (output, report) = run(&stream).unwrap();
    assert!(output.starts_with(UNTOUCHED_BEFORE), "{output}");
    assert!(output.ends_with(UNTOUCHED_AFTER), "{output}");
    let injected = &output[UNTOUCHED_BEFORE.len()..output.len() - UNTOUCHED_AFTER.len()];
    assert!(
        injected.starts_with("---\napiVersion: apps/v1\nkind: Deployment\n"),
        "{injected}"
    );
    assert_eq!(
        report,
        [
            "deployment/checkout -n shop injected (native sidecar)",
            "pod/legacy -n shop skipped: the pod opts out (trellis.io/inject: disabled)",
            "daemonset/node-agent -n shop skipped: the pod uses the host's network (hostNetwork: true); its rules would be the node's",
        ]
    );
    // And the stream still means what it meant, document by document.
    let (input, output) = (documents(&stream), documents(&output));
    assert_eq!(input.len(), output.len());
    for (index, (before, after)) in input.iter().zip(&output).enumerate() {
        if index != 2 {
            assert_eq!(before, after);
        }
    }
}
