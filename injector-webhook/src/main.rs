//! `trellis-injector serve`: the admission webhook as a process. Flags and
//! environment into one [`Config`], logs, the serving certificate, then
//! [`trellis_injector::server::serve`] until SIGTERM or Ctrl-C.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use trellis_injector::MeshConfig;
use trellis_injector::server::{Metrics, ServingCert, Webhook, serve};

/// The Trellis injector: the admission webhook that adds proxy-init and the proxy to
/// every pod created in a namespace labelled trellis.io/inject=enabled, and to pods
/// labelled trellis.io/inject: enabled in namespaces without that label.
#[derive(Debug, Parser)]
#[command(name = "trellis-injector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the webhook over HTTPS: POST /inject (pods of labelled namespaces), POST
    /// /inject-opt-in (pods that opt in from unlabelled namespaces), GET /live, /ready,
    /// /metrics, /config.
    Serve(Config),
}

/// How the webhook runs: flags, each also a `TRELLIS_*` variable.
#[derive(Debug, clap::Args)]
struct Config {
    /// Address to serve HTTPS on.
    #[arg(long, env = "TRELLIS_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,

    /// Serving certificate chain, PEM, for the webhook Service's DNS name; reloaded
    /// when it changes.
    #[arg(long, env = "TRELLIS_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf,

    /// Serving private key, PEM (PKCS#8, PKCS#1 or SEC1); reloaded with the
    /// certificate.
    #[arg(long, env = "TRELLIS_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf,

    /// Mesh config (YAML MeshConfig); without it, the defaults.
    #[arg(long, env = "TRELLIS_MESH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// How often the certificate files are re-read even without a change event.
    #[arg(
        long,
        env = "TRELLIS_CERT_POLL",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    cert_poll: Duration,

    /// Log format on stderr. RUST_LOG filters (default info).
    #[arg(long, env = "TRELLIS_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Serve(config) = Cli::parse().command;
    init_logs(config.log_format);
    let mesh = match &config.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --config {}", path.display()))?;
            MeshConfig::from_yaml(&text).with_context(|| format!("--config {}", path.display()))?
        }
        None => MeshConfig::default(),
    };
    let cert = ServingCert::load(&config.tls_cert, &config.tls_key)
        .context("cannot load the serving certificate (--tls-cert, --tls-key)")?;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    cert.clone()
        .watch(config.cert_poll, metrics.clone(), shutdown.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        cert = %config.tls_cert.display(),
        "serving the admission webhook"
    );
    let webhook = Arc::new(Webhook {
        mesh,
        cert,
        metrics,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    serve(listener, webhook)
        .await
        .context("cannot build the TLS configuration")?;
    // Requests already received finish; give them a moment before the process ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tracing::info!("stopped");
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Completes on SIGTERM (how Kubernetes stops the pod) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the injector");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let Command::Serve(config) = Cli::try_parse_from(args.iter().copied())?.command;
        Ok(config)
    }

    #[test]
    fn the_charts_command_line_parses() {
        let config = parse(&[
            "trellis-injector",
            "serve",
            "--listen=0.0.0.0:8443",
            "--tls-cert=/var/run/trellis/tls/tls.crt",
            "--tls-key=/var/run/trellis/tls/tls.key",
            "--config=/etc/trellis/mesh-config.yaml",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(
            config.tls_cert,
            PathBuf::from("/var/run/trellis/tls/tls.crt")
        );
        assert_eq!(
            config.tls_key,
            PathBuf::from("/var/run/trellis/tls/tls.key")
        );
        assert_eq!(config.config, Some("/etc/trellis/mesh-config.yaml".into()));
        assert_eq!(config.cert_poll, Duration::from_secs(10));
    }

    #[test]
    fn the_certificate_and_key_are_required() {
        assert!(parse(&["trellis-injector", "serve", "--tls-cert=c"]).is_err());
        assert!(parse(&["trellis-injector", "serve", "--tls-key=k"]).is_err());
        let config = parse(&["trellis-injector", "serve", "--tls-cert=c", "--tls-key=k"]).unwrap();
        assert_eq!(config.config, None);
    }
}
