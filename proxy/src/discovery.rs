//! The discovery client: one stream to the controller carrying every resource type.
//!
//! Each response is a whole set of one type. It is checked as it arrives: a set the
//! proxy cannot use is NACKed at once with the reason, and the last good set of its
//! type stays in force. A good set is staged ([`Pending`]) until the last response of
//! its snapshot has arrived (the controller marks the others `more_in_snapshot`);
//! then everything staged is swapped in as one new [`Directory`] and ACKed, so the
//! data path never runs on half a snapshot (a new Service without its Endpoints, a
//! renamed target port on one side only). Until every type has been answered once on
//! a stream, nothing is swapped: the controller answers each subscription as it reads
//! it, so a stream's first snapshot may arrive as several pushes.
//!
//! When the stream breaks, whatever was staged is dropped with it: the proxy keeps
//! serving on what is in force and reconnects with jittered backoff, and the
//! controller answers the new subscriptions with its whole current state.
//!
//! The stream presents the proxy's workload certificate to the controller, which
//! verifies it and records the identity: so the client first waits for a
//! certificate (without one the proxy cannot reach a meshed peer anyway, and is not
//! ready), and reconnects at once whenever a renewed one is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::discovery_client::DiscoveryClient;
use trellis_proto::discovery::v1::type_url;

use crate::Error;
use crate::backoff::Backoff;
use crate::directory::{self, Directory};
use crate::identity::Identity;
use crate::metrics::{DiscoveryLabels, Metrics};

/// A whole set of one type arrives in one message: 2,000 services of 10 endpoints are
/// about 2 MB of endpoints, so tonic's 4 MiB default leaves too little headroom.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// google.rpc.Code INVALID_ARGUMENT, the code of every NACK.
const INVALID_ARGUMENT: i32 = 3;

pub struct Discovery {
    /// The certificate the stream presents, and the channel to the controller.
    pub identity: Identity,
    pub node: pb::Node,
    pub directory: Arc<ArcSwap<Directory>>,
    pub metrics: Arc<Metrics>,
}

/// What one stream has been sent and not yet swapped in.
#[derive(Debug)]
pub struct Pending {
    /// The types this stream subscribed to.
    subscribed: &'static [&'static str],
    /// The types answered at least once on this stream, accepted or not.
    answered: BTreeSet<&'static str>,
    /// The sets accepted since the last swap, by type: the latest of each.
    staged: BTreeMap<&'static str, Staged>,
}

#[derive(Debug)]
struct Staged {
    version: String,
    nonce: String,
    set: Vec<pb::Resource>,
}

impl Pending {
    pub fn new(subscribed: &'static [&'static str]) -> Self {
        Pending {
            subscribed,
            answered: BTreeSet::new(),
            staged: BTreeMap::new(),
        }
    }

    /// Whether every subscribed type has been answered on this stream.
    fn complete(&self) -> bool {
        self.subscribed.iter().all(|t| self.answered.contains(t))
    }
}

/// Why a stream ended without an error.
enum Ended {
    /// The controller closed it: reconnect after a backoff.
    Closed,
    /// A new certificate was installed: reconnect now, to present it.
    Renewed,
}

impl Discovery {
    /// Keeps a stream open until `shutdown`, reconnecting whenever it breaks.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut issued = self.identity.issued();
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = issued.wait_for(|issued| *issued > 0) => {}
        }
        let mut backoff = Backoff::new();
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.stream(&mut backoff, &mut issued) => result,
            };
            self.metrics.discovery_connected.set(0);
            let wait = match result {
                Ok(Ended::Renewed) => {
                    tracing::info!(
                        "reconnecting the discovery stream to present the renewed certificate"
                    );
                    continue;
                }
                Ok(Ended::Closed) => {
                    let wait = backoff.next_delay();
                    tracing::info!(retry_in = ?wait, "discovery stream ended");
                    wait
                }
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?wait, "discovery stream failed");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One stream: subscribe to every type, then take responses as they come, until
    /// the stream ends or a new certificate is installed.
    async fn stream(
        &self,
        backoff: &mut Backoff,
        issued: &mut tokio::sync::watch::Receiver<u64>,
    ) -> Result<Ended, Error> {
        issued.borrow_and_update();
        let certificate = self.identity.current().map(|c| c.key.clone());
        let channel = self.identity.controller().connect(certificate).await?;
        let (requests, outgoing) = mpsc::channel(type_url::ALL.len() * 2);
        for (i, type_url) in type_url::ALL.iter().enumerate() {
            let request = pb::DiscoveryRequest {
                node: (i == 0).then(|| self.node.clone()),
                type_url: (*type_url).to_string(),
                ..Default::default()
            };
            // The channel holds every subscription: this cannot block or fail.
            let _ = requests.try_send(request);
        }
        let mut responses = DiscoveryClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE)
            .stream(ReceiverStream::new(outgoing))
            .await
            .map_err(|status| Error::Discovery(status.to_string()))?
            .into_inner();
        self.metrics.discovery_connected.set(1);
        tracing::info!("discovery stream open");
        let mut pending = Pending::new(&type_url::ALL);
        loop {
            let response = tokio::select! {
                message = responses.message() => {
                    match message.map_err(|status| Error::Discovery(status.to_string()))? {
                        Some(response) => response,
                        None => return Ok(Ended::Closed),
                    }
                }
                // The identity holds the sender for as long as this runs: only a new
                // certificate wakes this.
                Ok(()) = issued.changed() => return Ok(Ended::Renewed),
            };
            *backoff = Backoff::new();
            for reply in self.receive(&mut pending, response) {
                if requests.send(reply).await.is_err() {
                    return Ok(Ended::Closed);
                }
            }
        }
    }

    /// Takes one response and returns the answers due now: its NACK if it is refused,
    /// and the ACKs of everything swapped in if it completes a snapshot.
    pub fn receive(
        &self,
        pending: &mut Pending,
        response: pb::DiscoveryResponse,
    ) -> Vec<pb::DiscoveryRequest> {
        let pb::DiscoveryResponse {
            type_url,
            version_info,
            nonce,
            resources,
            snapshot,
            more_in_snapshot,
        } = response;
        let mut answers = Vec::new();
        match type_url::ALL.iter().find(|t| **t == type_url) {
            None => answers.push(nack(type_url, nonce, String::new(), "unknown type".into())),
            Some(known) => {
                pending.answered.insert(known);
                match directory::check(known, &resources) {
                    Ok(()) => {
                        tracing::debug!(type_url = known, version = %version_info, snapshot, "staged");
                        pending.staged.insert(
                            known,
                            Staged {
                                version: version_info,
                                nonce,
                                set: resources,
                            },
                        );
                    }
                    Err(invalid) => {
                        let in_force = self.directory.load();
                        let last_good = in_force.resources().version(known).unwrap_or("");
                        tracing::warn!(
                            type_url = known,
                            version = %version_info,
                            snapshot,
                            error = %invalid,
                            "refused a discovery update; the previous one stays in force"
                        );
                        self.count(known, "nack");
                        answers.push(nack(
                            type_url,
                            nonce,
                            last_good.to_string(),
                            invalid.to_string(),
                        ));
                    }
                }
            }
        }
        if !more_in_snapshot && pending.complete() {
            answers.extend(self.swap(pending, snapshot));
        }
        answers
    }

    /// Swaps in every staged set at once and returns their ACKs.
    fn swap(&self, pending: &mut Pending, snapshot: u64) -> Vec<pb::DiscoveryRequest> {
        if pending.staged.is_empty() {
            return Vec::new();
        }
        let current = self.directory.load();
        let mut next = current.resources().clone();
        let mut acks = Vec::with_capacity(pending.staged.len());
        for (type_url, staged) in std::mem::take(&mut pending.staged) {
            tracing::info!(
                type_url,
                version = %staged.version,
                resources = staged.set.len(),
                snapshot,
                "applied"
            );
            self.count(type_url, "ack");
            acks.push(pb::DiscoveryRequest {
                type_url: type_url.to_string(),
                version_info: staged.version.clone(),
                response_nonce: staged.nonce,
                ..Default::default()
            });
            next.replace(type_url, staged.version, staged.set);
        }
        self.directory
            .store(Arc::new(Directory::build(next, current.loads().clone())));
        acks
    }

    fn count(&self, type_url: &'static str, outcome: &'static str) {
        self.metrics
            .discovery_updates
            .get_or_create(&DiscoveryLabels { type_url, outcome })
            .inc();
    }
}

fn nack(
    type_url: String,
    nonce: String,
    last_good: String,
    message: String,
) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        type_url,
        version_info: last_good,
        response_nonce: nonce,
        error_detail: Some(pb::ErrorDetail {
            code: INVALID_ARGUMENT,
            message,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
