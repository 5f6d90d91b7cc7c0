//! This workload's certificate: making the key pair, getting it certified, renewing
//! it, and handing the current one to every new TLS handshake.
//!
//! The private key is made here, in memory, and never leaves the process: only a CSR
//! and the ServiceAccount token go to the controller. The certificate is swapped
//! atomically ([`ArcSwapOption`]) at about 70 % of its lifetime, so new handshakes
//! use the new one while live connections keep the session they have.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio_util::sync::CancellationToken;
use trellis_identity::{Presenter, SpiffeId, TrustAnchors, verify_chain};
use trellis_proto::identity::v1::CertifyRequest;
use trellis_proto::identity::v1::identity_client::IdentityClient;

use crate::backoff::Backoff;
use crate::controller::Controller;
use crate::metrics::{CertifyLabels, Metrics};
use crate::{Config, Error};

/// The certificate in force, with what the rest of the proxy needs to know of it.
#[derive(Debug)]
pub struct Certified {
    pub key: Arc<CertifiedKey>,
    pub id: SpiffeId,
    pub not_after: SystemTime,
}

/// The workload identity: shared by the listeners (as rustls certificate resolvers),
/// the admin server (readiness) and the renewal task.
#[derive(Clone, Debug)]
pub struct Identity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwapOption<Certified>,
    anchors: TrustAnchors,
    controller: Controller,
    token_file: PathBuf,
    expected: Option<SpiffeId>,
    renew_at: f64,
    metrics: Arc<Metrics>,
}

impl Identity {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let pem = std::fs::read(&config.trust_anchors).map_err(|source| Error::Read {
            what: "trust anchors",
            path: config.trust_anchors.clone(),
            source,
        })?;
        let anchors = TrustAnchors::from_pem(&pem).map_err(|source| Error::TrustAnchors {
            path: config.trust_anchors.clone(),
            source,
        })?;
        let controller = Controller::new(
            config.controller_addr.clone(),
            config.controller_identity.clone(),
            &anchors,
        )?;
        Ok(Identity {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                anchors,
                controller,
                token_file: config.token_file.clone(),
                expected: config.identity.clone(),
                renew_at: config.renew_at,
                metrics,
            }),
        })
    }

    pub fn anchors(&self) -> &TrustAnchors {
        &self.inner.anchors
    }

    /// The channel to the controller, verified against this workload's anchors; the
    /// discovery client shares it.
    pub fn controller(&self) -> &Controller {
        &self.inner.controller
    }

    /// The certificate in force, if one was issued and has not expired.
    pub fn current(&self) -> Option<Arc<Certified>> {
        self.inner
            .current
            .load_full()
            .filter(|c| c.not_after > SystemTime::now())
    }

    /// Gets a certificate, then renews it for as long as the proxy runs. Failures are
    /// retried with capped exponential backoff; the current certificate stays in use
    /// until it expires.
    pub async fn maintain(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let wait = match self.certify().await {
                Ok(certified) => {
                    backoff = Backoff::new();
                    let wait = self.renewal_delay(certified.not_after);
                    tracing::info!(
                        id = %certified.id,
                        not_after = unix(certified.not_after),
                        renew_in = ?wait,
                        "certified"
                    );
                    self.inner
                        .metrics
                        .cert_expiration
                        .set(unix(certified.not_after));
                    self.inner.current.store(Some(Arc::new(certified)));
                    self.count_certify("ok");
                    wait
                }
                Err(error) => {
                    self.count_certify("error");
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?wait, "certification failed");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn count_certify(&self, outcome: &'static str) {
        self.inner
            .metrics
            .certify
            .get_or_create(&CertifyLabels { outcome })
            .inc();
    }

    fn renewal_delay(&self, not_after: SystemTime) -> Duration {
        let lifetime = not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        lifetime
            .mul_f64(self.inner.renew_at)
            .max(Duration::from_secs(1))
    }

    /// One round: a fresh key pair, a CSR, the token, and a verified certificate.
    async fn certify(&self) -> Result<Certified, Error> {
        let inner = &self.inner;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        if let Some(id) = &inner.expected {
            params.subject_alt_names = vec![rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(id.as_str())?,
            )];
        }
        let csr = params.serialize_request(&key)?;
        let token = tokio::fs::read_to_string(&inner.token_file)
            .await
            .map_err(|source| Error::Read {
                what: "ServiceAccount token",
                path: inner.token_file.clone(),
                source,
            })?;

        let channel = inner.controller.connect().await?;
        let response = IdentityClient::new(channel)
            .certify(CertifyRequest {
                csr_der: csr.der().to_vec(),
                token: token.trim().to_string(),
            })
            .await
            .map_err(Error::Refused)?
            .into_inner();

        let chain: Vec<CertificateDer<'static>> = response
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Error::BadCertificate("the chain is empty".into()));
        };
        // Check what we were given before serving with it: a certificate that peers
        // would refuse is worse than none, because it would make us look ready.
        let id = verify_chain(
            leaf,
            intermediates,
            &inner.anchors,
            UnixTime::now(),
            Presenter::Client,
        )
        .map_err(|e| Error::BadCertificate(e.to_string()))?;
        if let Some(expected) = &inner.expected
            && &id != expected
        {
            return Err(Error::BadCertificate(format!(
                "issued for {id}, but this workload expects {expected}"
            )));
        }
        let not_after = u64::try_from(response.not_after_unix)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
            .map_err(|_| Error::BadCertificate("negative expiry".into()))?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&private)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        Ok(Certified {
            key: Arc::new(CertifiedKey::new(chain, signing_key)),
            id,
            not_after,
        })
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current().map(|c| c.key.clone())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.current().is_some()
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
