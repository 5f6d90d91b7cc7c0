//! `trellis-proxy-init`: turns flags into [`Settings`], installs (or removes, or prints)
//! the rules with the chosen backend, or runs `validate`; and maps failures to the exit
//! codes listed in the crate documentation.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};
use trellis_proxy_init::{
    Backend, BackendChoice, Binaries, CidrList, Error, Flavour, Ip, LocalCongestion, Pass,
    PortList, Settings, Validation, detect, port_for_flag, validate,
};

/// Installs the rules that send a pod's TCP traffic through its Trellis proxy.
#[derive(Debug, Parser)]
#[command(
    name = "trellis-proxy-init",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    install: InstallArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks that outbound connections really are redirected: run after the rules,
    /// before the proxy, as any user but the proxy's.
    Validate(ValidateArgs),
}

// Ports are taken as text and parsed by us, so that a bad one is reported in one line
// naming its flag and environment variable, like a bad port list.
#[derive(Debug, Args)]
struct InstallArgs {
    /// The proxy's inbound port: inbound TCP is redirected there.
    #[arg(
        long,
        env = "TRELLIS_INBOUND_PORT",
        default_value = "4143",
        value_name = "PORT"
    )]
    inbound_port: String,

    /// The proxy's outbound port: outbound TCP is redirected there.
    #[arg(
        long,
        env = "TRELLIS_OUTBOUND_PORT",
        default_value = "4140",
        value_name = "PORT"
    )]
    outbound_port: String,

    /// The proxy's admin port: never redirected, so probes and scrapes reach the proxy.
    #[arg(
        long,
        env = "TRELLIS_ADMIN_PORT",
        default_value = "4191",
        value_name = "PORT"
    )]
    admin_port: String,

    /// The UID the proxy runs as: its own traffic is never redirected.
    #[arg(
        long,
        env = "TRELLIS_PROXY_UID",
        default_value_t = 2102,
        value_name = "UID"
    )]
    proxy_uid: u32,

    /// A GID whose traffic is never redirected either (optional).
    #[arg(long, env = "TRELLIS_PROXY_GID", value_name = "GID")]
    proxy_gid: Option<u32>,

    /// Inbound ports that bypass the proxy, e.g. `25,443,8000-8100`.
    #[arg(long, env = "TRELLIS_SKIP_INBOUND_PORTS", value_name = "PORTS")]
    skip_inbound_ports: Option<String>,

    /// Outbound ports that bypass the proxy, e.g. `25,443,8000-8100`.
    #[arg(long, env = "TRELLIS_SKIP_OUTBOUND_PORTS", value_name = "PORTS")]
    skip_outbound_ports: Option<String>,

    /// Outbound networks that bypass the proxy, IPv4 and IPv6: `10.0.0.0/8,fd00::/8`.
    #[arg(long, env = "TRELLIS_SKIP_OUTBOUND_CIDRS", value_name = "CIDRS")]
    skip_outbound_cidrs: Option<String>,

    /// Redirect outbound traffic only to these networks [default: all].
    #[arg(long, env = "TRELLIS_INCLUDE_OUTBOUND_CIDRS", value_name = "CIDRS")]
    include_outbound_cidrs: Option<String>,

    /// Redirect inbound traffic only to these ports [default: all].
    #[arg(long, env = "TRELLIS_REDIRECT_INBOUND_PORTS", value_name = "PORTS")]
    redirect_inbound_ports: Option<String>,

    /// Also redirect IPv6 (ip6tables, or the IPv6 half of the nftables table).
    // `--ipv6` alone means true; `--ipv6=false` or `TRELLIS_IPV6=0` turns it off.
    #[arg(long, env = "TRELLIS_IPV6", value_name = "BOOL", default_value = "true",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    ipv6: bool,

    /// legacy, nft (iptables over nf_tables), nftables (native), or auto: what the
    /// network namespace already uses.
    #[arg(
        long,
        env = "TRELLIS_BACKEND",
        default_value = "auto",
        value_name = "BACKEND"
    )]
    backend: String,

    /// The TCP congestion control of the routes to the pod's own addresses (loopback
    /// among them), where the app and the proxy talk: an algorithm the kernel has, or
    /// `keep` to leave them as they are. Reno never paces, as a node default of BBR
    /// would on loopback.
    #[arg(
        long,
        env = "TRELLIS_LOCAL_CONGESTION_CONTROL",
        default_value = "reno",
        value_name = "NAME"
    )]
    local_congestion_control: String,

    /// Print the exact documents instead of applying them.
    // Boolish, so that `TRELLIS_DRY_RUN=1` / `yes` / `false` work as in shell scripts.
    #[arg(long, env = "TRELLIS_DRY_RUN", value_parser = BoolishValueParser::new())]
    dry_run: bool,

    /// Remove Trellis's chains and the jumps to them (or its table), and nothing else.
    #[arg(long, env = "TRELLIS_CLEANUP", value_parser = BoolishValueParser::new())]
    cleanup: bool,

    /// The iptables-save binary [default: iptables-<backend>-save].
    #[arg(long, env = "TRELLIS_IPTABLES_SAVE", value_name = "BINARY")]
    iptables_save: Option<PathBuf>,

    /// The iptables-restore binary [default: iptables-<backend>-restore].
    #[arg(long, env = "TRELLIS_IPTABLES_RESTORE", value_name = "BINARY")]
    iptables_restore: Option<PathBuf>,

    /// The ip6tables-save binary [default: ip6tables-<backend>-save].
    #[arg(long, env = "TRELLIS_IP6TABLES_SAVE", value_name = "BINARY")]
    ip6tables_save: Option<PathBuf>,

    /// The ip6tables-restore binary [default: ip6tables-<backend>-restore].
    #[arg(long, env = "TRELLIS_IP6TABLES_RESTORE", value_name = "BINARY")]
    ip6tables_restore: Option<PathBuf>,

    /// The nft binary, for the nftables backend.
    #[arg(
        long,
        env = "TRELLIS_NFT",
        default_value = "nft",
        value_name = "BINARY"
    )]
    nft: PathBuf,

    /// The ip binary (iproute2), which sets the local routes' congestion control.
    #[arg(long, env = "TRELLIS_IP", default_value = "ip", value_name = "BINARY")]
    ip: PathBuf,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The proxy's outbound port: the validator listens there, on loopback.
    #[arg(
        long,
        env = "TRELLIS_OUTBOUND_PORT",
        default_value = "4140",
        value_name = "PORT"
    )]
    outbound_port: String,

    /// Where the test connection goes: an address outside the pod that it has a route
    /// to. The default is a documentation address that no host answers.
    #[arg(long, env = "TRELLIS_CONNECT_ADDR", default_value = "192.0.2.1:20001")]
    connect_addr: SocketAddr,

    /// How long the redirected connection may take to arrive.
    #[arg(long, env = "TRELLIS_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// The proxy's UID: validate refuses to run as it, since its traffic is exempt.
    #[arg(
        long,
        env = "TRELLIS_PROXY_UID",
        default_value_t = 2102,
        value_name = "UID"
    )]
    proxy_uid: u32,
}

impl InstallArgs {
    fn settings(&self) -> Result<Settings, Error> {
        let ports = |flag, value: &Option<String>| {
            PortList::for_flag(flag, value.as_deref().unwrap_or_default())
        };
        let cidrs = |flag, value: &Option<String>| {
            CidrList::for_flag(flag, value.as_deref().unwrap_or_default())
        };
        let settings = Settings {
            inbound_port: port_for_flag("--inbound-port", &self.inbound_port)?,
            outbound_port: port_for_flag("--outbound-port", &self.outbound_port)?,
            admin_port: port_for_flag("--admin-port", &self.admin_port)?,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            skip_inbound_ports: ports("--skip-inbound-ports", &self.skip_inbound_ports)?,
            skip_outbound_ports: ports("--skip-outbound-ports", &self.skip_outbound_ports)?,
            skip_outbound_cidrs: cidrs("--skip-outbound-cidrs", &self.skip_outbound_cidrs)?,
            include_outbound_cidrs: cidrs(
                "--include-outbound-cidrs",
                &self.include_outbound_cidrs,
            )?,
            redirect_inbound_ports: ports(
                "--redirect-inbound-ports",
                &self.redirect_inbound_ports,
            )?,
            ipv6: self.ipv6,
        };
        settings.check()?;
        Ok(settings)
    }

    fn binaries(&self) -> Binaries {
        Binaries {
            iptables_save: self.iptables_save.clone(),
            iptables_restore: self.iptables_restore.clone(),
            ip6tables_save: self.ip6tables_save.clone(),
            ip6tables_restore: self.ip6tables_restore.clone(),
            nft: self.nft.clone(),
        }
    }
}

fn main() -> ExitCode {
    // Clap prints its own usage errors and exits with 2, our EXIT_USAGE.
    let cli = Cli::parse();
    init_tracing();
    let result = match &cli.command {
        Some(Command::Validate(args)) => run_validate(args),
        None => run(&cli.install),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One plain line: it is what `kubectl describe pod` shows of a failed init.
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(args: &InstallArgs) -> Result<(), Error> {
    // Every flag is checked before anything is read or changed.
    let settings = args.settings()?;
    let choice = BackendChoice::parse(&args.backend)?;
    let congestion = LocalCongestion::for_flag(&args.local_congestion_control)?;
    let binaries = args.binaries();
    let (mut passes, backends) = if args.cleanup {
        cleanup(choice, &binaries, args.dry_run)?
    } else {
        install(&settings, choice, &binaries, args.dry_run)?
    };
    let ip = Ip::new(&args.ip);
    match ip.set_local_routes(&congestion, settings.ipv6, args.cleanup, args.dry_run) {
        Ok(pass) => passes.extend(pass),
        Err(error) => warn!(
            %error,
            "the pod's local routes keep their congestion control (--local-congestion-control)"
        ),
    }
    if args.dry_run {
        return print(&passes);
    }
    for backend in backends {
        for (family, table) in backend.listing() {
            info!(backend = %backend.name(), family, rules = %table, "resulting rules");
        }
    }
    Ok(())
}

/// Installs with the chosen backend, then removes Trellis from any other backend that
/// still holds an earlier run's rules (a node that switched), so that exactly one set
/// of rules redirects. Named binaries are a choice: nothing else is looked at then.
fn install(
    settings: &Settings,
    choice: BackendChoice,
    binaries: &Binaries,
    dry_run: bool,
) -> Result<(Vec<Pass>, Vec<Backend>), Error> {
    let backend = match choice {
        BackendChoice::Legacy => binaries.iptables(Flavour::Legacy),
        BackendChoice::Nft => binaries.iptables(Flavour::Nft),
        BackendChoice::Nftables => binaries.nftables(),
        BackendChoice::Auto if binaries.named() => binaries.iptables(Flavour::Nft),
        BackendChoice::Auto => match detect(binaries) {
            Ok((backend, why)) => {
                info!(backend = %backend.name(), why, "backend chosen");
                backend
            }
            Err(err) if dry_run => {
                warn!(error = %err, "cannot inspect the namespace; showing iptables-nft");
                binaries.iptables(Flavour::Nft)
            }
            Err(err) => return Err(err),
        },
    };
    info!(
        backend = %backend.name(),
        inbound_port = settings.inbound_port,
        outbound_port = settings.outbound_port,
        admin_port = settings.admin_port,
        proxy_uid = settings.proxy_uid,
        proxy_gid = ?settings.proxy_gid,
        skip_inbound_ports = %settings.skip_inbound_ports,
        skip_outbound_ports = %settings.skip_outbound_ports,
        skip_outbound_cidrs = %settings.skip_outbound_cidrs,
        include_outbound_cidrs = %settings.include_outbound_cidrs,
        redirect_inbound_ports = %settings.redirect_inbound_ports,
        ipv6 = settings.ipv6,
        dry_run,
        "installing"
    );
    let passes = backend.install(settings, dry_run)?;
    if !dry_run && !binaries.named() {
        for other in every_backend(binaries) {
            if other.name() != backend.name() && other.has_trellis()? {
                info!(backend = %other.name(), "removing an earlier run's rules");
                other.cleanup(false)?;
            }
        }
    }
    Ok((passes, vec![backend]))
}

/// Removes Trellis from the chosen backend, or with `auto` from every backend that
/// holds its rules.
fn cleanup(
    choice: BackendChoice,
    binaries: &Binaries,
    dry_run: bool,
) -> Result<(Vec<Pass>, Vec<Backend>), Error> {
    let backends = match choice {
        BackendChoice::Legacy => vec![binaries.iptables(Flavour::Legacy)],
        BackendChoice::Nft => vec![binaries.iptables(Flavour::Nft)],
        BackendChoice::Nftables => vec![binaries.nftables()],
        BackendChoice::Auto if binaries.named() => vec![binaries.iptables(Flavour::Nft)],
        BackendChoice::Auto => {
            let mut holding = Vec::new();
            for backend in every_backend(binaries) {
                if backend.has_trellis()? {
                    holding.push(backend);
                }
            }
            if holding.is_empty() {
                info!("no Trellis rules found; nothing to remove");
            }
            holding
        }
    };
    let mut passes = Vec::new();
    for backend in &backends {
        info!(backend = %backend.name(), dry_run, "removing Trellis's rules");
        passes.extend(backend.cleanup(dry_run)?);
    }
    Ok((passes, backends))
}

fn every_backend(binaries: &Binaries) -> [Backend; 3] {
    [
        binaries.nftables(),
        binaries.iptables(Flavour::Nft),
        binaries.iptables(Flavour::Legacy),
    ]
}

/// The documents, each after a comment line naming the command that takes it; the
/// comment is valid syntax for iptables-restore and nft alike.
fn print(passes: &[Pass]) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    for pass in passes {
        write!(stdout, "# {}\n{}", pass.command, pass.document).map_err(Error::Stdout)?;
    }
    stdout.flush().map_err(Error::Stdout)
}

fn run_validate(args: &ValidateArgs) -> Result<(), Error> {
    let check = Validation {
        outbound_port: port_for_flag("--outbound-port", &args.outbound_port)?,
        connect_addr: args.connect_addr,
        timeout: args.timeout,
        proxy_uid: args.proxy_uid,
    };
    let orig_dst = validate(&check)?;
    info!(
        connect_addr = %check.connect_addr,
        %orig_dst,
        outbound_port = check.outbound_port,
        "outbound connections are redirected to the proxy's port, original destination intact"
    );
    Ok(())
}

fn init_tracing() {
    // Logs go to stderr so that `--dry-run` output on stdout is exactly the documents.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use trellis_proxy_init::env_of;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_its_trellis_environment_variable() {
        let cli = Cli::command();
        let validate = cli
            .find_subcommand("validate")
            .expect("validate subcommand")
            .clone();
        for arg in cli.get_arguments().chain(validate.get_arguments()) {
            let Some(long) = arg.get_long() else { continue };
            let env = arg.get_env().and_then(|env| env.to_str());
            assert_eq!(env, Some(env_of(&format!("--{long}")).as_str()), "--{long}");
        }
    }

    fn parse(args: &[&str]) -> InstallArgs {
        let cli =
            Cli::try_parse_from(std::iter::once("trellis-proxy-init").chain(args.iter().copied()))
                .expect("flags parse");
        cli.install
    }

    #[test]
    fn the_defaults_are_the_design_numbers() {
        assert_eq!(parse(&[]).settings().expect("valid"), Settings::default());
    }

    #[test]
    fn ipv6_is_on_unless_turned_off() {
        assert!(parse(&[]).ipv6);
        assert!(parse(&["--ipv6"]).ipv6);
        assert!(!parse(&["--ipv6=false"]).ipv6);
        assert!(!parse(&["--ipv6=0"]).ipv6);
    }

    #[test]
    fn every_list_is_checked_against_its_flag() {
        for (flag, value, code) in [
            ("--skip-inbound-ports", "25,x", 2),
            ("--redirect-inbound-ports", "8080-80", 2),
            ("--inbound-port", "http", 2),
            ("--skip-outbound-cidrs", "10.0.0.0/33", 9),
            ("--include-outbound-cidrs", "nowhere", 9),
        ] {
            let err = parse(&[flag, value]).settings().expect_err("malformed");
            assert!(err.to_string().contains(flag), "{err}");
            assert_eq!(err.exit_code(), code, "{flag}");
        }
    }
}
