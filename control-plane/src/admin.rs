//! The controller's HTTP admin server (`--admin-addr`, port 9990 by default): what the
//! controller knows about its proxies and sources, for operators and `meshctl`.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once every source has delivered its initial state and the first snapshot is out; 503 before |
//! | `GET /metrics` | Prometheus (OpenMetrics) text |
//! | `GET /proxies` | JSON: every connected proxy, and per type what it was sent, ACKed and NACKed |
//! | `GET /sources` | JSON: every source, its object counts, and what it rejects now (file, line, field) |
//! | `GET /config` | JSON: the effective configuration |
//!
//! It is plain HTTP/1.1, separate from the gRPC port, so that probes and Prometheus
//! need no mesh certificate.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::Model;
use crate::proxies::Proxies;

/// A slow client gets this long to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints report on.
pub struct State {
    pub model: Arc<Model>,
    pub proxies: Arc<Proxies>,
    pub metrics: Arc<Metrics>,
    /// The effective configuration, rendered once at start.
    pub config: serde_json::Value,
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection");
            }
        });
    }
}

/// The answer to one request; a pure function of the state, so tests call it
/// directly.
pub fn respond(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    answer(state, request.method(), request.uri().path())
}

fn answer(state: &State, method: &Method, path: &str) -> Response<Full<Bytes>> {
    const PATHS: [&str; 6] = [
        "/live", "/ready", "/metrics", "/proxies", "/sources", "/config",
    ];
    if *method != Method::GET {
        return if PATHS.contains(&path) {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        } else {
            not_found()
        };
    }
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if state.model.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for every source's initial state\n",
        ),
        "/metrics" => body(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode().into(),
        ),
        "/proxies" => json(&serde_json::json!({ "proxies": state.proxies.list() })),
        "/sources" => json(&serde_json::json!({ "sources": state.model.sources() })),
        "/config" => json(&state.config),
        _ => not_found(),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /live, /ready, /metrics, /proxies, /sources or /config\n",
    )
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => body("application/json", bytes.into()),
        Err(error) => {
            tracing::error!(%error, "cannot encode an admin answer");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the answer\n",
            )
        }
    }
}

fn body(content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut response = body("text/plain", Bytes::from_static(message.as_bytes()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn state() -> State {
        let metrics = Arc::new(Metrics::new());
        State {
            model: Model::new(Duration::from_millis(10), metrics.clone()),
            proxies: Proxies::new(metrics.clone()),
            metrics,
            config: serde_json::json!({ "debounce": "10ms" }),
        }
    }

    async fn get(state: &State, path: &str) -> (StatusCode, String) {
        let response = answer(state, &Method::GET, path);
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_controller_is_ready_once_its_sources_have_synced() {
        let state = state();
        let files = state.model.source("files");
        assert_eq!(
            get(&state, "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&state, "/live").await.0, StatusCode::OK);

        files.synced();
        let shutdown = CancellationToken::new();
        tokio::spawn(state.model.clone().run(shutdown.clone()));
        let mut snapshots = state.model.subscribe();
        snapshots.wait_for(Option::is_some).await.unwrap();
        assert_eq!(
            get(&state, "/ready").await,
            (StatusCode::OK, "ready\n".into())
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn every_endpoint_answers_in_its_format() {
        let state = state();
        let _files = state.model.source("files");
        let (status, sources) = get(&state, "/sources").await;
        assert_eq!(status, StatusCode::OK);
        let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
        assert_eq!(sources["sources"][0]["name"], "files");
        assert_eq!(sources["sources"][0]["synced"], false);

        let (_, proxies) = get(&state, "/proxies").await;
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&proxies).unwrap()["proxies"],
            serde_json::json!([])
        );
        let (_, config) = get(&state, "/config").await;
        assert!(config.contains("\"debounce\": \"10ms\""), "{config}");
        let (_, metrics) = get(&state, "/metrics").await;
        assert!(
            metrics.contains("discovery_connected_proxies 0"),
            "{metrics}"
        );

        assert_eq!(get(&state, "/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            answer(&state, &Method::POST, "/proxies").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
