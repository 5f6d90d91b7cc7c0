//! Reading one file: each YAML document into a model object, or into a problem that
//! names its line and field.
//!
//! A document is read three times, each pass doing one job: once as a generic YAML
//! value (is it well-formed, which `apiVersion` and `kind`), once into the typed spec
//! of its kind (serde_yaml_ng reports type errors and unknown fields with their path
//! and line), and, only for a semantic error (an address that does not parse, a
//! missing backend), once more to find the line of the field the error names: a
//! deserializer that walks to that path and fails there, so that serde_yaml_ng
//! reports the position it failed at.
//!
//! A document that is not well-formed YAML ends the file: a YAML parser cannot find
//! its way back into the stream after a syntax error, so the documents after it are
//! not read.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::{Deserializer, Value};

use super::spec::{
    API_VERSION, AuthorizationPolicySpec, Document, EndpointsSpec, RouteSpec, ServiceSpec,
};
use crate::model::{Kind, Object, ObjectKey, validate};

/// An object a file defines, and which document of the file defined it.
#[derive(Debug, Clone, PartialEq)]
pub struct Defined {
    pub object: Object,
    /// The document's index in the file's current text; `None` for an object kept
    /// from an earlier version of the file.
    pub document: Option<usize>,
}

/// Why a document was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// The field's path (`spec.ports[0].port`); empty for the document as a whole.
    pub field: String,
    pub message: String,
}

/// Everything one file's text says.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub objects: Vec<Defined>,
    pub problems: Vec<Problem>,
}

/// Reads every document of `text`.
pub fn parse_file(text: &str) -> ParsedFile {
    let mut parsed = ParsedFile::default();
    let mut defined_by: HashMap<ObjectKey, usize> = HashMap::new();
    let documents = Deserializer::from_str(text).zip(Deserializer::from_str(text));
    for (index, (generic, typed)) in documents.enumerate() {
        let object = match parse_document(text, index, generic, typed) {
            Ok(Some(object)) => object,
            Ok(None) => continue,
            Err((problem, Ends::File)) => {
                parsed.problems.push(problem);
                break;
            }
            Err((problem, Ends::Document)) => {
                parsed.problems.push(problem);
                continue;
            }
        };
        let key = object.key();
        if let Some(&first) = defined_by.get(&key) {
            let first_line = locate(text, first, "metadata.name").0;
            parsed.problems.push(problem_at(
                text,
                index,
                "metadata.name",
                format!("{key} is already defined by the document at line {first_line}"),
            ));
            continue;
        }
        defined_by.insert(key, index);
        parsed.objects.push(Defined {
            object,
            document: Some(index),
        });
    }
    parsed
}

/// How much of the file a problem takes down with it.
enum Ends {
    Document,
    File,
}

fn parse_document(
    text: &str,
    index: usize,
    generic: Deserializer<'_>,
    typed: Deserializer<'_>,
) -> Result<Option<Object>, (Problem, Ends)> {
    let value = Option::<Value>::deserialize(generic)
        .map_err(|error| (from_yaml(text, index, &error), Ends::File))?;
    let fail =
        |field: &str, message: String| (problem_at(text, index, field, message), Ends::Document);
    let Some(Value::Mapping(document)) = value else {
        return match value {
            // An empty document: a comment, or `---` twice.
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(fail(
                "",
                "a document is a mapping with apiVersion, kind, metadata and spec".into(),
            )),
        };
    };
    match document.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(fail(
                "apiVersion",
                format!("{other:?} is not supported; use {API_VERSION}"),
            ));
        }
        None => return Err(fail("apiVersion", format!("missing; use {API_VERSION}"))),
    }
    let kind = match document.get("kind").and_then(Value::as_str) {
        Some(name) => Kind::from_name(name).ok_or_else(|| {
            fail(
                "kind",
                format!(
                    "{name:?} is not a kind: use Service, Endpoints, Route or AuthorizationPolicy"
                ),
            )
        })?,
        None => return Err(fail("kind", "missing".into())),
    };
    let typed_error =
        |error: serde_yaml_ng::Error| (from_yaml(text, index, &error), Ends::Document);
    let object = match kind {
        Kind::Service => Document::<ServiceSpec>::deserialize(typed)
            .map_err(typed_error)?
            .into_object(),
        Kind::Endpoints => Document::<EndpointsSpec>::deserialize(typed)
            .map_err(typed_error)?
            .into_object(),
        Kind::Route => Document::<RouteSpec>::deserialize(typed)
            .map_err(typed_error)?
            .into_object(),
        Kind::AuthorizationPolicy => Document::<AuthorizationPolicySpec>::deserialize(typed)
            .map_err(typed_error)?
            .into_object(),
    };
    let object = object.map_err(|invalid| fail(&invalid.field, invalid.reason))?;
    validate(&object).map_err(|invalid| fail(&invalid.field, invalid.reason))?;
    Ok(Some(object))
}

/// A problem with `field` of document `index`, at the field's line (or its nearest
/// enclosing field's, when it is missing from the text).
fn problem_at(text: &str, index: usize, field: &str, message: String) -> Problem {
    let (line, column) = locate(text, index, field);
    Problem {
        line,
        column,
        field: field.to_string(),
        message,
    }
}

/// A serde_yaml_ng error as a problem: it carries its own position, and its message
/// starts with the field's path when there is one (`spec.ports[0]: …`).
fn from_yaml(text: &str, index: usize, error: &serde_yaml_ng::Error) -> Problem {
    let full = error.to_string();
    let mut message = full.as_str();
    let (mut line, mut column) = match error.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            message = message.strip_suffix(&suffix).unwrap_or(message);
            (location.line(), location.column())
        }
        None => (0, 0),
    };
    let (field, message) = match message.split_once(": ") {
        Some((path, rest)) if is_path(path) => (path, rest),
        _ => ("", message),
    };
    // A document-level error ("missing field `spec`") is reported where the document
    // starts, which may be a `---` or a comment before it: point at its first key.
    // (A document that does not parse cannot be located, and keeps its position.)
    if field.is_empty() {
        let (first_line, first_column) = locate(text, index, "");
        if line < first_line {
            (line, column) = (first_line, first_column);
        }
    }
    Problem {
        line,
        column,
        field: field.to_string(),
        message: message.to_string(),
    }
}

fn is_path(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']' | '_'))
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|part| !part.is_empty()) {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        steps.push(Step::Key(key));
        for index in indexes.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                steps.push(Step::Index(i));
            }
        }
    }
    steps
}

/// The 1-based line and column of `path` in document `index` of `text`; the nearest
/// enclosing field that exists when `path` does not; (1, 1) if the document cannot be
/// read at all.
pub fn locate(text: &str, index: usize, path: &str) -> (usize, usize) {
    let steps = steps(path);
    for len in (0..=steps.len()).rev() {
        let Some(document) = Deserializer::from_str(text).nth(index) else {
            break;
        };
        if let Err(error) = (Locate {
            steps: &steps[..len],
        })
        .deserialize(document)
            && error.to_string().contains(FOUND)
            && let Some(location) = error.location()
        {
            return (location.line(), location.column());
        }
    }
    (1, 1)
}

/// The error [`Locate`] fails with when it reaches its target, so that the
/// deserializer attaches the target's position to it.
const FOUND: &str = "\u{0}trellis-located\u{0}";

/// Walks down `steps` and fails at the value it reaches.
struct Locate<'p> {
    steps: &'p [Step<'p>],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.steps.is_empty() {
            deserializer.deserialize_any(Found)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Value>()? {
            match self.steps.first() {
                Some(Step::Key(wanted)) if key.as_str() == Some(*wanted) => {
                    map.next_value_seed(Locate {
                        steps: &self.steps[1..],
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = match self.steps.first() {
                Some(Step::Index(wanted)) if *wanted == i => seq
                    .next_element_seed(Locate {
                        steps: &self.steps[1..],
                    })?
                    .is_some(),
                _ => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Fails on whatever value it is given.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}
