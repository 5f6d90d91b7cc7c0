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
//! - [`detect`]: what an inbound connection speaks (mesh TLS or anything else);
//! - [`tls`]: terminating and originating mesh mTLS;
//! - [`forward`]: copying bytes both ways and counting them;
//! - [`inbound`] and [`outbound`]: the two short functions that chain the stages.
//!
//! Beside it: [`identity`] (key pair, CSR, certificate and its renewal), [`peers`] (the
//! static destination → identity map, until discovery replaces it), [`metrics`],
//! [`admin`] (`/live`, `/ready`, `/metrics`, `/shutdown`) and [`config`].

pub mod admin;
pub mod config;
pub mod detect;
pub mod error;
pub mod forward;
pub mod identity;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod orig_dst;
pub mod outbound;
pub mod peers;
pub mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::Error;

/// The three sockets the proxy serves, bound by the caller so that tests can bind
/// `127.0.0.1:0`.
pub struct Listeners {
    pub inbound: TcpListener,
    pub outbound: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        Ok(Listeners {
            inbound: bind(config.inbound_addr).await?,
            outbound: bind(config.outbound_addr).await?,
            admin: bind(config.admin_addr).await?,
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

    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(identity.clone().maintain(shutdown.clone()));
    tasks.spawn(peers.clone().reload_on_sighup(shutdown.clone()));
    tasks.spawn(admin::serve(
        listeners.admin,
        admin::State {
            identity: identity.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        },
    ));

    let inbound = inbound::Inbound::new(&config, identity.clone(), metrics.clone())?;
    let outbound = outbound::Outbound::new(
        identity.clone(),
        peers,
        metrics.clone(),
        listeners.outbound.local_addr().ok(),
    )?;
    let connections = tokio_util::task::TaskTracker::new();
    tokio::join!(
        listener::serve(
            listeners.inbound,
            listener::Direction::Inbound,
            connections.clone(),
            shutdown.clone(),
            move |conn| inbound.clone().handle(conn),
        ),
        listener::serve(
            listeners.outbound,
            listener::Direction::Outbound,
            connections.clone(),
            shutdown.clone(),
            move |conn| outbound.clone().handle(conn),
        ),
    );

    connections.close();
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, deadline = ?config.drain_timeout, "draining open connections");
    }
    if tokio::time::timeout(config.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
    }
    tasks.close();
    tracing::info!("proxy stopped");
    Ok(())
}
