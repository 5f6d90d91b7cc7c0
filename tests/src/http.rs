//! Bare HTTP/1.0 GETs (for the admin port) and Prometheus counter sums.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `GET path` and the response's status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {raw:?}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    Ok((status, body.to_string()))
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus text exposition, for summing counters over matching labels.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
}

impl Metrics {
    /// Fetches `http://addr/metrics`.
    pub fn fetch(addr: SocketAddr) -> anyhow::Result<Metrics> {
        let (status, text) = http_get(addr, "/metrics")?;
        anyhow::ensure!(
            status == 200,
            "GET http://{addr}/metrics answered {status}: {text}"
        );
        Ok(Metrics { text })
    }

    /// The sum of `name` over samples whose labels satisfy every `(label, value)`;
    /// a value starting with `!` means "anything but".
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                (metric == name && labels_match(label_text, labels))
                    .then(|| value.parse::<f64>().ok())?
            })
            .fold(0.0, |total, value| total + value)
    }
}

/// Label values in our metrics never contain `",`, so a split on it is enough here.
fn labels_match(label_text: &str, wanted: &[(&str, &str)]) -> bool {
    let labels: Vec<(&str, &str)> = label_text
        .split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim(), value.trim_matches('"')))
        })
        .collect();
    wanted.iter().all(|(key, value)| {
        let actual = labels.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        match value.strip_prefix('!') {
            Some(not) => actual.is_some_and(|a| a != not),
            None => actual == Some(value),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_matching_and_excluded_labels() {
        let m = Metrics {
            text: r#"# TYPE tls_handshakes counter
tls_handshakes_total{direction="outbound",outcome="ok"} 2
tls_handshakes_total{direction="outbound",outcome="identity"} 3
tls_handshakes_total{direction="inbound",outcome="handshake"} 1
tcp_open_total{direction="inbound",tls="true",client_id="spiffe://cluster.local/ns/a/sa/b",server_id=""} 4
"#
            .into(),
        };
        assert_eq!(
            m.sum("tls_handshakes_total", &[("direction", "outbound")]),
            5.0
        );
        assert_eq!(
            m.sum(
                "tls_handshakes_total",
                &[("direction", "outbound"), ("outcome", "!ok")]
            ),
            3.0
        );
        assert_eq!(
            m.sum(
                "tcp_open_total",
                &[("client_id", "spiffe://cluster.local/ns/a/sa/b")]
            ),
            4.0
        );
        assert_eq!(m.sum("tcp_open_total", &[("server_id", "")]), 4.0);
        assert_eq!(m.sum("tcp_close_total", &[]), 0.0);
    }
}
