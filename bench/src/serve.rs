//! The built-in backends, so that the harness measures nothing outside this repo: a
//! hyper server speaking HTTP/1.1 and h2c on one port, and a tonic gRPC echo service.
//! Both answer with a body of a configurable size; a request may ask for another size
//! (`x-response-size` header, or the echo request's `response_size`), so one backend
//! serves every workload. Each takes an already-bound listener, so tests bind port 0.

mod grpc;
mod http;

pub use grpc::serve_grpc;
pub use http::serve_http;

/// Answers larger than this are refused rather than allocated.
pub const MAX_RESPONSE_SIZE: usize = 64 << 20;

/// How a backend answers.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// Body bytes of an answer when the request does not ask for a size.
    pub response_size: usize,
}
