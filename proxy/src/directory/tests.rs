//! Building the lookup tables from pushed resources, and refusing bad ones.

use super::*;

fn service(ns: &str, name: &str, vip: &str, ports: Vec<pb::ServicePort>) -> pb::Resource {
    pb::Resource {
        kind: Some(Kind::Service(pb::Service {
            name: name.into(),
            namespace: ns.into(),
            cluster_ips: vec![vip.into()],
            ports,
        })),
    }
}

fn port(port: u32, target: Option<Target>) -> pb::ServicePort {
    pb::ServicePort {
        name: "http".into(),
        port,
        target,
        protocol: pb::Protocol::Http1 as i32,
    }
}

fn endpoint(address: &str, identity: &str, ready: bool) -> pb::Endpoint {
    pb::Endpoint {
        address: address.into(),
        ports: vec![pb::EndpointPort {
            name: "web".into(),
            port: 8080,
        }],
        identity: identity.into(),
        weight: 0,
        zone: String::new(),
        ready,
        pod: String::new(),
    }
}

fn endpoints(ns: &str, name: &str, list: Vec<pb::Endpoint>) -> pb::Resource {
    pb::Resource {
        kind: Some(Kind::Endpoints(pb::Endpoints {
            name: name.into(),
            namespace: ns.into(),
            endpoints: list,
        })),
    }
}

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn dst(s: &str) -> OrigDstAddr {
    OrigDstAddr(s.parse().unwrap())
}

fn shop() -> Directory {
    let resources = Resources::default()
        .with(
            type_url::SERVICE,
            "1".into(),
            vec![service(
                "shop",
                "web",
                "10.96.0.10",
                vec![
                    port(80, Some(Target::TargetPort(8080))),
                    port(81, Some(Target::TargetPortName("web".into()))),
                ],
            )],
        )
        .unwrap()
        .with(
            type_url::ENDPOINTS,
            "7".into(),
            vec![endpoints(
                "shop",
                "web",
                vec![
                    endpoint("10.1.0.2", WEB, true),
                    endpoint("10.1.0.3", "", true),
                    endpoint("10.1.0.4", WEB, false),
                ],
            )],
        )
        .unwrap();
    Directory::build(resources, Default::default())
}

#[test]
fn a_service_address_resolves_to_its_ready_endpoints_at_the_target_port() {
    let directory = shop();
    for vip in ["10.96.0.10:80", "10.96.0.10:81"] {
        let Destination::Service(target) = directory.resolve(dst(vip)) else {
            panic!("{vip} is a service");
        };
        let addrs: Vec<String> = target
            .endpoints
            .iter()
            .map(|e| e.addr.to_string())
            .collect();
        assert_eq!(addrs, ["10.1.0.2:8080", "10.1.0.3:8080"], "{vip}");
        assert_eq!(
            target.endpoints[0].identity.as_ref().map(|i| i.as_str()),
            Some(WEB)
        );
        assert_eq!(
            target.endpoints[1].identity, None,
            "an endpoint without a sidecar"
        );
        // The balancer picks among the ready endpoints, and skips those tried.
        let first = target.pick(&[]).unwrap().addr;
        let second = target.pick(&[first]).unwrap().addr;
        assert_ne!(first, second);
        assert!(target.pick(&[first, second]).is_none());
    }
}

#[test]
fn a_meshed_pod_address_resolves_to_its_identity_and_the_rest_passes_through() {
    let directory = shop();
    match directory.resolve(dst("10.1.0.2:9999")) {
        Destination::Pod { identity } => assert_eq!(identity.as_str(), WEB),
        other => panic!("expected the pod, got {other:?}"),
    }
    assert!(matches!(
        directory.resolve(dst("10.1.0.3:8080")),
        Destination::Passthrough
    ));
    assert!(matches!(
        directory.resolve(dst("10.96.0.10:82")),
        Destination::Passthrough
    ));
    assert!(matches!(
        directory.resolve(dst("192.0.2.1:443")),
        Destination::Passthrough
    ));
}

#[test]
fn a_service_without_endpoints_resolves_to_an_empty_target() {
    let resources = Resources::default()
        .with(
            type_url::SERVICE,
            "1".into(),
            vec![service("shop", "cart", "10.96.0.11", vec![port(80, None)])],
        )
        .unwrap();
    let Destination::Service(target) =
        Directory::build(resources, Default::default()).resolve(dst("10.96.0.11:80"))
    else {
        panic!("a service");
    };
    assert!(target.pick(&[]).is_none());
}

#[test]
fn an_invalid_set_is_refused_with_the_object_and_what_is_wrong() {
    // That the previous set then stays in force is the discovery client's to keep:
    // `discovery::tests::a_refused_set_is_nacked_at_once_and_its_type_keeps_the_last_good_one`.
    let good = shop().resources().clone();
    for (bad, reason) in [
        (
            endpoints("shop", "web", vec![endpoint("10.1.0.999", "", true)]),
            "Endpoints shop/web: address \"10.1.0.999\" is not an IP address",
        ),
        (
            endpoints(
                "shop",
                "web",
                vec![endpoint("10.1.0.2", "https://x/ns/a/sa/b", true)],
            ),
            "Endpoints shop/web: endpoint 10.1.0.2: ",
        ),
        (
            service("shop", "web", "not-an-ip", vec![]),
            "Service shop/web: cluster IP \"not-an-ip\" is not an IP address",
        ),
        (
            service("shop", "web", "10.96.0.10", vec![port(70000, None)]),
            "Service shop/web: port 70000 is out of range",
        ),
        (pb::Resource { kind: None }, "resource ?: has no kind"),
    ] {
        let type_url = match &bad.kind {
            Some(Kind::Service(_)) => type_url::SERVICE,
            _ => type_url::ENDPOINTS,
        };
        let err = good.with(type_url, "8".into(), vec![bad]).unwrap_err();
        assert!(err.to_string().starts_with(reason), "{err}");
    }
    let wrong_type = good
        .with(
            type_url::ROUTE,
            "1".into(),
            vec![endpoints("shop", "web", vec![])],
        )
        .unwrap_err();
    assert!(
        wrong_type
            .to_string()
            .contains("in a trellis.discovery.v1.Route response")
    );
}

#[test]
fn a_pods_own_endpoints_give_its_address_an_identity_and_no_service_address() {
    // As the controller publishes a meshed pod that backs no service.
    let resources = Resources::default()
        .with(
            type_url::ENDPOINTS,
            "1".into(),
            vec![endpoints(
                "shop",
                "pod.worker-1",
                vec![endpoint("10.1.0.9", WEB, true)],
            )],
        )
        .unwrap();
    let directory = Directory::build(resources, Default::default());
    match directory.resolve(dst("10.1.0.9:8080")) {
        Destination::Pod { identity } => assert_eq!(identity.as_str(), WEB),
        other => panic!("expected the pod, got {other:?}"),
    }
    assert_eq!(directory.view().services.len(), 0);
}

#[test]
fn readiness_needs_a_set_of_every_type() {
    let resources = shop().resources().clone();
    assert!(!resources.has_all(&type_url::ALL));
    let complete = resources
        .with(type_url::ROUTE, "1".into(), vec![])
        .unwrap()
        .with(type_url::AUTHORIZATION_POLICY, "1".into(), vec![])
        .unwrap();
    assert!(complete.has_all(&type_url::ALL));
}
