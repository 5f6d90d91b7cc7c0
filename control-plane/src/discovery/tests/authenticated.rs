//! What a stream proves about its proxy: a workload certificate the mesh's CA issued
//! is verified and recorded beside what the proxy reports; no certificate is let in
//! and recorded as none; a certificate of another CA ends the connection in the
//! handshake. And the responses of one change arrive as one marked push.

use rcgen::KeyPair;
use trellis_identity::SpiffeId;

use super::*;
use crate::ca::dev;

/// A workload certificate for `shop/sa/<account>` from the CA in `ca_dir`.
fn workload(ca_dir: &std::path::Path, account: &str) -> Arc<Presenting> {
    let ca = dev::load_or_generate(ca_dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let id = SpiffeId::for_service_account(TRUST_DOMAIN, "shop", account).unwrap();
    let issued = ca.issue(&key, &id, Duration::from_secs(600)).unwrap();
    Presenting::new(issued.chain, &key)
}

/// The `/proxies` entry of `pod`.
fn entry<'a>(proxies: &'a Value, pod: &str) -> &'a Value {
    proxies["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == pod)
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_stream_records_the_identity_its_client_certificate_proves() {
    let controller = Controller::start(&[("web.yaml", WEB)]).await;
    // web-1 presents its own certificate; web-2 presents web-1's (it reports web-2);
    // the shell presents none.
    let certificate = workload(&controller.ca_dir, "web-1");
    let mut web = controller
        .proxy_presenting("web-1", &[type_url::SERVICE], Some(certificate.clone()))
        .await;
    let mut impostor = controller
        .proxy_presenting("web-2", &[type_url::SERVICE], Some(certificate))
        .await;
    let mut shell = controller.proxy("shell", &[type_url::SERVICE]).await;
    for stream in [&mut web, &mut impostor, &mut shell] {
        stream.next_of(type_url::SERVICE).await;
    }

    let proxies = controller
        .admin_until("/proxies", "three proxies", |p| {
            ["web-1", "web-2", "shell"]
                .iter()
                .all(|pod| entry(p, pod)["pod"] == *pod)
        })
        .await;
    let web_1 = "spiffe://cluster.local/ns/shop/sa/web-1";
    assert_eq!(entry(&proxies, "web-1")["verified_identity"], web_1);
    assert_eq!(entry(&proxies, "web-1")["identity"], web_1);
    assert_eq!(
        entry(&proxies, "web-2")["verified_identity"],
        web_1,
        "what the certificate proves, not what the proxy reports"
    );
    assert_eq!(
        entry(&proxies, "web-2")["identity"],
        "spiffe://cluster.local/ns/shop/sa/web-2"
    );
    assert_eq!(entry(&proxies, "shell")["verified_identity"], Value::Null);
    let metrics = get_text(controller.admin, "/metrics").await;
    for line in [
        "discovery_connected_proxies 3",
        "discovery_authenticated_proxies 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    drop((web, impostor));
    controller
        .admin_until("/proxies", "one proxy left", |p| {
            p["proxies"].as_array().unwrap().len() == 1
        })
        .await;
    let metrics = get_text(controller.admin, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "discovery_authenticated_proxies 0")
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_client_certificate_of_another_mesh_is_refused_in_the_handshake() {
    let controller = Controller::start(&[]).await;
    let (stranger_dir, _stranger) = crate::fixtures::dev_ca();
    let foreign = workload(stranger_dir.path(), "web-1");
    let refused = connect_presenting(
        controller.grpc,
        &controller.anchors,
        controller_identity(TRUST_DOMAIN).unwrap(),
        Some(foreign),
    )
    .await;
    // In TLS 1.3 the client finishes first: the refusal may reach it when the channel
    // makes its first call instead.
    let refused = match refused {
        Err(error) => error.to_string(),
        Ok(channel) => {
            let (_requests, rx) = mpsc::channel::<DiscoveryRequest>(1);
            DiscoveryClient::new(channel)
                .stream(ReceiverStream::new(rx))
                .await
                .expect_err("a stream over a refused certificate")
                .to_string()
        }
    };
    assert!(!refused.is_empty());
    let proxies = controller.admin("/proxies").await;
    assert_eq!(proxies["proxies"], serde_json::json!([]));
    controller.stop().await;
}

#[tokio::test]
async fn a_new_service_and_its_endpoints_are_one_push() {
    let controller = Controller::start(&[("web.yaml", WEB)]).await;
    let mut web = controller
        .proxy("web-1", &[type_url::SERVICE, type_url::ENDPOINTS])
        .await;
    let first = [
        web.next_of(type_url::SERVICE).await,
        web.next_of(type_url::ENDPOINTS).await,
    ];
    for response in &first {
        web.ack(response).await;
    }

    controller.write(
        "cart.yaml",
        &WEB.replace("web", "cart")
            .replace("10.199.0.2", "10.199.0.5")
            .replace("10.96.0.10", "10.96.0.11"),
    );
    let service = web.next_of(type_url::SERVICE).await;
    let endpoints = web.next_of(type_url::ENDPOINTS).await;
    assert!(service.more_in_snapshot, "the endpoints follow the service");
    assert!(!endpoints.more_in_snapshot, "and close the push");
    assert_eq!(service.snapshot, endpoints.snapshot);
    assert!(service.snapshot > first[1].snapshot);
    assert_eq!(endpoint_addresses(&endpoints), ["10.199.0.5", "10.199.0.2"]);
    controller.stop().await;
}
