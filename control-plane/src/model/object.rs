//! The four kinds of object the model holds, and how they are named.
//!
//! Objects are the discovery protocol's own messages: a source translates whatever it
//! reads (YAML documents, Kubernetes objects) into them once, and from then on the
//! model, the snapshots and the proxies all speak the same types.

use std::fmt;

use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::type_url;

/// A kind of resource, one per discovery type URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Endpoints,
    Route,
    AuthorizationPolicy,
}

impl Kind {
    /// In the order of [`type_url::ALL`], which is also the index of each kind in a
    /// [`crate::model::Snapshot`].
    pub const ALL: [Kind; 4] = [
        Kind::Service,
        Kind::Endpoints,
        Kind::Route,
        Kind::AuthorizationPolicy,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Service => type_url::SERVICE,
            Kind::Endpoints => type_url::ENDPOINTS,
            Kind::Route => type_url::ROUTE,
            Kind::AuthorizationPolicy => type_url::AUTHORIZATION_POLICY,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.type_url() == url)
    }

    /// The `kind:` of a YAML document (and of a Kubernetes object).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Route => "Route",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The metrics label value: bounded, lower case.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Endpoints => "endpoints",
            Kind::Route => "route",
            Kind::AuthorizationPolicy => "authorization_policy",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name prefix of an Endpoints that holds one pod's own addresses and identity
/// (`pod.web-7d9f8-x2k4q`), so that a proxy reaches the pod over mTLS whether or not
/// it backs a Service. No Service can own it: a Service's name is a DNS label, which
/// never holds a dot.
pub const POD_ENDPOINTS_PREFIX: &str = "pod.";

/// The name of pod `pod`'s own Endpoints.
pub fn pod_endpoints_name(pod: &str) -> String {
    format!("{POD_ENDPOINTS_PREFIX}{pod}")
}

/// What identifies an object: its kind and `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    /// `namespace/name`, the form proxies subscribe by.
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            name: format!("{namespace}/{name}"),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// One typed object, as a source hands it to the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Service(pb::Service),
    Endpoints(pb::Endpoints),
    Route(pb::Route),
    AuthorizationPolicy(pb::AuthorizationPolicy),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Route(_) => Kind::Route,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            Object::Service(o) => &o.namespace,
            Object::Endpoints(o) => &o.namespace,
            Object::Route(o) => &o.namespace,
            Object::AuthorizationPolicy(o) => &o.namespace,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::Service(o) => &o.name,
            Object::Endpoints(o) => &o.name,
            Object::Route(o) => &o.name,
            Object::AuthorizationPolicy(o) => &o.name,
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind(), self.namespace(), self.name())
    }

    pub fn to_resource(&self) -> pb::Resource {
        use pb::resource::Kind as R;
        let kind = match self {
            Object::Service(o) => R::Service(o.clone()),
            Object::Endpoints(o) => R::Endpoints(o.clone()),
            Object::Route(o) => R::Route(o.clone()),
            Object::AuthorizationPolicy(o) => R::AuthorizationPolicy(o.clone()),
        };
        pb::Resource { kind: Some(kind) }
    }
}
