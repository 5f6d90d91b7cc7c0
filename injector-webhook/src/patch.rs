//! JSON Patch (RFC 6902) operations against the pod exactly as it arrived.
//!
//! The patch only ever adds: a list that exists gets new elements at a position, a list
//! or map that does not gets created whole. Nothing of the pod is read back through a
//! typed `Pod` and re-serialized, because a typed round trip drops every field the
//! types do not know (a newer API server's, or a fuzzer's), and a patch that replaces a
//! whole list would do the same to the elements in it.
//!
//! Pointers are built from unescaped tokens by `jsonptr`, which escapes `~` as `~0`
//! and `/` as `~1` (RFC 6901): annotation keys such as `trellis.io/injected` contain
//! a `/`.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Map, Value};

/// The operations so far, and the pod they apply to (to know what already exists).
pub struct PatchBuilder<'a> {
    pod: &'a Value,
    operations: Vec<PatchOperation>,
}

impl<'a> PatchBuilder<'a> {
    pub fn new(pod: &'a Value) -> PatchBuilder<'a> {
        PatchBuilder {
            pod,
            operations: Vec::new(),
        }
    }

    pub fn finish(self) -> Patch {
        Patch(self.operations)
    }

    /// Puts `items` at the front of the list at `path`, in order, before whatever the
    /// list held; creates the list if the pod has none (or `null`).
    pub fn prepend(&mut self, path: &[&str], items: Vec<Value>) {
        if self.array_at(path) {
            for (index, item) in items.into_iter().enumerate() {
                let index = index.to_string();
                self.add(path.iter().copied().chain([index.as_str()]), item);
            }
        } else {
            self.add(path.iter().copied(), Value::Array(items));
        }
    }

    /// Appends `items` to the list at `path` (`-` is "after the last element");
    /// creates the list if the pod has none.
    pub fn append(&mut self, path: &[&str], items: Vec<Value>) {
        if self.array_at(path) {
            for item in items {
                self.add(path.iter().copied().chain(["-"]), item);
            }
        } else {
            self.add(path.iter().copied(), Value::Array(items));
        }
    }

    /// Sets each annotation, keeping the others: one operation per key where the pod
    /// has an annotations map, else the whole map (and `metadata`, if missing, as a
    /// pod template may lack it).
    pub fn annotate(&mut self, annotations: Vec<(&str, String)>) {
        let has_map = self
            .pod
            .pointer("/metadata/annotations")
            .is_some_and(Value::is_object);
        if has_map {
            for (key, value) in annotations {
                self.add(["metadata", "annotations", key], Value::String(value));
            }
            return;
        }
        let map: Map<String, Value> = annotations
            .into_iter()
            .map(|(key, value)| (key.to_owned(), Value::String(value)))
            .collect();
        if self.pod.get("metadata").is_some_and(Value::is_object) {
            self.add(["metadata", "annotations"], Value::Object(map));
        } else {
            let metadata = serde_json::json!({ "annotations": map });
            self.add(["metadata"], metadata);
        }
    }

    fn array_at(&self, path: &[&str]) -> bool {
        let mut node = self.pod;
        for token in path {
            match node.get(*token) {
                Some(next) => node = next,
                None => return false,
            }
        }
        node.is_array()
    }

    fn add<'t>(&mut self, tokens: impl IntoIterator<Item = &'t str>, value: Value) {
        let path = PointerBuf::from_tokens(tokens.into_iter().map(Token::new));
        self.operations
            .push(PatchOperation::Add(AddOperation { path, value }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(patch: &Patch) -> Vec<String> {
        patch.0.iter().map(|op| op.path().to_string()).collect()
    }

    #[test]
    fn annotation_keys_are_escaped_as_rfc_6901_says() {
        let pod = json!({"metadata": {"annotations": {"a": "b"}}});
        let mut builder = PatchBuilder::new(&pod);
        builder.annotate(vec![
            ("trellis.io/injected", "x".into()),
            ("odd~key", "y".into()),
        ]);
        let patch = builder.finish();
        assert_eq!(
            paths(&patch),
            [
                "/metadata/annotations/trellis.io~1injected",
                "/metadata/annotations/odd~0key"
            ]
        );
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(
            patched["metadata"]["annotations"],
            json!({"a": "b", "trellis.io/injected": "x", "odd~key": "y"})
        );
    }

    #[test]
    fn missing_maps_and_lists_are_created_whole() {
        let pod = json!({"spec": {"containers": [], "initContainers": null}});
        let mut builder = PatchBuilder::new(&pod);
        builder.annotate(vec![("k/v", "1".into())]);
        builder.prepend(&["spec", "initContainers"], vec![json!(1), json!(2)]);
        builder.append(&["spec", "volumes"], vec![json!(3)]);
        builder.append(&["spec", "containers"], vec![json!(4)]);
        let patch = builder.finish();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(
            patched,
            json!({
                "metadata": {"annotations": {"k/v": "1"}},
                "spec": {"containers": [4], "initContainers": [1, 2], "volumes": [3]},
            })
        );
    }

    #[test]
    fn prepending_keeps_the_existing_elements_after_the_new_ones() {
        let pod = json!({"spec": {"initContainers": ["a", "b"]}});
        let mut builder = PatchBuilder::new(&pod);
        builder.prepend(&["spec", "initContainers"], vec![json!("x"), json!("y")]);
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &builder.finish()).unwrap();
        assert_eq!(
            patched["spec"]["initContainers"],
            json!(["x", "y", "a", "b"])
        );
    }
}
