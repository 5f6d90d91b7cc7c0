//! Double-quoted strings as both Go and YAML read them.
//!
//! `meshctl install` must print what Helm's `quote` (Go's `strconv.Quote`) prints, and
//! `meshctl inject` must quote strings so that YAML 1.1 and 1.2 readers read them back
//! unchanged. One escaping serves both: Go's escapes (`\"`, `\\`, `\n`, `\a`, `\x1b`,
//! `\u0085`) are all valid in YAML's double-quoted style, and the characters YAML 1.1
//! would take for line breaks or a byte-order mark inside quotes (NEL, U+2028, U+2029,
//! U+FEFF) are ones Go escapes too.

use std::fmt::Write as _;

/// `text` in double quotes, escaped as above.
pub fn double_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\x07' => quoted.push_str("\\a"),
            '\x08' => quoted.push_str("\\b"),
            '\x0b' => quoted.push_str("\\v"),
            '\x0c' => quoted.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(quoted, "\\x{:02x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(quoted, "\\u{:04x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04x}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::double_quoted;

    #[test]
    fn go_and_yaml_read_the_same_text_back() {
        assert_eq!(
            double_quoted("say \"hi\"\n\tback\\slash\x07\x1b\x7f"),
            r#""say \"hi\"\n\tback\\slash\a\x1b\x7f""#
        );
        // Line breaks to YAML 1.1 and the byte-order mark, escaped as Go escapes them.
        assert_eq!(
            double_quoted("a\u{85}b\u{2028}c\u{2029}d\u{feff}"),
            r#""a\u0085b\u2028c\u2029d\ufeff""#
        );
        assert_eq!(double_quoted("é 漢字 🦀"), "\"é 漢字 🦀\"");
        for text in ["a\u{85}b\u{2028}c", "tab\there\r\n", "\x00\x1f\u{fffe}", ""] {
            let read: String = serde_yaml_ng::from_str(&double_quoted(text)).unwrap();
            assert_eq!(read, text);
        }
    }
}
