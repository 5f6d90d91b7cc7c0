//! The model on its own: validation, versions that move exactly when content does,
//! sources kept apart, and a burst of edits published as one snapshot.

use std::time::Duration;

use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::service_port::Target;

use super::*;

fn service(namespace: &str, name: &str, port: u32) -> Object {
    Object::Service(pb::Service {
        name: name.into(),
        namespace: namespace.into(),
        cluster_ips: vec!["10.96.0.10".into()],
        ports: vec![pb::ServicePort {
            name: "http".into(),
            port,
            target: Some(Target::TargetPort(8080)),
            protocol: pb::Protocol::Http1 as i32,
        }],
    })
}

fn endpoints(namespace: &str, name: &str, addresses: &[&str]) -> Object {
    Object::Endpoints(pb::Endpoints {
        name: name.into(),
        namespace: namespace.into(),
        endpoints: addresses
            .iter()
            .map(|address| pb::Endpoint {
                address: (*address).into(),
                ports: vec![pb::EndpointPort {
                    name: "http".into(),
                    port: 8080,
                }],
                identity: format!("spiffe://cluster.local/ns/{namespace}/sa/{name}"),
                weight: 1,
                ready: true,
                ..Default::default()
            })
            .collect(),
    })
}

fn model() -> Arc<Model> {
    Model::new(Duration::from_millis(50), Arc::new(Metrics::new()))
}

/// Publishes whatever changed, without waiting for a debounce.
fn publish(model: &Model) -> Arc<Snapshot> {
    model.rebuild();
    model.current().expect("every source has synced")
}

fn names(snapshot: &Snapshot, kind: Kind) -> Vec<String> {
    snapshot
        .get(kind)
        .resources
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

#[test]
fn nothing_is_published_until_every_source_has_synced() {
    let model = model();
    let files = model.source("files");
    let other = model.source("other");
    files.replace([service("shop", "web", 80)]);
    files.synced();
    model.rebuild();
    assert!(model.current().is_none(), "the other source has not synced");
    assert!(!model.is_ready());
    other.synced();
    let snapshot = publish(&model);
    assert_eq!(names(&snapshot, Kind::Service), ["shop/web"]);
    assert!(model.is_ready());
}

#[test]
fn a_model_with_no_sources_publishes_the_empty_world() {
    let model = model();
    let snapshot = publish(&model);
    for kind in Kind::ALL {
        assert!(snapshot.get(kind).resources.is_empty());
    }
}

#[test]
fn versions_change_exactly_when_content_changes() {
    let model = model();
    let files = model.source("files");
    files.replace([
        service("shop", "web", 80),
        endpoints("shop", "web", &["10.0.0.1"]),
    ]);
    files.synced();
    let first = publish(&model);

    // The same objects again: no new snapshot, the same versions.
    files.replace([
        service("shop", "web", 80),
        endpoints("shop", "web", &["10.0.0.1"]),
    ]);
    assert!(Arc::ptr_eq(&publish(&model), &first), "nothing changed");

    // One endpoint more: only the endpoints version moves.
    files.replace([
        service("shop", "web", 80),
        endpoints("shop", "web", &["10.0.0.1", "10.0.0.2"]),
    ]);
    let second = publish(&model);
    assert_eq!(
        second.get(Kind::Service).version,
        first.get(Kind::Service).version
    );
    assert_ne!(
        second.get(Kind::Endpoints).version,
        first.get(Kind::Endpoints).version
    );
    assert!(Arc::ptr_eq(
        second.get(Kind::Service),
        first.get(Kind::Service)
    ));

    // Back to what it was: back to the version it had (a digest, not a counter).
    files.replace([
        service("shop", "web", 80),
        endpoints("shop", "web", &["10.0.0.1"]),
    ]);
    let third = publish(&model);
    assert_eq!(
        third.get(Kind::Endpoints).version,
        first.get(Kind::Endpoints).version
    );

    // A field deep inside: the version moves.
    files.replace([
        service("shop", "web", 81),
        endpoints("shop", "web", &["10.0.0.1"]),
    ]);
    assert_ne!(
        publish(&model).get(Kind::Service).version,
        first.get(Kind::Service).version
    );
}

#[test]
fn resources_are_sorted_by_namespace_and_name() {
    let model = model();
    let files = model.source("files");
    files.replace([
        service("shop", "web", 80),
        service("a-b", "x", 80),
        service("a", "x", 80),
        service("shop", "api", 80),
    ]);
    files.synced();
    assert_eq!(
        names(&publish(&model), Kind::Service),
        ["a-b/x", "a/x", "shop/api", "shop/web"]
    );
}

#[test]
fn an_invalid_object_is_refused_and_the_previous_version_stays() {
    let model = model();
    let files = model.source("files");
    files.replace([endpoints("shop", "web", &["10.0.0.1"])]);
    files.synced();
    let before = publish(&model);

    let refused = files.replace([endpoints("shop", "web", &["10.0.0.300"])]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1.field, "spec.endpoints[0].address");
    assert!(
        Arc::ptr_eq(&publish(&model), &before),
        "the good version stays"
    );

    let error = files
        .upsert(endpoints("shop", "web", &["not-an-ip"]))
        .unwrap_err();
    assert!(error.to_string().contains("not an IP address"), "{error}");
}

#[test]
fn upsert_and_delete_change_one_object() {
    let model = model();
    let kubernetes = model.source("kubernetes");
    kubernetes.synced();
    kubernetes.upsert(service("shop", "web", 80)).unwrap();
    kubernetes.upsert(service("shop", "api", 80)).unwrap();
    assert_eq!(
        names(&publish(&model), Kind::Service),
        ["shop/api", "shop/web"]
    );
    assert!(kubernetes.delete(&ObjectKey::new(Kind::Service, "shop", "api")));
    assert!(!kubernetes.delete(&ObjectKey::new(Kind::Service, "shop", "api")));
    assert_eq!(names(&publish(&model), Kind::Service), ["shop/web"]);
}

#[test]
fn the_first_source_wins_a_name_two_sources_define() {
    let model = model();
    let first = model.source("first");
    let second = model.source("second");
    first.replace([service("shop", "web", 80)]);
    second.replace([service("shop", "web", 9090), service("shop", "api", 80)]);
    first.synced();
    second.synced();
    let snapshot = publish(&model);
    let web = &snapshot.get(Kind::Service).resources[1];
    assert_eq!(web.resource, service("shop", "web", 80).to_resource());

    // When the first source lets go, the second one's shows through.
    first.replace([]);
    let snapshot = publish(&model);
    assert_eq!(
        snapshot.get(Kind::Service).resources[1].resource,
        service("shop", "web", 9090).to_resource()
    );
}

#[test]
fn a_selection_by_name_has_its_own_version() {
    let model = model();
    let files = model.source("files");
    files.replace([
        endpoints("shop", "web", &["10.0.0.1"]),
        endpoints("shop", "api", &["10.0.0.2"]),
    ]);
    files.synced();
    let first = publish(&model);
    let web: std::collections::BTreeSet<String> =
        ["shop/web".to_string(), "shop/gone".into()].into();
    let selected = first.get(Kind::Endpoints).select(&web);
    assert_eq!(selected.count, 1, "names that do not exist are left out");
    let web_version = selected.version;

    // A change to another object moves the type's version, not the selection's.
    files.replace([
        endpoints("shop", "web", &["10.0.0.1"]),
        endpoints("shop", "api", &["10.0.0.3"]),
    ]);
    let second = publish(&model);
    assert_ne!(
        second.get(Kind::Endpoints).version,
        first.get(Kind::Endpoints).version
    );
    assert_eq!(
        second.get(Kind::Endpoints).select(&web).version,
        web_version
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_edits_is_published_as_one_snapshot() {
    let model = model();
    let files = model.source("files");
    files.synced();
    let shutdown = CancellationToken::new();
    let publisher = tokio::spawn(model.clone().run(shutdown.clone()));
    let mut snapshots = model.subscribe();
    snapshots.wait_for(Option::is_some).await.unwrap();
    snapshots.borrow_and_update();
    let published = model.metrics.snapshots.get();

    // Ten edits, 10 ms apart: each comes before the 50 ms quiet period ends.
    for port in 1..=10 {
        files.replace([service("shop", "web", port)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    snapshots.changed().await.unwrap();
    let snapshot = snapshots.borrow_and_update().clone().unwrap();
    assert_eq!(
        snapshot.get(Kind::Service).resources[0].resource,
        service("shop", "web", 10).to_resource(),
        "the one push carries the last edit"
    );
    assert_eq!(
        model.metrics.snapshots.get(),
        published + 1,
        "one snapshot for the burst"
    );

    // Nothing more is pending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!snapshots.has_changed().unwrap());
    shutdown.cancel();
    publisher.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_steady_trickle_of_edits_cannot_hold_a_push_back_forever() {
    let model = model();
    let files = model.source("files");
    files.synced();
    let shutdown = CancellationToken::new();
    tokio::spawn(model.clone().run(shutdown.clone()));
    let mut snapshots = model.subscribe();
    snapshots.wait_for(Option::is_some).await.unwrap();
    snapshots.borrow_and_update();

    // An edit every 20 ms never leaves 50 ms of quiet; the cap (4 × 50 ms) publishes.
    let start = tokio::time::Instant::now();
    let mut port = 1;
    while !snapshots.has_changed().unwrap() {
        files.replace([service("shop", "web", port)]);
        port += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no snapshot under a trickle"
        );
    }
    // Virtual time: the cap, plus the one sleep that noticed it.
    assert!(start.elapsed() <= Duration::from_millis(50 * 4 + 20));
    shutdown.cancel();
}

#[test]
fn each_type_is_encoded_once_as_a_response_carries_it() {
    use prost::Message;

    let model = model();
    let files = model.source("files");
    files.replace([
        endpoints("shop", "web", &["10.0.0.1", "10.0.0.2"]),
        endpoints("shop", "api", &["10.0.0.3"]),
    ]);
    files.synced();
    let snapshot = publish(&model);
    let endpoints = snapshot.get(Kind::Endpoints);
    let response = |resources: Vec<pb::Resource>| {
        pb::DiscoveryResponse {
            resources,
            ..Default::default()
        }
        .encode_to_vec()
    };

    let every = endpoints
        .resources
        .iter()
        .map(|r| r.resource.clone())
        .collect();
    assert_eq!(endpoints.encoded, response(every));
    for resource in &endpoints.resources {
        assert_eq!(resource.encoded, resource.resource.encode_to_vec());
    }
    let whole = endpoints.select(&Default::default());
    assert_eq!(
        (whole.resources.as_ptr(), whole.count),
        (endpoints.encoded.as_ptr(), 2),
        "the whole type is shared, not copied"
    );
    let web = endpoints.select(&["shop/web".to_string()].into());
    assert_eq!(
        web.resources,
        response(vec![endpoints.resources[1].resource.clone()])
    );
}
