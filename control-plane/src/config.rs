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
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9990";
pub const DEFAULT_DEBOUNCE: &str = "50ms";

/// The longest `--debounce`: a burst may hold a push back four times as long, and
/// proxies should see a change within a second or two.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Everything `trellis-controller` needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gRPC identity service listens (`--listen`).
    pub listen: SocketAddr,
    /// The trust domain of every SPIFFE ID the controller issues (`--trust-domain`).
    pub trust_domain: String,
    /// Where the trust anchor and the issuer come from.
    pub ca: CaSource,
    /// How ServiceAccount tokens are checked (`--token-jwks` or `--token-review`).
    pub token_auth: TokenAuth,
    /// The audience a token must be minted for (`--token-audience`), so that a token
    /// meant for the Kubernetes API cannot be replayed here.
    pub token_audience: String,
    /// How long a workload certificate lasts (`--cert-lifetime`).
    pub cert_lifetime: Duration,
    /// How logs are written to stderr (`--log-format`).
    pub log_format: LogFormat,
    /// The directory of YAML objects the file source watches (`--config-dir`); none:
    /// no file source.
    pub config_dir: Option<PathBuf>,
    /// Whether to watch the cluster's Services, EndpointSlices, Pods, Routes and
    /// AuthorizationPolicies (`--kubernetes`). After the file source, whose objects
    /// win a name both define.
    pub kubernetes: bool,
    /// Where the HTTP admin server (`/proxies`, `/sources`, `/metrics`, `/ready`,
    /// `/live`, `/config`) listens (`--admin-addr`).
    pub admin_addr: SocketAddr,
    /// How long the sources must be quiet before a new snapshot is pushed
    /// (`--debounce`), so that a burst of edits is one push.
    pub debounce: Duration,
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

/// How the identity service checks ServiceAccount tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAuth {
    /// `--token-jwks FILE`: the signature, against the issuer's public keys, read
    /// once; needs no API access, which is what `meshctl local` has.
    Jwks(PathBuf),
    /// `--token-review`: the API server decides, with a TokenReview per request; also
    /// refuses tokens whose pod or ServiceAccount is gone.
    TokenReview,
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
        if self.debounce > MAX_DEBOUNCE {
            return Err(Error::InvalidFlag {
                flag: "debounce",
                value: humantime::format_duration(self.debounce).to_string(),
                reason: format!(
                    "at most {}: a burst may delay a push {} times as long",
                    humantime::format_duration(MAX_DEBOUNCE),
                    crate::model::DEBOUNCE_CAP
                ),
            });
        }
        Ok(())
    }

    /// The configuration in force, as the admin port's `/config` shows it.
    pub fn effective(&self) -> serde_json::Value {
        let ca = match &self.ca {
            CaSource::Dev(dir) => serde_json::json!({ "dev_ca": dir }),
            CaSource::Files {
                trust_anchors,
                issuer_cert,
                issuer_key,
            } => serde_json::json!({
                "trust_anchors": trust_anchors,
                "issuer_cert": issuer_cert,
                "issuer_key": issuer_key,
            }),
        };
        serde_json::json!({
            "listen": self.listen.to_string(),
            "trust_domain": self.trust_domain,
            "ca": ca,
            "token_auth": match &self.token_auth {
                TokenAuth::Jwks(_) => "jwks",
                TokenAuth::TokenReview => "token_review",
            },
            "token_jwks": match &self.token_auth {
                TokenAuth::Jwks(path) => Some(path),
                TokenAuth::TokenReview => None,
            },
            "token_audience": self.token_audience,
            "cert_lifetime": humantime::format_duration(self.cert_lifetime).to_string(),
            "log_format": self.log_format.to_string(),
            "config_dir": self.config_dir,
            "kubernetes": self.kubernetes,
            "admin_addr": self.admin_addr.to_string(),
            "debounce": humantime::format_duration(self.debounce).to_string(),
        })
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
            token_auth: TokenAuth::Jwks("/tmp/jwks.json".into()),
            token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            cert_lifetime: humantime::parse_duration(DEFAULT_CERT_LIFETIME).unwrap(),
            log_format: LogFormat::Plain,
            config_dir: None,
            kubernetes: false,
            admin_addr: DEFAULT_ADMIN_ADDR.parse().unwrap(),
            debounce: humantime::parse_duration(DEFAULT_DEBOUNCE).unwrap(),
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
    fn a_debounce_longer_than_a_second_is_refused() {
        let config = Config {
            debounce: Duration::from_secs(5),
            ..config()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("--debounce"), "{message}");
    }

    #[test]
    fn the_effective_config_names_every_setting() {
        let config = Config {
            config_dir: Some("/etc/trellis/objects".into()),
            ..config()
        };
        let effective = config.effective();
        assert_eq!(effective["config_dir"], "/etc/trellis/objects");
        assert_eq!(effective["admin_addr"], DEFAULT_ADMIN_ADDR);
        assert_eq!(effective["debounce"], "50ms");
        assert_eq!(effective["ca"]["dev_ca"], "/tmp/ca");
        assert_eq!(effective["token_auth"], "jwks");
        assert_eq!(effective["token_jwks"], "/tmp/jwks.json");
        assert_eq!(effective["kubernetes"], false);

        let in_cluster = Config {
            token_auth: TokenAuth::TokenReview,
            kubernetes: true,
            ..self::config()
        }
        .effective();
        assert_eq!(in_cluster["token_auth"], "token_review");
        assert_eq!(in_cluster["token_jwks"], serde_json::Value::Null);
        assert_eq!(in_cluster["kubernetes"], true);
    }

    #[test]
    fn log_formats_parse() {
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Plain);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
