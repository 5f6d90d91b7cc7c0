//! The seam between the sources of truth and the model.
//!
//! A source reads the world in its own terms (YAML files, Kubernetes objects),
//! translates it into typed [`Object`]s, and pushes them through its [`Source`]
//! handle, which is all a source may do to the model: replace everything it says at
//! once (a re-read directory, a relisted watch), upsert or delete one object
//! (a watch event), say it has delivered its initial state, and report what it
//! rejects.
//!
//! - `files.rs`: the directory of YAML documents (`--config-dir`).
//! - `kubernetes.rs`: the cluster's Services, EndpointSlices, Pods and Trellis custom
//!   resources (`--kubernetes`).

pub mod files;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::Invalid;
use crate::metrics::SourceLabels;
use crate::model::{Kind, Model, Object, ObjectKey, validate};

/// A source's handle on the model.
pub struct Source {
    model: Arc<Model>,
    /// The source's index in the model, which is also its precedence.
    id: usize,
    name: String,
}

/// Something a source could not accept, as the operator must see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Where the rejected input is: a file's path, or an API object.
    pub origin: String,
    /// 1-based line and column in `origin`, when it is a file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The field at fault (`spec.ports[1].port`); empty for the document as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Source {
    pub(crate) fn new(model: Arc<Model>, id: usize, name: &str) -> Self {
        Source {
            model,
            id,
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `objects` everything this source defines (of two with the same key, the
    /// last). An invalid object is left out and returned with its reason; if the
    /// source defined that object before, the previous version stays.
    pub fn replace(&self, objects: impl IntoIterator<Item = Object>) -> Vec<(ObjectKey, Invalid)> {
        self.replace_keeping(objects, [])
    }

    /// As [`Source::replace`], and the objects named in `keep` stay as they are: those
    /// whose input the source itself rejected (an API object it cannot translate),
    /// so that, as with an invalid object, a bad version never removes a good one.
    pub fn replace_keeping(
        &self,
        objects: impl IntoIterator<Item = Object>,
        keep: impl IntoIterator<Item = ObjectKey>,
    ) -> Vec<(ObjectKey, Invalid)> {
        let mut next: [BTreeMap<String, Object>; 4] = Default::default();
        let mut invalid = Vec::new();
        for object in objects {
            let key = object.key();
            match validate(&object) {
                Ok(()) => {
                    next[key.kind.index()].insert(key.name, object);
                }
                Err(error) => invalid.push((key, error)),
            }
        }
        let keep: Vec<ObjectKey> = keep
            .into_iter()
            .chain(invalid.iter().map(|(key, _)| key.clone()))
            .collect();
        self.model.update(self.id, |state| {
            let current = state.objects_mut();
            for key in &keep {
                let kind = key.kind.index();
                if let Some(previous) = current[kind].get(&key.name) {
                    next[kind]
                        .entry(key.name.clone())
                        .or_insert_with(|| previous.clone());
                }
            }
            let changed = Kind::ALL.map(|kind| current[kind.index()] != next[kind.index()]);
            *current = next;
            (changed, ())
        });
        invalid
    }

    /// Adds or replaces one object; an invalid one leaves the current version alone.
    pub fn upsert(&self, object: Object) -> Result<(), Invalid> {
        validate(&object)?;
        let key = object.key();
        self.model.update(self.id, |state| {
            let objects = &mut state.objects_mut()[key.kind.index()];
            let changed = objects.get(&key.name) != Some(&object);
            if changed {
                objects.insert(key.name.clone(), object);
            }
            (only(key.kind, changed), ())
        });
        Ok(())
    }

    /// Removes one object; returns whether this source defined it.
    pub fn delete(&self, key: &ObjectKey) -> bool {
        self.model.update(self.id, |state| {
            let removed = state.objects_mut()[key.kind.index()]
                .remove(&key.name)
                .is_some();
            (only(key.kind, removed), removed)
        })
    }

    /// Tells the model this source has delivered its initial state.
    pub fn synced(&self) {
        self.model.update(self.id, |state| {
            let first = state.set_synced();
            ([first; 4], ())
        });
    }

    /// Sets what this source rejects now (shown on `/sources`); each rejection not
    /// already reported is logged and counted.
    pub fn set_rejections(&self, rejections: Vec<Rejection>) {
        let labels = SourceLabels {
            source: self.name.clone(),
        };
        let metrics = self.model.metrics();
        let now = SystemTime::now();
        self.model.update(self.id, |state| {
            let source = state.name().to_string();
            let current = state.rejections_mut();
            let mut next = Vec::with_capacity(rejections.len());
            for rejection in rejections {
                let since = match current.iter().find(|(known, _)| *known == rejection) {
                    Some((_, since)) => *since,
                    None => {
                        tracing::warn!(
                            %source,
                            rejected = %rejection,
                            "rejected an input; everything else stays in force"
                        );
                        metrics.source_rejections.get_or_create(&labels).inc();
                        now
                    }
                };
                next.push((rejection, since));
            }
            for (gone, _) in current.iter() {
                if !next.iter().any(|(kept, _)| kept == gone) {
                    tracing::info!(%source, rejected = %gone, "no longer rejected");
                }
            }
            metrics
                .source_rejected
                .get_or_create(&labels)
                .set(i64::try_from(next.len()).unwrap_or(i64::MAX));
            *current = next;
            ([false; 4], ())
        });
    }
}

fn only(kind: Kind, changed: bool) -> [bool; 4] {
    let mut kinds = [false; 4];
    kinds[kind.index()] = changed;
    kinds
}
