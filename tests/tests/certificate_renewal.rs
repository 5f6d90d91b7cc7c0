//! A sidecar renews its certificate before it expires, and a connection open across
//! the renewal keeps working.
//!
//! The controller here issues certificates that last 20 seconds instead of a day, so
//! both sidecars renew at 70 % of that, about 14 seconds in. The client app holds one
//! connection to the echo app in "server" from before the renewal until after the
//! certificates it was opened under have expired; then it opens a second one, whose
//! handshake can only have used the renewed certificates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trellis_tests::TwoPods;
use trellis_tests::{MeshPod, host_can_run_pods, round_trip, wait_until};

const APP_PORT: u16 = 7070;
const CERT_LIFETIME: &str = "20s";
/// More than a lifetime: a renewal and the first certificates' expiry both fall in it.
const LIFETIME_AND_MARGIN: Duration = Duration::from_secs(30);

#[test]
fn a_sidecar_renews_its_certificate_and_a_connection_open_across_the_renewal_keeps_working()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let TwoPods {
        echo,
        client,
        server,
        mesh,
        target,
    } = TwoPods::start(&["--cert-lifetime", CERT_LIFETIME], &[], APP_PORT)?;

    // The app opens a connection under the first certificates and uses it.
    let first_expiry = [cert_expiry(&server)?, cert_expiry(&client)?];
    let mut conn = client.connect(target)?;
    assert_eq!(
        round_trip(&mut conn, "before the renewal\n")?,
        "before the renewal\n"
    );

    // 1. Both sidecars get a second certificate, which expires later than the first.
    for (pod, first) in [(&server, first_expiry[0]), (&client, first_expiry[1])] {
        let renewed = wait_until(LIFETIME_AND_MARGIN, || {
            pod.metrics().is_ok_and(|m| {
                m.sum("identity_certify_requests_total", &[("outcome", "ok")]) >= 2.0
                    && m.sum("identity_cert_expiration_timestamp_seconds", &[]) > first
            })
        });
        assert!(
            renewed,
            "the sidecar of {} did not renew its certificate:\n{}\n{}",
            pod.name,
            pod.metrics().map(|m| m.text).unwrap_or_default(),
            pod.proxy_log()
        );
    }

    // 2. The controller issued them: a new certificate (serial) per identity.
    let log = mesh.controller_log();
    for pod in [&server, &client] {
        let serials = mesh.serials_issued(&pod.identity);
        assert!(
            serials.len() >= 2,
            "the controller logged {} distinct serial(s) for {}:\n{log}",
            serials.len(),
            pod.identity
        );
    }

    // 3. The first certificates expire; the connection opened under them still echoes.
    let last_expiry = first_expiry[0].max(first_expiry[1]);
    assert!(
        wait_until(LIFETIME_AND_MARGIN, || unix_now() > last_expiry + 1.0),
        "the first certificates never expired"
    );
    assert_eq!(
        round_trip(&mut conn, "after the renewal\n")?,
        "after the renewal\n",
        "the connection opened before the renewal stopped echoing"
    );

    // 4. A new connection handshakes, necessarily with the renewed certificates, and
    // reaches the app.
    let handshakes_before = inbound_handshakes(&server)?;
    let mut fresh = client.connect(target)?;
    assert_eq!(
        round_trip(&mut fresh, "a new connection\n")?,
        "a new connection\n"
    );
    assert_eq!(
        inbound_handshakes(&server)?,
        handshakes_before + 1.0,
        "the new connection did not make a fresh handshake"
    );
    assert_eq!(echo.connections(), 2, "the app saw the two connections");
    Ok(())
}

/// The expiry of the certificate the sidecar holds, in Unix seconds.
fn cert_expiry(pod: &MeshPod) -> anyhow::Result<f64> {
    let expiry = pod
        .metrics()?
        .sum("identity_cert_expiration_timestamp_seconds", &[]);
    anyhow::ensure!(
        expiry > 0.0,
        "the sidecar of {} has no certificate",
        pod.name
    );
    Ok(expiry)
}

fn inbound_handshakes(server: &MeshPod) -> anyhow::Result<f64> {
    Ok(server.metrics()?.sum(
        "tls_handshakes_total",
        &[("direction", "inbound"), ("outcome", "ok")],
    ))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}
