//! The file source against real files in a scratch directory: every kind, several
//! documents per file, every kind of mistake reported with its file, line and field,
//! the last good version kept through a broken edit, deletion, and the inotify watch.

use std::collections::BTreeMap;
use std::time::Duration;

use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::{
    authorization_policy, header_match, path_match, resource, service_port,
};

use super::*;
use crate::fixtures::ScratchDir;
use crate::metrics::Metrics;
use crate::model::Model;

/// A shop with a web service: every kind, in one file of four documents.
const SHOP: &str = r#"# The web tier of the shop.
apiVersion: trellis.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [10.96.0.10]
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: HTTP1}
  - {name: admin, port: 9000, targetPort: admin}
---
apiVersion: trellis.io/v1alpha1
kind: Endpoints
metadata: {name: web, namespace: shop}
spec:
  endpoints:
  - address: 10.199.0.2
    ports: [{name: http, port: 8080}, {name: admin, port: 9001}]
    identity: spiffe://cluster.local/ns/shop/sa/web
    zone: a
    pod: shop/web-1
  - address: 10.199.0.3
    ports: [{name: http, port: 8080}]
    ready: false
    weight: 3
---
apiVersion: trellis.io/v1alpha1
kind: Route
metadata: {name: web-canary, namespace: shop}
spec:
  parents: [{service: web, port: 80}]
  rules:
  - matches:
    - path: {type: Prefix, value: /api}
      headers: [{name: x-canary, value: "yes"}, {name: x-user, regex: "^tester-[0-9]+$"}]
      method: GET
    backends: [{service: web-v2, port: 80, weight: 10}, {service: web, namespace: shop, port: 80}]
    timeoutMs: 1500
---
apiVersion: trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  targetService: web
  action: Deny
  rules:
  - principals: [spiffe://cluster.local/ns/shop/sa/checkout, "*"]
    namespaces: [shop]
    methods: [POST]
    paths: [/admin*]
    ports: [9000]
"#;

struct Fixture {
    dir: ScratchDir,
    model: Arc<Model>,
    files: FileSource,
}

impl Fixture {
    /// A directory holding `files`, read once by a new file source.
    fn with(files: &[(&str, &str)]) -> Fixture {
        let dir = ScratchDir::new("files");
        std::fs::create_dir_all(dir.path()).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let model = Model::new(Duration::from_millis(10), Arc::new(Metrics::new()));
        let source = model.source(SOURCE_NAME);
        let files = FileSource::open(dir.path(), source, Duration::from_millis(10)).unwrap();
        Fixture { dir, model, files }
    }

    fn write(&mut self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self.files.rescan();
    }

    fn remove(&mut self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
        self.files.rescan();
    }

    /// What the model would push now, as `Kind namespace/name` → resource.
    fn objects(&self) -> BTreeMap<String, resource::Kind> {
        crate::fixtures::pushed_objects(&self.model)
    }

    fn names(&self) -> Vec<String> {
        self.objects().into_keys().collect()
    }

    fn rejections(&self) -> Vec<Rejection> {
        self.model.sources()[0]
            .rejections
            .iter()
            .map(|r| r.rejection.clone())
            .collect()
    }

    /// The one rejection there is.
    fn rejection(&self) -> Rejection {
        let rejections = self.rejections();
        assert_eq!(rejections.len(), 1, "{rejections:#?}");
        rejections.into_iter().next().unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} is not in the text"))
}

#[test]
fn every_kind_is_read_with_its_defaults_filled_in() {
    let shop = Fixture::with(&[("shop.yaml", SHOP)]);
    assert!(shop.rejections().is_empty(), "{:#?}", shop.rejections());
    let objects = shop.objects();

    let resource::Kind::Service(web) = &objects["Service shop/web"] else {
        panic!("not a service")
    };
    assert_eq!(web.cluster_ips, ["10.96.0.10"]);
    assert_eq!(
        web.ports[0].target,
        Some(service_port::Target::TargetPort(8080))
    );
    assert_eq!(web.ports[0].protocol, pb::Protocol::Http1 as i32);
    assert_eq!(
        web.ports[1].target,
        Some(service_port::Target::TargetPortName("admin".into()))
    );
    assert_eq!(
        web.ports[1].protocol,
        pb::Protocol::Unspecified as i32,
        "omitted: detect"
    );

    let resource::Kind::Endpoints(endpoints) = &objects["Endpoints shop/web"] else {
        panic!("not endpoints")
    };
    let [first, second] = &endpoints.endpoints[..] else {
        panic!("two endpoints")
    };
    assert_eq!(first.identity, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(
        (first.ready, first.weight, first.zone.as_str()),
        (true, 1, "a")
    );
    assert_eq!(first.pod, "shop/web-1");
    assert_eq!(
        first.ports[1],
        pb::EndpointPort {
            name: "admin".into(),
            port: 9001
        }
    );
    assert_eq!(
        (second.ready, second.weight, second.identity.as_str()),
        (false, 3, "")
    );

    let resource::Kind::Route(route) = &objects["Route shop/web-canary"] else {
        panic!("not a route")
    };
    assert_eq!(
        route.parents,
        [pb::ParentRef {
            service: "web".into(),
            namespace: "shop".into(),
            port: 80
        }],
        "the namespace defaults to the route's"
    );
    let rule = &route.rules[0];
    let matched = &rule.matches[0];
    assert_eq!(
        matched.path,
        Some(pb::PathMatch {
            kind: path_match::Kind::Prefix as i32,
            value: "/api".into()
        })
    );
    assert_eq!(
        matched.headers[0].value,
        Some(header_match::Value::Exact("yes".into()))
    );
    assert_eq!(
        matched.headers[1].value,
        Some(header_match::Value::Regex("^tester-[0-9]+$".into()))
    );
    assert_eq!(matched.method, "GET");
    assert_eq!((rule.backends[0].weight, rule.backends[1].weight), (10, 1));
    assert_eq!(rule.backends[0].namespace, "shop");
    assert_eq!(rule.timeout_ms, 1500);

    let resource::Kind::AuthorizationPolicy(policy) =
        &objects["AuthorizationPolicy shop/web-callers"]
    else {
        panic!("not a policy")
    };
    assert_eq!(policy.target_service, "web");
    assert_eq!(policy.action, authorization_policy::Action::Deny as i32);
    assert_eq!(policy.rules[0].principals.len(), 2);
    assert_eq!(policy.rules[0].paths, ["/admin*"]);
    assert_eq!(policy.rules[0].ports, [9000]);
}

#[test]
fn documents_spread_over_files_and_separators_all_count() {
    let minimal =
        "apiVersion: trellis.io/v1alpha1\nkind: Service\nmetadata: {name: api}\nspec: {}\n";
    let files = Fixture::with(&[
        (
            "a.yml",
            &format!(
                "---\n# leading separator and comment\n{minimal}---\n---\n# empty documents are skipped\n"
            ),
        ),
        (
            "b.yaml",
            &minimal
                .replace("{name: api}", "{name: db}")
                .replace("Service", "Endpoints"),
        ),
        ("notes.txt", "not YAML, not read"),
        (".web.yaml.swp", "an editor's swap file, not read"),
        ("empty.yaml", ""),
    ]);
    assert!(files.rejections().is_empty(), "{:#?}", files.rejections());
    assert_eq!(
        files.names(),
        ["Endpoints default/db", "Service default/api"]
    );
}

/// Each broken document, the field it should be rejected for, the text on the line
/// it should point at, and a piece of the message.
const MISTAKES: &[(&str, &str, &str, &str)] = &[
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {name: http, port: 80,\n",
        "",
        "",
        "did not find expected",
    ),
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  portz: []\n",
        "spec",
        "portz",
        "unknown field `portz`",
    ),
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - name: http\n    port: eighty\n",
        "spec.ports[0].port",
        "port: eighty",
        "invalid type",
    ),
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {name: http, port: 80, protocol: HTTP3}\n",
        "spec.ports[0].protocol",
        "HTTP3",
        "unknown variant `HTTP3`",
    ),
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  clusterIPs:\n  - 10.96.0.1\n  - 10.96.0.256\n",
        "spec.clusterIPs[1]",
        "10.96.0.256",
        "not an IP address",
    ),
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - name: http\n    port: 70000\n",
        "spec.ports[0].port",
        "70000",
        "not a port",
    ),
    (
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {name: http, port: 80, targetPort: HTTP_2}\n",
        "spec.ports[0].targetPort",
        "HTTP_2",
        "neither a port number nor a port name",
    ),
    (
        "kind: Endpoints\nmetadata: {name: web}\nspec:\n  endpoints:\n  - address: 10.0.0.1\n    identity: spiffe://cluster.local/web\n",
        "spec.endpoints[0].identity",
        "identity:",
        "spiffe://cluster.local/web",
    ),
    (
        "kind: Endpoints\nmetadata: {name: web}\nspec:\n  endpoints:\n  - address: 10.0.0.1\n    ports: [{port: 0}]\n",
        "spec.endpoints[0].ports[0].port",
        "port: 0",
        "not a port",
    ),
    (
        "kind: Route\nmetadata: {name: web}\nspec:\n  parents: [{service: web}]\n  rules:\n  - matches:\n    - path:\n        type: RegularExpression\n        value: \"/(unclosed\"\n    backends: [{service: web, port: 80}]\n",
        "spec.rules[0].matches[0].path.value",
        "unclosed",
        "not a regular expression",
    ),
    (
        "kind: Route\nmetadata: {name: web}\nspec:\n  parents: [{service: web}]\n  rules:\n  - matches:\n    - headers:\n      - {name: x-a, value: a, regex: a}\n    backends: [{service: web, port: 80}]\n",
        "spec.rules[0].matches[0].headers[0]",
        "x-a",
        "not both",
    ),
    (
        "kind: Route\nmetadata: {name: web}\nspec:\n  rules:\n  - backends: [{service: web, port: 80}]\n",
        "spec.parents",
        "  rules:",
        "at least one service",
    ),
    (
        "kind: AuthorizationPolicy\nmetadata: {name: web}\nspec:\n  action: Maybe\n",
        "spec.action",
        "Maybe",
        "unknown variant `Maybe`",
    ),
    (
        "kind: AuthorizationPolicy\nmetadata: {name: web}\nspec:\n  rules:\n  - principals:\n    - spiffe://cluster.local/ns/shop/sa/web\n    - checkout\n",
        "spec.rules[0].principals[1]",
        "- checkout",
        "not a SPIFFE ID",
    ),
    (
        "kind: Gateway\nmetadata: {name: web}\nspec: {}\n",
        "kind",
        "Gateway",
        "not a kind",
    ),
    (
        "kind: Service\nmetadata: {name: Web_Server}\nspec: {}\n",
        "metadata.name",
        "Web_Server",
        "not a DNS label",
    ),
    (
        "kind: Service\nspec: {}\n",
        "",
        "apiVersion",
        "missing field `metadata`",
    ),
];

#[test]
fn every_mistake_is_rejected_with_its_file_line_and_field() {
    for (mistake, field, on_line, message) in MISTAKES {
        // A good document first, so that line numbers count from the file's start.
        let text = format!(
            "apiVersion: trellis.io/v1alpha1\nkind: Service\nmetadata: {{name: good}}\nspec: {{}}\n---\napiVersion: trellis.io/v1alpha1\n{mistake}"
        );
        let files = Fixture::with(&[("objects.yaml", &text)]);
        let rejection = files.rejection();
        let line = if on_line.is_empty() {
            rejection.line.unwrap()
        } else {
            // In the broken document, which starts on line 6.
            5 + line_of(&text[text.find("---").unwrap() + 4..], on_line)
        };
        assert_eq!(
            (
                rejection.origin.as_str(),
                rejection.line,
                rejection.field.as_str()
            ),
            (files.path("objects.yaml").as_str(), Some(line), *field),
            "{rejection}\nin\n{text}"
        );
        assert!(rejection.message.contains(message), "{rejection}");
        assert!(
            rejection
                .to_string()
                .starts_with(&format!("{}:{line}:", files.path("objects.yaml")))
        );
        assert_eq!(
            files.names(),
            ["Service default/good"],
            "the rest stays in force"
        );
    }
}

#[test]
fn a_wrong_api_version_is_rejected_at_its_line() {
    let text = "kind: Service\napiVersion: v1\nmetadata: {name: web}\nspec: {}\n";
    let files = Fixture::with(&[("web.yaml", text)]);
    let rejection = files.rejection();
    assert_eq!(
        (rejection.line, rejection.field.as_str()),
        (Some(2), "apiVersion")
    );
    assert!(
        rejection.message.contains("trellis.io/v1alpha1"),
        "{rejection}"
    );
}

#[test]
fn an_object_defined_twice_is_rejected_where_it_is_defined_again() {
    let web = "apiVersion: trellis.io/v1alpha1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {}\n";
    let text = format!("{web}---\n{web}");
    let files = Fixture::with(&[("twice.yaml", &text)]);
    let rejection = files.rejection();
    assert_eq!(
        (rejection.line, rejection.field.as_str()),
        (Some(8), "metadata.name")
    );
    assert!(rejection.message.contains("line 3"), "{rejection}");

    let files = Fixture::with(&[("a.yaml", web), ("b.yaml", web)]);
    let rejection = files.rejection();
    assert_eq!(rejection.origin, files.path("b.yaml"));
    assert_eq!(rejection.line, Some(3));
    assert!(rejection.message.contains("a.yaml"), "{rejection}");
    assert_eq!(files.names(), ["Service shop/web"]);
}

#[test]
fn a_broken_edit_keeps_the_last_good_version_of_that_file() {
    let mut files = Fixture::with(&[("shop.yaml", SHOP)]);
    let before = files.objects();

    // The endpoints document gets a bad address, and the service a new port: the
    // service changes, the endpoints stay as they were, everything else stays too.
    let broken = SHOP
        .replace("address: 10.199.0.3", "address: 10.199.0.300")
        .replace(
            "port: 9000, targetPort: admin",
            "port: 9001, targetPort: admin",
        );
    files.write("shop.yaml", &broken);
    let rejection = files.rejection();
    assert_eq!(rejection.field, "spec.endpoints[1].address");
    assert_eq!(rejection.line, Some(line_of(&broken, "10.199.0.300")));
    let during = files.objects();
    assert_eq!(during["Endpoints shop/web"], before["Endpoints shop/web"]);
    assert_ne!(during["Service shop/web"], before["Service shop/web"]);
    assert_eq!(during.len(), 4);

    // While the file is broken, dropping a document does not remove its object...
    let cut = broken
        .split("---\napiVersion: trellis.io/v1alpha1\nkind: AuthorizationPolicy")
        .next()
        .unwrap();
    files.write("shop.yaml", cut);
    assert_eq!(files.objects().len(), 4);
    // ...and a syntax error keeps every object of the file.
    files.write("shop.yaml", "kind: [unclosed\n");
    assert_eq!(files.rejection().line, Some(2));
    assert_eq!(files.objects().len(), 4);

    // Fixed: the file defines exactly its documents again.
    let fixed = cut.replace("10.199.0.300", "10.199.0.4");
    files.write("shop.yaml", &fixed);
    assert!(files.rejections().is_empty());
    let after = files.objects();
    assert_eq!(after.len(), 3, "the policy was removed from the file");
    assert_ne!(after["Endpoints shop/web"], before["Endpoints shop/web"]);
}

#[test]
fn a_deleted_file_takes_its_objects_and_its_rejections_with_it() {
    let mut files = Fixture::with(&[
        ("shop.yaml", SHOP),
        ("bad.yaml", "apiVersion: trellis.io/v1alpha1\nkind: Nope\n"),
    ]);
    assert_eq!(files.objects().len(), 4);
    assert_eq!(files.rejections().len(), 1);
    files.remove("shop.yaml");
    files.remove("bad.yaml");
    assert!(files.objects().is_empty());
    assert!(files.rejections().is_empty());
}

#[test]
fn rejections_are_counted_once_each() {
    let mut files = Fixture::with(&[("bad.yaml", "apiVersion: trellis.io/v1alpha1\nkind: Nope\n")]);
    let counted = |files: &Fixture| {
        let metrics = files.model.metrics().encode();
        metrics
            .lines()
            .find(|line| line.starts_with("source_rejections_total{source=\"files\"}"))
            .map(|line| line.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(counted(&files).as_deref(), Some("1"));
    // Re-reading the same broken file is not a new rejection; a new mistake is.
    files.files.rescan();
    assert_eq!(counted(&files).as_deref(), Some("1"));
    files.write(
        "bad.yaml",
        "apiVersion: trellis.io/v1alpha1\nkind: Neither\n",
    );
    assert_eq!(counted(&files).as_deref(), Some("2"));
}

#[test]
fn a_missing_directory_is_an_error_naming_the_flag() {
    let dir = ScratchDir::new("missing");
    let model = Model::new(Duration::from_millis(10), Arc::new(Metrics::new()));
    let error = FileSource::open(dir.path(), model.source(SOURCE_NAME), Duration::ZERO)
        .err()
        .expect("no directory");
    let message = error.to_string();
    assert!(message.contains("--config-dir"), "{message}");
    assert!(message.contains("no such directory"), "{message}");
}

/// Polls until `done` holds, for at most a few seconds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_watch_sees_new_replaced_and_deleted_files() {
    let Fixture { dir, model, files } = Fixture::with(&[]);
    let shutdown = CancellationToken::new();
    let watching = tokio::spawn(files.run(shutdown.clone()));
    let services = || model.sources()[0].objects["service"];

    // A new file.
    std::fs::write(dir.path().join("shop.yaml"), SHOP).unwrap();
    eventually("a new file", || services() == 1).await;

    // An editor's atomic save: write a temporary file, rename it over the old one.
    let temporary = dir.path().join(".shop.yaml.tmp");
    let two = SHOP.replace(
        "---\napiVersion: trellis.io/v1alpha1\nkind: Endpoints",
        "---\napiVersion: trellis.io/v1alpha1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec: {}\n---\napiVersion: trellis.io/v1alpha1\nkind: Endpoints",
    );
    std::fs::write(&temporary, two).unwrap();
    std::fs::rename(&temporary, dir.path().join("shop.yaml")).unwrap();
    eventually("a renamed file", || services() == 2).await;

    // A deletion.
    std::fs::remove_file(dir.path().join("shop.yaml")).unwrap();
    eventually("a deleted file", || services() == 0).await;

    shutdown.cancel();
    watching.await.unwrap();
}
