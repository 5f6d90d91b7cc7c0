//! Failures the proxy answers itself, as statuses the caller can read.
//!
//! An HTTP client gets the status that names the failure (503 nothing to send to,
//! 502 could not reach it, 504 it did not answer in time) with a short text body and
//! the [`PROXY_ERROR`](super::PROXY_ERROR) header, so "the proxy said no" is never
//! confused with "the app said no". A gRPC client cannot read HTTP statuses: it gets
//! a trailers-only response (HTTP 200, `grpc-status`, `grpc-message`) instead.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::{Body, PROXY_ERROR, empty, full};

/// Why the proxy could not get a response from the app it was asked to reach.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no endpoints: {0} has no ready endpoints")]
    NoEndpoints(String),
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("timeout: no response within {0:?}")]
    Timeout(Duration),
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// gRPC status codes the proxy answers with.
const GRPC_DEADLINE_EXCEEDED: u16 = 4;
const GRPC_INTERNAL: u16 = 13;
const GRPC_UNAVAILABLE: u16 = 14;

impl Failure {
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Connect(_) | Failure::Upstream(_) => StatusCode::BAD_GATEWAY,
            Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn grpc_status(&self) -> u16 {
        match self {
            Failure::NoEndpoints(_) | Failure::Connect(_) | Failure::Upstream(_) => {
                GRPC_UNAVAILABLE
            }
            Failure::Timeout(_) => GRPC_DEADLINE_EXCEEDED,
            Failure::BadRequest(_) => GRPC_INTERNAL,
        }
    }

    /// A bounded label for the header, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::NoEndpoints(_) => "no-endpoints",
            Failure::Connect(_) => "connect",
            Failure::Timeout(_) => "timeout",
            Failure::Upstream(_) => "upstream",
            Failure::BadRequest(_) => "bad-request",
        }
    }

    /// The response that reports this failure to a caller that spoke gRPC (`grpc`)
    /// or plain HTTP.
    pub fn respond(&self, grpc: bool) -> Response<Body> {
        let message = format!("trellis-proxy: {self}");
        tracing::info!(kind = self.kind(), %message, "answered by the proxy");
        let mut response = if grpc {
            let mut response = Response::new(empty());
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            if let Ok(value) = HeaderValue::try_from(grpc_percent_encode(&message)) {
                headers.insert("grpc-message", value);
            }
            response
        } else {
            let mut response = Response::new(full(format!("{message}\n")));
            *response.status_mut() = self.status();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        };
        response
            .headers_mut()
            .insert(PROXY_ERROR, HeaderValue::from_static(self.kind()));
        response
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`
/// itself (the gRPC HTTP/2 protocol spec).
fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn http_callers_get_the_status_that_names_the_failure() {
        let cases = [
            (
                Failure::NoEndpoints("shop/web:80".into()),
                503,
                "no-endpoints",
            ),
            (
                Failure::Connect("10.0.0.1:80: refused".into()),
                502,
                "connect",
            ),
            (Failure::Timeout(Duration::from_secs(2)), 504, "timeout"),
            (Failure::Upstream("reset".into()), 502, "upstream"),
        ];
        for (failure, status, kind) in cases {
            let response = failure.respond(false);
            assert_eq!(response.status().as_u16(), status, "{failure}");
            assert_eq!(response.headers()[PROXY_ERROR], kind);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.starts_with("trellis-proxy: "), "{body}");
            assert!(body.contains(&failure.to_string()), "{body}");
        }
    }

    #[test]
    fn grpc_callers_get_trailers_only_with_the_grpc_status() {
        let cases = [
            (Failure::NoEndpoints("shop/web:80".into()), "14"),
            (Failure::Connect("refused".into()), "14"),
            (Failure::Timeout(Duration::from_secs(2)), "4"),
        ];
        for (failure, code) in cases {
            let response = failure.respond(true);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["grpc-status"], code);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/grpc");
            let message = response.headers()["grpc-message"].to_str().unwrap();
            assert!(message.starts_with("trellis-proxy: "), "{message}");
            assert!(
                http_body::Body::is_end_stream(response.body()),
                "a trailers-only response has no body"
            );
        }
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_percent_encode("a 100% é\n"), "a 100%25 %C3%A9%0A");
    }
}
