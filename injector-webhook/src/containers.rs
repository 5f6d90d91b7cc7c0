//! What the injector adds to a pod, as the JSON the API server expects: the
//! `trellis-proxy-init` init container, the `trellis-proxy` container and their volumes.
//!
//! Built as plain JSON (not typed structs) because these objects go into a patch
//! against the raw pod; every field here is one an operator would look for in
//! `kubectl get pod -o yaml`, so each non-obvious one says why it is there.

use serde_json::{Value, json};

use crate::annotations::Effective;
use crate::config::{MeshConfig, Resources, SidecarMode};
use crate::{PROXY_CONTAINER, PROXY_INIT_CONTAINER};

/// The projected ServiceAccount token the proxy trades for its certificate.
pub const TOKEN_VOLUME: &str = "trellis-identity-token";
/// The trust anchors the proxy verifies peers and the controller against, from a
/// ConfigMap in the pod's namespace; only without the mesh config's `trustAnchorsPem`.
pub const TRUST_ANCHORS_VOLUME: &str = "trellis-trust-anchors";
/// An empty `/run` for proxy-init: `iptables-restore -w` takes its lock file
/// `/run/xtables.lock` there, and the image's root filesystem is read-only.
pub const XTABLES_LOCK_VOLUME: &str = "trellis-xtables-lock";

const TOKEN_DIR: &str = "/var/run/trellis/identity";
const TOKEN_FILE: &str = "token";
const TRUST_ANCHORS_DIR: &str = "/var/run/trellis/trust-anchors";

/// Port names are IANA service names: at most 15 characters.
const INBOUND_PORT_NAME: &str = "trellis-in";
const ADMIN_PORT_NAME: &str = "trellis-admin";

/// The volumes both containers use, in the order they are appended.
pub fn volumes(config: &MeshConfig) -> Vec<Value> {
    let mut volumes = vec![json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": config.identity_audience,
            "expirationSeconds": config.token_expiration_seconds,
            "path": TOKEN_FILE,
        }}]},
    })];
    if config.trust_anchors_pem.is_none() {
        volumes.push(json!({
            "name": TRUST_ANCHORS_VOLUME,
            "configMap": {"name": config.trust_anchors_config_map},
        }));
    }
    volumes.push(json!({"name": XTABLES_LOCK_VOLUME, "emptyDir": {}}));
    volumes
}

/// The proxy's mounts: the token, and the trust-anchor ConfigMap unless the anchors
/// travel in its environment.
fn proxy_mounts(config: &MeshConfig) -> Vec<Value> {
    let mut mounts = vec![json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true})];
    if config.trust_anchors_pem.is_none() {
        mounts.push(
            json!({"name": TRUST_ANCHORS_VOLUME, "mountPath": TRUST_ANCHORS_DIR, "readOnly": true}),
        );
    }
    mounts
}

/// `trellis-proxy-init`: installs the redirect rules, then exits. It needs root and
/// NET_ADMIN/NET_RAW for iptables, and nothing else: every other capability is dropped
/// and it cannot gain privileges or write its image.
pub fn proxy_init(config: &MeshConfig, effective: &Effective) -> Value {
    let ports = config.ports;
    let mut args = vec![
        format!("--inbound-port={}", ports.inbound),
        format!("--outbound-port={}", ports.outbound),
        format!("--admin-port={}", ports.admin),
        format!("--proxy-uid={}", config.proxy_uid),
        // Always written, so that the mesh config, not the image's default, decides.
        format!(
            "--local-congestion-control={}",
            effective.local_congestion_control.as_str()
        ),
    ];
    if !effective.skip_inbound_ports.is_empty() {
        args.push(format!(
            "--skip-inbound-ports={}",
            effective.skip_inbound_ports
        ));
    }
    if !effective.skip_outbound_ports.is_empty() {
        args.push(format!(
            "--skip-outbound-ports={}",
            effective.skip_outbound_ports
        ));
    }
    if !effective.skip_outbound_cidrs.is_empty() {
        args.push(format!(
            "--skip-outbound-cidrs={}",
            effective.skip_outbound_cidrs
        ));
    }
    json!({
        "name": PROXY_INIT_CONTAINER,
        "image": config.proxy_init_image.reference(),
        "imagePullPolicy": config.proxy_init_image.pull_policy,
        "args": args,
        "resources": resources(&config.proxy_init_resources),
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": XTABLES_LOCK_VOLUME, "mountPath": "/run"}],
        // proxy-init's one error line is what `kubectl describe pod` then shows.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

/// `trellis-proxy`, as a native sidecar (an init container that keeps running, with a
/// startup probe that holds back the next init container and the app until the proxy
/// has its certificate) or as a classic first container held by a postStart hook.
pub fn proxy(config: &MeshConfig, effective: &Effective, mode: SidecarMode) -> Value {
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image.reference(),
        "imagePullPolicy": config.proxy_image.pull_policy,
        "env": env(config, effective),
        "ports": [
            {"name": INBOUND_PORT_NAME, "containerPort": config.ports.inbound, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": config.ports.admin, "protocol": "TCP"},
        ],
        "livenessProbe": http_probe("/live", 10, 3),
        "readinessProbe": http_probe("/ready", 5, 3),
        "resources": resources(&effective.proxy_resources),
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": proxy_mounts(config),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    let Value::Object(fields) = &mut proxy else {
        return proxy;
    };
    match mode {
        SidecarMode::Native => {
            fields.insert("restartPolicy".into(), json!("Always"));
            // Two minutes to fetch a certificate, probed every second so that the app
            // starts as soon as the proxy can carry its traffic.
            fields.insert("startupProbe".into(), http_probe("/ready", 1, 120));
        }
        SidecarMode::Classic => {
            let hold = config
                .classic_hold_command
                .clone()
                .unwrap_or_else(|| default_hold(config.ports.admin));
            fields.insert(
                "lifecycle".into(),
                json!({"postStart": {"exec": {"command": hold}}}),
            );
        }
    }
    proxy
}

/// The proxy's flags as environment, named as `trellis-proxy` reads them.
fn env(config: &MeshConfig, effective: &Effective) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let value = |name: &str, value: String| json!({"name": name, "value": value});
    let ports = config.ports;
    let mut env = vec![
        field("TRELLIS_POD_NAME", "metadata.name"),
        field("TRELLIS_POD_NAMESPACE", "metadata.namespace"),
        // Not flags of the proxy: the service account feeds TRELLIS_IDENTITY below
        // (the kubelet expands `$(VAR)` from earlier entries), and the node name is
        // there for the proxy's logs and for operators reading the environment.
        field("TRELLIS_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("TRELLIS_NODE_NAME", "spec.nodeName"),
        value(
            "TRELLIS_IDENTITY",
            format!(
                "spiffe://{}/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_SERVICE_ACCOUNT)",
                config.trust_domain
            ),
        ),
        value("TRELLIS_CONTROLLER_ADDR", config.controller_addr.clone()),
        value("TRELLIS_TRUST_DOMAIN", config.trust_domain.clone()),
        // The PEM itself when the mesh config has it (as Linkerd's
        // LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS): nothing need exist in the pod's
        // namespace. Else the file of the mounted ConfigMap.
        match &config.trust_anchors_pem {
            Some(pem) => value("TRELLIS_TRUST_ANCHORS_PEM", pem.clone()),
            None => value(
                "TRELLIS_TRUST_ANCHORS",
                format!("{TRUST_ANCHORS_DIR}/{}", config.trust_anchors_key),
            ),
        },
        value("TRELLIS_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_FILE}")),
        value("TRELLIS_INBOUND_ADDR", format!("0.0.0.0:{}", ports.inbound)),
        value(
            "TRELLIS_OUTBOUND_ADDR",
            format!("127.0.0.1:{}", ports.outbound),
        ),
        value("TRELLIS_ADMIN_ADDR", format!("0.0.0.0:{}", ports.admin)),
        // Always written, so that the mesh config, not the proxy image's default,
        // decides.
        value(
            "TRELLIS_SCHEDULING",
            effective.proxy_scheduling.as_str().to_owned(),
        ),
    ];
    // One worker thread per CPU of the proxy's own limit, rounded up (the kubelet
    // rounds with a divisor of 1), as Linkerd sizes its proxy: a proxy limited to one
    // CPU runs single-threaded instead of spreading wake-ups over threads it cannot
    // run at once. Without a limit the kubelet would give the node's CPUs, so the
    // variable is left out and the proxy's own default (at most two) applies.
    if effective.proxy_resources.cpu_limit.is_some() {
        env.push(
            json!({"name": "TRELLIS_WORKERS", "valueFrom": {"resourceFieldRef": {
                "containerName": crate::PROXY_CONTAINER,
                "resource": "limits.cpu",
                "divisor": "1",
            }}}),
        );
    }
    if let Some(identity) = &config.controller_identity {
        env.push(value("TRELLIS_CONTROLLER_IDENTITY", identity.clone()));
    }
    if !effective.opaque_ports.is_empty() {
        let ports: Vec<String> = effective.opaque_ports.iter().map(u16::to_string).collect();
        env.push(value("TRELLIS_OPAQUE_PORTS", ports.join(",")));
    }
    Value::Array(env)
}

fn http_probe(path: &str, period_seconds: u32, failure_threshold: u32) -> Value {
    json!({
        "httpGet": {"path": path, "port": ADMIN_PORT_NAME},
        "periodSeconds": period_seconds,
        "timeoutSeconds": 1,
        "failureThreshold": failure_threshold,
    })
}

/// Polls `/ready` for up to 120 s with the shell and `wget` of a busybox-style image.
fn default_hold(admin_port: u16) -> Vec<String> {
    let script = format!(
        "for i in $(seq 120); do wget -q -T 1 -O /dev/null http://127.0.0.1:{admin_port}/ready && exit 0; sleep 1; done; exit 1"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn resources(resources: &Resources) -> Value {
    let pick = |cpu: &Option<String>, memory: &Option<String>| {
        let mut map = serde_json::Map::new();
        for (name, value) in [("cpu", cpu), ("memory", memory)] {
            if let Some(value) = value {
                map.insert(name.into(), json!(value));
            }
        }
        map
    };
    let requests = pick(&resources.cpu_request, &resources.memory_request);
    let limits = pick(&resources.cpu_limit, &resources.memory_limit);
    let mut out = serde_json::Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}
