//! What the source knows of the cluster: the objects its watches delivered, kept the
//! way a kube-rs reflector keeps them, and which model objects each change affects.
//!
//! Each kind has a store that follows the watcher's protocol: `Apply` and `Delete`
//! change one object; `Init`, `InitApply`… `InitDone` relist the kind, and the listed
//! set replaces the store at once (objects deleted while the watch was down are never
//! announced, so only the relist can drop them). Pods are kept only as the identity
//! their endpoints get, not as whole objects: that is all translation reads, and a
//! cluster has many more pods than services.
//!
//! Two indexes make a change cheap to follow: the slices of each service, and the
//! slices pointing at each pod, so that a pod appearing after its slice (the watches
//! race) re-translates exactly the services it belongs to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;

use super::translate::{self, SERVICE_NAME_LABEL, ServiceSlices, key};
use crate::model::{Kind, Object, ObjectKey};
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
    /// A pod's identity, `None` when it is not meshed.
    pods: Store<Option<String>>,
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
                let identity = |pod: Pod| translate::pod_identity(&pod, &trust_domain);
                match self.pods.apply(event, identity) {
                    Step::Changed(key, old) => return self.pod_changed(&key, old.flatten()),
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

    /// The Endpoints of the services the slice belonged to and belongs to now.
    fn slice_changed(&mut self, slice: &str, old: Option<EndpointSlice>) -> Affected {
        let mut affected = BTreeSet::new();
        if let Some(old) = old {
            self.unindex(slice, &old);
            affected.extend(service_of(&old));
        }
        if let Some(new) = self.slices.objects.get(slice) {
            affected.extend(service_of(new));
        }
        self.index(slice);
        these(affected.into_iter().map(|name| ObjectKey {
            kind: Kind::Endpoints,
            name,
        }))
    }

    /// The Endpoints pointing at the pod, when its identity changed.
    fn pod_changed(&self, pod: &str, old: Option<String>) -> Affected {
        let new = self.pods.objects.get(pod).cloned().flatten();
        if old == new {
            return Affected::These(BTreeSet::new());
        }
        let services = self
            .slices_by_pod
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.objects.get(slice))
            .filter_map(service_of);
        these(services.map(|name| ObjectKey {
            kind: Kind::Endpoints,
            name,
        }))
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
                let Some(slice_keys) = self.slices_by_service.get(&key.name) else {
                    return (Outcome::Gone, Vec::new());
                };
                let (namespace, name) = key.name.split_once('/').unwrap_or_default();
                let slices = ServiceSlices {
                    namespace,
                    name,
                    slices: slice_keys
                        .iter()
                        .filter_map(|slice| self.slices.objects.get(slice))
                        .collect(),
                };
                let identity = |pod: &str| self.pods.objects.get(pod).and_then(|id| id.as_deref());
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
