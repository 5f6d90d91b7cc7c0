//! The real controller, over TLS on 127.0.0.1:0, with a file source in a scratch
//! directory, talked to the way a proxy talks to it: one discovery stream carrying
//! every type, ACKs and NACKs, and `/proxies` read over HTTP from the admin port.
//! `authenticated.rs`: streams with and without a workload certificate.

mod authenticated;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use trellis_identity::TrustAnchors;
use trellis_proto::discovery::v1::discovery_client::DiscoveryClient;
use trellis_proto::discovery::v1::{DiscoveryResponse, ErrorDetail, Node, resource, type_url};

use super::*;
use crate::fixtures::{
    Presenting, ScratchDir, Signers, TRUST_DOMAIN, connect_presenting, get_text,
};
use crate::server::controller_identity;
use crate::{CaSource, Config, Error, Listeners, LogFormat};

/// Every wait in these tests is bounded by this, so a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

const WEB: &str = "\
apiVersion: trellis.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [10.96.0.10]
  ports: [{name: http, port: 80, targetPort: 8080, protocol: HTTP1}]
---
apiVersion: trellis.io/v1alpha1
kind: Endpoints
metadata: {name: web, namespace: shop}
spec:
  endpoints:
  - address: 10.199.0.2
    ports: [{name: http, port: 8080}]
    identity: spiffe://cluster.local/ns/shop/sa/web
";

/// A running controller and what a test needs to reach it.
struct Controller {
    _scratch: ScratchDir,
    objects: PathBuf,
    grpc: SocketAddr,
    admin: SocketAddr,
    /// The development CA the controller made, to issue workload certificates from.
    ca_dir: PathBuf,
    anchors: TrustAnchors,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Controller {
    async fn start(files: &[(&str, &str)]) -> Controller {
        let scratch = ScratchDir::new("discovery");
        let objects = scratch.path().join("objects");
        std::fs::create_dir_all(&objects).unwrap();
        for (name, text) in files {
            std::fs::write(objects.join(name), text).unwrap();
        }
        let jwks = scratch.path().join("jwks.json");
        std::fs::write(&jwks, Signers::new().jwks()).unwrap();
        let ca_dir = scratch.path().join("ca");
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            trust_domain: TRUST_DOMAIN.into(),
            ca: CaSource::Dev(ca_dir.clone()),
            token_auth: crate::TokenAuth::Jwks(jwks),
            token_audience: crate::fixtures::AUDIENCE.into(),
            cert_lifetime: Duration::from_secs(3600),
            log_format: LogFormat::Plain,
            config_dir: Some(objects.clone()),
            kubernetes: false,
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            debounce: Duration::from_millis(20),
        };
        let listeners = Listeners {
            grpc: TcpListener::bind(config.listen).await.unwrap(),
            admin: TcpListener::bind(config.admin_addr).await.unwrap(),
        };
        let grpc = listeners.grpc.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            crate::run(&config, listeners, shutdown.cancelled_owned()).await
        });
        let root = ca_dir.join(crate::ca::dev::ROOT_CERT);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let anchors = loop {
            if let Ok(pem) = std::fs::read(&root)
                && let Ok(anchors) = TrustAnchors::from_pem(&pem)
            {
                break anchors;
            }
            assert!(!task.is_finished(), "the controller stopped");
            assert!(tokio::time::Instant::now() < deadline, "no CA");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Controller {
            _scratch: scratch,
            objects,
            grpc,
            admin,
            ca_dir,
            anchors,
            stop,
            task,
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.objects.join(name), text).unwrap();
    }

    /// Opens a stream as pod `pod` and subscribes it to `types` (every resource).
    async fn proxy(&self, pod: &str, types: &[&str]) -> Proxy {
        self.proxy_presenting(pod, types, None).await
    }

    /// [`Controller::proxy`], presenting `client` as its TLS client certificate.
    async fn proxy_presenting(
        &self,
        pod: &str,
        types: &[&str],
        client: Option<Arc<Presenting>>,
    ) -> Proxy {
        let channel = connect_presenting(
            self.grpc,
            &self.anchors,
            controller_identity(TRUST_DOMAIN).unwrap(),
            client,
        )
        .await
        .unwrap();
        let (requests, rx) = mpsc::channel(16);
        let responses = DiscoveryClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for (i, type_url) in types.iter().enumerate() {
            requests
                .send(DiscoveryRequest {
                    // Only the first request of a stream introduces the node.
                    node: (i == 0).then(|| Node {
                        pod: pod.into(),
                        namespace: "shop".into(),
                        identity: format!("spiffe://cluster.local/ns/shop/sa/{pod}"),
                        proxy_version: "test".into(),
                    }),
                    type_url: (*type_url).into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        Proxy {
            requests,
            responses,
        }
    }

    /// `GET path` on the admin port, as JSON.
    async fn admin(&self, path: &str) -> Value {
        serde_json::from_str(&get_text(self.admin, path).await).unwrap()
    }

    /// Polls `GET path` until `done` holds.
    async fn admin_until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.admin(path).await;
            if done(&value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} in {value:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the controller stops")
            .unwrap()
            .unwrap();
    }
}

/// One proxy's end of a discovery stream.
struct Proxy {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Proxy {
    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(PATIENCE, self.responses.message())
            .await
            .expect("a response in time")
            .unwrap()
            .expect("the stream is open")
    }

    /// The next response, which must be of `type_url`.
    async fn next_of(&mut self, type_url: &str) -> DiscoveryResponse {
        let response = self.next().await;
        assert_eq!(response.type_url, type_url, "{response:?}");
        response
    }

    async fn ack(&self, response: &DiscoveryResponse) {
        self.requests
            .send(DiscoveryRequest {
                type_url: response.type_url.clone(),
                version_info: response.version_info.clone(),
                response_nonce: response.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn nack(&self, response: &DiscoveryResponse, last_good: &str, message: &str) {
        self.requests
            .send(DiscoveryRequest {
                type_url: response.type_url.clone(),
                version_info: last_good.into(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(ErrorDetail {
                    code: 3,
                    message: message.into(),
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn endpoint_addresses(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .flat_map(|r| match &r.kind {
            Some(resource::Kind::Endpoints(e)) => e
                .endpoints
                .iter()
                .map(|e| e.address.clone())
                .collect::<Vec<_>>(),
            other => panic!("not endpoints: {other:?}"),
        })
        .collect()
}

/// The status of `pod`'s `type_url` in a `/proxies` answer.
fn status<'a>(proxies: &'a Value, pod: &str, type_url: &str) -> &'a Value {
    proxies["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == pod)
        .map_or(&Value::Null, |p| &p["types"][type_url])
}

#[tokio::test]
async fn a_proxy_is_pushed_every_change_and_its_answers_are_recorded() {
    let controller = Controller::start(&[("web.yaml", WEB)]).await;

    // A proxy subscribes to every type and is sent the state of each.
    let mut web = controller.proxy("web-1", &type_url::ALL).await;
    let mut first = Vec::new();
    for type_url in type_url::ALL {
        first.push(web.next_of(type_url).await);
    }
    assert_eq!(first[0].resources.len(), 1, "the web service");
    assert_eq!(endpoint_addresses(&first[1]), ["10.199.0.2"]);
    assert!(first[2].resources.is_empty() && first[3].resources.is_empty());
    for response in &first {
        web.ack(response).await;
    }
    let proxies = controller
        .admin_until("/proxies", "ACK of every type", |p| {
            type_url::ALL
                .iter()
                .all(|t| status(p, "web-1", t)["in_sync"] == true)
        })
        .await;
    let endpoints = status(&proxies, "web-1", type_url::ENDPOINTS);
    assert_eq!(
        endpoints["acked"]["version"],
        first[1].version_info.as_str()
    );
    assert_eq!(endpoints["sent"]["nonce"], first[1].nonce.as_str());
    let me = &proxies["proxies"][0];
    assert_eq!(me["identity"], "spiffe://cluster.local/ns/shop/sa/web-1");
    assert_eq!(
        me["verified_identity"],
        Value::Null,
        "no client certificate"
    );
    assert!(me["connected_since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(endpoints["state"], "in_sync");
    let metrics = get_text(controller.admin, "/metrics").await;
    for kind in ["service", "endpoints", "route", "authorization_policy"] {
        for line in [
            format!("discovery_proxies{{type=\"{kind}\",state=\"in_sync\"}} 1"),
            format!("discovery_ack_latency_seconds_count{{type=\"{kind}\"}} 1"),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "no {line:?} in\n{metrics}"
            );
        }
    }

    // An endpoint is added: only the endpoints are pushed again, with a new version.
    controller.write("web.yaml", &WEB.replace(
        "  - address: 10.199.0.2\n",
        "  - address: 10.199.0.3\n    ports: [{name: http, port: 8080}]\n  - address: 10.199.0.2\n",
    ));
    let added = web.next_of(type_url::ENDPOINTS).await;
    assert_eq!(endpoint_addresses(&added), ["10.199.0.3", "10.199.0.2"]);
    assert_ne!(added.version_info, first[1].version_info);

    // The proxy rejects it: the controller records why, and does not insist.
    web.nack(
        &added,
        &first[1].version_info,
        "endpoint 10.199.0.3: no route to host",
    )
    .await;
    let proxies = controller
        .admin_until("/proxies", "the NACK", |p| {
            !status(p, "web-1", type_url::ENDPOINTS)["nack"].is_null()
        })
        .await;
    let endpoints = status(&proxies, "web-1", type_url::ENDPOINTS);
    assert_eq!(endpoints["nack"]["version"], added.version_info.as_str());
    assert_eq!(endpoints["nack"]["nonce"], added.nonce.as_str());
    assert_eq!(
        endpoints["nack"]["error"],
        "endpoint 10.199.0.3: no route to host"
    );
    assert_eq!(endpoints["in_sync"], false);
    assert_eq!(endpoints["state"], "nacked");
    assert_eq!(
        endpoints["acked"]["version"],
        first[1].version_info.as_str()
    );

    // A bad file is rejected where the operator can see it, and changes nothing that
    // is pushed: the next push is the route added after it, not a re-send of anything.
    controller.write("bad.yaml", "apiVersion: trellis.io/v1alpha1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 0}]}\n");
    let sources = controller
        .admin_until("/sources", "the rejection", |s| {
            !s["sources"][0]["rejections"].as_array().unwrap().is_empty()
        })
        .await;
    let rejection = &sources["sources"][0]["rejections"][0];
    assert!(rejection["origin"].as_str().unwrap().ends_with("bad.yaml"));
    assert_eq!(
        (rejection["line"].as_u64(), rejection["field"].as_str()),
        (Some(4), Some("spec.ports[0].port"))
    );
    controller.write("route.yaml", "apiVersion: trellis.io/v1alpha1\nkind: Route\nmetadata: {name: web, namespace: shop}\nspec:\n  parents: [{service: web}]\n  rules: [{backends: [{service: web, port: 80}]}]\n");
    let route = web.next_of(type_url::ROUTE).await;
    assert_eq!(route.resources.len(), 1);
    controller
        .admin_until("/proxies", "the route sent", |p| {
            status(p, "web-1", type_url::ROUTE)["state"] == "pending"
        })
        .await;

    let metrics = get_text(controller.admin, "/metrics").await;
    for line in [
        "discovery_connected_proxies 1",
        "discovery_authenticated_proxies 0",
        "discovery_nacks_total{type=\"endpoints\"} 1",
        "discovery_acks_total{type=\"service\"} 1",
        "source_rejected_documents{source=\"files\"} 1",
        // Its endpoints still NACKed; the route sent and not answered yet.
        "discovery_proxies{type=\"endpoints\",state=\"nacked\"} 1",
        "discovery_proxies{type=\"endpoints\",state=\"in_sync\"} 0",
        "discovery_proxies{type=\"route\",state=\"pending\"} 1",
        "discovery_proxies{type=\"route\",state=\"in_sync\"} 0",
        "discovery_proxies{type=\"service\",state=\"in_sync\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    // The proxy goes away: its stream ends, it is no longer listed, and it counts
    // in no state any more.
    drop(web);
    controller
        .admin_until("/proxies", "the proxy gone", |p| {
            p["proxies"] == serde_json::json!([])
        })
        .await;
    let metrics = get_text(controller.admin, "/metrics").await;
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("discovery_proxies{") && !l.ends_with(" 0"))
        .collect();
    assert!(counted.is_empty(), "{counted:?}");
    assert!(
        metrics
            .lines()
            .any(|l| l == "discovery_connected_proxies 0")
    );
    controller.stop().await;
}

#[tokio::test]
async fn every_stream_is_pushed_every_change() {
    let controller = Controller::start(&[("web.yaml", WEB)]).await;
    let mut web = controller.proxy("web-1", &[type_url::ENDPOINTS]).await;
    let mut shell = controller
        .proxy("shell", &[type_url::ENDPOINTS, type_url::SERVICE])
        .await;
    let before = web.next_of(type_url::ENDPOINTS).await;
    shell.next_of(type_url::ENDPOINTS).await;
    shell.next_of(type_url::SERVICE).await;

    controller.write("web.yaml", &WEB.replace("10.199.0.2", "10.199.0.7"));
    let (to_web, to_shell) = (web.next().await, shell.next().await);
    for pushed in [&to_web, &to_shell] {
        assert_eq!(pushed.type_url, type_url::ENDPOINTS);
        assert_eq!(endpoint_addresses(pushed), ["10.199.0.7"]);
        assert_ne!(pushed.version_info, before.version_info);
    }
    assert_eq!(to_web.version_info, to_shell.version_info);
    assert_ne!(
        to_web.nonce, to_shell.nonce,
        "nonces are unique across streams"
    );

    // On shutdown every stream ends with UNAVAILABLE, so proxies reconnect.
    controller.stop.cancel();
    let ended = tokio::time::timeout(PATIENCE, web.responses.message())
        .await
        .expect("the stream ends");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unavailable);
    controller.stop().await;
}
