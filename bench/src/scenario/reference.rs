//! The reference proxies from Debian's packages, with configs the harness writes:
//! HAProxy one hop, an HAProxy pair with mutual TLS 1.3 between them (two hops, the
//! shape of a mesh), and nginx one hop.
//!
//! Both run as HTTP-aware (L7) proxies, as a mesh's sidecar is: HTTP/1.1 on one port
//! with pooled keep-alive connections upstream, h2c on another for gRPC. Each gets
//! one thread (HAProxy `nbthread 1`, nginx `worker_processes 1`), like
//! linkerd2-proxy's default, because on two cores a second worker only adds
//! contention with the load generator and the backend.
//!
//! A third port leads to the backend's opaque port, where, as through Trellis's
//! `--opaque-ports`, every client connection becomes a connection of its own to the
//! next hop: HAProxy forwards it in TCP mode (so the pair does a TLS handshake per
//! connection, where its pooled HTTP ports, `http-reuse always`, do none), nginx
//! proxies it without upstream keep-alive (its TCP `stream` module is a separate
//! Debian package).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::ports::{
    BACKEND_GRPC, BACKEND_HTTP, BACKEND_OPAQUE, FRONT_GRPC, FRONT_HTTP, FRONT_OPAQUE, TLS_GRPC,
    TLS_HTTP, TLS_OPAQUE,
};
use super::process::Daemon;
use super::topology::{Place, Topology};
use crate::Error;

/// The name the server-side HAProxy's certificate carries and the client side checks.
const SERVER_NAME: &str = "bench-server";

/// The ports a reference proxy listens on.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    grpc: u16,
    /// Forwarded connection by connection, never pooled.
    opaque: u16,
}

/// Where the client side's proxy listens, in the sidecar's place.
const FRONT: Ports = Ports {
    http: FRONT_HTTP,
    grpc: FRONT_GRPC,
    opaque: FRONT_OPAQUE,
};

/// Where the server side's HAProxy of the TLS pair listens.
const TLS: Ports = Ports {
    http: TLS_HTTP,
    grpc: TLS_GRPC,
    opaque: TLS_OPAQUE,
};

/// Where a reference proxy forwards to, and the TLS it speaks there, if any.
struct Upstream {
    http: SocketAddr,
    grpc: SocketAddr,
    opaque: SocketAddr,
    tls: Option<TlsFiles>,
}

/// PEM files for one side of the HAProxy pair.
#[derive(Clone)]
struct TlsFiles {
    /// Certificate chain and key in one file, as HAProxy's `crt` wants it.
    cert_and_key: PathBuf,
    ca: PathBuf,
}

/// HAProxy in front of the backend, in the client's place.
pub fn haproxy_one_hop(topology: &Topology, dir: &Path) -> Result<Vec<Daemon>, Error> {
    let server = topology.server_ip();
    let upstream = Upstream {
        http: SocketAddr::from((server, BACKEND_HTTP)),
        grpc: SocketAddr::from((server, BACKEND_GRPC)),
        opaque: SocketAddr::from((server, BACKEND_OPAQUE)),
        tls: None,
    };
    let config = haproxy_config(Ipv4Addr::LOCALHOST, FRONT, None, &upstream);
    let proxy = start_haproxy(topology, Place::Client, "haproxy", &config, dir)?;
    topology.wait_listening(
        Place::Client,
        (Ipv4Addr::LOCALHOST, FRONT_HTTP).into(),
        "haproxy",
    )?;
    Ok(vec![proxy])
}

/// Two HAProxies: the client side's speaks mutual TLS 1.3 to the server side's, which
/// forwards to the backend on its loopback.
pub fn haproxy_two_hops(topology: &Topology, dir: &Path) -> Result<Vec<Daemon>, Error> {
    let (client_tls, server_tls) = write_certificates(dir)?;
    let inner = Upstream {
        http: (Ipv4Addr::LOCALHOST, BACKEND_HTTP).into(),
        grpc: (Ipv4Addr::LOCALHOST, BACKEND_GRPC).into(),
        opaque: (Ipv4Addr::LOCALHOST, BACKEND_OPAQUE).into(),
        tls: None,
    };
    let server_config = haproxy_config(topology.server_bind_ip(), TLS, Some(&server_tls), &inner);
    let server_side = start_haproxy(
        topology,
        Place::Server,
        "haproxy-server",
        &server_config,
        dir,
    )?;
    let outer = Upstream {
        http: (topology.server_ip(), TLS_HTTP).into(),
        grpc: (topology.server_ip(), TLS_GRPC).into(),
        opaque: (topology.server_ip(), TLS_OPAQUE).into(),
        tls: Some(client_tls),
    };
    let client_config = haproxy_config(Ipv4Addr::LOCALHOST, FRONT, None, &outer);
    let client_side = start_haproxy(
        topology,
        Place::Client,
        "haproxy-client",
        &client_config,
        dir,
    )?;
    topology.wait_listening(
        Place::Server,
        (topology.server_ip(), TLS_HTTP).into(),
        "haproxy-server",
    )?;
    topology.wait_listening(
        Place::Client,
        (Ipv4Addr::LOCALHOST, FRONT_HTTP).into(),
        "haproxy-client",
    )?;
    Ok(vec![client_side, server_side])
}

fn start_haproxy(
    topology: &Topology,
    place: Place,
    name: &str,
    config: &str,
    dir: &Path,
) -> Result<Daemon, Error> {
    let path = dir.join(format!("{name}.cfg"));
    write(&path, config)?;
    let mut command = topology.command(place, program("haproxy"));
    // -db: stay in the foreground, so the pid we hold is the proxy itself.
    command.arg("-db").arg("-f").arg(&path);
    let mut daemon = Daemon::start(name, command, dir)?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    daemon.check_alive()?;
    Ok(daemon)
}

/// An HAProxy config: an HTTP/1.1 frontend, an h2c frontend and a TCP frontend on
/// `bind`, each to its upstream; with `listen_tls`, the frontends terminate mutual
/// TLS instead.
fn haproxy_config(
    bind: Ipv4Addr,
    ports: Ports,
    listen_tls: Option<&TlsFiles>,
    upstream: &Upstream,
) -> String {
    // The opaque port carries no HTTP, so it negotiates no ALPN.
    let alpn = |protocol: &str| {
        if protocol.is_empty() {
            String::new()
        } else {
            format!(" alpn {protocol}")
        }
    };
    let bind_tls = |protocol: &str| match listen_tls {
        Some(tls) => format!(
            " ssl crt {} ca-file {} verify required{}",
            tls.cert_and_key.display(),
            tls.ca.display(),
            alpn(protocol)
        ),
        None => String::new(),
    };
    let server_tls = |protocol: &str| match &upstream.tls {
        Some(tls) => format!(
            " ssl crt {} ca-file {} verify required verifyhost {SERVER_NAME}{}",
            tls.cert_and_key.display(),
            tls.ca.display(),
            alpn(protocol)
        ),
        None => String::new(),
    };
    // Over TLS the pair negotiates h2 by ALPN; in cleartext gRPC needs `proto h2`.
    let grpc_bind = if listen_tls.is_some() {
        bind_tls("h2")
    } else {
        " proto h2".to_string()
    };
    let grpc_server = if upstream.tls.is_some() {
        server_tls("h2")
    } else {
        " proto h2".to_string()
    };
    format!(
        "global
    maxconn 5000
    nbthread 1
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

frontend http1
    bind {bind}:{http_port}{http_bind}
    default_backend http1

backend http1
    server app {http}{http_server}

frontend grpc
    bind {bind}:{grpc_port}{grpc_bind}
    default_backend grpc

backend grpc
    server app {grpc}{grpc_server}

# Connection by connection: TLS (session resumption on, HAProxy's default) per
# client connection when the upstream is the other HAProxy.
frontend opaque
    mode tcp
    bind {bind}:{opaque_port}{opaque_bind}
    default_backend opaque

backend opaque
    mode tcp
    server app {opaque}{opaque_server}
",
        http_port = ports.http,
        http_bind = bind_tls("http/1.1"),
        http = upstream.http,
        http_server = server_tls("http/1.1"),
        grpc_port = ports.grpc,
        grpc = upstream.grpc,
        opaque_port = ports.opaque,
        opaque_bind = bind_tls(""),
        opaque = upstream.opaque,
        opaque_server = server_tls(""),
    )
}

/// A CA and a P-256 certificate for each side, the mesh's own kind of key.
fn write_certificates(dir: &Path) -> Result<(TlsFiles, TlsFiles), Error> {
    let tls_error = |e: rcgen::Error| Error::Command {
        command: "generating the HAProxy pair's certificates".into(),
        detail: e.to_string(),
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose subject equals its issuer's looks self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "trellis-bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls_error)?)
        .map_err(tls_error)?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca.pem())?;
    let mut sides = Vec::new();
    for name in ["client", SERVER_NAME] {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(tls_error)?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca).map_err(tls_error)?;
        let path = dir.join(format!("{name}.pem"));
        write(&path, &format!("{}{}", cert.pem(), key.serialize_pem()))?;
        sides.push(TlsFiles {
            cert_and_key: path,
            ca: ca_path.clone(),
        });
    }
    let server = sides
        .pop()
        .ok_or_else(|| tls_error(rcgen::Error::CouldNotParseCertificate))?;
    let client = sides
        .pop()
        .ok_or_else(|| tls_error(rcgen::Error::CouldNotParseCertificate))?;
    Ok((client, server))
}

/// nginx in front of the backend, in the client's place.
pub fn nginx_one_hop(topology: &Topology, dir: &Path) -> Result<Vec<Daemon>, Error> {
    let server = topology.server_ip();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))
        .map_err(|e| Error::io(format!("create {}", prefix.display()), e))?;
    let upstream = Upstream {
        http: SocketAddr::from((server, BACKEND_HTTP)),
        grpc: SocketAddr::from((server, BACKEND_GRPC)),
        opaque: SocketAddr::from((server, BACKEND_OPAQUE)),
        tls: None,
    };
    let config = nginx_config(&prefix, FRONT, &upstream);
    let path = prefix.join("nginx.conf");
    write(&path, &config)?;
    let mut command = topology.command(Place::Client, program("nginx"));
    command.arg("-p").arg(&prefix).arg("-c").arg(&path);
    let mut daemon = Daemon::start("nginx", command, dir)?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    daemon.check_alive()?;
    topology.wait_listening(
        Place::Client,
        (Ipv4Addr::LOCALHOST, FRONT_HTTP).into(),
        "nginx",
    )?;
    Ok(vec![daemon])
}

fn nginx_config(prefix: &Path, ports: Ports, upstream: &Upstream) -> String {
    let prefix = prefix.display();
    let (http_port, grpc_port, opaque_port) = (ports.http, ports.grpc, ports.opaque);
    let (http, grpc, opaque) = (upstream.http, upstream.grpc, upstream.opaque);
    format!(
        "daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;

events {{
    worker_connections 10000;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;

    upstream app_http1 {{
        server {http};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    upstream app_grpc {{
        server {grpc};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    # No keep-alive: one upstream connection per client connection.
    upstream app_opaque {{
        server {opaque};
    }}

    server {{
        listen 127.0.0.1:{http_port};
        location / {{
            proxy_pass http://app_http1;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
    server {{
        listen 127.0.0.1:{grpc_port} http2;
        location / {{
            grpc_pass grpc://app_grpc;
        }}
    }}
    server {{
        listen 127.0.0.1:{opaque_port};
        location / {{
            proxy_pass http://app_opaque;
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

fn program(name: &str) -> PathBuf {
    super::find_program(name).unwrap_or_else(|| PathBuf::from(name))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleartext() -> Upstream {
        Upstream {
            http: "10.250.7.3:27180".parse().expect("addr"),
            grpc: "10.250.7.3:27181".parse().expect("addr"),
            opaque: "10.250.7.3:27182".parse().expect("addr"),
            tls: None,
        }
    }

    #[test]
    fn a_one_hop_haproxy_forwards_every_frontend_in_cleartext() {
        let config = haproxy_config(Ipv4Addr::LOCALHOST, FRONT, None, &cleartext());
        assert!(config.contains("bind 127.0.0.1:27190\n"), "{config}");
        assert!(
            config.contains("bind 127.0.0.1:27191 proto h2\n"),
            "{config}"
        );
        assert!(config.contains("bind 127.0.0.1:27194\n"), "{config}");
        assert!(config.contains("server app 10.250.7.3:27180\n"), "{config}");
        assert!(
            config.contains("server app 10.250.7.3:27181 proto h2\n"),
            "{config}"
        );
        assert!(config.contains("server app 10.250.7.3:27182\n"), "{config}");
        assert!(!config.contains("ssl crt"));
    }

    #[test]
    fn the_haproxy_pair_verifies_each_other_over_tls_with_alpn() {
        let tls = TlsFiles {
            cert_and_key: "/tmp/x/client.pem".into(),
            ca: "/tmp/x/ca.pem".into(),
        };
        let upstream = Upstream {
            http: "10.250.7.3:27192".parse().expect("addr"),
            grpc: "10.250.7.3:27193".parse().expect("addr"),
            opaque: "10.250.7.3:27195".parse().expect("addr"),
            tls: Some(tls.clone()),
        };
        let client = haproxy_config(Ipv4Addr::LOCALHOST, FRONT, None, &upstream);
        assert!(client.contains(
            "server app 10.250.7.3:27193 ssl crt /tmp/x/client.pem ca-file /tmp/x/ca.pem verify required verifyhost bench-server alpn h2"
        ), "{client}");
        let server = haproxy_config(Ipv4Addr::UNSPECIFIED, TLS, Some(&tls), &upstream);
        assert!(server.contains("bind 0.0.0.0:27192 ssl crt /tmp/x/client.pem ca-file /tmp/x/ca.pem verify required alpn http/1.1"), "{server}");
    }

    #[test]
    fn the_haproxy_pair_opens_a_tls_connection_per_client_connection_on_the_opaque_port() {
        let tls = TlsFiles {
            cert_and_key: "/tmp/x/client.pem".into(),
            ca: "/tmp/x/ca.pem".into(),
        };
        let upstream = Upstream {
            tls: Some(tls.clone()),
            opaque: "10.250.7.3:27195".parse().expect("addr"),
            ..cleartext()
        };
        let client = haproxy_config(Ipv4Addr::LOCALHOST, FRONT, None, &upstream);
        // TCP mode: no HTTP connection pool to share, so no `http-reuse` applies.
        let opaque = &client[client.find("frontend opaque").expect("opaque frontend")..];
        assert!(opaque.contains("mode tcp"), "{opaque}");
        assert!(
            opaque.contains("server app 10.250.7.3:27195 ssl crt /tmp/x/client.pem ca-file /tmp/x/ca.pem verify required verifyhost bench-server\n"),
            "{opaque}"
        );
        let server = haproxy_config(Ipv4Addr::UNSPECIFIED, TLS, Some(&tls), &cleartext());
        assert!(
            server.contains(
                "bind 0.0.0.0:27195 ssl crt /tmp/x/client.pem ca-file /tmp/x/ca.pem verify required\n"
            ),
            "{server}"
        );
    }

    #[test]
    fn nginx_pools_upstream_connections_except_on_the_opaque_port() {
        let config = nginx_config(Path::new("/tmp/n"), FRONT, &cleartext());
        assert!(config.contains("listen 127.0.0.1:27191 http2;"));
        assert!(config.contains("grpc_pass grpc://app_grpc;"));
        assert!(config.contains("keepalive 64;"));
        assert!(config.contains("pid /tmp/n/nginx.pid;"));
        let opaque = &config[config.find("upstream app_opaque").expect("opaque upstream")..];
        let block = &opaque[..opaque.find('}').expect("block end")];
        assert!(block.contains("server 10.250.7.3:27182;"), "{block}");
        assert!(!block.contains("keepalive"), "{block}");
        assert!(config.contains("listen 127.0.0.1:27194;"));
    }
}
