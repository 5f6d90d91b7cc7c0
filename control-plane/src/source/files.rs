//! The file source: a directory of YAML files (`--config-dir`), watched with inotify.
//!
//! Every `*.yaml` or `*.yml` file directly in the directory (not hidden, symlinks
//! followed, so a mounted ConfigMap works) holds one or more documents separated by
//! `---`, each an object of `apiVersion: trellis.io/v1alpha1` (see `spec.rs` for the
//! format). A change in the directory, coalesced over a short settle time so that an
//! editor's burst of writes and renames is one re-read, re-reads every file whose
//! text changed; a deleted file's objects go away.
//!
//! # What stays in force when a file is bad
//! A bad document is rejected with its file, line and field; the rest stays in force:
//! - every valid document of every file is applied, also in a file with bad ones;
//! - while a file has a rejected document (or cannot be read), each object its
//!   previous version defined that no valid document now defines is kept as it was:
//!   a broken edit never removes anything, because the broken document may be the one
//!   that defined it. Once every document of the file is valid, the file defines
//!   exactly its documents again;
//! - a document that is not well-formed YAML ends its file (see `document.rs`): the
//!   documents after it keep their previous versions the same way;
//! - an object defined by two files is taken from the file whose name sorts first,
//!   and the other document is rejected.
//!
//! Rejections are logged, counted (`source_rejections_total{source="files"}`) and
//! listed on the admin port's `/sources` until fixed.

mod document;
mod spec;

pub use spec::API_VERSION;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::document::{Defined, Problem, parse_file};
use crate::Error;
use crate::model::{DEBOUNCE_CAP, Object, ObjectKey};
use crate::source::{Rejection, Source};

/// The source's name in the model, in metrics and on `/sources`.
pub const SOURCE_NAME: &str = "files";

/// The directory, what each file contributes, and the watch on it.
pub struct FileSource {
    dir: PathBuf,
    source: Source,
    /// How long the directory must be quiet before it is re-read.
    settle: Duration,
    files: BTreeMap<PathBuf, FileState>,
    /// Set when the directory itself cannot be listed; every file keeps its objects.
    unlistable: Option<Rejection>,
    /// Woken by the watcher's thread on every change in the directory.
    wake: Arc<Notify>,
    /// Kept alive for as long as the source runs: dropping it ends the watch.
    _watcher: RecommendedWatcher,
}

#[derive(Default)]
struct FileState {
    /// The text last read, so that a re-read skips unchanged files; `None` when the
    /// file could not be read.
    text: Option<String>,
    /// What the file contributes now (see the module doc for the rule).
    objects: Vec<Defined>,
    /// Why documents of the current text are rejected.
    problems: Vec<Rejection>,
}

impl FileSource {
    /// Watches `dir`, reads it once and tells the model the source has synced. A
    /// missing directory is an error naming `--config-dir`; bad files are not (they
    /// are rejected and reported, as later edits are).
    pub fn open(dir: &Path, source: Source, settle: Duration) -> Result<FileSource, Error> {
        if !dir.is_dir() {
            return Err(Error::InvalidFlag {
                flag: "config-dir",
                value: dir.display().to_string(),
                reason: if dir.exists() {
                    "not a directory".into()
                } else {
                    "no such directory; create it, or leave --config-dir out to start with no objects"
                        .into()
                },
            });
        }
        let wake = Arc::new(Notify::new());
        let watcher = watch(dir, wake.clone())?;
        let mut files = FileSource {
            dir: dir.to_path_buf(),
            source,
            settle,
            files: BTreeMap::new(),
            unlistable: None,
            wake,
            _watcher: watcher,
        };
        // The watch started first, so a change made during this read is not lost.
        files.rescan();
        files.source.synced();
        Ok(files)
    }

    /// Re-reads the directory on every change until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
            }
            // Editors write, rename and chmod in bursts: wait for the directory to
            // be quiet, but not forever.
            let deadline = Instant::now() + self.settle * DEBOUNCE_CAP;
            let mut quiet_until = Instant::now() + self.settle;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(quiet_until.min(deadline)) => break,
                    () = self.wake.notified() => quiet_until = Instant::now() + self.settle,
                }
            }
            // Reading files blocks; the directory is small, but it is not the
            // runtime's to wait on.
            self = match tokio::task::spawn_blocking(move || {
                self.rescan();
                self
            })
            .await
            {
                Ok(files) => files,
                Err(error) => {
                    tracing::error!(%error, "the file source failed; its objects stay as they are");
                    return;
                }
            };
        }
    }

    /// Reads every file whose text changed, forgets deleted files, and hands the
    /// result to the model.
    pub fn rescan(&mut self) {
        let listed = match self.list() {
            Ok(listed) => {
                self.unlistable = None;
                listed
            }
            Err(error) => {
                self.unlistable = Some(Rejection {
                    origin: self.dir.display().to_string(),
                    line: None,
                    column: None,
                    field: String::new(),
                    message: format!(
                        "cannot list the directory ({error}); every object stays as it was"
                    ),
                });
                self.publish();
                return;
            }
        };
        // `listed` is sorted: a linear `contains` made this quadratic, 0.4 s per
        // re-read at 4,000 files.
        self.files
            .retain(|path, _| listed.binary_search(path).is_ok());
        for path in listed {
            let state = self.files.entry(path.clone()).or_default();
            match std::fs::read_to_string(&path) {
                Ok(text) if state.text.as_ref() == Some(&text) => {}
                Ok(text) => {
                    let parsed = parse_file(&text);
                    let problems = parsed
                        .problems
                        .into_iter()
                        .map(|problem| rejection(&path, problem))
                        .collect();
                    state.update(parsed.objects, problems);
                    state.text = Some(text);
                }
                Err(error) => {
                    let problem = Rejection {
                        origin: path.display().to_string(),
                        line: None,
                        column: None,
                        field: String::new(),
                        message: format!("cannot read the file: {error}"),
                    };
                    state.update(Vec::new(), vec![problem]);
                    state.text = None;
                }
            }
        }
        self.publish();
    }

    /// The YAML files in the directory, sorted.
    fn list(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            // Hidden files are editors' swap files and ConfigMap internals.
            if yaml && !name.starts_with('.') && path.is_file() {
                listed.push(path);
            }
        }
        listed.sort();
        Ok(listed)
    }

    /// Every file's objects into the model, every problem onto `/sources`.
    fn publish(&self) {
        let mut objects: BTreeMap<ObjectKey, (&Path, Object)> = BTreeMap::new();
        let mut rejections: Vec<Rejection> = self.unlistable.iter().cloned().collect();
        for (path, state) in &self.files {
            rejections.extend(state.problems.iter().cloned());
            for defined in &state.objects {
                let key = defined.object.key();
                if let Some((first, _)) = objects.get(&key) {
                    let (line, column) = match (defined.document, &state.text) {
                        (Some(index), Some(text)) => {
                            let (line, column) = document::locate(text, index, "metadata.name");
                            (Some(line), Some(column))
                        }
                        _ => (None, None),
                    };
                    rejections.push(Rejection {
                        origin: path.display().to_string(),
                        line,
                        column,
                        field: "metadata.name".into(),
                        message: format!("{key} is already defined in {}", first.display()),
                    });
                    continue;
                }
                objects.insert(key, (path, defined.object.clone()));
            }
        }
        // Documents were validated as they were read, with their lines; the model
        // checks again for every source, and anything it refuses here is a bug.
        let refused = self.source.replace(objects.into_values().map(|(_, o)| o));
        for (key, invalid) in refused {
            rejections.push(Rejection {
                origin: self.dir.display().to_string(),
                line: None,
                column: None,
                field: invalid.field,
                message: format!("{key}: {}", invalid.reason),
            });
        }
        self.source.set_rejections(rejections);
    }
}

impl FileState {
    /// Applies a new version of the file: its valid documents, plus, while it has
    /// problems, whatever the previous version defined that they do not redefine.
    fn update(&mut self, valid: Vec<Defined>, problems: Vec<Rejection>) {
        let mut objects = valid;
        if !problems.is_empty() {
            let redefined: HashSet<ObjectKey> = objects.iter().map(|d| d.object.key()).collect();
            let kept = std::mem::take(&mut self.objects)
                .into_iter()
                .filter(|old| !redefined.contains(&old.object.key()))
                .map(|old| Defined {
                    object: old.object,
                    document: None,
                });
            objects.extend(kept);
        }
        self.objects = objects;
        self.problems = problems;
    }
}

fn rejection(path: &Path, problem: Problem) -> Rejection {
    Rejection {
        origin: path.display().to_string(),
        line: Some(problem.line),
        column: Some(problem.column),
        field: problem.field,
        message: problem.message,
    }
}

/// An inotify watch on `dir` that wakes `wake` on every change but reads (ours
/// included, or every re-read would trigger the next).
fn watch(dir: &Path, wake: Arc<Notify>) -> Result<RecommendedWatcher, Error> {
    let to_error = |error| Error::Watch {
        dir: dir.to_path_buf(),
        error,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            // An error (a full event queue, say) may hide a change: re-read.
            _ => wake.notify_one(),
        }
    })
    .map_err(to_error)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(to_error)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests;
