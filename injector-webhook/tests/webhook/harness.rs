//! The cast of the webhook's stories: a CA and the serving certificates it issues, the
//! webhook running in-process on `127.0.0.1:0`, an HTTPS client that verifies it
//! against the CA (the `caBundle`) as the API server does, the reviews it posts, and
//! the Python tools that check the result independently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use trellis_injector::MeshConfig;
use trellis_injector::server::{Metrics, ServingCert, Webhook, serve};

/// The webhook's CA, which the client trusts as the API server trusts the `caBundle`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// The `caBundle`.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for `localhost` and 127.0.0.1 with a fresh key.
    pub fn leaf(&self) -> Leaf {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("names");
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("a leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "trellis-injector-webhook-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The webhook, serving until dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub ca: TestCa,
    /// Holds the certificate files for as long as the webhook runs.
    _dir: TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    shutdown: CancellationToken,
}

impl Running {
    /// Starts the webhook with the stock mesh config, its certificate files in a
    /// temporary directory, re-read every 200 ms besides inotify.
    pub async fn start() -> Running {
        let ca = TestCa::new();
        let dir = TempDir::new();
        let (cert_path, key_path) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
        write_leaf(&cert_path, &key_path, &ca.leaf());
        let cert = ServingCert::load(&cert_path, &key_path).expect("the serving certificate loads");
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        cert.clone().watch(
            Duration::from_millis(200),
            metrics.clone(),
            shutdown.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("its address");
        let webhook = Arc::new(Webhook {
            mesh: MeshConfig::default(),
            cert,
            metrics,
            shutdown: shutdown.clone(),
        });
        tokio::spawn(async move {
            serve(listener, webhook)
                .await
                .expect("the TLS config builds")
        });
        Running {
            addr,
            ca,
            _dir: dir,
            cert_path,
            key_path,
            shutdown,
        }
    }

    /// A client that trusts only this webhook's CA and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Client {
        Client::trusting(&self.ca.pem(), self.addr, alpn)
    }

    /// The value of the counter line starting with `series` on `/metrics` (0 if absent).
    pub async fn counter(&self, series: &str) -> f64 {
        let reply = self.client(&[b"http/1.1"]).get("/metrics").await;
        assert_eq!(reply.status, 200);
        let text = reply.text();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn write_leaf(cert_path: &Path, key_path: &Path, leaf: &Leaf) {
    std::fs::write(cert_path, &leaf.cert_pem).expect("write the certificate");
    std::fs::write(key_path, &leaf.key_pem).expect("write the key");
}

/// An HTTPS client: a new connection (and handshake) per request.
pub struct Client {
    connector: tokio_rustls::TlsConnector,
    addr: SocketAddr,
}

/// What came back, and over what.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// The protocol ALPN chose.
    pub alpn: Option<Vec<u8>>,
    /// The certificate the server presented.
    pub leaf: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// A client whose only root is `ca_pem`, as the API server's is the `caBundle`.
    pub fn trusting(ca_pem: &str, addr: SocketAddr, alpn: &[&[u8]]) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots
                .add(cert.expect("the CA's PEM"))
                .expect("the CA is a root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Client {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            addr,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, Vec::new()).await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send("POST", path, body).await.expect("POST")
    }

    pub async fn send(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<Reply> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost")?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .context("handshake")?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let leaf = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", self.addr.port()))
            .header("content-type", "application/json")
            .header("host", format!("localhost:{}", self.addr.port()))
            .body(Full::new(Bytes::from(body)))?;
        let io = TokioIo::new(tls);
        let response = if alpn.as_deref() == Some(b"h2") {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            content_type,
            body,
            alpn,
            leaf,
        })
    }
}

/// A fixture from `testdata/v1.33.0/`.
pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/testdata/v1.33.0/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fuzz-filled pod, which the fuzzer gave `hostNetwork: true`, as an ordinary pod.
pub fn fixture_pod() -> Value {
    let mut pod = fixture("core.v1.Pod.json");
    pod["spec"]["hostNetwork"] = json!(false);
    pod
}

/// The AdmissionReview the API server sends for creating `pod` in `namespace`: the
/// fixture's shape, with a pod creation's values (no subresource, no old object).
pub fn review(uid: &str, namespace: &str, pod: &Value) -> Value {
    let mut review = fixture("admission.k8s.io.v1.AdmissionReview.json");
    let request = &mut review["request"];
    let pods = json!({"group": "", "version": "v1", "resource": "pods"});
    let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    request["uid"] = json!(uid);
    request["kind"] = kind.clone();
    request["requestKind"] = kind;
    request["resource"] = pods.clone();
    request["requestResource"] = pods;
    request["name"] = pod["metadata"]["name"].clone();
    request["namespace"] = json!(namespace);
    request["operation"] = json!("CREATE");
    request["object"] = pod.clone();
    request["oldObject"] = Value::Null;
    request["dryRun"] = json!(false);
    request["options"] = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
    let fields = request.as_object_mut().expect("the request is an object");
    fields.remove("subResource");
    fields.remove("requestSubResource");
    review
        .as_object_mut()
        .expect("the review is an object")
        .remove("response");
    review
}

/// The Python tools of the independent check: PyPI's `jsonpatch` (in the venv of
/// `tests/py/setup.sh`) applies the patch, and `kubernetes-validate` (in the venv of
/// `tests/tools/setup.sh`) checks the result against the Kubernetes 1.33 schema.
pub struct PyTools {
    python: PathBuf,
    validator: PathBuf,
}

impl PyTools {
    /// The tools, or `None` after printing why this host lacks them; under
    /// `TRELLIS_E2E=require` a missing tool is a failure instead.
    pub fn find() -> Option<PyTools> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the crate lives in the workspace")
            .to_owned();
        let python = root.join("target/trellis-py/bin/python");
        let validator = root.join("target/trellis-kv/bin/kubernetes-validate");
        let has_jsonpatch = Command::new(&python)
            .args(["-c", "import jsonpatch"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let missing = if !has_jsonpatch {
            Some(format!(
                "{} cannot import jsonpatch: run tests/py/setup.sh",
                python.display()
            ))
        } else if !validator.is_file() {
            Some(format!(
                "{} is missing: run tests/tools/setup.sh",
                validator.display()
            ))
        } else {
            None
        };
        match missing {
            None => Some(PyTools { python, validator }),
            Some(reason) if std::env::var("TRELLIS_E2E").as_deref() == Ok("require") => {
                panic!("TRELLIS_E2E=require, but {reason}")
            }
            Some(reason) => {
                eprintln!("skipping (set TRELLIS_E2E=require to make this a failure): {reason}");
                None
            }
        }
    }

    /// `pod` after `patch` (RFC 6902 JSON), as Python's `jsonpatch` applies it.
    pub fn apply(&self, pod: &Value, patch: &[u8]) -> Value {
        let patch: Value = serde_json::from_slice(patch).expect("the patch is JSON");
        let input = json!({"pod": pod, "patch": patch}).to_string();
        let script = "import json, sys, jsonpatch\n\
                      given = json.load(sys.stdin)\n\
                      print(json.dumps(jsonpatch.apply_patch(given['pod'], given['patch'])))";
        let output = run(Command::new(&self.python).args(["-c", script]), &input);
        serde_json::from_str(&output).expect("jsonpatch printed JSON")
    }

    /// Fails unless `kubernetes-validate --strict` accepts `object` for Kubernetes 1.33.
    pub fn validate(&self, object: &Value) {
        let output = run(
            Command::new(&self.validator).args(["--strict", "-k", "1.33.0", "-"]),
            &object.to_string(),
        );
        assert!(
            output.contains("passed"),
            "kubernetes-validate said: {output}"
        );
    }
}

/// Runs `command` with `input` on stdin; its stdout, or a failure with both outputs.
fn run(command: &mut Command, input: &str) -> String {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} exited {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout + &String::from_utf8_lossy(&output.stderr)
}
