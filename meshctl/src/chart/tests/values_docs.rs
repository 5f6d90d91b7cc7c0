//! `values.yaml` documents every value it has: each leaf (a key with a scalar, or a
//! collection written on its line) has a comment of its own, on the lines right above
//! it or at its end, so that the file stays the chart's reference.

use super::super::{VALUES_YAML, Value};

/// One key of values.yaml: its dotted path, whether it is a leaf, and whether a
/// comment documents it.
struct Key {
    path: String,
    leaf: bool,
    documented: bool,
}

/// The keys of a block-style YAML mapping, by its lines (values.yaml has no lists or
/// multi-line scalars, which this walk would not follow).
fn keys(text: &str) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut parents: Vec<(usize, String)> = Vec::new();
    let mut comment_above: Option<usize> = None;
    for line in text.lines() {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() {
            comment_above = None;
            continue;
        }
        if content.starts_with('#') {
            comment_above = Some(indent);
            continue;
        }
        let (key, rest) = content
            .split_once(':')
            .unwrap_or_else(|| panic!("not a `key: value` line: {line:?}"));
        while parents.last().is_some_and(|(depth, _)| *depth >= indent) {
            parents.pop();
        }
        parents.push((indent, key.to_owned()));
        let (value, comment) = match rest.split_once(" #") {
            Some((value, _)) => (value.trim(), true),
            None => (rest.trim(), false),
        };
        keys.push(Key {
            path: parents
                .iter()
                .map(|(_, key)| key.as_str())
                .collect::<Vec<_>>()
                .join("."),
            leaf: !value.is_empty(),
            documented: comment || comment_above == Some(indent),
        });
        comment_above = None;
    }
    keys
}

/// The leaves of the parsed values, as dotted paths.
fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Map(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(value, &path, out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[test]
fn every_leaf_of_values_yaml_has_a_comment() {
    let keys = keys(VALUES_YAML.text);
    let undocumented: Vec<&str> = keys
        .iter()
        .filter(|key| key.leaf && !key.documented)
        .map(|key| key.path.as_str())
        .collect();
    assert!(
        undocumented.is_empty(),
        "values.yaml: no comment for {undocumented:?}"
    );
    // The walk saw every value Helm sees: each parsed leaf is a leaf it checked, or
    // inside one (`resources: {requests: {cpu: 100m}}`).
    let values = Value::from_yaml(VALUES_YAML.text, "values.yaml").unwrap();
    let mut parsed = Vec::new();
    leaves(&values, "", &mut parsed);
    for path in parsed {
        assert!(
            keys.iter()
                .any(|key| key.leaf
                    && (path == key.path || path.starts_with(&format!("{}.", key.path)))),
            "values.yaml: {path} was not checked"
        );
    }
}

#[test]
fn the_walk_tells_documented_leaves_from_bare_ones() {
    let keys = keys(
        "# the group\na:\n  # why b\n  b: 1\n  c: 2  # why c\n\n  # detached\n\n  d: 3\n  e:\n    f: {g: 1}\n",
    );
    let bare: Vec<(&str, bool)> = keys
        .iter()
        .filter(|key| key.leaf)
        .map(|key| (key.path.as_str(), key.documented))
        .collect();
    assert_eq!(
        bare,
        [
            ("a.b", true),
            ("a.c", true),
            ("a.d", false),
            ("a.e.f", false)
        ]
    );
}
