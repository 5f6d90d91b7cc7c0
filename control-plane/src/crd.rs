//! The Trellis custom resources, `Route` and `AuthorizationPolicy` in
//! `trellis.io/v1alpha1`: their spec types, their translation into model objects, and
//! the CustomResourceDefinitions generated from them.
//!
//! Both sources read these very types: the file source from YAML documents, the
//! Kubernetes source from the API server. So the two spellings cannot drift apart,
//! the translation into discovery messages exists once (here), and the CRD schemas in
//! `charts/trellis/crds/` are generated from the same structs (`trellis-controller
//! crds`; a test fails when the checked-in files are stale).
//!
//! Defaults are filled in here, so proxies always receive complete objects: a
//! missing namespace in a reference is the object's own, a backend's weight is 1, an
//! action is Allow. `deny_unknown_fields` makes a misspelt field an error rather than
//! a silently missing setting; the API server prunes unknown fields from custom
//! resources before storing them, so objects from a cluster never trip it.

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::{authorization_policy, header_match, path_match};

use crate::error::Invalid;
use crate::model::Object;

/// The API group of the Trellis resources.
pub const GROUP: &str = "trellis.io";
/// The one version the resources have.
pub const VERSION: &str = "v1alpha1";

fn one() -> u32 {
    1
}

/// Which requests go where: shaped after Gateway API's HTTPRoute.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "trellis.io",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    category = "trellis",
    doc = "Routes the requests sent to a service's ports to weighted backends."
)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The service ports this route applies to.
    #[serde(default)]
    pub parents: Vec<ParentSpec>,
    /// The first rule with a matching request wins.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentSpec {
    pub service: String,
    /// Omitted: the route's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Omitted or 0: every port of the service.
    #[serde(default)]
    #[schemars(range(max = 65535))]
    pub port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// Any match selects the rule; none selects every request.
    #[serde(default)]
    pub matches: Vec<MatchSpec>,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// Omitted or 0: no timeout.
    #[serde(default)]
    pub timeout_ms: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSpec>,
    /// Every header listed must match.
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
    /// Empty: any method.
    #[serde(default)]
    pub method: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    pub r#type: PathType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum PathType {
    Exact,
    Prefix,
    RegularExpression,
}

/// Give `value` (exact) or `regex`, not both.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub service: String,
    /// Omitted: the route's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default = "one")]
    pub weight: u32,
}

/// Who may call a service: shaped after Istio's AuthorizationPolicy.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "trellis.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    namespaced,
    category = "trellis",
    doc = "Allows or denies the requests to a service's endpoints (or to every workload of its namespace) that match its rules."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Omitted: every workload in the namespace.
    #[serde(default)]
    pub target_service: String,
    #[serde(default)]
    pub action: Action,
    /// A request matches the policy when it matches any rule; none match nothing.
    #[serde(default)]
    pub rules: Vec<PolicyRuleSpec>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

/// A rule matches when every non-empty field does.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRuleSpec {
    /// SPIFFE IDs of callers; `*` is any authenticated caller.
    #[serde(default)]
    pub principals: Vec<String>,
    /// The callers' namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact paths, or prefixes ending in `*`.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub ports: Vec<u32>,
}

/// The route `namespace/name` as the model holds it. Reports what the types cannot
/// (a header match with both or neither of `value` and `regex`); everything else is
/// checked by the model's validation, for every source alike.
pub fn route(namespace: String, name: String, spec: RouteSpec) -> Result<Object, Invalid> {
    let in_namespace = |given: Option<String>| given.unwrap_or_else(|| namespace.clone());
    let parents = spec
        .parents
        .into_iter()
        .map(|parent| pb::ParentRef {
            namespace: in_namespace(parent.namespace),
            service: parent.service,
            port: parent.port,
        })
        .collect();
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.into_iter().enumerate() {
        let mut matches = Vec::with_capacity(rule.matches.len());
        for (j, matched) in rule.matches.into_iter().enumerate() {
            let at = format!("spec.rules[{i}].matches[{j}]");
            matches.push(route_match(matched, &at)?);
        }
        let backends = rule
            .backends
            .into_iter()
            .map(|backend| pb::BackendRef {
                namespace: in_namespace(backend.namespace),
                service: backend.service,
                port: backend.port,
                weight: backend.weight,
            })
            .collect();
        rules.push(pb::RouteRule {
            matches,
            backends,
            timeout_ms: rule.timeout_ms,
        });
    }
    Ok(Object::Route(pb::Route {
        name,
        namespace,
        parents,
        rules,
    }))
}

fn route_match(matched: MatchSpec, at: &str) -> Result<pb::RouteMatch, Invalid> {
    let path = matched.path.map(|path| pb::PathMatch {
        kind: match path.r#type {
            PathType::Exact => path_match::Kind::Exact,
            PathType::Prefix => path_match::Kind::Prefix,
            PathType::RegularExpression => path_match::Kind::Regex,
        } as i32,
        value: path.value,
    });
    let mut headers = Vec::with_capacity(matched.headers.len());
    for (k, header) in matched.headers.into_iter().enumerate() {
        let value = match (header.value, header.regex) {
            (Some(exact), None) => header_match::Value::Exact(exact),
            (None, Some(regex)) => header_match::Value::Regex(regex),
            (Some(_), Some(_)) => {
                return Err(Invalid {
                    field: format!("{at}.headers[{k}]"),
                    reason: "give value or regex, not both".into(),
                });
            }
            (None, None) => {
                return Err(Invalid {
                    field: format!("{at}.headers[{k}]"),
                    reason: "give value or regex".into(),
                });
            }
        };
        headers.push(pb::HeaderMatch {
            name: header.name,
            value: Some(value),
        });
    }
    Ok(pb::RouteMatch {
        path,
        headers,
        method: matched.method,
    })
}

/// The policy `namespace/name` as the model holds it.
pub fn authorization_policy(
    namespace: String,
    name: String,
    spec: AuthorizationPolicySpec,
) -> Object {
    let rules = spec
        .rules
        .into_iter()
        .map(|rule| pb::AuthorizationRule {
            principals: rule.principals,
            namespaces: rule.namespaces,
            methods: rule.methods,
            paths: rule.paths,
            ports: rule.ports,
        })
        .collect();
    Object::AuthorizationPolicy(pb::AuthorizationPolicy {
        name,
        namespace,
        target_service: spec.target_service,
        action: match spec.action {
            Action::Allow => authorization_policy::Action::Allow,
            Action::Deny => authorization_policy::Action::Deny,
        } as i32,
        rules,
    })
}

/// Where the chart keeps the generated definitions, from the workspace root.
pub const CHART_DIR: &str = "charts/trellis/crds";

/// The command that regenerates the files in [`CHART_DIR`].
pub const REGENERATE: &str =
    "cargo run -p trellis-control-plane --bin trellis-controller -- crds --out charts/trellis/crds";

/// Each definition as a file of the chart: its name and its YAML.
pub fn definitions() -> Result<Vec<(&'static str, String)>, serde_yaml_ng::Error> {
    let header = format!(
        "# Generated by `trellis-controller crds`: do not edit.\n# Regenerate with: {REGENERATE}\n"
    );
    Ok(vec![
        (
            "routes.trellis.io.yaml",
            format!("{header}{}", serde_yaml_ng::to_string(&Route::crd())?),
        ),
        (
            "authorizationpolicies.trellis.io.yaml",
            format!(
                "{header}{}",
                serde_yaml_ng::to_string(&AuthorizationPolicy::crd())?
            ),
        ),
    ])
}

#[cfg(test)]
mod tests;
