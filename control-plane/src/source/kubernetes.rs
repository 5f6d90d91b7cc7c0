//! The Kubernetes source (`--kubernetes`): the cluster's Services, EndpointSlices,
//! Pods, Routes and AuthorizationPolicies, watched with kube-rs, translated into the
//! model's objects.
//!
//! Five watchers (list, then watch, relisting after a lost watch, with backoff) feed
//! one task that owns what the cluster said ([`cluster::Cluster`]) and follows each
//! event to the model objects it affects: a Service change re-translates that
//! Service; a slice change, the Endpoints of its service; a pod change, the
//! Endpoints its endpoints belong to, and only when the pod's identity changed
//! (status updates, most of a pod's events, change nothing). Each affected object is
//! upserted or deleted; the model's debounce turns a burst into one push. A relist
//! translates everything again and replaces the source's objects at once, since
//! deletions during the gap were never announced.
//!
//! Nothing reaches the model before every watch has listed once: then the whole
//! cluster is translated and the source reports it has synced, so proxies never see
//! a half-listed cluster. Translation is pure (`translate.rs`); what it cannot
//! accept is a rejection on `/sources`, and the previous version of that object
//! stays in force, as with a bad file.
//!
//! A watch that fails (the API server unreachable, RBAC missing, the CRDs not
//! installed) is retried with backoff and logged with what to check; the objects
//! already known stay in force meanwhile.

mod cluster;
pub mod translate;

pub use cluster::{Affected, Change, Cluster, Outcome};

use std::collections::BTreeMap;

use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::crd;
use crate::model::{Kind, ObjectKey};
use crate::source::{Rejection, Source};

/// The source's name in the model, in metrics and on `/sources`.
pub const SOURCE_NAME: &str = "kubernetes";

/// The cluster as watched, and what the model has been told of it.
pub struct KubernetesSource {
    cluster: Cluster,
    source: Source,
    /// Whether the whole cluster has been handed to the model once.
    synced: bool,
    /// What the translation of each model object rejects now.
    rejections: BTreeMap<ObjectKey, Vec<Rejection>>,
    /// What `/sources` was last told, so that the many events that change nothing
    /// there do not take the model's lock for it.
    published: Vec<Rejection>,
}

/// A watch that failed, and what it watches.
struct Failure {
    resource: &'static str,
    error: watcher::Error,
}

impl KubernetesSource {
    pub fn new(source: Source, trust_domain: &str) -> Self {
        KubernetesSource {
            cluster: Cluster::new(trust_domain),
            source,
            synced: false,
            rejections: BTreeMap::new(),
            published: Vec::new(),
        }
    }

    /// Watches the cluster `client` talks to until `shutdown`.
    pub async fn run(mut self, client: kube::Client, shutdown: CancellationToken) {
        let mut changes = watches(&client);
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = changes.next() => next,
            };
            match next {
                Some(Ok(change)) => self.apply(change),
                Some(Err(failure)) => report(&failure),
                // The watchers retry for ever; an end is a bug, and what is known
                // stays in force.
                None => {
                    tracing::error!("every Kubernetes watch ended; the objects stay as they are");
                    return;
                }
            }
        }
    }

    /// Follows one watch event into the model.
    pub fn apply(&mut self, change: Change) {
        match self.cluster.apply(change) {
            Affected::All if self.cluster.listed() => self.replace_all(),
            // Before every kind is listed there is nothing to say; after, an empty
            // set is nothing to do.
            Affected::All => {}
            Affected::These(keys) if self.synced => {
                for key in keys {
                    self.update(key);
                }
            }
            Affected::These(_) => {}
        }
        self.publish_rejections();
    }

    /// Translates the whole cluster and makes it everything the source defines.
    fn replace_all(&mut self) {
        let mut objects = Vec::new();
        let mut rejected = Vec::new();
        self.rejections.clear();
        for key in self.cluster.keys() {
            let (outcome, rejections) = self.cluster.translate(&key);
            match outcome {
                Outcome::Defined(object) => objects.push(object),
                Outcome::Rejected => rejected.push(key.clone()),
                Outcome::Gone => {}
            }
            if !rejections.is_empty() {
                self.rejections.insert(key, rejections);
            }
        }
        tracing::info!(
            objects = objects.len(),
            rejected = rejected.len(),
            "translated the whole cluster"
        );
        for (key, invalid) in self.source.replace_keeping(objects, rejected) {
            let rejection = refused(&key, invalid);
            self.rejections.entry(key).or_default().push(rejection);
        }
        if !self.synced {
            self.synced = true;
            self.source.synced();
        }
    }

    /// Translates one model object again and hands the result to the model.
    fn update(&mut self, key: ObjectKey) {
        let (outcome, mut rejections) = self.cluster.translate(&key);
        match outcome {
            Outcome::Defined(object) => {
                if let Err(invalid) = self.source.upsert(object) {
                    rejections.push(refused(&key, invalid));
                }
            }
            Outcome::Gone => {
                self.source.delete(&key);
            }
            Outcome::Rejected => {}
        }
        if rejections.is_empty() {
            self.rejections.remove(&key);
        } else {
            self.rejections.insert(key, rejections);
        }
    }

    fn publish_rejections(&mut self) {
        let all: Vec<Rejection> = self.rejections.values().flatten().cloned().collect();
        if all != self.published {
            self.published = all.clone();
            self.source.set_rejections(all);
        }
    }
}

/// The model's refusal of a translated object, as `/sources` shows it.
fn refused(key: &ObjectKey, invalid: crate::Invalid) -> Rejection {
    let origin = match key.kind {
        // Endpoints are made of every slice of the service.
        Kind::Endpoints => format!("EndpointSlices of service {}", key.name),
        kind => format!("{kind} {}", key.name),
    };
    Rejection {
        origin,
        line: None,
        column: None,
        field: invalid.field,
        message: invalid.reason,
    }
}

/// The five watches as one stream of changes.
fn watches(client: &kube::Client) -> SelectAll<BoxStream<'static, Result<Change, Failure>>> {
    // Paginated consistent lists (kube's default), which API servers since 1.31
    // serve from their watch cache.
    let all = watcher::Config::default();
    // Slices without the label belong to no service (a custom slice, say).
    let slices = all.clone().labels(translate::SERVICE_NAME_LABEL);
    let route = ApiResource::erase::<crd::Route>(&());
    let policy = ApiResource::erase::<crd::AuthorizationPolicy>(&());
    futures::stream::select_all([
        watch(
            Api::<Service>::all(client.clone()),
            all.clone(),
            "services",
            Change::Service,
        ),
        watch(
            Api::<EndpointSlice>::all(client.clone()),
            slices,
            "endpointslices.discovery.k8s.io",
            Change::Slice,
        ),
        watch(
            Api::<Pod>::all(client.clone()),
            all.clone(),
            "pods",
            Change::Pod,
        ),
        watch(
            Api::<DynamicObject>::all_with(client.clone(), &route),
            all.clone(),
            "routes.trellis.io",
            Change::Route,
        ),
        watch(
            Api::<DynamicObject>::all_with(client.clone(), &policy),
            all,
            "authorizationpolicies.trellis.io",
            Change::Policy,
        ),
    ])
}

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    resource: &'static str,
    change: fn(watcher::Event<K>) -> Change,
) -> BoxStream<'static, Result<Change, Failure>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map_ok(change)
        .map_err(move |error| Failure { resource, error })
        .boxed()
}

/// Logs a failed watch with what the operator should check.
fn report(failure: &Failure) {
    let code = match &failure.error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    let hint = match code {
        Some(404) if failure.resource.ends_with(crd::GROUP) => {
            "are the Trellis CRDs installed? (kubectl apply -f charts/trellis/crds/)"
        }
        Some(401 | 403) => {
            "does the controller's ServiceAccount have get, list and watch on it? (the chart's ClusterRole)"
        }
        _ => "is the API server reachable?",
    };
    tracing::warn!(
        resource = failure.resource,
        error = %failure.error,
        hint,
        "a Kubernetes watch failed; retrying with backoff, and what is known stays in force"
    );
}

#[cfg(test)]
mod tests;
