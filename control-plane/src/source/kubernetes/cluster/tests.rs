//! The cluster's bookkeeping: which model objects an event affects, and what it
//! costs to follow a large cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::metrics::Metrics;
use crate::model::Model;
use crate::source::kubernetes::KubernetesSource;
use crate::source::kubernetes::translate::tests::{PODS, SLICES, named};

#[test]
fn a_pods_status_updates_affect_nothing_but_its_identity_and_addresses_do() {
    let mut cluster = Cluster::new("cluster.local");
    let mut pod: Pod = named(PODS, "web-7d9f8b6c5-x2k4q");
    cluster.apply(Change::Slice(Event::Apply(named(SLICES, "web-abc12"))));
    let web = ObjectKey::new(Kind::Endpoints, "shop", "web");
    let own = ObjectKey::new(Kind::Endpoints, "shop", "pod.web-7d9f8b6c5-x2k4q");
    assert_eq!(
        cluster.apply(Change::Pod(Event::Apply(pod.clone()))),
        Affected::These([web.clone(), own.clone()].into()),
        "its identity and addresses are new"
    );
    // The IPv4 slice lists one of its addresses; its own Endpoints holds the other.
    let (outcome, _) = cluster.translate(&own);
    let Outcome::Defined(Object::Endpoints(endpoints)) = outcome else {
        panic!("no own endpoints: {outcome:?}");
    };
    let addresses: Vec<&str> = endpoints
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["fd00:10:244:1::5"]);

    // Readiness flaps, a new resource version: its Services' slices say so, the pod's
    // own endpoints do not change.
    let status = pod.status.as_mut().unwrap();
    status.conditions.as_mut().unwrap()[0].status = "False".into();
    pod.metadata.resource_version = Some("48999".into());
    assert_eq!(
        cluster.apply(Change::Pod(Event::Apply(pod.clone()))),
        Affected::These([].into())
    );
    // The IPv6 slice comes: it lists the other address, nothing is left to the pod's own.
    assert_eq!(
        cluster.apply(Change::Slice(Event::Apply(named(SLICES, "web-v6x9k")))),
        Affected::These([web.clone(), own.clone()].into())
    );
    assert_eq!(cluster.translate(&own).0, Outcome::Gone);
    cluster.apply(Change::Slice(Event::Delete(named(SLICES, "web-v6x9k"))));

    // It finished: its address is no longer its own, its identity stays.
    pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert_eq!(
        cluster.apply(Change::Pod(Event::Apply(pod.clone()))),
        Affected::These([own.clone()].into())
    );
    assert_eq!(cluster.translate(&own).0, Outcome::Gone);
    assert_eq!(
        cluster.apply(Change::Pod(Event::Delete(pod))),
        Affected::These([web].into()),
        "its identity is gone; it had no address of its own left"
    );
}

#[test]
fn a_relist_affects_everything_once_every_kind_is_listed() {
    let mut cluster = Cluster::new("cluster.local");
    assert_eq!(
        cluster.apply(Change::Service(Event::Init)),
        Affected::These([].into())
    );
    assert_eq!(
        cluster.apply(Change::Service(Event::InitDone)),
        Affected::All
    );
    assert!(!cluster.listed(), "one kind of five");
}

/// A service `svc-N` in namespace `ns-(N mod 50)` with one slice of ten meshed
/// endpoints, as the endpoint slice controller writes them.
fn large_slice(n: usize) -> EndpointSlice {
    let namespace = format!("ns-{}", n % 50);
    let endpoints: Vec<_> = (0..10)
        .map(|i| {
            json!({
                "addresses": [format!("10.{}.{}.{}", n / 250, n % 250, i + 1)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": format!("svc-{n}-{i}")},
                "zone": "europe-west1-b"
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("svc-{n}-abcde"),
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": format!("svc-{n}")}
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]
    }))
    .unwrap()
}

/// The running pod behind endpoint `i` of [`large_slice`]`(n)`, at its address.
fn large_pod(n: usize, i: usize) -> Pod {
    let ip = format!("10.{}.{}.{}", n / 250, n % 250, i + 1);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("svc-{n}-{i}"), "namespace": format!("ns-{}", n % 50)},
        "spec": {
            "serviceAccountName": format!("svc-{n}"),
            "containers": [{"name": "app"}, {"name": "trellis-proxy"}]
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    }))
    .unwrap()
}

/// 2,000 services of 10 endpoints each, every pod meshed: what the first listing,
/// one slice update and one pod status update cost.
#[test]
#[ignore = "a measurement: cargo test --release -p trellis-control-plane -- --ignored --nocapture large_cluster"]
fn following_a_large_cluster() {
    const SERVICES: usize = 2_000;
    let model = Model::new(Duration::from_millis(50), Arc::new(Metrics::new()));
    let mut source = KubernetesSource::new(model.source("kubernetes"), "cluster.local");
    let services: Vec<Service> = (0..SERVICES)
        .map(|n| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{n}"), "namespace": format!("ns-{}", n % 50)},
                "spec": {
                    "clusterIP": format!("10.96.{}.{}", n / 250, n % 250 + 1),
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
                }
            }))
            .unwrap()
        })
        .collect();
    let slices: Vec<EndpointSlice> = (0..SERVICES).map(large_slice).collect();
    let pods: Vec<Pod> = (0..SERVICES)
        .flat_map(|n| (0..10).map(move |i| large_pod(n, i)))
        .collect();
    let started = Instant::now();
    for change in [
        Change::Service(Event::Init),
        Change::Slice(Event::Init),
        Change::Pod(Event::Init),
        Change::Route(Event::Init),
        Change::Policy(Event::Init),
    ] {
        source.apply(change);
    }
    for service in services {
        source.apply(Change::Service(Event::InitApply(service)));
    }
    for slice in slices {
        source.apply(Change::Slice(Event::InitApply(slice)));
    }
    for pod in pods {
        source.apply(Change::Pod(Event::InitApply(pod)));
    }
    let stored = started.elapsed();
    for change in [
        Change::Service(Event::InitDone),
        Change::Slice(Event::InitDone),
        Change::Pod(Event::InitDone),
        Change::Route(Event::InitDone),
    ] {
        source.apply(change);
    }
    let before_sync = Instant::now();
    source.apply(Change::Policy(Event::InitDone));
    let synced = before_sync.elapsed();
    let before_publish = Instant::now();
    model.rebuild();
    let published = before_publish.elapsed();
    assert_eq!(
        model
            .current()
            .unwrap()
            .get(Kind::Endpoints)
            .resources
            .len(),
        SERVICES
    );

    let mut slice = large_slice(7);
    slice.endpoints.pop();
    let before_slice = Instant::now();
    source.apply(Change::Slice(Event::Apply(slice)));
    let one_slice = before_slice.elapsed();

    let pod = large_pod(7, 3);
    let before_pod = Instant::now();
    for _ in 0..1000 {
        source.apply(Change::Pod(Event::Apply(pod.clone())));
    }
    let per_pod_update = before_pod.elapsed() / 1000;
    eprintln!(
        "{SERVICES} services x 10 endpoints: stored the listing in {stored:?}; translated, \
         validated and replaced everything in {synced:?}; model snapshot in {published:?}; \
         one slice update {one_slice:?}; one pod status update {per_pod_update:?}"
    );
}
