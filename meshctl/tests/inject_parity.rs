//! `meshctl inject` makes the pod that the webhook of an installed mesh makes: the
//! mesh is rendered by `meshctl install`, the real `trellis-injector serve` runs with
//! its mesh config as the chart mounts it and answers AdmissionReviews over HTTPS, and
//! `meshctl inject` reads the same ConfigMap as `kubectl get configmap -o yaml` prints
//! it. The pod the API server would store and the pod meshctl prints must be equal.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::{meshctl, text, workspace_binary};

/// Two pods as a team writes them: a plain one, and one that overrides its sidecar
/// mode, skip lists and resources by annotation.
const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: checkout
  namespace: shop
  labels: {app: checkout}
spec:
  initContainers:
  - {name: migrate, image: "registry.example.com/checkout:1.4.2"}
  containers:
  - name: app
    image: registry.example.com/checkout:1.4.2
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: report
  namespace: shop
  annotations:
    trellis.io/proxy-sidecar: classic
    trellis.io/skip-outbound-cidrs: 10.96.0.1/32
    trellis.io/skip-inbound-ports: "9090"
    trellis.io/proxy-memory-limit: 512Mi
spec:
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - {name: report, image: "registry.example.com/report:2"}
"#;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The injector process, killed on drop.
struct Injector(Child);

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The webhook's serving certificate for `localhost`, and the CA the client trusts as
/// the API server trusts the `caBundle`.
fn serving_certificate() -> (CertificateDer<'static>, String, String) {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.der().clone(), leaf.pem(), key.serialize_pem())
}

/// One HTTP/1.1 request over TLS, verified against `ca`; the status and the body.
fn https(
    ca: &CertificateDer<'static>,
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, TcpStream::connect(("127.0.0.1", port))?);
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    tls.write_all(body)?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A server may close without TLS's close_notify once the response is sent.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
        }
        Err(error) => return Err(error),
    }
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    Ok((status, response[head_end + 4..].to_vec()))
}

/// The AdmissionReview the API server posts for creating `pod` in `namespace`.
fn review(uid: &str, namespace: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
        }
    }))
    .unwrap()
}

#[test]
fn meshctl_inject_makes_the_pod_the_installed_webhook_makes() {
    let Some(injector_binary) = workspace_binary("trellis-injector") else {
        return;
    };
    let scratch =
        Scratch(std::env::temp_dir().join(format!("meshctl-parity-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let file = |name: &str| scratch.0.join(name).display().to_string();

    // The installed mesh, not the defaults: another trust domain and proxy UID.
    let install = meshctl(
        &[
            "install",
            "--set",
            "trustDomain=example.org,injector.meshConfig.proxyUid=2200",
        ],
        "",
    );
    assert!(install.status.success(), "{}", text(&install.stderr));
    let stream = text(&install.stdout);
    let config_map: Value = serde_yaml_ng::Deserializer::from_str(&stream)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .find(|object: &Value| {
            object["kind"] == "ConfigMap" && object["metadata"]["name"] == "trellis-mesh-config"
        })
        .expect("the ConfigMap trellis-mesh-config");
    // What `kubectl get configmap trellis-mesh-config -n trellis-system -o yaml` prints,
    // and the file the chart mounts into the injector.
    std::fs::write(
        file("configmap.yaml"),
        serde_yaml_ng::to_string(&config_map).unwrap(),
    )
    .unwrap();
    let mesh_config = config_map["data"]["mesh-config.yaml"].as_str().unwrap();
    std::fs::write(file("mesh-config.yaml"), mesh_config).unwrap();
    let (ca, cert, key) = serving_certificate();
    std::fs::write(file("tls.crt"), cert).unwrap();
    std::fs::write(file("tls.key"), key).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let injector = Injector(
        Command::new(&injector_binary)
            .args(["serve", &format!("--listen=127.0.0.1:{port}")])
            .args([
                format!("--tls-cert={}", file("tls.crt")),
                format!("--tls-key={}", file("tls.key")),
            ])
            .arg(format!("--config={}", file("mesh-config.yaml")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(https(&ca, port, "GET", "/ready", b""), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the injector did not become ready on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let output = meshctl(
        &["inject", "--mesh-config", &file("configmap.yaml"), "-"],
        PODS,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let from_meshctl: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text(&output.stdout))
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    let pods: Vec<Value> = serde_yaml_ng::Deserializer::from_str(PODS)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    assert_eq!(from_meshctl.len(), pods.len());

    let anchors = &serde_yaml_ng::from_str::<Value>(mesh_config).unwrap()["trustAnchorsPem"];
    for (pod, printed) in pods.iter().zip(&from_meshctl) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let (status, body) =
            https(&ca, port, "POST", "/inject", &review(name, "shop", pod)).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let encoded = answer["response"]["patch"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {answer}"));
        let patch: json_patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        let mut stored = pod.clone();
        json_patch::patch(&mut stored, &patch).unwrap();
        assert_eq!(
            &stored, printed,
            "{name}: the webhook's pod (left) and meshctl's (right) differ"
        );

        // And that pod can start in the installed mesh: the anchors are in its
        // proxy's environment, and nothing is mounted that the chart does not create.
        let containers = stored["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten();
        let proxy = containers
            .chain(
                stored["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .find(|container| container["name"] == "trellis-proxy")
            .unwrap();
        assert!(
            proxy["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "TRELLIS_TRUST_ANCHORS_PEM", "value": anchors})),
            "{name}: {proxy}"
        );
        assert!(
            stored["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|volume| volume.get("configMap").is_none()),
            "{name}: {}",
            stored["spec"]["volumes"]
        );
    }
    drop(injector);
}
