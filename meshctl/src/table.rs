//! Plain-text tables with aligned columns, as `kubectl get` prints them.

/// Left-aligned columns separated by two spaces, header first.
pub fn render<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = std::array::from_fn(|i| header[i].chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let header = ["NAME", "IP"].map(String::from);
        let rows = [
            ["server".to_string(), "10.199.0.2".to_string()],
            ["c".to_string(), "10.199.0.3".to_string()],
        ];
        assert_eq!(
            render(&header, &rows),
            "NAME    IP\nserver  10.199.0.2\nc       10.199.0.3\n"
        );
    }
}
