//! The Kubernetes source fed the events its watchers deliver (list, then changes,
//! then a relist after a lost watch) with the objects of `testdata/`, into a real
//! model: what proxies would be sent, and what `/sources` shows. Last, the whole
//! source through the real kube client against an HTTPS server answering its lists
//! and watches as the API server does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use kube::runtime::watcher::Event;
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::resource;

use super::translate::tests::{PODS, POLICIES, ROUTES, SERVICES, SLICES, items, named};
use super::*;
use crate::fixtures::api_server::{Answer, ApiServer, Seen, status_failure};
use crate::metrics::Metrics;
use crate::model::Model;

struct Fixture {
    model: Arc<Model>,
    kubernetes: KubernetesSource,
}

/// Which kinds [`Fixture::list`] lists, and from what.
#[derive(Clone, Copy)]
enum Listed {
    Services,
    Slices,
    Pods,
    Routes,
    Policies,
}

impl Fixture {
    fn new() -> Fixture {
        let model = Model::new(Duration::from_millis(10), Arc::new(Metrics::new()));
        let source = model.source(SOURCE_NAME);
        Fixture {
            model,
            kubernetes: KubernetesSource::new(source, "cluster.local"),
        }
    }

    /// A fixture whose every watch has listed the shop.
    fn listed() -> Fixture {
        let mut fixture = Fixture::new();
        for kind in [
            Listed::Services,
            Listed::Slices,
            Listed::Pods,
            Listed::Routes,
            Listed::Policies,
        ] {
            fixture.list(kind, None);
        }
        fixture
    }

    /// A watch's (re)list of `kind`: every object of its fixture, or only `names`.
    fn list(&mut self, kind: Listed, names: Option<&[&str]>) {
        let keep = |object: &dyn Fn() -> Option<String>| match names {
            None => true,
            Some(names) => object().is_some_and(|name| names.contains(&name.as_str())),
        };
        macro_rules! relist {
            ($change:path, $ty:ty, $json:expr) => {{
                self.apply($change(Event::Init));
                for object in items::<$ty>($json) {
                    if keep(&|| object.metadata.name.clone()) {
                        self.apply($change(Event::InitApply(object)));
                    }
                }
                self.apply($change(Event::InitDone));
            }};
        }
        match kind {
            Listed::Services => relist!(Change::Service, Service, SERVICES),
            Listed::Slices => relist!(Change::Slice, EndpointSlice, SLICES),
            Listed::Pods => relist!(Change::Pod, Pod, PODS),
            Listed::Routes => relist!(Change::Route, DynamicObject, ROUTES),
            Listed::Policies => relist!(Change::Policy, DynamicObject, POLICIES),
        }
    }

    fn apply(&mut self, change: Change) {
        self.kubernetes.apply(change);
    }

    /// What the model would push now, as `Kind namespace/name` → resource.
    fn objects(&self) -> BTreeMap<String, resource::Kind> {
        crate::fixtures::pushed_objects(&self.model)
    }

    fn names(&self) -> Vec<String> {
        self.objects().into_keys().collect()
    }

    fn endpoints(&self, name: &str) -> Vec<pb::Endpoint> {
        match self.objects().remove(&format!("Endpoints {name}")) {
            Some(resource::Kind::Endpoints(endpoints)) => endpoints.endpoints,
            other => panic!("no Endpoints {name}: {other:?}"),
        }
    }

    fn service(&self, name: &str) -> pb::Service {
        match self.objects().remove(&format!("Service {name}")) {
            Some(resource::Kind::Service(service)) => service,
            other => panic!("no Service {name}: {other:?}"),
        }
    }

    fn rejections(&self) -> Vec<Rejection> {
        self.model.sources()[0]
            .rejections
            .iter()
            .map(|r| r.rejection.clone())
            .collect()
    }

    fn synced(&self) -> bool {
        self.model.sources()[0].synced
    }
}

fn identity_of(endpoints: &[pb::Endpoint], address: &str) -> String {
    endpoints
        .iter()
        .find(|e| e.address == address)
        .map(|e| e.identity.clone())
        .unwrap_or_else(|| panic!("no endpoint {address}"))
}

#[test]
fn nothing_reaches_proxies_until_every_watch_has_listed() {
    let mut fixture = Fixture::new();
    fixture.list(Listed::Services, None);
    fixture.list(Listed::Slices, None);
    fixture.list(Listed::Pods, None);
    fixture.list(Listed::Routes, None);
    fixture.model.rebuild();
    assert!(!fixture.synced());
    assert!(fixture.model.current().is_none(), "a half-listed cluster");

    fixture.list(Listed::Policies, None);
    assert!(fixture.synced());
    assert_eq!(
        fixture.names(),
        [
            "AuthorizationPolicy shop/db-callers",
            "Endpoints kube-system/kube-dns",
            "Endpoints shop/db",
            "Endpoints shop/pod.cart-worker-5b7c9d8f4-k2x8m",
            "Endpoints shop/web",
            "Route shop/web-canary",
            "Service kube-system/kube-dns",
            "Service shop/db",
            "Service shop/web",
        ],
        "no ExternalName service, no broken route; the worker that backs no service \
         has endpoints of its own"
    );
    let rejections = fixture.rejections();
    assert_eq!(rejections.len(), 1, "{rejections:#?}");
    assert_eq!(rejections[0].origin, "Route shop/web-broken");
    assert_eq!(rejections[0].field, "spec.rules[0].matches[0].headers[0]");
}

#[test]
fn a_pod_seen_after_its_slice_gives_its_endpoints_their_identity() {
    let mut fixture = Fixture::new();
    for kind in [
        Listed::Services,
        Listed::Slices,
        Listed::Routes,
        Listed::Policies,
    ] {
        fixture.list(kind, None);
    }
    // The pod watch lists before the new pod exists; the slice already has it.
    fixture.list(Listed::Pods, Some(&[]));
    let before = fixture.endpoints("shop/web");
    assert_eq!(identity_of(&before, "10.244.1.5"), "");

    fixture.apply(Change::Pod(Event::Apply(named(
        PODS,
        "web-7d9f8b6c5-x2k4q",
    ))));
    let after = fixture.endpoints("shop/web");
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    assert_eq!(identity_of(&after, "10.244.1.5"), web);
    assert_eq!(
        identity_of(&after, "fd00:10:244:1::5"),
        web,
        "both of its addresses"
    );
    assert_eq!(
        identity_of(&after, "10.244.2.7"),
        "",
        "another pod, still unseen"
    );
}

#[test]
fn a_meshed_pod_that_backs_no_service_is_known_by_its_identity_while_it_runs() {
    let mut fixture = Fixture::listed();
    let own = "shop/pod.cart-worker-5b7c9d8f4-k2x8m";
    let worker = "spiffe://cluster.local/ns/shop/sa/cart-worker";
    assert_eq!(identity_of(&fixture.endpoints(own), "10.244.3.14"), worker);

    // Its second replica starts: once it runs with an address, it is known too.
    let mut second: Pod = named(PODS, "cart-worker-5b7c9d8f4-p7q4r");
    let status = second.status.as_mut().unwrap();
    status.phase = Some("Running".into());
    status.pod_ip = Some("10.244.2.31".into());
    fixture.apply(Change::Pod(Event::Apply(second.clone())));
    assert_eq!(
        identity_of(
            &fixture.endpoints("shop/pod.cart-worker-5b7c9d8f4-p7q4r"),
            "10.244.2.31"
        ),
        worker
    );

    // The first one is deleted, the second finishes: neither address is anyone's.
    fixture.apply(Change::Pod(Event::Delete(named(
        PODS,
        "cart-worker-5b7c9d8f4-k2x8m",
    ))));
    second.status.as_mut().unwrap().phase = Some("Succeeded".into());
    fixture.apply(Change::Pod(Event::Apply(second)));
    let names = fixture.names();
    assert!(
        !names.iter().any(|name| name.contains("cart-worker")),
        "{names:?}"
    );
}

#[test]
fn scaling_down_removes_an_endpoint_and_the_last_slice_takes_the_endpoints_along() {
    let mut fixture = Fixture::listed();
    let mut slice: EndpointSlice = named(SLICES, "web-abc12");
    slice.endpoints.retain(|e| e.addresses[0] != "10.244.2.7");
    fixture.apply(Change::Slice(Event::Apply(slice)));
    let addresses: Vec<String> = fixture
        .endpoints("shop/web")
        .into_iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(
        addresses,
        [
            "10.244.1.5",
            "10.244.3.9",
            "10.244.4.11",
            "fd00:10:244:1::5"
        ]
    );

    fixture.apply(Change::Slice(Event::Delete(named(SLICES, "db-hn7q2"))));
    fixture.apply(Change::Service(Event::Delete(named(SERVICES, "db"))));
    let names = fixture.names();
    assert!(
        !names.iter().any(|name| name.ends_with("shop/db")),
        "{names:?}"
    );
}

#[test]
fn a_service_made_invalid_keeps_its_previous_version_until_it_is_fixed() {
    let mut fixture = Fixture::listed();
    let mut web: Service = named(SERVICES, "web");
    let annotations = web.metadata.annotations.as_mut().unwrap();
    annotations.insert(translate::OPAQUE_PORTS.into(), "3306,mysql".into());
    fixture.apply(Change::Service(Event::Apply(web.clone())));

    assert_eq!(
        fixture.service("shop/web").ports.len(),
        5,
        "the previous version"
    );
    let rejections = fixture.rejections();
    let rejection = rejections
        .iter()
        .find(|r| r.origin == "Service shop/web")
        .expect("the service is reported");
    assert_eq!(
        rejection.field,
        "metadata.annotations[trellis.io/opaque-ports]"
    );

    let annotations = web.metadata.annotations.as_mut().unwrap();
    annotations.insert(translate::OPAQUE_PORTS.into(), "3306,9100".into());
    fixture.apply(Change::Service(Event::Apply(web)));
    let metrics = fixture.service("shop/web").ports[3].clone();
    assert_eq!(
        (metrics.port, metrics.protocol),
        (9100, pb::Protocol::Tcp as i32)
    );
    assert!(
        !fixture
            .rejections()
            .iter()
            .any(|r| r.origin == "Service shop/web")
    );
}

#[test]
fn a_rejected_route_keeps_its_previous_version_across_a_relist() {
    let mut fixture = Fixture::listed();
    let mut canary: DynamicObject = named(ROUTES, "web-canary");
    canary.data["spec"]["rules"][0]["matches"][0]["headers"][0]["regex"] = "^y".into();
    fixture.apply(Change::Route(Event::Apply(canary)));
    let kept = fixture.objects().remove("Route shop/web-canary");
    assert!(kept.is_some(), "the previous version stays");

    // The watch is lost and relisted: the broken version is still all there is.
    fixture.list(Listed::Routes, None);
    let mut broken = fixture.model.sources()[0].rejections.clone();
    broken.retain(|r| r.rejection.origin.starts_with("Route"));
    assert_eq!(
        broken.len(),
        1,
        "web-broken; the canary is listed as it was"
    );
    assert!(fixture.objects().contains_key("Route shop/web-canary"));
}

#[test]
fn a_relist_drops_what_was_deleted_while_the_watch_was_down() {
    let mut fixture = Fixture::listed();
    fixture.list(Listed::Services, Some(&["db", "kube-dns"]));
    fixture.list(Listed::Slices, Some(&["db-hn7q2", "kube-dns-s8v2m"]));
    let names = fixture.names();
    assert!(!names.iter().any(|n| n.ends_with("shop/web")), "{names:?}");
    assert!(names.contains(&"Service shop/db".to_string()));
}

#[test]
fn a_slice_relabelled_to_another_service_moves_its_endpoints() {
    let mut fixture = Fixture::listed();
    let mut slice: EndpointSlice = named(SLICES, "web-def34");
    let labels = slice.metadata.labels.as_mut().unwrap();
    labels.insert(translate::SERVICE_NAME_LABEL.into(), "web-v2".into());
    fixture.apply(Change::Slice(Event::Apply(slice)));
    let web: Vec<String> = fixture
        .endpoints("shop/web")
        .into_iter()
        .map(|e| e.address)
        .collect();
    assert!(!web.contains(&"10.244.4.11".to_string()), "{web:?}");
    let v2 = fixture.endpoints("shop/web-v2");
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].address, "10.244.4.11");
}

/// The API server's side of the source's five lists and watches, answered from
/// `testdata/` as kube-apiserver answers: lists of items without their own kind, a
/// resourceVersion to watch from; then a watch on services that reports `db`
/// deleted, once, and watches that stay quiet. Without `crds`, the Trellis resources
/// are not found, as before `kubectl apply -f charts/trellis/crds/`.
fn cluster_api(seen: &Seen, crds: bool, db_deleted: &AtomicBool) -> Answer {
    let list = match seen.path.as_str() {
        "/api/v1/services" => SERVICES,
        "/apis/discovery.k8s.io/v1/endpointslices" => SLICES,
        "/api/v1/pods" => PODS,
        "/apis/trellis.io/v1alpha1/routes" if crds => ROUTES,
        "/apis/trellis.io/v1alpha1/authorizationpolicies" if crds => POLICIES,
        _ => {
            let message = "the server could not find the requested resource";
            return Answer::Json(
                StatusCode::NOT_FOUND,
                status_failure(404, "NotFound", message),
            );
        }
    };
    let items: Vec<Value> = items(list);
    if seen.query.contains("watch=true") {
        let mut events = Vec::new();
        if seen.path == "/api/v1/services" && !db_deleted.swap(true, Ordering::SeqCst) {
            let db = items.iter().find(|item| item["metadata"]["name"] == "db");
            events.push(json!({"type": "DELETED", "object": db}));
        }
        return Answer::Watch(events);
    }
    let (api_version, kind) = (items[0]["apiVersion"].clone(), items[0]["kind"].clone());
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            let object = item.as_object_mut().unwrap();
            object.remove("apiVersion");
            object.remove("kind");
            item
        })
        .collect();
    Answer::Json(
        StatusCode::OK,
        json!({
            "apiVersion": api_version,
            "kind": format!("{}List", kind.as_str().unwrap()),
            "metadata": {"resourceVersion": "48500"},
            "items": items,
        }),
    )
}

/// A model fed by a Kubernetes source watching `api` until `stop`.
fn watching(api: &ApiServer, stop: &CancellationToken) -> Arc<Model> {
    let model = Model::new(Duration::from_millis(10), Arc::new(Metrics::new()));
    let source = KubernetesSource::new(model.source(SOURCE_NAME), "cluster.local");
    tokio::spawn(source.run(api.client(), stop.clone()));
    tokio::spawn(model.clone().run(stop.clone()));
    model
}

fn published(model: &Model) -> Vec<String> {
    let Some(snapshot) = model.current() else {
        return Vec::new();
    };
    Kind::ALL
        .into_iter()
        .flat_map(|kind| {
            snapshot
                .get(kind)
                .resources
                .iter()
                .map(move |named| format!("{kind} {}", named.name))
        })
        .collect()
}

#[tokio::test]
async fn through_a_real_client_the_source_lists_the_cluster_then_follows_its_watches() {
    let db_deleted = AtomicBool::new(false);
    let api = ApiServer::start(move |seen| cluster_api(seen, true, &db_deleted)).await;
    let stop = CancellationToken::new();
    let model = watching(&api, &stop);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let with_db_gone = loop {
        let names = published(&model);
        if !names.is_empty() && !names.contains(&"Service shop/db".to_string()) {
            break names;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not published: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    assert_eq!(
        with_db_gone,
        [
            "Service kube-system/kube-dns",
            "Service shop/web",
            "Endpoints kube-system/kube-dns",
            "Endpoints shop/db",
            "Endpoints shop/pod.cart-worker-5b7c9d8f4-k2x8m",
            "Endpoints shop/web",
            "Route shop/web-canary",
            "AuthorizationPolicy shop/db-callers",
        ]
    );

    let seen = api.seen();
    let lists: Vec<&Seen> = seen
        .iter()
        .filter(|s| !s.query.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 5, "{lists:#?}");
    for list in &lists {
        assert_eq!(list.method, "GET");
        assert!(list.query.contains("limit=500"), "paginated: {list:?}");
    }
    let slices = lists
        .iter()
        .find(|s| s.path.contains("endpointslices"))
        .unwrap();
    assert!(
        slices
            .query
            .contains("labelSelector=kubernetes.io%2Fservice-name"),
        "only slices that belong to a service: {}",
        slices.query
    );
}

#[tokio::test]
async fn without_the_crds_installed_the_source_never_claims_to_have_synced() {
    let never = AtomicBool::new(true);
    let api = ApiServer::start(move |seen| cluster_api(seen, false, &never)).await;
    let stop = CancellationToken::new();
    let model = watching(&api, &stop);
    // kube's backoff retries the failed list after 0.8 s or so, with jitter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let route_lists = || {
        api.seen()
            .iter()
            .filter(|s| s.path == "/apis/trellis.io/v1alpha1/routes")
            .count()
    };
    while route_lists() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route list is never retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    assert!(
        model.current().is_none(),
        "a cluster without routes is not a cluster with none"
    );
    assert!(!model.sources()[0].synced);
}
