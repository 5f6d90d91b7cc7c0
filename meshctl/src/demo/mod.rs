//! `meshctl demo`: the README's first command, a guided tour of a local mesh.
//!
//! It brings up a local mesh of its own (state directory and bridge apart from any
//! `meshctl local` one), starts a `server` pod running an echo app as service `echo`
//! and a `client` pod, has the client call `echo.demo:7070` by name (the pod's hosts
//! file gives the service's virtual IP, the client's sidecar balances it over the
//! service's endpoints) through both sidecars, prints what each sidecar saw
//! (identities, connections, bytes, handshakes) and tears everything down, also on
//! error and on Ctrl-C: a [`Teardown`] guard runs `local down` when dropped.
//!
//! # Layout
//! - `app.rs`: the plain-TCP echo server and caller (`meshctl demo-app`).
//! - `report.rs`: fetching `/metrics` and rendering the table.

pub mod app;
mod report;

use std::ffi::OsString;
use std::time::Duration;

use trellis_netns::Ipv4Cidr;

use crate::binaries::meshctl;
use crate::install::{Install, ensure_host};
use crate::local::{Local, RunOptions, UpOptions};
use crate::probe::wait_for;
use crate::state::PodRecord;
use crate::{Error, signals};

pub const DEFAULT_STATE_DIR: &str = "/run/trellis-demo";
pub const DEFAULT_BRIDGE: &str = "trellisdemo";
pub const DEFAULT_SUBNET: &str = "10.199.1.0/24";
const NAMESPACE: &str = "demo";
const SERVICE: &str = "echo";
const ECHO_PORT: u16 = 7070;

/// The choices of `meshctl demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub bridge: String,
    pub subnet: Ipv4Cidr,
    /// Round trips the client makes.
    pub count: u32,
    pub install: Install,
}

/// Removes the demo's mesh when dropped: on success, on error and after Ctrl-C.
struct Teardown<'a> {
    local: &'a Local,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        eprintln!("==> tearing the demo down");
        if let Err(error) = self.local.down() {
            eprintln!(
                "meshctl: teardown incomplete: {error}\n  run `meshctl local --state-dir {} down` to retry",
                self.local.state().root().display()
            );
        }
    }
}

pub fn run(local: &Local, options: &DemoOptions) -> Result<(), Error> {
    signals::install()?;
    ensure_host(options.install)?;
    if local.state().root().exists() {
        eprintln!(
            "==> removing what an earlier demo left in {}",
            local.state().root().display()
        );
        local.down()?;
    }
    let _teardown = Teardown { local };
    println!(
        "Trellis demo: two pods on bridge {} ({}), each with a sidecar; everything is removed at the end.",
        options.bridge, options.subnet
    );

    local.up(&UpOptions {
        bridge: options.bridge.clone(),
        subnet: options.subnet,
        trust_domain: "cluster.local".into(),
    })?;
    signals::check()?;
    let me = meshctl()?.into_os_string();
    let server = local.run(&RunOptions {
        name: "server".into(),
        namespace: NAMESPACE.into(),
        service_account: Some("server".into()),
        ports: vec![ECHO_PORT],
        service: Some(SERVICE.into()),
        command: vec![
            me.clone(),
            "demo-app".into(),
            "echo".into(),
            "--port".into(),
            ECHO_PORT.to_string().into(),
        ],
    })?;
    signals::check()?;
    let client = local.run(&RunOptions {
        name: "client".into(),
        namespace: NAMESPACE.into(),
        service_account: Some("client".into()),
        ports: vec![],
        service: None,
        command: vec![],
    })?;
    signals::check()?;

    let service = local
        .service_of(&server)?
        .ok_or_else(|| Error::NoSuchService {
            namespace: NAMESPACE.into(),
            name: SERVICE.into(),
        })?;
    let target = format!("{SERVICE}.{NAMESPACE}:{ECHO_PORT}");
    println!(
        "\nThe client app calls {target} by name, in plain TCP. The pod's hosts file \
         resolves {SERVICE}.{NAMESPACE} to the service's virtual IP {vip}. The client's \
         sidecar takes the connection, looks {vip}:{ECHO_PORT} up in what discovery \
         pushed (service {SERVICE}, whose endpoint is the server pod at {ip}), opens \
         mutual TLS to the server's sidecar (which must be {identity}), and that sidecar \
         hands it to the echo app.\n",
        vip = service.vip,
        ip = server.ip,
        identity = server.identity,
    );
    let call: Vec<OsString> = vec![
        me,
        "demo-app".into(),
        "call".into(),
        target.clone().into(),
        "--count".into(),
        options.count.to_string().into(),
    ];
    let output = local.exec_output("client", &call)?;
    signals::check()?;
    print!("{}", indent(&String::from_utf8_lossy(&output.stdout)));
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: format!("meshctl local exec client -- meshctl demo-app call {target}"),
            status: output.status,
            output: format!(
                "{}\n  see `meshctl local logs client --proxy` (the demo's state is removed on exit; rerun with `meshctl local` to keep it)",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }

    let pods = settled_metrics(&[server.clone(), client])?;
    println!("\nWhat each sidecar saw (from its /metrics):\n");
    print!("{}", report::render(&pods));
    println!(
        "\nNeither app did any TLS: the identities above come from each pod's ServiceAccount \
         token, checked by the controller against the local issuer's keys, and the \
         certificates it signed."
    );
    Ok(())
}

/// Each pod's metrics, once both sidecars have counted the closed connection (their
/// byte counts are final only then), or whatever they show after two seconds.
fn settled_metrics(pods: &[PodRecord]) -> Result<Vec<report::PodMetrics>, Error> {
    let fetch_all = || -> Option<Vec<report::PodMetrics>> {
        pods.iter().map(|pod| report::fetch(pod).ok()).collect()
    };
    let closed = |all: &Vec<report::PodMetrics>| {
        all.iter()
            .all(|p| p.metrics.sum("tcp_close_total", &[]) >= 1.0)
    };
    let settled = wait_for(Duration::from_secs(2), || fetch_all().filter(closed))?;
    match settled.or_else(fetch_all) {
        Some(all) => Ok(all),
        None => Err(Error::NotReady {
            what: "the sidecars' /metrics".into(),
            seconds: 2,
            hint: String::new(),
        }),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}
