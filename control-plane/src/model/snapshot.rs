//! Snapshots: the whole state of the world of each kind, sorted by name and versioned,
//! as one immutable value that every stream shares.
//!
//! A version is a digest of the encoded set, so it changes exactly when the set does:
//! the same objects give the same version (also after a controller restart, so a
//! proxy that reconnects is not sent a "new" version of what it already has), and any
//! change in any field gives another.

use std::collections::BTreeSet;
use std::sync::Arc;

use prost::Message;
use ring::digest::{Context, SHA256};
use trellis_proto::discovery::v1 as pb;

use super::{Kind, Object};

/// One resource and the `namespace/name` proxies subscribe to it by.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedResource {
    pub name: String,
    pub resource: pb::Resource,
}

/// Every resource of one kind.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    /// Sorted by name.
    pub resources: Vec<NamedResource>,
}

impl TypeSnapshot {
    /// `objects` must come sorted by `namespace/name` (the model keeps them so).
    pub(crate) fn build<'a>(objects: impl Iterator<Item = (&'a String, &'a Object)>) -> Self {
        let resources: Vec<NamedResource> = objects
            .map(|(name, object)| NamedResource {
                name: name.clone(),
                resource: object.to_resource(),
            })
            .collect();
        TypeSnapshot {
            version: version(&resources),
            resources,
        }
    }

    /// The resources named in `names` (every resource when `names` is empty) and the
    /// version of exactly that selection, so that a proxy subscribed by name is sent a
    /// new version only when one of its resources changed.
    pub fn select(&self, names: &BTreeSet<String>) -> (String, Vec<pb::Resource>) {
        if names.is_empty() {
            let resources = self.resources.iter().map(|r| r.resource.clone()).collect();
            return (self.version.clone(), resources);
        }
        let chosen: Vec<&NamedResource> = names
            .iter()
            .filter_map(|name| {
                self.resources
                    .binary_search_by(|r| r.name.as_str().cmp(name))
                    .ok()
                    .map(|i| &self.resources[i])
            })
            .collect();
        let version = version(chosen.iter().copied());
        (
            version,
            chosen.into_iter().map(|r| r.resource.clone()).collect(),
        )
    }
}

/// The first 64 bits of the SHA-256 of the names and encodings, in hex. Each part is
/// length-prefixed so that no two different sets encode to the same bytes.
pub fn version<'a>(resources: impl IntoIterator<Item = &'a NamedResource>) -> String {
    let mut digest = Context::new(&SHA256);
    for resource in resources {
        let encoded = resource.resource.encode_to_vec();
        digest.update(&(resource.name.len() as u64).to_be_bytes());
        digest.update(resource.name.as_bytes());
        digest.update(&(encoded.len() as u64).to_be_bytes());
        digest.update(&encoded);
    }
    digest.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state of the world of every kind, published as one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Indexed by [`Kind::index`]; a kind that did not change keeps its `Arc`.
    types: [Arc<TypeSnapshot>; 4],
}

impl Snapshot {
    pub(crate) fn new(types: [Arc<TypeSnapshot>; 4]) -> Self {
        Snapshot { types }
    }

    pub fn get(&self, kind: Kind) -> &Arc<TypeSnapshot> {
        &self.types[kind.index()]
    }
}
