//! The load generator against real sockets on 127.0.0.1: the built-in backends, a
//! server that stalls once, and the command line as a user types it.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use trellis_bench::load::{self, LoadConfig, LoadReport, Pacing, Protocol, Target};
use trellis_bench::serve::{self, Backend};

/// The built-in HTTP and gRPC backends on ephemeral ports, on a runtime of their own
/// that lives as long as the test process.
fn backends(response_size: usize) -> (SocketAddr, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
            let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
            let addrs = (
                http.local_addr().expect("addr"),
                grpc.local_addr().expect("addr"),
            );
            let backend = Backend { response_size };
            tokio::spawn(serve::serve_http(http, backend));
            tokio::spawn(serve::serve_grpc(grpc, backend));
            tx.send(addrs).expect("report addresses");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("backends started")
}

fn config(url: &str, protocol: Protocol, rate: f64, seconds: f64) -> LoadConfig {
    LoadConfig {
        target: Target::parse(url).expect("valid url"),
        protocol,
        pacing: Pacing::Rate(rate),
        duration: Duration::from_secs_f64(seconds),
        connections: 4,
        streams: 1,
        new_connection_per_request: false,
        body_size: 0,
        response_size: None,
        timeout: Duration::from_secs(5),
        threads: 1,
        keep_histogram: false,
    }
}

fn assert_clean(report: &LoadReport, expected: u64) {
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    assert_eq!(report.requests, expected, "{report}");
    assert!(report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms);
    assert!(report.p99_ms <= report.max_ms);
}

#[test]
fn every_request_of_an_open_loop_http1_run_is_sent_answered_and_counted() {
    let (http, _) = backends(13);
    let report = load::run(config(
        &format!("http://{http}/"),
        Protocol::Http1,
        400.0,
        1.0,
    ))
    .expect("load run");
    assert_clean(&report, 400);
    assert_eq!(report.bytes_received, 400 * 13);
    assert!((report.rate - 400.0).abs() < 40.0, "rate {}", report.rate);
}

#[test]
fn h2c_and_grpc_runs_multiplex_streams_over_few_connections() {
    let (http, grpc) = backends(100);
    let mut h2 = config(&format!("http://{http}/"), Protocol::Http2, 300.0, 1.0);
    h2.connections = 2;
    h2.streams = 4;
    assert_clean(&load::run(h2).expect("h2c run"), 300);

    let mut unary = config(&format!("http://{grpc}/"), Protocol::Grpc, 300.0, 1.0);
    unary.connections = 2;
    unary.streams = 4;
    unary.body_size = 64;
    unary.response_size = Some(1_000);
    let report = load::run(unary).expect("grpc run");
    assert_clean(&report, 300);
    // Each answer is a gRPC frame: 5 bytes of prefix, then the encoded payload.
    assert!(
        report.bytes_received >= 300 * 1_000,
        "{}",
        report.bytes_received
    );
}

#[test]
fn a_new_connection_per_request_still_answers_every_request() {
    let (http, _) = backends(13);
    let mut fresh = config(&format!("http://{http}/"), Protocol::Http1, 200.0, 1.0);
    fresh.new_connection_per_request = true;
    assert_clean(&load::run(fresh).expect("run"), 200);
}

#[test]
fn large_answers_are_read_to_the_last_byte_and_reported_as_throughput() {
    let (http, _) = backends(13);
    let mut bulk = config(&format!("http://{http}/"), Protocol::Http1, 1.0, 1.0);
    bulk.pacing = Pacing::Max;
    bulk.connections = 2;
    bulk.response_size = Some(1 << 20);
    let report = load::run(bulk).expect("run");
    assert_eq!(report.errors, 0);
    assert!(report.requests > 0);
    assert_eq!(report.bytes_received, report.requests << 20);
    assert!(report.throughput_mb_s > 0.0 && report.target_rate.is_none());
}

/// An HTTP/1.1 server that answers at once, except request number `stall_at`, which it
/// holds for `stall` first: a GC pause, as the wrk2 README tells it.
async fn stalling_server(listener: TcpListener, stall_at: u64, stall: Duration) {
    let mut served = 0u64;
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            buffer.drain(..end + 4);
            served += 1;
            if served == stall_at {
                tokio::time::sleep(stall).await;
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn a_server_stall_shows_in_the_percentiles_as_every_request_that_waited_for_it() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            stalling_server(listener, 100, Duration::from_millis(300)).await;
        });
    });
    let addr = rx.recv().expect("server started");
    let mut one_connection = config(&format!("http://{addr}/"), Protocol::Http1, 1_000.0, 1.0);
    one_connection.connections = 1;
    let report = load::run(one_connection).expect("run");

    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.requests, 1_000);
    // ~300 requests were due while the server stalled; timed from when they were due,
    // the top decile is hundreds of milliseconds...
    assert!(report.p90_ms > 100.0, "{report}");
    assert!(report.max_ms >= 300.0, "{report}");
    // ...while timing from the actual send (coordinated omission) hides all but one.
    assert!(report.service_p99_ms < 50.0, "{report}");
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
}

#[test]
fn the_command_line_prints_one_json_object_with_the_documented_fields() {
    let (http, _) = backends(13);
    let output = bench()
        .args([
            "load",
            &format!("http://{http}/"),
            "--rate",
            "100",
            "--duration",
            "1s",
        ])
        .args(["--connections", "2", "--json"])
        .output()
        .expect("run trellis-bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    for field in ["p50_ms", "p99_ms", "p999_ms", "max_ms", "rate"] {
        assert!(json[field].is_f64(), "{field} missing in {json}");
    }
    assert_eq!(json["requests"], 100);
    assert_eq!(json["errors"], 0);
}

#[test]
fn bad_arguments_are_refused_with_the_flag_and_its_value() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["load", "http://127.0.0.1:9/", "--rate", "0"],
            "--rate = 0",
        ),
        (
            &[
                "load",
                "http://127.0.0.1:9/",
                "--rate",
                "10",
                "--streams",
                "4",
            ],
            "--streams = 4",
        ),
        (
            &["load", "ftp://127.0.0.1:9/", "--rate", "10"],
            "only http://",
        ),
        (&["load", "http://127.0.0.1:9/"], "--rate"),
        (
            &["load", "http://127.0.0.1:9/", "--rate", "10", "--max"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        let output = bench().args(args).output().expect("run trellis-bench");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_target_that_refuses_connections_is_an_error_not_an_empty_report() {
    // Bound and dropped: nothing listens there any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let error = load::run(config(
        &format!("http://{addr}/"),
        Protocol::Http1,
        50.0,
        0.2,
    ))
    .expect_err("nothing listens");
    assert!(
        error.to_string().contains("is the server running"),
        "{error}"
    );
}
