//! A set the proxy cannot accept is NACKed, and the proxy keeps serving on the
//! previous version; the next good set is applied as usual.
//!
//! # Why a scripted controller
//! The real controller cannot be made to send such a set: every check a proxy makes
//! before applying a set (addresses parse, ports are in range, SPIFFE IDs parse, each
//! resource is of its response's type) the controller makes first, with the same
//! parsers, and refuses the object at its source (README, "The file source"). So this
//! story is told at the protocol level: a controller scripted by the test
//! ([`ScriptedController`]: the real identity service, and a discovery service that
//! sends what the test says) pushes a bad set to a real sidecar, as a controller of
//! another version or with a bug could. The other half, the controller recording a
//! NACK (`/proxies` shows the nonce, version and error; `discovery_nacks_total`
//! counts it), is the controller's own test
//! `a_proxy_is_pushed_every_change_and_its_answers_are_recorded`
//! (control-plane/src/discovery/tests.rs).
//!
//! Service `shop/echo` at a virtual IP balances over pod "a". The controller then
//! pushes an Endpoints set that would move it to "b", except that one of its
//! endpoints is a host name, not an address.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::{resource::Kind, service_port::Target, type_url};
use trellis_tests::{
    ECHO_PORT, EchoPods, Mesh, MeshPod, SERVICE_PORT, ScriptedController, World, host_can_run_pods,
};

/// Ample for a sidecar to open its stream, or to answer a response.
const ANSWER: Duration = Duration::from_secs(10);

#[test]
fn a_set_the_proxy_cannot_accept_is_nacked_and_the_previous_one_stays_in_force()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let mut mesh = Mesh::without_controller()?;
    let mut pods = EchoPods::create(&mut mesh)?;
    let vip = mesh.virtual_ip(0)?;
    let service = SocketAddrV4::new(vip, SERVICE_PORT);
    let world = World::from([
        (
            type_url::SERVICE,
            ("v1".to_string(), vec![echo_service(vip)]),
        ),
        (
            type_url::ENDPOINTS,
            (
                "v1".to_string(),
                vec![echo_endpoints(&[endpoint_of(&pods.a)])],
            ),
        ),
    ]);
    let mut controller = ScriptedController::start(&mesh, world)?;
    pods.start()?;
    let EchoPods { a, b, client, .. } = &pods;
    assert_eq!(client.who_answers(service)?, "a");
    let stream = controller.stream_of("client", ANSWER)?;

    // 1. The bad set: b, and an endpoint whose address is a host name.
    let mut misaddressed = endpoint_of(b);
    misaddressed.address = "echo-2.shop.svc.cluster.local".into();
    let bad = stream.send(
        type_url::ENDPOINTS,
        "v2",
        vec![echo_endpoints(&[endpoint_of(b), misaddressed])],
    )?;

    // 2. The proxy NACKs it: the nonce, the version it still runs, and why.
    let nack = stream.answer_to(&bad, ANSWER)?;
    let error = nack
        .error_detail
        .as_ref()
        .unwrap_or_else(|| panic!("the bad set was ACKed: {nack:?}"));
    assert_eq!(nack.type_url, type_url::ENDPOINTS);
    assert_eq!(nack.version_info, "v1", "a NACK names the version in force");
    assert_eq!(error.code, 3, "INVALID_ARGUMENT");
    assert!(
        error.message.contains("shop/echo") && error.message.contains("echo-2.shop.svc"),
        "the reason names the object and the bad address: {}",
        error.message
    );

    // 3. Nothing of the bad set was applied, not even its good endpoint: the
    // previous version is in force and calls still reach a.
    let config = client.config()?;
    assert_eq!(config.version(type_url::ENDPOINTS), Some("v1"), "{config}");
    assert_eq!(
        config.endpoints_of(service),
        [SocketAddrV4::new(a.ip, ECHO_PORT)]
    );
    for _ in 0..4 {
        assert_eq!(client.who_answers(service)?, "a");
    }
    let metrics = client.metrics()?;
    let updates = |outcome| {
        metrics.sum(
            "discovery_updates_total",
            &[("type_url", type_url::ENDPOINTS), ("outcome", outcome)],
        )
    };
    assert_eq!(updates("nack"), 1.0, "{}", metrics.text);
    assert_eq!(updates("ack"), 1.0, "only the first set: {}", metrics.text);
    assert!(
        client
            .proxy_log_text()
            .contains("refused a discovery update; the previous one stays in force"),
        "{}",
        client.proxy_log()
    );

    // 4. The stream goes on: the next good set is ACKed, and calls follow it to b.
    let good = stream.send(
        type_url::ENDPOINTS,
        "v3",
        vec![echo_endpoints(&[endpoint_of(b)])],
    )?;
    let ack = stream.answer_to(&good, ANSWER)?;
    assert!(
        ack.error_detail.is_none(),
        "the good set was NACKed: {ack:?}"
    );
    assert_eq!(ack.version_info, "v3");
    assert_eq!(client.who_answers(service)?, "b");
    Ok(())
}

/// `shop/echo`: port 80 on `vip`, to the endpoints' port 7070.
fn echo_service(vip: Ipv4Addr) -> pb::Resource {
    pb::Resource {
        kind: Some(Kind::Service(pb::Service {
            name: "echo".into(),
            namespace: "shop".into(),
            cluster_ips: vec![vip.to_string()],
            ports: vec![pb::ServicePort {
                port: SERVICE_PORT.into(),
                target: Some(Target::TargetPort(ECHO_PORT.into())),
                ..Default::default()
            }],
        })),
    }
}

fn echo_endpoints(endpoints: &[pb::Endpoint]) -> pb::Resource {
    pb::Resource {
        kind: Some(Kind::Endpoints(pb::Endpoints {
            name: "echo".into(),
            namespace: "shop".into(),
            endpoints: endpoints.to_vec(),
        })),
    }
}

fn endpoint_of(pod: &MeshPod) -> pb::Endpoint {
    pb::Endpoint {
        address: pod.ip.to_string(),
        identity: pod.identity.clone(),
        ready: true,
        weight: 1,
        pod: format!("{}/{}", pod.namespace, pod.name),
        ..Default::default()
    }
}
