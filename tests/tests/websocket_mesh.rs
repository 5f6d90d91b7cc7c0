//! A WebSocket upgrade passes through the mesh.
//!
//! The server pod runs `tests/py/ws_server.py`, the client pod `tests/py/ws_client.py`,
//! both with the websockets package. The client's HTTP/1.1 `Upgrade: websocket`
//! request must reach the app and its `101 Switching Protocols` come back; from then
//! on the connection is WebSocket frames both ways, which the sidecars must carry
//! untouched: text, a 1 MiB binary message, a ping and a clean close.
//!
//! An upgrade request is still a request: the headers that describe one connection
//! go no further than it (but `Connection: upgrade` and `Upgrade`, which ask for the
//! switch), the mesh's own headers are the proxy's, and an app that never answers it
//! gets a 504 after the response timeout rather than a hang. There the app is the
//! HTTP app of the other stories and curl the client.

use serde_json::json;
use trellis_tests::{HttpApp, PodPair, PyServer, curl_in, host_can_run_pods, py_client};

const WS_PORT: u16 = 7070;
const CURL: (&str, &str) = ("curl", "curl");

/// curl's headers of an upgrade request, with hop-by-hop ones of its own and a mesh
/// header an app has no business sending.
const UPGRADE_HEADERS: [&str; 5] = [
    "Connection: Upgrade, X-Hop",
    "Upgrade: websocket",
    "X-Hop: secret",
    "Keep-Alive: timeout=5",
    "trellis-orig-proto: HTTP/2",
];

/// `curl --header H...` for every header of [`UPGRADE_HEADERS`], then `rest`.
fn upgrade_args<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    UPGRADE_HEADERS
        .iter()
        .flat_map(|header| ["--header", header])
        .chain(rest.iter().copied())
        .collect()
}

#[test]
fn a_websocket_upgrade_passes_through_the_mesh_and_frames_flow_both_ways() -> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let pods = PodPair::start(&[])?;
    let port = WS_PORT.to_string();
    let _app = PyServer::start(&pods.server, "ws_server.py", &[&port, "server"])?;

    let url = format!("ws://{}/chat", pods.server_at(WS_PORT));
    let seen = py_client(&pods.client, "ws_client.py", &[&url, "hello", "mesh"])
        .map_err(|e| anyhow::anyhow!("{e}\n{}", pods.client.proxy_log()))?;

    // The upgrade was answered by the app, which saw the request's path.
    assert_eq!(seen["status"], 101, "{seen}");
    assert_eq!(
        seen["upgrade"].as_str().map(str::to_ascii_lowercase),
        Some("websocket".to_string()),
        "{seen}"
    );
    assert_eq!(seen["greeting"]["server"], "server", "{seen}");
    assert_eq!(seen["greeting"]["path"], "/chat", "{seen}");
    // Then frames, both ways.
    assert_eq!(seen["echoes"], json!(["hello", "mesh"]), "{seen}");
    assert_eq!(seen["binary_back"], seen["binary_sent"], "{seen}");
    assert_eq!(seen["binary_intact"], true, "{seen}");
    assert_eq!(seen["pong"], true, "{seen}");
    assert_eq!(seen["close_code"], 1000, "{seen}");
    Ok(())
}

#[test]
fn an_upgrade_request_sheds_its_hop_by_hop_headers_and_an_unanswered_one_gets_504()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let pods = PodPair::start(&["--response-timeout", "1s"])?;
    let PodPair { client, server, .. } = &pods;
    let _app = HttpApp::start_in(server.netns(), WS_PORT, "server")?;

    // 1. The app does not switch: it answers the request with the headers it got,
    // which are the request's own, plus the two that ask for the switch.
    let headers = format!("http://{}/headers", pods.server_at(WS_PORT));
    let run = curl_in(client.netns(), &upgrade_args(&["--http1.1", &headers]))?;
    let transfer = run.transfer()?;
    assert_eq!(
        transfer.status,
        200,
        "{:?} {}\n{}\n{}",
        transfer.headers,
        run.body(),
        client.proxy_log(),
        server.proxy_log()
    );
    let seen = run.body().to_ascii_lowercase();
    assert!(seen.contains("upgrade: websocket\n"), "{seen}");
    assert!(seen.contains("connection: upgrade\n"), "{seen}");
    for shed in [
        "x-hop",
        "keep-alive",
        "trellis-orig-proto",
        "trellis-dst-port",
    ] {
        assert!(
            !seen.contains(&format!("{shed}:")),
            "the app saw {shed}:\n{seen}"
        );
    }

    // 2. The app holds the request and never answers: 504 once the timeout passes.
    let hold = format!("http://{}/hold", pods.server_at(WS_PORT));
    let run = curl_in(
        client.netns(),
        &upgrade_args(&["--http1.1", "--max-time", "20", &hold]),
    )?;
    let transfer = run.transfer()?;
    assert_eq!(transfer.status, 504, "{:?} {}", transfer.error, run.stderr);
    assert_eq!(transfer.header("trellis-proxy-error"), Some("timeout"));
    Ok(())
}
