//! `trellis-proxy-init`: turns flags into [`Settings`], reads the nat table, applies (or
//! prints) one `iptables-restore` document, and maps failures to the exit codes listed
//! in the crate documentation.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::builder::BoolishValueParser;
use tracing::{debug, info, warn};
use trellis_proxy_init::{Error, Iptables, PortList, Settings, render, render_cleanup};

/// Installs the iptables rules that send a pod's TCP traffic through its Trellis proxy.
#[derive(Debug, Parser)]
#[command(name = "trellis-proxy-init", version)]
struct Args {
    /// The proxy's inbound port: inbound TCP is redirected there.
    #[arg(long, env = "TRELLIS_INBOUND_PORT", default_value_t = 4143, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    inbound_port: u16,

    /// The proxy's outbound port: outbound TCP is redirected there.
    #[arg(long, env = "TRELLIS_OUTBOUND_PORT", default_value_t = 4140, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    outbound_port: u16,

    /// The proxy's admin port: never redirected, so probes and scrapes reach the proxy.
    #[arg(long, env = "TRELLIS_ADMIN_PORT", default_value_t = 4191, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    admin_port: u16,

    /// The UID the proxy runs as: its own traffic is never redirected.
    #[arg(
        long,
        env = "TRELLIS_PROXY_UID",
        default_value_t = 2102,
        value_name = "UID"
    )]
    proxy_uid: u32,

    /// Inbound ports that bypass the proxy, e.g. `25,443,8000-8100`.
    #[arg(long, env = "TRELLIS_SKIP_INBOUND_PORTS", value_name = "PORTS")]
    skip_inbound_ports: Option<String>,

    /// Outbound ports that bypass the proxy, e.g. `25,443,8000-8100`.
    #[arg(long, env = "TRELLIS_SKIP_OUTBOUND_PORTS", value_name = "PORTS")]
    skip_outbound_ports: Option<String>,

    /// Print the iptables-restore document instead of applying it.
    // Boolish, so that `TRELLIS_DRY_RUN=1` / `yes` / `false` work as in shell scripts.
    #[arg(long, env = "TRELLIS_DRY_RUN", value_parser = BoolishValueParser::new())]
    dry_run: bool,

    /// Remove Trellis's chains and the jumps to them, instead of installing them.
    // Boolish, so that `TRELLIS_CLEANUP=1` / `yes` / `false` work as in shell scripts.
    #[arg(long, env = "TRELLIS_CLEANUP", value_parser = BoolishValueParser::new())]
    cleanup: bool,

    /// The iptables-restore binary (a name looked up in PATH, or a path).
    #[arg(
        long,
        env = "TRELLIS_IPTABLES_RESTORE",
        default_value = "iptables-restore",
        value_name = "BINARY"
    )]
    iptables_restore: PathBuf,

    /// The iptables-save binary (a name looked up in PATH, or a path).
    #[arg(
        long,
        env = "TRELLIS_IPTABLES_SAVE",
        default_value = "iptables-save",
        value_name = "BINARY"
    )]
    iptables_save: PathBuf,
}

impl Args {
    fn settings(&self) -> Result<Settings, Error> {
        let ports = |flag, value: &Option<String>| {
            PortList::for_flag(flag, value.as_deref().unwrap_or_default())
        };
        Ok(Settings {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            admin_port: self.admin_port,
            proxy_uid: self.proxy_uid,
            skip_inbound_ports: ports("--skip-inbound-ports", &self.skip_inbound_ports)?,
            skip_outbound_ports: ports("--skip-outbound-ports", &self.skip_outbound_ports)?,
        })
    }
}

fn main() -> ExitCode {
    // Clap prints its own usage errors and exits with 2, our EXIT_USAGE.
    let args = Args::parse();
    init_tracing();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One plain line: it is what `kubectl describe pod` shows of a failed init.
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let settings = args.settings()?;
    let iptables = Iptables::new(&args.iptables_save, &args.iptables_restore);

    let existing = match iptables.save_nat() {
        Ok(existing) => existing,
        // A dry run is for reading, possibly on a machine where we may not look at the
        // rules; the document for a fresh namespace is still worth printing.
        Err(err) if args.dry_run => {
            warn!(error = %err, "cannot read the nat table; rendering for an empty one");
            String::new()
        }
        Err(err) => return Err(err),
    };
    let document = if args.cleanup {
        render_cleanup(&existing)
    } else {
        render(&settings, &existing)
    };

    if args.dry_run {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(document.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(Error::Stdout);
    }

    info!(
        action = if args.cleanup { "cleanup" } else { "install" },
        inbound_port = settings.inbound_port,
        outbound_port = settings.outbound_port,
        admin_port = settings.admin_port,
        proxy_uid = settings.proxy_uid,
        skip_inbound_ports = args.skip_inbound_ports.as_deref().unwrap_or_default(),
        skip_outbound_ports = args.skip_outbound_ports.as_deref().unwrap_or_default(),
        "applying iptables rules"
    );
    debug!(%document, "iptables-restore document");
    iptables.restore(&document)?;

    let nat = iptables.save_nat()?;
    info!(nat_table = %nat.trim_end(), "iptables rules applied");
    Ok(())
}

fn init_tracing() {
    // Logs go to stderr so that `--dry-run` output on stdout is exactly the document.
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
        Args::command().debug_assert();
    }

    #[test]
    fn every_flag_has_its_trellis_environment_variable() {
        for arg in Args::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let env = arg.get_env().and_then(|env| env.to_str());
            assert_eq!(env, Some(env_of(&format!("--{long}")).as_str()), "--{long}");
        }
    }

    #[test]
    fn the_defaults_are_the_design_numbers() {
        let args = Args::try_parse_from(["trellis-proxy-init"]).expect("defaults parse");
        assert_eq!(args.settings().expect("valid"), Settings::default());
    }

    #[test]
    fn port_lists_are_checked_against_their_flag() {
        let args = Args::try_parse_from(["trellis-proxy-init", "--skip-inbound-ports", "25,x"])
            .expect("clap accepts any string");
        let err = args.settings().expect_err("malformed");
        assert!(err.to_string().contains("--skip-inbound-ports"), "{err}");
    }
}
