//! The gRPC backend: `trellis.bench.v1.Echo/Echo`, a unary call that answers with as
//! many payload bytes as asked for (or the server's default).

use bytes::Bytes;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use trellis_proto::bench::v1::echo_server::{Echo, EchoServer};
use trellis_proto::bench::v1::{EchoRequest, EchoResponse};

use super::{Backend, MAX_RESPONSE_SIZE};
use crate::Error;

struct EchoService {
    default_size: usize,
    /// Shared answer bytes, sliced per call.
    payload: Bytes,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let size = match request.into_inner().response_size as usize {
            0 => self.default_size,
            size => size,
        };
        if size > MAX_RESPONSE_SIZE {
            return Err(Status::invalid_argument("response_size is above 64 MiB"));
        }
        let payload = if size <= self.payload.len() {
            self.payload.slice(..size).to_vec()
        } else {
            vec![b'x'; size]
        };
        Ok(Response::new(EchoResponse { payload }))
    }
}

/// Serves the echo service until the task is dropped.
pub async fn serve_grpc(listener: TcpListener, backend: Backend) -> Result<(), Error> {
    let service = EchoService {
        default_size: backend.response_size,
        payload: Bytes::from(vec![b'x'; backend.response_size.max(64 << 10)]),
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = EchoServer::new(service).max_decoding_message_size(MAX_RESPONSE_SIZE + 1024);
    // One service, so no router (tonic's `router` feature would pull in axum).
    Server::builder()
        .serve_with_incoming(service, incoming)
        .await
        .map_err(|error| Error::Io {
            what: "serve gRPC".into(),
            source: std::io::Error::other(error),
        })
}
