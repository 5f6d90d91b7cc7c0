//! The webhook's serving certificate and key, reloaded when their files change.
//!
//! The API server verifies the webhook against the `caBundle` of its configuration,
//! and whoever issues the serving certificate (cert-manager, `meshctl install`, an
//! operator's Secret) renews it by rewriting the mounted files. [`ServingCert`] is the
//! rustls certificate resolver: every handshake takes the pair in force, so a renewed
//! one applies to new connections without a restart and without touching live ones.
//!
//! [`ServingCert::watch`] re-reads both files when their directories change (inotify;
//! a Secret volume swaps a `..data` symlink, so the directory is watched, not the
//! files) and, in case an event is lost, every `poll` as well. A new pair is installed
//! only once it parses and the key matches the certificate: a half-written update or
//! a bad pair is logged (once) and the previous pair stays in force.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::CertError;
use crate::server::metrics::Metrics;

/// How long after a change the files are read, so that both files of one update
/// (a Secret writes them together, a person one after the other) are read together.
const SETTLE: Duration = Duration::from_millis(200);

/// The serving certificate in force, and where it comes from.
pub struct ServingCert {
    /// The PEM certificate chain, leaf first.
    cert_path: PathBuf,
    /// The PEM private key.
    key_path: PathBuf,
    /// The pair every new handshake presents.
    current: ArcSwap<Loaded>,
    /// The last pair refused, so that it is reported once rather than at every poll.
    refused: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// `ring`, the one crypto provider of the mesh.
    provider: Arc<CryptoProvider>,
}

/// A pair as read and as parsed; the bytes tell whether the files changed.
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

impl ServingCert {
    /// Reads the pair; a server cannot start without one.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServingCert>, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = parse(cert_path, &cert_pem, key_path, &key_pem, &provider)?;
        Ok(Arc::new(ServingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(Loaded {
                cert_pem,
                key_pem,
                key,
            }),
            refused: Mutex::new(None),
            provider,
        }))
    }

    /// The rustls server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN
    /// (the API server uses either), no client certificate (the API server sends
    /// none unless configured to; the review itself is what is trusted).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Re-reads the files: `Ok(true)` when a new pair is now in force, `Ok(false)` when
    /// nothing changed (or the same bad pair was refused before).
    pub fn reload(&self) -> Result<bool, CertError> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path)?;
        let current = self.current.load();
        if current.cert_pem == cert_pem && current.key_pem == key_pem {
            return Ok(false);
        }
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused
            .as_ref()
            .is_some_and(|(c, k)| *c == cert_pem && *k == key_pem)
        {
            return Ok(false);
        }
        match parse(
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
            &self.provider,
        ) {
            Ok(key) => {
                *refused = None;
                self.current.store(Arc::new(Loaded {
                    cert_pem,
                    key_pem,
                    key,
                }));
                Ok(true)
            }
            Err(error) => {
                *refused = Some((cert_pem, key_pem));
                Err(error)
            }
        }
    }

    /// Reloads on every change of the files' directories and every `poll`, until
    /// `shutdown`.
    pub fn watch(
        self: Arc<Self>,
        poll: Duration,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let wake = Arc::new(Notify::new());
        let watcher = self.inotify(wake.clone());
        tokio::spawn(async move {
            // Held for as long as the task runs: dropping it ends the watch.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = wake.notified() => tokio::time::sleep(SETTLE).await,
                    () = tokio::time::sleep(poll) => {}
                }
                match self.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        metrics.certificate_reloaded("loaded");
                        tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                    }
                    Err(error) => {
                        metrics.certificate_reloaded("refused");
                        tracing::warn!(%error, "new serving certificate refused; the previous one stays in force");
                    }
                }
            }
        });
    }

    /// An inotify watch on the directories of both files, or none (then only the
    /// poll notices changes).
    fn inotify(&self, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
        let watched = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                // An error (a full event queue, say) may hide a change: re-read.
                _ => wake.notify_one(),
            }
        })
        .and_then(|mut watcher| {
            let mut dirs: Vec<&Path> = [&self.cert_path, &self.key_path]
                .into_iter()
                .map(|path| match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                })
                .collect();
            dirs.dedup();
            for dir in dirs {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
            Ok(watcher)
        });
        match watched {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the certificate's directory; polling only");
                None
            }
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| CertError::Read {
            path: path.to_owned(),
            error,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn parse(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CertError> {
    let pem_error = |path: &Path| {
        let path = path.to_owned();
        move |error| CertError::Pem { path, error }
    };
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(cert_path))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(pem_error(key_path))?
        .ok_or_else(|| CertError::NoKey {
            path: key_path.to_owned(),
        })?;
    let mismatch = |error| CertError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        error,
    };
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(mismatch)?;
    // `from_der` lets a key whose public half it cannot compute pass; ring's keys all
    // have one, so any doubt left is a mismatch.
    certified.keys_match().map_err(mismatch)?;
    Ok(Arc::new(certified))
}
