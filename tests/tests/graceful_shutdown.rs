//! SIGTERM drains a sidecar: the connections it carries may finish, new ones are
//! refused, and the proxy exits 0; a connection that outlives the drain deadline is
//! cut, and the proxy still exits 0.
//!
//! This is what the kubelet does when a pod is deleted: it sends SIGTERM and waits
//! for the grace period. Here the server pod's sidecar gets it while the client app
//! holds a connection through it to the echo app.

use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::process::ExitStatus;
use std::time::Duration;

use trellis_tests::TwoPods;
use trellis_tests::{
    EchoServer, Mesh, MeshPod, ends_unanswered, host_can_run_pods, http_get, round_trip, wait_until,
};

const APP_PORT: u16 = 7070;
/// Ample for a signal to be handled, a log line written or a process to end.
const SETTLE: Duration = Duration::from_secs(5);

/// A client app holding a connection through the mesh to the echo app in a server
/// pod, whose sidecar drains for at most `drain`.
struct Scene {
    // Declared in the order they are torn down: the apps, the pods, then the mesh.
    conn: TcpStream,
    echo: EchoServer,
    client: MeshPod,
    server: MeshPod,
    _mesh: Mesh,
    target: SocketAddrV4,
    drain: Duration,
}

impl Scene {
    fn start(drain: Duration) -> anyhow::Result<Scene> {
        let drain_timeout = format!("{}s", drain.as_secs());
        let TwoPods {
            echo,
            client,
            server,
            mesh,
            target,
        } = TwoPods::start(&[], &["--drain-timeout", &drain_timeout], APP_PORT)?;
        let mut conn = client.connect(target)?;
        assert_eq!(
            round_trip(&mut conn, "before SIGTERM\n")?,
            "before SIGTERM\n"
        );
        Ok(Scene {
            conn,
            echo,
            client,
            server,
            _mesh: mesh,
            target,
            drain,
        })
    }

    /// Waits, for longer than the drain may last, for the server's sidecar to exit:
    /// how it exited, or a failure message with its log.
    fn server_exit(&mut self) -> Result<ExitStatus, String> {
        self.server
            .wait_for_sidecar_exit(self.drain + SETTLE)
            .ok_or_else(|| format!("the sidecar did not exit\n{}", self.server.proxy_log()))
    }
}

#[test]
fn sigterm_lets_open_connections_finish_refuses_new_ones_and_exits_zero() -> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    let mut scene = Scene::start(Duration::from_secs(10))?;
    scene.server.terminate_sidecar()?;

    // 1. The sidecar is draining: its admin port stays up and /ready says 503, so no
    // new traffic is sent its way, and its log says what it waits for.
    let admin = scene.server.admin();
    let not_ready = wait_until(SETTLE, || {
        http_get(admin, "/ready").is_ok_and(|(status, _)| status == 503)
    });
    assert!(
        not_ready,
        "/ready did not turn 503\n{}",
        scene.server.proxy_log()
    );
    let draining = wait_until(SETTLE, || {
        scene
            .server
            .proxy_log_text()
            .contains("draining open connections")
    });
    assert!(
        draining,
        "the sidecar did not say it drains\n{}",
        scene.server.proxy_log()
    );

    // 2. The open connection still carries data both ways.
    assert_eq!(
        round_trip(&mut scene.conn, "while draining\n")?,
        "while draining\n",
        "the open connection stopped echoing during the drain"
    );

    // 3. A new connection never reaches the app: nothing listens for the mesh in the
    // server pod any more.
    let mut late = scene.client.connect(scene.target)?;
    if let Err(what) = ends_unanswered(&mut late, "too late?\n") {
        panic!("a connection made after SIGTERM was served: {what}");
    }
    assert_eq!(
        scene.echo.connections(),
        1,
        "the app saw a second connection"
    );

    // 4. The app closes its connection; with nothing left to drain, the sidecar exits 0
    // without waiting for the deadline.
    scene.conn.shutdown(Shutdown::Both)?;
    assert_eq!(scene.server_exit().map(|s| s.code()), Ok(Some(0)));
    let log = scene.server.proxy_log_text();
    assert!(
        !log.contains("drain deadline passed"),
        "the drain waited for its deadline although the connection had closed:\n{log}"
    );
    Ok(())
}

#[test]
fn a_connection_that_outlives_the_drain_deadline_is_cut_and_the_proxy_still_exits_zero()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[]) {
        return Ok(());
    }
    // The app keeps its connection open through the whole drain.
    let mut scene = Scene::start(Duration::from_secs(2))?;
    scene.server.terminate_sidecar()?;

    // 1. The sidecar gives up on the connection at the deadline and exits 0.
    assert_eq!(scene.server_exit().map(|s| s.code()), Ok(Some(0)));
    let log = scene.server.proxy_log_text();
    assert!(
        log.contains("drain deadline passed"),
        "the sidecar exited without reaching its drain deadline:\n{log}"
    );

    // 2. The app sees its connection end, and nothing more is echoed.
    if let Err(what) = ends_unanswered(&mut scene.conn, "still there?\n") {
        panic!("the connection outlived the drain deadline: {what}");
    }
    Ok(())
}
