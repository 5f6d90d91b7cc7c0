//! A YAML stream cut into the texts of its documents, so that a document `meshctl
//! inject` does not change is written back exactly as it was read, comments, quotes
//! and layout included.
//!
//! The cut is where YAML itself puts it: a line starting `---` or `...` followed by a
//! blank or the line's end, which no node may contain (YAML 1.2, "c-forbidden"), so
//! every piece parses alone as the document it was in the stream. Comments and
//! directives before a `---` belong to the document it starts.

/// One document's text in the stream, and the line it starts on (from 1), for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document<'a> {
    pub text: &'a str,
    pub line: usize,
}

/// The documents of `stream` in order; whitespace-only pieces are left out.
pub fn documents(stream: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut start = (0, 1);
    // Whether the current piece holds nothing yet but comments, directives and blank
    // lines, which a following `---` takes into its document.
    let mut preamble = true;
    let mut offset = 0;
    for (index, line) in stream.split_inclusive('\n').enumerate() {
        let number = index + 1;
        if is_marker(line, "---") {
            if !preamble {
                push(&mut documents, stream, start, offset);
                start = (offset, number);
            }
            preamble = false;
        } else if is_marker(line, "...") {
            push(&mut documents, stream, start, offset + line.len());
            start = (offset + line.len(), number + 1);
            preamble = true;
        } else if preamble && !is_preamble(line) {
            preamble = false;
        }
        offset += line.len();
    }
    push(&mut documents, stream, start, stream.len());
    documents
}

/// Whether `text` opens with its own `---` (after any comments and directives), so a
/// stream needs no separator before it.
pub fn starts_explicitly(text: &str) -> bool {
    text.split_inclusive('\n')
        .find(|line| !is_preamble(line))
        .is_some_and(|line| is_marker(line, "---"))
}

fn push<'a>(
    documents: &mut Vec<Document<'a>>,
    stream: &'a str,
    (from, line): (usize, usize),
    to: usize,
) {
    let text = &stream[from..to];
    if !text.trim().is_empty() {
        documents.push(Document { text, line });
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn is_preamble(line: &str) -> bool {
    let line = line.trim_end();
    line.trim_start().is_empty() || line.trim_start().starts_with('#') || line.starts_with('%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(stream: &str) -> Vec<&str> {
        documents(stream)
            .iter()
            .map(|document| document.text)
            .collect()
    }

    #[test]
    fn documents_are_cut_where_yaml_cuts_them() {
        assert_eq!(texts("a: 1\n"), ["a: 1\n"]);
        assert_eq!(texts("a: 1\n---\nb: 2"), ["a: 1\n", "---\nb: 2"]);
        // A header comment, directives and a leading `---` belong to the first document.
        assert_eq!(
            texts("# shop\n%YAML 1.2\n---\na: 1\n--- # two\nb: 2\n---\n"),
            [
                "# shop\n%YAML 1.2\n---\na: 1\n",
                "--- # two\nb: 2\n",
                "---\n"
            ]
        );
        // `...` ends a document; a bare one may follow.
        assert_eq!(texts("a: 1\n...\nb: 2\n"), ["a: 1\n...\n", "b: 2\n"]);
        // Not markers: indented, or followed by more than a blank.
        assert_eq!(
            texts("a: |\n  ---\n  x\nb: ---x\n----\n"),
            ["a: |\n  ---\n  x\nb: ---x\n----\n"]
        );
        assert_eq!(texts("\n\n---\n\n"), ["\n\n---\n\n"]);
        assert!(texts(" \n").is_empty());
        let lines: Vec<usize> = documents("a: 1\n---\nb: 2\n...\nc: 3\n")
            .iter()
            .map(|document| document.line)
            .collect();
        assert_eq!(lines, [1, 2, 5]);
    }

    #[test]
    fn each_piece_parses_to_the_document_the_whole_stream_holds() {
        let stream = "# header\n---\na: 1\n--- !!str x\n---\nb: [1,\n  2]\n...\n%YAML 1.1\n---\nc: |\n  ---x\n";
        let whole: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(stream)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let pieces: Vec<serde_yaml_ng::Value> = documents(stream)
            .iter()
            .map(|document| serde_yaml_ng::from_str(document.text).unwrap())
            .collect();
        assert_eq!(pieces, whole);
        assert!(starts_explicitly("# c\n---\na: 1\n"));
        assert!(!starts_explicitly("a: 1\n"));
    }
}
