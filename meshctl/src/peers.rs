//! `peers.yaml`: which SPIFFE ID the server at each pod IP must present.
//!
//! Until discovery pushes endpoints, this static map is how a client's sidecar knows
//! whom it is talking to: `"10.199.0.3": "spiffe://cluster.local/ns/default/sa/server"`.
//! Every proxy reads the same file and re-reads it on SIGHUP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::Error;
use crate::state::write_file;

/// Pod IP → SPIFFE ID, kept sorted so the file diffs well.
pub type Peers = BTreeMap<String, String>;

/// The map in `path`; an absent file is an empty map.
pub fn load(path: &Path) -> Result<Peers, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Peers::new()),
        Err(e) => return Err(Error::io("cannot read", path)(e)),
    };
    if text.trim().is_empty() {
        return Ok(Peers::new());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| Error::InvalidFile {
        what: "peers map (pod IP: SPIFFE ID)",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub fn store(path: &Path, peers: &Peers) -> Result<(), Error> {
    write_file(path, render(peers).as_bytes(), 0o644)
}

/// Adds or replaces `ip`'s identity.
pub fn insert(path: &Path, ip: Ipv4Addr, identity: &str) -> Result<(), Error> {
    let mut peers = load(path)?;
    peers.insert(ip.to_string(), identity.to_string());
    store(path, &peers)
}

/// Drops `ip`; a missing entry is fine.
pub fn remove(path: &Path, ip: Ipv4Addr) -> Result<(), Error> {
    let mut peers = load(path)?;
    if peers.remove(&ip.to_string()).is_some() {
        store(path, &peers)?;
    }
    Ok(())
}

fn render(peers: &Peers) -> String {
    let mut text =
        String::from("# pod IP -> the SPIFFE ID its sidecar must present (meshctl local)\n");
    for (ip, identity) in peers {
        text.push_str(&format!("{ip:?}: {identity:?}\n"));
    }
    if peers.is_empty() {
        text.push_str("{}\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_reads_back_as_written_and_quotes_addresses() {
        let mut peers = Peers::new();
        peers.insert(
            "10.199.0.3".into(),
            "spiffe://cluster.local/ns/default/sa/server".into(),
        );
        peers.insert(
            "10.199.0.2".into(),
            "spiffe://cluster.local/ns/default/sa/client".into(),
        );
        let text = render(&peers);
        assert!(text.contains("\"10.199.0.3\": \"spiffe://cluster.local/ns/default/sa/server\"\n"));
        let parsed: Peers = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(parsed, peers);
        let empty: Option<Peers> = serde_yaml_ng::from_str(&render(&Peers::new())).unwrap();
        assert_eq!(empty.unwrap_or_default(), Peers::new());
    }
}
