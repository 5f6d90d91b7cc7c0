//! A WebSocket upgrade passes through the mesh.
//!
//! The server pod runs `tests/py/ws_server.py`, the client pod `tests/py/ws_client.py`,
//! both with the websockets package. The client's HTTP/1.1 `Upgrade: websocket`
//! request must reach the app and its `101 Switching Protocols` come back; from then
//! on the connection is WebSocket frames both ways, which the sidecars must carry
//! untouched: text, a 1 MiB binary message, a ping and a clean close.

use serde_json::json;
use trellis_tests::{PodPair, PyServer, host_can_run_pods, py_client};

const WS_PORT: u16 = 7070;

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
