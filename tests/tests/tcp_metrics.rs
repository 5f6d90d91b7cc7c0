//! Every connection a sidecar accepts or opens is counted, whatever it carries: open,
//! closed, and its bytes, on `/metrics`.
//!
//! curl in the client pod downloads a body from the HTTP app in the server pod. Four
//! connections carry it: curl's to its sidecar (accepted outbound, `peer="src"`), the
//! client sidecar's HTTP/2-over-mTLS connection to the server's sidecar (opened
//! outbound, `peer="dst"`; accepted inbound, `peer="src"`), and the server sidecar's
//! connection to the app (opened inbound, `peer="dst"`). Each one counts the body
//! among its bytes, and each one that ends is counted closed.

use std::time::Duration;

use trellis_tests::{HttpApp, MeshPod, PodPair, host_can_run_pods, wait_until};

const APP_PORT: u16 = 7070;
const CURL: (&str, &str) = ("curl", "curl");
const BODY: u64 = 1024 * 1024;
/// Ample for a closed connection to be counted.
const SETTLE: Duration = Duration::from_secs(10);

/// The sum of `name` over `pod`'s series with `labels`.
fn sum(pod: &MeshPod, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    Ok(pod.metrics()?.sum(name, labels))
}

#[test]
fn every_connection_of_an_http_download_counts_open_close_and_bytes() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let mut pods = PodPair::start(&[])?;
    let _app = HttpApp::start_in(pods.server.netns(), APP_PORT, "server")?;
    pods.download_whole(APP_PORT, BODY)?;
    let (client, server) = (&pods.client, &pods.server);
    let body = BODY as f64;

    // Every byte of the body was written to curl and read from each hop before it,
    // while the mesh connection is still open.
    let hops = [
        (
            client,
            "tcp_write_bytes_total",
            "outbound",
            "src",
            "to curl",
        ),
        (
            client,
            "tcp_read_bytes_total",
            "outbound",
            "dst",
            "from the server's sidecar",
        ),
        (
            server,
            "tcp_write_bytes_total",
            "inbound",
            "src",
            "to the client's sidecar",
        ),
        (
            server,
            "tcp_read_bytes_total",
            "inbound",
            "dst",
            "from the app",
        ),
    ];
    for (pod, metric, direction, peer, what) in hops {
        let bytes = sum(pod, metric, &[("direction", direction), ("peer", peer)])?;
        assert!(
            bytes >= body,
            "{}'s sidecar counted {bytes} bytes {what}, fewer than the {body}-byte body\n{}",
            pod.name,
            pod.metrics()?.text
        );
    }

    // Each connection was counted open: the mesh one with the verified identities.
    let opened = [
        (client, vec![("direction", "outbound"), ("peer", "src")]),
        (
            client,
            vec![
                ("direction", "outbound"),
                ("peer", "dst"),
                ("tls", "true"),
                ("server_id", server.identity.as_str()),
            ],
        ),
        (
            server,
            vec![
                ("direction", "inbound"),
                ("peer", "src"),
                ("tls", "true"),
                ("client_id", client.identity.as_str()),
            ],
        ),
        (server, vec![("direction", "inbound"), ("peer", "dst")]),
    ];
    for (pod, labels) in &opened {
        let count = sum(pod, "tcp_open_total", labels)?;
        assert!(
            count >= 1.0,
            "{}: no tcp_open_total{labels:?}\n{}",
            pod.name,
            pod.metrics()?.text
        );
    }

    // curl's connection ended: counted closed. When the client's sidecar stops, its
    // mesh connection ends, and the server's sidecar counts it closed too.
    let closed = |pod: &MeshPod, labels: &[(&str, &str)]| {
        wait_until(SETTLE, || {
            sum(pod, "tcp_close_total", labels).is_ok_and(|n| n >= 1.0)
        })
    };
    assert!(
        closed(
            client,
            &[
                ("direction", "outbound"),
                ("peer", "src"),
                ("outcome", "ok")
            ]
        ),
        "curl's connection was never counted closed\n{}",
        client.metrics()?.text
    );
    let mesh_in = [("direction", "inbound"), ("peer", "src"), ("tls", "true")];
    assert_eq!(
        sum(server, "tcp_close_total", &mesh_in)?,
        0.0,
        "the mesh connection closed early"
    );
    pods.client.terminate_sidecar()?;
    anyhow::ensure!(
        pods.client.wait_for_sidecar_exit(SETTLE).is_some(),
        "the client's sidecar did not stop"
    );
    assert!(
        closed(&pods.server, &mesh_in),
        "the mesh connection was never counted closed\n{}",
        pods.server.metrics()?.text
    );
    Ok(())
}
