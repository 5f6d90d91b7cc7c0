//! The chart's values as Helm sees them: a tree of maps, lists and scalars, read from
//! YAML files, overridden by `--set key=value` and `--set-file key=path`, and printed
//! the way Go's templates print them.
//!
//! Helm's rules are copied where they change what a template renders: numbers from
//! files are floats (Go's `float64`, so `{{ 1000000 }}` prints `1e+06`) while `--set`
//! integers are integers; a `null` override deletes the key it overrides; a missing
//! key prints as nothing.

use std::collections::BTreeMap;

use super::error::ChartError;

/// One value of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer from `--set` (Go's `int64`).
    Int(i64),
    /// A number from a YAML file (Go's `float64`, whatever it looks like).
    Float(f64),
    String(String),
    List(Vec<Value>),
    /// Sorted by key, as Go's maps are when printed or marshalled.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Reads a values file (or the chart's values.yaml); empty text is an empty map.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Value, ChartError> {
        let invalid = |reason: String| ChartError::InvalidValues {
            origin: origin.to_owned(),
            reason,
        };
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|error| invalid(error.to_string()))?;
        match from_yaml(yaml).map_err(invalid)? {
            Value::Null => Ok(Value::Map(BTreeMap::new())),
            map @ Value::Map(_) => Ok(map),
            _ => Err(invalid("the top level must be a map of keys".into())),
        }
    }

    /// The value at `path` (map keys), or `None` where the tree has no such key.
    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(self, |value, key| match value {
            Value::Map(map) => map.get(*key),
            _ => None,
        })
    }

    /// Whether a template's `if` takes this value as true: Go's rule, under which
    /// false, 0, null and empty strings, lists and maps are false.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(value) => *value,
            Value::Int(value) => *value != 0,
            Value::Float(value) => *value != 0.0,
            Value::String(value) => !value.is_empty(),
            Value::List(values) => !values.is_empty(),
            Value::Map(map) => !map.is_empty(),
        }
    }

    /// Whether a value counts as absent for `required` and for deciding what
    /// `meshctl install` generates: null, or an empty string (Helm's `required`).
    pub fn is_unset(&self) -> bool {
        matches!(self, Value::Null) || matches!(self, Value::String(text) if text.is_empty())
    }

    /// Layers `overlay` over `self`, as Helm layers `-f` files and `--set`s: maps
    /// merge key by key and anything else replaces, nulls included (they still have
    /// to delete a chart default in [`Value::coalesce`]).
    pub fn overlay(&mut self, overlay: Value) {
        self.merge(overlay, false);
    }

    /// Puts the user's values over the chart's defaults, as Helm does: like
    /// [`Value::overlay`], but a `null` deletes the key it lands on.
    pub fn coalesce(&mut self, user: Value) {
        self.merge(user, true);
    }

    fn merge(&mut self, overlay: Value, null_deletes: bool) {
        match (self, overlay) {
            (Value::Map(base), Value::Map(overlay)) => {
                for (key, value) in overlay {
                    match (base.get_mut(&key), value) {
                        (_, Value::Null) if null_deletes => {
                            base.remove(&key);
                        }
                        (Some(existing @ Value::Map(_)), value @ Value::Map(_)) => {
                            existing.merge(value, null_deletes)
                        }
                        (_, value) => {
                            base.insert(key, value);
                        }
                    }
                }
            }
            (base, overlay) => *base = overlay,
        }
    }

    /// Sets the value at a dotted path, making maps on the way (as `--set a.b=c`).
    pub fn set(&mut self, path: &[String], value: Value) {
        let mut overlay = value;
        for key in path.iter().rev() {
            overlay = Value::Map(BTreeMap::from([(key.clone(), overlay)]));
        }
        self.overlay(overlay);
    }

    /// The text Go's `{{ . }}` prints for this value (`fmt.Sprint`), as Helm leaves it
    /// (`<no value>` becomes nothing). Maps and lists have no useful printed form, so
    /// a template printing one is refused: it needs `toYaml`.
    pub fn print(&self) -> Result<String, String> {
        match self {
            Value::Null => Ok(String::new()),
            Value::Bool(value) => Ok(value.to_string()),
            Value::Int(value) => Ok(value.to_string()),
            Value::Float(value) => Ok(go_float(*value)),
            Value::String(value) => Ok(value.clone()),
            Value::List(_) | Value::Map(_) => {
                Err("a map or list cannot be printed as text; use toYaml".into())
            }
        }
    }

    /// The value as YAML, as Helm's `toYaml` writes it (less the final newline). The
    /// layout may differ from Go's; the YAML it means does not.
    pub fn to_yaml(&self) -> Result<String, String> {
        let text = serde_yaml_ng::to_string(&to_yaml(self)).map_err(|error| error.to_string())?;
        Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
    }
}

/// Parses one `--set` argument: `a.b=c`, several separated by commas (`\,` is a comma
/// in a value, `\.` a dot in a key). Values are typed as Helm types them: `true` and
/// `false`, `null`, integers without a leading zero; anything else is a string.
pub fn parse_set(argument: &str) -> Result<Vec<(Vec<String>, Value)>, ChartError> {
    split_unescaped(argument, ',')
        .into_iter()
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| ChartError::InvalidSet {
                argument: argument.to_owned(),
                reason: format!("{pair:?} is not key=value"),
            })?;
            let path = parse_key(key, argument)?;
            if value.starts_with('{') || value.starts_with('[') {
                return Err(ChartError::InvalidSet {
                    argument: argument.to_owned(),
                    reason: "lists are not supported in --set; put them in a values file (-f)"
                        .into(),
                });
            }
            Ok((path, typed(&value.replace("\\,", ","))))
        })
        .collect()
}

/// The path of a `--set` or `--set-file` key: dot-separated, `\.` for a literal dot.
pub fn parse_key(key: &str, argument: &str) -> Result<Vec<String>, ChartError> {
    let invalid = |reason: &str| ChartError::InvalidSet {
        argument: argument.to_owned(),
        reason: reason.to_owned(),
    };
    if key.contains('[') {
        return Err(invalid(
            "list indexes (a[0]) are not supported; put lists in a values file (-f)",
        ));
    }
    let path: Vec<String> = split_unescaped(key, '.')
        .into_iter()
        .map(|part| part.replace("\\.", "."))
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(invalid("the key has an empty part"));
    }
    Ok(path)
}

fn typed(value: &str) -> Value {
    match value {
        _ if value.eq_ignore_ascii_case("true") => Value::Bool(true),
        _ if value.eq_ignore_ascii_case("false") => Value::Bool(false),
        "null" => Value::Null,
        "0" => Value::Int(0),
        // Helm keeps "0123" a string: a leading zero is more likely a code than a number.
        _ if value.starts_with('0') => Value::String(value.into()),
        _ => value
            .parse::<i64>()
            .map_or_else(|_| Value::String(value.into()), Value::Int),
    }
}

/// Splits at `separator`s not preceded by a backslash; the escapes stay in the parts.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            _ if c == separator && !escaped => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => escaped = false,
        }
    }
    parts.push(&text[start..]);
    parts
}

fn from_yaml(yaml: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Yaml;
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(value) => Value::Bool(value),
        Yaml::Number(number) => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        Yaml::String(value) => Value::String(value),
        Yaml::Sequence(values) => Value::List(
            values
                .into_iter()
                .map(from_yaml)
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(mapping) => {
            let mut map = BTreeMap::new();
            for (key, value) in mapping {
                // Go's YAML turns scalar keys into strings; so do we.
                let key = match from_yaml(key)? {
                    Value::String(key) => key,
                    scalar @ (Value::Bool(_) | Value::Float(_) | Value::Null) => scalar.print()?,
                    _ => return Err("a map key must be a scalar".into()),
                };
                map.insert(key, from_yaml(value)?);
            }
            Value::Map(map)
        }
        Yaml::Tagged(tagged) => {
            return Err(format!("YAML tags ({}) are not supported", tagged.tag));
        }
    })
}

fn to_yaml(value: &Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Yaml;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(value) => Yaml::Bool(*value),
        Value::Int(value) => Yaml::Number((*value).into()),
        // Helm marshals through JSON, which writes a whole float as an integer.
        Value::Float(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => {
            Yaml::Number((*value as i64).into())
        }
        Value::Float(value) => Yaml::Number((*value).into()),
        Value::String(value) => Yaml::String(value.clone()),
        Value::List(values) => Yaml::Sequence(values.iter().map(to_yaml).collect()),
        Value::Map(map) => Yaml::Mapping(
            map.iter()
                .map(|(key, value)| (Yaml::String(key.clone()), to_yaml(value)))
                .collect(),
        ),
    }
}

/// A `float64` as Go's `%v` prints it (`strconv.FormatFloat(f, 'g', -1, 64)`): the
/// shortest digits that read back the same, in exponent form (`1e+06`) when the
/// exponent is below -4 or at least 6.
fn go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if value == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the same shortest round-tripping digits: "1.5e6".
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_go_prints_them() {
        assert_eq!(go_float(8443.0), "8443");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(123_456.0), "123456");
        assert_eq!(go_float(1_234_567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(Value::Int(1_000_000).print().unwrap(), "1000000");
    }

    #[test]
    fn set_arguments_are_typed_as_helm_types_them() {
        let parsed = parse_set("a.b=true,c=0123,d=42,e=null,f=x\\,y,g\\.h=1.5").unwrap();
        let expect = |path: &[&str], value: Value| {
            (
                path.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                value,
            )
        };
        assert_eq!(
            parsed,
            vec![
                expect(&["a", "b"], Value::Bool(true)),
                expect(&["c"], Value::String("0123".into())),
                expect(&["d"], Value::Int(42)),
                expect(&["e"], Value::Null),
                expect(&["f"], Value::String("x,y".into())),
                expect(&["g.h"], Value::String("1.5".into())),
            ]
        );
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("a[0]=x").is_err());
        assert!(parse_set("a={x,y}").is_err());
    }

    #[test]
    fn null_overrides_delete_and_maps_merge() {
        let mut base = Value::from_yaml("a: {b: 1, c: 2}\nd: [1, 2]\n", "base").unwrap();
        let mut user = Value::from_yaml("a: {c: 5}\n", "first").unwrap();
        user.overlay(Value::from_yaml("a: {c: null, e: 3}\nd: [3]\n", "second").unwrap());
        base.coalesce(user);
        assert_eq!(
            base,
            Value::from_yaml("a: {b: 1, e: 3}\nd: [3]\n", "expected").unwrap()
        );
    }

    #[test]
    fn truthiness_follows_go() {
        for falsy in ["false", "0", "null", "''", "[]", "{}"] {
            let value = Value::from_yaml(&format!("x: {falsy}"), "t").unwrap();
            assert!(
                !value.get(&["x"]).unwrap_or(&Value::Null).is_truthy(),
                "{falsy}"
            );
        }
        assert!(Value::String("false".into()).is_truthy());
    }

    #[test]
    fn a_values_file_must_be_a_map() {
        let error = Value::from_yaml("- a\n- b\n", "values.yaml").unwrap_err();
        assert!(error.to_string().contains("values.yaml"), "{error}");
        assert_eq!(
            Value::from_yaml("", "empty").unwrap(),
            Value::Map(BTreeMap::new())
        );
    }
}
