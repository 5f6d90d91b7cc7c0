//! The `trellis.discovery.v1.Discovery` gRPC service: one bidirectional stream per
//! proxy carrying every resource type, state of the world, in the manner of Envoy's
//! ADS.
//!
//! Each stream is one task that waits on three things: the proxy's next request, the
//! model's next snapshot, and shutdown. After each, it sends whatever is due
//! (`subscriptions.rs` decides what that is), so a burst of snapshots the proxy was
//! too slow to take collapses into the latest. The stream records the proxy (what
//! it reports in `node`, and the identity its TLS client certificate proved, if it
//! presented one), and each push, ACK and NACK, in the [`Proxies`] registry.
//!
//! A stream ends when the proxy hangs up (cleanly or not); on controller shutdown it
//! ends with `UNAVAILABLE`, which tells the proxy to reconnect elsewhere or later.
//!
//! Responses leave as [`Push`]es: their resources are the snapshot's, encoded once
//! for every stream, and `grpc.rs` writes them to each stream as those same bytes, so
//! a change reaching 200 proxies is neither copied nor encoded 200 times.

mod grpc;
mod subscriptions;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::{Request, Status, Streaming};
use tracing::Instrument;
use trellis_identity::SpiffeId;
use trellis_proto::discovery::v1::{DiscoveryRequest, Node};

pub use self::grpc::{DiscoveryServer, Push};
pub use self::subscriptions::{Received, Subscriptions};
use crate::model::{Kind, Snapshot};
use crate::proxies::{Connection, Proxies};
use crate::server::Peer;

/// Requests are subscriptions and acknowledgements: a list of names at most.
const MAX_REQUEST_LEN: usize = 1024 * 1024;

/// Responses queued for a stream before its task waits for the proxy to read; it
/// waits rather than buffer snapshots a slow proxy would skip anyway.
const RESPONSE_BACKLOG: usize = 4;

/// What every stream shares.
#[derive(Clone)]
pub struct DiscoveryService {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    proxies: Arc<Proxies>,
    shutdown: CancellationToken,
}

impl DiscoveryService {
    pub fn new(
        snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        proxies: Arc<Proxies>,
        shutdown: CancellationToken,
    ) -> Self {
        DiscoveryService {
            snapshots,
            proxies,
            shutdown,
        }
    }

    /// The service wrapped for tonic, with the request size bounded.
    pub fn into_server(self) -> DiscoveryServer {
        DiscoveryServer::new(self, MAX_REQUEST_LEN)
    }

    /// Starts one proxy's stream; its task sends what is due on the returned channel.
    fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> mpsc::Receiver<Result<Push, Status>> {
        let peer = Peer::of(&request);
        let remote = peer.and_then(|peer| peer.addr);
        let verified = peer.and_then(|peer| peer.identity.clone());
        let connection = self.proxies.connect(remote, verified.as_ref());
        let span = tracing::info_span!(
            "discovery",
            stream = connection.id(),
            remote = remote.map(tracing::field::display),
            verified = verified.as_ref().map(tracing::field::display),
        );
        let (responses, rx) = mpsc::channel(RESPONSE_BACKLOG);
        let stream = ProxyStream {
            requests: request.into_inner(),
            responses,
            snapshots: self.snapshots.clone(),
            subscriptions: Subscriptions::new(connection.id()),
            connection,
            verified,
        };
        tokio::spawn(stream.run(self.shutdown.clone()).instrument(span));
        rx
    }
}

/// How a push ended.
enum Pushed {
    Done,
    Gone,
    ShuttingDown,
}

/// One proxy's stream.
struct ProxyStream {
    requests: Streaming<DiscoveryRequest>,
    responses: mpsc::Sender<Result<Push, Status>>,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    subscriptions: Subscriptions,
    /// Its entry in the registry, removed when the stream ends.
    connection: Connection,
    /// The identity of the client certificate its connection presented, if any.
    verified: Option<SpiffeId>,
}

impl ProxyStream {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut identified = false;
        loop {
            tokio::select! {
                request = self.requests.next() => match request {
                    Some(Ok(request)) => {
                        if !identified && let Some(node) = &request.node {
                            identified = true;
                            self.identify(node);
                        }
                        self.receive(&request);
                    }
                    Some(Err(status)) => {
                        tracing::info!(code = ?status.code(), error = status.message(), "the stream broke");
                        return;
                    }
                    None => {
                        tracing::info!("the proxy closed its stream");
                        return;
                    }
                },
                changed = self.snapshots.changed() => if changed.is_err() {
                    // The model is gone: the controller is stopping.
                    return self.shut_down();
                },
                () = shutdown.cancelled() => return self.shut_down(),
                () = self.responses.closed() => {
                    tracing::info!("the proxy went away");
                    return;
                }
            }
            match self.push(&shutdown).await {
                Pushed::Done => {}
                Pushed::Gone => {
                    tracing::info!("the proxy went away");
                    return;
                }
                Pushed::ShuttingDown => return self.shut_down(),
            }
        }
    }

    /// Sends every response due under the latest snapshot. A proxy that does not read
    /// holds its own stream up, but never the controller's shutdown.
    async fn push(&mut self, shutdown: &CancellationToken) -> Pushed {
        let snapshot = self.snapshots.borrow_and_update().clone();
        let Some(snapshot) = snapshot else {
            // Not every source has synced: subscriptions wait for the first snapshot.
            return Pushed::Done;
        };
        for response in self.subscriptions.responses(&snapshot) {
            let (kind, version, nonce) = (
                response.kind,
                response.version_info.clone(),
                response.nonce.clone(),
            );
            tracing::debug!(
                type_url = %kind.type_url(),
                %version,
                %nonce,
                resources = response.count,
                snapshot = response.snapshot,
                more = response.more_in_snapshot,
                "push"
            );
            tokio::select! {
                sent = self.responses.send(Ok(response)) => if sent.is_err() {
                    return Pushed::Gone;
                },
                () = shutdown.cancelled() => return Pushed::ShuttingDown,
            }
            self.connection.sent(kind, &version, &nonce);
        }
        Pushed::Done
    }

    /// Ends the stream with a status that tells the proxy to reconnect (if there is
    /// room for it: a proxy that stopped reading just sees the stream end).
    fn shut_down(&self) {
        let status = Status::unavailable("the controller is shutting down; reconnect");
        let _ = self.responses.try_send(Err(status));
    }

    /// Records who the proxy says it is, beside what its certificate proved.
    fn identify(&self, node: &Node) {
        self.connection.identify(node);
        tracing::info!(
            pod = %node.pod,
            namespace = %node.namespace,
            identity = %node.identity,
            proxy_version = %node.proxy_version,
            "a proxy connected"
        );
        match &self.verified {
            Some(verified) if !node.identity.is_empty() && node.identity != verified.as_str() => {
                tracing::warn!(
                    reported = %node.identity,
                    %verified,
                    "the proxy reports another identity than its client certificate proves; \
                     /proxies shows both"
                );
            }
            Some(_) => {}
            None => tracing::debug!("the proxy presented no client certificate"),
        }
    }

    /// Applies one request to the subscriptions and records what it meant.
    fn receive(&mut self, request: &DiscoveryRequest) {
        match self.subscriptions.receive(request) {
            Received::Subscribed { kind } => {
                let names = self.subscriptions.names(kind).cloned().unwrap_or_default();
                tracing::debug!(%kind, names = names.len(), "subscribed");
                self.connection.subscribed(kind, &names);
            }
            Received::Acked {
                kind,
                version,
                resubscribed,
            } => {
                tracing::debug!(%kind, %version, "ACK");
                if version != request.version_info {
                    tracing::debug!(
                        %kind, acked = %request.version_info, sent = %version,
                        "the ACK names another version than its nonce's response had"
                    );
                }
                self.connection.acked(kind, &version);
                self.resubscribed(kind, resubscribed);
            }
            Received::Nacked {
                kind,
                nonce,
                version,
                message,
                resubscribed,
            } => {
                tracing::warn!(
                    %kind, %version, %nonce, error = %message,
                    "the proxy rejected a response; it keeps its last good version, \
                     and the controller sends the next change"
                );
                self.connection.nacked(kind, &nonce, &version, &message);
                self.resubscribed(kind, resubscribed);
            }
            Received::Stale { kind, nonce } => {
                tracing::debug!(%kind, %nonce, "ignored a request answering a superseded response");
            }
            Received::UnknownType(type_url) => {
                tracing::warn!(%type_url, "ignored a request for a type this controller does not serve");
            }
            Received::NoType => {}
        }
    }

    fn resubscribed(&self, kind: Kind, resubscribed: bool) {
        if resubscribed && let Some(names) = self.subscriptions.names(kind) {
            self.connection.subscribed(kind, names);
        }
    }
}

#[cfg(test)]
mod tests;
