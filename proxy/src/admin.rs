//! The admin server (port 4191): `/live`, `/ready`, `/metrics`, `/config` (the
//! effective configuration as JSON), and `POST /shutdown`.
//!
//! It is plain HTTP/1.1 on its own port, which proxy-init never redirects, so the
//! kubelet and Prometheus reach it without the mesh.

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trellis_proto::discovery::v1::type_url;

use crate::Config;
use crate::directory::Directory;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// What the admin endpoints report on and act on.
#[derive(Clone)]
pub struct State {
    pub config: Arc<Config>,
    pub identity: Identity,
    pub directory: Arc<ArcSwap<Directory>>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// Serves for as long as the process lives: while connections drain after shutdown
/// began, `/ready` says so and `/metrics` still shows what is left.
pub async fn serve(listener: TcpListener, state: State) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(%error, "admin connection");
            }
        });
    }
}

fn respond(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => match readiness(state) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        (&Method::GET, "/config") => {
            let directory = state.directory.load();
            let view = serde_json::json!({
                "config": state.config.as_ref(),
                "identity": state.identity.current().map(|c| c.id.to_string()),
                "discovery": directory.view(),
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec_pretty(&view).unwrap_or_default(),
                )))
                .unwrap_or_default()
        }
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(state.metrics.encode())))
            .unwrap_or_default(),
        (&Method::POST, "/shutdown") => {
            tracing::info!("shutdown requested on the admin port");
            state.shutdown.cancel();
            text(StatusCode::OK, "shutting down\n")
        }
        (_, "/live" | "/ready" | "/metrics" | "/config") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        (_, "/shutdown") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready, /metrics, /config or POST /shutdown\n",
        ),
    }
}

/// Ready means able to serve mesh traffic correctly: a valid certificate, and a first
/// set of every discovery type (possibly empty), so the proxy never routes on a
/// half-known world.
fn readiness(state: &State) -> Result<(), &'static str> {
    if state.shutdown.is_cancelled() {
        return Err("not ready: shutting down\n");
    }
    if state.identity.current().is_none() {
        return Err("not ready: no workload certificate yet\n");
    }
    if !state.directory.load().resources().has_all(&type_url::ALL) {
        return Err("not ready: no configuration from the controller yet\n");
    }
    Ok(())
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trellis_proto::discovery::v1 as pb;

    use super::*;
    use crate::directory::Resources;
    use crate::identity::tests::TestCa;

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

    fn state(ca: &TestCa) -> State {
        let identity = ca.identity();
        State {
            config: Arc::new(Config::new(
                "127.0.0.1:9".into(),
                "spiffe://cluster.local/ns/trellis-system/sa/trellis-controller"
                    .parse()
                    .unwrap(),
                crate::config::TrustAnchorsSource::Inline(ca.pem()),
                "/nonexistent/token".into(),
            )),
            identity,
            directory: Arc::new(ArcSwap::from_pointee(Directory::default())),
            metrics: Arc::new(Metrics::new()),
            shutdown: CancellationToken::new(),
        }
    }

    /// A directory holding an empty set of each of `types`.
    fn sets_of(types: &[&'static str]) -> Arc<Directory> {
        let mut resources = Resources::default();
        for type_url in types {
            resources.replace(type_url, "v1".into(), Vec::<pb::Resource>::new());
        }
        Arc::new(Directory::build(resources, Default::default()))
    }

    #[test]
    fn ready_waits_for_a_certificate_and_a_first_set_of_every_type() {
        let ca = TestCa::new();
        let state = state(&ca);
        let certify = || ca.certify(WEB, Duration::from_secs(3600));
        assert_eq!(
            readiness(&state),
            Err("not ready: no workload certificate yet\n")
        );

        state.identity.install(certify());
        assert_eq!(
            readiness(&state),
            Err("not ready: no configuration from the controller yet\n")
        );
        // Every type but one is not enough: its set, even an empty one, must come.
        for missing in type_url::ALL {
            let others: Vec<&'static str> = type_url::ALL
                .into_iter()
                .filter(|t| *t != missing)
                .collect();
            state.directory.store(sets_of(&others));
            assert!(readiness(&state).is_err(), "ready without {missing}");
        }
        state.directory.store(sets_of(&type_url::ALL));
        assert_eq!(readiness(&state), Ok(()));

        // A certificate past its end is none.
        state.identity.install(ca.certify(WEB, Duration::ZERO));
        assert_eq!(
            readiness(&state),
            Err("not ready: no workload certificate yet\n")
        );
        state.identity.install(certify());
        assert_eq!(readiness(&state), Ok(()));

        state.shutdown.cancel();
        assert_eq!(readiness(&state), Err("not ready: shutting down\n"));
    }
}
