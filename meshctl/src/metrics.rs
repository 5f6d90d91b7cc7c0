//! Reading a proxy's `/metrics` (Prometheus text) leniently.
//!
//! The demo only needs sums of a few counters over matching labels, so this parses
//! `name{label="value",...} number` lines, skips everything else (comments, `# EOF`,
//! lines it does not understand), and never fails.

use std::collections::BTreeSet;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// All samples of an exposition.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        Metrics {
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The sum of `name` over samples whose labels satisfy `keep`.
    pub fn sum_where(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && keep(s))
            .map(|s| s.value)
            // An empty float sum is -0.0, which would print as "-0".
            .fold(0.0, |total, value| total + value)
    }

    /// The sum of `name` over samples carrying every `(label, value)` in `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum_where(name, |s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
    }

    /// The distinct non-empty values of `label` among `name`'s samples with a non-zero
    /// value that carry every `(label, value)` in `labels`.
    pub fn label_values(
        &self,
        name: &str,
        label: &str,
        labels: &[(&str, &str)],
    ) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.value > 0.0)
            .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .filter_map(|s| s.label(label))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The first value of `name`, if any sample of it exists.
    pub fn first(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = s.split_once('=')?;
        let mut chars = after_key.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &after_key[1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP tcp_open TCP connections accepted.
# TYPE tcp_open counter
tcp_open_total{direction="inbound",tls="true",client_id="spiffe://cluster.local/ns/demo/sa/client",server_id=""} 2
tcp_open_total{direction="outbound",tls="true",client_id="",server_id="spiffe://cluster.local/ns/demo/sa/server"} 3
tcp_open_total{direction="inbound",tls="false",client_id="",server_id=""} 1
tls_handshakes_total{direction="outbound",outcome="ok"} 3
tls_handshakes_total{direction="outbound",outcome="wrong_identity"} 4
tcp_read_bytes_total{direction="inbound"} 1024
odd_total{note="a \"quoted\" value, with a comma"} 7 1700000000
identity_cert_expiration_timestamp_seconds 1700086400
garbage line
# EOF
"#;

    #[test]
    fn counters_sum_over_the_matching_labels() {
        let m = Metrics::parse(EXPOSITION);
        assert_eq!(m.sum("tcp_open_total", &[("direction", "inbound")]), 3.0);
        assert_eq!(
            m.sum(
                "tcp_open_total",
                &[("direction", "inbound"), ("tls", "true")]
            ),
            2.0
        );
        assert_eq!(m.sum("tcp_open_total", &[]), 6.0);
        assert_eq!(
            m.sum("tcp_read_bytes_total", &[("direction", "outbound")]),
            0.0
        );
        let failed = m.sum_where("tls_handshakes_total", |s| s.label("outcome") != Some("ok"));
        assert_eq!(failed, 4.0);
        assert_eq!(
            m.sum("odd_total", &[("note", "a \"quoted\" value, with a comma")]),
            7.0
        );
        assert_eq!(
            m.first("identity_cert_expiration_timestamp_seconds"),
            Some(1_700_086_400.0)
        );
    }

    #[test]
    fn the_callers_a_server_saw_are_read_from_the_client_id_label() {
        let m = Metrics::parse(EXPOSITION);
        let seen = m.label_values("tcp_open_total", "client_id", &[("direction", "inbound")]);
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["spiffe://cluster.local/ns/demo/sa/client"]
        );
    }
}
