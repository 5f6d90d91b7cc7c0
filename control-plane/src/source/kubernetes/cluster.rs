//! What the source knows of the cluster: the objects its watches delivered, kept the
//! way a kube-rs reflector keeps them, and which model objects each change affects.
//!
//! Each kind has a store that follows the watcher's protocol: `Apply` and `Delete`
//! change one object; `Init`, `InitApply`… `InitDone` relist the kind, and the listed
//! set replaces the store at once (objects deleted while the watch was down are never
//! announced, so only the relist can drop them). Pods are kept only as what
//! translation reads of them ([`PodView`]: the identity their endpoints get, and the
//! addresses of their own Endpoints while they run meshed), not as whole objects: a
//! cluster has many more pods than services.
//!
//! Two indexes make a change cheap to follow: the slices of each service, and the
//! slices pointing at each pod, so that a pod appearing after its slice (the watches
//! race) re-translates exactly the services it belongs to, and a slice change the
//! own Endpoints of exactly the pods it lists (a pod's own Endpoints holds the
//! addresses of it that no slice lists).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;

use super::translate::{self, PodView, SERVICE_NAME_LABEL, ServiceSlices, key};
use crate::model::{Kind, Object, ObjectKey, POD_ENDPOINTS_PREFIX, pod_endpoints_name};
use crate::source::Rejection;

/// One event of one of the five watches.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "each change moves once, from its watch into a store; boxing would only add an allocation per event"
)]
pub enum Change {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
    Pod(Event<Pod>),
    Route(Event<DynamicObject>),
    Policy(Event<DynamicObject>),
}

/// Which model objects a change may have changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Affected {
    These(BTreeSet<ObjectKey>),
    /// A watch (re)listed its kind: everything is translated again.
    All,
}

/// A model object's translation.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Defined(Object),
    /// Nothing in the cluster defines it (any more).
    Gone,
    /// The cluster's object cannot be translated: whatever the model holds stays.
    Rejected,
}

/// One kind's objects by `namespace/name`.
struct Store<T> {
    objects: BTreeMap<String, T>,
    /// Collects a relist until `InitDone`.
    relist: Option<BTreeMap<String, T>>,
    /// Whether the kind has been listed once.
    listed: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            relist: None,
            listed: false,
        }
    }
}

impl<T> Store<T> {
    /// Applies one event, `reduce`d to what is kept; returns whether it ended a
    /// listing, and the object's previous and new versions for `Apply` and `Delete`.
    fn apply<K: kube::Resource>(&mut self, event: Event<K>, reduce: impl Fn(K) -> T) -> Step<T> {
        let name = |object: &K| {
            let meta = object.meta();
            key(
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            )
        };
        match event {
            Event::Apply(object) => {
                let key = name(&object);
                let old = self.objects.insert(key.clone(), reduce(object));
                Step::Changed(key, old)
            }
            Event::Delete(object) => {
                let key = name(&object);
                let old = self.objects.remove(&key);
                Step::Changed(key, old)
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Step::Listing
            }
            Event::InitApply(object) => {
                let key = name(&object);
                self.relist
                    .get_or_insert_default()
                    .insert(key, reduce(object));
                Step::Listing
            }
            Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.listed = true;
                Step::Listed
            }
        }
    }
}

enum Step<T> {
    /// The object `namespace/name` and what the store held for it before.
    Changed(String, Option<T>),
    Listing,
    Listed,
}

/// Everything the watches delivered, reduced to what translation reads.
pub struct Cluster {
    trust_domain: String,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<PodView>,
    routes: Store<DynamicObject>,
    policies: Store<DynamicObject>,
    /// Slices (`namespace/name`) by their service's `namespace/name`.
    slices_by_service: BTreeMap<String, BTreeSet<String>>,
    /// Slices by the pods (`namespace/name`) their endpoints point at.
    slices_by_pod: HashMap<String, BTreeSet<String>>,
}

impl Cluster {
    pub fn new(trust_domain: &str) -> Self {
        Cluster {
            trust_domain: trust_domain.to_string(),
            services: Store::default(),
            slices: Store::default(),
            pods: Store::default(),
            routes: Store::default(),
            policies: Store::default(),
            slices_by_service: BTreeMap::new(),
            slices_by_pod: HashMap::new(),
        }
    }

    /// Whether every kind has been listed once: until then the cluster is partial.
    pub fn listed(&self) -> bool {
        self.services.listed
            && self.slices.listed
            && self.pods.listed
            && self.routes.listed
            && self.policies.listed
    }

    /// Applies one watch event and says which model objects it affects.
    pub fn apply(&mut self, change: Change) -> Affected {
        let only = |kind, key: String| ObjectKey { kind, name: key };
        let listed = match change {
            Change::Service(event) => match self.services.apply(event, strip) {
                Step::Changed(key, _) => return these([only(Kind::Service, key)]),
                step => step.listed(),
            },
            Change::Route(event) => match self.routes.apply(event, |o| o) {
                Step::Changed(key, _) => return these([only(Kind::Route, key)]),
                step => step.listed(),
            },
            Change::Policy(event) => match self.policies.apply(event, |o| o) {
                Step::Changed(key, _) => return these([only(Kind::AuthorizationPolicy, key)]),
                step => step.listed(),
            },
            Change::Slice(event) => match self.slices.apply(event, strip) {
                Step::Changed(key, old) => return self.slice_changed(&key, old),
                step => {
                    let listed = step.listed();
                    if listed {
                        self.index_slices();
                    }
                    listed
                }
            },
            Change::Pod(event) => {
                let trust_domain = self.trust_domain.clone();
                let view = |pod: Pod| translate::pod_view(&pod, &trust_domain);
                match self.pods.apply(event, view) {
                    Step::Changed(key, old) => return self.pod_changed(&key, old),
                    step => step.listed(),
                }
            }
        };
        if listed {
            Affected::All
        } else {
            Affected::These(BTreeSet::new())
        }
    }

    /// The Endpoints of the services the slice belonged to and belongs to now, and
    /// the own Endpoints of the meshed pods it listed and lists.
    fn slice_changed(&mut self, slice: &str, old: Option<EndpointSlice>) -> Affected {
        let mut services = BTreeSet::new();
        let mut pods = BTreeSet::new();
        if let Some(old) = old {
            self.unindex(slice, &old);
            services.extend(service_of(&old));
            pods.extend(pods_of(&old));
        }
        if let Some(new) = self.slices.objects.get(slice) {
            services.extend(service_of(new));
            pods.extend(pods_of(new));
        }
        self.index(slice);
        let own = pods
            .into_iter()
            .filter(|pod| self.pods.objects.get(pod).is_some_and(has_own_endpoints))
            .map(|pod| own_endpoints(&pod));
        these(
            services
                .into_iter()
                .map(|name| ObjectKey {
                    kind: Kind::Endpoints,
                    name,
                })
                .chain(own),
        )
    }

    /// The Endpoints pointing at the pod, when its identity changed, and its own,
    /// when its identity or addresses did.
    fn pod_changed(&self, pod: &str, old: Option<PodView>) -> Affected {
        let old = old.unwrap_or_default();
        let new = self.pods.objects.get(pod).cloned().unwrap_or_default();
        let mut affected = BTreeSet::new();
        if old.identity != new.identity {
            let services = self
                .slices_by_pod
                .get(pod)
                .into_iter()
                .flatten()
                .filter_map(|slice| self.slices.objects.get(slice))
                .filter_map(service_of);
            affected.extend(services.map(|name| ObjectKey {
                kind: Kind::Endpoints,
                name,
            }));
        }
        if old != new && (has_own_endpoints(&old) || has_own_endpoints(&new)) {
            affected.insert(own_endpoints(pod));
        }
        Affected::These(affected)
    }

    fn index(&mut self, slice_key: &str) {
        let Some(slice) = self.slices.objects.get(slice_key) else {
            return;
        };
        if let Some(service) = service_of(slice) {
            self.slices_by_service
                .entry(service)
                .or_default()
                .insert(slice_key.to_string());
        }
        for pod in pods_of(slice) {
            self.slices_by_pod
                .entry(pod)
                .or_default()
                .insert(slice_key.to_string());
        }
    }

    fn unindex(&mut self, slice_key: &str, slice: &EndpointSlice) {
        if let Some(service) = service_of(slice)
            && let Some(slices) = self.slices_by_service.get_mut(&service)
        {
            slices.remove(slice_key);
            if slices.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
        for pod in pods_of(slice) {
            if let Some(slices) = self.slices_by_pod.get_mut(&pod) {
                slices.remove(slice_key);
                if slices.is_empty() {
                    self.slices_by_pod.remove(&pod);
                }
            }
        }
    }

    fn index_slices(&mut self) {
        self.slices_by_service.clear();
        self.slices_by_pod.clear();
        let keys: Vec<String> = self.slices.objects.keys().cloned().collect();
        for key in keys {
            self.index(&key);
        }
    }

    /// Every model object the cluster defines now.
    pub fn keys(&self) -> BTreeSet<ObjectKey> {
        let of = |kind, names: &mut dyn Iterator<Item = &String>| {
            names
                .map(|name| ObjectKey {
                    kind,
                    name: name.clone(),
                })
                .collect::<Vec<_>>()
        };
        let mut keys = BTreeSet::new();
        keys.extend(of(Kind::Service, &mut self.services.objects.keys()));
        keys.extend(of(Kind::Endpoints, &mut self.slices_by_service.keys()));
        keys.extend(
            self.pods
                .objects
                .iter()
                .filter(|(_, view)| has_own_endpoints(view))
                .map(|(pod, _)| own_endpoints(pod)),
        );
        keys.extend(of(Kind::Route, &mut self.routes.objects.keys()));
        keys.extend(of(
            Kind::AuthorizationPolicy,
            &mut self.policies.objects.keys(),
        ));
        keys
    }

    /// The model object `key` as the cluster defines it now, and what its
    /// translation rejects.
    pub fn translate(&self, key: &ObjectKey) -> (Outcome, Vec<Rejection>) {
        let defined = |result: Result<Object, Rejection>| match result {
            Ok(object) => (Outcome::Defined(object), Vec::new()),
            Err(rejection) => (Outcome::Rejected, vec![rejection]),
        };
        match key.kind {
            Kind::Service => match self.services.objects.get(&key.name).map(translate::service) {
                None | Some(Ok(None)) => (Outcome::Gone, Vec::new()),
                Some(Ok(Some(service))) => (Outcome::Defined(Object::Service(service)), Vec::new()),
                Some(Err(rejection)) => (Outcome::Rejected, vec![rejection]),
            },
            Kind::Endpoints => {
                let (namespace, name) = key.name.split_once('/').unwrap_or_default();
                if let Some(pod) = name.strip_prefix(POD_ENDPOINTS_PREFIX) {
                    let pod_key = self::key(namespace, pod);
                    let listed = self.listed_addresses(&pod_key);
                    let own = self.pods.objects.get(&pod_key).and_then(|view| {
                        translate::pod_endpoints(namespace, pod, view, |a| listed.contains(a))
                    });
                    return match own {
                        Some(endpoints) => {
                            (Outcome::Defined(Object::Endpoints(endpoints)), Vec::new())
                        }
                        None => (Outcome::Gone, Vec::new()),
                    };
                }
                let Some(slice_keys) = self.slices_by_service.get(&key.name) else {
                    return (Outcome::Gone, Vec::new());
                };
                let slices = ServiceSlices {
                    namespace,
                    name,
                    slices: slice_keys
                        .iter()
                        .filter_map(|slice| self.slices.objects.get(slice))
                        .collect(),
                };
                let identity = |pod: &str| {
                    let view = self.pods.objects.get(pod)?;
                    view.identity.as_deref()
                };
                let (endpoints, rejections) = translate::endpoints(&slices, identity);
                (Outcome::Defined(Object::Endpoints(endpoints)), rejections)
            }
            Kind::Route => match self.routes.objects.get(&key.name) {
                None => (Outcome::Gone, Vec::new()),
                Some(route) => defined(translate::route(route)),
            },
            Kind::AuthorizationPolicy => match self.policies.objects.get(&key.name) {
                None => (Outcome::Gone, Vec::new()),
                Some(policy) => defined(translate::authorization_policy(policy)),
            },
        }
    }
}

impl Cluster {
    /// The addresses of pod `namespace/name` that the slices pointing at it list.
    fn listed_addresses(&self, pod: &str) -> BTreeSet<String> {
        let (namespace, name) = pod.split_once('/').unwrap_or_default();
        self.slices_by_pod
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.objects.get(slice))
            .flat_map(|slice| {
                let slice_namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
                slice.endpoints.iter().filter(move |endpoint| {
                    endpoint.target_ref.as_ref().is_some_and(|target| {
                        target.kind.as_deref() == Some("Pod")
                            && target.name.as_deref() == Some(name)
                            && target.namespace.as_deref().unwrap_or(slice_namespace) == namespace
                    })
                })
            })
            .flat_map(|endpoint| &endpoint.addresses)
            // The canonical spelling, as the pod's own addresses are kept.
            .filter_map(|address| address.parse::<std::net::IpAddr>().ok())
            .map(|ip| ip.to_string())
            .collect()
    }
}

impl<T> Step<T> {
    /// Whether this step ended a listing.
    fn listed(&self) -> bool {
        matches!(self, Step::Listed)
    }
}

fn these(keys: impl IntoIterator<Item = ObjectKey>) -> Affected {
    Affected::These(keys.into_iter().collect())
}

/// Drops the API server's field-ownership bookkeeping, the largest part of most
/// objects, which translation never reads.
fn strip<K: kube::Resource>(mut object: K) -> K {
    object.meta_mut().managed_fields = None;
    object
}

/// Whether a pod may need an Endpoints of its own: it runs meshed, with addresses.
fn has_own_endpoints(pod: &PodView) -> bool {
    pod.identity.is_some() && !pod.addresses.is_empty()
}

/// The key of pod `namespace/name`'s own Endpoints.
fn own_endpoints(pod: &str) -> ObjectKey {
    let (namespace, name) = pod.split_once('/').unwrap_or_default();
    ObjectKey::new(Kind::Endpoints, namespace, &pod_endpoints_name(name))
}

/// The `namespace/name` of the service a slice belongs to.
fn service_of(slice: &EndpointSlice) -> Option<String> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(key(slice.metadata.namespace.as_deref()?, service))
}

/// The pods (`namespace/name`) a slice's endpoints point at.
fn pods_of(slice: &EndpointSlice) -> impl Iterator<Item = String> + '_ {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
    slice
        .endpoints
        .iter()
        .filter_map(|endpoint| endpoint.target_ref.as_ref())
        .filter(|target| target.kind.as_deref() == Some("Pod"))
        .filter_map(move |target| {
            Some(key(
                target.namespace.as_deref().unwrap_or(namespace),
                target.name.as_deref()?,
            ))
        })
}

#[cfg(test)]
mod tests;
