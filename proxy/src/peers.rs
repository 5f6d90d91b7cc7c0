//! The static destination → identity map: which SPIFFE ID the server at an address
//! must present, for destinations discovery does not know (outbound resolution asks
//! the discovery directory first). It meshes a peer outside the controller's view;
//! destinations in neither are forwarded as plain TCP (passthrough).
//!
//! The map comes from `--peer ADDR=ID` flags and/or a YAML file (`--peers`) of
//! `"10.0.0.7": spiffe://…` or `"10.0.0.7:8080": spiffe://…` entries, re-read on
//! SIGHUP. A bad file is refused with its path, line and the offending entry, and the
//! last good map stays in force.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trellis_identity::SpiffeId;

use crate::Error;
use crate::orig_dst::OrigDstAddr;

/// Where the map comes from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerSource {
    pub file: Option<PathBuf>,
    pub inline: Vec<(PeerKey, String)>,
}

/// A destination: a whole host, or one port of it (which wins over the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum PeerKey {
    Host(IpAddr),
    Socket(SocketAddr),
}

impl FromStr for PeerKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerKey::Host(ip));
        }
        s.parse::<SocketAddr>().map(PeerKey::Socket).map_err(|_| {
            format!("{s:?} is neither an IP address nor IP:port (IPv6 with a port: [addr]:port)")
        })
    }
}

impl From<PeerKey> for String {
    fn from(key: PeerKey) -> String {
        match key {
            PeerKey::Host(ip) => ip.to_string(),
            PeerKey::Socket(addr) => addr.to_string(),
        }
    }
}

type Map = HashMap<PeerKey, SpiffeId>;

/// The map in force, swapped whole on reload so a lookup never sees half of one.
#[derive(Debug)]
pub struct Peers {
    source: PeerSource,
    map: ArcSwap<Map>,
}

impl Peers {
    pub fn load(source: &PeerSource) -> Result<Self, Error> {
        let map = read(source)?;
        Ok(Peers {
            source: source.clone(),
            map: ArcSwap::from_pointee(map),
        })
    }

    /// The identity the server at `dst` must present, if it is a mesh peer.
    pub fn lookup(&self, dst: OrigDstAddr) -> Option<SpiffeId> {
        let map = self.map.load();
        map.get(&PeerKey::Socket(dst.0))
            .or_else(|| map.get(&PeerKey::Host(dst.0.ip())))
            .cloned()
    }

    pub fn snapshot(&self) -> Arc<Map> {
        self.map.load_full()
    }

    /// Re-reads the map on every SIGHUP until `shutdown`.
    pub async fn reload_on_sighup(self: Arc<Self>, shutdown: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP; the peers map will not reload");
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            match self.reload() {
                Ok(peers) => tracing::info!(peers, "peers map reloaded"),
                Err(error) => {
                    tracing::error!(%error, "peers map refused; the previous one stays in force");
                }
            }
        }
    }

    /// Re-reads the sources and swaps the new map in, or leaves the current one in
    /// force if they do not parse. Returns how many peers the new map holds.
    pub fn reload(&self) -> Result<usize, Error> {
        let map = read(&self.source)?;
        let peers = map.len();
        self.map.store(Arc::new(map));
        Ok(peers)
    }
}

fn read(source: &PeerSource) -> Result<Map, Error> {
    let mut map = Map::new();
    if let Some(path) = &source.file {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            what: "peers file",
            path: path.clone(),
            source,
        })?;
        map.extend(parse(&text).map_err(|message| Error::PeersFile {
            path: path.clone(),
            message,
        })?);
    }
    for (key, id) in &source.inline {
        let id = id.parse().map_err(|e| Error::PeersFile {
            path: "--peer".into(),
            message: format!("{}: {e}", String::from(*key)),
        })?;
        map.insert(*key, id);
    }
    Ok(map)
}

/// Parses the YAML map. Syntax errors carry serde_yaml_ng's line and column; an
/// entry that parses as YAML but not as an address and a SPIFFE ID is reported with
/// the line it stands on.
fn parse(text: &str) -> Result<Map, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let entries: HashMap<String, String> =
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut map = Map::with_capacity(entries.len());
    for (key, id) in entries {
        let entry = key
            .parse::<PeerKey>()
            .and_then(|k| Ok((k, id.parse::<SpiffeId>().map_err(|e| e.to_string())?)));
        match entry {
            Ok((key, id)) => {
                map.insert(key, id);
            }
            Err(message) => {
                let line = text
                    .lines()
                    .position(|l| {
                        l.trim_start()
                            .trim_start_matches(['"', '\''])
                            .starts_with(&key)
                    })
                    .map_or(0, |i| i + 1);
                return Err(format!("line {line}: entry {key:?}: {message}"));
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(s: &str) -> OrigDstAddr {
        OrigDstAddr(s.parse().unwrap())
    }

    #[test]
    fn a_port_entry_wins_over_its_host() {
        let map = parse(
            "\"10.0.0.7\": spiffe://cluster.local/ns/shop/sa/web\n\
             \"10.0.0.7:9090\": spiffe://cluster.local/ns/shop/sa/metrics\n\
             \"[fd00::7]:80\": spiffe://cluster.local/ns/shop/sa/v6\n",
        )
        .unwrap();
        let peers = Peers {
            source: PeerSource::default(),
            map: ArcSwap::from_pointee(map),
        };
        let id = |s| {
            peers
                .lookup(dst(s))
                .map(|id| id.service_account().to_string())
        };
        assert_eq!(id("10.0.0.7:8080").as_deref(), Some("web"));
        assert_eq!(id("10.0.0.7:9090").as_deref(), Some("metrics"));
        assert_eq!(id("[fd00::7]:80").as_deref(), Some("v6"));
        assert_eq!(id("10.0.0.8:8080"), None);
    }

    #[test]
    fn a_bad_entry_is_refused_with_its_line() {
        let err = parse(
            "\"10.0.0.7\": spiffe://cluster.local/ns/shop/sa/web\n\
             \"10.0.0.8\": https://cluster.local/ns/shop/sa/web\n",
        )
        .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("not a SPIFFE ID"), "{err}");
        let err = parse("\"not-an-ip\": spiffe://cluster.local/ns/a/sa/b\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("not-an-ip"), "{err}");
    }

    #[test]
    fn a_bad_file_on_reload_keeps_the_last_good_map() {
        let dir = std::env::temp_dir().join(format!("trellis-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("peers.yaml");
        std::fs::write(&file, "\"10.0.0.7\": spiffe://cluster.local/ns/a/sa/b\n").unwrap();
        let source = PeerSource {
            file: Some(file.clone()),
            inline: vec![],
        };
        let peers = Peers::load(&source).unwrap();

        std::fs::write(&file, "\"10.0.0.7\": [unclosed\n").unwrap();
        let err = peers.reload().unwrap_err().to_string();
        assert!(
            err.contains("peers.yaml") && err.contains("line 1"),
            "{err}"
        );
        assert!(peers.lookup(dst("10.0.0.7:1")).is_some());

        std::fs::write(&file, "\"10.0.0.9\": spiffe://cluster.local/ns/a/sa/c\n").unwrap();
        assert_eq!(peers.reload().unwrap(), 1);
        assert!(peers.lookup(dst("10.0.0.7:1")).is_none());
        assert!(peers.lookup(dst("10.0.0.9:1")).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
