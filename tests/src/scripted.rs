//! A controller the test scripts, on the mesh's controller address: the real identity
//! service (sidecars get real certificates from the mesh's development CA), and a
//! discovery service that answers every subscription with the world the test gave it,
//! sends a proxy whatever else the test tells it to, and hands the test every request
//! the proxy sends back.
//!
//! It exists for the stories the real controller cannot tell: its own validation
//! refuses every object a proxy would refuse (README, "The file source"), so it never
//! sends a set that a proxy NACKs. A controller of another version, or one with a bug,
//! could; this one does on purpose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use trellis_control_plane::config::DEFAULT_TOKEN_AUDIENCE;
use trellis_control_plane::{IdentityService, TokenVerifier, ca, server};
use trellis_proto::discovery::v1::discovery_server::{Discovery, DiscoveryServer};
use trellis_proto::discovery::v1::{DiscoveryRequest, DiscoveryResponse, Resource, type_url};

use crate::Mesh;
use crate::mesh::TRUST_DOMAIN;

const CERT_LIFETIME: Duration = Duration::from_secs(3600);

/// What every subscription is answered with: per type URL, a version and the set.
pub type World = BTreeMap<&'static str, (String, Vec<Resource>)>;

/// The scripted controller; it stops serving when dropped.
pub struct ScriptedController {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    /// Each discovery stream a proxy opens, once its first request names its pod.
    opened: std_mpsc::Receiver<ProxyStream>,
    /// Streams received from `opened` that the test has not asked for yet.
    waiting: Vec<ProxyStream>,
}

impl ScriptedController {
    /// Serves on `mesh`'s controller address with a development CA in its CA
    /// directory (and installs its root as the proxies' trust anchors). Every
    /// subscription is answered with `world`; a type it lacks gets an empty set.
    pub fn start(mesh: &Mesh, world: World) -> anyhow::Result<ScriptedController> {
        let ca = Arc::new(ca::dev::load_or_generate(&mesh.ca_dir())?);
        mesh.install_trust_anchors()?;
        let tokens =
            Arc::new(TokenVerifier::from_jwks_file(&mesh.jwks(), DEFAULT_TOKEN_AUDIENCE)?.into());
        let identity = IdentityService::new(ca.clone(), tokens, TRUST_DOMAIN, CERT_LIFETIME);
        let serving = server::ServingCert::new(
            ca,
            server::controller_identity(TRUST_DOMAIN)?,
            CERT_LIFETIME,
        )?;
        let tls = Arc::new(server::tls_config(Arc::new(serving))?);
        let (opened_tx, opened) = std_mpsc::channel();
        let discovery = Scripted {
            world: Arc::new(world),
            opened: opened_tx,
        };
        let routes =
            Routes::new(identity.into_server()).add_service(DiscoveryServer::new(discovery));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let addr = mesh.controller_addr();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("binding the scripted controller to {addr}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = server::serve(listener, tls, routes, shutdown).await {
                eprintln!("the scripted controller stopped: {error}");
            }
        });
        Ok(ScriptedController {
            runtime: Some(runtime),
            stop: Some(stop),
            opened,
            waiting: Vec::new(),
        })
    }

    /// The discovery stream of pod `pod`'s sidecar, waiting at most `timeout`.
    pub fn stream_of(&mut self, pod: &str, timeout: Duration) -> anyhow::Result<ProxyStream> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.waiting.iter().position(|s| s.pod == pod) {
                return Ok(self.waiting.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let stream = self.opened.recv_timeout(left).with_context(|| {
                format!("the sidecar of {pod} opened no discovery stream within {timeout:?}")
            })?;
            self.waiting.push(stream);
        }
    }
}

impl Drop for ScriptedController {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// One proxy's discovery stream, for the test to drive.
pub struct ProxyStream {
    /// From the `node` of the stream's first request.
    pub pod: String,
    /// Every request the proxy sent, in order.
    requests: std_mpsc::Receiver<DiscoveryRequest>,
    responses: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    /// Numbers the responses of this stream, the test's and the automatic ones.
    sent: Arc<AtomicU64>,
}

impl ProxyStream {
    /// Sends the whole set of `type_url` at `version`; returns the response's nonce.
    pub fn send(
        &self,
        type_url: &str,
        version: &str,
        resources: Vec<Resource>,
    ) -> anyhow::Result<String> {
        let response = response(&self.sent, type_url, version, resources);
        let nonce = response.nonce.clone();
        self.responses
            .blocking_send(Ok(response))
            .context("the proxy's stream is closed")?;
        Ok(nonce)
    }

    /// The proxy's ACK or NACK of the response `nonce`, waiting at most `timeout`.
    pub fn answer_to(&self, nonce: &str, timeout: Duration) -> anyhow::Result<DiscoveryRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = self
                .requests
                .recv_timeout(left)
                .with_context(|| format!("no answer to {nonce} within {timeout:?}"))?;
            if request.response_nonce == nonce {
                return Ok(request);
            }
        }
    }
}

fn response(
    sent: &AtomicU64,
    type_url: &str,
    version: &str,
    resources: Vec<Resource>,
) -> DiscoveryResponse {
    let n = sent.fetch_add(1, Ordering::Relaxed) + 1;
    // No snapshot marks: it answers as a controller from before them did, each
    // response a push of its own, which proxies must still apply.
    DiscoveryResponse {
        type_url: type_url.to_string(),
        version_info: version.to_string(),
        nonce: format!("scripted-{n}"),
        resources,
        ..Default::default()
    }
}

/// The discovery service: subscriptions are answered from the world, and each stream
/// is handed to the test once its first request says whose it is.
struct Scripted {
    world: Arc<World>,
    opened: std_mpsc::Sender<ProxyStream>,
}

#[tonic::async_trait]
impl Discovery for Scripted {
    type StreamStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut incoming = request.into_inner();
        let (responses, outgoing) = mpsc::channel(16);
        let (world, opened) = (self.world.clone(), self.opened.clone());
        tokio::spawn(async move {
            let sent = Arc::new(AtomicU64::new(0));
            let (requests_tx, requests) = std_mpsc::channel();
            let mut requests = Some(requests);
            while let Ok(Some(request)) = incoming.message().await {
                if let (Some(node), Some(requests)) = (&request.node, requests.take()) {
                    let stream = ProxyStream {
                        pod: node.pod.clone(),
                        requests,
                        responses: responses.clone(),
                        sent: sent.clone(),
                    };
                    if opened.send(stream).is_err() {
                        break;
                    }
                }
                if request.response_nonce.is_empty() {
                    let answer = subscribed(&world, &sent, &request.type_url);
                    if responses.send(Ok(answer)).await.is_err() {
                        break;
                    }
                }
                // The test may never ask for this stream's requests; that is fine.
                let _ = requests_tx.send(request);
            }
        });
        Ok(Response::new(ReceiverStream::new(outgoing)))
    }
}

/// The answer to a subscription to `type_url`: the world's set, or an empty one.
fn subscribed(world: &World, sent: &AtomicU64, url: &str) -> DiscoveryResponse {
    match world.get(url) {
        Some((version, resources)) => response(sent, url, version, resources.clone()),
        None if type_url::ALL.contains(&url) => response(sent, url, "empty", Vec::new()),
        None => response(sent, url, "unknown", Vec::new()),
    }
}
