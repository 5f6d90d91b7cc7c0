//! Taking responses as the controller pushes them: staged until their snapshot is
//! complete, then swapped in together and ACKed; refused ones NACKed at once.

use std::net::SocketAddr;
use std::time::Duration;

use trellis_proto::discovery::v1::{resource::Kind, service_port::Target};

use super::*;
use crate::directory::Destination;
use crate::identity::tests::TestCa;
use crate::orig_dst::OrigDstAddr;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn discovery() -> Discovery {
    Discovery {
        identity: TestCa::new().identity(),
        node: pb::Node::default(),
        directory: Arc::new(ArcSwap::from_pointee(Directory::default())),
        metrics: Arc::new(Metrics::new()),
    }
}

/// Service `shop/NAME` at `vip`, port 80 to the endpoints' port named `http`.
fn service(name: &str, vip: &str) -> pb::Resource {
    pb::Resource {
        kind: Some(Kind::Service(pb::Service {
            name: name.into(),
            namespace: "shop".into(),
            cluster_ips: vec![vip.into()],
            ports: vec![pb::ServicePort {
                name: "http".into(),
                port: 80,
                target: Some(Target::TargetPortName("http".into())),
                protocol: pb::Protocol::Http1 as i32,
            }],
        })),
    }
}

/// The endpoints of `shop/NAME`: `address`, with port `http` at `port`.
fn endpoints(name: &str, address: &str, port: u32) -> pb::Resource {
    pb::Resource {
        kind: Some(Kind::Endpoints(pb::Endpoints {
            name: name.into(),
            namespace: "shop".into(),
            endpoints: vec![pb::Endpoint {
                address: address.into(),
                ports: vec![pb::EndpointPort {
                    name: "http".into(),
                    port,
                }],
                identity: WEB.into(),
                ready: true,
                ..Default::default()
            }],
        })),
    }
}

/// A response as the controller sends it; `nonce` is `type@version`.
fn response(
    type_url: &str,
    version: &str,
    resources: Vec<pb::Resource>,
    more_in_snapshot: bool,
) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        type_url: type_url.into(),
        version_info: version.into(),
        nonce: format!("{type_url}@{version}"),
        resources,
        snapshot: 1,
        more_in_snapshot,
    }
}

/// What the answers say, in order: `ACK type@version`, `NACK type@version`.
fn said(answers: &[pb::DiscoveryRequest]) -> Vec<String> {
    answers
        .iter()
        .map(|a| {
            let verb = if a.error_detail.is_some() {
                "NACK"
            } else {
                "ACK"
            };
            format!("{verb} {}", a.response_nonce)
        })
        .collect()
}

/// Where a call to `addr` goes now: the endpoints of a service, or nowhere known.
fn route(discovery: &Discovery, addr: &str) -> Vec<String> {
    let dst = OrigDstAddr(addr.parse().unwrap());
    match discovery.directory.load().resolve(dst) {
        Destination::Service(target) => target
            .endpoints
            .iter()
            .map(|e| e.addr.to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// The Service set with web and a new service, cart, at 10.96.0.11.
fn web_and_cart(more_in_snapshot: bool) -> pb::DiscoveryResponse {
    let services = vec![service("web", "10.96.0.10"), service("cart", "10.96.0.11")];
    response(type_url::SERVICE, "s2", services, more_in_snapshot)
}

/// A stream that has been sent (and has applied) web at 10.96.0.10 → 10.1.0.2:8080,
/// the first snapshot of each type arriving as its own push, as a controller answers
/// subscriptions one by one.
fn synced() -> (Discovery, Pending) {
    let discovery = discovery();
    let mut pending = Pending::new(&type_url::ALL);
    let first = [
        response(
            type_url::SERVICE,
            "s1",
            vec![service("web", "10.96.0.10")],
            false,
        ),
        response(
            type_url::ENDPOINTS,
            "e1",
            vec![endpoints("web", "10.1.0.2", 8080)],
            false,
        ),
        response(type_url::ROUTE, "r1", vec![], false),
    ];
    for response in first {
        let answers = discovery.receive(&mut pending, response);
        assert_eq!(said(&answers), Vec::<String>::new(), "nothing applied yet");
        assert!(route(&discovery, "10.96.0.10:80").is_empty());
    }
    let last = response(type_url::AUTHORIZATION_POLICY, "p1", vec![], false);
    let answers = discovery.receive(&mut pending, last);
    assert_eq!(
        said(&answers),
        [
            "ACK trellis.discovery.v1.AuthorizationPolicy@p1",
            "ACK trellis.discovery.v1.Endpoints@e1",
            "ACK trellis.discovery.v1.Route@r1",
            "ACK trellis.discovery.v1.Service@s1",
        ],
        "every type at once, when the last has been answered"
    );
    assert_eq!(route(&discovery, "10.96.0.10:80"), ["10.1.0.2:8080"]);
    (discovery, pending)
}

#[test]
fn a_new_service_and_its_endpoints_are_swapped_in_together() {
    let (discovery, mut pending) = synced();
    assert!(
        discovery
            .receive(&mut pending, web_and_cart(true))
            .is_empty()
    );
    assert!(
        route(&discovery, "10.96.0.11:80").is_empty(),
        "the service waits for its endpoints"
    );
    let with_endpoints = response(
        type_url::ENDPOINTS,
        "e2",
        vec![
            endpoints("web", "10.1.0.2", 8080),
            endpoints("cart", "10.1.0.5", 8080),
        ],
        false,
    );
    let answers = discovery.receive(&mut pending, with_endpoints);
    assert_eq!(
        said(&answers),
        [
            "ACK trellis.discovery.v1.Endpoints@e2",
            "ACK trellis.discovery.v1.Service@s2"
        ]
    );
    assert_eq!(route(&discovery, "10.96.0.11:80"), ["10.1.0.5:8080"]);
    let metrics = discovery.metrics.encode();
    assert!(
        metrics.contains(
            "discovery_updates_total{type_url=\"trellis.discovery.v1.Service\",outcome=\"ack\"} 2"
        ),
        "{metrics}"
    );
}

#[test]
fn a_target_port_renamed_on_both_sides_never_applies_to_the_old_endpoints() {
    let (discovery, mut pending) = synced();
    // The service now targets the port named `web`, which only the new endpoints have.
    let mut renamed = service("web", "10.96.0.10");
    if let Some(Kind::Service(s)) = &mut renamed.kind {
        s.ports[0].target = Some(Target::TargetPortName("web".into()));
    }
    assert!(
        discovery
            .receive(
                &mut pending,
                response(type_url::SERVICE, "s2", vec![renamed], true)
            )
            .is_empty()
    );
    // Applied alone, the new service would find no port `web` on the old endpoints.
    assert_eq!(route(&discovery, "10.96.0.10:80"), ["10.1.0.2:8080"]);
    let mut moved = endpoints("web", "10.1.0.2", 9090);
    if let Some(Kind::Endpoints(e)) = &mut moved.kind {
        e.endpoints[0].ports[0].name = "web".into();
    }
    discovery.receive(
        &mut pending,
        response(type_url::ENDPOINTS, "e2", vec![moved], false),
    );
    assert_eq!(route(&discovery, "10.96.0.10:80"), ["10.1.0.2:9090"]);
}

#[test]
fn a_refused_set_is_nacked_at_once_and_its_type_keeps_the_last_good_one() {
    let (discovery, mut pending) = synced();
    assert!(
        discovery
            .receive(&mut pending, web_and_cart(true))
            .is_empty()
    );
    let bad = response(
        type_url::ENDPOINTS,
        "e2",
        vec![endpoints("cart", "cart-1.shop.svc", 8080)],
        true,
    );
    let answers = discovery.receive(&mut pending, bad);
    assert_eq!(said(&answers), ["NACK trellis.discovery.v1.Endpoints@e2"]);
    let nack = &answers[0];
    assert_eq!(nack.version_info, "e1", "a NACK names the version in force");
    let error = nack.error_detail.as_ref().unwrap();
    assert_eq!(error.code, INVALID_ARGUMENT);
    assert!(
        error.message.contains("cart-1.shop.svc"),
        "{}",
        error.message
    );
    assert_eq!(
        discovery
            .directory
            .load()
            .resources()
            .version(type_url::SERVICE),
        Some("s1"),
        "nothing is swapped in before the snapshot ends"
    );

    let last = response(type_url::ROUTE, "r2", vec![], false);
    let answers = discovery.receive(&mut pending, last);
    assert_eq!(
        said(&answers),
        [
            "ACK trellis.discovery.v1.Route@r2",
            "ACK trellis.discovery.v1.Service@s2"
        ]
    );
    let directory = discovery.directory.load();
    let versions: Vec<Option<&str>> = [type_url::SERVICE, type_url::ENDPOINTS, type_url::ROUTE]
        .iter()
        .map(|t| directory.resources().version(t))
        .collect();
    assert_eq!(versions, [Some("s2"), Some("e1"), Some("r2")]);
    let metrics = discovery.metrics.encode();
    assert!(
        metrics.contains(
            "discovery_updates_total{type_url=\"trellis.discovery.v1.Endpoints\",outcome=\"nack\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn a_stream_lost_in_the_middle_of_a_snapshot_applies_none_of_it() {
    let (discovery, mut pending) = synced();
    let half = response(
        type_url::SERVICE,
        "s2",
        vec![service("cart", "10.96.0.11")],
        true,
    );
    assert!(discovery.receive(&mut pending, half).is_empty());
    // The stream breaks: its pending state goes with it.
    drop(pending);
    let directory = discovery.directory.load();
    assert_eq!(directory.resources().version(type_url::SERVICE), Some("s1"));
    assert!(route(&discovery, "10.96.0.11:80").is_empty());
    assert_eq!(route(&discovery, "10.96.0.10:80").len(), 1);

    // The next stream is answered type by type again: nothing moves until every
    // type has been, so the proxy does not run a new Service with old Endpoints.
    let mut pending = Pending::new(&type_url::ALL);
    let again = response(
        type_url::SERVICE,
        "s2",
        vec![service("cart", "10.96.0.11")],
        false,
    );
    assert!(discovery.receive(&mut pending, again).is_empty());
    assert!(route(&discovery, "10.96.0.11:80").is_empty());
}

#[test]
fn a_controller_that_does_not_mark_snapshots_has_each_response_applied_alone() {
    let (discovery, mut pending) = synced();
    // Proto3 defaults: snapshot 0, and every response the last of its push.
    let unmarked = pb::DiscoveryResponse {
        snapshot: 0,
        ..response(
            type_url::ENDPOINTS,
            "e2",
            vec![endpoints("web", "10.1.0.3", 8080)],
            false,
        )
    };
    let answers = discovery.receive(&mut pending, unmarked);
    assert_eq!(said(&answers), ["ACK trellis.discovery.v1.Endpoints@e2"]);
    assert_eq!(route(&discovery, "10.96.0.10:80"), ["10.1.0.3:8080"]);
}

#[test]
fn a_type_the_proxy_does_not_know_is_nacked_and_changes_nothing() {
    let (discovery, mut pending) = synced();
    let answers = discovery.receive(
        &mut pending,
        response("trellis.discovery.v1.Gateway", "g1", vec![], false),
    );
    assert_eq!(said(&answers), ["NACK trellis.discovery.v1.Gateway@g1"]);
    assert_eq!(
        answers[0].error_detail.as_ref().unwrap().message,
        "unknown type"
    );
    assert_eq!(route(&discovery, "10.96.0.10:80").len(), 1);
}

/// A controller that accepts TLS (asking for an optional client certificate, as the
/// real one does), answers a discovery stream with headers and then nothing, and
/// reports the leaf each connection presented.
async fn listening_controller(
    ca: &TestCa,
) -> (SocketAddr, mpsc::UnboundedReceiver<Option<Vec<u8>>>) {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::server::WebPkiClientVerifier;

    let provider = trellis_identity::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    // The controller's serving certificate, held the way a proxy holds its own.
    let serving = ca.identity();
    serving.install(ca.certify(
        "spiffe://cluster.local/ns/trellis-system/sa/trellis-controller",
        Duration::from_secs(3600),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(serving));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (presented, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.to_vec());
            let _ = presented.send(leaf);
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(
                    TokioIo::new(tls),
                    hyper::service::service_fn(|_request| async {
                        let silence = tokio_stream::pending::<
                            Result<Frame<Bytes>, std::convert::Infallible>,
                        >();
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(silence))
                    }),
                ),
            );
        }
    });
    (addr, seen)
}

/// The leaf the next connection to the controller presented.
async fn next_leaf(presented: &mut mpsc::UnboundedReceiver<Option<Vec<u8>>>) -> Option<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(10), presented.recv())
        .await
        .expect("a connection to the controller")
        .expect("the controller runs")
}

#[tokio::test]
async fn the_stream_presents_the_certificate_and_reconnects_to_present_a_renewed_one() {
    let ca = TestCa::new();
    let (controller, mut presented) = listening_controller(&ca).await;
    let discovery = Discovery {
        identity: ca.identity_with_controller_at(&controller.to_string()),
        ..discovery()
    };
    let (identity, metrics) = (discovery.identity.clone(), discovery.metrics.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(discovery.run(shutdown.clone()));

    // No certificate, no stream: a connection now could prove nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        presented.try_recv().is_err(),
        "connected without a certificate"
    );

    let first = ca.certify(WEB, Duration::from_secs(3600));
    let first_leaf = first.key.cert[0].to_vec();
    identity.install(first);
    assert_eq!(next_leaf(&mut presented).await, Some(first_leaf));
    let open = async {
        while metrics.discovery_connected.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), open)
        .await
        .expect("the stream opens");

    // A renewal: the open stream is replaced by one presenting the new certificate,
    // without waiting out a backoff.
    let renewed = ca.certify(WEB, Duration::from_secs(3600));
    let renewed_leaf = renewed.key.cert[0].to_vec();
    identity.install(renewed);
    assert_eq!(next_leaf(&mut presented).await, Some(renewed_leaf));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the client stops on shutdown")
        .unwrap();
}
