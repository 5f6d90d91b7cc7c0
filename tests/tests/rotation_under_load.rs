//! Certificates rotate under load: across two renewals of both sidecars, no request
//! fails and no connection is dropped.
//!
//! The controller issues certificates that last 20 seconds, so each sidecar renews at
//! 70 % of that, about every 14 seconds. While both sidecars go through two renewals,
//! the client app keeps the mesh busy in the two ways an app does: a few long-lived
//! connections, opened under the first certificates, that echo a message every 100 ms
//! for the whole story; and a steady stream of new connections, one every 50 ms, each
//! making one round trip and closing. Every one of those round trips must come back
//! intact.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trellis_tests::TwoPods;
use trellis_tests::{MeshPod, host_can_run_pods, round_trip, wait_until};

const APP_PORT: u16 = 7070;
const CERT_LIFETIME: &str = "20s";
/// Three certificates per sidecar: the first and two renewals.
const CERTIFICATES: f64 = 3.0;
/// Two renewals fall about 28 seconds in; ample margin on a loaded machine.
const TWO_RENEWALS: Duration = Duration::from_secs(60);
const LONG_LIVED: usize = 4;
const ECHO_EVERY: Duration = Duration::from_millis(100);
const CONNECT_EVERY: Duration = Duration::from_millis(50);
/// Far fewer than the ~28 seconds of traffic at these rates would make, yet enough
/// that the traffic cannot have missed a renewal.
const PLAUSIBLE_ECHOES_PER_CONNECTION: usize = 100;
const PLAUSIBLE_NEW_CONNECTIONS: usize = 100;
/// The failures quoted in a report; all of them are counted.
const QUOTED: usize = 5;

#[test]
fn certificates_rotate_twice_under_load_without_a_failed_request_or_a_dropped_connection()
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

    // The long-lived connections are opened under the first certificates, so that
    // they must live through both renewals.
    for pod in [&server, &client] {
        assert_eq!(
            certificates(pod),
            1.0,
            "the sidecar of {} renewed before the traffic started; the story needs the \
             connections opened under its first certificate",
            pod.name
        );
    }
    let conns = (0..LONG_LIVED)
        .map(|_| client.connect(target))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // 1. Traffic runs until both sidecars hold their third certificate.
    let stop = &AtomicBool::new(false);
    let (long_lived, new_connections) = std::thread::scope(|scope| {
        let long_lived: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(n, conn)| scope.spawn(move || echo_until_stopped(n, conn, stop)))
            .collect();
        let new_connections = scope.spawn(|| connect_until_stopped(&client, target, stop));
        // Whether it happened is asserted below, once the traffic has stopped.
        let _ = wait_until(TWO_RENEWALS, || {
            [&server, &client]
                .iter()
                .all(|pod| certificates(pod) >= CERTIFICATES)
        });
        // Every thread stops before any assertion can unwind through the scope.
        stop.store(true, Ordering::SeqCst);
        let long_lived: Vec<Tally> = long_lived
            .into_iter()
            .map(|thread| thread.join().expect("a long-lived connection's thread"))
            .collect();
        let new_connections = new_connections.join().expect("the new connections' thread");
        (long_lived, new_connections)
    });
    for pod in [&server, &client] {
        assert!(
            certificates(pod) >= CERTIFICATES,
            "the sidecar of {} was issued {} certificate(s), not {CERTIFICATES}:\n{}",
            pod.name,
            certificates(pod),
            pod.proxy_log()
        );
    }

    // 2. The controller issued them: three certificates (serials) per identity.
    let log = mesh.controller_log();
    for pod in [&server, &client] {
        let serials = mesh.serials_issued(&pod.identity);
        assert!(
            serials.len() >= 3,
            "the controller logged {} distinct serial(s) for {}:\n{log}",
            serials.len(),
            pod.identity
        );
    }

    // 3. Every long-lived connection echoed every message, through both renewals.
    for (n, tally) in long_lived.iter().enumerate() {
        eprintln!("long-lived connection {n}: {tally}");
        assert!(
            tally.failures == 0,
            "long-lived connection {n} failed: {tally}\n{}",
            client.proxy_log()
        );
        assert!(
            tally.ok >= PLAUSIBLE_ECHOES_PER_CONNECTION,
            "long-lived connection {n} made only {} round trips",
            tally.ok
        );
    }

    // 4. Every new connection reached the app and echoed.
    eprintln!("new connections: {new_connections}");
    assert!(
        new_connections.failures == 0,
        "new connections failed: {new_connections}\n{}",
        client.proxy_log()
    );
    assert!(
        new_connections.ok >= PLAUSIBLE_NEW_CONNECTIONS,
        "only {} new connections were made",
        new_connections.ok
    );
    assert_eq!(
        echo.connections(),
        LONG_LIVED + new_connections.ok,
        "the app did not see exactly the connections the client made"
    );

    // 5. Each of those connections crossed the mesh over its own mTLS handshake, and
    // neither sidecar saw a failed handshake or a connection end badly.
    let handshakes = server.metrics()?.sum(
        "tls_handshakes_total",
        &[("direction", "inbound"), ("outcome", "ok")],
    );
    assert_eq!(
        handshakes,
        (LONG_LIVED + new_connections.ok) as f64,
        "the server's sidecar did not accept each connection over mTLS"
    );
    for pod in [&server, &client] {
        let metrics = pod.metrics()?;
        for (name, labels) in [
            ("tls_handshakes_total", [("outcome", "!ok")]),
            ("tcp_close_total", [("outcome", "!ok")]),
        ] {
            assert_eq!(
                metrics.sum(name, &labels),
                0.0,
                "the sidecar of {} counts failures in {name}:\n{}",
                pod.name,
                metrics.text
            );
        }
    }
    Ok(())
}

/// Round trips that came back intact, and those that did not (with the first few).
#[derive(Default)]
struct Tally {
    ok: usize,
    failures: usize,
    quoted: Vec<String>,
}

impl Tally {
    fn record(&mut self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.ok += 1,
            Err(failure) => {
                self.failures += 1;
                if self.quoted.len() < QUOTED {
                    self.quoted.push(failure);
                }
            }
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ok, {} failed", self.ok, self.failures)?;
        for failure in &self.quoted {
            write!(f, "\n  {failure}")?;
        }
        Ok(())
    }
}

/// Echoes a numbered message on `conn` every 100 ms until `stop`; a failed round trip
/// ends it, since the connection cannot be trusted afterwards.
fn echo_until_stopped(n: usize, mut conn: std::net::TcpStream, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let message = format!("long-lived connection {n}, message {i}\n");
        let outcome = match round_trip(&mut conn, &message) {
            Ok(reply) if reply == message => Ok(()),
            Ok(reply) => Err(format!("message {i}: {message:?} came back as {reply:?}")),
            Err(e) => Err(format!("message {i}: {e} ({:?})", e.kind())),
        };
        let failed = outcome.is_err();
        tally.record(outcome);
        if failed {
            break;
        }
        std::thread::sleep(ECHO_EVERY);
    }
    tally
}

/// Opens a new connection every 50 ms until `stop`, makes one round trip on it and
/// closes it.
fn connect_until_stopped(client: &MeshPod, target: SocketAddrV4, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let message = format!("new connection {i}\n");
        let outcome = match client.connect(target) {
            Ok(mut conn) => match round_trip(&mut conn, &message) {
                Ok(reply) if reply == message => Ok(()),
                Ok(reply) => Err(format!(
                    "connection {i}: {message:?} came back as {reply:?}"
                )),
                Err(e) => Err(format!("connection {i}: {e} ({:?})", e.kind())),
            },
            Err(e) => Err(format!("connection {i}: {e:#}")),
        };
        tally.record(outcome);
        std::thread::sleep(CONNECT_EVERY);
    }
    tally
}

/// How many certificates the sidecar was issued so far.
fn certificates(pod: &MeshPod) -> f64 {
    pod.metrics().map_or(0.0, |m| {
        m.sum("identity_certify_requests_total", &[("outcome", "ok")])
    })
}
