//! Requests to a service spread over its endpoints, and keep succeeding when one of
//! them fails while discovery still lists it.
//!
//! Service `shop/echo` has a virtual IP, port 80, and three endpoints, pods "a", "b"
//! and "c", each running an HTTP app that answers with its pod's name. A client pod
//! calls the virtual IP with curl. The client's sidecar picks an endpoint for every
//! request; the app's answer says which one it picked.
//!
//! Failure is what a crash looks like before anyone updates the endpoints: c's app
//! dies (c's sidecar then answers that it cannot reach it), later c's sidecar dies too
//! (nothing accepts on c any more). The client's sidecar must notice each, take c out
//! for a backoff, and send the requests that c could not serve to a or b.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use trellis_tests::{
    ECHO_PORT, HttpApp, Mesh, MeshPod, SERVICE_PORT, curl_in, echo_service_yaml, host_can_run_pods,
    wait_until,
};

const CURL: (&str, &str) = ("curl", "curl");
/// With three endpoints, ample for each to take some.
const SPREAD: usize = 30;
/// Requests made in each phase after c fails: enough that a route to it would have
/// shown (c's backoff starts at one second; many requests fall after a probe).
const AFTER_LOSS: usize = 40;
/// The caller stops at this many requests, whatever happens.
const MAX_REQUESTS: usize = 1000;
const PUSHED: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(60);

/// The phases of the story in which a request started.
const BEFORE: u8 = 0;
const APP_KILLED: u8 = 1;
const POD_KILLED: u8 = 2;

/// The service, its three endpoints with their apps, and the client.
struct Scene {
    // Declared in teardown order: the apps, the pods, then the mesh.
    apps: Vec<HttpApp>,
    endpoints: Vec<MeshPod>,
    client: MeshPod,
    mesh: Mesh,
    service: SocketAddrV4,
}

impl Scene {
    fn start() -> anyhow::Result<Scene> {
        let mut mesh = Mesh::start()?;
        let mut endpoints = Vec::new();
        for name in ["a", "b", "c"] {
            endpoints.push(mesh.pod(name, "shop", "echo")?);
        }
        let mut client = mesh.pod("client", "shop", "client")?;
        for pod in endpoints.iter_mut().chain([&mut client]) {
            pod.start_sidecar()?;
        }
        let apps = endpoints
            .iter()
            .map(|pod| HttpApp::start_in(pod.netns(), ECHO_PORT, &pod.name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let vip = mesh.virtual_ip(0)?;
        let service = SocketAddrV4::new(vip, SERVICE_PORT);
        let scene = Scene {
            apps,
            endpoints,
            client,
            mesh,
            service,
        };
        scene.publish_all()?;
        Ok(scene)
    }

    /// Makes the service's endpoints all three pods.
    fn publish_all(&self) -> anyhow::Result<()> {
        let pods: Vec<&MeshPod> = self.endpoints.iter().collect();
        publish(&self.mesh, &self.client, self.service, &pods)
    }

    fn url(&self) -> String {
        format!("http://{}/who", self.service)
    }
}

/// Makes `pods` the endpoints of `service`, and waits until `client`'s sidecar
/// balances over exactly those.
fn publish(
    mesh: &Mesh,
    client: &MeshPod,
    service: SocketAddrV4,
    pods: &[&MeshPod],
) -> anyhow::Result<()> {
    let yaml = echo_service_yaml(*service.ip(), ECHO_PORT, None, pods);
    mesh.write_config("echo.yaml", &yaml)?;
    let expected: Vec<SocketAddrV4> = pods
        .iter()
        .map(|pod| SocketAddrV4::new(pod.ip, ECHO_PORT))
        .collect();
    let names: Vec<&str> = pods.iter().map(|pod| pod.name.as_str()).collect();
    client.wait_for_config(&format!("endpoints {names:?}"), PUSHED, |config| {
        config.endpoints_of(service) == expected
    })?;
    Ok(())
}

/// One request from `client` to `url` on a connection of its own: who answered, or
/// what went wrong.
fn ask(client: &MeshPod, url: &str) -> Result<String, String> {
    let run = curl_in(client.netns(), &["--header", "Connection: close", url])
        .map_err(|e| e.to_string())?;
    let transfer = run.transfer().map_err(|e| e.to_string())?;
    match (transfer.status, transfer.header("x-app-name")) {
        (200, Some(name)) => Ok(name.to_string()),
        (status, _) => Err(format!(
            "status {status}: {:?} {}",
            transfer.error, run.stderr
        )),
    }
}

/// How many answers each name gave.
fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    counts
}

#[test]
fn requests_spread_over_three_endpoints_and_keep_succeeding_when_one_dies_while_still_listed()
-> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let scene = Scene::start()?;
    let url = scene.url();

    // 1. Every endpoint takes a share of the requests.
    let answers = (0..SPREAD)
        .map(|_| ask(&scene.client, &url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}\n{}", scene.client.proxy_log()))?;
    let counts = tally(&answers);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "who answered {SPREAD} requests: {counts:?}"
    );

    // An app's own 5xx is its answer: passed through as it is, sent once, and held
    // against no endpoint.
    let before: usize = scene.apps.iter().map(HttpApp::requests).sum();
    let run = curl_in(
        scene.client.netns(),
        &[&format!("http://{}/status/502", scene.service)],
    )?;
    let transfer = run.transfer()?;
    assert_eq!(transfer.status, 502, "{}", run.stderr);
    assert!(transfer.header("x-app-name").is_some(), "{transfer:?}");
    assert_eq!(transfer.header("trellis-proxy-error"), None, "{transfer:?}");
    let after: usize = scene.apps.iter().map(HttpApp::requests).sum();
    assert_eq!(after - before, 1, "the app's 502 was retried");
    let config = scene.client.config()?;
    for pod in &scene.endpoints {
        let endpoint = SocketAddrV4::new(pod.ip, ECHO_PORT);
        let failures = config.failures_of(scene.service, endpoint);
        assert_eq!(failures, Some(0), "{} was ejected: {config}", pod.name);
    }

    // 2. While requests keep coming, c fails and stays listed: first its app dies,
    // then its sidecar is killed (SIGKILL) as well.
    let mut scene = scene;
    let (stop, phase, done) = (
        AtomicBool::new(false),
        AtomicU8::new(BEFORE),
        AtomicUsize::new(0),
    );
    let requests_done = || done.load(Ordering::SeqCst);
    let (outcomes, failing) = std::thread::scope(|scope| {
        let client = &scene.client;
        let caller = scope.spawn(|| {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) && outcomes.len() < MAX_REQUESTS {
                let during = phase.load(Ordering::SeqCst);
                outcomes.push((during, ask(client, &url)));
                done.fetch_add(1, Ordering::SeqCst);
            }
            outcomes
        });
        let mut fail = || -> anyhow::Result<()> {
            let _ = wait_until(SETTLE, || requests_done() >= SPREAD);
            drop(scene.apps.pop());
            phase.store(APP_KILLED, Ordering::SeqCst);
            let at = requests_done();
            let _ = wait_until(SETTLE, || requests_done() >= at + AFTER_LOSS);
            scene.endpoints[2].kill_sidecar()?;
            phase.store(POD_KILLED, Ordering::SeqCst);
            let at = requests_done();
            let _ = wait_until(SETTLE, || requests_done() >= at + AFTER_LOSS);
            Ok(())
        };
        let failing = fail();
        // The caller stops before any assertion can unwind through the scope.
        stop.store(true, Ordering::SeqCst);
        (caller.join(), failing)
    });
    failing?;
    let outcomes = outcomes.map_err(|_| anyhow::anyhow!("the calling thread panicked"))?;

    // Every request succeeded, before, during and after; none was answered by c once
    // its app had died; and each phase saw its share of requests.
    let failed: Vec<_> = outcomes.iter().filter(|(_, o)| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}\n{}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(3)],
        scene.client.proxy_log()
    );
    let answered_in = |during| {
        outcomes
            .iter()
            .filter(move |(d, _)| *d == during)
            .filter_map(|(_, outcome)| outcome.as_ref().ok())
    };
    for (during, what) in [(APP_KILLED, "its app died"), (POD_KILLED, "its pod died")] {
        let answered = tally(answered_in(during));
        assert!(
            !answered.contains_key("c"),
            "c answered after {what}: {answered:?}"
        );
        let count: usize = answered.values().sum();
        assert!(
            count >= AFTER_LOSS,
            "only {count} requests were made after {what}"
        );
        eprintln!("after {what}: {answered:?}, none failed");
    }

    // 3. The client's sidecar held c's failures against it (it was ejected), while
    // discovery still listed it.
    let c = SocketAddrV4::new(scene.endpoints[2].ip, ECHO_PORT);
    let config = scene.client.config()?;
    assert!(
        config.endpoints_of(scene.service).contains(&c),
        "c was no longer listed: {config}"
    );
    let failures = config.failures_of(scene.service, c).unwrap_or_default();
    assert!(failures >= 1, "c was never ejected: {config}");

    // 4. c comes back: once its backoff has passed, a probe finds it and it takes
    // requests again.
    scene.endpoints[2].start_sidecar()?;
    let c_pod = &scene.endpoints[2];
    scene
        .apps
        .push(HttpApp::start_in(c_pod.netns(), ECHO_PORT, &c_pod.name)?);
    let back = wait_until(SETTLE, || {
        ask(&scene.client, &url).is_ok_and(|who| who == "c")
    });
    assert!(
        back,
        "c never took a request again\n{}",
        scene.client.proxy_log()
    );
    Ok(())
}

#[test]
fn requests_on_one_keep_alive_connection_are_balanced_one_by_one() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let scene = Scene::start()?;
    let url = scene.url();
    let mut args = vec!["--http1.1"];
    args.extend(std::iter::repeat_n(url.as_str(), SPREAD));
    let run = curl_in(scene.client.netns(), &args)?;
    anyhow::ensure!(
        run.exit_code == Some(0),
        "curl failed: {}\n{}",
        run.stderr,
        scene.client.proxy_log()
    );

    // curl kept one connection to its sidecar for all of them...
    let connects: u64 = run.transfers.iter().map(|t| t.num_connects).sum();
    assert_eq!(connects, 1, "curl's connections: {:?}", run.transfers);
    // ...yet the sidecar balanced each request on its own.
    let names: Vec<String> = run
        .transfers
        .iter()
        .map(|t| t.header("x-app-name").unwrap_or("?").to_string())
        .collect();
    let counts = tally(&names);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "who answered {SPREAD} requests on one connection: {counts:?}"
    );
    Ok(())
}
