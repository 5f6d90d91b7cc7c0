//! This workload's certificate: making the key pair, getting it certified, renewing
//! it, and handing the current one to every new TLS handshake.
//!
//! The private key is made here, in memory, and never leaves the process: only a CSR
//! and the ServiceAccount token go to the controller. The certificate is swapped
//! atomically ([`ArcSwapOption`]) at about 70 % of its lifetime, so new handshakes
//! use the new one while live connections keep the session they have. Each new
//! certificate is also announced ([`Identity::issued`]), so that the discovery stream
//! reconnects to present it to the controller.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trellis_identity::{Presenter, SpiffeId, TrustAnchors, verify_chain};
use trellis_proto::identity::v1::CertifyRequest;
use trellis_proto::identity::v1::identity_client::IdentityClient;

use crate::backoff::Backoff;
use crate::config::TrustAnchorsSource;
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
    /// How many certificates have been installed.
    issued: watch::Sender<u64>,
    anchors: TrustAnchors,
    controller: Controller,
    token_file: PathBuf,
    expected: Option<SpiffeId>,
    renew_at: f64,
    metrics: Arc<Metrics>,
}

impl Identity {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let anchors = load_anchors(&config.trust_anchors)?;
        let controller = Controller::new(
            config.controller_addr.clone(),
            config.controller_identity.clone(),
            &anchors,
        )?;
        Ok(Identity {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                issued: watch::Sender::new(0),
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

    /// How many certificates this proxy has been issued so far; it changes with each
    /// new one, the first included.
    pub fn issued(&self) -> watch::Receiver<u64> {
        self.inner.issued.subscribe()
    }

    /// Puts `certified` in force for every new handshake, and announces it.
    pub(crate) fn install(&self, certified: Certified) {
        self.inner
            .metrics
            .cert_expiration
            .set(unix(certified.not_after));
        self.inner.current.store(Some(Arc::new(certified)));
        self.inner.issued.send_modify(|issued| *issued += 1);
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
                    self.install(certified);
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

        // The token authenticates this call; a certificate would add nothing.
        let channel = inner.controller.connect(None).await?;
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

/// Reads the trust anchors from a file or from the PEM given inline; an error names
/// the flag (and variable) the bad bundle came from.
pub fn load_anchors(source: &TrustAnchorsSource) -> Result<TrustAnchors, Error> {
    let pem = match source {
        TrustAnchorsSource::File(path) => std::fs::read(path).map_err(|source| Error::Read {
            what: "trust anchors",
            path: path.clone(),
            source,
        })?,
        TrustAnchorsSource::Inline(pem) => pem.clone().into_bytes(),
    };
    TrustAnchors::from_pem(&pem).map_err(|error| Error::TrustAnchors {
        origin: source.origin(),
        source: error,
    })
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, SanType,
    };

    use super::*;

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

    /// A mesh CA for the tests of every module that needs a workload identity.
    pub(crate) struct TestCa {
        root: CertifiedIssuer<'static, KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new() -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            TestCa { root }
        }

        pub(crate) fn pem(&self) -> String {
            self.root.pem()
        }

        pub(crate) fn root(&self) -> CertificateDer<'static> {
            self.root.der().clone()
        }

        /// A workload identity trusting this CA and holding no certificate yet; its
        /// controller is an address nothing listens on.
        pub(crate) fn identity(&self) -> Identity {
            self.identity_with_controller_at("127.0.0.1:9")
        }

        /// A workload identity trusting this CA, whose controller is at `addr`.
        pub(crate) fn identity_with_controller_at(&self, addr: &str) -> Identity {
            let config = Config::new(
                addr.into(),
                "spiffe://cluster.local/ns/trellis-system/sa/trellis-controller"
                    .parse()
                    .unwrap(),
                TrustAnchorsSource::Inline(self.pem()),
                "/nonexistent/token".into(),
            );
            Identity::new(&config, Arc::new(Metrics::new())).unwrap()
        }

        /// A workload certificate for `id`, as the controller would issue it.
        pub(crate) fn certify(&self, id: &str, lifetime: Duration) -> Certified {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().unwrap();
            let leaf = params.signed_by(&key, &self.root).unwrap();
            let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&private).unwrap();
            Certified {
                key: Arc::new(CertifiedKey::new(vec![leaf.der().clone()], signing_key)),
                id: id.parse().unwrap(),
                not_after: SystemTime::now() + lifetime,
            }
        }
    }

    #[test]
    fn each_installed_certificate_is_announced_and_an_expired_one_is_not_in_force() {
        let ca = TestCa::new();
        let identity = ca.identity();
        let issued = identity.issued();
        assert_eq!(*issued.borrow(), 0);
        assert!(identity.current().is_none());

        identity.install(ca.certify(WEB, Duration::from_secs(3600)));
        assert!(issued.has_changed().unwrap());
        assert_eq!(*issued.borrow(), 1);
        assert_eq!(identity.current().unwrap().id.as_str(), WEB);
        assert!(ResolvesClientCert::has_certs(&identity));

        // A renewal is announced too; a certificate past its end is not used.
        identity.install(ca.certify(WEB, Duration::ZERO));
        assert_eq!(*identity.issued().borrow(), 2);
        assert!(identity.current().is_none());
        assert!(!ResolvesClientCert::has_certs(&identity));
    }

    /// A mesh root, as PEM, and a workload certificate it signed for `web`.
    fn root_and_leaf() -> (String, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(WEB.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params
            .signed_by(&KeyPair::generate().unwrap(), &root)
            .unwrap();
        (root.pem(), leaf.der().clone())
    }

    #[test]
    fn a_file_and_the_same_pem_inline_are_the_same_anchors() {
        let (root, leaf) = root_and_leaf();
        let path =
            std::env::temp_dir().join(format!("trellis-proxy-anchors-{}.pem", std::process::id()));
        std::fs::write(&path, &root).unwrap();
        let from_file = load_anchors(&TrustAnchorsSource::File(path.clone()));
        std::fs::remove_file(&path).unwrap();
        let from_file = from_file.unwrap();
        let inline = load_anchors(&TrustAnchorsSource::Inline(root)).unwrap();

        assert_eq!(format!("{from_file:?}"), format!("{inline:?}"));
        for anchors in [&from_file, &inline] {
            let id = verify_chain(&leaf, &[], anchors, UnixTime::now(), Presenter::Client);
            assert_eq!(id.unwrap().as_str(), WEB);
        }
        // And neither trusts a workload of another mesh.
        let (_, stranger) = root_and_leaf();
        for anchors in [&from_file, &inline] {
            assert!(
                verify_chain(&stranger, &[], anchors, UnixTime::now(), Presenter::Client).is_err()
            );
        }
    }

    #[test]
    fn a_malformed_inline_bundle_is_refused_naming_its_variable() {
        let (root, _) = root_and_leaf();
        let truncated = root.lines().take(3).collect::<Vec<_>>().join("\n");
        for pem in [
            "",
            "/var/run/trellis/trust-anchors/ca.crt",
            truncated.as_str(),
        ] {
            let error = load_anchors(&TrustAnchorsSource::Inline(pem.to_owned())).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("--trust-anchors-pem (TRELLIS_TRUST_ANCHORS_PEM)"),
                "{pem:?}: {message}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_refused_naming_it() {
        let source = TrustAnchorsSource::File("/nonexistent/ca.crt".into());
        let error = load_anchors(&source).unwrap_err().to_string();
        assert!(
            error.contains("trust anchors /nonexistent/ca.crt"),
            "{error}"
        );
    }
}
