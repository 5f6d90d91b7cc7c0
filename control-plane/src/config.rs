//! The controller's one typed configuration.
//!
//! `main` builds it from flags and `TRELLIS_*` variables (clap lives only there); tests
//! build it directly. [`Config::validate`] reports every bad value with its flag name
//! before anything is read from disk or bound.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use trellis_identity::SpiffeId;

use crate::Error;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8086";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_TOKEN_AUDIENCE: &str = "identity.trellis.io";
pub const DEFAULT_CERT_LIFETIME: &str = "24h";

/// Everything `trellis-controller` needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gRPC identity service listens (`--listen`).
    pub listen: SocketAddr,
    /// The trust domain of every SPIFFE ID the controller issues (`--trust-domain`).
    pub trust_domain: String,
    /// Where the trust anchor and the issuer come from.
    pub ca: CaSource,
    /// The JWKS holding the ServiceAccount token issuer's public keys (`--token-jwks`).
    pub token_jwks: PathBuf,
    /// The audience a token must be minted for (`--token-audience`), so that a token
    /// meant for the Kubernetes API cannot be replayed here.
    pub token_audience: String,
    /// How long a workload certificate lasts (`--cert-lifetime`).
    pub cert_lifetime: Duration,
    /// How logs are written to stderr (`--log-format`).
    pub log_format: LogFormat,
}

/// Where the certificate authority's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `--dev-ca DIR`: a root and an issuer generated into `DIR` on first use, so that
    /// a local mesh needs no set-up.
    Dev(PathBuf),
    /// `--trust-anchors`, `--issuer-cert`, `--issuer-key`: an operator's CA.
    Files {
        trust_anchors: PathBuf,
        issuer_cert: PathBuf,
        issuer_key: PathBuf,
    },
}

/// The two log formats: plain for people, JSON for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a log format: use plain or json")]
pub struct ParseLogFormatError(String);

impl FromStr for LogFormat {
    type Err = ParseLogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(ParseLogFormatError(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

impl Config {
    /// Checks the values that flag parsing cannot: that the trust domain can name a
    /// workload and that the lifetimes make sense.
    pub fn validate(&self) -> Result<(), Error> {
        // The trust domain must survive the same parser every proxy uses.
        SpiffeId::for_service_account(&self.trust_domain, "trellis-system", "trellis-controller")
            .map_err(|e| Error::InvalidFlag {
            flag: "trust-domain",
            value: self.trust_domain.clone(),
            reason: e.to_string(),
        })?;
        if self.token_audience.is_empty() {
            return Err(Error::InvalidFlag {
                flag: "token-audience",
                value: String::new(),
                reason: "a token must name an audience; the empty one would match none".into(),
            });
        }
        if self.cert_lifetime < Duration::from_secs(1) {
            return Err(Error::InvalidFlag {
                flag: "cert-lifetime",
                value: humantime::format_duration(self.cert_lifetime).to_string(),
                reason: "a certificate must last at least one second".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().unwrap(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            ca: CaSource::Dev("/tmp/ca".into()),
            token_jwks: "/tmp/jwks.json".into(),
            token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            cert_lifetime: humantime::parse_duration(DEFAULT_CERT_LIFETIME).unwrap(),
            log_format: LogFormat::Plain,
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn a_bad_trust_domain_is_reported_with_its_flag() {
        let config = Config {
            trust_domain: "Cluster/Local".into(),
            ..config()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("--trust-domain"), "{message}");
        assert!(message.contains("Cluster/Local"), "{message}");
    }

    #[test]
    fn a_zero_lifetime_is_refused() {
        let config = Config {
            cert_lifetime: Duration::ZERO,
            ..config()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--cert-lifetime")
        );
    }

    #[test]
    fn log_formats_parse() {
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Plain);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
