//! A server that speaks first, as SMTP does, works through the mesh.
//!
//! The client's sidecar peeks at what the app sends first to tell HTTP from anything
//! else. A client of a server-speaks-first protocol sends nothing until it has read
//! the server's banner, so the peek can only end by timing out (here after one
//! second, `--detect-timeout 1s`); the sidecar then carries the connection as opaque
//! bytes, remembers that this address speaks first, and does not stall the next
//! connection to it. Its log tells the operator how to skip the wait altogether: the
//! `trellis.io/opaque-ports` annotation, which reaches the sidecar as
//! `--opaque-ports`; on such a port nothing is detected, on either side: peer
//! sidecars reach the server's sidecar on its inbound port, so a connection to a
//! declared opaque app port is a client outside the mesh, and the server greets it at
//! once. The server's sidecar remembers too: a client outside the mesh that waits for
//! the banner stalls once, and the next one is greeted at once.

use std::io::Write as _;
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

use trellis_tests::{
    EchoServer, MeshPod, Metrics, PodPair, ends_unanswered, host_can_run_pods, read_line,
};

/// Not 25: a sidecar may know SMTP's own port as opaque without detecting anything.
const BANNER_PORT: u16 = 2525;
/// A second banner app's port, which the client's sidecar is told is opaque.
const DECLARED_PORT: u16 = 2526;
/// The client's `--detect-timeout` and `--opaque-ports`.
const DETECT_TIMEOUT: &str = "1s";
const OPAQUE_PORTS: &str = "25,2526";
/// How long the client waits for the banner: a deadline, not a measurement. Far
/// above the client sidecar's one-second detection, yet below the sidecars' default
/// of ten seconds, so that any second wait for the client to speak (the server's
/// sidecar detecting again, say) fails the story rather than slowing it down.
const BANNER_DEADLINE: Duration = Duration::from_secs(5);

/// Reads the banner on a new connection from `client`, then exchanges one line.
fn greet(client: &MeshPod, target: SocketAddrV4) -> anyhow::Result<(String, String)> {
    greet_on(client.connect(target)?)
}

/// Reads the banner on a new connection from the host, a client outside the mesh.
fn greet_from_host(target: SocketAddrV4) -> anyhow::Result<(String, String)> {
    greet_on(TcpStream::connect_timeout(&target.into(), BANNER_DEADLINE)?)
}

fn greet_on(mut conn: TcpStream) -> anyhow::Result<(String, String)> {
    conn.set_read_timeout(Some(BANNER_DEADLINE))?;
    let banner = read_line(&mut conn)
        .map_err(|e| anyhow::anyhow!("no banner within {BANNER_DEADLINE:?}: {e}"))?;
    conn.write_all(b"HELO client\r\n")?;
    let reply = read_line(&mut conn)?;
    Ok((banner, reply))
}

/// How many outbound connections the sidecar detected as `protocol`.
fn detected(metrics: &Metrics, protocol: &str) -> f64 {
    let labels = [("direction", "outbound"), ("protocol", protocol)];
    metrics.sum("detect_total", &labels)
}

#[test]
fn a_server_that_speaks_first_works_through_the_mesh_and_is_remembered_as_opaque()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let client_args = [
        "--detect-timeout",
        DETECT_TIMEOUT,
        "--opaque-ports",
        OPAQUE_PORTS,
    ];
    let pods = PodPair::start_with(&[], &client_args, &[])?;
    let PodPair { client, server, .. } = &pods;
    let _banner = EchoServer::start_banner_in(server.netns(), BANNER_PORT, "server")?;
    let _declared = EchoServer::start_banner_in(server.netns(), DECLARED_PORT, "declared")?;
    let target = pods.server_at(BANNER_PORT);

    // 1. Twice, a new connection: the client reads the banner, then talks.
    for connection in ["first", "second"] {
        let (banner, reply) = greet(client, target).map_err(|e| {
            anyhow::anyhow!(
                "{connection} connection: {e}\n{}\n{}",
                client.proxy_log(),
                server.proxy_log()
            )
        })?;
        assert_eq!(banner, "220 server hello", "{connection} connection");
        assert_eq!(
            reply, "250 server got HELO client",
            "{connection} connection"
        );
    }

    // 2. The first connection was detected by its silence; the second went opaque at
    // once, because the sidecar remembered the address.
    let metrics = client.metrics()?;
    assert_eq!(
        detected(&metrics, "opaque_timeout"),
        1.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        detected(&metrics, "opaque_remembered"),
        1.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.sum("opaque_destinations", &[]),
        1.0,
        "{}",
        metrics.text
    );

    // 3. On a port the operator declared opaque, nothing is detected at all.
    let (banner, reply) = greet(client, pods.server_at(DECLARED_PORT))?;
    assert_eq!(banner, "220 declared hello");
    assert_eq!(reply, "250 declared got HELO client");
    let metrics = client.metrics()?;
    assert_eq!(detected(&metrics, "opaque_port"), 1.0, "{}", metrics.text);
    assert_eq!(
        detected(&metrics, "opaque_timeout"),
        1.0,
        "{}",
        metrics.text
    );

    // 4. The operator is told how to avoid the first wait.
    let log = client.proxy_log_text();
    assert!(
        log.contains("trellis.io/opaque-ports"),
        "the client's sidecar never suggested trellis.io/opaque-ports:\n{}",
        client.proxy_log()
    );
    Ok(())
}

/// How many connections `pod`'s sidecar took in over mTLS from `client`.
fn meshed_in(pod: &MeshPod, client: &MeshPod) -> anyhow::Result<f64> {
    let labels = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", client.identity.as_str()),
    ];
    Ok(pod.metrics()?.sum("tcp_open_total", &labels))
}

#[test]
fn on_a_declared_opaque_port_a_server_that_speaks_first_greets_clients_outside_the_mesh_at_once()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    // Both sidecars know the port as opaque and keep the default ten-second detection,
    // far beyond the banner deadline.
    let opaque = ["--opaque-ports", OPAQUE_PORTS];
    let mut pods = PodPair::start_with(&[], &opaque, &opaque)?;
    let _declared = EchoServer::start_banner_in(pods.server.netns(), DECLARED_PORT, "declared")?;
    let target = pods.server_at(DECLARED_PORT);
    let expected = (
        "220 declared hello".to_string(),
        "250 declared got HELO client".to_string(),
    );

    // 1. A client outside the mesh (on the host) is greeted at once: the server's
    // sidecar does not wait for it to speak.
    let greeted = greet_from_host(target)
        .map_err(|e| anyhow::anyhow!("from the host: {e}\n{}", pods.server.proxy_log()))?;
    assert_eq!(greeted, expected);
    let metrics = pods.server.metrics()?;
    let labels = [("direction", "inbound"), ("protocol", "opaque_port")];
    assert_eq!(
        metrics.sum("detect_total", &labels),
        1.0,
        "{}",
        metrics.text
    );

    // 2. A meshed client still arrives over mTLS, as the client's identity.
    let before = meshed_in(&pods.server, &pods.client)?;
    let greeted = greet(&pods.client, target).map_err(|e| {
        anyhow::anyhow!(
            "from the client pod: {e}\n{}\n{}",
            pods.client.proxy_log(),
            pods.server.proxy_log()
        )
    })?;
    assert_eq!(greeted, expected);
    assert_eq!(meshed_in(&pods.server, &pods.client)? - before, 1.0);

    // 3. With --require-mtls the server's sidecar refuses the client outside the mesh
    // (the app never greets it), and the meshed client is still served.
    pods.server.kill_sidecar()?;
    let mut strict = opaque.to_vec();
    strict.push("--require-mtls");
    pods.server.start_sidecar_with(&strict)?;
    let mut conn = TcpStream::connect_timeout(&target.into(), BANNER_DEADLINE)?;
    conn.set_read_timeout(Some(BANNER_DEADLINE))?;
    ends_unanswered(&mut conn, "HELO outsider\r\n").map_err(anyhow::Error::msg)?;
    assert_eq!(greet(&pods.client, target)?, expected);
    Ok(())
}

#[test]
fn the_servers_sidecar_remembers_an_app_that_speaks_first_to_clients_outside_the_mesh()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let server_args = ["--detect-timeout", DETECT_TIMEOUT];
    let pods = PodPair::start_with(&[], &[], &server_args)?;
    let _banner = EchoServer::start_banner_in(pods.server.netns(), BANNER_PORT, "server")?;
    let target = pods.server_at(BANNER_PORT);

    // 1. Twice, a client on the host (outside the mesh) reads the banner, then talks.
    for connection in ["first", "second"] {
        let greeted = greet_from_host(target).map_err(|e| {
            anyhow::anyhow!("{connection} connection: {e}\n{}", pods.server.proxy_log())
        })?;
        assert_eq!(
            greeted,
            (
                "220 server hello".to_string(),
                "250 server got HELO client".to_string()
            ),
            "{connection} connection"
        );
    }

    // 2. The first was detected by its silence, the second went to the app at once.
    let metrics = pods.server.metrics()?;
    let inbound = |protocol| {
        metrics.sum(
            "detect_total",
            &[("direction", "inbound"), ("protocol", protocol)],
        )
    };
    assert_eq!(inbound("opaque_timeout"), 1.0, "{}", metrics.text);
    assert_eq!(inbound("opaque_remembered"), 1.0, "{}", metrics.text);
    assert_eq!(
        metrics.sum("opaque_destinations", &[]),
        1.0,
        "{}",
        metrics.text
    );
    assert!(
        pods.server
            .proxy_log_text()
            .contains("trellis.io/opaque-ports"),
        "the server's sidecar never suggested trellis.io/opaque-ports:\n{}",
        pods.server.proxy_log()
    );
    Ok(())
}
