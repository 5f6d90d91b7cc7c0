//! The model: every Service, Endpoints, Route and AuthorizationPolicy the mesh knows,
//! keyed by kind and `namespace/name`, and the snapshots proxies are sent.
//!
//! Sources of truth (the file source; later Kubernetes) push typed [`Object`]s
//! through a [`Source`] handle. The model validates each object ([`validate`]) and
//! owns it; a bad object never replaces a good one. Each source's objects are kept
//! apart, so a source can replace everything it said at once; when two sources name
//! the same object, the source registered first wins.
//!
//! On a change the model marks the kinds that changed and wakes its publisher
//! ([`Model::run`]), which waits for the burst to settle, rebuilds only those kinds,
//! and publishes a new [`Snapshot`] on a `watch` channel if any version changed.
//! Nothing is published until every registered source has delivered its initial
//! state, so a proxy is never sent the empty world a controller starts with.
//!
//! # Debounce
//! A snapshot is published once no change has arrived for the debounce period
//! (`--debounce`, 50 ms by default), and at most [`DEBOUNCE_CAP`] periods after the
//! first change of a burst, so a steady trickle of edits cannot hold pushes back.

mod object;
mod snapshot;
mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use object::{Kind, Object, ObjectKey, POD_ENDPOINTS_PREFIX, pod_endpoints_name};
pub use snapshot::{NamedResource, Selection, Snapshot, TypeSnapshot, version};
pub use validate::validate;

use crate::metrics::{Metrics, TypeLabels};
use crate::source::{Rejection, Source};

/// How many debounce periods a burst may delay a snapshot at most.
pub const DEBOUNCE_CAP: u32 = 4;

/// The model and its publisher's inputs and output.
pub struct Model {
    state: Mutex<State>,
    /// Woken on every change; holds a permit if the publisher is busy, so no change
    /// is missed.
    changed: Notify,
    /// `None` until every source has synced.
    published: watch::Sender<Option<Arc<Snapshot>>>,
    /// The quiet period that ends a burst.
    debounce: Duration,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// In registration order, which decides who wins a name two sources define.
    sources: Vec<SourceState>,
    /// Kinds changed since the last snapshot, by [`Kind::index`].
    dirty: [bool; 4],
    /// Snapshots published so far: the last one's id.
    published: u64,
}

/// What one source has told the model.
pub(crate) struct SourceState {
    name: String,
    /// Per kind (by [`Kind::index`]), by `namespace/name`.
    objects: [BTreeMap<String, Object>; 4],
    synced: bool,
    rejections: Vec<(Rejection, SystemTime)>,
    changed_at: Option<SystemTime>,
}

/// A source as `/sources` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub name: String,
    /// Whether the source has delivered its initial state.
    pub synced: bool,
    /// How many objects of each type (by metrics label) the source defines.
    pub objects: BTreeMap<&'static str, usize>,
    /// When the source last changed an object (RFC 3339).
    pub changed_at: Option<String>,
    /// What the source rejects now; the previous good version of what these
    /// documents defined, if any, is still in force.
    pub rejections: Vec<RejectionStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectionStatus {
    #[serde(flatten)]
    pub rejection: Rejection,
    /// When this rejection was first seen (RFC 3339).
    pub since: String,
}

impl Model {
    pub fn new(debounce: Duration, metrics: Arc<Metrics>) -> Arc<Model> {
        Arc::new(Model {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            published: watch::channel(None).0,
            debounce,
            metrics,
        })
    }

    /// Registers a source of truth and returns its handle. Register every source
    /// before [`Model::run`]: nothing is published until all of them have synced.
    pub fn source(self: &Arc<Self>, name: &str) -> Source {
        let mut state = self.lock();
        state.sources.push(SourceState {
            name: name.to_string(),
            objects: Default::default(),
            synced: false,
            rejections: Vec::new(),
            changed_at: None,
        });
        Source::new(self.clone(), state.sources.len() - 1, name)
    }

    /// Every snapshot from now on; `None` until every source has synced.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.published.subscribe()
    }

    /// The snapshot in force, if any has been published.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.published.borrow().clone()
    }

    /// Ready once the first snapshot is out: every source has synced.
    pub fn is_ready(&self) -> bool {
        self.published.borrow().is_some()
    }

    pub fn sources(&self) -> Vec<SourceStatus> {
        let state = self.lock();
        state
            .sources
            .iter()
            .map(|source| SourceStatus {
                name: source.name.clone(),
                synced: source.synced,
                objects: Kind::ALL
                    .into_iter()
                    .map(|kind| (kind.label(), source.objects[kind.index()].len()))
                    .collect(),
                changed_at: source.changed_at.map(rfc3339),
                rejections: source
                    .rejections
                    .iter()
                    .map(|(rejection, since)| RejectionStatus {
                        rejection: rejection.clone(),
                        since: rfc3339(*since),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Publishes snapshots until `shutdown`: at once for the first (when every source
    /// has synced), then once per settled burst of changes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.rebuild();
        let cap = self.debounce * DEBOUNCE_CAP;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
            }
            if self.is_ready() {
                let deadline = Instant::now() + cap;
                let mut quiet_until = Instant::now() + self.debounce;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(quiet_until.min(deadline)) => break,
                        () = self.changed.notified() => {
                            quiet_until = Instant::now() + self.debounce;
                        }
                    }
                }
            }
            self.rebuild();
        }
    }

    /// Rebuilds the kinds that changed and publishes the result if any version moved.
    /// [`Model::run`] calls it after each settled burst; tests call it to publish at
    /// once.
    pub(crate) fn rebuild(&self) {
        let mut state = self.lock();
        if !state.sources.iter().all(|source| source.synced) {
            return;
        }
        let dirty = std::mem::take(&mut state.dirty);
        let previous = self.current();
        let mut changed = previous.is_none();
        let types = Kind::ALL.map(|kind| {
            let old = previous.as_ref().map(|snapshot| snapshot.get(kind).clone());
            match old {
                Some(old) if !dirty[kind.index()] => old,
                old => {
                    let built = Arc::new(state.build(kind));
                    match old {
                        Some(old) if old.version == built.version => old,
                        _ => {
                            changed = true;
                            built
                        }
                    }
                }
            }
        });
        if !changed {
            return;
        }
        state.published += 1;
        let id = state.published;
        drop(state);
        for kind in Kind::ALL {
            let count = types[kind.index()].resources.len();
            self.metrics
                .resources
                .get_or_create(&TypeLabels::of(kind))
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let snapshot = Snapshot::new(id, types);
        tracing::info!(
            snapshot = id,
            services = %snapshot.get(Kind::Service).version,
            endpoints = %snapshot.get(Kind::Endpoints).version,
            routes = %snapshot.get(Kind::Route).version,
            authorization_policies = %snapshot.get(Kind::AuthorizationPolicy).version,
            "published a snapshot"
        );
        self.metrics.snapshots.inc();
        self.published.send_replace(Some(Arc::new(snapshot)));
    }

    /// Runs `update` on source `id`'s state; `update` returns the kinds it changed,
    /// which wakes the publisher.
    pub(crate) fn update<T>(
        &self,
        id: usize,
        update: impl FnOnce(&mut SourceState) -> ([bool; 4], T),
    ) -> T {
        let mut state = self.lock();
        let (changed, result) = update(&mut state.sources[id]);
        if changed.contains(&true) {
            state.sources[id].changed_at = Some(SystemTime::now());
            for (dirty, changed) in state.dirty.iter_mut().zip(changed) {
                *dirty |= changed;
            }
            drop(state);
            self.changed.notify_one();
        }
        result
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements; a panic elsewhere must not
        // take discovery down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Every source's objects of `kind`, the first source winning a shared name.
    fn build(&self, kind: Kind) -> TypeSnapshot {
        let mut merged: BTreeMap<&String, &Object> = BTreeMap::new();
        for source in &self.sources {
            for (name, object) in &source.objects[kind.index()] {
                if let Some(winner) = merged.get(name)
                    && *winner != object
                {
                    tracing::warn!(
                        %kind, name, source = %source.name,
                        "another source defines this object too; the first source's stays in force"
                    );
                    continue;
                }
                merged.entry(name).or_insert(object);
            }
        }
        TypeSnapshot::build(merged.into_iter())
    }
}

impl SourceState {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn objects_mut(&mut self) -> &mut [BTreeMap<String, Object>; 4] {
        &mut self.objects
    }

    pub(crate) fn set_synced(&mut self) -> bool {
        !std::mem::replace(&mut self.synced, true)
    }

    pub(crate) fn rejections_mut(&mut self) -> &mut Vec<(Rejection, SystemTime)> {
        &mut self.rejections
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests;
