//! Where the webhook learns a namespace's labels, which the AdmissionReview does not
//! carry but [`crate::inject`] needs (`trellis.io/inject=enabled`).
//!
//! [`NamespaceLabels`] is the seam: the binary watches the namespaces' metadata with
//! kube-rs ([`ApiNamespaces`], a reflector, so an admission never waits for the API
//! server), or trusts the webhook configuration's `namespaceSelector`
//! ([`SelectorNamespaces`]); tests give a fixed map ([`FixedNamespaces`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::NAMESPACE_LABEL;

/// A namespace's labels.
pub type Labels = BTreeMap<String, String>;

/// The source of namespace labels.
pub trait NamespaceLabels: Send + Sync + 'static {
    /// The labels of `namespace`, or why they cannot be known (the message is shown to
    /// whoever created the pod, so it says what to check).
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, String>>;

    /// Whether the source can answer yet (`/ready` waits for it).
    fn synced(&self) -> bool;
}

/// Labels given up front; a namespace not in the map has none.
#[derive(Debug, Clone, Default)]
pub struct FixedNamespaces(pub BTreeMap<String, Labels>);

impl NamespaceLabels for FixedNamespaces {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, String>> {
        let labels = self.0.get(namespace).cloned().unwrap_or_default();
        Box::pin(async move { Ok(labels) })
    }

    fn synced(&self) -> bool {
        true
    }
}

/// Every namespace counts as labelled `trellis.io/inject=enabled`: the
/// `MutatingWebhookConfiguration`'s `namespaceSelector` requires that label, so the
/// API server calls the webhook for no other namespace. Needs no access to the API,
/// but a pod's `trellis.io/inject: enabled` cannot mesh it in an unlabelled namespace.
#[derive(Debug, Clone, Default)]
pub struct SelectorNamespaces;

impl NamespaceLabels for SelectorNamespaces {
    fn labels<'a>(&'a self, _namespace: &'a str) -> BoxFuture<'a, Result<Labels, String>> {
        let labels = Labels::from([(NAMESPACE_LABEL.to_owned(), "enabled".to_owned())]);
        Box::pin(async move { Ok(labels) })
    }

    fn synced(&self) -> bool {
        true
    }
}

/// How long an admission may wait for a namespace the watch has not delivered yet
/// (one created a moment before its first pod): well inside the webhook's timeout.
const MISS_TIMEOUT: Duration = Duration::from_secs(2);

/// The namespaces' metadata, listed and watched from the API server (needs `get`,
/// `list` and `watch` on `namespaces`).
#[derive(Clone)]
pub struct ApiNamespaces {
    /// The watched namespaces; read without waiting.
    store: Store<PartialObjectMeta<Namespace>>,
    /// For the rare namespace not in the store yet.
    api: Api<PartialObjectMeta<Namespace>>,
    /// Set once the first list has filled the store.
    synced: Arc<AtomicBool>,
}

impl ApiNamespaces {
    /// Starts watching with `client` until `shutdown`. A failing watch (RBAC missing,
    /// the API server unreachable) is retried with backoff and logged; the store keeps
    /// what it knew.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> ApiNamespaces {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let events = reflector::reflector(
            writer,
            watcher(api.clone(), watcher::Config::default()).default_backoff(),
        );
        let flag = synced.clone();
        let ready = store.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(watcher::Event::InitDone)) => {
                        if !flag.swap(true, Ordering::Relaxed) {
                            tracing::info!(namespaces = ready.len(), "namespace labels synced");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => tracing::warn!(
                        %error,
                        "watching namespaces failed; retrying (does the injector's ServiceAccount \
                         have get, list and watch on namespaces?)"
                    ),
                    None => return,
                }
            }
        });
        ApiNamespaces { store, api, synced }
    }
}

impl NamespaceLabels for ApiNamespaces {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, String>> {
        Box::pin(async move {
            if let Some(cached) = self.store.get(&ObjectRef::new(namespace)) {
                return Ok(cached.metadata.labels.clone().unwrap_or_default());
            }
            let found = tokio::time::timeout(MISS_TIMEOUT, self.api.get_opt(namespace)).await;
            match found {
                Ok(Ok(Some(meta))) => Ok(meta.metadata.labels.unwrap_or_default()),
                Ok(Ok(None)) => Err(format!("namespace {namespace} does not exist")),
                Ok(Err(error)) => Err(format!(
                    "cannot read namespace {namespace}'s labels: {error} (does the injector's \
                     ServiceAccount have get on namespaces?)"
                )),
                Err(_) => Err(format!(
                    "namespace {namespace} is not in the injector's cache and the API server \
                     did not answer within {MISS_TIMEOUT:?}"
                )),
            }
        })
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}
