//! Writing YAML that every reader of Kubernetes manifests reads back as the same values.
//!
//! serde_yaml_ng resolves scalars by YAML 1.2's core schema, so it writes `yes`, `on`,
//! `1_000`, `0b101`, `1:30` or `2024-01-01` unquoted: strings to it, but booleans,
//! numbers and timestamps to YAML 1.1 readers, which is what kubectl (go-yaml),
//! PyYAML and kubernetes-validate are. A label `a: "yes"` written back as `a: yes`
//! is a boolean to kubectl, and the API server refuses the object. So this module
//! lays out the document itself (block style, sequences not indented under their key,
//! as kubectl prints them) and double-quotes every string some YAML 1.1 or 1.2
//! resolver could take for another type ([`may_read_as_non_string`]); every other
//! scalar is written exactly as serde_yaml_ng (libyaml's emitter) writes it alone,
//! which already quotes what YAML syntax requires (`: `, `#`, leading spaces, …).

use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::quote::double_quoted;

/// What this writer refuses: YAML that is not a Kubernetes object's JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    #[error("it holds the YAML tag {0}, which Kubernetes objects do not use")]
    Tag(String),
    #[error("it has a mapping key that is a list or a map, which JSON cannot hold")]
    ComplexKey,
}

/// `document` as YAML text, ending with a newline.
pub fn to_string(document: &Yaml) -> Result<String, Unwritable> {
    let mut out = String::new();
    match document {
        Yaml::Mapping(map) if !map.is_empty() => mapping(&mut out, map, 0, false)?,
        Yaml::Sequence(items) if !items.is_empty() => sequence(&mut out, items, 0, false)?,
        scalar => inline(&mut out, scalar, 0)?,
    }
    Ok(out)
}

/// Whether a YAML reader could take `text`, written plain, for something other than a
/// string: YAML 1.2's core schema (`true`, `null`, `0x1F`, `1e3`, `.inf`), YAML 1.1's
/// types as PyYAML and go-yaml read them (`yes`, `on`, `y`, `~`, `0b101`, `017`,
/// `1_000`, sexagesimal `1:30`, floats like `1.2.3`, timestamps, `<<` and `=`).
/// It errs towards quoting: a quoted string is a string to all of them.
pub fn may_read_as_non_string(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "y", "n", "yes", "no", "true", "false", "on", "off", "<<", "=", ".inf",
        "+.inf", "-.inf", ".nan",
    ];
    if WORDS.contains(&text.to_ascii_lowercase().as_str()) {
        return true;
    }
    // Numbers in every base and notation. go-yaml drops every `_` before it parses,
    // and tries any scalar that starts with a sign, a dot or a digit. (`-c` has no
    // digit: it is the argument people write, and a string to every reader.)
    let numeric_start = text.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c));
    if numeric_start
        && text.contains(|c: char| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() || "_.:+-xXoO".contains(c))
    {
        return true;
    }
    // YAML 1.1 timestamps start `yyyy-`, whatever follows (`2001-12-14 21:59:43.10 -5`).
    let bytes = text.as_bytes();
    bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// The entries of `map`, the first on the current line when `continues` (after `- `),
/// every other one at `indent`.
fn mapping(
    out: &mut String,
    map: &Mapping,
    indent: usize,
    continues: bool,
) -> Result<(), Unwritable> {
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 || !continues {
            pad(out, indent);
        }
        out.push_str(&key_text(key)?);
        out.push(':');
        match value {
            Yaml::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                mapping(out, inner, indent + 2, false)?;
            }
            // kubectl's layout: a list's dashes line up with its key.
            Yaml::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                sequence(out, items, indent, false)?;
            }
            scalar => {
                out.push(' ');
                inline(out, scalar, indent)?;
            }
        }
    }
    Ok(())
}

/// The items of `items`, each after a `- ` at `indent` (the first on the current line
/// when `continues`).
fn sequence(
    out: &mut String,
    items: &[Yaml],
    indent: usize,
    continues: bool,
) -> Result<(), Unwritable> {
    for (index, item) in items.iter().enumerate() {
        if index > 0 || !continues {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Yaml::Mapping(inner) if !inner.is_empty() => mapping(out, inner, indent + 2, true)?,
            Yaml::Sequence(inner) if !inner.is_empty() => sequence(out, inner, indent + 2, true)?,
            scalar => inline(out, scalar, indent)?,
        }
    }
    Ok(())
}

/// A scalar (or an empty collection) after its key or dash, then the line's end. A
/// block scalar's lines are indented from `indent`, the column of the node holding it,
/// which is what its indentation indicator (`|2-`) counts from.
fn inline(out: &mut String, value: &Yaml, indent: usize) -> Result<(), Unwritable> {
    match value {
        Yaml::Mapping(_) => out.push_str("{}"),
        Yaml::Sequence(_) => out.push_str("[]"),
        Yaml::String(text) => match string(text) {
            Scalar::Line(line) => out.push_str(&line),
            Scalar::Block { header, lines } => {
                out.push_str(&header);
                for line in lines {
                    out.push('\n');
                    if !line.is_empty() {
                        pad(out, indent);
                        out.push_str(&line);
                    }
                }
            }
        },
        Yaml::Tagged(tagged) => return Err(Unwritable::Tag(tagged.tag.to_string())),
        // Null, booleans and numbers, spelt as serde_yaml_ng spells them.
        other => out.push_str(libyaml(other).trim_end()),
    }
    out.push('\n');
    Ok(())
}

fn key_text(key: &Yaml) -> Result<String, Unwritable> {
    match key {
        // A key is on one line: a string that would need a block scalar is quoted.
        Yaml::String(text) => Ok(match string(text) {
            Scalar::Line(line) => line,
            Scalar::Block { .. } => double_quoted(text),
        }),
        Yaml::Mapping(_) | Yaml::Sequence(_) => Err(Unwritable::ComplexKey),
        Yaml::Tagged(tagged) => Err(Unwritable::Tag(tagged.tag.to_string())),
        other => Ok(libyaml(other).trim_end().to_owned()),
    }
}

/// How one string is written.
enum Scalar {
    /// On the line of its key or dash.
    Line(String),
    /// A literal block: the header (`|`, `|-`, `|2+`…) and the content lines as they
    /// are for a node at column 0 (indented by two, or by the indicator).
    Block { header: String, lines: Vec<String> },
}

fn string(text: &str) -> Scalar {
    // libyaml breaks lines at NEL, U+2028 and U+2029 too, and would indent what follows
    // for a node at column 0; escaped, they stay on the line.
    if may_read_as_non_string(text) || text.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
        return Scalar::Line(double_quoted(text));
    }
    let yaml = libyaml(&Yaml::String(text.to_owned()));
    // One final newline ends the document; any further ones are a `|+` block's content.
    let yaml = yaml.strip_suffix('\n').unwrap_or(&yaml);
    match yaml.split_once('\n') {
        None => Scalar::Line(yaml.to_owned()),
        Some((header, body)) => Scalar::Block {
            header: header.to_owned(),
            lines: body.split('\n').map(str::to_owned).collect(),
        },
    }
}

/// A scalar alone, as serde_yaml_ng writes it; it cannot fail for a scalar, but if it
/// did, a quoted string (or `null`) is still correct YAML.
fn libyaml(scalar: &Yaml) -> String {
    serde_yaml_ng::to_string(scalar).unwrap_or_else(|_| match scalar {
        Yaml::String(text) => double_quoted(text),
        _ => "null".into(),
    })
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests;
