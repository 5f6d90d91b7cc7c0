//! The golden metrics of each request: counted when it arrives, its latency taken
//! when the response headers are ready, and its response counted when the response
//! body ends, so that a gRPC status sent in the trailers is seen.
//!
//! A metric family is a map from label sets to metrics: finding a request's counters
//! there hashes and compares its authority and peer ID, three times per request. A
//! connection's requests nearly always share those labels, so each connection keeps
//! the counters of its last labels ([`Routes`]) and a request that matches them
//! counts with atomic adds alone.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use trellis_identity::SpiffeId;

use super::{Body, BoxError};
use crate::listener::Direction;
use crate::lock;
use crate::metrics::{Metrics, RequestLabels, ResponseLabels};

/// What a request went to, as its `authority` label says it, borrowed from what the
/// proxy already holds so that comparing it with a connection's last costs no
/// formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority<'a> {
    /// A service of the directory, by its `name.namespace.svc.cluster.local:port`.
    Named(&'a str),
    /// A pod's (or, inbound, the app's) address.
    Addr(SocketAddr),
    /// An address outside the mesh: only its port, since there is no bound on
    /// addresses.
    Passthrough(u16),
}

impl fmt::Display for Authority<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authority::Named(name) => f.write_str(name),
            Authority::Addr(addr) => addr.fmt(f),
            Authority::Passthrough(port) => write!(f, "passthrough:{port}"),
        }
    }
}

/// What a [`Route`] compares a request's [`Authority`] with, besides its label: a
/// service's name is the label itself.
#[derive(Debug, PartialEq, Eq)]
enum AuthorityKey {
    Named,
    Addr(SocketAddr),
    Passthrough(u16),
}

impl AuthorityKey {
    fn of(authority: Authority<'_>) -> Self {
        match authority {
            Authority::Named(_) => AuthorityKey::Named,
            Authority::Addr(addr) => AuthorityKey::Addr(addr),
            Authority::Passthrough(port) => AuthorityKey::Passthrough(port),
        }
    }
}

/// The metrics of one connection's requests: those of the labels its last request
/// had, found in the families only when a request's labels differ.
pub struct Routes {
    metrics: Arc<Metrics>,
    direction: Direction,
    last: Mutex<Option<Arc<Route>>>,
}

impl Routes {
    pub fn new(metrics: Arc<Metrics>, direction: Direction) -> Self {
        Routes {
            metrics,
            direction,
            last: Mutex::new(None),
        }
    }

    /// The metrics of requests to `authority` from or to `peer`.
    pub fn route(&self, authority: Authority<'_>, peer: Option<&SpiffeId>) -> Arc<Route> {
        let peer_id = peer.map_or("", SpiffeId::as_str);
        // Requests of one connection share a worker thread: the lock never waits.
        let mut last = lock(&self.last);
        if let Some(route) = last.as_ref()
            && route.serves(authority, peer_id)
        {
            return route.clone();
        }
        let route = Arc::new(Route::new(
            &self.metrics,
            RequestLabels {
                direction: self.direction.as_str(),
                authority: authority.to_string(),
                peer_id: peer_id.to_owned(),
            },
            AuthorityKey::of(authority),
        ));
        *last = Some(route.clone());
        route
    }
}

/// One label set's request counter and latency histogram, and its response counters
/// by status as they are first needed.
pub struct Route {
    metrics: Arc<Metrics>,
    authority: AuthorityKey,
    labels: RequestLabels,
    requests: Counter,
    latency: Histogram,
    /// At most 5 status classes × 18 gRPC statuses (none, 0–16).
    responses: Mutex<Vec<(&'static str, Option<u8>, Counter)>>,
}

impl Route {
    fn new(metrics: &Arc<Metrics>, labels: RequestLabels, authority: AuthorityKey) -> Self {
        Route {
            requests: metrics.requests.get_or_create(&labels).clone(),
            latency: metrics.response_latency.get_or_create(&labels).clone(),
            metrics: metrics.clone(),
            authority,
            labels,
            responses: Mutex::new(Vec::new()),
        }
    }

    /// Whether requests to `authority` from or to `peer_id` count here.
    fn serves(&self, authority: Authority<'_>, peer_id: &str) -> bool {
        let same_authority = match (&self.authority, authority) {
            (AuthorityKey::Named, Authority::Named(name)) => self.labels.authority == name,
            (AuthorityKey::Addr(mine), Authority::Addr(addr)) => *mine == addr,
            (AuthorityKey::Passthrough(mine), Authority::Passthrough(port)) => *mine == port,
            _ => false,
        };
        same_authority && self.labels.peer_id == peer_id
    }

    fn responded(&self, status_class: &'static str, grpc_status: Option<u8>) {
        let mut responses = lock(&self.responses);
        if let Some((_, _, counter)) = responses
            .iter()
            .find(|(class, grpc, _)| *class == status_class && *grpc == grpc_status)
        {
            counter.inc();
            return;
        }
        let labels = ResponseLabels {
            direction: self.labels.direction,
            authority: self.labels.authority.clone(),
            peer_id: self.labels.peer_id.clone(),
            status_class,
            grpc_status: grpc_status.map(|code| code.to_string()).unwrap_or_default(),
        };
        let counter = self.metrics.responses.get_or_create(&labels).clone();
        counter.inc();
        responses.push((status_class, grpc_status, counter));
    }
}

/// One request being observed, from its arrival to the end of its response.
pub struct Observer {
    route: Arc<Route>,
    started: Instant,
}

impl Observer {
    /// Counts a request, which arrived at `started`, on `route`.
    pub fn start(route: Arc<Route>, started: Instant) -> Observer {
        route.requests.inc();
        Observer { route, started }
    }

    /// Records the latency to `response`'s headers, and returns it with a body that
    /// counts the response when it ends.
    pub fn respond(self, response: Response<Body>) -> Response<Body> {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.route.latency.observe(elapsed_ms);
        let status_class = match response.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let grpc_status = grpc_status(response.headers());
        let (parts, body) = response.into_parts();
        let observed = Observed {
            inner: body,
            counted: false,
            route: self.route,
            status_class,
            grpc_status,
        };
        Response::from_parts(parts, super::boxed(observed))
    }
}

/// A response body that counts its response once, when it ends, fails or is dropped.
struct Observed {
    inner: Body,
    counted: bool,
    route: Arc<Route>,
    status_class: &'static str,
    grpc_status: Option<u8>,
}

impl Observed {
    fn record(&mut self) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        self.route.responded(self.status_class, self.grpc_status);
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(grpc_status) {
                    this.grpc_status = Some(status);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.record(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.record();
    }
}

/// The `grpc-status` of a header or trailer block, if it is a known code (so the label
/// stays bounded whatever a server sends).
fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|code| *code <= 16)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    const WEB: &str = "web.shop.svc.cluster.local:80";

    fn id(service_account: &str) -> SpiffeId {
        SpiffeId::for_service_account("cluster.local", "shop", service_account).unwrap()
    }

    /// The value of the sample of `metrics` whose name and labels are `sample`.
    fn sample(metrics: &Metrics, sample: &str) -> Option<f64> {
        let text = metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// Serves one request on `route` with `response`, and reads its body to the end.
    async fn exchange(route: Arc<Route>, response: Response<Body>) {
        let response = Observer::start(route, Instant::now()).respond(response);
        response.into_body().collect().await.unwrap();
    }

    fn ok() -> Response<Body> {
        Response::new(super::super::empty())
    }

    #[tokio::test]
    async fn a_connections_requests_with_the_same_labels_count_on_one_route() {
        let metrics = Arc::new(Metrics::new());
        let routes = Routes::new(metrics.clone(), Direction::Outbound);
        let peer = id("web");
        let first = routes.route(Authority::Named(WEB), Some(&peer));
        let second = routes.route(Authority::Named(WEB), Some(&peer));
        assert!(Arc::ptr_eq(&first, &second));
        exchange(first, ok()).await;
        exchange(second, ok()).await;
        // Another service over the same connection (the directory changed) is not
        // this route.
        const API: &str = "api.shop.svc.cluster.local:80";
        exchange(routes.route(Authority::Named(API), Some(&peer)), ok()).await;
        assert_eq!(
            sample(
                &metrics,
                &format!(
                    r#"request_total{{direction="outbound",authority="{API}",peer_id="spiffe://cluster.local/ns/shop/sa/web"}}"#
                )
            ),
            Some(1.0)
        );

        let labels = format!(
            r#"direction="outbound",authority="{WEB}",peer_id="spiffe://cluster.local/ns/shop/sa/web""#
        );
        assert_eq!(
            sample(&metrics, &format!("request_total{{{labels}}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &metrics,
                &format!(r#"response_total{{{labels},status_class="2xx",grpc_status=""}}"#)
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&metrics, &format!("response_latency_ms_count{{{labels}}}")),
            Some(2.0)
        );
    }

    #[tokio::test]
    async fn a_request_with_other_labels_counts_under_its_own_and_the_first_keep_theirs() {
        let metrics = Arc::new(Metrics::new());
        let routes = Routes::new(metrics.clone(), Direction::Inbound);
        let app: SocketAddr = "10.1.0.7:8080".parse().unwrap();
        let (web, api) = (id("web"), id("api"));
        for peer in [&web, &api, &web, &web] {
            exchange(routes.route(Authority::Addr(app), Some(peer)), ok()).await;
        }
        exchange(routes.route(Authority::Addr(app), None), ok()).await;
        exchange(routes.route(Authority::Passthrough(8080), None), ok()).await;

        let request = |peer: &str| {
            sample(
                &metrics,
                &format!(
                    r#"request_total{{direction="inbound",authority="{app}",peer_id="{peer}"}}"#
                ),
            )
        };
        assert_eq!(request("spiffe://cluster.local/ns/shop/sa/web"), Some(3.0));
        assert_eq!(request("spiffe://cluster.local/ns/shop/sa/api"), Some(1.0));
        assert_eq!(request(""), Some(1.0));
        assert_eq!(
            sample(
                &metrics,
                r#"request_total{direction="inbound",authority="passthrough:8080",peer_id=""}"#
            ),
            Some(1.0)
        );
    }

    #[tokio::test]
    async fn responses_count_by_status_class_and_the_grpc_status_of_their_trailers() {
        let metrics = Arc::new(Metrics::new());
        let routes = Routes::new(metrics.clone(), Direction::Outbound);
        let route = || routes.route(Authority::Named(WEB), None);
        let status = |code: u16| {
            let mut response = ok();
            *response.status_mut() = http::StatusCode::from_u16(code).unwrap();
            response
        };
        let grpc = |trailer: &'static str| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static(trailer));
            let body = http_body_util::Empty::<Bytes>::new()
                .with_trailers(std::future::ready(Some(Ok(trailers))));
            Response::new(super::super::boxed(body))
        };
        for response in [
            status(200),
            status(503),
            status(204),
            grpc("14"),
            grpc("99"),
        ] {
            exchange(route(), response).await;
        }

        let response = |class: &str, grpc: &str| {
            sample(
                &metrics,
                &format!(
                    r#"response_total{{direction="outbound",authority="{WEB}",peer_id="",status_class="{class}",grpc_status="{grpc}"}}"#
                ),
            )
        };
        assert_eq!(
            response("2xx", ""),
            Some(3.0),
            "200, 204, and the unknown gRPC 99"
        );
        assert_eq!(response("5xx", ""), Some(1.0));
        assert_eq!(response("2xx", "14"), Some(1.0));
    }
}
