//! `trellis-controller`: flags and environment into a [`Config`], logs, then
//! [`trellis_control_plane::run`] until SIGTERM or Ctrl-C; or, with `crds`, the
//! custom resource definitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use std::io::IsTerminal;

use clap::{CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trellis_control_plane::config::{
    DEFAULT_ADMIN_ADDR, DEFAULT_CERT_LIFETIME, DEFAULT_DEBOUNCE, DEFAULT_LISTEN,
    DEFAULT_TOKEN_AUDIENCE, DEFAULT_TRUST_DOMAIN,
};
use trellis_control_plane::{CaSource, Config, Listeners, LogFormat, TokenAuth, crd};

/// The Trellis controller: certificate authority, identity service, and discovery
/// (config push) from a directory of YAML objects and from Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "trellis-controller",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Route and AuthorizationPolicy CustomResourceDefinitions as YAML, or
    /// write them into a directory (the chart's: charts/trellis/crds).
    Crds {
        /// Write one file per definition into DIR instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Address the gRPC (TLS) server listens on.
    #[arg(long, env = "TRELLIS_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Trust domain of every SPIFFE ID issued.
    #[arg(long, env = "TRELLIS_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,

    /// Directory of a development CA (ca.crt, ca.key, issuer.crt, issuer.key),
    /// generated there if absent. Instead of the three files below.
    #[arg(
        long,
        env = "TRELLIS_DEV_CA",
        value_name = "DIR",
        conflicts_with_all = ["trust_anchors", "issuer_cert", "issuer_key"],
        required_unless_present_all = ["trust_anchors", "issuer_cert", "issuer_key"],
    )]
    dev_ca: Option<PathBuf>,

    /// Trust anchors (root certificates), PEM.
    #[arg(
        long,
        env = "TRELLIS_TRUST_ANCHORS",
        value_name = "FILE",
        requires_all = ["issuer_cert", "issuer_key"],
    )]
    trust_anchors: Option<PathBuf>,

    /// Issuer (intermediate) certificate, PEM, signed by a trust anchor.
    #[arg(
        long,
        env = "TRELLIS_ISSUER_CERT",
        value_name = "FILE",
        requires_all = ["trust_anchors", "issuer_key"],
    )]
    issuer_cert: Option<PathBuf>,

    /// Issuer private key, unencrypted PKCS#8 PEM.
    #[arg(
        long,
        env = "TRELLIS_ISSUER_KEY",
        value_name = "FILE",
        requires_all = ["trust_anchors", "issuer_cert"],
    )]
    issuer_key: Option<PathBuf>,

    /// JWKS file with the ServiceAccount token issuer's public keys (RSA, EC P-256).
    #[arg(
        long,
        env = "TRELLIS_TOKEN_JWKS",
        value_name = "FILE",
        required_unless_present = "token_review",
        conflicts_with = "token_review"
    )]
    token_jwks: Option<PathBuf>,

    /// Check tokens with a TokenReview to the Kubernetes API instead of a JWKS.
    #[arg(long, env = "TRELLIS_TOKEN_REVIEW")]
    token_review: bool,

    /// Audience that tokens must name in their `aud` claim.
    #[arg(long, env = "TRELLIS_TOKEN_AUDIENCE", default_value = DEFAULT_TOKEN_AUDIENCE)]
    token_audience: String,

    /// Lifetime of workload certificates, e.g. 24h, 90m, 20s.
    #[arg(
        long,
        env = "TRELLIS_CERT_LIFETIME",
        default_value = DEFAULT_CERT_LIFETIME,
        value_parser = humantime::parse_duration,
    )]
    cert_lifetime: Duration,

    /// Log format on stderr: plain or json. RUST_LOG filters (default info).
    #[arg(long, env = "TRELLIS_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,

    /// Directory of YAML objects (Service, Endpoints, Route, AuthorizationPolicy) to
    /// serve, watched for changes. It must exist. Without it, no objects.
    #[arg(long, env = "TRELLIS_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,

    /// Watch the cluster's Services, EndpointSlices, Pods, Routes and
    /// AuthorizationPolicies (in-cluster config, or the current kubeconfig).
    #[arg(long, env = "TRELLIS_KUBERNETES")]
    kubernetes: bool,

    /// Address of the HTTP admin server: /proxies, /sources, /metrics, /ready, /live,
    /// /config.
    #[arg(long, env = "TRELLIS_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    admin_addr: SocketAddr,

    /// How long changes must pause before they are pushed, e.g. 50ms; a burst is
    /// pushed at most 4 times this long after its first change.
    #[arg(
        long,
        env = "TRELLIS_DEBOUNCE",
        default_value = DEFAULT_DEBOUNCE,
        value_parser = humantime::parse_duration,
    )]
    debounce: Duration,
}

impl Args {
    fn into_config(self) -> Config {
        let ca = match (
            self.dev_ca,
            self.trust_anchors,
            self.issuer_cert,
            self.issuer_key,
        ) {
            (Some(dir), ..) => CaSource::Dev(dir),
            (None, Some(trust_anchors), Some(issuer_cert), Some(issuer_key)) => CaSource::Files {
                trust_anchors,
                issuer_cert,
                issuer_key,
            },
            // clap's `required_unless_present_all` and `requires_all` rule this out;
            // should they not, the user still gets a usage error, not a panic.
            _ => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "give --dev-ca DIR, or all of --trust-anchors, --issuer-cert and --issuer-key",
                )
                .exit(),
        };
        let token_auth = match self.token_jwks {
            Some(jwks) => TokenAuth::Jwks(jwks),
            // clap requires --token-jwks unless --token-review is given.
            None => TokenAuth::TokenReview,
        };
        Config {
            listen: self.listen,
            trust_domain: self.trust_domain,
            ca,
            token_auth,
            token_audience: self.token_audience,
            cert_lifetime: self.cert_lifetime,
            log_format: self.log_format,
            config_dir: self.config_dir,
            kubernetes: self.kubernetes,
            admin_addr: self.admin_addr,
            debounce: self.debounce,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crds { out }) = cli.command {
        return write_crds(out);
    }
    let config = cli.args.into_config();
    init_logs(config.log_format);
    config.validate()?;
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", config.admin_addr))?;
    trellis_control_plane::run(&config, Listeners { grpc, admin }, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints the definitions as one YAML stream, or writes a file each into `out`.
fn write_crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    let definitions = crd::definitions().context("cannot write the definitions as YAML")?;
    match out {
        None => {
            let documents: Vec<String> = definitions.into_iter().map(|(_, yaml)| yaml).collect();
            print!("{}", documents.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create --out {}", dir.display()))?;
            for (file, yaml) in definitions {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
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

/// Completes on SIGTERM (how Kubernetes and `meshctl local down` stop us) or Ctrl-C.
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
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the controller");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let cli = Cli::try_parse_from(args.iter().copied())?;
        assert!(cli.command.is_none(), "{args:?} ran a subcommand");
        Ok(cli.args)
    }

    #[test]
    fn dev_ca_and_ca_files_exclude_each_other() {
        let base = ["trellis-controller", "--token-jwks", "/j"];
        let dev = parse(&[&base[..], &["--dev-ca", "/ca"]].concat()).unwrap();
        assert_eq!(dev.into_config().ca, CaSource::Dev("/ca".into()));
        let files = [
            "--trust-anchors",
            "/a",
            "--issuer-cert",
            "/c",
            "--issuer-key",
            "/k",
        ];
        assert!(matches!(
            parse(&[&base[..], &files].concat())
                .unwrap()
                .into_config()
                .ca,
            CaSource::Files { .. }
        ));
        assert!(parse(&base).is_err(), "no CA at all");
        assert!(
            parse(&[&base[..], &files[..2]].concat()).is_err(),
            "anchors alone"
        );
        assert!(parse(&[&base[..], &files, &["--dev-ca", "/ca"]].concat()).is_err());
    }

    #[test]
    fn lifetimes_and_formats_parse() {
        let args = parse(&[
            "trellis-controller",
            "--token-jwks",
            "/j",
            "--dev-ca",
            "/ca",
            "--cert-lifetime",
            "20s",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.cert_lifetime, Duration::from_secs(20));
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(args.admin_addr, DEFAULT_ADMIN_ADDR.parse().unwrap());
        assert_eq!(args.debounce, Duration::from_millis(50));
        assert_eq!(args.config_dir, None);
        assert!(!args.kubernetes);
        assert!(!args.token_review);
    }

    #[test]
    fn discovery_flags_parse() {
        let args = parse(&[
            "trellis-controller",
            "--token-jwks",
            "/j",
            "--dev-ca",
            "/ca",
            "--config-dir",
            "/etc/trellis/objects",
            "--admin-addr",
            "127.0.0.1:19990",
            "--debounce",
            "200ms",
        ])
        .unwrap();
        let config = args.into_config();
        assert_eq!(config.config_dir, Some("/etc/trellis/objects".into()));
        assert_eq!(config.admin_addr, "127.0.0.1:19990".parse().unwrap());
        assert_eq!(config.debounce, Duration::from_millis(200));
    }

    #[test]
    fn in_a_cluster_tokens_may_be_reviewed_and_the_cluster_watched() {
        let args = parse(&[
            "trellis-controller",
            "--dev-ca",
            "/ca",
            "--token-review",
            "--kubernetes",
        ])
        .unwrap();
        let config = args.into_config();
        assert_eq!(config.token_auth, TokenAuth::TokenReview);
        assert!(config.kubernetes);

        let jwks = parse(&[
            "trellis-controller",
            "--dev-ca",
            "/ca",
            "--token-jwks",
            "/j",
        ])
        .unwrap();
        assert_eq!(jwks.into_config().token_auth, TokenAuth::Jwks("/j".into()));
        assert!(
            parse(&["trellis-controller", "--dev-ca", "/ca"]).is_err(),
            "no way to check tokens"
        );
        assert!(
            parse(&[
                "trellis-controller",
                "--dev-ca",
                "/ca",
                "--token-jwks",
                "/j",
                "--token-review"
            ])
            .is_err(),
            "two ways to check tokens"
        );
    }

    #[test]
    fn crds_needs_none_of_the_servers_flags() {
        let cli =
            Cli::try_parse_from(["trellis-controller", "crds", "--out", "charts/trellis/crds"])
                .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Crds { out: Some(dir) }) if dir.as_path() == std::path::Path::new("charts/trellis/crds")
        ));
        assert!(Cli::try_parse_from(["trellis-controller", "--dev-ca", "/ca", "crds"]).is_err());
    }
}
