//! When the controller dies, the mesh keeps serving on the last config for minutes;
//! when it comes back, the proxies resubscribe and converge on what it says now.
//!
//! Service `shop/echo` at a virtual IP balances over pod "a". The controller is killed
//! with SIGKILL. For two minutes, a client keeps calling the virtual IP on new
//! connections (each a new mTLS handshake) and keeps reaching "a", every sidecar stays
//! ready, and the operator edits the YAML to send the service to "b" instead, which no
//! proxy can hear of yet. The controller is started again with the same CA, JWKS and
//! config directory: every sidecar reconnects (`discovery_connected` is 1 again),
//! takes the new config (calls reach "b"), and the controller's `/proxies` lists each
//! of them in sync.
//!
//! # Why two minutes
//! While the controller is gone a proxy serves from what it holds in memory, the last
//! directory discovery pushed and its certificate (24 hours, renewed at 70 %), and
//! asks the controller for nothing on the data path. What does change with time is
//! the discovery client's reconnect pacing, a backoff of 1 s doubling to a 60 s cap:
//! two minutes is past the cap (attempts near 1, 3, 7, 15, 31, 63 and 123 s, each
//! up to 25 % later), so the reconnect that converges is one paced by the cap.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use trellis_tests::{
    ECHO_PORT, EchoPods, Mesh, MeshPod, SERVICE_PORT, echo_service_yaml, host_can_run_pods,
    http_get, wait_until,
};

/// How long a sidecar may take to notice that its stream has broken.
const NOTICE: Duration = Duration::from_secs(5);
/// How long the controller stays dead.
const OUTAGE: Duration = Duration::from_secs(120);
/// A reconnect waits out the backoff (1, 2, 4, 8 … 60 s, plus up to 25 %), then the
/// new config is pushed; this bounds it for an outage past the cap.
const RECONNECT: Duration = Duration::from_secs(90);
/// Between two calls during the outage.
const CALL_EVERY: Duration = Duration::from_millis(500);

#[test]
fn when_the_controller_dies_the_mesh_keeps_serving_for_minutes_and_when_it_returns_the_proxies_converge()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let mut mesh = Mesh::start()?;
    let mut pods = EchoPods::create(&mut mesh)?;
    pods.start()?;
    let EchoPods { a, b, client, .. } = &pods;
    let vip = mesh.virtual_ip(0)?;
    let service = SocketAddrV4::new(vip, SERVICE_PORT);
    mesh.write_config("echo.yaml", &echo_service_yaml(vip, ECHO_PORT, None, &[a]))?;
    client.wait_for_config("echo → a", NOTICE, |c| {
        c.endpoints_of(service) == [SocketAddrV4::new(a.ip, ECHO_PORT)]
    })?;
    assert_eq!(client.who_answers(service)?, "a");

    // 1. The controller dies; every sidecar notices its stream is gone.
    mesh.kill_controller()?;
    for pod in [a, b, client] {
        let noticed = wait_until(NOTICE, || {
            pod.metrics()
                .is_ok_and(|m| m.sum("discovery_connected", &[]) == 0.0)
        });
        assert!(noticed, "{} still reports a discovery stream", pod.name);
    }

    // 2. Meanwhile the operator sends the service to b. Nobody can hear of it yet.
    mesh.write_config("echo.yaml", &echo_service_yaml(vip, ECHO_PORT, None, &[b]))?;

    // 3. For the whole outage, new connections still reach a, and no sidecar stops
    // being ready.
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < OUTAGE {
        assert_eq!(
            client.who_answers(service)?,
            "a",
            "call {calls} after {:?} without the controller",
            started.elapsed()
        );
        for pod in [a, b, client] {
            let (status, body) = http_get(pod.admin(), "/ready")?;
            assert_eq!(status, 200, "{} is not ready: {body}", pod.name);
        }
        calls += 1;
        std::thread::sleep(CALL_EVERY);
    }
    eprintln!("{calls} calls over {OUTAGE:?} without the controller all reached a");

    // 4. The controller comes back with the same CA, JWKS and config directory.
    mesh.start_controller()?;
    let took =
        client.wait_for_config("echo → b from the restarted controller", RECONNECT, |c| {
            c.endpoints_of(service) == [SocketAddrV4::new(b.ip, ECHO_PORT)]
        })?;
    eprintln!("the client's sidecar had the new config {took:?} after the restart");
    assert_eq!(client.who_answers(service)?, "b");

    // 5. Every sidecar has resubscribed, and the controller sees each one in sync.
    for pod in [a, b, client] {
        let reconnected = wait_until(RECONNECT, || {
            pod.metrics()
                .is_ok_and(|m| m.sum("discovery_connected", &[]) == 1.0)
        });
        assert!(
            reconnected,
            "{} did not reconnect\n{}",
            pod.name,
            pod.proxy_log()
        );
    }
    let mut last = serde_json::Value::Null;
    let all_in_sync = wait_until(RECONNECT, || {
        last = mesh.proxies().unwrap_or_default();
        [a, b, client].iter().all(|pod| in_sync(&last, pod))
    });
    assert!(
        all_in_sync,
        "the controller's /proxies does not show every sidecar in sync:\n{last:#}"
    );
    Ok(())
}

/// Whether `/proxies` lists `pod`'s sidecar with every type it subscribed to ACKed.
fn in_sync(proxies: &serde_json::Value, pod: &MeshPod) -> bool {
    proxies["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["pod"] == pod.name.as_str() && p["namespace"] == pod.namespace.as_str())
        .any(|p| {
            p["types"].as_object().is_some_and(|types| {
                types.len() == 4 && types.values().all(|t| t["in_sync"] == true)
            })
        })
}
