//! Translation against objects as the API server serves them: a shop with a
//! dual-stack web service spread over three slices (one per address family, one
//! written by an older controller), a headless database, an ExternalName service
//! and kube-dns (`testdata/`), and the fuzz-filled objects of the Kubernetes API's
//! own test data (`testdata/v1.33.0/`). Each translation is asserted to the exact
//! discovery message.

use std::collections::HashMap;

use k8s_openapi::api::discovery::v1::EndpointConditions;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;
use crate::model::validate;

pub const SERVICES: &str = include_str!("../testdata/services.json");
pub const SLICES: &str = include_str!("../testdata/endpointslices.json");
pub const PODS: &str = include_str!("../testdata/pods.json");
pub const ROUTES: &str = include_str!("../testdata/routes.json");
pub const POLICIES: &str = include_str!("../testdata/authorizationpolicies.json");

/// The items of a `kubectl get -o json` List.
pub fn items<T: DeserializeOwned>(list: &str) -> Vec<T> {
    let list: serde_json::Value = serde_json::from_str(list).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| serde_json::from_value(item.clone()).unwrap())
        .collect()
}

/// The item of `list` named `name`.
pub fn named<T: DeserializeOwned + kube::Resource>(list: &str, name: &str) -> T {
    items::<T>(list)
        .into_iter()
        .find(|item| item.meta().name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in the fixture"))
}

const TRUST_DOMAIN: &str = "cluster.local";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn port(
    name: &str,
    port: u32,
    target: service_port::Target,
    protocol: pb::Protocol,
) -> pb::ServicePort {
    pb::ServicePort {
        name: name.into(),
        port,
        target: Some(target),
        protocol: protocol as i32,
    }
}

fn number(port: u32) -> service_port::Target {
    service_port::Target::TargetPort(port)
}

fn name(port: &str) -> service_port::Target {
    service_port::Target::TargetPortName(port.into())
}

#[test]
fn a_dual_stack_service_keeps_both_cluster_ips_and_its_tcp_ports_with_their_hints() {
    let web = service(&named(SERVICES, "web")).unwrap().unwrap();
    assert_eq!(
        web,
        pb::Service {
            name: "web".into(),
            namespace: "shop".into(),
            cluster_ips: vec!["10.96.12.34".into(), "fd00:10:96::1a2b".into()],
            ports: vec![
                port("http", 80, name("http"), pb::Protocol::Http1),
                port("h2c", 8081, number(8081), pb::Protocol::Http2),
                port("grpc", 9090, name("grpc"), pb::Protocol::Grpc),
                port("metrics", 9100, number(9100), pb::Protocol::Unspecified),
                // No appProtocol, but listed in trellis.io/opaque-ports.
                port("mysql", 3306, number(3306), pb::Protocol::Tcp),
                // syslog is UDP: the mesh does not carry it.
            ],
        }
    );
    validate(&Object::Service(web)).unwrap();
}

#[test]
fn a_headless_service_has_no_cluster_ip() {
    let db = service(&named(SERVICES, "db")).unwrap().unwrap();
    assert_eq!(
        db,
        pb::Service {
            name: "db".into(),
            namespace: "shop".into(),
            cluster_ips: vec![],
            ports: vec![port("postgres", 5432, number(5432), pb::Protocol::Tcp)],
        }
    );
}

#[test]
fn an_external_name_service_has_nothing_to_route() {
    assert_eq!(service(&named(SERVICES, "billing")), Ok(None));
}

#[test]
fn kube_dns_keeps_its_tcp_ports_only_so_port_53_is_not_listed_twice() {
    let dns = service(&named(SERVICES, "kube-dns")).unwrap().unwrap();
    assert_eq!(dns.cluster_ips, ["10.96.0.10"]);
    assert_eq!(
        dns.ports,
        [
            port("dns-tcp", 53, number(53), pb::Protocol::Unspecified),
            port("metrics", 9153, number(9153), pb::Protocol::Unspecified),
        ]
    );
    validate(&Object::Service(dns)).unwrap();
}

#[test]
fn app_protocols_become_protocol_hints() {
    for (app, hint) in [
        (Some("kubernetes.io/h2c"), pb::Protocol::Http2),
        (Some("h2c"), pb::Protocol::Http2),
        (Some("http"), pb::Protocol::Http1),
        (Some("HTTP"), pb::Protocol::Http1),
        (Some("kubernetes.io/ws"), pb::Protocol::Http1),
        (Some("grpc"), pb::Protocol::Grpc),
        (Some("tcp"), pb::Protocol::Tcp),
        (Some("opaque"), pb::Protocol::Tcp),
        (Some("https"), pb::Protocol::Tcp),
        (Some("kubernetes.io/wss"), pb::Protocol::Tcp),
        (Some("mysql"), pb::Protocol::Tcp),
        (Some("example.com/custom"), pb::Protocol::Unspecified),
        (None, pb::Protocol::Unspecified),
    ] {
        assert_eq!(app_protocol(app), hint, "{app:?}");
    }
}

#[test]
fn the_opaque_ports_annotation_lists_ports_and_ranges_and_wins_over_app_protocol() {
    assert_eq!(
        opaque_ports(" 3306, 8000-8100 ,"),
        Ok(vec![3306..=3306, 8000..=8100])
    );
    assert_eq!(opaque_ports(""), Ok(vec![]));
    for bad in ["mysql", "0", "70000", "9000-8000", "80-"] {
        assert!(opaque_ports(bad).is_err(), "{bad:?}");
    }

    let mut web: Service = named(SERVICES, "web");
    let annotations = web.metadata.annotations.as_mut().unwrap();
    annotations.insert(OPAQUE_PORTS.into(), "8000-9100".into());
    let ports = service(&web).unwrap().unwrap().ports;
    let hints: Vec<(u32, pb::Protocol)> = ports
        .iter()
        .map(|p| (p.port, pb::Protocol::try_from(p.protocol).unwrap()))
        .collect();
    assert_eq!(
        hints,
        [
            (80, pb::Protocol::Http1),
            (8081, pb::Protocol::Tcp),
            (9090, pb::Protocol::Tcp),
            (9100, pb::Protocol::Tcp),
            (3306, pb::Protocol::Unspecified),
        ]
    );

    let annotations = web.metadata.annotations.as_mut().unwrap();
    annotations.insert(OPAQUE_PORTS.into(), "3306,mysql".into());
    let rejection = service(&web).unwrap_err();
    assert_eq!(rejection.origin, "Service shop/web");
    assert_eq!(
        rejection.field,
        "metadata.annotations[trellis.io/opaque-ports]"
    );
    assert!(
        rejection.message.contains("\"mysql\""),
        "{}",
        rejection.message
    );
}

/// The identities of the fixture's pods, by `namespace/name`.
fn identities() -> HashMap<String, String> {
    items::<Pod>(PODS)
        .iter()
        .filter_map(|pod| {
            let key = key(
                pod.metadata.namespace.as_deref()?,
                pod.metadata.name.as_deref()?,
            );
            Some((key, pod_identity(pod, TRUST_DOMAIN)?))
        })
        .collect()
}

fn slices_of<'a>(all: &'a [EndpointSlice], service: &'a str) -> ServiceSlices<'a> {
    let first = all
        .iter()
        .find(|s| s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL] == service)
        .unwrap();
    ServiceSlices {
        namespace: first.metadata.namespace.as_deref().unwrap(),
        name: service,
        slices: all
            .iter()
            .filter(|s| s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL] == service)
            .collect(),
    }
}

fn translate_endpoints(all: &[EndpointSlice], service: &str) -> pb::Endpoints {
    let identities = identities();
    let (endpoints, rejections) = endpoints(&slices_of(all, service), |pod| {
        identities.get(pod).map(String::as_str)
    });
    assert_eq!(rejections, []);
    endpoints
}

fn endpoint(address: &str, pod: &str, identity: &str, zone: &str, ready: bool) -> pb::Endpoint {
    pb::Endpoint {
        address: address.into(),
        ports: Vec::new(),
        identity: identity.into(),
        weight: 1,
        zone: zone.into(),
        ready,
        pod: pod.into(),
    }
}

#[test]
fn the_slices_of_a_service_merge_into_one_endpoints_with_every_address() {
    let web = translate_endpoints(&items(SLICES), "web");
    let web_ports: Vec<pb::EndpointPort> = [
        ("http", 8080),
        ("h2c", 8081),
        ("grpc", 9090),
        ("metrics", 9100),
        ("mysql", 3306),
    ]
    .into_iter()
    .map(|(name, port)| pb::EndpointPort {
        name: name.into(),
        port,
    })
    .collect();
    let with_ports = |endpoint: pb::Endpoint| pb::Endpoint {
        ports: web_ports.clone(),
        ..endpoint
    };
    let expected = [
        endpoint(
            "10.244.1.5",
            "shop/web-7d9f8b6c5-x2k4q",
            WEB_ID,
            "europe-west1-b",
            true,
        ),
        // Starting: not ready, not serving.
        endpoint(
            "10.244.2.7",
            "shop/web-7d9f8b6c5-q9z8w",
            WEB_ID,
            "europe-west1-c",
            false,
        ),
        // The previous release, draining: serving but terminating, so not ready
        // while others are. It ran as another ServiceAccount.
        endpoint(
            "10.244.3.9",
            "shop/web-6c5d4b3a2-old11",
            "spiffe://cluster.local/ns/shop/sa/web-v1",
            "europe-west1-d",
            false,
        ),
        // No conditions at all, which the API says is ready; its pod opted out of
        // the mesh, so it has no identity and is reached in plaintext.
        endpoint(
            "10.244.4.11",
            "shop/web-7d9f8b6c5-m3n4p",
            "",
            "europe-west1-b",
            true,
        ),
        // The IPv6 slice: the same pod, its other address.
        endpoint(
            "fd00:10:244:1::5",
            "shop/web-7d9f8b6c5-x2k4q",
            WEB_ID,
            "europe-west1-b",
            true,
        ),
    ]
    .map(with_ports);
    assert_eq!(
        web,
        pb::Endpoints {
            name: "web".into(),
            namespace: "shop".into(),
            endpoints: expected.to_vec(),
        }
    );
    validate(&Object::Endpoints(web)).unwrap();
}

#[test]
fn a_headless_services_endpoints_include_the_ones_not_ready() {
    let db = translate_endpoints(&items(SLICES), "db");
    let postgres = vec![pb::EndpointPort {
        name: "postgres".into(),
        port: 5432,
    }];
    let db_id = "spiffe://cluster.local/ns/shop/sa/db";
    assert_eq!(
        db.endpoints,
        [
            pb::Endpoint {
                ports: postgres.clone(),
                ..endpoint("10.244.1.20", "shop/db-0", db_id, "europe-west1-b", true)
            },
            pb::Endpoint {
                ports: postgres,
                ..endpoint("10.244.2.21", "shop/db-1", db_id, "europe-west1-c", false)
            },
        ]
    );
}

#[test]
fn kube_dns_pods_are_not_meshed_and_keep_their_tcp_ports() {
    let dns = translate_endpoints(&items(SLICES), "kube-dns");
    assert_eq!(dns.namespace, "kube-system");
    for endpoint in &dns.endpoints {
        assert_eq!(endpoint.identity, "", "{endpoint:?}");
        assert_eq!(endpoint.zone, "");
        let ports: Vec<(&str, u32)> = endpoint
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port))
            .collect();
        assert_eq!(ports, [("dns-tcp", 53), ("metrics", 9153)]);
    }
}

#[test]
fn when_no_replica_is_ready_the_draining_ones_still_serve_as_kube_proxy_does() {
    let mut slices: Vec<EndpointSlice> = items(SLICES);
    for slice in &mut slices {
        for endpoint in &mut slice.endpoints {
            let draining = endpoint.conditions.as_ref().and_then(|c| c.terminating) == Some(true);
            if !draining {
                endpoint.conditions = Some(EndpointConditions {
                    ready: Some(false),
                    serving: Some(false),
                    terminating: Some(false),
                });
            }
        }
    }
    let web = translate_endpoints(&slices, "web");
    let ready: Vec<&str> = web
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(ready, ["10.244.3.9"]);
}

#[test]
fn an_address_in_two_slices_is_one_endpoint_with_the_ports_of_both() {
    let mut slices: Vec<EndpointSlice> = items(SLICES);
    // The endpoint slice controller moving 10.244.1.5 into web-def34, where it
    // shows up before it is gone from web-abc12; the new slice maps one port more.
    let moved = slices[0].endpoints[0].clone();
    slices[1].endpoints.push(moved);
    let ports = slices[1].ports.as_mut().unwrap();
    ports.push(
        serde_json::from_value(json!({"name": "admin", "protocol": "TCP", "port": 9901})).unwrap(),
    );
    let web = translate_endpoints(&slices, "web");
    let first = &web.endpoints[0];
    assert_eq!(first.address, "10.244.1.5");
    assert_eq!(
        web.endpoints
            .iter()
            .filter(|e| e.address == "10.244.1.5")
            .count(),
        1
    );
    assert_eq!(
        first.ports.last().map(|p| (p.name.as_str(), p.port)),
        Some(("admin", 9901))
    );
    validate(&Object::Endpoints(web)).unwrap();
}

#[test]
fn a_pod_has_its_service_accounts_identity_only_when_it_runs_the_proxy() {
    let identity = |name: &str| pod_identity(&named(PODS, name), TRUST_DOMAIN);
    // The proxy as a native sidecar (an init container), and as a classic one.
    assert_eq!(identity("web-7d9f8b6c5-x2k4q").as_deref(), Some(WEB_ID));
    assert_eq!(identity("web-7d9f8b6c5-q9z8w").as_deref(), Some(WEB_ID));
    assert_eq!(
        identity("db-0").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/db")
    );
    assert_eq!(identity("web-7d9f8b6c5-m3n4p"), None, "opted out");
    assert_eq!(identity("coredns-674b8bbfcf-7xk2p"), None, "never injected");

    let mut pod: Pod = named(PODS, "db-0");
    assert_eq!(
        pod_identity(&pod, "prod.example.com").as_deref(),
        Some("spiffe://prod.example.com/ns/shop/sa/db")
    );
    let spec = pod.spec.as_mut().unwrap();
    spec.service_account_name = None;
    spec.service_account = None;
    assert_eq!(
        pod_identity(&pod, TRUST_DOMAIN).as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/default")
    );
    pod.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(
        pod_identity(&pod, TRUST_DOMAIN),
        None,
        "its address is the node's"
    );
}

#[test]
fn a_running_meshed_pod_has_endpoints_of_its_own_with_every_address() {
    let view = |name: &str| pod_view(&named(PODS, name), TRUST_DOMAIN);
    let own = |name: &str| pod_endpoints("shop", name, &view(name), |_| false);
    let worker = "spiffe://cluster.local/ns/shop/sa/cart-worker";
    let endpoint = |address: &str| pb::Endpoint {
        address: address.into(),
        ports: vec![],
        identity: worker.into(),
        weight: 1,
        zone: String::new(),
        ready: true,
        pod: "shop/cart-worker-5b7c9d8f4-k2x8m".into(),
    };
    // A worker no Service selects, with the proxy the injector added as a native
    // sidecar, and an address of each family.
    let endpoints = own("cart-worker-5b7c9d8f4-k2x8m").unwrap();
    assert_eq!(
        endpoints,
        pb::Endpoints {
            name: "pod.cart-worker-5b7c9d8f4-k2x8m".into(),
            namespace: "shop".into(),
            endpoints: vec![endpoint("10.244.3.14"), endpoint("fd00:10:244:3::e")],
        }
    );
    validate(&Object::Endpoints(endpoints)).unwrap();
    // Only the addresses no slice lists: a pod that backs a Service is reached as
    // its endpoints say, and a dual-stack pod of a single-stack Service by the rest.
    let listed = ["10.244.3.14".to_string()];
    let rest = pod_endpoints(
        "shop",
        "cart-worker-5b7c9d8f4-k2x8m",
        &view("cart-worker-5b7c9d8f4-k2x8m"),
        |a| listed.contains(&a.to_string()),
    );
    assert_eq!(rest.unwrap().endpoints, [endpoint("fd00:10:244:3::e")]);
    assert_eq!(pod_endpoints("shop", "db-0", &view("db-0"), |_| true), None);

    assert_eq!(
        own("cart-worker-5b7c9d8f4-p7q4r"),
        None,
        "pending, no address yet"
    );
    assert_eq!(
        own("report-29145630-h5j2k"),
        None,
        "finished: its address may be another pod's now"
    );
    assert_eq!(own("web-7d9f8b6c5-m3n4p"), None, "not meshed");
    assert_eq!(own("coredns-674b8bbfcf-7xk2p"), None, "not meshed");

    // An object whose status has `podIP` alone, as older API servers wrote it.
    let mut pod: Pod = named(PODS, "cart-worker-5b7c9d8f4-k2x8m");
    pod.status.as_mut().unwrap().pod_ips = None;
    let view = pod_view(&pod, TRUST_DOMAIN);
    assert_eq!(view.addresses, ["10.244.3.14"]);
}

#[test]
fn trellis_custom_resources_translate_and_a_bad_one_is_rejected_with_its_field() {
    let Object::Route(route) = route(&named(ROUTES, "web-canary")).unwrap() else {
        panic!("not a route")
    };
    assert_eq!(route.name, "web-canary");
    assert_eq!(route.rules.len(), 2);
    assert_eq!(route.rules[0].backends[0].namespace, "shop");
    validate(&Object::Route(route)).unwrap();

    let rejection = super::route(&named(ROUTES, "web-broken")).unwrap_err();
    assert_eq!(rejection.origin, "Route shop/web-broken");
    assert_eq!(rejection.field, "spec.rules[0].matches[0].headers[0]");
    assert_eq!(rejection.message, "give value or regex, not both");

    let Object::AuthorizationPolicy(policy) =
        authorization_policy(&named(POLICIES, "db-callers")).unwrap()
    else {
        panic!("not a policy")
    };
    assert_eq!(policy.target_service, "db");
    assert_eq!(policy.rules[0].ports, [5432]);

    let mut unknown: DynamicObject = named(POLICIES, "db-callers");
    unknown.data["spec"]["rule"] = json!([]);
    let rejection = authorization_policy(&unknown).unwrap_err();
    assert_eq!(rejection.field, "spec");
    assert!(
        rejection.message.contains("unknown field `rule`"),
        "{}",
        rejection.message
    );
}

const API_SERVICE: &str = include_str!("../testdata/v1.33.0/core.v1.Service.json");
const API_SLICE: &str = include_str!("../testdata/v1.33.0/discovery.k8s.io.v1.EndpointSlice.json");
const API_POD: &str = include_str!("../testdata/v1.33.0/core.v1.Pod.json");

#[test]
fn the_apis_fuzz_filled_objects_are_read_and_what_cannot_be_used_is_left_out() {
    // A protocol of "protocolValue" is not TCP, so the port is not the mesh's.
    // The model's validation, which every source's objects go through, refuses
    // the rest: "namespaceValue" is no DNS label, "clusterIPsValue" no address.
    let mut service: Service = serde_json::from_str(API_SERVICE).unwrap();
    let translated = super::service(&service).unwrap().unwrap();
    assert_eq!(translated.cluster_ips, ["clusterIPsValue"]);
    assert_eq!(translated.ports, []);
    let invalid = validate(&Object::Service(translated)).unwrap_err();
    assert_eq!(invalid.field, "metadata.namespace");
    service.metadata.namespace = Some("shop".into());
    service.metadata.name = Some("web".into());
    let translated = super::service(&service).unwrap().unwrap();
    let invalid = validate(&Object::Service(translated)).unwrap_err();
    assert_eq!(invalid.field, "spec.clusterIPs[0]");

    // An address type that is neither IPv4 nor IPv6 names no address.
    let mut slice: EndpointSlice = serde_json::from_str(API_SLICE).unwrap();
    let one = |slice: &EndpointSlice| {
        let slices = ServiceSlices {
            namespace: "namespaceValue",
            name: "nameValue",
            slices: vec![slice],
        };
        endpoints(&slices, |_| None)
    };
    let (translated, rejections) = one(&slice);
    assert_eq!((translated.endpoints.len(), rejections.len()), (0, 0));

    // As an IPv4 slice, its one address is rejected, naming the field.
    slice.address_type = "IPv4".into();
    let (translated, rejections) = one(&slice);
    assert_eq!(translated.endpoints, []);
    assert_eq!(rejections.len(), 1);
    assert_eq!(
        rejections[0].origin,
        "EndpointSlice namespaceValue/nameValue"
    );
    assert_eq!(rejections[0].field, "endpoints[0].addresses[0]");

    let pod: Pod = serde_json::from_str(API_POD).unwrap();
    assert_eq!(
        pod_identity(&pod, TRUST_DOMAIN),
        None,
        "host network, no proxy"
    );
}
