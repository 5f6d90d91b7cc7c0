//! An operator runs their own program in a meshed pod with `meshctl local` as a
//! service, and calls it from another pod by the service's name and by the pod's
//! address; `meshctl local down` then leaves nothing behind.
//!
//! This drives the real `meshctl` binary, as a person would from a shell, on a bridge,
//! subnet and state directory of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trellis_tests::{Metrics, Names, binary, host_can_run_pods, http_get};

/// `meshctl local --state-dir STATE ARGS...`, run to completion.
struct Meshctl {
    exe: PathBuf,
    state: PathBuf,
}

impl Meshctl {
    fn local(&self, args: &[&str]) -> Output {
        let output = Command::new(&self.exe)
            .arg("local")
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .output()
            .expect("meshctl runs");
        eprintln!(
            "$ meshctl local {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.local(args);
        assert!(
            output.status.success(),
            "meshctl local {} failed",
            args.join(" ")
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Runs `local down` however the test ends, so a failure leaves no mesh behind.
struct Down<'a>(&'a Meshctl);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if self.0.state.exists() {
            self.0.local(&["down"]);
        }
    }
}

#[test]
fn a_service_in_one_meshed_pod_is_called_by_name_from_another_and_down_removes_everything() {
    if !host_can_run_pods(&[]) {
        return;
    }
    let names = Names::new();
    let meshctl = Meshctl {
        exe: binary("meshctl"),
        state: std::env::temp_dir().join(format!("trellis-meshctl-{}", names.tag)),
    };
    for other in ["trellis-controller", "trellis-proxy", "trellis-proxy-init"] {
        binary(other);
    }
    let me = meshctl.exe.to_string_lossy().into_owned();
    let bridge = names.bridge();
    let subnet = names.subnet.to_string();
    let _down = Down(&meshctl);

    meshctl.ok(&["up", "--bridge", &bridge, "--subnet", &subnet]);
    let server = meshctl.ok(&[
        "run",
        "server",
        "--namespace",
        "shop",
        "--service",
        "echo",
        "--port",
        "7070",
        "--",
        &me,
        "demo-app",
        "echo",
        "--port",
        "7070",
    ]);
    assert!(
        server.contains("spiffe://cluster.local/ns/shop/sa/server"),
        "{server}"
    );
    meshctl.ok(&[
        "run",
        "client",
        "--namespace",
        "shop",
        "--service-account",
        "web",
    ]);
    let server_ip = names.subnet.host(2).expect("a /24 has a .2").addr();
    // Virtual IPs count down from the top of the subnet.
    let vip = names.subnet.host(254).expect("a /24 has a .254").addr();
    assert!(
        server.contains(&format!("echo.shop (in shop also echo) at {vip}")),
        "{server}"
    );

    // The caller is an ordinary program in plain TCP: it dials the service by its
    // name (short, as it is in the same namespace, and qualified), and the pod by
    // its address.
    for target in [
        "echo:7070",
        "echo.shop.svc.cluster.local:7070",
        &format!("{server_ip}:7070"),
    ] {
        let call = meshctl.local(&[
            "exec", "client", "--", &me, "demo-app", "call", target, "--count", "3",
        ]);
        let transcript = String::from_utf8_lossy(&call.stdout);
        assert!(
            call.status.success(),
            "the call to {target} failed: {transcript}"
        );
        assert!(transcript.contains("3/3 echoes came back"), "{transcript}");
        if target.starts_with("echo") {
            assert!(
                transcript.contains(&format!("{target} is {vip}:7070")),
                "{transcript}"
            );
        }
    }
    // Every call went over mTLS: the client's sidecar checked the server's identity.
    let metrics = http_get(SocketAddr::from((server_ip, 4191)), "/metrics")
        .expect("the server's sidecar answers on its admin port")
        .1;
    let verified = Metrics { text: metrics }.sum(
        "tcp_open_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", "spiffe://cluster.local/ns/shop/sa/web"),
        ],
    );
    assert_eq!(verified, 3.0);

    // exec passes the command's exit code through.
    let failing = meshctl.local(&["exec", "client", "--", "sh", "-c", "exit 7"]);
    assert_eq!(failing.status.code(), Some(7));

    let listing = meshctl.ok(&["ls"]);
    let row = |name: &str| {
        listing
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{listing}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("server")[..4],
        [
            "server",
            &server_ip.to_string(),
            "spiffe://cluster.local/ns/shop/sa/server",
            "yes"
        ]
    );
    assert_eq!(
        row("client")[2..4],
        ["spiffe://cluster.local/ns/shop/sa/web", "yes"]
    );
    assert_eq!(
        row("echo.shop"),
        [
            "echo.shop",
            &vip.to_string(),
            "7070",
            &server_ip.to_string()
        ]
    );
    let app_log = meshctl.ok(&["logs", "server"]);
    assert!(app_log.contains("closed after"), "{app_log}");

    // What discovery was told: each pod's own Endpoints and the service's file, all
    // accepted by the controller.
    let config = meshctl.state.join("config");
    for file in [
        "pod-server.yaml",
        "pod-client.yaml",
        "service-shop-echo.yaml",
    ] {
        assert!(
            config.join(file).exists(),
            "no {file} in {}",
            config.display()
        );
    }
    let gateway = SocketAddr::from((names.subnet.host(1).expect("a gateway").addr(), 9990));
    let (_, sources) = http_get(gateway, "/sources").expect("the controller's /sources");
    assert!(sources.contains("\"rejections\": []"), "{sources}");

    // Removing the service's last pod removes the service and its name.
    let client_hosts = Path::new("/etc/netns")
        .join(format!("{bridge}-client"))
        .join("hosts");
    let hosts = std::fs::read_to_string(&client_hosts).expect("the client's hosts file");
    assert!(
        hosts.contains(&format!(
            "{vip}\techo.shop echo.shop.svc.cluster.local echo\n"
        )),
        "{hosts}"
    );
    meshctl.ok(&["rm", "server"]);
    assert!(!config.join("service-shop-echo.yaml").exists());
    assert!(!config.join("pod-server.yaml").exists());
    let hosts = std::fs::read_to_string(&client_hosts).expect("the client's hosts file");
    assert!(!hosts.contains("echo"), "{hosts}");
    assert!(!meshctl.ok(&["ls"]).contains("SERVICE"));

    meshctl.ok(&["down"]);
    assert_nothing_left(&names, &meshctl.state);
}

fn assert_nothing_left(names: &Names, state: &Path) {
    assert!(!state.exists(), "{} is still there", state.display());
    let netns = trellis_netns::netns_list().expect("ip netns list");
    let ours: Vec<&String> = netns
        .iter()
        .filter(|n| n.starts_with(&format!("{}-", names.bridge())))
        .collect();
    assert!(ours.is_empty(), "namespaces left: {ours:?}");
    let links = trellis_netns::links().expect("ip link");
    let ours: Vec<&String> = links
        .iter()
        .filter(|l| l.starts_with(&names.bridge()))
        .collect();
    assert!(ours.is_empty(), "links left: {ours:?}");
    let forward = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .expect("iptables");
    let forward = String::from_utf8_lossy(&forward.stdout);
    assert!(
        !forward.contains(&names.bridge()),
        "FORWARD rules left:\n{forward}"
    );
    let hosts: Vec<String> = std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{}-", names.bridge())))
        .collect();
    assert!(hosts.is_empty(), "/etc/netns directories left: {hosts:?}");
    let state = state.to_string_lossy();
    let alive: Vec<String> = processes_mentioning(&state);
    assert!(alive.is_empty(), "processes left: {alive:?}");
}

/// Command lines of live processes that mention `text` (read from /proc, so a
/// machine without `ps` works too). Zombies have no command line and do not count.
fn processes_mentioning(text: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(text))
        .collect()
}

#[test]
fn down_also_removes_a_pod_whose_run_never_finished_and_is_idempotent() {
    if !host_can_run_pods(&[]) {
        return;
    }
    let names = Names::new();
    let meshctl = Meshctl {
        exe: binary("meshctl"),
        state: std::env::temp_dir().join(format!("trellis-meshctl-{}", names.tag)),
    };
    let _down = Down(&meshctl);
    meshctl.ok(&[
        "up",
        "--bridge",
        &names.bridge(),
        "--subnet",
        &names.subnet.to_string(),
    ]);
    // Running `up` again on a running mesh changes nothing.
    meshctl.ok(&[
        "up",
        "--bridge",
        &names.bridge(),
        "--subnet",
        &names.subnet.to_string(),
    ]);

    // A `run` killed right after creating the namespace: no record, no proxy.
    let bridge =
        trellis_netns::Bridge::new(&names.bridge(), names.subnet.host(1).unwrap()).unwrap();
    let ghost = format!("{}-ghost", names.bridge());
    trellis_netns::Pod::create(
        &ghost,
        &bridge,
        names.subnet.host(9).unwrap(),
        &format!("{}v9", names.bridge()),
    )
    .expect("a half-made pod");

    meshctl.ok(&["down"]);
    assert_nothing_left(&names, &meshctl.state);
    let again = meshctl.local(&["down"]);
    assert!(again.status.success(), "a second down is not an error");
}

#[test]
fn without_root_meshctl_local_says_exactly_what_is_missing() {
    let exe = binary("meshctl");
    let mut command = if nix::unistd::geteuid().is_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg(&exe);
        setpriv
    } else {
        Command::new(&exe)
    };
    let state = std::env::temp_dir().join("trellis-meshctl-never-created");
    let output = command
        .args(["local", "up", "--state-dir"])
        .arg(&state)
        .output()
        .expect("meshctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing:") && stderr.contains("root: running as uid"),
        "{stderr}"
    );
    assert!(!state.exists(), "nothing was created");
}
