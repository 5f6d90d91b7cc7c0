//! Which proxies are connected, and what each was sent, accepted and rejected.
//!
//! Each discovery stream holds a [`Connection`] for as long as it is open; the
//! registry is what `/proxies` on the admin port shows (and `meshctl proxy-status`
//! reads), and it keeps the metrics in step with what it records: the connected and
//! authenticated proxies, the push, ACK and NACK counters, how long ACKs take, and
//! how many proxies are in each [`SyncState`] per type. Those are the per-proxy
//! records summed up, so that their labels stay bounded however many proxies there
//! are; `/proxies` has each one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use trellis_identity::SpiffeId;
use trellis_proto::discovery::v1::Node;

use crate::metrics::{Metrics, StateLabels, TypeLabels};
use crate::model::Kind;

/// Every open discovery stream.
pub struct Proxies {
    streams: Mutex<BTreeMap<u64, ProxyStatus>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// One connected proxy, as `/proxies` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// The stream's id, unique for the controller's lifetime (also in its log spans).
    pub stream: u64,
    /// From the `node` of the stream's first request; empty until it arrives.
    pub pod: String,
    pub namespace: String,
    /// What the proxy says it is (`node.identity`), not proven.
    pub identity: String,
    /// The SPIFFE ID of the TLS client certificate the stream's connection presented,
    /// verified against the trust anchors; `None` when it presented none.
    pub verified_identity: Option<String>,
    pub proxy_version: String,
    pub remote_addr: Option<String>,
    /// RFC 3339.
    pub connected_since: String,
    /// By type URL, for every type the proxy subscribed to.
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// One resource type on one stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Empty: every resource of the type.
    pub resource_names: Vec<String>,
    /// The last response sent.
    pub sent: Option<Sent>,
    /// The last version the proxy accepted.
    pub acked: Option<Acked>,
    /// The last response the proxy rejected, with its time; kept after later ACKs,
    /// so that `in_sync` says whether the proxy has recovered and this says from what.
    pub nack: Option<Nack>,
    /// Whether the proxy has accepted the last version it was sent.
    pub in_sync: bool,
    /// `in_sync`, `nacked` (its last answer was a NACK) or `pending`.
    pub state: SyncState,
}

/// Where one proxy stands with one type, as `/proxies` and the
/// `discovery_proxies` gauge count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// It has accepted (and runs) the last version it was sent.
    InSync,
    /// Its last answer was a NACK: it runs an older version, and stays so until the
    /// next change it accepts.
    Nacked,
    /// Subscribed, and sent a version it has not answered yet (or nothing yet).
    #[default]
    Pending,
}

impl SyncState {
    pub fn label(self) -> &'static str {
        match self {
            SyncState::InSync => "in_sync",
            SyncState::Nacked => "nacked",
            SyncState::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    pub version: String,
    pub nonce: String,
    pub at: String,
    /// When, for the ACK latency.
    #[serde(skip)]
    pub instant: Instant,
}

#[derive(Debug, Clone, Serialize)]
pub struct Acked {
    pub version: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub nonce: String,
    /// The version rejected.
    pub version: String,
    pub error: String,
    pub at: String,
}

impl Proxies {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Proxies> {
        Arc::new(Proxies {
            streams: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    /// Records a new stream from `remote_addr`, whose connection presented a client
    /// certificate for `verified` (if any); it is forgotten when the returned
    /// [`Connection`] drops.
    pub fn connect(
        self: &Arc<Self>,
        remote_addr: Option<SocketAddr>,
        verified: Option<&SpiffeId>,
    ) -> Connection {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            ProxyStatus {
                stream: id,
                pod: String::new(),
                namespace: String::new(),
                identity: String::new(),
                verified_identity: verified.map(ToString::to_string),
                proxy_version: String::new(),
                remote_addr: remote_addr.map(|addr| addr.to_string()),
                connected_since: now(),
                types: BTreeMap::new(),
            },
        );
        self.metrics.connected_proxies.inc();
        if verified.is_some() {
            self.metrics.authenticated_proxies.inc();
        }
        Connection {
            proxies: self.clone(),
            id,
        }
    }

    /// Moves one proxy's type from `old` to `new` in the state gauge.
    fn count_state(&self, kind: Kind, old: Option<SyncState>, new: Option<SyncState>) {
        if old == new {
            return;
        }
        let labels = |state: SyncState| StateLabels {
            r#type: kind.label(),
            state: state.label(),
        };
        if let Some(old) = old {
            self.metrics.proxies.get_or_create(&labels(old)).dec();
        }
        if let Some(new) = new {
            self.metrics.proxies.get_or_create(&labels(new)).inc();
        }
    }

    /// Every connected proxy, in connection order.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        // Each update is one statement on a status record; a panic elsewhere cannot
        // leave one half-written.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open stream's entry in the registry.
pub struct Connection {
    proxies: Arc<Proxies>,
    id: u64,
}

impl Connection {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn identify(&self, node: &Node) {
        self.update(|status| {
            status.pod = node.pod.clone();
            status.namespace = node.namespace.clone();
            status.identity = node.identity.clone();
            status.proxy_version = node.proxy_version.clone();
        });
    }

    pub fn subscribed(&self, kind: Kind, names: &BTreeSet<String>) {
        self.update_type(kind, |status| {
            status.resource_names = names.iter().cloned().collect();
        });
    }

    pub fn sent(&self, kind: Kind, version: &str, nonce: &str) {
        self.proxies
            .metrics
            .pushes
            .get_or_create(&TypeLabels::of(kind))
            .inc();
        self.update_type(kind, |status| {
            status.sent = Some(Sent {
                version: version.to_string(),
                nonce: nonce.to_string(),
                at: now(),
                instant: Instant::now(),
            });
        });
    }

    /// The ACK of the last response of `kind` sent on this stream (the
    /// subscriptions ignore any other as stale).
    pub fn acked(&self, kind: Kind, version: &str) {
        let metrics = &self.proxies.metrics;
        metrics.acks.get_or_create(&TypeLabels::of(kind)).inc();
        self.update_type(kind, |status| {
            if let Some(sent) = &status.sent {
                metrics
                    .ack_latency
                    .get_or_create(&TypeLabels::of(kind))
                    .observe(sent.instant.elapsed().as_secs_f64());
            }
            status.acked = Some(Acked {
                version: version.to_string(),
                at: now(),
            });
            status.state = SyncState::InSync;
        });
    }

    pub fn nacked(&self, kind: Kind, nonce: &str, version: &str, error: &str) {
        self.proxies
            .metrics
            .nacks
            .get_or_create(&TypeLabels::of(kind))
            .inc();
        self.update_type(kind, |status| {
            status.nack = Some(Nack {
                nonce: nonce.to_string(),
                version: version.to_string(),
                error: error.to_string(),
                at: now(),
            });
            status.state = SyncState::Nacked;
        });
    }

    fn update(&self, update: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.proxies.lock().get_mut(&self.id) {
            update(status);
        }
    }

    fn update_type(&self, kind: Kind, update: impl FnOnce(&mut TypeStatus)) {
        let mut moved = None;
        self.update(|status| {
            let old = status.types.get(kind.type_url()).map(|t| t.state);
            let status = status.types.entry(kind.type_url()).or_default();
            update(status);
            status.in_sync = matches!(
                (&status.sent, &status.acked),
                (Some(sent), Some(acked)) if sent.version == acked.version
            );
            // A new version sent makes an in-sync proxy pending; a NACKed one stays
            // NACKed until it answers again.
            if status.state == SyncState::InSync && !status.in_sync {
                status.state = SyncState::Pending;
            }
            moved = Some((old, status.state));
        });
        if let Some((old, new)) = moved {
            self.proxies.count_state(kind, old, Some(new));
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let removed = self.proxies.lock().remove(&self.id);
        let metrics = &self.proxies.metrics;
        metrics.connected_proxies.dec();
        if let Some(status) = removed {
            if status.verified_identity.is_some() {
                metrics.authenticated_proxies.dec();
            }
            for (type_url, type_status) in status.types {
                if let Some(kind) = Kind::from_type_url(type_url) {
                    self.proxies
                        .count_state(kind, Some(type_status.state), None);
                }
            }
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
