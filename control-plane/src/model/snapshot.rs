//! Snapshots: the whole state of the world of each kind, sorted by name and versioned,
//! as one immutable value that every stream shares.
//!
//! A version is a digest of the encoded set, so it changes exactly when the set does:
//! the same objects give the same version (also after a controller restart, so a
//! proxy that reconnects is not sent a "new" version of what it already has), and any
//! change in any field gives another.
//!
//! # Encoded once
//! Each type's resources are encoded once, when the type is built, into the bytes of
//! `DiscoveryResponse.resources` ([`TypeSnapshot::encoded`]). Every stream subscribed
//! to the whole type is sent those same bytes (the discovery service frames them
//! after each stream's own type, version and nonce), and a selection by name is put
//! together from each resource's slice of them: pushing a change to many proxies
//! never copies or encodes the resources once per proxy. The digest of the version
//! reads the same bytes, so versions are what they were when it encoded afresh.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use prost::Message;
use prost::bytes::Bytes;
use ring::digest::{Context, SHA256};
use trellis_proto::discovery::v1 as pb;

use super::{Kind, Object};

/// The key of one `DiscoveryResponse.resources` record: field 4, length-delimited.
const RESOURCES_KEY: u8 = (4 << 3) | 2;

/// One resource and the `namespace/name` proxies subscribe to it by.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedResource {
    pub name: String,
    pub resource: pb::Resource,
    /// `resource` encoded: a view into its type's [`TypeSnapshot::encoded`], so a
    /// selection by name copies these bytes rather than encoding again.
    pub encoded: Bytes,
}

/// Every resource of one kind.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    /// Sorted by name.
    pub resources: Vec<NamedResource>,
    /// Every resource, in order, as the `resources` field of a `DiscoveryResponse`
    /// (one field-4 record each): what every stream subscribed to the whole type is
    /// sent, shared rather than copied per stream.
    pub encoded: Bytes,
}

/// What one stream is sent of a type: some (or all) of its resources, already
/// encoded, and the version of exactly that selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub version: String,
    /// The `resources` field of a `DiscoveryResponse`, encoded.
    pub resources: Bytes,
    /// How many resources `resources` holds.
    pub count: usize,
}

impl TypeSnapshot {
    /// `objects` must come sorted by `namespace/name` (the model keeps them so).
    pub(crate) fn build<'a>(objects: impl Iterator<Item = (&'a String, &'a Object)>) -> Self {
        let mut body = Vec::new();
        let built: Vec<(String, pb::Resource, Range<usize>)> = objects
            .map(|(name, object)| {
                let resource = object.to_resource();
                let range = append_record(&mut body, &resource);
                (name.clone(), resource, range)
            })
            .collect();
        let encoded = Bytes::from(body);
        let resources: Vec<NamedResource> = built
            .into_iter()
            .map(|(name, resource, range)| NamedResource {
                name,
                resource,
                encoded: encoded.slice(range),
            })
            .collect();
        TypeSnapshot {
            version: version(&resources),
            resources,
            encoded,
        }
    }

    /// The resources named in `names` (every resource when `names` is empty) and the
    /// version of exactly that selection, so that a proxy subscribed by name is sent a
    /// new version only when one of its resources changed. The whole type is shared,
    /// not copied.
    pub fn select(&self, names: &BTreeSet<String>) -> Selection {
        if names.is_empty() {
            return Selection {
                version: self.version.clone(),
                resources: self.encoded.clone(),
                count: self.resources.len(),
            };
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
        let record_len = |len: usize| 1 + prost::length_delimiter_len(len) + len;
        let mut body = Vec::with_capacity(chosen.iter().map(|r| record_len(r.encoded.len())).sum());
        for resource in &chosen {
            body.push(RESOURCES_KEY);
            // A Vec grows as needed: writing to one cannot run out of room.
            let _ = prost::encode_length_delimiter(resource.encoded.len(), &mut body);
            body.extend_from_slice(&resource.encoded);
        }
        Selection {
            version: version(chosen.iter().copied()),
            resources: Bytes::from(body),
            count: chosen.len(),
        }
    }
}

/// Appends `resource` to `body` as one `DiscoveryResponse.resources` record and
/// returns where its encoding (without the record's key and length) lies.
fn append_record(body: &mut Vec<u8>, resource: &pb::Resource) -> Range<usize> {
    let len = resource.encoded_len();
    body.push(RESOURCES_KEY);
    // A Vec grows as needed: writing to one cannot run out of room.
    let _ = resource.encode_length_delimited(body);
    body.len() - len..body.len()
}

/// The first 64 bits of the SHA-256 of the names and encodings, in hex. Each part is
/// length-prefixed so that no two different sets encode to the same bytes.
pub fn version<'a>(resources: impl IntoIterator<Item = &'a NamedResource>) -> String {
    let mut digest = Context::new(&SHA256);
    for resource in resources {
        let encoded = &resource.encoded;
        digest.update(&(resource.name.len() as u64).to_be_bytes());
        digest.update(resource.name.as_bytes());
        digest.update(&(encoded.len() as u64).to_be_bytes());
        digest.update(encoded);
    }
    digest.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state of the world of every kind, published as one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// 1 for the first snapshot the model publishes, then one more for each; sent
    /// with every response cut from it, for logs on both ends.
    pub id: u64,
    /// Indexed by [`Kind::index`]; a kind that did not change keeps its `Arc`.
    types: [Arc<TypeSnapshot>; 4],
}

impl Snapshot {
    pub(crate) fn new(id: u64, types: [Arc<TypeSnapshot>; 4]) -> Self {
        Snapshot { id, types }
    }

    pub fn get(&self, kind: Kind) -> &Arc<TypeSnapshot> {
        &self.types[kind.index()]
    }
}
