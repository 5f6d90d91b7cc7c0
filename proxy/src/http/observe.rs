//! The golden metrics of each request: counted when it arrives, its latency taken
//! when the response headers are ready, and its response counted when the response
//! body ends, so that a gRPC status sent in the trailers is seen.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Frame, SizeHint};

use super::{Body, BoxError};
use crate::listener::Direction;
use crate::metrics::{Metrics, RequestLabels, ResponseLabels};

/// One request being observed, from its arrival to the end of its response.
pub struct Observer {
    metrics: Arc<Metrics>,
    labels: RequestLabels,
    started: Instant,
}

impl Observer {
    /// Counts a request, which arrived at `started`, to `authority` (bounded: a
    /// service or an address the directory knows, never a Host header) from or to
    /// `peer_id`.
    pub fn start(
        metrics: Arc<Metrics>,
        direction: Direction,
        started: Instant,
        authority: String,
        peer_id: String,
    ) -> Observer {
        let labels = RequestLabels {
            direction: direction.as_str(),
            authority,
            peer_id,
        };
        metrics.requests.get_or_create(&labels).inc();
        Observer {
            metrics,
            labels,
            started,
        }
    }

    /// Records the latency to `response`'s headers, and returns it with a body that
    /// counts the response when it ends.
    pub fn respond(self, response: Response<Body>) -> Response<Body> {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.metrics
            .response_latency
            .get_or_create(&self.labels)
            .observe(elapsed_ms);
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
            metrics: self.metrics,
            labels: self.labels,
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
    metrics: Arc<Metrics>,
    labels: RequestLabels,
    status_class: &'static str,
    grpc_status: String,
}

impl Observed {
    fn record(&mut self) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        let labels = ResponseLabels {
            direction: self.labels.direction,
            authority: std::mem::take(&mut self.labels.authority),
            peer_id: std::mem::take(&mut self.labels.peer_id),
            status_class: self.status_class,
            grpc_status: std::mem::take(&mut self.grpc_status),
        };
        self.metrics.responses.get_or_create(&labels).inc();
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
                if let Some(trailers) = frame.trailers_ref() {
                    let status = grpc_status(trailers);
                    if !status.is_empty() {
                        this.grpc_status = status;
                    }
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

/// The `grpc-status` of a header or trailer block, if it is a small number; empty
/// otherwise (so the label stays bounded whatever a server sends).
fn grpc_status(headers: &HeaderMap) -> String {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|code| *code <= 16)
        .map(|code| code.to_string())
        .unwrap_or_default()
}
