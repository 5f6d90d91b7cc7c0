//! HTTP/1.1 `Upgrade` (WebSocket, and any other protocol switch): the request goes
//! over a connection of its own, and after the `101 Switching Protocols` both sides
//! become one opaque tunnel.
//!
//! An upgraded connection cannot share the multiplexed mesh connection (it is no
//! longer HTTP), so the outbound side sends the request as HTTP/1.1 over a dedicated
//! connection to the endpoint (mTLS to a meshed one), and the inbound side, which
//! sees HTTP/1.1 after terminating that mTLS, relays it to the app the same way.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::errors::Failure;
use super::{Body, boxed, deadline, pool, strip_hop_by_hop};

/// Sends the upgrade request `request` over `io`; if the server switches protocols
/// within `timeout` (of the request's end), answers the caller with its `101` and
/// splices the two upgraded connections until both sides close. Any other answer is
/// returned as an ordinary response.
pub async fn relay<I>(
    mut request: Request<Incoming>,
    io: I,
    timeout: Duration,
) -> Result<Response<Body>, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_side = hyper::upgrade::on(&mut request);
    let (request, mut sent) = deadline::watch(request);
    let (mut sender, conn) = pool::h1_client()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Connect(format!("upgrade handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "upgrade connection ended");
        }
    });
    let sending = std::pin::pin!(sender.send_request(request));
    let mut response = deadline::within(timeout, &mut sent, sending)
        .await
        .ok_or(Failure::Timeout(timeout))?
        .map_err(|e| Failure::Upstream(e.to_string()))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (client, server) = match tokio::try_join!(client_side, server_side) {
                Ok(both) => both,
                Err(error) => {
                    tracing::info!(%error, "protocol switch failed");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            match tokio::io::copy_bidirectional(&mut client, &mut server).await {
                Ok((sent, received)) => tracing::debug!(sent, received, "tunnel closed"),
                Err(error) => tracing::debug!(%error, "tunnel failed"),
            }
        });
    } else {
        strip_hop_by_hop(response.headers_mut());
    }
    Ok(response.map(boxed))
}
