//! When the mesh cannot deliver a request, the caller hears why, in its own protocol.
//!
//! An HTTP caller gets a status (503: no ready endpoints; 502: the connection to the
//! app failed; 504: no response headers in time) with a `trellis-proxy-error` header
//! and a short text body naming the reason. A gRPC caller gets a trailers-only
//! response it understands: `grpc-status` 14 (UNAVAILABLE) or 4 (DEADLINE_EXCEEDED),
//! with a `grpc-message` that names the reason and says it came from trellis. The
//! callers are curl and a grpcio client, as apps in the client pod. The response
//! timeout counts from the end of the request body, so a slow upload is not a 504.

use std::net::SocketAddrV4;
use std::time::Duration;

use trellis_tests::{
    CurlRun, ECHO_PORT, HttpApp, MeshPod, PodPair, PyServer, SERVICE_PORT, curl_in,
    echo_service_yaml, host_can_run_pods, pattern, py_client,
};

const HTTP_PORT: u16 = 7070;
const GRPC_PORT: u16 = 7071;
const CURL: (&str, &str) = ("curl", "curl");
/// The proxies' response timeout in the 504 story, and how long the apps take there.
const RESPONSE_TIMEOUT: &str = "2s";
const APP_DELAY_SECONDS: u64 = 10;
/// The proxies' response timeout in the slow-upload story, and an upload that takes
/// several times as long (about four seconds at the rate curl is held to).
const SHORT_TIMEOUT: &str = "1s";
const SLOW_UPLOAD_BYTES: usize = 160 * 1024;
const SLOW_UPLOAD_RATE: &str = "40k";
/// Ample for a push to reach a sidecar.
const PUSHED: Duration = Duration::from_secs(10);

/// Asserts curl got `status` from the proxy itself: the error header and a body.
fn assert_proxy_error(run: &CurlRun, status: u16, client: &MeshPod) -> anyhow::Result<()> {
    let transfer = run.transfer()?;
    assert_eq!(
        transfer.status,
        status,
        "curl: {:?} {}\n{}",
        transfer.error,
        run.stderr,
        client.proxy_log()
    );
    let reason = transfer.header("trellis-proxy-error").unwrap_or_default();
    assert!(
        !reason.trim().is_empty(),
        "a {status} without a trellis-proxy-error header: {:?}",
        transfer.headers
    );
    assert!(
        !run.body().trim().is_empty(),
        "a {status} without a body naming the reason"
    );
    eprintln!(
        "{status}: trellis-proxy-error: {reason}; body: {}",
        run.body()
    );
    Ok(())
}

/// Calls `target` with the grpcio client (`scenario ARGS`) and asserts it failed with
/// `code` and a message from trellis.
fn assert_grpc_error(
    client: &MeshPod,
    target: SocketAddrV4,
    call: &[&str],
    code: &str,
) -> anyhow::Result<()> {
    let target = target.to_string();
    let args: Vec<&str> = [target.as_str()]
        .into_iter()
        .chain(call.iter().copied())
        .collect();
    let result = py_client(client, "grpc_client.py", &args)?;
    assert_eq!(result["code"], code, "{result}\n{}", client.proxy_log());
    let details = result["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("trellis"),
        "grpc-message {details:?} does not say it came from trellis: {result}"
    );
    Ok(())
}

#[test]
fn with_no_ready_endpoint_http_callers_get_503_and_grpc_callers_unavailable() -> anyhow::Result<()>
{
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let pods = PodPair::start(&[])?;
    let PodPair { client, mesh, .. } = &pods;
    let vip = mesh.virtual_ip(0)?;
    let service = SocketAddrV4::new(vip, SERVICE_PORT);
    mesh.write_config("echo.yaml", &echo_service_yaml(vip, ECHO_PORT, None, &[]))?;
    client.wait_for_config("service echo, without endpoints", PUSHED, |c| {
        c.protocol_of(service).is_some() && c.endpoints_of(service).is_empty()
    })?;

    let run = curl_in(client.netns(), &[&format!("http://{service}/who")])?;
    assert_proxy_error(&run, 503, client)?;
    assert_grpc_error(client, service, &["unary", "hello"], "UNAVAILABLE")
}

#[test]
fn when_nothing_listens_on_the_app_port_http_callers_get_502_and_grpc_callers_unavailable()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    // Both sidecars are up; no app listens in the server pod.
    let pods = PodPair::start(&[])?;
    let PodPair { client, .. } = &pods;

    let run = curl_in(
        client.netns(),
        &[&format!("http://{}/who", pods.server_at(HTTP_PORT))],
    )?;
    assert_proxy_error(&run, 502, client)?;
    assert_grpc_error(
        client,
        pods.server_at(GRPC_PORT),
        &["unary", "hello"],
        "UNAVAILABLE",
    )
}

#[test]
fn when_the_app_answers_too_late_http_callers_get_504_and_grpc_callers_deadline_exceeded()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let pods = PodPair::start(&["--response-timeout", RESPONSE_TIMEOUT])?;
    let PodPair { client, server, .. } = &pods;
    let _http = HttpApp::start_in(server.netns(), HTTP_PORT, "server")?;
    let grpc_port = GRPC_PORT.to_string();
    let _grpc = PyServer::start(server, "grpc_server.py", &[&grpc_port, "server"])?;
    let delay = APP_DELAY_SECONDS.to_string();

    // An answer in time still passes: the timeout is not a blanket failure.
    let who = format!("http://{}/who", pods.server_at(HTTP_PORT));
    let run = curl_in(client.netns(), &[&who])?;
    assert_eq!(run.transfer()?.status, 200, "{}", run.stderr);

    let slow_ms = APP_DELAY_SECONDS * 1000;
    let slow = format!("http://{}/slow/{slow_ms}", pods.server_at(HTTP_PORT));
    let run = curl_in(client.netns(), &[&slow])?;
    assert_proxy_error(&run, 504, client)?;
    assert_grpc_error(
        client,
        pods.server_at(GRPC_PORT),
        &["slow", &delay],
        "DEADLINE_EXCEEDED",
    )
}

#[test]
fn the_response_timeout_counts_from_the_end_of_the_upload_so_a_slow_upload_succeeds_and_a_slow_answer_gets_504()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let pods = PodPair::start(&["--response-timeout", SHORT_TIMEOUT])?;
    let PodPair {
        client,
        server,
        mesh,
    } = &pods;
    let _http = HttpApp::start_in(server.netns(), HTTP_PORT, "server")?;

    // 1. curl uploads for several timeouts (rate-limited); the app answers as soon
    // as the last byte arrives, and the answer comes through.
    let body = mesh.dir().join("slow-upload.bin");
    std::fs::write(&body, pattern(SLOW_UPLOAD_BYTES))?;
    let data = format!("@{}", body.display());
    let upload = format!("http://{}/upload", pods.server_at(HTTP_PORT));
    let started = std::time::Instant::now();
    let run = curl_in(
        client.netns(),
        &[
            "--limit-rate",
            SLOW_UPLOAD_RATE,
            "--data-binary",
            &data,
            &upload,
        ],
    )?;
    let transfer = run.transfer()?;
    assert_eq!(
        transfer.status,
        200,
        "{:?} {} {}\n{}\n{}",
        transfer.headers,
        run.body(),
        run.stderr,
        client.proxy_log(),
        server.proxy_log()
    );
    assert_eq!(
        run.body(),
        format!("received {SLOW_UPLOAD_BYTES} bytes, pattern intact\n")
    );
    eprintln!(
        "a {SLOW_UPLOAD_BYTES}-byte upload at {SLOW_UPLOAD_RATE}/s took {:?}, response timeout {SHORT_TIMEOUT}",
        started.elapsed()
    );

    // 2. A request whose answer takes longer than the timeout still gets 504.
    let slow = format!(
        "http://{}/slow/{}",
        pods.server_at(HTTP_PORT),
        APP_DELAY_SECONDS * 1000
    );
    let run = curl_in(client.netns(), &[&slow])?;
    assert_proxy_error(&run, 504, client)
}

#[test]
fn when_the_peer_sidecar_cannot_be_reached_http_callers_get_502_and_grpc_callers_unavailable()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    // The server pod is still there and still known to discovery, but its sidecar
    // is gone: nothing accepts on its inbound port.
    let mut pods = PodPair::start(&[])?;
    let _http = HttpApp::start_in(pods.server.netns(), HTTP_PORT, "server")?;
    pods.server.kill_sidecar()?;
    let client = &pods.client;

    let run = curl_in(
        client.netns(),
        &[&format!("http://{}/who", pods.server_at(HTTP_PORT))],
    )?;
    assert_proxy_error(&run, 502, client)?;
    assert_eq!(
        run.transfer()?.header("trellis-proxy-error"),
        Some("connect"),
        "{}",
        run.body()
    );
    assert_grpc_error(
        client,
        pods.server_at(GRPC_PORT),
        &["unary", "hello"],
        "UNAVAILABLE",
    )
}
