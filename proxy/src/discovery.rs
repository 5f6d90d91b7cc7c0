//! The discovery client: one stream to the controller carrying every resource type.
//!
//! Each response is a whole set of one type. It is validated and applied atomically
//! (a new [`Directory`] swapped in) and ACKed, or refused and NACKed with the reason,
//! in which case the last good set stays in force. When the stream breaks, the proxy
//! keeps serving on what it has and reconnects with jittered backoff; the controller
//! answers a new subscription with its current state, so nothing is lost.

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
use crate::controller::Controller;
use crate::directory::Directory;
use crate::metrics::{DiscoveryLabels, Metrics};

/// A whole set of one type arrives in one message: 2,000 services of 10 endpoints are
/// about 2 MB of endpoints, so tonic's 4 MiB default leaves too little headroom.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// google.rpc.Code INVALID_ARGUMENT, the code of every NACK.
const INVALID_ARGUMENT: i32 = 3;

pub struct Discovery {
    pub controller: Controller,
    pub node: pb::Node,
    pub directory: Arc<ArcSwap<Directory>>,
    pub metrics: Arc<Metrics>,
}

impl Discovery {
    /// Keeps a stream open until `shutdown`, reconnecting whenever it breaks.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.stream(&mut backoff) => result,
            };
            self.metrics.discovery_connected.set(0);
            let wait = backoff.next_delay();
            match result {
                Ok(()) => tracing::info!(retry_in = ?wait, "discovery stream ended"),
                Err(error) => tracing::warn!(%error, retry_in = ?wait, "discovery stream failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One stream: subscribe to every type, then apply responses as they come.
    async fn stream(&self, backoff: &mut Backoff) -> Result<(), Error> {
        let channel = self.controller.connect().await?;
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
        while let Some(response) = responses
            .message()
            .await
            .map_err(|status| Error::Discovery(status.to_string()))?
        {
            *backoff = Backoff::new();
            let reply = self.apply(response);
            if requests.send(reply).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Applies one response and returns its ACK or NACK.
    fn apply(&self, response: pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        let pb::DiscoveryResponse {
            type_url,
            version_info,
            nonce,
            resources,
        } = response;
        let Some(known) = type_url::ALL.iter().find(|t| **t == type_url) else {
            return self.nack(type_url, nonce, String::new(), "unknown type".into());
        };
        let current = self.directory.load();
        match current
            .resources()
            .with(known, version_info.clone(), resources)
        {
            Ok(next) => {
                let count = next.count(known);
                self.directory
                    .store(Arc::new(Directory::build(next, current.loads().clone())));
                self.count(known, "ack");
                tracing::info!(type_url = known, version = %version_info, resources = count, "applied");
                pb::DiscoveryRequest {
                    type_url,
                    version_info,
                    response_nonce: nonce,
                    ..Default::default()
                }
            }
            Err(invalid) => {
                let last_good = current.resources().version(known).unwrap_or("").to_string();
                tracing::warn!(
                    type_url = known,
                    version = %version_info,
                    error = %invalid,
                    "refused a discovery update; the previous one stays in force"
                );
                self.count(known, "nack");
                self.nack(type_url, nonce, last_good, invalid.to_string())
            }
        }
    }

    fn nack(
        &self,
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

    fn count(&self, type_url: &'static str, outcome: &'static str) {
        self.metrics
            .discovery_updates
            .get_or_create(&DiscoveryLabels { type_url, outcome })
            .inc();
    }
}
