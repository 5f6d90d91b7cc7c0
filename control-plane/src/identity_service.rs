//! The `trellis.identity.v1.Identity` gRPC service: a proxy sends a CSR for the key
//! pair it made and its ServiceAccount token, and gets a workload certificate back.
//!
//! One call reads top to bottom: token → identity → CSR checks → signature. The
//! identity comes from the token only; the CSR contributes a public key. Every
//! refusal is logged with a bounded `reason` and answered with the status its kind
//! maps to ([`Refusal::code`]), and every issuance is logged with its serial.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use trellis_identity::SpiffeId;
use trellis_proto::identity::v1::identity_server::{Identity, IdentityServer};
use trellis_proto::identity::v1::{CertifyRequest, CertifyResponse};

use crate::ca::{Ca, IssuedCert};
use crate::server::Peer;
use crate::token::{ServiceAccount, TokenAuthenticator};
use crate::{Refusal, csr};

/// Requests larger than this are refused before decoding: a token and a CSR together
/// are a few KiB.
const MAX_REQUEST_LEN: usize = 64 * 1024;

/// What the service needs to decide and sign.
pub struct IdentityService {
    ca: Arc<Ca>,
    /// Checks tokens: against a JWKS, or by TokenReview.
    tokens: Arc<TokenAuthenticator>,
    /// The trust domain of every SPIFFE ID issued.
    trust_domain: String,
    /// How long each workload certificate lasts.
    cert_lifetime: Duration,
}

impl IdentityService {
    pub fn new(
        ca: Arc<Ca>,
        tokens: Arc<TokenAuthenticator>,
        trust_domain: &str,
        cert_lifetime: Duration,
    ) -> Self {
        IdentityService {
            ca,
            tokens,
            trust_domain: trust_domain.to_string(),
            cert_lifetime,
        }
    }

    /// The service wrapped for tonic, with the request size bounded.
    pub fn into_server(self) -> IdentityServer<IdentityService> {
        IdentityServer::new(self).max_decoding_message_size(MAX_REQUEST_LEN)
    }

    /// The identity the token proves.
    async fn authenticate(&self, token: &str) -> Result<(SpiffeId, ServiceAccount), Refusal> {
        let account = self.tokens.authenticate(token).await?;
        let id =
            SpiffeId::for_service_account(&self.trust_domain, &account.namespace, &account.name)
                .map_err(crate::TokenError::from)?;
        Ok((id, account))
    }

    /// Checks the CSR against `id` and signs its key.
    fn sign(&self, csr_der: &[u8], id: &SpiffeId) -> Result<IssuedCert, Refusal> {
        let csr = csr::check(csr_der, id)?;
        Ok(self.ca.issue(&csr, id, self.cert_lifetime)?)
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = Peer::of(&request).and_then(|peer| peer.addr);
        let request = request.into_inner();
        let (id, account) = self
            .authenticate(&request.token)
            .await
            .map_err(|refusal| refuse(peer, None, refusal))?;
        let issued = self
            .sign(&request.csr_der, &id)
            .map_err(|refusal| refuse(peer, Some(&id), refusal))?;

        let not_after_unix = issued.not_after.unix_timestamp();
        tracing::info!(
            spiffe_id = %id,
            serial = %issued.serial,
            not_after = %issued.not_after_rfc3339(),
            pod = account.pod.as_deref(),
            peer = peer.map(tracing::field::display),
            "issued a workload certificate"
        );
        Ok(Response::new(CertifyResponse {
            chain_der: issued.chain.iter().map(|cert| cert.to_vec()).collect(),
            not_after_unix,
            spiffe_id: id.to_string(),
        }))
    }
}

fn refuse(peer: Option<SocketAddr>, id: Option<&SpiffeId>, refusal: Refusal) -> Status {
    tracing::warn!(
        reason = refusal.reason(),
        spiffe_id = id.map(SpiffeId::as_str),
        peer = peer.map(tracing::field::display),
        error = %refusal,
        "refused a certificate request"
    );
    refusal.into()
}

#[cfg(test)]
mod tests;
