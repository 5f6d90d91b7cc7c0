//! The syntax of the template subset: splitting a template into text and actions
//! (with Go's trim markers and comments), and parsing an action's pipeline. What the
//! subset leaves out is refused here, with a reason, before anything is rendered.

use super::{Command, Function, Operand, Pipeline};

/// One `{{ … }}` as the lexer found it.
pub(super) struct Action<'a> {
    pub(super) line: usize,
    /// The words inside, trim markers removed.
    pub(super) body: &'a str,
}

pub(super) enum Piece<'a> {
    Text(String),
    Comment,
    Action(Action<'a>),
}

/// Splits a template into text and actions, applying the trim markers: `{{- ` trims
/// the whitespace before the action, ` -}}` the whitespace after it.
pub(super) fn lex(text: &str) -> Result<Vec<Piece<'_>>, (usize, String)> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    let mut trim_next = false;
    let line_at = |offset: usize| text[..offset].matches('\n').count() + 1;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        if trim_next {
            before = before.trim_start_matches(is_go_space);
        }
        let after_open = &rest[open + 2..];
        let trim_left = after_open.starts_with('-') && after_open[1..].starts_with(is_go_space);
        if trim_left {
            before = before.trim_end_matches(is_go_space);
        }
        pieces.push(Piece::Text(before.to_owned()));
        let line = line_at(offset + open);
        let body_start = if trim_left { 2 } else { 0 };
        let close = find_close(&after_open[body_start..])
            .ok_or_else(|| (line, "`{{` without `}}`".to_owned()))?;
        let mut body = &after_open[body_start..body_start + close];
        trim_next = body.ends_with('-') && body[..body.len() - 1].ends_with(is_go_space);
        if trim_next {
            body = &body[..body.len() - 1];
        }
        let body = body.trim_matches(is_go_space);
        if body.starts_with("/*") {
            if !body.ends_with("*/") {
                return Err((
                    line,
                    "a comment must end with `*/` right before `}}`".into(),
                ));
            }
            pieces.push(Piece::Comment);
        } else {
            pieces.push(Piece::Action(Action { line, body }));
        }
        let consumed = open + 2 + body_start + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    let mut tail = rest;
    if trim_next {
        tail = tail.trim_start_matches(is_go_space);
    }
    pieces.push(Piece::Text(tail.to_owned()));
    Ok(pieces)
}

pub(super) fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The offset of the `}}` that closes an action, skipping string literals and
/// comments (either may contain `}}`).
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => {
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' {
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                index += body[index + 2..].find("*/")? + 3;
            }
            b'}' if bytes.get(index + 1) == Some(&b'}') => return Some(index),
            _ => {}
        }
        index += 1;
    }
    None
}

pub(super) fn parse_pipeline(text: &str, line: usize) -> Result<Pipeline, String> {
    let tokens = tokenize(text)?;
    let mut commands = Vec::new();
    for words in tokens.split(|token| matches!(token, Token::Pipe)) {
        let Some((first, rest)) = words.split_first() else {
            return Err("an empty command in a pipeline".into());
        };
        let operands = |words: &[Token]| -> Result<Vec<Operand>, String> {
            words
                .iter()
                .map(|word| match word {
                    Token::Operand(Operand::Field(path)) => Ok(Operand::Field(path.clone())),
                    Token::Operand(Operand::String(text)) => Ok(Operand::String(text.clone())),
                    Token::Operand(Operand::Int(number)) => Ok(Operand::Int(*number)),
                    Token::Word(word) => Err(format!(
                        "`{word}` as an argument: nested calls are not in the subset"
                    )),
                    Token::Pipe => Err("unexpected `|`".into()),
                })
                .collect()
        };
        commands.push(match first {
            Token::Word(name) => Command::Call {
                function: Function::named(name).ok_or_else(|| {
                    format!(
                        "the function `{name}` is not in the subset (not, quote, toYaml, nindent, required, b64enc, hasKey, fail)"
                    )
                })?,
                args: operands(rest)?,
            },
            _ if !rest.is_empty() => return Err(format!("unexpected words after a value in `{text}`")),
            _ => Command::Operand(operands(std::slice::from_ref(first))?.remove(0)),
        });
    }
    Ok(Pipeline { line, commands })
}

enum Token {
    Word(String),
    Operand(Operand),
    Pipe,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            _ if is_go_space(c) => {
                chars.next();
            }
            '|' => {
                chars.next();
                tokens.push(Token::Pipe);
            }
            '"' => {
                chars.next();
                let mut literal = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated string in `{text}`")),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => literal.push('\n'),
                            Some((_, 't')) => literal.push('\t'),
                            Some((_, c @ ('"' | '\\'))) => literal.push(c),
                            _ => return Err(format!("unsupported escape in `{text}`")),
                        },
                        Some((_, c)) => literal.push(c),
                    }
                }
                tokens.push(Token::Operand(Operand::String(literal)));
            }
            _ => {
                let end = text[start..]
                    .find(|c: char| is_go_space(c) || c == '|')
                    .map_or(text.len(), |length| start + length);
                let word = &text[start..end];
                while chars.peek().is_some_and(|&(index, _)| index < end) {
                    chars.next();
                }
                tokens.push(word_token(word)?);
            }
        }
    }
    Ok(tokens)
}

fn word_token(word: &str) -> Result<Token, String> {
    if let Some(path) = word.strip_prefix('.') {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        let valid = path.iter().all(|key| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        return if valid {
            Ok(Token::Operand(Operand::Field(path)))
        } else {
            Err(format!("`{word}` is not a field like .Values.a.b"))
        };
    }
    if let Ok(number) = word.parse::<i64>() {
        return Ok(Token::Operand(Operand::Int(number)));
    }
    if word.chars().all(|c| c.is_ascii_alphanumeric())
        && word.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return Ok(Token::Word(word.to_owned()));
    }
    Err(format!("`{word}` is not in the subset"))
}
