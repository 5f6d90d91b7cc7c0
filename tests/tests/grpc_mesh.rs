//! gRPC through the sidecars, between a grpcio client and a grpcio server.
//!
//! The server pod runs `tests/py/grpc_server.py` (service `trellis.test.Echo`, raw
//! bytes, no generated code); the client pod runs `tests/py/grpc_client.py`, which
//! prints what it saw as JSON. gRPC is HTTP/2 with trailers: the status of a call
//! travels in the trailers, so a proxy that loses or reorders them turns every call
//! into an error, and one that buffers a stream deadlocks a ping-pong.

use std::time::Duration;

use serde_json::{Value, json};
use trellis_tests::{
    MeshPod, Metrics, PodPair, PyServer, host_can_run_pods, py_client, wait_until,
};

const GRPC_PORT: u16 = 7070;
/// Messages in the ping-pong: each waits for the echo of the one before.
const PINGS: usize = 20;
/// `-bin` metadata the server sets, as the client prints it (hex).
const DETAIL_BIN: &str = "000102feff";
/// Ample for a counter to catch up with a response the client already has.
const COUNTED: Duration = Duration::from_secs(10);

/// The two pods and the grpcio server, "server", on [`GRPC_PORT`] of the server pod.
fn start() -> anyhow::Result<(PodPair, PyServer)> {
    let pods = PodPair::start(&[])?;
    let port = GRPC_PORT.to_string();
    let app = PyServer::start(&pods.server, "grpc_server.py", &[&port, "server"])?;
    Ok((pods, app))
}

/// Runs one call of the grpcio client in the client pod (`scenario ARGS`).
fn call(pods: &PodPair, scenario: &[&str]) -> anyhow::Result<Value> {
    let target = pods.server_at(GRPC_PORT).to_string();
    let args: Vec<&str> = [target.as_str()]
        .into_iter()
        .chain(scenario.iter().copied())
        .collect();
    py_client(&pods.client, "grpc_client.py", &args)
}

/// Fails with the client sidecar's log unless `result` has `code`.
fn assert_code(result: &Value, code: &str, client: &MeshPod) {
    assert_eq!(result["code"], code, "{result}\n{}", client.proxy_log());
}

#[test]
fn a_grpcio_client_calls_a_grpcio_server_through_the_mesh_unary_and_bidi_streaming()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let client = &pods.client;

    // 1. Unary: the reply, the server's headers and its trailers all arrive.
    let unary = call(&pods, &["unary", "hello through the mesh"])?;
    assert_code(&unary, "OK", client);
    assert_eq!(unary["replies"], json!(["hello through the mesh"]));
    assert_eq!(unary["initial_metadata"]["x-server-name"], "server");
    assert_eq!(unary["trailing_metadata"]["x-echo-trailer"], "unary");

    // 2. Bidirectional streaming, ping-pong: each message is sent only once the
    // previous one's echo came back, so neither direction may wait for the other.
    let bidi = call(&pods, &["bidi", &PINGS.to_string()])?;
    assert_code(&bidi, "OK", client);
    let pings: Vec<String> = (0..PINGS).map(|n| format!("ping {n}")).collect();
    assert_eq!(bidi["replies"], json!(pings));
    assert_eq!(bidi["initial_metadata"]["x-server-name"], "server");
    assert_eq!(bidi["trailing_metadata"]["x-echo-count"], PINGS.to_string());
    Ok(())
}

#[test]
fn status_codes_messages_and_trailers_of_failed_calls_arrive_intact() -> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let (pods, _app) = start()?;

    // The app fails each call on purpose, UNAVAILABLE included: that one must reach
    // the client as the app's own, with its message, not as the mesh's.
    let failures = [
        (3, "INVALID_ARGUMENT", "the order has no items"),
        (5, "NOT_FOUND", "no such order: 42"),
        (7, "PERMISSION_DENIED", "only the owner may cancel"),
        (8, "RESOURCE_EXHAUSTED", "quota of 10 orders a minute"),
        (14, "UNAVAILABLE", "the warehouse is closed, try tomorrow"),
    ];
    for (code, name, message) in failures {
        let reason = format!("reason-{code}");
        let result = call(&pods, &["fail", &code.to_string(), message, &reason])?;
        assert_code(&result, name, &pods.client);
        assert_eq!(result["details"], message, "{result}");
        assert_eq!(result["trailing_metadata"]["x-reason"], reason, "{result}");
        assert_eq!(
            result["trailing_metadata"]["x-detail-bin"], DETAIL_BIN,
            "{result}"
        );
    }
    Ok(())
}

#[test]
fn grpc_responses_are_counted_by_their_grpc_status() -> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair { client, server, .. } = &pods;
    assert_code(&call(&pods, &["unary", "hello"])?, "OK", client);
    let failed = call(&pods, &["fail", "5", "no such order", "reason"])?;
    assert_code(&failed, "NOT_FOUND", client);

    // HTTP says 200 for both; only grpc-status tells them apart, on each side.
    let sides = [
        (client, "outbound", &server.identity),
        (server, "inbound", &client.identity),
    ];
    for (pod, direction, peer_id) in sides {
        let count = |metrics: &Metrics, grpc_status| {
            let labels = [
                ("direction", direction),
                ("peer_id", peer_id.as_str()),
                ("status_class", "2xx"),
                ("grpc_status", grpc_status),
            ];
            metrics.sum("response_total", &labels)
        };
        // A response is counted when its trailers pass, maybe after the client has them.
        let _ = wait_until(COUNTED, || {
            pod.metrics()
                .is_ok_and(|m| count(&m, "0") == 1.0 && count(&m, "5") == 1.0)
        });
        let metrics = pod.metrics()?;
        for grpc_status in ["0", "5"] {
            assert_eq!(
                count(&metrics, grpc_status),
                1.0,
                "{direction} responses with grpc_status {grpc_status} on the sidecar of {}:\n{}",
                pod.name,
                metrics.text
            );
        }
    }
    Ok(())
}
