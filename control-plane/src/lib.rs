//! The Trellis controller: the mesh's certificate authority, its identity service, and
//! its discovery service, which pushes services, endpoints, routes and authorization
//! policies from the sources of truth to every proxy.
//!
//! A sidecar proxy makes its own key pair, sends a CSR with its ServiceAccount token,
//! and gets back a short-lived ECDSA P-256 certificate whose only URI SAN is its
//! SPIFFE ID, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. The ID
//! comes from the verified token, never from the CSR. The controller serves this over
//! TLS with a certificate its own issuer signs, so proxies trust it through the same
//! anchors they use for each other.
//!
//! On the same port, each proxy opens one discovery stream and subscribes to the four
//! resource types. The sources (a directory of YAML files, the Kubernetes API) feed
//! one model, which publishes a versioned snapshot after each settled burst of changes;
//! every stream sends what changed and records the proxy's ACKs and NACKs, which the
//! admin port shows.
//!
//! # Layout
//! - `config.rs`: the typed [`Config`] (flags live only in `main.rs`).
//! - `ca.rs`: loading the trust anchors and the issuer, signing leaves; `ca/dev.rs`
//!   generates a development CA for `--dev-ca`.
//! - `token.rs`: ServiceAccount token authentication, against a JWKS or
//!   (`token/review.rs`) by TokenReview; `token/mint.rs` makes such tokens for places
//!   that play the API server (`meshctl local`, tests).
//! - `csr.rs`: what a CSR must be before its key is certified.
//! - `identity_service.rs`: the `trellis.identity.v1.Identity` gRPC service.
//! - `model.rs`: the objects, their validation, and the snapshots (`model/`).
//! - `source.rs`: the seam sources push objects through; `source/files.rs` is the
//!   file source, `source/kubernetes.rs` the Kubernetes source.
//! - `crd.rs`: the `Route` and `AuthorizationPolicy` custom resources, whose spec
//!   types both sources read, and their generated definitions.
//! - `discovery.rs`: the `trellis.discovery.v1.Discovery` gRPC service;
//!   `discovery/subscriptions.rs` holds the protocol's rules.
//! - `proxies.rs`: the registry of connected proxies and what they ACKed and NACKed.
//! - `admin.rs`, `metrics.rs`: the HTTP admin server and its Prometheus metrics.
//! - `server.rs`: TLS and tonic on a bound listener; the controller's serving
//!   certificate.
//! - `error.rs`: start-up errors, per-request refusals with their gRPC codes, and why
//!   an object is invalid.

pub mod admin;
pub mod ca;
pub mod config;
pub mod crd;
pub mod csr;
pub mod discovery;
mod error;
pub mod identity_service;
pub mod metrics;
pub mod model;
pub mod proxies;
pub mod server;
pub mod source;
pub mod token;

#[cfg(test)]
mod fixtures;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use ca::Ca;
pub use config::{CaSource, Config, LogFormat, TokenAuth};
pub use discovery::DiscoveryService;
pub use error::{CsrError, Error, Invalid, Refusal, TokenError};
pub use identity_service::IdentityService;
pub use metrics::Metrics;
pub use model::Model;
pub use proxies::Proxies;
pub use source::Source;
pub use source::files::FileSource;
pub use source::kubernetes::KubernetesSource;
pub use token::review::TokenReviewer;
pub use token::{TokenAuthenticator, TokenVerifier};

/// The listeners the controller serves on, bound by the caller (to `config.listen`
/// and `config.admin_addr`, or to any address in tests).
pub struct Listeners {
    /// gRPC over TLS: identity and discovery.
    pub grpc: TcpListener,
    /// HTTP: `/proxies`, `/sources`, `/metrics`, `/ready`, `/live`, `/config`.
    pub admin: TcpListener,
}

/// Runs the controller on `listeners` until `shutdown` completes.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    let ca = Arc::new(match &config.ca {
        CaSource::Dev(dir) => ca::dev::load_or_generate(dir)?,
        CaSource::Files {
            trust_anchors,
            issuer_cert,
            issuer_key,
        } => Ca::from_files(trust_anchors, issuer_cert, issuer_key)?,
    });
    let client = kubernetes_client(config).await?;
    let tokens = Arc::new(match (&config.token_auth, &client) {
        (TokenAuth::Jwks(path), _) => {
            TokenAuthenticator::Jwks(TokenVerifier::from_jwks_file(path, &config.token_audience)?)
        }
        (TokenAuth::TokenReview, Some(client)) => TokenAuthenticator::TokenReview(
            TokenReviewer::new(client.clone(), &config.token_audience),
        ),
        // `kubernetes_client` makes one whenever token review is asked for.
        (TokenAuth::TokenReview, None) => {
            return Err(Error::InvalidFlag {
                flag: "token-review",
                value: "true".into(),
                reason: "no Kubernetes client was made for it".into(),
            });
        }
    });
    let controller_id = server::controller_identity(&config.trust_domain)?;
    let serving = server::ServingCert::new(ca.clone(), controller_id, config.cert_lifetime)?;
    let tls = Arc::new(server::tls_config(Arc::new(serving))?);
    let identity = IdentityService::new(ca, tokens, &config.trust_domain, config.cert_lifetime);

    // Everything below stops on `stop`: the servers' own tasks, and every discovery
    // stream, which tonic would otherwise wait for forever.
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let metrics = Arc::new(Metrics::new());
    let model = Model::new(config.debounce, metrics.clone());
    if let Some(dir) = &config.config_dir {
        let source = model.source(source::files::SOURCE_NAME);
        let files = FileSource::open(dir, source, config.debounce)?;
        tracing::info!(dir = %dir.display(), "watching the config directory");
        tasks.spawn(files.run(stop.clone()));
    }
    // Registered after the file source, whose objects win a name both define: an
    // operator's local file overrides the cluster.
    if config.kubernetes
        && let Some(client) = client
    {
        let source = model.source(source::kubernetes::SOURCE_NAME);
        let kubernetes = KubernetesSource::new(source, &config.trust_domain);
        tracing::info!(
            "watching the cluster's services, endpoint slices, pods, routes and policies"
        );
        tasks.spawn(kubernetes.run(client, stop.clone()));
    }
    tasks.spawn(model.clone().run(stop.clone()));
    let proxies = Proxies::new(metrics.clone());
    let discovery = DiscoveryService::new(model.subscribe(), proxies.clone(), stop.clone());
    let admin = Arc::new(admin::State {
        model,
        proxies,
        metrics,
        config: config.effective(),
    });
    tracing::info!(
        listen = listeners.grpc.local_addr().ok().map(tracing::field::display),
        admin = listeners.admin.local_addr().ok().map(tracing::field::display),
        trust_domain = %config.trust_domain,
        token_audience = %config.token_audience,
        token_review = matches!(config.token_auth, TokenAuth::TokenReview),
        cert_lifetime = %humantime::format_duration(config.cert_lifetime),
        debounce = %humantime::format_duration(config.debounce),
        "serving the identity and discovery services"
    );
    tasks.spawn(admin::serve(listeners.admin, admin, stop.clone()));

    let routes = Routes::new(identity.into_server()).add_service(discovery.into_server());
    let served = server::serve(listeners.grpc, tls, routes, async {
        shutdown.await;
        stop.cancel();
    })
    .await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    served
}

/// The client for the cluster the controller runs in (or the current kubeconfig's),
/// when a flag needs one.
async fn kubernetes_client(config: &Config) -> Result<Option<kube::Client>, Error> {
    let flag = match (config.kubernetes, &config.token_auth) {
        (true, _) => "kubernetes",
        (false, TokenAuth::TokenReview) => "token-review",
        (false, TokenAuth::Jwks(_)) => return Ok(None),
    };
    kube::Client::try_default()
        .await
        .map(Some)
        .map_err(|error| Error::KubernetesClient {
            flag,
            error: Box::new(error),
        })
}
