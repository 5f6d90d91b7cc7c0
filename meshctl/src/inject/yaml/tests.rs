//! The writer against serde_yaml_ng's reading (YAML 1.2) and layout; the YAML 1.1
//! readers (PyYAML, kubernetes-validate) are run on its output in `tests/inject.rs`.

use serde_yaml_ng::Value as Yaml;

use super::{Unwritable, may_read_as_non_string, to_string};

/// Strings that YAML 1.1 or 1.2 readers take for booleans, nulls, numbers, timestamps
/// or merge keys when they are written plain.
const AMBIGUOUS: &[&str] = &[
    "yes",
    "Yes",
    "YES",
    "no",
    "No",
    "y",
    "Y",
    "n",
    "N",
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "OFF",
    "true",
    "True",
    "FALSE",
    "null",
    "Null",
    "NULL",
    "~",
    "",
    "1",
    "-1",
    "+1",
    "0",
    "017",
    "0o17",
    "0x1F",
    "0X1f",
    "0b1010",
    "-0b1",
    "1_000",
    "+_1",
    "1e3",
    "1E3",
    "-1e-3",
    "1.5",
    ".5",
    "-.5",
    "1.",
    "1.2.3",
    "1:30",
    "190:20:30.15",
    ".inf",
    "-.Inf",
    "+.INF",
    ".nan",
    ".NaN",
    "2024-01-01",
    "2008-01-01T01:01:01Z",
    "2001-12-14 21:59:43.10 -5",
    "2001-12-14t21:59:43.10-05:00",
    "<<",
    "=",
];

/// Strings every reader takes as strings, which stay plain.
const PLAIN: &[&str] = &[
    "nginx",
    "registry.example.com/checkout:1.4.2",
    "v1",
    "apps/v1",
    "yesterday",
    "only",
    "nullable",
    "0.1.0-rc1",
    "10.0.0.0/8",
    "100m",
    "64Mi",
    "IfNotPresent",
    "trellis-proxy-init,trellis-proxy",
    "hello world",
    "-c",
    "--skip-outbound-ports=5432",
];

#[test]
fn strings_readers_may_take_for_other_types_are_recognised() {
    for text in AMBIGUOUS {
        assert!(may_read_as_non_string(text), "{text:?}");
    }
    // `0.1.0-rc1` starts like a number but holds letters no number has.
    for text in PLAIN {
        assert!(!may_read_as_non_string(text), "{text:?}");
    }
}

/// A pod-shaped document holding `strings` as label keys and values, annotation
/// values, list items and a field of a list's map.
fn document_of(strings: &[&str]) -> Yaml {
    let map = |entries: Vec<(Yaml, Yaml)>| Yaml::Mapping(entries.into_iter().collect());
    let text = |s: &str| Yaml::String(s.to_owned());
    let labels = strings
        .iter()
        .enumerate()
        .map(|(i, s)| (text(&format!("l{i}")), text(s)));
    map(vec![
        (text("apiVersion"), text("v1")),
        (text("kind"), text("Pod")),
        (
            text("metadata"),
            map(vec![
                (text("name"), text("web")),
                (text("labels"), map(labels.collect())),
                (
                    text("annotations"),
                    map(strings.iter().map(|s| (text(s), text(s))).collect()),
                ),
            ]),
        ),
        (
            text("spec"),
            map(vec![(
                text("containers"),
                Yaml::Sequence(vec![map(vec![
                    (text("name"), text("app")),
                    (
                        text("args"),
                        Yaml::Sequence(strings.iter().map(|s| text(s)).collect()),
                    ),
                    (
                        text("env"),
                        Yaml::Sequence(
                            strings
                                .iter()
                                .map(|s| {
                                    map(vec![(text("name"), text("E")), (text("value"), text(s))])
                                })
                                .collect(),
                        ),
                    ),
                ])]),
            )]),
        ),
    ])
}

#[test]
fn every_string_reads_back_as_the_same_string() {
    let mut strings: Vec<&str> = AMBIGUOUS.to_vec();
    strings.extend(PLAIN);
    // What YAML syntax itself makes libyaml quote or put in a block.
    strings.extend([
        "a: b",
        "- x",
        "#x",
        "x #y",
        " lead",
        "trail ",
        "it's",
        "say \"hi\"",
        "back\\slash",
        "tab\there",
        "a\u{85}b",
        "line\u{2028}sep",
        "\u{feff}bom",
        "\u{7f}del",
        "é ü 漢字 🦀",
        "multi\nline",
        "multi\nline\n",
        "kept\n\n",
        "  indented\nfirst",
        "\nleading newline",
        "a \ntrailing space",
        "---",
        "...",
        "@at",
        "`tick",
        "%pct",
        "!bang",
        "&amp",
        "*star",
        "|pipe",
        ">gt",
        "{brace}",
        "[bracket]",
        "'single'",
    ]);
    let document = document_of(&strings);
    let written = to_string(&document).unwrap();
    let read: Yaml =
        serde_yaml_ng::from_str(&written).unwrap_or_else(|e| panic!("{e}:\n{written}"));
    assert_eq!(read, document, "{written}");
    // A label that YAML 1.1 reads as a boolean is quoted, as the author quoted it.
    assert!(written.contains("\n    l0: \"yes\"\n"), "{written}");
    assert!(written.contains("\n    \"yes\": \"yes\"\n"), "{written}");
}

#[test]
fn block_strings_keep_their_content_at_every_depth() {
    let text = "#!/bin/sh\n  indented\n\nset -e\n";
    let yaml = format!(
        "a: {t}\nb:\n- {t}\n- - {t}\n- c:\n    d: {t}\n  e:\n  - {t}\n",
        t = serde_json::to_string(text).unwrap()
    );
    let document: Yaml = serde_yaml_ng::from_str(&yaml).unwrap();
    let written = to_string(&document).unwrap();
    assert!(written.contains("a: |\n  #!/bin/sh\n"), "{written}");
    assert_eq!(
        serde_yaml_ng::from_str::<Yaml>(&written).unwrap(),
        document,
        "{written}"
    );
}

#[test]
fn the_layout_is_serde_yaml_ngs_wherever_nothing_needs_quoting() {
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\n  labels: {app: checkout}\n  \
                annotations: {}\nspec:\n  replicas: 2\n  paused: false\n  ratio: 0.5\n  gone: null\n  \
                template:\n    spec:\n      volumes: []\n      containers:\n      - name: app\n        \
                command: [/bin/sh, -c, 'echo hi: there']\n        ports:\n        - {name: http, containerPort: 8080}\n";
    let document: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(
        to_string(&document).unwrap(),
        serde_yaml_ng::to_string(&document).unwrap()
    );
}

#[test]
fn what_json_cannot_hold_is_refused() {
    let tagged: Yaml = serde_yaml_ng::from_str("a: !Ref other\n").unwrap();
    assert_eq!(to_string(&tagged), Err(Unwritable::Tag("!Ref".into())));
    let complex: Yaml = serde_yaml_ng::from_str("? [a]\n: b\n").unwrap();
    assert_eq!(to_string(&complex), Err(Unwritable::ComplexKey));
}
