//! Idle connections: open many, make one request on each (so that every proxy on the
//! path has really connected upstream), then hold them without traffic while the
//! harness reads the proxies' memory. What each idle connection costs is what a
//! mesh pays for every keep-alive pool in a cluster.

use std::time::Duration;

use super::client::{self, RequestTemplate, Sender};
use super::{Protocol, Target};
use crate::Error;

/// How the holding went.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct HoldReport {
    /// Connections that answered their request and were held.
    pub connections: u64,
    pub errors: u64,
}

/// Opens `connections` HTTP/1.1 connections to `target`, calls `ready` once they are
/// all open, holds them for `hold`, and closes them.
pub fn hold(
    target: &Target,
    connections: usize,
    hold: Duration,
    ready: impl FnOnce(HoldReport),
) -> Result<HoldReport, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::io("start the runtime", source))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let template = RequestTemplate::new(target, Protocol::Http1, 0, None, false);
        let mut held: Vec<Sender> = Vec::with_capacity(connections);
        let mut report = HoldReport {
            connections: 0,
            errors: 0,
        };
        for _ in 0..connections {
            match open(target, &template).await {
                Ok(sender) => {
                    held.push(sender);
                    report.connections += 1;
                }
                Err(_) => report.errors += 1,
            }
        }
        ready(report);
        tokio::time::sleep(hold).await;
        drop(held);
        Ok(report)
    })
}

async fn open(target: &Target, template: &RequestTemplate) -> Result<Sender, client::Failure> {
    let mut sender = client::connect(target.addr, Protocol::Http1).await?;
    if !client::ready(&mut sender).await {
        return Err(client::Failure::Handshake);
    }
    client::send(&mut sender, template).await?;
    Ok(sender)
}
