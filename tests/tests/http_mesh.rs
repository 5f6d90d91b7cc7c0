//! HTTP through the sidecars, as curl sees it.
//!
//! A "client" pod runs curl as its app; a "server" pod runs an HTTP app (HTTP/1.1 and
//! h2c on one port) that answers with its name and says which protocol reached it.
//! Between them, the client's sidecar carries each request over a pooled HTTP/2
//! connection over mutual TLS to the server's sidecar (one per worker thread), which hands it to the app in
//! the protocol the client spoke. Neither app knows about the mesh.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddrV4;
use std::time::Duration;

use trellis_tests::{
    CurlRun, HttpApp, INBOUND_PORT, MeshPod, Metrics, PodPair, curl_in, curl_on_host,
    host_can_run_pods, pattern, pattern_break, wait_until,
};

const APP_PORT: u16 = 7070;
const CURL: (&str, &str) = ("curl", "curl");
/// A body that needs many windows, frames and buffers to get across.
const BIG_BODY: usize = 100 * 1024 * 1024;
/// The most resident memory a sidecar may ever have held (VmHWM), even while a
/// [`BIG_BODY`] streams through it: a proxy that buffered the body would hold more.
const SIDECAR_MEMORY_BOUND: u64 = 64 * 1024 * 1024;
const CONCURRENT: usize = 100;
/// Worker threads of the client's sidecar where the test counts its connections.
const WORKERS: usize = 2;
/// Ample for 100 requests to reach the app, or a counter to catch up.
const SETTLE: Duration = Duration::from_secs(30);

/// The two pods and the HTTP app, "server", on [`APP_PORT`] of the server pod.
fn start() -> anyhow::Result<(PodPair, HttpApp)> {
    start_with(&[])
}

fn start_with(proxy_args: &[&str]) -> anyhow::Result<(PodPair, HttpApp)> {
    let pods = PodPair::start(proxy_args)?;
    let app = HttpApp::start_in(pods.server.netns(), APP_PORT, "server")?;
    Ok((pods, app))
}

fn url(target: SocketAddrV4, path: &str) -> String {
    format!("http://{target}{path}")
}

/// Fails with everything curl and the client's sidecar said, unless curl succeeded.
fn succeeded(run: CurlRun, client: &MeshPod) -> anyhow::Result<CurlRun> {
    anyhow::ensure!(
        run.exit_code == Some(0) && run.transfers.iter().all(|t| t.status != 0),
        "curl failed ({:?}): {}\n{}",
        run.exit_code,
        run.stderr,
        client.proxy_log()
    );
    Ok(run)
}

#[test]
fn curl_speaks_http1_through_the_mesh_with_keep_alive_chunked_uploads_and_100_continue()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair { client, mesh, .. } = &pods;
    let who = url(pods.server_at(APP_PORT), "/who");
    let upload = url(pods.server_at(APP_PORT), "/upload");

    // 1. Three requests on one keep-alive connection: curl connects once, each gets
    // the app's answer, and the app was spoken to in HTTP/1.1.
    let run = curl_in(client.netns(), &["--http1.1", &who, &who, &who])?;
    let run = succeeded(run, client)?;
    assert_eq!(run.body(), "server\n".repeat(3));
    for (n, transfer) in run.transfers.iter().enumerate() {
        assert_eq!(transfer.status, 200, "{transfer:?}");
        assert_eq!(transfer.http_version, "1.1", "{transfer:?}");
        assert_eq!(transfer.header("x-app-protocol"), Some("HTTP/1.1"));
        assert_eq!(transfer.num_connects, u64::from(n == 0), "{transfer:?}");
    }

    // 2. A chunked upload arrives whole and in order.
    let body = mesh.dir().join("upload.bin");
    std::fs::write(&body, pattern(1024 * 1024 + 7))?;
    let data = format!("@{}", body.display());
    let chunked = [
        "--http1.1",
        "--verbose",
        "--header",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &upload,
    ];
    let run = succeeded(curl_in(client.netns(), &chunked)?, client)?;
    assert!(
        run.stderr.contains("> Transfer-Encoding: chunked"),
        "curl did not send the body chunked:\n{}",
        run.stderr
    );
    assert_eq!(run.body(), "received 1048583 bytes, pattern intact\n");

    // 3. With `Expect: 100-continue`, curl holds the body back until it hears
    // `100 Continue`; it hears it, and the body arrives.
    let expecting = [
        "--http1.1",
        "--verbose",
        "--header",
        "Expect: 100-continue",
        "--expect100-timeout",
        "60",
        "--data-binary",
        &data,
        &upload,
    ];
    let run = succeeded(curl_in(client.netns(), &expecting)?, client)?;
    assert!(
        run.stderr.contains("< HTTP/1.1 100 Continue"),
        "curl never heard 100 Continue:\n{}",
        run.stderr
    );
    assert_eq!(run.body(), "received 1048583 bytes, pattern intact\n");
    Ok(())
}

#[test]
fn curl_with_http2_prior_knowledge_reaches_the_app_in_http2() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair { client, mesh, .. } = &pods;
    let who = url(pods.server_at(APP_PORT), "/who");
    let body = mesh.dir().join("upload.bin");
    std::fs::write(&body, pattern(1024 * 1024 + 7))?;
    let data = format!("@{}", body.display());

    // One URL a run: curl 7.88 fails a second prior-knowledge request on a reused
    // connection ("Error in the HTTP2 framing layer") even with no mesh in between.
    let run = curl_in(client.netns(), &["--http2-prior-knowledge", &who])?;
    let run = succeeded(run, client)?;
    assert_eq!(run.body(), "server\n");
    let transfer = run.transfer()?;
    assert_eq!(transfer.status, 200, "{transfer:?}");
    assert_eq!(transfer.http_version, "2", "{transfer:?}");
    assert_eq!(transfer.header("x-app-protocol"), Some("HTTP/2.0"));

    let upload = url(pods.server_at(APP_PORT), "/upload");
    let args = ["--http2-prior-knowledge", "--data-binary", &data, &upload];
    let run = succeeded(curl_in(client.netns(), &args)?, client)?;
    assert_eq!(run.transfer()?.http_version, "2");
    assert_eq!(run.body(), "received 1048583 bytes, pattern intact\n");
    Ok(())
}

#[test]
fn a_100_mib_body_streams_through_both_ways_while_each_sidecar_stays_under_64_mib()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair {
        client,
        server,
        mesh,
    } = &pods;

    // 1. Upload: curl streams the file; the app checks every byte as it comes.
    let file = mesh.dir().join("big.bin");
    std::fs::write(&file, pattern(BIG_BODY))?;
    let upload = url(pods.server_at(APP_PORT), "/upload");
    let args = ["--upload-file", &file.display().to_string(), &upload];
    let run = succeeded(curl_in(client.netns(), &args)?, client)?;
    std::fs::remove_file(&file)?;
    assert_eq!(
        run.body(),
        format!("received {BIG_BODY} bytes, pattern intact\n")
    );

    // 2. Download: the app streams it; every byte reaches curl, in order.
    let download = url(pods.server_at(APP_PORT), &format!("/download/{BIG_BODY}"));
    let run = succeeded(curl_in(client.netns(), &[&download])?, client)?;
    assert_eq!(run.stdout.len(), BIG_BODY);
    assert_eq!(pattern_break(&run.stdout, 0), None);

    // 3. Neither sidecar ever held more than the bound: they streamed.
    for pod in [client, server] {
        let peak = pod.sidecar_peak_rss()?;
        eprintln!(
            "the sidecar of {} peaked at {} KiB resident",
            pod.name,
            peak / 1024
        );
        assert!(
            peak < SIDECAR_MEMORY_BOUND,
            "the sidecar of {} peaked at {} MiB resident, over the {} MiB bound",
            pod.name,
            peak / 1024 / 1024,
            SIDECAR_MEMORY_BOUND / 1024 / 1024
        );
    }
    Ok(())
}

#[test]
fn a_hundred_concurrent_http1_requests_share_one_connection_per_worker_between_the_sidecars()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let workers = WORKERS.to_string();
    let (pods, app) = start_with(&["--workers", &workers])?;
    let PodPair { client, server, .. } = &pods;
    let hold = url(pods.server_at(APP_PORT), "/hold");
    let max = CONCURRENT.to_string();
    let mut args = vec![
        "--http1.1",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        &max,
    ];
    args.extend(std::iter::repeat_n(hold.as_str(), CONCURRENT));

    // The app holds every request until the connections have been counted, so all
    // of them are in flight at once.
    let (held, connections, run) = std::thread::scope(|scope| {
        let curl = scope.spawn(|| curl_in(client.netns(), &args));
        let _ = wait_until(SETTLE, || app.waiting() == CONCURRENT);
        let held = app.waiting();
        let connections = server.established(INBOUND_PORT, client.ip);
        app.release();
        (held, connections, curl.join())
    });
    let run = run.map_err(|_| anyhow::anyhow!("the curl thread panicked"))??;
    assert_eq!(
        held,
        CONCURRENT,
        "requests that reached the app at once\n{}\n{}",
        run.stderr,
        client.proxy_log()
    );
    let run = succeeded(run, client)?;

    // curl really made 100 connections, one per request, and each was answered.
    assert_eq!(run.transfers.len(), CONCURRENT);
    assert!(run.transfers.iter().all(|t| t.status == 200));
    let from_curl: u64 = run.transfers.iter().map(|t| t.num_connects).sum();
    assert_eq!(from_curl, CONCURRENT as u64);

    // Between the sidecars, each worker of the client's sidecar carried its share of
    // the app's connections over one connection of its own: the app's connections
    // were spread over all workers, and none opened a second.
    assert_eq!(
        connections?, WORKERS,
        "established connections to the server's inbound port {INBOUND_PORT} from {} \
         while {CONCURRENT} requests were in flight",
        client.ip
    );
    Ok(())
}

#[test]
fn the_app_sees_the_verified_identity_of_its_caller_never_a_spoofed_one() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair { client, .. } = &pods;
    let headers = url(pods.server_at(APP_PORT), "/headers");
    let spoof = "trellis-client-id: spiffe://cluster.local/ns/kube-system/sa/admin";
    let args = ["--header", spoof, headers.as_str()];

    // 1. From the client pod: the app sees the client's own SPIFFE ID, once.
    let run = succeeded(curl_in(client.netns(), &args)?, client)?;
    assert_eq!(
        client_ids(&run.body()),
        [client.identity.as_str()],
        "the headers the app received:\n{}",
        run.body()
    );
    assert_eq!(
        client.identity,
        "spiffe://cluster.local/ns/storefront/sa/web"
    );

    // 2. From outside the mesh, in plaintext: nobody vouches for the caller, so the
    // app sees no identity at all, least of all the claimed one.
    let run = curl_on_host(&args)?;
    anyhow::ensure!(run.exit_code == Some(0), "curl failed: {}", run.stderr);
    assert_eq!(
        client_ids(&run.body()),
        Vec::<&str>::new(),
        "the headers the app received:\n{}",
        run.body()
    );
    Ok(())
}

/// The values of every `trellis-client-id` header in the app's `/headers` answer.
fn client_ids(headers: &str) -> Vec<&str> {
    headers
        .lines()
        .filter_map(|line| line.strip_prefix("trellis-client-id: "))
        .collect()
}

#[test]
fn requests_and_responses_are_counted_by_direction_authority_peer_and_status() -> anyhow::Result<()>
{
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair { client, server, .. } = &pods;
    let target = pods.server_at(APP_PORT);
    let (who, teapot) = (url(target, "/who"), url(target, "/status/418"));

    // One HTTP/1.1 connection with three answered requests and a 418; two h2
    // connections with one answered request each.
    let h1 = ["--http1.1", &who, &who, &who, &teapot];
    let run = succeeded(curl_in(client.netns(), &h1)?, client)?;
    let statuses: Vec<u16> = run.transfers.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [200, 200, 200, 418]);
    for _ in 0..2 {
        let h2 = ["--http2-prior-knowledge", &who];
        succeeded(curl_in(client.netns(), &h2)?, client)?;
    }

    // Each side counted the six requests and their answers, labelled with the other
    // side's identity.
    let expected = BTreeMap::from([
        ("request_total", 6.0),
        ("response_total 2xx", 5.0),
        ("response_total 4xx", 1.0),
        ("response_latency_ms_count", 6.0),
    ]);
    let sides = [
        (client, "outbound", &server.identity),
        (server, "inbound", &client.identity),
    ];
    for (pod, direction, peer_id) in sides {
        let labels = [
            ("direction", direction),
            ("authority", &target.to_string()),
            ("peer_id", peer_id),
        ];
        // A response is counted when its body ends, which may be after curl has it.
        let _ = wait_until(SETTLE, || {
            pod.metrics()
                .is_ok_and(|m| request_counts(&m, &labels) == expected)
        });
        let metrics = pod.metrics()?;
        assert_eq!(
            request_counts(&metrics, &labels),
            expected,
            "the {direction} counts of the sidecar of {}:\n{}",
            pod.name,
            metrics.text
        );
    }

    // Each connection from curl was detected as what it spoke, and the server's
    // sidecar saw mesh TLS.
    let metrics = client.metrics()?;
    for (protocol, connections) in [("http1", 1.0), ("http2", 2.0)] {
        let labels = [("direction", "outbound"), ("protocol", protocol)];
        assert_eq!(
            metrics.sum("detect_total", &labels),
            connections,
            "outbound {protocol} detections:\n{}",
            metrics.text
        );
    }
    let metrics = server.metrics()?;
    let mesh_tls = [("direction", "inbound"), ("protocol", "mesh_tls")];
    assert!(
        metrics.sum("detect_total", &mesh_tls) >= 1.0,
        "no inbound mesh TLS detected:\n{}",
        metrics.text
    );
    Ok(())
}

/// The request, response (by status class, not gRPC) and latency counts of the
/// series with `labels`.
fn request_counts(metrics: &Metrics, labels: &[(&str, &str)]) -> BTreeMap<&'static str, f64> {
    let responses = |class| {
        let mut labels = labels.to_vec();
        labels.extend([("status_class", class), ("grpc_status", "")]);
        metrics.sum("response_total", &labels)
    };
    BTreeMap::from([
        ("request_total", metrics.sum("request_total", labels)),
        ("response_total 2xx", responses("2xx")),
        ("response_total 4xx", responses("4xx")),
        (
            "response_latency_ms_count",
            metrics.sum("response_latency_ms_count", labels),
        ),
    ])
}

#[test]
fn an_http1_request_with_trailers_arrives_with_them_and_the_answers_trailers_come_back()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let (pods, _app) = start()?;
    let PodPair { client, server, .. } = &pods;

    // What a client that streams a body and then its checksum sends: chunked, the
    // trailer announced, and trailers accepted in return. Written by hand, as a real
    // client would put it on the wire.
    let target = pods.server_at(APP_PORT);
    let request = format!(
        "POST /trailers HTTP/1.1\r\n\
         Host: {target}\r\n\
         Transfer-Encoding: chunked\r\n\
         Trailer: x-checksum\r\n\
         TE: trailers\r\n\
         Connection: close\r\n\
         \r\n\
         5\r\nhello\r\n\
         6\r\n, mesh\r\n\
         0\r\n\
         x-checksum: 4f1a\r\n\
         \r\n"
    );
    let mut conn = client.connect(target)?;
    conn.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();

    // The app saw the whole body and the trailer, after the sidecars' HTTP/2 leg.
    assert!(
        answer.starts_with("http/1.1 200"),
        "{answer}\n{}\n{}",
        client.proxy_log(),
        server.proxy_log()
    );
    assert!(answer.contains("received 11 bytes\n"), "{answer}");
    assert!(answer.contains("trailer x-checksum: 4f1a\n"), "{answer}");
    // The answer came back chunked with the app's own trailer.
    assert!(answer.contains("transfer-encoding: chunked"), "{answer}");
    assert!(
        answer.contains("\r\n0\r\nx-app-trailer: done\r\n"),
        "{answer}"
    );
    Ok(())
}
