//! The custom resources: the chart's definitions are what the types generate, and a
//! resource as the API server serves it becomes the same discovery message as the
//! same spec in a YAML file.

use std::path::PathBuf;

use serde_json::json;

use super::*;

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHART_DIR)
}

#[test]
fn the_charts_definitions_are_what_the_types_generate() {
    let definitions = definitions().unwrap();
    let mut checked_in: Vec<String> = std::fs::read_dir(chart_dir())
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    checked_in.sort();
    let mut expected: Vec<String> = definitions.iter().map(|(f, _)| f.to_string()).collect();
    expected.sort();
    assert_eq!(
        checked_in, expected,
        "{CHART_DIR} holds other files than the definitions: remove them, and regenerate from the \
         workspace root with:\n\n    {REGENERATE}\n"
    );
    for (file, generated) in definitions {
        let path = chart_dir().join(file);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{CHART_DIR}/{file} is stale or missing: the Route and AuthorizationPolicy \
             types changed without their CRDs. Regenerate them from the workspace root \
             with:\n\n    {REGENERATE}\n"
        );
    }
}

#[test]
fn the_definitions_name_group_version_kinds_and_camel_case_fields() {
    let route = serde_json::to_value(Route::crd()).unwrap();
    assert_eq!(route["metadata"]["name"], "routes.trellis.io");
    assert_eq!(route["spec"]["group"], GROUP);
    assert_eq!(route["spec"]["scope"], "Namespaced");
    assert_eq!(route["spec"]["names"]["kind"], "Route");
    assert_eq!(route["spec"]["names"]["categories"], json!(["trellis"]));
    let version = &route["spec"]["versions"][0];
    assert_eq!(version["name"], VERSION);
    let rule = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]["items"]
        ["properties"];
    assert_eq!(rule["timeoutMs"]["type"], "integer");
    let path_type = &rule["matches"]["items"]["properties"]["path"]["properties"]["type"];
    assert_eq!(
        path_type["enum"],
        json!(["Exact", "Prefix", "RegularExpression"])
    );

    let policy = serde_json::to_value(AuthorizationPolicy::crd()).unwrap();
    assert_eq!(
        policy["metadata"]["name"],
        "authorizationpolicies.trellis.io"
    );
    let spec = &policy["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["targetService"]["type"], "string");
    assert_eq!(spec["action"]["enum"], json!(["Allow", "Deny"]));
    assert_eq!(spec["action"]["default"], "Allow");
}

/// A Route as `kubectl get route web-canary -o json` shows it: the API server has
/// applied the schema's defaults and added its metadata.
const ROUTE_FROM_THE_API: &str = r#"{
  "apiVersion": "trellis.io/v1alpha1",
  "kind": "Route",
  "metadata": {
    "creationTimestamp": "2025-06-02T09:14:03Z",
    "generation": 1,
    "name": "web-canary",
    "namespace": "shop",
    "resourceVersion": "48213",
    "uid": "4f1b7f0e-1f7c-4d1e-9d55-2a1f0c7e9b11"
  },
  "spec": {
    "parents": [{"service": "web", "port": 80}],
    "rules": [
      {
        "matches": [
          {
            "path": {"type": "Prefix", "value": "/api"},
            "headers": [{"name": "x-canary", "value": "yes"}],
            "method": "GET"
          }
        ],
        "backends": [
          {"service": "web-v2", "port": 80, "weight": 10},
          {"service": "web", "namespace": "shop", "port": 80, "weight": 1}
        ],
        "timeoutMs": 1500
      }
    ]
  }
}"#;

#[test]
fn a_route_from_the_api_server_becomes_the_same_message_as_its_yaml_spec() {
    let from_api: Route = serde_json::from_str(ROUTE_FROM_THE_API).unwrap();
    let from_yaml: RouteSpec = serde_yaml_ng::from_str(
        "parents: [{service: web, port: 80}]\n\
         rules:\n\
         - matches: [{path: {type: Prefix, value: /api}, headers: [{name: x-canary, value: \"yes\"}], method: GET}]\n\
         \x20 backends: [{service: web-v2, port: 80, weight: 10}, {service: web, namespace: shop, port: 80}]\n\
         \x20 timeoutMs: 1500\n",
    )
    .unwrap();
    assert_eq!(from_api.spec, from_yaml);

    let object = route("shop".into(), "web-canary".into(), from_api.spec).unwrap();
    let Object::Route(route) = object else {
        panic!("not a route: {object:?}")
    };
    assert_eq!(
        route.parents,
        [pb::ParentRef {
            service: "web".into(),
            namespace: "shop".into(),
            port: 80
        }]
    );
    assert_eq!(
        route.rules[0].backends[0].namespace, "shop",
        "the route's own"
    );
    assert_eq!(route.rules[0].backends[1].weight, 1);
    assert_eq!(route.rules[0].timeout_ms, 1500);
}

#[test]
fn a_header_match_needs_exactly_one_of_value_and_regex() {
    let spec = |header: HeaderSpec| RouteSpec {
        parents: vec![ParentSpec {
            service: "web".into(),
            ..ParentSpec::default()
        }],
        rules: vec![RuleSpec {
            matches: vec![MatchSpec {
                headers: vec![header],
                ..MatchSpec::default()
            }],
            ..RuleSpec::default()
        }],
    };
    let both = HeaderSpec {
        name: "x".into(),
        value: Some("a".into()),
        regex: Some("b".into()),
    };
    let error = route("shop".into(), "r".into(), spec(both)).unwrap_err();
    assert_eq!(error.field, "spec.rules[0].matches[0].headers[0]");
    let neither = HeaderSpec {
        name: "x".into(),
        ..HeaderSpec::default()
    };
    assert!(route("shop".into(), "r".into(), spec(neither)).is_err());
}

#[test]
fn an_unknown_field_is_an_error_not_a_silently_missing_setting() {
    let error = serde_json::from_value::<AuthorizationPolicySpec>(json!({
        "targetService": "web",
        "rule": [],
    }))
    .unwrap_err();
    assert!(
        error.to_string().contains("unknown field `rule`"),
        "{error}"
    );
}
