//! A plain TCP client in one pod reaches a server in another, and the wire between the
//! pods carries only mutual TLS.
//!
//! Two pods, "client" and "server", each behind proxy-init's rules and a sidecar
//! running as uid 2102; a controller on the host issues their certificates from the
//! tokens this test signed. Neither app knows about the mesh: the echo app in "server"
//! and the client in "client" are threads of this test that entered the pods'
//! network namespaces.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

use trellis_tests::TwoPods;
use trellis_tests::pcap::{self, TlsRecord};
use trellis_tests::{Capture, EchoServer, INBOUND_PORT, Mesh, host_can_run_pods, wait_until};

const APP_PORT: u16 = 7070;
const ROUNDS: usize = 5;

#[test]
fn a_plain_tcp_client_in_one_pod_reaches_a_server_in_another_over_mutual_tls() -> anyhow::Result<()>
{
    if !host_can_run_pods(&[("tcpdump", "tcpdump")]) {
        return Ok(());
    }
    let TwoPods {
        echo,
        client,
        server,
        mesh,
        target,
    } = TwoPods::start(&[], &[], APP_PORT)?;

    let capture = Capture::start(server.host_veth(), &mesh.dir().join("server.pcap"))?;
    let marker = format!("trellis-marker-{}-{}", mesh.names.tag, std::process::id());
    let sent = marker.clone();
    let echoed = trellis_netns::run_in(client.netns(), move || -> std::io::Result<Vec<String>> {
        let mut conn = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut replies = Vec::new();
        for round in 0..ROUNDS {
            let line = format!("{sent} round {round}\n");
            conn.write_all(line.as_bytes())?;
            let mut reply = vec![0u8; line.len()];
            conn.read_exact(&mut reply)?;
            replies.push(String::from_utf8_lossy(&reply).into_owned());
        }
        Ok(replies)
    })?;
    let pcap_bytes = capture.finish()?;

    // 1. The client got every byte back, unchanged.
    let echoed = echoed
        .map_err(|e| anyhow::anyhow!("the client's call failed: {e}\n{}", client.proxy_log()))?;
    let expected: Vec<String> = (0..ROUNDS)
        .map(|round| format!("{marker} round {round}\n"))
        .collect();
    assert_eq!(echoed, expected);
    assert_eq!(
        echo.connections(),
        1,
        "the app saw exactly the one connection"
    );

    // 2. The wire never carried the payload, only TLS records, in both directions.
    assert!(
        !contains(&pcap_bytes, marker.as_bytes()),
        "the marker crossed the server's veth in the clear"
    );
    let segments = pcap::tcp_segments(&pcap_bytes).map_err(anyhow::Error::msg)?;
    // The client's sidecar calls the server's sidecar on its inbound port, naming
    // the app port inside the TLS.
    let sidecar = SocketAddrV4::new(*target.ip(), INBOUND_PORT);
    let connections: Vec<SocketAddrV4> = segments
        .iter()
        .filter(|s| s.syn && s.dst.ip() == target.ip())
        .map(|s| s.dst)
        .collect();
    assert_eq!(
        connections,
        [sidecar],
        "one connection, to the server's sidecar, crossed the wire"
    );
    let client_end = segments
        .iter()
        .find(|s| s.syn && s.dst == sidecar)
        .map(|s| s.src)
        .ok_or_else(|| anyhow::anyhow!("no connection to {sidecar}"))?;
    let to_server = pcap::stream(&segments, client_end, sidecar);
    let to_client = pcap::stream(&segments, sidecar, client_end);
    assert_eq!(
        &to_server[..2],
        [0x16, 0x03],
        "the client side opens with a TLS handshake record"
    );
    for (direction, bytes) in [
        ("client to server", &to_server),
        ("server to client", &to_client),
    ] {
        let records = pcap::tls_records(bytes).map_err(|e| anyhow::anyhow!("{direction}: {e}"))?;
        assert!(
            records.iter().any(is_application_data),
            "{direction} carried no TLS application data: {records:?}"
        );
    }

    // 3. The server's sidecar verified who called: the client's SPIFFE ID.
    let metrics = server.metrics()?;
    let from_client = metrics.sum(
        "tcp_open_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", &client.identity),
        ],
    );
    assert!(
        from_client >= 1.0,
        "the server's sidecar recorded no connection from {}:\n{}",
        client.identity,
        metrics.text
    );
    assert_eq!(
        client.identity,
        "spiffe://cluster.local/ns/storefront/sa/web"
    );
    Ok(())
}

#[test]
fn a_client_told_to_expect_another_identity_never_reaches_the_server_app() -> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let mut mesh = Mesh::start()?;
    let mut server = mesh.pod("server", "shop", "server")?;
    let mut client = mesh.pod("client", "storefront", "web")?;
    server.start_sidecar()?;
    client.start_sidecar()?;
    // The server's sidecar will present spiffe://.../sa/server; discovery says only
    // "payments" may answer at that address.
    let impostor_check = "spiffe://cluster.local/ns/shop/sa/payments";
    mesh.write_config(
        "pod-server.yaml",
        &format!(
            "apiVersion: trellis.io/v1alpha1
kind: Endpoints
metadata: {{name: pod.server, namespace: shop}}
spec:
  endpoints:
  - {{address: {}, identity: \"{impostor_check}\"}}
",
            server.ip
        ),
    )?;
    client.wait_for_identity(server.ip, impostor_check)?;
    let echo = EchoServer::start_in(server.netns(), APP_PORT)?;

    let target = SocketAddrV4::new(server.ip, APP_PORT);
    let outcome = trellis_netns::run_in(client.netns(), move || -> std::io::Result<Vec<u8>> {
        // The connect succeeds: it ends at the client's own sidecar.
        let mut conn = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        // The sidecar may already have closed: a failed write is the refusal too.
        let _ = conn.write_all(b"is anyone there?\n");
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply)?;
        Ok(reply)
    })?;

    // The client sees the connection end (EOF or reset), never an echo.
    match outcome {
        Ok(reply) => assert!(
            reply.is_empty(),
            "the client got {:?} back",
            String::from_utf8_lossy(&reply)
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
            ),
            "expected EOF or a reset, got {e} ({:?})",
            e.kind()
        ),
    }
    assert_eq!(echo.connections(), 0, "the server app was reached");

    // The client's sidecar counted the refused handshake and opened no connection.
    let counted = wait_until(Duration::from_secs(3), || {
        client.metrics().is_ok_and(|m| {
            m.sum(
                "tls_handshakes_total",
                &[("direction", "outbound"), ("outcome", "!ok")],
            ) >= 1.0
        })
    });
    let metrics = client.metrics()?;
    assert!(
        counted,
        "no failed outbound handshake was counted:\n{}",
        metrics.text
    );
    assert_eq!(
        metrics.sum(
            "tcp_open_total",
            &[("direction", "outbound"), ("server_id", impostor_check)]
        ),
        0.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.sum(
            "tls_handshakes_total",
            &[("direction", "outbound"), ("outcome", "ok")]
        ),
        0.0
    );
    Ok(())
}

fn is_application_data(record: &TlsRecord) -> bool {
    record.content_type == 0x17 && record.version == 0x0303
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
