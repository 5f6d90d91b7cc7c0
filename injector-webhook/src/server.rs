//! The admission webhook: HTTPS around [`crate::inject`].
//!
//! The API server posts an AdmissionReview for every pod created in a meshed namespace
//! to `POST /inject`, and for every pod that opts in from an unlabelled namespace to
//! `POST /inject-opt-in` ([`Route`]), over TLS it verifies against the webhook
//! configuration's `caBundle`, speaking HTTP/2 or HTTP/1.1 (chosen by ALPN). The
//! answer carries the same `uid` and either the patch (base64 JSON Patch), nothing (a
//! skip, with its reason as an audit annotation), or a refusal naming the bad
//! annotation or label. Beside it are `GET /live`, `/ready`, `/metrics` and `/config`
//! (the effective mesh config), on the same port, so the kubelet's probes prove the
//! TLS path the API server uses.
//!
//! [`serve`] takes an already bound listener, so tests bind `127.0.0.1:0`; everything
//! it serves from is a [`Webhook`].
//!
//! # Layout
//! - `server.rs`: accepting, TLS, HTTP, and the routes.
//! - `review.rs`: reading a review and writing its answer (pure, unit-tested).
//! - `route.rs`: what each path says about the pod's namespace.
//! - `certs.rs`: the serving certificate, reloaded when its files change.
//! - `metrics.rs`: the counters on `/metrics`.

pub mod certs;
pub mod metrics;
pub mod review;
pub mod route;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use self::certs::ServingCert;
pub use self::metrics::Metrics;
pub use self::review::{Decision, MAX_REVIEW_BYTES, SKIP_REASON_AUDIT_KEY};
pub use self::route::{Labels, Route};

use crate::{MeshConfig, Outcome, Request as InjectRequest, inject};

/// The skip label of a review that is not a pod's creation (an update, a
/// subresource): the webhook is registered for creations only, and anything else is
/// allowed untouched rather than refused.
pub const NOT_A_CREATION: &str = "not-a-creation";

/// How long a client may take to finish the TLS handshake or send a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the webhook serves from.
pub struct Webhook {
    /// The mesh config every pod is injected with.
    pub mesh: MeshConfig,
    /// The serving certificate in force (its loading is what makes `/ready` possible).
    pub cert: Arc<ServingCert>,
    /// The counters on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled to stop: `/ready` fails at once, live connections finish their
    /// requests, no new ones are accepted.
    pub shutdown: CancellationToken,
}

/// Serves HTTPS on `listener` until the webhook's shutdown.
pub async fn serve(listener: TcpListener, webhook: Arc<Webhook>) -> Result<(), rustls::Error> {
    let acceptor = TlsAcceptor::from(Arc::new(webhook.cert.server_config()?));
    let ids = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            () = webhook.shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, src) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", id, %src);
        let connection = connect(stream, src, acceptor.clone(), webhook.clone());
        tokio::spawn(connection.instrument(span));
    }
}

/// One connection: the handshake, then HTTP/2 or HTTP/1.1 as ALPN chose.
async fn connect(stream: TcpStream, src: SocketAddr, acceptor: TlsAcceptor, webhook: Arc<Webhook>) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let mut http = auto::Builder::new(TokioExecutor::new());
    let protocol = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => {
            http = http.http2_only();
            "h2"
        }
        _ => {
            http.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            http = http.http1_only();
            "http/1.1"
        }
    };
    tracing::debug!(protocol, %src, "connection accepted");
    let shutdown = webhook.shutdown.clone();
    // HTTP/2 runs each stream as a task of its own: the connection's span is passed on
    // so that every request's logs still carry the connection's id.
    let span = tracing::Span::current();
    let service = service_fn(move |req| {
        let webhook = webhook.clone();
        async move { Ok::<_, Infallible>(respond(&webhook, req).await) }.instrument(span.clone())
    });
    let connection = http.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

async fn respond(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(route) = Route::from_path(path) {
        return if req.method() == Method::POST {
            admit(webhook, route, req).await
        } else {
            allow(text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"), "POST")
        };
    }
    match (req.method(), path) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => match readiness(webhook) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        (&Method::GET, "/metrics") => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            webhook.metrics.encode().into(),
        ),
        (&Method::GET, "/config") => {
            let body = serde_json::to_vec_pretty(&serde_json::json!({"mesh": webhook.mesh}))
                .unwrap_or_default();
            with_type(StatusCode::OK, "application/json", body.into())
        }
        (_, "/live" | "/ready" | "/metrics" | "/config") => {
            allow(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"), "GET")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try POST /inject or /inject-opt-in, or GET /live, /ready, /metrics, /config\n",
        ),
    }
}

/// Ready means an admission would be answered now: a certificate is in force (loaded
/// before serving began) and no shutdown has begun.
fn readiness(webhook: &Webhook) -> Result<(), &'static str> {
    if webhook.shutdown.is_cancelled() {
        return Err("not ready: shutting down\n");
    }
    Ok(())
}

/// `POST /inject` or `/inject-opt-in`: one review, one answer.
async fn admit(webhook: &Webhook, route: Route, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REVIEW_BYTES as u64) {
        return too_large(webhook);
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return too_large(webhook),
        Err(error) => {
            webhook.metrics.admitted("error", "");
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {error}\n"),
            );
        }
    };
    let review = match review::read(&body) {
        Ok(review) => review,
        Err(malformed) => {
            webhook.metrics.admitted("error", "");
            tracing::warn!(error = %malformed, "malformed admission review");
            return text(StatusCode::BAD_REQUEST, format!("{malformed}\n"));
        }
    };
    let decision = decide(webhook, route, &review);
    let (outcome, reason) = decision.labels();
    webhook.metrics.admitted(outcome, reason);
    let message = match &decision {
        Decision::Reject(message) => Some(message.as_str()),
        _ => None,
    };
    tracing::info!(
        uid = %review.uid,
        namespace = %review.namespace,
        pod = %review.name,
        path = route.path(),
        dry_run = review.dry_run,
        outcome,
        reason,
        message,
        elapsed_us = started.elapsed().as_micros() as u64,
        "admission"
    );
    let answer = review::answer(&review.uid, &decision);
    with_type(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&answer).unwrap_or_default().into(),
    )
}

/// What to answer for a readable review.
fn decide(webhook: &Webhook, route: Route, review: &review::PodReview) -> Decision {
    if !review.is_create {
        return Decision::Skip {
            label: NOT_A_CREATION,
        };
    }
    let labels = route.namespace_labels();
    let request = InjectRequest::Admission {
        namespace: &review.namespace,
        namespace_labels: &labels,
    };
    match inject(&review.pod, &request, &webhook.mesh) {
        Ok(Outcome::Injected { patch, .. }) => Decision::Inject(patch),
        Ok(Outcome::Skipped(reason)) => Decision::Skip {
            label: reason.label(),
        },
        Err(rejection) => Decision::Reject(format!("trellis injector: {rejection}")),
    }
}

fn too_large(webhook: &Webhook) -> Response<Full<Bytes>> {
    webhook.metrics.admitted("error", "");
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("an admission review is at most {MAX_REVIEW_BYTES} bytes\n"),
    )
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn allow(mut response: Response<Full<Bytes>>, methods: &'static str) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(methods));
    response
}
