//! The subset of Helm's template language the chart is written in, parsed and
//! rendered the way Go's `text/template` and Helm's functions would.
//!
//! The subset, and nothing more (anything else is a parse error naming the line):
//! - `{{ .Values.a.b }}`, `{{ .Release.Namespace }}`, `{{ .Chart.AppVersion }}`: a
//!   field, printed as Go prints it;
//! - `{{- if PIPELINE }} … {{- else }} … {{- end }}` (no `else if`);
//! - pipelines of the functions `not`, `quote`, `toYaml`, `nindent N`,
//!   `required "message"`, `b64enc`, `hasKey MAP "key"` and `fail "message"`, with
//!   string and integer literals: `{{ required "msg" .Values.x | b64enc }}`,
//!   `{{ toYaml .Values.r | nindent 12 }}`, `{{ if hasKey .Values.m "k" }}`;
//! - the trim markers `{{-` and `-}}`, and comments `{{/* … */}}`.
//!
//! Keeping the chart to this subset is what lets `meshctl install` print exactly what
//! `helm template` prints without linking a Go template engine; a test renders the
//! chart both ways and compares the objects.

mod syntax;

use base64::Engine as _;

use self::syntax::{Piece, lex, parse_pipeline};
use super::error::ChartError;
use super::values::Value;
use crate::quote::double_quoted;

/// A parsed template file.
#[derive(Debug)]
pub struct Template {
    /// The file's path in the chart (`templates/21-controller.yaml`), for errors.
    file: String,
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    If {
        condition: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug)]
struct Pipeline {
    line: usize,
    commands: Vec<Command>,
}

#[derive(Debug)]
enum Command {
    Operand(Operand),
    Call {
        function: Function,
        args: Vec<Operand>,
    },
}

#[derive(Debug)]
enum Operand {
    /// `.Values.a.b` as its path, `["Values", "a", "b"]`.
    Field(Vec<String>),
    String(String),
    Int(i64),
}

#[derive(Debug, Clone, Copy)]
enum Function {
    Not,
    Quote,
    ToYaml,
    Nindent,
    Required,
    B64enc,
    HasKey,
    Fail,
}

impl Function {
    fn named(name: &str) -> Option<Function> {
        Some(match name {
            "not" => Function::Not,
            "quote" => Function::Quote,
            "toYaml" => Function::ToYaml,
            "nindent" => Function::Nindent,
            "required" => Function::Required,
            "b64enc" => Function::B64enc,
            "hasKey" => Function::HasKey,
            "fail" => Function::Fail,
            _ => return None,
        })
    }
}

/// An `if` whose `end` is still to come.
struct OpenIf {
    line: usize,
    condition: Pipeline,
    /// The nodes before the `if`, which the finished `if` node joins.
    enclosing: Vec<Node>,
    /// The then-branch, once `else` has been seen (the current nodes are then the
    /// else-branch).
    then: Option<Vec<Node>>,
}

impl Template {
    /// Parses `text`, the file `file` of the chart.
    pub fn parse(file: &str, text: &str) -> Result<Template, ChartError> {
        let error = |line, message: String| ChartError::Template {
            file: file.to_owned(),
            line,
            message,
        };
        let mut stack: Vec<OpenIf> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        for piece in lex(text).map_err(|(line, message)| error(line, message))? {
            let action = match piece {
                Piece::Text(text) => {
                    if !text.is_empty() {
                        nodes.push(Node::Text(text));
                    }
                    continue;
                }
                Piece::Comment => continue,
                Piece::Action(action) => action,
            };
            let (keyword, rest) = match action.body.split_once(char::is_whitespace) {
                Some((keyword, rest)) => (keyword, rest.trim()),
                None => (action.body, ""),
            };
            match keyword {
                "if" => {
                    let condition = parse_pipeline(rest, action.line)
                        .map_err(|message| error(action.line, message))?;
                    stack.push(OpenIf {
                        line: action.line,
                        condition,
                        enclosing: std::mem::take(&mut nodes),
                        then: None,
                    });
                }
                "else" => {
                    if !rest.is_empty() {
                        return Err(error(action.line, "`else if` is not in the subset".into()));
                    }
                    let open = stack
                        .last_mut()
                        .filter(|open| open.then.is_none())
                        .ok_or_else(|| error(action.line, "`else` without `if`".into()))?;
                    open.then = Some(std::mem::take(&mut nodes));
                }
                "end" => {
                    let open = stack
                        .pop()
                        .ok_or_else(|| error(action.line, "`end` without `if`".into()))?;
                    let branch = std::mem::replace(&mut nodes, open.enclosing);
                    let (then, otherwise) = match open.then {
                        Some(then) => (then, branch),
                        None => (branch, Vec::new()),
                    };
                    nodes.push(Node::If {
                        condition: open.condition,
                        then,
                        otherwise,
                    });
                }
                "range" | "with" | "define" | "template" | "block" | "include" | "break"
                | "continue" => {
                    return Err(error(
                        action.line,
                        format!("`{keyword}` is not in the subset"),
                    ));
                }
                _ => {
                    let pipeline = parse_pipeline(action.body, action.line)
                        .map_err(|message| error(action.line, message))?;
                    nodes.push(Node::Print(pipeline));
                }
            }
        }
        if let Some(open) = stack.last() {
            return Err(error(open.line, "`if` without `end`".into()));
        }
        Ok(Template {
            file: file.to_owned(),
            nodes,
        })
    }

    /// Renders the template with `root` as `.` (a map of `Values`, `Release`, `Chart`).
    pub fn render(&self, root: &Value) -> Result<String, ChartError> {
        let mut out = String::new();
        self.render_nodes(&self.nodes, root, &mut out)?;
        Ok(out)
    }

    fn render_nodes(
        &self,
        nodes: &[Node],
        root: &Value,
        out: &mut String,
    ) -> Result<(), ChartError> {
        for node in nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Print(pipeline) => {
                    let value = self.evaluate(pipeline, root)?;
                    let text = value
                        .print()
                        .map_err(|message| self.error(pipeline.line, message))?;
                    out.push_str(&text);
                }
                Node::If {
                    condition,
                    then,
                    otherwise,
                } => {
                    let branch = if self.evaluate(condition, root)?.is_truthy() {
                        then
                    } else {
                        otherwise
                    };
                    self.render_nodes(branch, root, out)?;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, pipeline: &Pipeline, root: &Value) -> Result<Value, ChartError> {
        let mut piped: Option<Value> = None;
        for command in &pipeline.commands {
            piped = Some(match command {
                Command::Operand(operand) => {
                    if piped.is_some() {
                        return Err(self.error(pipeline.line, "a value cannot follow `|`".into()));
                    }
                    self.operand(operand, root, pipeline.line)?
                }
                Command::Call { function, args } => {
                    let mut values = args
                        .iter()
                        .map(|arg| self.operand(arg, root, pipeline.line))
                        .collect::<Result<Vec<_>, _>>()?;
                    // Go passes the pipeline's value as the last argument.
                    values.extend(piped.take());
                    self.call(*function, values, pipeline.line)?
                }
            });
        }
        piped.ok_or_else(|| self.error(pipeline.line, "empty action".into()))
    }

    fn operand(&self, operand: &Operand, root: &Value, line: usize) -> Result<Value, ChartError> {
        match operand {
            Operand::String(text) => Ok(Value::String(text.clone())),
            Operand::Int(number) => Ok(Value::Int(*number)),
            Operand::Field(path) => {
                let mut value = root;
                for (depth, key) in path.iter().enumerate() {
                    value = match value {
                        Value::Map(map) => match map.get(key) {
                            Some(value) => value,
                            // Helm's missingkey=zero: a missing key is nothing...
                            None => return Ok(Value::Null),
                        },
                        // ...but a field of nothing is Go's nil-pointer error.
                        _ => {
                            return Err(self.error(
                                line,
                                format!(
                                    "nil pointer evaluating .{}: .{} is not a map",
                                    path.join("."),
                                    path[..depth].join(".")
                                ),
                            ));
                        }
                    };
                }
                Ok(value.clone())
            }
        }
    }

    fn call(&self, function: Function, args: Vec<Value>, line: usize) -> Result<Value, ChartError> {
        let arity = |expected: usize| {
            if args.len() == expected {
                Ok(())
            } else {
                Err(self.error(
                    line,
                    format!(
                        "{function:?} takes {expected} arguments, got {}",
                        args.len()
                    ),
                ))
            }
        };
        let text = |value: &Value| strval(value).map_err(|message| self.error(line, message));
        match function {
            Function::Not => {
                arity(1)?;
                Ok(Value::Bool(!args[0].is_truthy()))
            }
            Function::Quote => {
                // Sprig skips null arguments rather than quoting "<nil>".
                let quoted = args
                    .iter()
                    .filter(|value| !matches!(value, Value::Null))
                    .map(|value| text(value).map(|text| double_quoted(&text)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::String(quoted.join(" ")))
            }
            Function::ToYaml => {
                arity(1)?;
                let yaml = args[0]
                    .to_yaml()
                    .map_err(|message| self.error(line, message))?;
                Ok(Value::String(yaml))
            }
            Function::Nindent => {
                arity(2)?;
                let Value::Int(width) = args[0] else {
                    return Err(self.error(line, "nindent takes a width first".into()));
                };
                let pad = " ".repeat(usize::try_from(width).unwrap_or(0));
                let indented = text(&args[1])?.replace('\n', &format!("\n{pad}"));
                Ok(Value::String(format!("\n{pad}{indented}")))
            }
            Function::Required => {
                arity(2)?;
                let message = text(&args[0])?;
                if args[1].is_unset() {
                    return Err(ChartError::Refused {
                        file: self.file.clone(),
                        line,
                        message,
                    });
                }
                Ok(args[1].clone())
            }
            Function::B64enc => {
                arity(1)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(text(&args[0])?);
                Ok(Value::String(encoded))
            }
            Function::HasKey => {
                arity(2)?;
                let Value::Map(map) = &args[0] else {
                    return Err(self.error(line, "hasKey takes a map first".into()));
                };
                Ok(Value::Bool(map.contains_key(&text(&args[1])?)))
            }
            Function::Fail => {
                arity(1)?;
                Err(ChartError::Refused {
                    file: self.file.clone(),
                    line,
                    message: text(&args[0])?,
                })
            }
        }
    }

    fn error(&self, line: usize, message: String) -> ChartError {
        ChartError::Template {
            file: self.file.clone(),
            line,
            message,
        }
    }
}

/// Sprig's `strval`: strings as they are, anything else as Go prints it.
fn strval(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok("<nil>".into()),
        other => other.print(),
    }
}
