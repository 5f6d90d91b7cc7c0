//! The HTTP backend: HTTP/1.1 and h2c (prior knowledge) on one port, detected per
//! connection by hyper-util's `auto` builder. It reads the request body to the end and
//! answers 200 with `response_size` bytes.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::{Backend, MAX_RESPONSE_SIZE};
use crate::Error;
use crate::load::RESPONSE_SIZE_HEADER;

/// Serves until the task is dropped. Accept errors (out of file descriptors, say) are
/// survived: a benchmark backend must not die in the middle of a run.
pub async fn serve_http(listener: TcpListener, backend: Backend) -> Result<(), Error> {
    // One shared buffer: each answer is a cheap slice of it.
    let body = Bytes::from(vec![b'x'; backend.response_size.max(1 << 20)]);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let service = service_fn(move |request| answer(request, body.clone(), backend));
        tokio::spawn(async move {
            // A client going away mid-request is normal at the end of a run.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    body: Bytes,
    backend: Backend,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let size = request
        .headers()
        .get(RESPONSE_SIZE_HEADER)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(backend.response_size);
    let mut incoming = request.into_body();
    while let Some(frame) = incoming.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if size > MAX_RESPONSE_SIZE {
        let mut refused = Response::new(Full::new(Bytes::from_static(b"too large\n")));
        *refused.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(refused);
    }
    let payload = if size <= body.len() {
        body.slice(..size)
    } else {
        Bytes::from(vec![b'x'; size])
    };
    Ok(Response::new(Full::new(payload)))
}
