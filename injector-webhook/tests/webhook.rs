//! The webhook the way the API server calls it: AdmissionReviews posted over HTTPS
//! (HTTP/2 and HTTP/1.1), the server verified against its CA as against a `caBundle`,
//! the answer's patch decoded and applied by an independent implementation and the
//! result checked against the Kubernetes 1.33 schema.

#[path = "webhook/harness.rs"]
mod harness;
mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::{PyTools, Running, fixture_pod, review, write_leaf};
use serde_json::{Value, json};
use support::{assert_superset, names, shop_pod};
use trellis_injector::{PROXY_CONTAINER, PROXY_INIT_CONTAINER};

async fn webhook() -> Running {
    Running::start().await
}

fn body(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).expect("a review serializes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzzed_pod_is_meshed_and_the_patch_makes_a_valid_pod_elsewhere_too() {
    let webhook = webhook().await;
    let tools = PyTools::find();
    let pod = fixture_pod();
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let uid = format!("0c9a8d74-9cb7-44dd-b98e-{}", alpn.len());
        let reply = webhook
            .client(&[alpn])
            .post("/inject", body(&review(&uid, "shop", &pod)))
            .await;
        assert_eq!(
            reply.alpn.as_deref(),
            Some(alpn),
            "ALPN chose the offered protocol"
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.content_type, "application/json");
        let answer = reply.json();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], uid.as_str());
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let encoded = response["patch"]
            .as_str()
            .unwrap_or_else(|| panic!("patch is not a base64 string: {}", response["patch"]));
        let patch = BASE64.decode(encoded).expect("the patch is base64");

        // The json-patch crate made it; it must apply the same way elsewhere.
        let ours: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
        let patched = support::apply(&pod, &ours);
        assert_superset(&pod, &patched);
        assert_eq!(
            names(&patched, "initContainers"),
            [PROXY_INIT_CONTAINER, PROXY_CONTAINER, "nameValue"]
        );
        let typed = support::typed(&patched);
        assert_eq!(
            typed.metadata.annotations.expect("annotations")["annotationsKey"],
            "annotationsValue"
        );
        if let Some(tools) = &tools {
            let independent = tools.apply(&pod, &patch);
            assert_eq!(
                independent, patched,
                "Python's jsonpatch and json-patch agree"
            );
            tools.validate(&independent);
            support::typed(&independent);
        }
    }
    assert_eq!(
        webhook
            .counter("injector_admissions_total{outcome=\"injected\",reason=\"\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_are_not_meshed_are_allowed_untouched_with_the_reason_audited() {
    let webhook = webhook().await;
    let client = webhook.client(&[&b"h2"[..], b"http/1.1"]);
    let mut opted_out = shop_pod();
    opted_out["metadata"]["annotations"]["trellis.io/inject"] = json!("disabled");
    let mut host_network = shop_pod();
    host_network["spec"]["hostNetwork"] = json!(true);
    let mut already = shop_pod();
    already["metadata"]["annotations"]["trellis.io/injected"] =
        json!("trellis-proxy-init,trellis-proxy");
    // Opted in by label, which brings the API server to /inject-opt-in, and out by
    // annotation: out wins.
    let mut torn = shop_pod();
    torn["metadata"]["labels"]["trellis.io/inject"] = json!("enabled");
    torn["metadata"]["annotations"]["trellis.io/inject"] = json!("disabled");
    let cases = [
        ("/inject", "shop", opted_out, "opted-out"),
        ("/inject", "shop", host_network, "host-network"),
        ("/inject", "shop", already, "already-injected"),
        ("/inject", "kube-system", shop_pod(), "system-namespace"),
        ("/inject", "trellis-system", shop_pod(), "system-namespace"),
        (
            "/inject-opt-in",
            "plain",
            shop_pod(),
            "namespace-not-enabled",
        ),
        ("/inject-opt-in", "plain", torn, "opted-out"),
    ];
    for (path, namespace, pod, reason) in &cases {
        let reply = client
            .post(path, body(&review("u-skip", namespace, pod)))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(
            answer["response"],
            json!({"uid": "u-skip", "allowed": true, "auditAnnotations": {"skip-reason": reason}}),
            "{path} {namespace}: no patch, no patch type, the reason audited"
        );
    }
    for (_, _, _, reason) in &cases {
        let expected = cases.iter().filter(|(_, _, _, r)| r == reason).count() as f64;
        let series =
            format!("injector_admissions_total{{outcome=\"skipped\",reason=\"{reason}\"}}");
        assert_eq!(webhook.counter(&series).await, expected, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_opts_in_by_label_is_meshed_from_an_unlabelled_namespace() {
    let webhook = webhook().await;
    let client = webhook.client(&[b"h2"]);
    let mut pod = shop_pod();
    pod["metadata"]["labels"]["trellis.io/inject"] = json!("enabled");
    let reply = client
        .post("/inject-opt-in", body(&review("u-opt-in", "plain", &pod)))
        .await;
    let response = &reply.json()["response"];
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let patch = BASE64.decode(response["patch"].as_str().unwrap()).unwrap();
    let patched = support::apply(&pod, &serde_json::from_slice(&patch).unwrap());
    assert_eq!(
        names(&patched, "initContainers"),
        [PROXY_INIT_CONTAINER, PROXY_CONTAINER, "migrate"]
    );
    // The same pod without its label is not meshed there: the path alone does not
    // mesh a pod, only the pod's own choice does.
    let reply = client
        .post(
            "/inject-opt-in",
            body(&review("u-plain", "plain", &shop_pod())),
        )
        .await;
    assert_eq!(
        reply.json()["response"]["auditAnnotations"]["skip-reason"],
        "namespace-not-enabled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_annotation_refuses_the_pod_with_a_message_naming_it() {
    let webhook = webhook().await;
    let mut pod = shop_pod();
    pod["metadata"]["annotations"]["trellis.io/skip-outbound-ports"] = json!("70000");
    let reply = webhook
        .client(&[b"h2"])
        .post("/inject", body(&review("u-bad", "shop", &pod)))
        .await;
    assert_eq!(
        reply.status, 200,
        "a refusal is an answer, not an HTTP error"
    );
    let response = &reply.json()["response"];
    assert_eq!(response["uid"], "u-bad");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(
        message.contains("trellis.io/skip-outbound-ports") && message.contains("70000"),
        "{message}"
    );
    assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    assert_eq!(
        webhook
            .counter("injector_admissions_total{outcome=\"rejected\",reason=\"\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_clear_http_error_and_the_server_carries_on() {
    let webhook = webhook().await;
    let client = webhook.client(&[b"http/1.1"]);
    let mut deployment = review("u-dep", "shop", &shop_pod());
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let mut no_object = review("u-none", "shop", &shop_pod());
    no_object["request"]["object"] = Value::Null;
    let cases: [(Vec<u8>, &str); 6] = [
        (b"{\"kind\": ".to_vec(), "not JSON"),
        (b"kind: AdmissionReview".to_vec(), "not JSON"),
        (
            body(
                &json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}}),
            ),
            "admission.k8s.io/v1beta1",
        ),
        (
            body(&json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"})),
            "no request",
        ),
        (body(&deployment), "apps/v1 Deployment, not a v1 Pod"),
        (body(&no_object), "object is missing"),
    ];
    for (request, expected) in &cases {
        let reply = client.post("/inject", request.clone()).await;
        assert_eq!(reply.status, 400, "{expected}: {}", reply.text());
        assert!(
            reply.content_type.starts_with("text/plain"),
            "{}",
            reply.content_type
        );
        assert!(
            reply.text().contains(expected),
            "{:?} lacks {expected:?}",
            reply.text()
        );
    }

    let too_big = vec![b' '; trellis_injector::server::MAX_REVIEW_BYTES + 1];
    // Over HTTP/2, where the early answer cannot be lost to a reset connection while
    // the rest of the body is still on its way.
    let h2 = webhook.client(&[b"h2"]);
    assert_eq!(h2.post("/inject", too_big).await.status, 413);
    assert_eq!(client.get("/inject").await.status, 405);
    assert_eq!(client.get("/inject-opt-in").await.status, 405);
    assert_eq!(client.post("/live", Vec::new()).await.status, 405);
    assert_eq!(client.get("/mutate").await.status, 404);

    // Still answering, and counted.
    let reply = client
        .post("/inject", body(&review("u-ok", "shop", &shop_pod())))
        .await;
    assert_eq!(reply.json()["response"]["allowed"], true);
    assert_eq!(client.get("/live").await.status, 200);
    assert_eq!(client.get("/ready").await.status, 200);
    let errors = webhook
        .counter("injector_admissions_total{outcome=\"error\",reason=\"\"}")
        .await;
    assert_eq!(
        errors,
        cases.len() as f64 + 1.0,
        "every malformed review and the oversized one"
    );
}

/// Waits until a new handshake presents `expected`.
async fn until_served(webhook: &Running, expected: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = webhook.client(&[b"h2"]).get("/live").await;
        if reply.leaf == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_counted(webhook: &Running, series: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while webhook.counter(series).await != expected {
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_new_connections_and_a_bad_one_never_does() {
    let webhook = webhook().await;
    let loaded = "injector_certificate_reloads_total{result=\"loaded\"}";
    let refused = "injector_certificate_reloads_total{result=\"refused\"}";

    let renewed = webhook.ca.leaf();
    write_leaf(&webhook.cert_path, &webhook.key_path, &renewed);
    until_served(&webhook, &renewed.cert_der).await;
    until_counted(&webhook, loaded, 1.0).await;

    // Not a certificate at all: refused, the renewed one stays.
    std::fs::write(
        &webhook.cert_path,
        "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    until_counted(&webhook, refused, 1.0).await;
    assert_eq!(
        webhook.client(&[b"h2"]).get("/live").await.leaf,
        renewed.cert_der
    );

    // A new certificate whose key has not arrived yet: refused until it does.
    let next = webhook.ca.leaf();
    std::fs::write(&webhook.cert_path, &next.cert_pem).expect("write");
    until_counted(&webhook, refused, 2.0).await;
    assert_eq!(
        webhook.client(&[b"http/1.1"]).get("/live").await.leaf,
        renewed.cert_der
    );
    std::fs::write(&webhook.key_path, &next.key_pem).expect("write");
    until_served(&webhook, &next.cert_der).await;
    until_counted(&webhook, loaded, 2.0).await;

    // Admissions carry on over the new certificate, verified against the same CA.
    let reply = webhook
        .client(&[b"h2"])
        .post("/inject", body(&review("u-after", "shop", &shop_pod())))
        .await;
    assert_eq!(reply.json()["response"]["patchType"], "JSONPatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_cannot_talk_to_the_webhook() {
    let webhook = webhook().await;
    let stranger = harness::TestCa::new();
    let client = harness::Client::trusting(&stranger.pem(), webhook.addr, &[b"h2"]);
    let error = client
        .send("GET", "/live", Vec::new())
        .await
        .err()
        .expect("the handshake fails");
    assert!(format!("{error:#}").contains("handshake"), "{error:#}");
}
