//! What one stream is subscribed to and has been sent: the protocol's rules, as plain
//! functions over plain data, so they are tested without a server.
//!
//! - A request with no `response_nonce` subscribes (or re-subscribes, with new
//!   `resource_names`): the current state of the type is sent, whatever was sent
//!   before.
//! - A request with the nonce of the last response of its type is an ACK, or a NACK
//!   when it carries `error_detail`. Either may change `resource_names`, which
//!   re-sends the type with the new selection.
//! - A request with any other nonce is stale (it answers a response that has since
//!   been superseded) and is ignored, as Envoy's servers do. The exception is a type
//!   this stream has not sent yet (a proxy resuming after a controller restart): its
//!   request subscribes.
//! - A type is sent again only when the version of what the stream selects differs
//!   from what it was last sent. So after a NACK the rejected version is not re-sent;
//!   the next change is.
//! - An unknown type URL is ignored (the stream goes on), as Envoy ignores types it
//!   does not know, so that newer proxies can ask older controllers for more.
//! - The responses due under one snapshot are one push: each carries the snapshot's
//!   id, and all but the last `more_in_snapshot`, so that the proxy swaps them in
//!   together. After a push, the stream has been sent the snapshot's version of every
//!   type it subscribes to (or holds the one it rejected), so what the proxy runs
//!   after it is that snapshot, never a mix of two.

use std::collections::BTreeSet;

use trellis_proto::discovery::v1::DiscoveryRequest;

use super::grpc::Push;
use crate::model::{Kind, Snapshot};

/// Every type's subscription on one stream.
pub struct Subscriptions {
    /// Prefixes every nonce, so nonces are unique across streams, which makes logs
    /// and `/proxies` unambiguous.
    stream: u64,
    responses: u64,
    by_kind: [Option<Subscription>; 4],
}

struct Subscription {
    /// Empty: every resource of the type.
    names: BTreeSet<String>,
    /// The last response: its version and nonce.
    sent: Option<(String, String)>,
    /// Send the current state even if its version was sent already.
    resend: bool,
}

/// What a request meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Subscribed {
        kind: Kind,
    },
    Acked {
        kind: Kind,
        version: String,
        resubscribed: bool,
    },
    Nacked {
        kind: Kind,
        nonce: String,
        version: String,
        message: String,
        resubscribed: bool,
    },
    Stale {
        kind: Kind,
        nonce: String,
    },
    UnknownType(String),
    /// No type URL: a request that only introduces the node, say.
    NoType,
}

impl Subscriptions {
    pub fn new(stream: u64) -> Self {
        Subscriptions {
            stream,
            responses: 0,
            by_kind: Default::default(),
        }
    }

    /// The names `kind` is subscribed to, if it is.
    pub fn names(&self, kind: Kind) -> Option<&BTreeSet<String>> {
        self.by_kind[kind.index()].as_ref().map(|s| &s.names)
    }

    pub fn receive(&mut self, request: &DiscoveryRequest) -> Received {
        if request.type_url.is_empty() {
            return Received::NoType;
        }
        let Some(kind) = Kind::from_type_url(&request.type_url) else {
            return Received::UnknownType(request.type_url.clone());
        };
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let slot = &mut self.by_kind[kind.index()];
        let answered = match slot {
            Some(Subscription {
                sent: Some((version, nonce)),
                ..
            }) if !request.response_nonce.is_empty() => {
                if *nonce != request.response_nonce {
                    return Received::Stale {
                        kind,
                        nonce: request.response_nonce.clone(),
                    };
                }
                Some((version.clone(), nonce.clone()))
            }
            _ => None,
        };
        let Some((version, nonce)) = answered else {
            *slot = Some(Subscription {
                names,
                sent: slot.take().and_then(|s| s.sent),
                resend: true,
            });
            return Received::Subscribed { kind };
        };
        let subscription = slot.get_or_insert_with(|| Subscription {
            names: BTreeSet::new(),
            sent: None,
            resend: false,
        });
        let resubscribed = subscription.names != names;
        if resubscribed {
            subscription.names = names;
            subscription.resend = true;
        }
        match &request.error_detail {
            Some(error) => Received::Nacked {
                kind,
                nonce,
                version,
                message: error.message.clone(),
                resubscribed,
            },
            None => Received::Acked {
                kind,
                version,
                resubscribed,
            },
        }
    }

    /// Every response due under `snapshot`, as one push: each subscribed type whose
    /// selection has a version this stream was not sent last, or that was
    /// (re-)subscribed since. A subscription to the whole type shares the snapshot's
    /// encoded resources.
    pub fn responses(&mut self, snapshot: &Snapshot) -> Vec<Push> {
        let mut responses = Vec::new();
        for kind in Kind::ALL {
            let Some(subscription) = &mut self.by_kind[kind.index()] else {
                continue;
            };
            let current = snapshot.get(kind);
            let last_version = subscription.sent.as_ref().map(|(version, _)| version);
            // The common case, every resource: decide on the version before selecting.
            if subscription.names.is_empty()
                && !subscription.resend
                && last_version == Some(&current.version)
            {
                continue;
            }
            let selection = current.select(&subscription.names);
            if !subscription.resend && last_version == Some(&selection.version) {
                continue;
            }
            self.responses += 1;
            let nonce = format!("{}-{}", self.stream, self.responses);
            subscription.sent = Some((selection.version.clone(), nonce.clone()));
            subscription.resend = false;
            responses.push(Push {
                kind,
                version_info: selection.version,
                nonce,
                resources: selection.resources,
                count: selection.count,
                snapshot: snapshot.id,
                more_in_snapshot: true,
            });
        }
        if let Some(last) = responses.last_mut() {
            last.more_in_snapshot = false;
        }
        responses
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use prost::Message;
    use trellis_proto::discovery::v1 as pb;
    use trellis_proto::discovery::v1::{DiscoveryResponse, ErrorDetail, type_url};

    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{Model, Object};
    use crate::source::Source;

    /// A model with one source, to make real snapshots from.
    struct World {
        model: Arc<Model>,
        source: Source,
    }

    impl World {
        fn new() -> Self {
            let model = Model::new(Duration::from_millis(10), Arc::new(Metrics::new()));
            let source = model.source("test");
            source.synced();
            World { model, source }
        }

        /// Makes the world exactly these services, each with endpoints at `address`.
        fn set(&self, services: &[(&str, &str)]) -> Arc<Snapshot> {
            let objects = services.iter().flat_map(|(name, address)| {
                let service = Object::Service(pb::Service {
                    name: (*name).into(),
                    namespace: "shop".into(),
                    ..Default::default()
                });
                let endpoints = Object::Endpoints(pb::Endpoints {
                    name: (*name).into(),
                    namespace: "shop".into(),
                    endpoints: vec![pb::Endpoint {
                        address: (*address).into(),
                        ..Default::default()
                    }],
                });
                [service, endpoints]
            });
            assert!(self.source.replace(objects).is_empty());
            self.model.rebuild();
            self.model.current().unwrap()
        }
    }

    fn subscribe(type_url: &str, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| (*n).into()).collect(),
            ..Default::default()
        }
    }

    fn ack(response: &Push) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: response.kind.type_url().into(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        }
    }

    fn nack(response: &Push, message: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(ErrorDetail {
                code: 3,
                message: message.into(),
            }),
            version_info: String::new(),
            ..ack(response)
        }
    }

    #[test]
    fn a_subscription_gets_the_current_state_once() {
        let world = World::new();
        let snapshot = world.set(&[("web", "10.0.0.1")]);
        let mut stream = Subscriptions::new(7);
        assert!(stream.responses(&snapshot).is_empty(), "nothing subscribed");

        let received = stream.receive(&subscribe(type_url::SERVICE, &[]));
        assert_eq!(
            received,
            Received::Subscribed {
                kind: Kind::Service
            }
        );
        let sent = stream.responses(&snapshot);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].kind, Kind::Service);
        assert_eq!(sent[0].version_info, snapshot.get(Kind::Service).version);
        assert_eq!(sent[0].nonce, "7-1");
        assert_eq!(sent[0].count, 1);
        assert_eq!(
            sent[0].resources,
            snapshot.get(Kind::Service).encoded,
            "the whole type is the snapshot's own bytes"
        );
        assert!(stream.responses(&snapshot).is_empty(), "already sent");

        // Subscribing again (a proxy that restarted its subscription) re-sends.
        stream.receive(&subscribe(type_url::SERVICE, &[]));
        assert_eq!(stream.responses(&snapshot)[0].nonce, "7-2");
    }

    #[test]
    fn the_responses_of_one_snapshot_are_one_push_marked_as_such() {
        let world = World::new();
        let mut stream = Subscriptions::new(1);
        for type_url in type_url::ALL {
            stream.receive(&subscribe(type_url, &[]));
        }
        let first = world.set(&[("web", "10.0.0.1")]);
        let pushed = stream.responses(&first);
        let marks: Vec<(Kind, u64, bool)> = pushed
            .iter()
            .map(|p| (p.kind, p.snapshot, p.more_in_snapshot))
            .collect();
        assert_eq!(
            marks,
            [
                (Kind::Service, first.id, true),
                (Kind::Endpoints, first.id, true),
                (Kind::Route, first.id, true),
                (Kind::AuthorizationPolicy, first.id, false),
            ],
            "every type, and only the last says nothing more follows"
        );

        // A new service with its endpoints: both in one push, the last one closing it.
        let second = world.set(&[("web", "10.0.0.1"), ("cart", "10.0.0.5")]);
        assert_eq!(second.id, first.id + 1);
        let marks: Vec<(Kind, u64, bool)> = stream
            .responses(&second)
            .iter()
            .map(|p| (p.kind, p.snapshot, p.more_in_snapshot))
            .collect();
        assert_eq!(
            marks,
            [
                (Kind::Service, second.id, true),
                (Kind::Endpoints, second.id, false)
            ]
        );

        // Only the endpoints move: a push of one response, which is its last.
        let third = world.set(&[("web", "10.0.0.2"), ("cart", "10.0.0.5")]);
        let pushed = stream.responses(&third);
        assert_eq!(pushed.len(), 1);
        assert!(!pushed[0].more_in_snapshot);
    }

    #[test]
    fn an_ack_is_recorded_and_a_stale_one_ignored() {
        let world = World::new();
        let mut stream = Subscriptions::new(1);
        stream.receive(&subscribe(type_url::ENDPOINTS, &[]));
        let first = stream
            .responses(&world.set(&[("web", "10.0.0.1")]))
            .remove(0);
        let second = stream
            .responses(&world.set(&[("web", "10.0.0.2")]))
            .remove(0);

        assert_eq!(
            stream.receive(&ack(&first)),
            Received::Stale {
                kind: Kind::Endpoints,
                nonce: first.nonce.clone()
            }
        );
        assert_eq!(
            stream.receive(&ack(&second)),
            Received::Acked {
                kind: Kind::Endpoints,
                version: second.version_info.clone(),
                resubscribed: false
            }
        );
    }

    #[test]
    fn a_rejected_version_is_not_resent_but_the_next_change_is() {
        let world = World::new();
        let mut stream = Subscriptions::new(1);
        stream.receive(&subscribe(type_url::ENDPOINTS, &[]));
        let snapshot = world.set(&[("web", "10.0.0.1")]);
        let rejected = stream.responses(&snapshot).remove(0);

        assert_eq!(
            stream.receive(&nack(&rejected, "endpoint 10.0.0.1 has no port")),
            Received::Nacked {
                kind: Kind::Endpoints,
                nonce: rejected.nonce.clone(),
                version: rejected.version_info.clone(),
                message: "endpoint 10.0.0.1 has no port".into(),
                resubscribed: false,
            }
        );
        // Another type changing publishes a new snapshot; endpoints are not re-sent.
        assert!(stream.responses(&snapshot).is_empty());
        let next = stream.responses(&world.set(&[("web", "10.0.0.2")]));
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].version_info, rejected.version_info);
    }

    #[test]
    fn a_subscription_by_name_is_sent_only_what_it_names() {
        let world = World::new();
        let mut stream = Subscriptions::new(1);
        stream.receive(&subscribe(type_url::ENDPOINTS, &["shop/web"]));
        let first = stream
            .responses(&world.set(&[("web", "10.0.0.1"), ("db", "10.0.0.9")]))
            .remove(0);
        assert_eq!(first.count, 1);
        let decoded = DiscoveryResponse::decode(first.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(
            &decoded.resources[0].kind,
            Some(pb::resource::Kind::Endpoints(e)) if e.name == "web"
        ));

        // db changes: nothing for this stream. web changes: a push.
        let db_moved = world.set(&[("web", "10.0.0.1"), ("db", "10.0.0.8")]);
        assert!(stream.responses(&db_moved).is_empty());
        let web_moved = world.set(&[("web", "10.0.0.2"), ("db", "10.0.0.8")]);
        let pushed = stream.responses(&web_moved);
        assert_eq!(pushed.len(), 1);

        // An ACK that names more resources re-sends with the new selection.
        let widened = DiscoveryRequest {
            resource_names: vec!["shop/web".into(), "shop/db".into()],
            ..ack(&pushed[0])
        };
        assert!(matches!(
            stream.receive(&widened),
            Received::Acked {
                resubscribed: true,
                ..
            }
        ));
        assert_eq!(stream.responses(&web_moved)[0].count, 2);
    }

    #[test]
    fn unknown_types_are_ignored_and_resumed_streams_are_served() {
        let world = World::new();
        let snapshot = world.set(&[("web", "10.0.0.1")]);
        let mut stream = Subscriptions::new(1);
        let unknown = subscribe("trellis.discovery.v1.Gateway", &[]);
        assert_eq!(
            stream.receive(&unknown),
            Received::UnknownType("trellis.discovery.v1.Gateway".into())
        );
        assert_eq!(
            stream.receive(&DiscoveryRequest::default()),
            Received::NoType
        );
        assert!(stream.responses(&snapshot).is_empty());

        // A proxy resuming after a controller restart names a nonce of the old
        // controller: its request subscribes.
        let resumed = DiscoveryRequest {
            response_nonce: "42-7".into(),
            version_info: "old".into(),
            ..subscribe(type_url::ROUTE, &[])
        };
        assert_eq!(
            stream.receive(&resumed),
            Received::Subscribed { kind: Kind::Route }
        );
        let sent = stream.responses(&snapshot);
        assert_eq!(
            (sent.len(), sent[0].count),
            (1, 0),
            "no routes yet, still sent"
        );
    }
}
