//! TokenReview through the real kube client, against a real HTTPS server on
//! 127.0.0.1 that plays the API server: a self-signed certificate the client is
//! told to trust, the controller's bearer token checked on every request, and
//! TokenReview answers shaped exactly as kube-apiserver serves them.

use hyper::StatusCode;
use rcgen::KeyPair;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::Code;

use super::*;
use crate::fixtures::AUDIENCE;
use crate::fixtures::api_server::{Answer, ApiServer, CONTROLLER_TOKEN, status_failure};
use crate::token::TokenAuthenticator;

/// An API server that reviews tokens as [`review`] does.
async fn reviewing() -> ApiServer {
    ApiServer::start(|seen| Answer::Json(StatusCode::CREATED, review(&seen.body))).await
}

/// An API server refusing the controller, which lacks RBAC for tokenreviews.
async fn forbidding() -> ApiServer {
    ApiServer::start(|_| {
        Answer::Json(
            StatusCode::FORBIDDEN,
            status_failure(
                403,
                "Forbidden",
                "tokenreviews.authentication.k8s.io is forbidden: User \
                 \"system:serviceaccount:trellis-system:trellis-controller\" cannot create \
                 resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the \
                 cluster scope",
            ),
        )
    })
    .await
}

fn reviewer(api: &ApiServer) -> TokenReviewer {
    TokenReviewer::new(api.client(), AUDIENCE)
}

/// The API server's answer to a TokenReview: the review echoed, with a status that
/// depends on the token.
fn review(request: &Value) -> Value {
    let spec = &request["spec"];
    let status = match spec["token"].as_str().unwrap_or_default() {
        "checkout-token" => json!({
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:shop:checkout",
                "uid": "0c8f9b3e-5b0d-4c1e-8f59-8f3a2e0f6a11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=5b8f2c59-0f3e-4a8e-b7a4-3c1d2e4f5a6b"],
                    "authentication.kubernetes.io/node-name": ["kind-worker"],
                    "authentication.kubernetes.io/node-uid": ["2d6c3c0e-9f4b-4f7e-a1de-4b5a6c7d8e9f"],
                    "authentication.kubernetes.io/pod-name": ["checkout-7d9f-abcde"],
                    "authentication.kubernetes.io/pod-uid": ["6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]
                }
            },
            "audiences": spec["audiences"],
        }),
        // A legacy token: valid for the API server's audience only, so the
        // authenticator answers without ours.
        "legacy-secret-token" => json!({
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:shop:checkout",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
            },
        }),
        "kubelet-token" => json!({
            "authenticated": true,
            "user": {"username": "system:node:kind-worker", "groups": ["system:nodes", "system:authenticated"]},
            "audiences": spec["audiences"],
        }),
        "expired-token" => json!({
            "user": {},
            "error": "[invalid bearer token, service account token has expired]",
        }),
        _ => json!({
            "user": {},
            "error": "[invalid bearer token, token audiences [\"https://kubernetes.default.svc.cluster.local\"] is invalid for the target audiences [\"identity.trellis.io\"]]",
        }),
    };
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    })
}

fn checkout() -> ServiceAccount {
    ServiceAccount {
        namespace: "shop".into(),
        name: "checkout".into(),
        pod: Some("checkout-7d9f-abcde".into()),
    }
}

#[tokio::test]
async fn the_api_server_vouches_for_a_service_accounts_token() {
    let api = reviewing().await;
    let account = reviewer(&api).review("checkout-token").await.unwrap();
    assert_eq!(account, checkout());

    let seen = api.seen();
    assert_eq!(seen.len(), 1, "one review per token: {seen:?}");
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(request.authorization, format!("Bearer {CONTROLLER_TOKEN}"));
    assert_eq!(request.content_type, "application/json");
    assert_eq!(request.body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(request.body["kind"], "TokenReview");
    assert_eq!(request.body["spec"]["token"], "checkout-token");
    assert_eq!(request.body["spec"]["audiences"], json!([AUDIENCE]));
}

#[tokio::test]
async fn tokens_the_api_server_does_not_authenticate_are_refused_as_unauthenticated() {
    let api = reviewing().await;
    let reviewer = reviewer(&api);
    let refusal = |token: &'static str| {
        let reviewer = &reviewer;
        async move { reviewer.review(token).await.unwrap_err() }
    };

    let expired = refusal("expired-token").await;
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(
        expired
            .to_string()
            .contains("service account token has expired"),
        "the API server's reason is passed on: {expired}"
    );
    assert_eq!(expired.reason(), "token_not_authenticated");

    let foreign = refusal("token-for-another-audience").await;
    assert_eq!(foreign.code(), Code::Unauthenticated);
    assert!(
        foreign
            .to_string()
            .contains("is invalid for the target audiences"),
        "{foreign}"
    );

    // Authenticated, but the answer does not say it is valid for our audience.
    assert!(matches!(
        refusal("legacy-secret-token").await,
        Refusal::Token(TokenError::WrongAudience(audience)) if audience == AUDIENCE
    ));
    assert!(matches!(
        refusal("kubelet-token").await,
        Refusal::Token(TokenError::NotServiceAccount(user)) if user == "system:node:kind-worker"
    ));
    assert!(matches!(
        refusal("").await,
        Refusal::Token(TokenError::Missing)
    ));
    let huge = "x".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(
        reviewer.review(&huge).await,
        Err(Refusal::Token(TokenError::Malformed(_)))
    ));
    assert_eq!(
        api.seen().len(),
        4,
        "empty and oversized tokens are never sent"
    );
}

#[tokio::test]
async fn a_controller_without_rbac_for_tokenreviews_is_unavailable_with_a_hint() {
    let api = forbidding().await;
    let refusal = reviewer(&api).review("checkout-token").await.unwrap_err();
    assert_eq!(
        refusal.code(),
        Code::Unavailable,
        "the proxy should retry: {refusal}"
    );
    let logged = refusal.to_string();
    assert!(
        logged.contains("tokenreviews.authentication.k8s.io is forbidden"),
        "{logged}"
    );
    assert!(logged.contains("system:auth-delegator"), "{logged}");
    let status = tonic::Status::from(refusal);
    assert!(
        !status.message().contains("forbidden"),
        "the proxy is not told about the controller's RBAC: {}",
        status.message()
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = kube::Config::new(format!("https://{addr}").parse().unwrap());
    let reviewer = TokenReviewer::new(kube::Client::try_from(config).unwrap(), AUDIENCE);
    let refusal = reviewer.review("checkout-token").await.unwrap_err();
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal}");
    assert_eq!(refusal.reason(), "token_review_unavailable");
}

#[tokio::test]
async fn a_proxy_gets_a_certificate_for_the_identity_the_review_names() {
    use trellis_proto::identity::v1::CertifyRequest;
    use trellis_proto::identity::v1::identity_server::Identity;

    let api = reviewing().await;
    let (_dir, ca) = crate::fixtures::dev_ca();
    let service = crate::IdentityService::new(
        Arc::new(ca),
        Arc::new(TokenAuthenticator::TokenReview(reviewer(&api))),
        crate::fixtures::TRUST_DOMAIN,
        std::time::Duration::from_secs(3600),
    );
    let certify = |token: &str| {
        let request = CertifyRequest {
            csr_der: crate::fixtures::csr(&KeyPair::generate().unwrap(), &[]),
            token: token.into(),
        };
        service.certify(tonic::Request::new(request))
    };
    let issued = certify("checkout-token").await.unwrap().into_inner();
    assert_eq!(issued.spiffe_id, crate::fixtures::CHECKOUT);
    let refused = certify("expired-token").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}
