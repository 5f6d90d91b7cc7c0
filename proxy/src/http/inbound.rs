//! Inbound HTTP: requests from peer sidecars (HTTP/2 over the mesh transport, or
//! HTTP/1.1 over a dedicated mTLS connection for upgrades) and plaintext requests
//! from outside the mesh, sent to the app on loopback over the local pool.
//!
//! The caller's identity reaches the app as [`CLIENT_ID`], and only as the proxy
//! verified it: whatever such header a request carried is removed first. Only a
//! verified peer sidecar may name the app port ([`DST_PORT`]) and the caller's
//! protocol ([`ORIG_PROTO`]); a plaintext caller gets the port it connected to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio_util::sync::CancellationToken;
use trellis_identity::SpiffeId;

use super::deadline;
use super::errors::Failure;
use super::observe::{Authority, Observer, Routes};
use super::pool::{LocalPool, Version};
use super::{
    Body, CLIENT_ID, DST_PORT, ORIG_PROTO, PROXY_ERROR, is_grpc, is_upgrade, restore, shape_for,
    strip_for_upgrade, strip_hop_by_hop, upgrade,
};
use crate::inbound::app_addr;
use crate::listener::Direction;
use crate::metrics::Metrics;
use crate::outbound::connect;
use crate::tally::Counted;

/// The inbound HTTP proxy of this pod, shared by every inbound connection.
pub struct HttpInbound {
    pub local: LocalPool,
    pub metrics: Arc<Metrics>,
    pub response_timeout: Duration,
    /// This proxy's inbound port: a request that arrived on it (the mesh transport)
    /// must name its app port.
    pub mesh_port: u16,
}

/// Who is calling on one connection, as the proxy verified it.
struct Caller {
    id: Option<SpiffeId>,
    /// The header value of `id`, made once per connection.
    header: Option<HeaderValue>,
}

impl HttpInbound {
    /// Serves a connection to `dst` that speaks `version`, from the peer whose mTLS
    /// identity is `client_id` (`None`: plaintext).
    pub async fn serve<I>(
        self: Arc<Self>,
        io: I,
        version: Version,
        dst: SocketAddr,
        client_id: Option<SpiffeId>,
        shutdown: CancellationToken,
    ) -> Result<(), hyper::Error>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let caller = Caller {
            header: client_id
                .as_ref()
                .and_then(|id| HeaderValue::try_from(id.as_str()).ok()),
            id: client_id,
        };
        let connection = Arc::new((
            caller,
            Routes::new(self.metrics.clone(), Direction::Inbound),
        ));
        let service = service_fn(move |request| {
            let this = self.clone();
            let connection = connection.clone();
            async move {
                let (caller, routes) = &*connection;
                Ok::<_, Infallible>(this.proxy(request, version, dst, caller, routes).await)
            }
        });
        super::serve_connection(io, version, service, shutdown).await
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        version: Version,
        dst: SocketAddr,
        caller: &Caller,
        routes: &Routes,
    ) -> Response<Body> {
        let started = Instant::now();
        let grpc = is_grpc(request.headers());
        let (mut parts, body) = request.into_parts();
        parts.headers.remove(CLIENT_ID);
        let named_port = parts.headers.remove(DST_PORT);
        let orig_proto = parts.headers.remove(ORIG_PROTO);
        let target = self.target(dst, version, caller, named_port, orig_proto);
        let authority = match &target {
            Ok((port, _)) => SocketAddr::new(dst.ip(), *port),
            Err(_) => dst,
        };
        let observer = Observer::start(
            routes.route(Authority::Addr(authority), caller.id.as_ref()),
            started,
        );
        let (port, app_version) = match target {
            Ok(target) => target,
            Err(failure) => return observer.respond(failure.respond(grpc)),
        };
        if let Some(id) = &caller.header {
            parts.headers.insert(CLIENT_ID, id.clone());
        }
        let app = app_addr(dst.ip(), port);

        if version == Version::Http1 && is_upgrade(&parts.headers) {
            // Boxed, as upgrades are rare: their state would otherwise be carried by
            // every request's future.
            let response = Box::pin(async {
                let tcp = connect(app)
                    .await
                    .map_err(|e| Failure::Connect(e.to_string()))?;
                let tcp = Counted::opened(tcp, &self.metrics, Direction::Inbound);
                strip_for_upgrade(&mut parts.headers);
                let request = Request::from_parts(parts, body);
                upgrade::relay(request, tcp, self.response_timeout).await
            })
            .await;
            return observer.respond(response.unwrap_or_else(|f| f.respond(false)));
        }

        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::EXPECT);
        shape_for(&mut parts, app_version, app);
        let (request, mut sent) = deadline::watch(Request::from_parts(parts, body));
        let sending = std::pin::pin!(self.local.send(app, app_version, request));
        let response = deadline::within(self.response_timeout, &mut sent, sending);
        let response = match response.await {
            Some(Ok(response)) => {
                let mut response = restore(response, version);
                // Only the proxy reports its own failures: a peer's balancer reads
                // this header as "the endpoint failed", never the app's answer.
                response.headers_mut().remove(PROXY_ERROR);
                response
            }
            Some(Err(failure)) => failure.into_failure().respond(grpc),
            None => Failure::Timeout(self.response_timeout).respond(grpc),
        };
        observer.respond(response)
    }

    /// The app port and protocol a request is for.
    fn target(
        &self,
        dst: SocketAddr,
        version: Version,
        caller: &Caller,
        named_port: Option<HeaderValue>,
        orig_proto: Option<HeaderValue>,
    ) -> Result<(u16, Version), Failure> {
        let meshed = caller.id.is_some();
        let port = match named_port.filter(|_| meshed) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    Failure::BadRequest(format!("{DST_PORT} {value:?} is not a port"))
                })?,
            None => dst.port(),
        };
        if port == self.mesh_port {
            return Err(Failure::BadRequest(format!(
                "a request to the proxy's inbound port must name its app port in {DST_PORT}"
            )));
        }
        let app_version = match orig_proto.filter(|_| meshed) {
            None => version,
            Some(v) if v == "HTTP/1.1" || v == "HTTP/1.0" => Version::Http1,
            Some(other) => {
                return Err(Failure::BadRequest(format!(
                    "{ORIG_PROTO} {other:?} is not a protocol this proxy speaks"
                )));
            }
        };
        Ok((port, app_version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH_PORT: u16 = 4143;

    fn inbound() -> HttpInbound {
        let metrics = Arc::new(Metrics::new());
        HttpInbound {
            local: LocalPool::new(Direction::Inbound, metrics.clone()),
            metrics,
            response_timeout: Duration::from_secs(30),
            mesh_port: MESH_PORT,
        }
    }

    fn caller(id: Option<&str>) -> Caller {
        Caller {
            id: id.map(|id| id.parse().unwrap()),
            header: None,
        }
    }

    fn dst(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 7], port))
    }

    const PEER: Option<&str> = Some("spiffe://cluster.local/ns/shop/sa/web");

    fn target(
        dst_port: u16,
        version: Version,
        who: Option<&str>,
        named_port: Option<&'static str>,
        orig_proto: Option<&'static str>,
    ) -> Result<(u16, Version), Failure> {
        inbound().target(
            dst(dst_port),
            version,
            &caller(who),
            named_port.map(HeaderValue::from_static),
            orig_proto.map(HeaderValue::from_static),
        )
    }

    #[test]
    fn a_plaintext_caller_gets_the_port_it_connected_to_in_the_protocol_it_spoke() {
        // Whatever it says in the mesh's headers.
        let got = target(7070, Version::Http2, None, Some("22"), Some("HTTP/1.1")).unwrap();
        assert_eq!(got, (7070, Version::Http2));
        let got = target(
            7070,
            Version::Http1,
            None,
            Some("not a port"),
            Some("bogus"),
        )
        .unwrap();
        assert_eq!(got, (7070, Version::Http1));
    }

    #[test]
    fn a_verified_peer_names_the_app_port_and_the_callers_protocol() {
        let got = target(MESH_PORT, Version::Http2, PEER, Some("8080"), None).unwrap();
        assert_eq!(got, (8080, Version::Http2));
        for proto in ["HTTP/1.1", "HTTP/1.0"] {
            let got = target(MESH_PORT, Version::Http2, PEER, Some("8080"), Some(proto)).unwrap();
            assert_eq!(got, (8080, Version::Http1), "{proto}");
        }
    }

    #[test]
    fn a_bad_port_or_protocol_from_a_peer_is_a_400() {
        let cases = [
            (Some("abc"), None, "not a port"),
            (Some("0"), None, "not a port"),
            (Some("70000"), None, "not a port"),
            (Some("-1"), None, "not a port"),
            // The mesh transport arrives on the proxy's own port: a request there must
            // name where it goes, and cannot name the proxy itself.
            (None, None, "must name its app port"),
            (Some("4143"), None, "must name its app port"),
            (Some("8080"), Some("HTTP/2"), "not a protocol"),
            (Some("8080"), Some("h2c"), "not a protocol"),
        ];
        for (port, proto, why) in cases {
            let failure = target(MESH_PORT, Version::Http2, PEER, port, proto).unwrap_err();
            assert_eq!(
                failure.status(),
                http::StatusCode::BAD_REQUEST,
                "{port:?} {proto:?}"
            );
            assert!(
                failure.to_string().contains(why),
                "{port:?} {proto:?}: {failure}"
            );
        }
    }
}
