//! What the sidecars saw, read from each proxy's `/metrics`, as one table.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::local::ADMIN_PORT;
use crate::metrics::Metrics;
use crate::probe::http_get;
use crate::state::PodRecord;
use crate::table;

/// One pod's metrics, fetched from `http://POD_IP:4191/metrics`.
pub struct PodMetrics {
    pub pod: PodRecord,
    pub metrics: Metrics,
}

pub fn fetch(pod: &PodRecord) -> std::io::Result<PodMetrics> {
    let admin = SocketAddr::from((pod.ip, ADMIN_PORT));
    let response = http_get(admin, "/metrics", Duration::from_secs(2))?;
    Ok(PodMetrics {
        pod: pod.clone(),
        metrics: Metrics::parse(&response.body),
    })
}

/// The table: one row per pod and direction that carried traffic (at least one row
/// per pod), then when each pod's certificate expires.
pub fn render(pods: &[PodMetrics]) -> String {
    let header = [
        "POD",
        "IDENTITY",
        "DIRECTION",
        "CONNECTIONS",
        "BYTES IN",
        "BYTES OUT",
        "TLS OK",
        "TLS FAILED",
        "PEER (VERIFIED)",
    ]
    .map(String::from);
    let mut rows = Vec::new();
    for PodMetrics { pod, metrics } in pods {
        let mut directions: Vec<&str> = ["inbound", "outbound"]
            .into_iter()
            .filter(|d| metrics.sum("tcp_open_total", &[("direction", d), ("peer", "src")]) > 0.0)
            .collect();
        if directions.is_empty() {
            directions.push("outbound");
        }
        for direction in directions {
            rows.push(row(pod, metrics, direction));
        }
    }
    let mut text = table::render(&header, &rows);
    text.push_str(
        "\nBYTES IN: read from the connection's caller (the app for outbound, the peer sidecar for inbound); BYTES OUT: written back to it.\n",
    );
    for PodMetrics { pod, metrics } in pods {
        if let Some(expiry) = metrics.first("identity_cert_expiration_timestamp_seconds") {
            text.push_str(&format!(
                "{}'s certificate ({}) expires in {}.\n",
                pod.name,
                pod.identity,
                remaining(expiry)
            ));
        }
    }
    text
}

fn row(pod: &PodRecord, metrics: &Metrics, direction: &str) -> [String; 9] {
    // The connections the proxy accepted (`peer="src"`): the app's own outbound, the
    // callers' inbound. Those it opened onwards carry the same requests again.
    let d = [("direction", direction), ("peer", "src")];
    let count = |name: &str| format_count(metrics.sum(name, &d));
    let failed = metrics.sum_where("tls_handshakes_total", |s| {
        s.label("direction") == Some(direction) && s.label("outcome") != Some("ok")
    });
    // The caller's identity as the server verified it on the accepted connection
    // (inbound), or the server's as the client verified it on the one it opened
    // (outbound).
    let (peer_label, end) = if direction == "inbound" {
        ("client_id", "src")
    } else {
        ("server_id", "dst")
    };
    let peers = metrics.label_values(
        "tcp_open_total",
        peer_label,
        &[("direction", direction), ("peer", end)],
    );
    let peers = if peers.is_empty() {
        "-".to_string()
    } else {
        peers.into_iter().collect::<Vec<_>>().join(", ")
    };
    [
        pod.name.clone(),
        pod.identity.clone(),
        direction.to_string(),
        count("tcp_open_total"),
        count("tcp_read_bytes_total"),
        count("tcp_write_bytes_total"),
        format_count(metrics.sum(
            "tls_handshakes_total",
            &[("direction", direction), ("outcome", "ok")],
        )),
        format_count(failed),
        peers,
    ]
}

fn format_count(value: f64) -> String {
    format!("{value:.0}")
}

fn remaining(expiry_unix: f64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let left = (expiry_unix - now).max(0.0) as u64;
    format!("{}h {:02}m", left / 3600, left % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, sa: &str) -> PodRecord {
        PodRecord {
            name: name.into(),
            namespace: "demo".into(),
            service_account: sa.into(),
            identity: format!("spiffe://cluster.local/ns/demo/sa/{sa}"),
            ip: [10, 199, 1, 2].into(),
            netns: format!("trellisdemo-{name}"),
            host_veth: "trellisdemov2".into(),
            ports: vec![],
            command: vec![],
            service: None,
            phase: crate::state::Phase::Ready,
        }
    }

    #[test]
    fn the_server_row_shows_the_client_identity_it_verified() {
        let server = Metrics::parse(
            r#"tcp_open_total{direction="inbound",peer="src",tls="true",client_id="spiffe://cluster.local/ns/demo/sa/client",server_id=""} 1
tcp_open_total{direction="inbound",peer="dst",tls="false",client_id="",server_id=""} 1
tcp_read_bytes_total{direction="inbound",peer="src"} 155
tcp_write_bytes_total{direction="inbound",peer="src"} 155
tcp_read_bytes_total{direction="inbound",peer="dst"} 99
tcp_write_bytes_total{direction="inbound",peer="dst"} 99
tls_handshakes_total{direction="inbound",outcome="ok"} 1
"#,
        );
        let client = Metrics::parse(
            r#"tcp_open_total{direction="outbound",peer="src",tls="false",client_id="",server_id=""} 1
tcp_open_total{direction="outbound",peer="dst",tls="true",client_id="",server_id="spiffe://cluster.local/ns/demo/sa/server"} 1
tls_handshakes_total{direction="outbound",outcome="ok"} 1
tls_handshakes_total{direction="outbound",outcome="wrong_identity"} 2
"#,
        );
        let text = render(&[
            PodMetrics {
                pod: pod("server", "server"),
                metrics: server,
            },
            PodMetrics {
                pod: pod("client", "client"),
                metrics: client,
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("POD"), "{text}");
        let server_row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            server_row,
            [
                "server",
                "spiffe://cluster.local/ns/demo/sa/server",
                "inbound",
                "1",
                "155",
                "155",
                "1",
                "0",
                "spiffe://cluster.local/ns/demo/sa/client"
            ]
        );
        let client_row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            client_row[2..],
            [
                "outbound",
                "1",
                "0",
                "0",
                "1",
                "2",
                "spiffe://cluster.local/ns/demo/sa/server"
            ]
        );
    }
}
