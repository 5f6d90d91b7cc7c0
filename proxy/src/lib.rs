//! The Trellis sidecar proxy: the data plane of one meshed pod.
//!
//! `trellis-proxy-init` redirects the pod's TCP traffic here: connections the app
//! makes arrive on the outbound listener, connections to the app arrive on the
//! inbound listener, and both recover where they were going with `SO_ORIGINAL_DST`.
//! Between two sidecars every byte travels over mutual TLS with SPIFFE identities
//! issued by the controller's identity service.
//!
//! # Layout
//! The data path reads in packet order, one module per stage:
//! - [`listener`]: accepting, one span per connection, draining on shutdown;
//! - [`orig_dst`]: where a redirected connection was going;
//! - [`detect`]: what a connection speaks (HTTP/1, HTTP/2, mesh TLS, other TLS, or
//!   opaque bytes), and [`opaque`]: which destinations were found to speak second;
//! - [`tls`]: terminating and originating mesh mTLS;
//! - [`http`]: the HTTP data plane (requests balanced by [`balance`], carried over
//!   pooled HTTP/2-over-mTLS connections, observed, failures answered as statuses);
//! - [`tally`]: the TCP metrics (open, close, bytes) of every connection;
//! - [`forward`]: copying opaque bytes both ways, and
//!   [`transport`]: the header that names the app port of an opaque mesh connection;
//! - [`inbound`] and [`outbound`]: the connection-level stages that chain the rest;
//! - [`shard`]: the threads that run them, one event loop and one set of pools
//!   each, and which of them serves a new connection; [`scheduling`]: how the
//!   kernel schedules those threads.
//!
//! Beside it: [`identity`] (key pair, CSR, certificate and its renewal),
//! [`discovery`] (the stream of services, endpoints, routes and policies from the
//! controller) and [`directory`] (what it says, as lookup tables), [`controller`]
//! (the channel both use), [`peers`] (a static destination → identity map that
//! discovery does not know about), [`metrics`], [`admin`] (`/live`, `/ready`,
//! `/metrics`, `/config`, `/shutdown`) and [`config`].

pub mod admin;
pub mod backoff;
pub mod balance;
pub mod config;
pub mod controller;
pub mod detect;
pub mod directory;
pub mod discovery;
pub mod error;
pub mod forward;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod opaque;
pub mod orig_dst;
pub mod outbound;
pub mod peers;
pub mod scheduling;
pub mod shard;
pub mod tally;
pub mod tls;
pub mod transport;

use std::sync::Arc;

use arc_swap::ArcSwap;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::Error;

/// Locks a std mutex even if a thread panicked while holding it. Every mutex of the
/// proxy guards state that each update leaves consistent (maps, counters, queues), and
/// a panic on one request must not stop the others from being served.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sockets the proxy serves, bound by the caller so that tests can bind
/// `127.0.0.1:0`. Inbound and outbound have an IPv6 twin when the pod has IPv6,
/// because proxy-init redirects IPv6 too.
pub struct Listeners {
    pub inbound: Vec<TcpListener>,
    pub outbound: Vec<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        Ok(Listeners {
            inbound: listener::bind_with_twin(config.inbound_addr, config.ipv6)?,
            outbound: listener::bind_with_twin(config.outbound_addr, config.ipv6)?,
            admin: listener::bind(config.admin_addr)?,
        })
    }
}

/// Runs the proxy until `shutdown` is cancelled (SIGTERM, or `POST /shutdown`), then
/// stops accepting and gives open connections until the drain deadline to finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Arc::new(metrics::Metrics::new());
    let identity = identity::Identity::new(&config, metrics.clone())?;
    let peers = Arc::new(peers::Peers::load(&config.peers)?);
    let directory = Arc::new(ArcSwap::from_pointee(directory::Directory::default()));

    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(identity.clone().maintain(shutdown.clone()));
    tasks.spawn(peers.clone().reload_on_sighup(shutdown.clone()));
    let discovery = discovery::Discovery {
        identity: identity.clone(),
        node: trellis_proto::discovery::v1::Node {
            pod: config.pod_name.clone().unwrap_or_default(),
            namespace: config.pod_namespace.clone().unwrap_or_default(),
            identity: config
                .identity
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        directory: directory.clone(),
        metrics: metrics.clone(),
    };
    tasks.spawn(discovery.run(shutdown.clone()));
    // What `main` set, as the kernel reports it: a refused policy shows as the default.
    if let Ok(Some(policy)) = scheduling::Policy::of_this_thread() {
        metrics.set_scheduling(policy);
    }
    if config.scheduling == scheduling::Scheduling::Auto {
        tasks.spawn(scheduling::governor::govern(
            config.procfs.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(admin::serve(
        listeners.admin,
        admin::State {
            config: Arc::new(config.clone()),
            identity: identity.clone(),
            directory: directory.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        },
    ));

    let tls = tls::MeshTls::new(identity.clone(), metrics.clone())?;
    let opaque_ports: Arc<[u16]> = config.opaque_ports.clone().into();
    let opaque_memory = Arc::new(opaque::OpaqueMemory::default().counted_in(&metrics));
    let own_addrs: Vec<_> = listeners
        .outbound
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    // Everything a request touches that is not shared: the pools, once per shard.
    let stages = (0..config.workers.max(1))
        .map(|_| shard::Stages {
            inbound: inbound::Inbound {
                tls: tls.clone(),
                require_mtls: config.require_mtls,
                inbound_port: config.inbound_addr.port(),
                outbound_port: config.outbound_addr.port(),
                opaque_ports: opaque_ports.clone(),
                opaque_memory: opaque_memory.clone(),
                detect_timeout: config.detect_timeout,
                http: Arc::new(http::inbound::HttpInbound {
                    local: http::pool::LocalPool::new(
                        listener::Direction::Inbound,
                        metrics.clone(),
                    ),
                    metrics: metrics.clone(),
                    response_timeout: config.response_timeout,
                    mesh_port: config.inbound_addr.port(),
                }),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            },
            outbound: outbound::Outbound {
                tls: tls.clone(),
                directory: directory.clone(),
                peers: peers.clone(),
                metrics: metrics.clone(),
                own_addrs: own_addrs.clone(),
                http: Arc::new(http::outbound::HttpOutbound {
                    directory: directory.clone(),
                    peers: peers.clone(),
                    // Every sidecar's inbound port is the one DESIGN.md fixes; ours is it.
                    mesh: http::pool::MeshPool::new(
                        tls.clone(),
                        config.inbound_addr.port(),
                        metrics.clone(),
                    ),
                    local: http::pool::LocalPool::new(
                        listener::Direction::Outbound,
                        metrics.clone(),
                    ),
                    tls: tls.clone(),
                    metrics: metrics.clone(),
                    response_timeout: config.response_timeout,
                }),
                opaque_ports: opaque_ports.clone(),
                opaque_memory: opaque_memory.clone(),
                detect_timeout: config.detect_timeout,
                shutdown: shutdown.clone(),
            },
        })
        .collect();
    let listening = listeners
        .inbound
        .into_iter()
        .map(|l| (listener::Direction::Inbound, l))
        .chain(
            listeners
                .outbound
                .into_iter()
                .map(|l| (listener::Direction::Outbound, l)),
        )
        .collect();
    shard::serve(listening, stages, shutdown, config.drain_timeout).await?;
    tasks.close();
    tracing::info!("proxy stopped");
    Ok(())
}
