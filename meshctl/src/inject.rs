//! `meshctl inject`: Kubernetes YAML in, the same YAML with the Trellis proxy added to
//! every pod out, as `linkerd inject` does, using the injector library the admission
//! webhook uses, so that with the installed mesh's config ([`config`]) a pod injected
//! here is the pod the webhook would have made.
//!
//! It owns finding the pods in a stream of documents (Pods, the pod templates of
//! workloads, the items of `List`s), applying the library's JSON Patch to each, and
//! writing the YAML back with the author's field order ([`yaml`]). A document with no
//! pod to inject passes through as the very text it was ([`stream`]). The operator
//! asked for these objects explicitly, so the namespace label is not consulted; a pod
//! that opts out, or lives in a system namespace, is still left alone. One bad
//! annotation fails the whole run and prints nothing, since a half-injected stream
//! piped into `kubectl apply` is worse than none.
//!
//! # Layout
//! - `inject.rs`: the run over the inputs, and finding each object's pod.
//! - `config.rs`: the mesh config, from the installed mesh's ConfigMap.
//! - `stream.rs`: a stream cut into its documents' texts.
//! - `yaml.rs`: YAML that YAML 1.1 and 1.2 readers read back alike.

pub mod config;
mod stream;
mod yaml;

use std::borrow::Cow;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};
use trellis_injector::{MeshConfig, Outcome, Rejection, Request, inject};

/// What can stop `meshctl inject`; each names the document it is about.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    // The causes are in the messages, not chained as sources: main prints the chain,
    // which would say them twice.
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{source_name}: document {index} (from line {line}) is not valid YAML: {error}")]
    Yaml {
        source_name: String,
        index: usize,
        line: usize,
        error: serde_yaml_ng::Error,
    },

    #[error("{object}: {reason}")]
    NotJson { object: String, reason: String },

    #[error("{object}: not injected: {rejection}")]
    Rejected {
        object: String,
        rejection: Rejection,
    },

    #[error("{object}: the patch does not apply (a bug in the injector): {reason}")]
    Patch { object: String, reason: String },

    #[error("{object}: cannot be written back as YAML: {reason}")]
    Unwritable {
        object: String,
        reason: yaml::Unwritable,
    },

    #[error("mesh config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error(
        "meshctl inject needs the installed mesh's config, or the proxies it adds cannot \
         start (they would have no trust anchors): give --mesh-config FILE, the ConfigMap \
         that `kubectl get configmap {} -n trellis-system -o yaml` prints, or \
         --trust-anchors FILE, the mesh's root certificate(s), PEM",
        config::CONFIG_MAP
    )]
    NoMeshConfig,

    #[error(
        "no input: name the YAML files to inject, or - to read stdin (kubectl get deploy -o \
         yaml | meshctl inject --mesh-config mesh-config.yaml - | kubectl apply -f -)"
    )]
    NoInput,
}

/// One input: its name for messages (a path, or `stdin`) and its text.
pub struct Input {
    pub name: String,
    pub text: String,
}

/// Reads every input (`-` is stdin).
pub fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, InjectError> {
    paths
        .iter()
        .map(|path| {
            let read_error = |error| InjectError::Read {
                path: path.clone(),
                error,
            };
            if path == Path::new("-") {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(read_error)?;
                Ok(Input {
                    name: "stdin".into(),
                    text,
                })
            } else {
                let text = std::fs::read_to_string(path).map_err(read_error)?;
                Ok(Input {
                    name: path.display().to_string(),
                    text,
                })
            }
        })
        .collect()
}

/// The injected stream (documents separated by `---`), and one line per object that
/// holds a pod, saying what happened to it, for stderr. A document that holds no pod
/// to inject is written exactly as it was read; one that does is written anew (its
/// comments are lost, its field order kept).
pub fn inject_all(
    inputs: &[Input],
    config: &MeshConfig,
) -> Result<(String, Vec<String>), InjectError> {
    let mut output = String::new();
    let mut report = Vec::new();
    for input in inputs {
        for (index, document) in stream::documents(&input.text).into_iter().enumerate() {
            let yaml_error = |error| InjectError::Yaml {
                source_name: input.name.clone(),
                index: index + 1,
                line: document.line,
                error,
            };
            let values = serde_yaml_ng::Deserializer::from_str(document.text)
                .map(Yaml::deserialize)
                .collect::<Result<Vec<_>, _>>()
                .map_err(yaml_error)?;
            // The cut gives one document per piece; should it not, each is written anew.
            let verbatim = values.len() == 1;
            for mut value in values {
                // An empty document (a leading `---`, a trailing one) holds nothing.
                if value.is_null() {
                    continue;
                }
                let text = if inject_object(&mut value, config, &mut report)? || !verbatim {
                    let text =
                        yaml::to_string(&value).map_err(|reason| InjectError::Unwritable {
                            object: describe(&value),
                            reason,
                        })?;
                    Cow::Owned(text)
                } else {
                    Cow::Borrowed(document.text)
                };
                if !output.is_empty() && !stream::starts_explicitly(&text) {
                    output.push_str("---\n");
                }
                output.push_str(&text);
                if !output.ends_with('\n') {
                    output.push('\n');
                }
            }
        }
    }
    Ok((output, report))
}

/// Where an object of `kind` keeps its pod, as a path of mapping keys; `None` for kinds
/// that hold none.
fn pod_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn inject_object(
    object: &mut Yaml,
    config: &MeshConfig,
    report: &mut Vec<String>,
) -> Result<bool, InjectError> {
    let kind = object
        .get("kind")
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_owned();
    // `kubectl get -o yaml` writes `List`; typed lists (`PodList`) have items too.
    if kind.ends_with("List")
        && let Some(items) = object.get_mut("items").and_then(Yaml::as_sequence_mut)
    {
        let mut changed = false;
        for item in items {
            changed |= inject_object(item, config, report)?;
        }
        return Ok(changed);
    }
    let Some(path) = pod_path(&kind) else {
        return Ok(false);
    };
    let name = describe(object);
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Yaml::as_str)
        .map(str::to_owned);
    let mut pod = &mut *object;
    for key in path {
        match pod.get_mut(*key) {
            Some(next) => pod = next,
            None => {
                report.push(format!("{name}: no pod template at {}", path.join(".")));
                return Ok(false);
            }
        }
    }
    let json: Json = serde_json::to_value(&*pod).map_err(|error| InjectError::NotJson {
        object: name.clone(),
        reason: error.to_string(),
    })?;
    let request = Request::Explicit {
        namespace: namespace.as_deref(),
    };
    match inject(&json, &request, config) {
        Ok(Outcome::Injected { patch, sidecar }) => {
            let mut patched = json.clone();
            json_patch::patch(&mut patched, &patch).map_err(|error| InjectError::Patch {
                object: name.clone(),
                reason: error.to_string(),
            })?;
            *pod = to_yaml(&patched, Some(&*pod));
            report.push(format!("{name} injected ({} sidecar)", sidecar.as_str()));
            Ok(true)
        }
        Ok(Outcome::Skipped(reason)) => {
            report.push(format!("{name} skipped: {reason}"));
            Ok(false)
        }
        Err(rejection) => Err(InjectError::Rejected {
            object: name,
            rejection,
        }),
    }
}

/// `deployment/checkout` (`-n shop`), as kubectl names objects.
fn describe(object: &Yaml) -> String {
    let kind = object
        .get("kind")
        .and_then(Yaml::as_str)
        .unwrap_or("object");
    let metadata = object.get("metadata");
    let field = |name| metadata.and_then(|m| m.get(name)).and_then(Yaml::as_str);
    let name = field("name")
        .or(field("generateName"))
        .unwrap_or("(unnamed)");
    match field("namespace") {
        Some(ns) => format!("{}/{name} -n {ns}", kind.to_lowercase()),
        None => format!("{}/{name}", kind.to_lowercase()),
    }
}

/// `value` as YAML, laid out like `original` wherever it still matches: unchanged
/// subtrees are the original itself (its spelling, its key order), changed maps keep
/// the original's keys first in their order. New maps put `name` first, as people
/// write containers and volumes; the rest is alphabetical (serde_json's order).
fn to_yaml(value: &Json, original: Option<&Yaml>) -> Yaml {
    if let Some(original) = original
        && serde_json::to_value(original).ok().as_ref() == Some(value)
    {
        return original.clone();
    }
    match value {
        Json::Object(map) => {
            let old = original.and_then(Yaml::as_mapping);
            let mut out = Mapping::new();
            for (key, old_value) in old.into_iter().flatten() {
                if let Some(key) = key.as_str()
                    && let Some(new_value) = map.get(key)
                {
                    out.insert(Yaml::from(key), to_yaml(new_value, Some(old_value)));
                }
            }
            let name_first = map.get_key_value("name").into_iter().chain(map.iter());
            for (key, new_value) in name_first {
                if !out.contains_key(key.as_str()) {
                    out.insert(Yaml::from(key.as_str()), to_yaml(new_value, None));
                }
            }
            Yaml::Mapping(out)
        }
        Json::Array(items) => {
            // Elements were inserted, never changed: match each to an equal original.
            let old: Vec<(Yaml, Option<Json>)> = original
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
                .map(|item| (item.clone(), serde_json::to_value(item).ok()))
                .collect();
            let mut used = vec![false; old.len()];
            let items = items.iter().map(|item| {
                let found = old
                    .iter()
                    .enumerate()
                    .position(|(i, (_, json))| !used[i] && json.as_ref() == Some(item));
                match found {
                    Some(i) => {
                        used[i] = true;
                        old[i].0.clone()
                    }
                    None => to_yaml(item, None),
                }
            });
            Yaml::Sequence(items.collect())
        }
        scalar => serde_yaml_ng::to_value(scalar).unwrap_or(Yaml::Null),
    }
}

#[cfg(test)]
mod tests;
