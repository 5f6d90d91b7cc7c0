//! A realistic pod meshed by the injector, read the way an operator would read
//! `kubectl get pod -o yaml` afterwards.

mod support;

use serde_json::{Value, json};
use support::{apply, assert_superset, container, inject_labelled, meshed, names, shop_pod, typed};
use trellis_injector::{
    MeshConfig, Outcome, PROXY_CONTAINER, PROXY_INIT_CONTAINER, Request, SidecarMode, SkipReason,
    inject,
};

#[test]
fn a_two_container_pod_gets_proxy_init_then_the_proxy_then_its_own_init_containers() {
    let pod = shop_pod();
    let patched = meshed(&pod);

    assert_eq!(
        names(&patched, "initContainers"),
        [PROXY_INIT_CONTAINER, PROXY_CONTAINER, "migrate"]
    );
    assert_eq!(names(&patched, "containers"), ["app", "log-shipper"]);
    // Everything the pod had is still there, unchanged, in its order.
    assert_superset(&pod, &patched);
    assert_eq!(patched["spec"]["containers"], pod["spec"]["containers"]);
    assert_eq!(
        patched["spec"]["securityContext"],
        pod["spec"]["securityContext"]
    );
    let volumes: Vec<_> = patched["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "config",
            "tmp",
            "trellis-identity-token",
            "trellis-trust-anchors",
            "trellis-xtables-lock"
        ]
    );
    let annotations = &patched["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["trellis.io/injected"],
        "trellis-proxy-init,trellis-proxy"
    );
    assert_eq!(annotations["trellis.io/injected-sidecar"], "native");
    assert_eq!(
        annotations["trellis.io/injector-version"],
        trellis_injector::VERSION
    );
    assert_eq!(
        annotations["trellis.io/proxy-image"],
        format!(
            "ghcr.io/trellis-mesh/trellis-proxy:{}",
            trellis_injector::VERSION
        )
    );

    // And it is a Pod the API would accept, with the proxy as a native sidecar.
    let typed = typed(&patched);
    let spec = typed.spec.expect("spec");
    let init = spec.init_containers.expect("init containers");
    assert_eq!(init[0].restart_policy, None);
    assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
    assert_eq!(init[2].name, "migrate");
}

#[test]
fn proxy_init_runs_as_root_with_only_the_network_capabilities() {
    let patched = meshed(&shop_pod());
    let init = container(&patched, "initContainers", PROXY_INIT_CONTAINER);
    assert_eq!(
        init["securityContext"],
        json!({
            "runAsUser": 0,
            // The pod says runAsNonRoot: true; iptables needs root, so this container
            // says otherwise for itself.
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    assert_eq!(
        init["args"],
        json!([
            "--inbound-port=4143",
            "--outbound-port=4140",
            "--admin-port=4191",
            "--proxy-uid=2102",
            "--local-congestion-control=reno"
        ])
    );
    assert_eq!(
        init["volumeMounts"],
        json!([{"name": "trellis-xtables-lock", "mountPath": "/run"}])
    );
}

#[test]
fn the_proxy_waits_for_its_certificate_before_the_app_starts() {
    let patched = meshed(&shop_pod());
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(
        proxy["startupProbe"]["httpGet"],
        json!({"path": "/ready", "port": "trellis-admin"})
    );
    assert_eq!(
        proxy["livenessProbe"]["httpGet"],
        json!({"path": "/live", "port": "trellis-admin"})
    );
    assert_eq!(
        proxy["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": "trellis-admin"})
    );
    assert_eq!(
        proxy["ports"],
        json!([
            {"name": "trellis-in", "containerPort": 4143, "protocol": "TCP"},
            {"name": "trellis-admin", "containerPort": 4191, "protocol": "TCP"},
        ])
    );
    for port in proxy["ports"].as_array().unwrap() {
        assert!(
            port["name"].as_str().unwrap().len() <= 15,
            "IANA service names are short"
        );
    }
    let security = &proxy["securityContext"];
    assert_eq!(security["runAsUser"], 2102);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );

    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.contains(&json!({
        "name": "trellis-identity-token",
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": "identity.trellis.io", "expirationSeconds": 86400, "path": "token"
        }}]}
    })));
    assert!(volumes.contains(&json!({
        "name": "trellis-trust-anchors", "configMap": {"name": "trellis-trust-anchors"}
    })));
}

#[test]
fn the_proxy_environment_names_flags_the_proxy_reads() {
    let patched = meshed(&shop_pod());
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    let env: Vec<(&str, &Value)> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    let get = |name: &str| {
        env.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e)
            .unwrap()
    };
    assert_eq!(
        get("TRELLIS_POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        get("TRELLIS_POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        get("TRELLIS_SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(
        get("TRELLIS_NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        get("TRELLIS_IDENTITY")["value"],
        "spiffe://cluster.local/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_SERVICE_ACCOUNT)"
    );
    assert_eq!(
        get("TRELLIS_CONTROLLER_ADDR")["value"],
        "trellis-controller.trellis-system.svc:8086"
    );
    assert_eq!(
        get("TRELLIS_TRUST_ANCHORS")["value"],
        "/var/run/trellis/trust-anchors/ca.crt"
    );
    assert_eq!(
        get("TRELLIS_TOKEN_FILE")["value"],
        "/var/run/trellis/identity/token"
    );
    // Without a CPU limit (the default) the kubelet would pass the node's CPUs as
    // the limit, so the proxy's own default decides its threads.
    assert!(
        env.iter().all(|(name, _)| *name != "TRELLIS_WORKERS"),
        "{env:?}"
    );

    // Every other TRELLIS_ variable is one of the proxy's flags, so a renamed flag fails
    // here rather than in a cluster. (The kubelet expands $(VAR) only from entries
    // listed earlier, which the two downward-API helpers are.)
    let proxy_flags = include_str!("../../proxy/src/main.rs");
    for (name, _) in &env {
        if ["TRELLIS_SERVICE_ACCOUNT", "TRELLIS_NODE_NAME"].contains(name) {
            continue;
        }
        assert!(
            proxy_flags.contains(&format!("env = \"{name}\"")),
            "the proxy has no {name}"
        );
    }
    let position = |name| env.iter().position(|(n, _)| *n == name).unwrap();
    assert!(position("TRELLIS_SERVICE_ACCOUNT") < position("TRELLIS_IDENTITY"));
}

#[test]
fn a_proxy_with_a_cpu_limit_runs_one_worker_per_cpu_of_it() {
    let pod = with_annotations(&shop_pod(), &[("trellis.io/proxy-cpu-limit", "1500m")]);
    let patched = meshed(&pod);
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    assert_eq!(proxy["resources"]["limits"]["cpu"], "1500m");
    let workers: Vec<&Value> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "TRELLIS_WORKERS")
        .collect();
    // The kubelet rounds the limit up with a divisor of 1: two workers here.
    assert_eq!(
        workers,
        [
            &json!({"name": "TRELLIS_WORKERS", "valueFrom": {"resourceFieldRef": {
                "containerName": "trellis-proxy", "resource": "limits.cpu", "divisor": "1"
            }}})
        ]
    );
}

#[test]
fn the_trust_anchors_reach_the_proxy_in_its_environment_or_from_a_config_map() {
    let pem = rcgen::generate_simple_self_signed(vec!["mesh-root.test".into()])
        .unwrap()
        .cert
        .pem();
    // As the chart writes it: the PEM as one double-quoted YAML string.
    let yaml = format!("trustAnchorsPem: {}", serde_json::to_string(&pem).unwrap());
    let inline = MeshConfig::from_yaml(&yaml).expect("a valid mesh config");
    assert_eq!(inline.trust_anchors_pem.as_deref(), Some(pem.as_str()));

    // Inline: the PEM is in the environment, and nothing is mounted for it, so the pod
    // needs nothing in its namespace.
    let patched = injected_with(&shop_pod(), &inline);
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    assert_eq!(
        env_value(proxy, "TRELLIS_TRUST_ANCHORS_PEM"),
        Some(pem.as_str())
    );
    assert_eq!(env_value(proxy, "TRELLIS_TRUST_ANCHORS"), None);
    assert_eq!(
        proxy["volumeMounts"],
        json!([{"name": "trellis-identity-token", "mountPath": "/var/run/trellis/identity", "readOnly": true}])
    );
    assert_eq!(
        volume_names(&patched),
        [
            "config",
            "tmp",
            "trellis-identity-token",
            "trellis-xtables-lock"
        ]
    );
    assert!(
        include_str!("../../proxy/src/main.rs").contains("env = \"TRELLIS_TRUST_ANCHORS_PEM\""),
        "the proxy has no TRELLIS_TRUST_ANCHORS_PEM"
    );
    typed(&patched);
    // The ConfigMap's volume name is then not ours, so a pod may use it.
    let mut own = shop_pod();
    own["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "trellis-trust-anchors", "emptyDir": {}}));
    injected_with(&own, &inline);

    // Without it: the ConfigMap of the pod's namespace, mounted, and its file named.
    let patched = injected_with(&shop_pod(), &MeshConfig::default());
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    assert_eq!(env_value(proxy, "TRELLIS_TRUST_ANCHORS_PEM"), None);
    assert_eq!(
        env_value(proxy, "TRELLIS_TRUST_ANCHORS"),
        Some("/var/run/trellis/trust-anchors/ca.crt")
    );
    assert!(
        proxy["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "trellis-trust-anchors", "mountPath": "/var/run/trellis/trust-anchors", "readOnly": true}))
    );
    assert!(volume_names(&patched).contains(&"trellis-trust-anchors".to_owned()));
}

#[test]
fn proxy_init_flags_are_flags_proxy_init_has() {
    let pod = with_annotations(
        &shop_pod(),
        &[
            ("trellis.io/skip-inbound-ports", "25"),
            ("trellis.io/skip-outbound-ports", "5432"),
            ("trellis.io/skip-outbound-cidrs", "10.96.0.1/32"),
        ],
    );
    let patched = meshed(&pod);
    let init = container(&patched, "initContainers", PROXY_INIT_CONTAINER);
    let source = include_str!("../../proxy-init/src/main.rs");
    for arg in init["args"].as_array().unwrap() {
        let flag = arg.as_str().unwrap().split('=').next().unwrap();
        let env = format!(
            "TRELLIS_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(
            source.contains(&format!("env = \"{env}\"")),
            "proxy-init has no {flag}"
        );
    }
}

#[test]
fn a_pod_with_nothing_optional_gets_the_lists_and_maps_created() {
    let pod = json!({"spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    let patched = meshed(&pod);
    assert_eq!(
        names(&patched, "initContainers"),
        [PROXY_INIT_CONTAINER, PROXY_CONTAINER]
    );
    assert_eq!(patched["spec"]["volumes"].as_array().unwrap().len(), 3);
    assert_eq!(
        patched["metadata"]["annotations"]["trellis.io/injected-sidecar"],
        "native"
    );
    typed(&patched);
}

#[test]
fn injecting_twice_is_injecting_once() {
    let pod = shop_pod();
    let once = meshed(&pod);
    assert_eq!(
        inject_labelled(&once),
        Outcome::Skipped(SkipReason::AlreadyInjected)
    );
    assert_eq!(apply(&once, &inject_labelled(&once).patch()), once);
}

#[test]
fn a_pod_copied_with_the_proxy_but_without_the_annotations_is_not_injected_again() {
    let mut copied = meshed(&shop_pod());
    copied["metadata"]["annotations"] = json!({});
    assert_eq!(
        inject_labelled(&copied),
        Outcome::Skipped(SkipReason::AlreadyInjected)
    );
}

#[test]
fn the_classic_sidecar_is_the_first_container_held_until_ready() {
    let pod = with_annotations(&shop_pod(), &[("trellis.io/proxy-sidecar", "classic")]);
    let patched = meshed(&pod);
    assert_eq!(
        names(&patched, "initContainers"),
        [PROXY_INIT_CONTAINER, "migrate"]
    );
    assert_eq!(
        names(&patched, "containers"),
        [PROXY_CONTAINER, "app", "log-shipper"]
    );
    let proxy = container(&patched, "containers", PROXY_CONTAINER);
    assert!(proxy.get("restartPolicy").is_none() && proxy.get("startupProbe").is_none());
    let hold = proxy["lifecycle"]["postStart"]["exec"]["command"]
        .as_array()
        .unwrap();
    assert!(
        hold.last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:4191/ready")
    );
    assert_eq!(
        patched["metadata"]["annotations"]["trellis.io/injected-sidecar"],
        "classic"
    );
    assert_superset(&pod, &patched);
    typed(&patched);

    // The mesh config can make classic the default, with its own hold command.
    let config = MeshConfig {
        sidecar: SidecarMode::Classic,
        classic_hold_command: Some(vec!["/trellis-await".into()]),
        ..MeshConfig::default()
    };
    let Outcome::Injected { patch, sidecar } =
        inject(&shop_pod(), &Request::Explicit { namespace: None }, &config).unwrap()
    else {
        panic!("not injected");
    };
    assert_eq!(sidecar, SidecarMode::Classic);
    let patched = apply(&shop_pod(), &patch);
    let proxy = container(&patched, "containers", PROXY_CONTAINER);
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!(["/trellis-await"])
    );
}

#[test]
fn annotations_and_the_mesh_config_together_shape_the_containers() {
    let config = MeshConfig::from_yaml(
        r#"
proxyImage: {repository: registry.example.com/trellis/proxy, tag: "2.0.0", pullPolicy: Always}
proxyInitImage: {repository: registry.example.com/trellis/init, tag: "sha256:0123abcd"}
controllerAddr: trellis.mesh.svc:9000
controllerIdentity: spiffe://prod.example.com/ns/mesh/sa/controller
trustDomain: prod.example.com
identityAudience: mesh.example.com
proxyUid: 3000
proxyScheduling: batch
localCongestionControl: keep
ports: {inbound: 15006, outbound: 15001, admin: 15020}
skipOutboundPorts: "443"
skipOutboundCidrs: 10.96.0.1/32
"#,
    )
    .expect("a valid mesh config");
    let pod = with_annotations(
        &shop_pod(),
        &[
            ("trellis.io/skip-outbound-ports", "5432,443,6379-6380"),
            ("trellis.io/skip-outbound-cidrs", "fd00::/8"),
            ("trellis.io/opaque-ports", "3306"),
            ("trellis.io/proxy-cpu-request", "250m"),
            ("trellis.io/proxy-memory-limit", "1Gi"),
        ],
    );
    let Outcome::Injected { patch, .. } =
        inject(&pod, &Request::Explicit { namespace: None }, &config).unwrap()
    else {
        panic!("not injected");
    };
    let patched = apply(&pod, &patch);
    let init = container(&patched, "initContainers", PROXY_INIT_CONTAINER);
    assert_eq!(
        init["image"],
        "registry.example.com/trellis/init@sha256:0123abcd"
    );
    assert_eq!(
        init["args"],
        json!([
            "--inbound-port=15006",
            "--outbound-port=15001",
            "--admin-port=15020",
            "--proxy-uid=3000",
            "--local-congestion-control=keep",
            "--skip-outbound-ports=443,5432,6379-6380",
            "--skip-outbound-cidrs=10.96.0.1/32,fd00::/8",
        ])
    );
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    assert_eq!(proxy["image"], "registry.example.com/trellis/proxy:2.0.0");
    assert_eq!(proxy["imagePullPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], 3000);
    assert_eq!(proxy["ports"][0]["containerPort"], 15006);
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}})
    );
    let env = proxy["env"].as_array().unwrap();
    for expected in [
        json!({"name": "TRELLIS_CONTROLLER_ADDR", "value": "trellis.mesh.svc:9000"}),
        json!({"name": "TRELLIS_CONTROLLER_IDENTITY", "value": "spiffe://prod.example.com/ns/mesh/sa/controller"}),
        json!({"name": "TRELLIS_TRUST_DOMAIN", "value": "prod.example.com"}),
        json!({"name": "TRELLIS_OUTBOUND_ADDR", "value": "127.0.0.1:15001"}),
        json!({"name": "TRELLIS_ADMIN_ADDR", "value": "0.0.0.0:15020"}),
        json!({"name": "TRELLIS_OPAQUE_PORTS", "value": "3306"}),
        json!({"name": "TRELLIS_SCHEDULING", "value": "batch"}),
    ] {
        assert!(env.contains(&expected), "missing {expected}");
    }
    let token = patched["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "trellis-identity-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "mesh.example.com"
    );
    typed(&patched);
}

#[test]
fn the_scheduling_policy_comes_from_the_mesh_config_unless_the_pod_names_one() {
    let scheduling = |config: &MeshConfig, annotations: &[(&str, &str)]| {
        let patched = injected_with(&with_annotations(&shop_pod(), annotations), config);
        let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
        env_value(proxy, "TRELLIS_SCHEDULING").map(str::to_owned)
    };
    let stock = MeshConfig::default();
    let batch = MeshConfig::from_yaml("proxyScheduling: batch").expect("a valid mesh config");
    let annotated = |value| [("trellis.io/proxy-scheduling", value)];
    // Written even when it is the proxy's own default, so an image with another
    // default cannot change what the mesh config says.
    assert_eq!(scheduling(&stock, &[]).as_deref(), Some("auto"));
    assert_eq!(scheduling(&batch, &[]).as_deref(), Some("batch"));
    assert_eq!(
        scheduling(&stock, &annotated("batch")).as_deref(),
        Some("batch")
    );
    assert_eq!(
        scheduling(&batch, &annotated("normal")).as_deref(),
        Some("normal")
    );
    assert_eq!(
        scheduling(&batch, &annotated("auto")).as_deref(),
        Some("auto")
    );
    let normal = MeshConfig::from_yaml("proxyScheduling: normal").expect("a valid mesh config");
    assert_eq!(scheduling(&normal, &[]).as_deref(), Some("normal"));
}

#[test]
fn the_local_congestion_control_comes_from_the_mesh_config_unless_the_pod_names_one() {
    let flag = |config: &MeshConfig, annotations: &[(&str, &str)]| {
        let patched = injected_with(&with_annotations(&shop_pod(), annotations), config);
        let init = container(&patched, "initContainers", PROXY_INIT_CONTAINER);
        init["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|arg| arg.as_str()?.strip_prefix("--local-congestion-control="))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let stock = MeshConfig::default();
    let cubic =
        MeshConfig::from_yaml("localCongestionControl: cubic").expect("a valid mesh config");
    let annotated = |value| [("trellis.io/local-congestion-control", value)];
    // Written even when it is proxy-init's own default, so an image with another
    // default cannot change what the mesh config says.
    assert_eq!(flag(&stock, &[]), ["reno"]);
    assert_eq!(flag(&cubic, &[]), ["cubic"]);
    assert_eq!(flag(&stock, &annotated("keep")), ["keep"]);
    assert_eq!(flag(&cubic, &annotated("reno")), ["reno"]);
}

/// `pod` as injected explicitly with `config`.
fn injected_with(pod: &Value, config: &MeshConfig) -> Value {
    match inject(pod, &Request::Explicit { namespace: None }, config).expect("injectable") {
        Outcome::Injected { patch, .. } => apply(pod, &patch),
        Outcome::Skipped(reason) => panic!("skipped: {reason}"),
    }
}

/// The literal value of the container's variable `name`, if it has one.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

fn volume_names(pod: &Value) -> Vec<String> {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `pod` with these annotations added.
fn with_annotations(pod: &Value, annotations: &[(&str, &str)]) -> Value {
    let mut pod = pod.clone();
    for (key, value) in annotations {
        pod["metadata"]["annotations"][*key] = json!(value);
    }
    pod
}
