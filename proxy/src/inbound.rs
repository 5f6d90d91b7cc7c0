//! Connections from outside the pod to the app: detect mesh TLS, terminate it, record
//! the caller's identity, and forward to the app on `127.0.0.1:<original port>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Config;
use crate::detect::{self, Protocol};
use crate::error::ConnError;
use crate::forward::forward;
use crate::listener::{self, Accepted, Direction};
use crate::metrics::Metrics;
use crate::orig_dst::{OrigDstAddr, orig_dst};
use crate::tls::MeshTls;

/// How long a client may stay silent before it is taken to speak second
/// (server-speaks-first protocols such as SMTP or MySQL) and forwarded opaque.
const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Inbound {
    tls: MeshTls,
    require_mtls: bool,
    /// The proxy's own ports: a connection whose original destination is one of
    /// them was not redirected, and forwarding it would loop.
    own_ports: [u16; 2],
    metrics: Arc<Metrics>,
}

impl Inbound {
    pub fn new(config: &Config, tls: MeshTls, metrics: Arc<Metrics>) -> Self {
        Inbound {
            tls,
            require_mtls: config.require_mtls,
            own_ports: [config.inbound_addr.port(), config.outbound_addr.port()],
            metrics,
        }
    }

    pub async fn handle(self, conn: Accepted) {
        let started = std::time::Instant::now();
        let (tls, result) = self.proxy(conn.stream).await;
        listener::closed(&self.metrics, Direction::Inbound, tls, &result, started);
    }

    async fn proxy(&self, stream: TcpStream) -> (bool, Result<(u64, u64), ConnError>) {
        let dst = match orig_dst(&stream) {
            Ok(dst) => dst,
            Err(e) => return (false, Err(ConnError::OrigDst(e))),
        };
        tracing::Span::current().record("dst", tracing::field::display(dst));
        if self.own_ports.contains(&dst.0.port()) {
            return (false, Err(ConnError::Loop(dst.0.port())));
        }
        let (protocol, io) = match detect::detect(stream, DETECT_TIMEOUT).await {
            Ok(detected) => detected,
            Err(e) => return (false, Err(ConnError::Io(e))),
        };
        match protocol {
            Protocol::MeshTls => {
                let (mut tls, client_id) = match self.tls.accept(io).await {
                    Ok(accepted) => {
                        self.metrics.handshake(Direction::Inbound, "ok");
                        accepted
                    }
                    Err(e) => {
                        self.metrics.handshake(Direction::Inbound, e.kind());
                        return (true, Err(e));
                    }
                };
                tracing::info!(client_id = %client_id, "mTLS accepted");
                self.metrics.opened(
                    Direction::Inbound,
                    true,
                    client_id.to_string(),
                    String::new(),
                );
                (true, self.to_app(&mut tls, dst).await)
            }
            Protocol::Opaque if self.require_mtls => (false, Err(ConnError::PlaintextRefused)),
            Protocol::Opaque => {
                self.metrics
                    .opened(Direction::Inbound, false, String::new(), String::new());
                let mut io = io;
                (false, self.to_app(&mut io, dst).await)
            }
        }
    }

    async fn to_app<C>(&self, client: &mut C, dst: OrigDstAddr) -> Result<(u64, u64), ConnError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        // The app is reached over loopback, which proxy-init never redirects.
        let loopback = match dst.0.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let app = SocketAddr::new(loopback, dst.0.port());
        let mut server = TcpStream::connect(app)
            .await
            .map_err(|source| ConnError::Connect { addr: app, source })?;
        let _ = server.set_nodelay(true);
        Ok(forward(client, &mut server, Direction::Inbound, &self.metrics).await?)
    }
}
