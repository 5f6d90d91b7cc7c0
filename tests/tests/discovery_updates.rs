//! An operator edits the mesh's YAML and the proxies follow, without a restart.
//!
//! Service `shop/echo` has a virtual IP and one port, 80, which targets the echo apps'
//! port 7070. Two server pods, "a" and "b", run echo apps that answer with their own
//! name; "b" runs a second one on 7071 that answers as "b:7071". A client pod calls
//! the virtual IP. The operator edits `echo.yaml` in the controller's config directory
//! four times: an endpoint is added, one is removed, the port's target changes, and
//! its protocol is pinned to TCP. After each edit the client's sidecar shows the new
//! config on `/config` within a few seconds (a deadline, not a measurement: the time
//! each edit took is printed), and its calls go where the edit says, and are handled
//! as the edit says (opaque TCP after the last one, never detected).

use std::net::SocketAddrV4;
use std::time::Duration;

use trellis_tests::{
    ECHO_PORT, EchoPods, EchoServer, Mesh, MeshPod, SERVICE_PORT, echo_service_yaml,
    host_can_run_pods,
};

/// The issue asks for a second; this deadline only keeps a lost push from hanging.
const CONVERGE: Duration = Duration::from_secs(5);
/// Calls per check: with two endpoints taken in turn, enough to see both.
const CALLS: usize = 6;

/// Who answered each of [`CALLS`] calls to `service` from `client`, in order.
fn answers(client: &MeshPod, service: SocketAddrV4) -> anyhow::Result<Vec<String>> {
    (0..CALLS).map(|_| client.who_answers(service)).collect()
}

#[test]
fn an_operator_edits_the_mesh_yaml_and_the_proxies_follow_without_restart() -> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let mut mesh = Mesh::start()?;
    let mut pods = EchoPods::create(&mut mesh)?;
    pods.start()?;
    let _b_7071 = EchoServer::start_named_in(pods.b.netns(), 7071, "b:7071")?;
    let EchoPods { a, b, client, .. } = &pods;
    let vip = mesh.virtual_ip(0)?;
    let service = SocketAddrV4::new(vip, SERVICE_PORT);
    let at = |pod: &MeshPod, port| SocketAddrV4::new(pod.ip, port);
    let sidecar = client.sidecar_pid();

    // 0. The service has one endpoint, a.
    mesh.write_config("echo.yaml", &echo_service_yaml(vip, ECHO_PORT, None, &[a]))?;
    let took = client.wait_for_config("echo with endpoint a", CONVERGE, |c| {
        c.endpoints_of(service) == [at(a, ECHO_PORT)]
    })?;
    eprintln!("echo → a: in the client's sidecar after {took:?}");
    assert!(answers(client, service)?.iter().all(|who| who == "a"));

    // 1. An endpoint is added: b. Calls are spread over both.
    mesh.write_config(
        "echo.yaml",
        &echo_service_yaml(vip, ECHO_PORT, None, &[a, b]),
    )?;
    let took = client.wait_for_config("b added", CONVERGE, |c| {
        c.endpoints_of(service) == [at(a, ECHO_PORT), at(b, ECHO_PORT)]
    })?;
    eprintln!("b added: in the client's sidecar after {took:?}");
    let seen = answers(client, service)?;
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "both endpoints take calls: {seen:?}"
    );

    // 2. An endpoint is removed: a. Only b answers from now on.
    mesh.write_config("echo.yaml", &echo_service_yaml(vip, ECHO_PORT, None, &[b]))?;
    let took = client.wait_for_config("a removed", CONVERGE, |c| {
        c.endpoints_of(service) == [at(b, ECHO_PORT)]
    })?;
    eprintln!("a removed: in the client's sidecar after {took:?}");
    assert_eq!(answers(client, service)?, vec!["b"; CALLS]);

    // 3. The port now targets 7071: the calls follow to b's other app.
    mesh.write_config("echo.yaml", &echo_service_yaml(vip, 7071, None, &[b]))?;
    let took = client.wait_for_config("target port 7071", CONVERGE, |c| {
        c.endpoints_of(service) == [at(b, 7071)]
    })?;
    eprintln!("target port 7071: in the client's sidecar after {took:?}");
    assert_eq!(answers(client, service)?, vec!["b:7071"; CALLS]);

    // 4. The port's protocol, detected until now, is pinned to opaque TCP: the
    // sidecar shows it, and from then on forwards the calls without reading their
    // first bytes (the `opaque_port` detection outcome, where until now it read them
    // and found them `opaque`), and they still arrive.
    assert_eq!(client.config()?.protocol_of(service), Some("detect"));
    let outbound = |protocol| {
        let metrics = client.metrics()?;
        anyhow::Ok(metrics.sum(
            "detect_total",
            &[("direction", "outbound"), ("protocol", protocol)],
        ))
    };
    let (detected, skipped) = (outbound("opaque")?, outbound("opaque_port")?);
    assert!(detected >= CALLS as f64, "the calls so far were detected");
    assert_eq!(skipped, 0.0);
    mesh.write_config(
        "echo.yaml",
        &echo_service_yaml(vip, 7071, Some("TCP"), &[b]),
    )?;
    let took = client.wait_for_config("protocol TCP", CONVERGE, |c| {
        c.protocol_of(service) == Some("tcp")
    })?;
    eprintln!("protocol TCP: in the client's sidecar after {took:?}");
    assert_eq!(answers(client, service)?, vec!["b:7071"; CALLS]);
    assert_eq!(outbound("opaque_port")?, CALLS as f64, "never detected");
    assert_eq!(outbound("opaque")?, detected, "none read for detection");

    // Every change arrived over the one stream the sidecar opened at start.
    assert_eq!(
        client.sidecar_pid(),
        sidecar,
        "the client's sidecar restarted"
    );
    let log = client.proxy_log_text();
    assert_eq!(log.matches("discovery stream open").count(), 1, "{log}");
    let metrics = client.metrics()?;
    assert_eq!(metrics.sum("discovery_connected", &[]), 1.0);
    assert_eq!(
        metrics.sum("discovery_updates_total", &[("outcome", "nack")]),
        0.0,
        "{}",
        metrics.text
    );
    Ok(())
}
