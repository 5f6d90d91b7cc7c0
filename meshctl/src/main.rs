//! `meshctl`, the Trellis operator CLI.
//!
//! It runs a mesh without Kubernetes: `meshctl local` makes pods out of network
//! namespaces on a bridge, with a real controller and real sidecars, and `meshctl demo`
//! gives a guided tour of one. See DESIGN.md, "Running without Kubernetes". For a
//! cluster, `meshctl install` prints the mesh's manifests (the Helm chart, rendered
//! without Helm) and `meshctl inject` adds the proxy to the pods of Kubernetes YAML.
//!
//! # Layout
//! - `main.rs`: the command line (clap lives only here) and dispatch.
//! - `local/`: the `meshctl local` commands, one local mesh as a [`local::Local`].
//! - `demo/`: `meshctl demo` and its app (`meshctl demo-app`, hidden).
//! - `inject.rs`, `inject/`: `meshctl inject`, over the `trellis-injector` library.
//! - `chart.rs`, `chart/`: `meshctl install`, `charts/trellis` rendered without Helm
//!   (its flags are Helm's, so they are declared there).
//! - `quote.rs`: double-quoted strings that Go (Helm's `quote`) and YAML read alike.
//! - `state.rs`: the state directory's layout and records.
//! - `issuer.rs`: the local ServiceAccount token issuer (signing key, JWKS, tokens).
//! - `process.rs`: detached processes, pid files, stopping process groups.
//! - `probe.rs`: TCP and HTTP readiness checks; `metrics.rs`: reading `/metrics`.
//! - `install.rs`: host prerequisites, and installing them for the demo.
//! - `binaries.rs`: finding `trellis-controller`, `trellis-proxy`, `trellis-proxy-init`.
//! - `signals.rs`: Ctrl-C as a flag; `table.rs`: aligned text tables.

mod binaries;
mod chart;
mod demo;
mod error;
mod inject;
mod install;
mod issuer;
mod local;
mod metrics;
mod probe;
mod process;
mod quote;
mod signals;
mod state;
mod table;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trellis_netns::Ipv4Cidr;

use crate::binaries::Binaries;
use crate::demo::DemoOptions;
use crate::install::Install;
use crate::local::{Local, RunOptions, UpOptions};
use crate::state::StateDir;

pub use crate::error::Error;

/// The Trellis operator CLI.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A whole mesh on this host: pods are network namespaces on a bridge.
    Local(LocalArgs),
    /// Start a local mesh with two pods, send traffic between them, show what the
    /// sidecars saw, and remove everything again.
    Demo(DemoArgs),
    /// Add the Trellis proxy to every pod in Kubernetes YAML and print the result:
    /// Pods, and the pod templates of Deployments, StatefulSets, DaemonSets,
    /// ReplicaSets, Jobs and CronJobs, also inside `List`s, as the installed mesh's
    /// webhook would (--mesh-config). Other objects pass through byte for byte; pods
    /// labelled or annotated `trellis.io/inject: disabled` are left alone.
    Inject(InjectArgs),
    /// Print the manifests that install Trellis in a cluster, for `kubectl apply -f -`:
    /// `charts/trellis` rendered as `helm template` renders it, plus the namespace, and
    /// a generated CA and webhook certificate where none is given (for trying Trellis).
    Install(chart::InstallArgs),
    /// The demo's app: a plain TCP echo server and its caller.
    #[command(hide = true)]
    DemoApp {
        #[command(subcommand)]
        command: DemoAppCommand,
    },
}

#[derive(Debug, clap::Args)]
struct LocalArgs {
    /// Where the local mesh keeps its CA, keys, tokens, logs and pid files.
    #[arg(long, global = true, env = "TRELLIS_STATE_DIR", default_value = local::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Where trellis-controller, trellis-proxy and trellis-proxy-init are [default: the
    /// directory of meshctl itself].
    #[arg(long, global = true, env = "TRELLIS_BIN_DIR")]
    bin_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: LocalCommand,
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Create the bridge and state directory and start the controller.
    Up {
        /// The bridge's name; pod links are named after it, so keep it short.
        #[arg(long, env = "TRELLIS_BRIDGE", default_value = local::DEFAULT_BRIDGE)]
        bridge: String,
        /// The pods' subnet; the bridge (and the controller) take its first address.
        #[arg(long, env = "TRELLIS_SUBNET", default_value = local::DEFAULT_SUBNET)]
        subnet: Ipv4Cidr,
        /// The trust domain of every workload identity.
        #[arg(long, env = "TRELLIS_TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Create pod NAME with its sidecar, then start CMD in it as the app.
    Run {
        /// The pod's name: lowercase letters, digits and '-'.
        name: String,
        /// The pod's Kubernetes-style namespace (part of its identity).
        #[arg(
            long,
            short = 'n',
            env = "TRELLIS_NAMESPACE",
            default_value = "default"
        )]
        namespace: String,
        /// The pod's ServiceAccount (part of its identity) [default: NAME].
        #[arg(long, env = "TRELLIS_SERVICE_ACCOUNT")]
        service_account: Option<String>,
        /// A port the app listens on; `run` returns once it does. Repeatable. With
        /// --service, these are the ports the service offers.
        #[arg(
            long = "port",
            value_name = "PORT",
            env = "TRELLIS_PORTS",
            value_delimiter = ','
        )]
        ports: Vec<u16>,
        /// Make the pod an endpoint of service SVC in its namespace: SVC gets a
        /// virtual IP, and every pod resolves SVC.NS (and SVC in NS) to it.
        #[arg(long, value_name = "SVC", env = "TRELLIS_SERVICE")]
        service: Option<String>,
        /// The app's command line, after `--` (none: a pod for `local exec` only).
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Run CMD inside pod NAME (its traffic goes through the pod's sidecar).
    Exec {
        /// The pod to run CMD in.
        name: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// List the pods with their address, identity and readiness, and the services.
    Ls,
    /// Show the app's log of pod NAME (or its sidecar's, with --proxy).
    Logs {
        /// The pod whose log to show.
        name: String,
        /// The sidecar proxy's log instead of the app's.
        #[arg(long, env = "TRELLIS_LOGS_PROXY")]
        proxy: bool,
    },
    /// Stop pod NAME and remove it.
    Rm {
        /// The pod to remove.
        name: String,
    },
    /// Stop everything and remove every namespace, link, rule, process and file.
    Down,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// The demo's own state directory (removed at the end).
    #[arg(long, env = "TRELLIS_DEMO_STATE_DIR", default_value = demo::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The demo's own bridge.
    #[arg(long, env = "TRELLIS_DEMO_BRIDGE", default_value = demo::DEFAULT_BRIDGE)]
    bridge: String,
    /// The demo pods' subnet.
    #[arg(long, env = "TRELLIS_DEMO_SUBNET", default_value = demo::DEFAULT_SUBNET)]
    subnet: Ipv4Cidr,
    /// How many round trips the client makes.
    #[arg(long, env = "TRELLIS_DEMO_COUNT", default_value_t = 5)]
    count: u32,
    /// Where the mesh binaries are [default: the directory of meshctl itself].
    #[arg(long, env = "TRELLIS_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Never install missing packages (iproute2, iptables) with apt-get; only say so.
    #[arg(long, env = "TRELLIS_DEMO_NO_INSTALL")]
    no_install: bool,
}

#[derive(Debug, clap::Args)]
struct InjectArgs {
    /// YAML files, each with one or more documents; `-` reads stdin, as with
    /// `linkerd inject -` and `kubectl apply -f -`.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The installed mesh's config, so that the pods are the ones its webhook makes:
    /// the ConfigMap that `kubectl get configmap trellis-mesh-config -n trellis-system
    /// -o yaml` prints, or the MeshConfig YAML inside it. Needed unless
    /// --trust-anchors is given.
    #[arg(
        long,
        visible_alias = "config",
        env = "TRELLIS_MESH_CONFIG",
        value_name = "FILE"
    )]
    mesh_config: Option<PathBuf>,
    /// The mesh's trust anchors, PEM (the chart's identity.trustAnchorsPEM), given to
    /// every proxy added; replaces the mesh config's.
    #[arg(long, env = "TRELLIS_INJECT_TRUST_ANCHORS", value_name = "FILE")]
    trust_anchors: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DemoAppCommand {
    /// Echo every connection back, forever.
    Echo {
        #[arg(long, env = "TRELLIS_DEMO_APP_PORT", default_value_t = 7070)]
        port: u16,
    },
    /// Send lines to an echo server and check they come back.
    Call {
        /// HOST:PORT; HOST is an address or a name (a service's, from /etc/hosts).
        addr: String,
        #[arg(long, env = "TRELLIS_DEMO_APP_COUNT", default_value_t = 5)]
        count: u32,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) if matches!(error.downcast_ref(), Some(Error::Interrupted)) => {
            eprintln!("meshctl: interrupted");
            // 128 + SIGINT, as a shell reports a command ended by Ctrl-C.
            ExitCode::from(130)
        }
        Err(error) => {
            eprintln!("meshctl: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Local(args) => run_local(args),
        Command::Demo(args) => {
            let local = Local::new(
                StateDir::new(args.state_dir),
                Binaries::locate(args.bin_dir)?,
            );
            let options = DemoOptions {
                bridge: args.bridge,
                subnet: args.subnet,
                count: args.count,
                install: if args.no_install {
                    Install::Never
                } else {
                    Install::IfRoot
                },
            };
            demo::run(&local, &options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inject(args) => {
            // Checked before anything is read, so that a forgotten `-` is said at once.
            if args.files.is_empty() {
                return Err(inject::InjectError::NoInput.into());
            }
            let (config, warning) =
                inject::config::read(args.mesh_config.as_deref(), args.trust_anchors.as_deref())?;
            let inputs = inject::read_inputs(&args.files)?;
            let (yaml, report) = inject::inject_all(&inputs, &config)?;
            if let Some(warning) = warning {
                eprintln!("{warning}");
            }
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing the injected YAML")?;
            // On stderr, so that stdout stays a clean stream for `kubectl apply -f -`.
            for line in report {
                eprintln!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Install(args) => {
            chart::install(&args, &mut std::io::stdout().lock(), &mut std::io::stderr())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoApp {
            command: DemoAppCommand::Echo { port },
        } => {
            demo::app::echo(port).with_context(|| format!("echo server on port {port}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoApp {
            command: DemoAppCommand::Call { addr, count },
        } => {
            let echoed = demo::app::call(&addr, count, &mut std::io::stdout())
                .with_context(|| format!("calling {addr}"))?;
            Ok(if echoed == count {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn run_local(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let local = Local::new(
        StateDir::new(args.state_dir),
        Binaries::locate(args.bin_dir)?,
    );
    let mut stdout = std::io::stdout();
    match args.command {
        LocalCommand::Up {
            bridge,
            subnet,
            trust_domain,
        } => {
            let settings = local.up(&UpOptions {
                bridge,
                subnet,
                trust_domain,
            })?;
            let state = local.state();
            println!("local mesh is up");
            println!(
                "  bridge      {} ({}, gateway {})",
                settings.bridge,
                settings.subnet,
                settings.gateway()?.addr()
            );
            println!(
                "  controller  {} (log: {})",
                settings.controller_addr()?,
                state.controller_log().display()
            );
            println!("  state       {}", state.root().display());
            println!(
                "  config      {} (what discovery pushes to the proxies)",
                state.config_dir().display()
            );
            println!("next: meshctl local run NAME [--service SVC] [--port P]... -- CMD...");
        }
        LocalCommand::Run {
            name,
            namespace,
            service_account,
            ports,
            service,
            command,
        } => {
            let pod = local.run(&RunOptions {
                name,
                namespace,
                service_account,
                ports,
                service,
                command,
            })?;
            let files = local.state().pod(&pod.name);
            println!("pod {} is ready", pod.name);
            println!("  ip          {}", pod.ip);
            println!("  identity    {}", pod.identity);
            println!(
                "  namespace   {} (ip netns exec {} ...)",
                pod.netns, pod.netns
            );
            println!(
                "  logs        {} (proxy: {})",
                files.app_log().display(),
                files.proxy_log().display()
            );
            if let Some(service) = local.service_of(&pod)? {
                println!(
                    "  service     {name}.{ns} (in {ns} also {name}) at {vip}",
                    name = service.name,
                    ns = service.namespace,
                    vip = service.vip,
                );
            }
        }
        LocalCommand::Exec { name, command } => {
            let code = local.exec(&name, &command)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        LocalCommand::Ls => local.ls(&mut stdout)?,
        LocalCommand::Logs { name, proxy } => local.logs(&name, proxy, &mut stdout)?,
        LocalCommand::Rm { name } => {
            local.rm(&name)?;
            println!("pod {name} removed");
        }
        LocalCommand::Down => {
            local.down()?;
            println!("local mesh at {} removed", local.state().root().display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
