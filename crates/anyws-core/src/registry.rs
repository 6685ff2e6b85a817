//! The server's registry of peers: who is connected, in which namespace, subscribed to what;
//! and the delivery of a publish to the subscribers of a topic.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use crate::backplane::Subscribers;
use crate::peer::{lock, Outbound};
use crate::server::Shared;
use crate::ws::deflate::Prepared;
use crate::{Message, Peer, ReadyState, Relay};

/// Every peer of a server, by namespace.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) namespaces: HashMap<Arc<str>, Namespace>,
    /// The number of peers in all namespaces.
    pub(crate) count: usize,
}

#[derive(Default)]
/// The peers of one namespace, by key, and its topics' subscribers.
pub(crate) struct Namespace {
    pub(crate) peers: HashMap<u64, Peer>,
    topics: HashMap<Arc<str>, HashMap<u64, Peer>>,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a peer to the registry when its handshake is accepted; false when the server is
    /// shutting down.
    pub(crate) fn join(&self, peer: &Peer) -> bool {
        let mut registry = self.write();
        if self.shutting_down.load(Ordering::Acquire) {
            return false;
        }
        registry
            .namespaces
            .entry(peer.inner.namespace.clone())
            .or_default()
            .peers
            .insert(peer.inner.key, peer.clone());
        registry.count += 1;
        self.counters.joined(peer.transport());
        true
    }

    /// Removes a peer from the registry and all its topics.
    pub(crate) fn leave(&self, peer: &Peer) {
        let topics = std::mem::take(&mut *lock(&peer.inner.topics));
        let mut registry = self.write();
        if let Some(ns) = registry.namespaces.get_mut(&peer.inner.namespace) {
            if ns.peers.remove(&peer.inner.key).is_some() {
                for topic in &topics {
                    if let Some(subscribers) = ns.topics.get_mut(topic) {
                        subscribers.remove(&peer.inner.key);
                        if subscribers.is_empty() {
                            ns.topics.remove(topic);
                            self.topic_removed(topic);
                        }
                    }
                }
                let empty = ns.peers.is_empty();
                if empty {
                    registry.namespaces.remove(&peer.inner.namespace);
                }
                registry.count -= 1;
                self.counters.left(peer.transport());
            }
        }
        drop(registry);
        self.peer_left.notify(usize::MAX);
    }

    pub(crate) fn peers_in(&self, namespace: &str) -> Vec<Peer> {
        self.read()
            .namespaces
            .get(namespace)
            .map(|ns| ns.peers.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn subscribe(&self, peer: &Peer, topic: &str) {
        let key = peer.inner.key;
        let mut registry = self.write();
        let Some(ns) = registry.namespaces.get_mut(&peer.inner.namespace) else {
            return;
        };
        if !ns.peers.contains_key(&key) || peer.ready_state() == ReadyState::Closed {
            return;
        }
        let mut topics = lock(&peer.inner.topics);
        if topics.iter().any(|t| &**t == topic) {
            return;
        }
        let topic: Arc<str> = match ns.topics.get_key_value(topic) {
            Some((existing, _)) => existing.clone(),
            None => topic.into(),
        };
        let mut list = std::mem::take(&mut *topics).into_vec();
        list.push(topic.clone());
        *topics = list.into_boxed_slice();
        let subscribers = ns.topics.entry(topic.clone()).or_default();
        subscribers.insert(key, peer.clone());
        if subscribers.len() == 1 {
            if let Some(outgoing) = &self.outgoing {
                outgoing.topic_added(&topic);
            }
        }
    }

    /// The last subscriber of `topic` in a namespace is gone: one namespace less is interested
    /// in it on the backplane.
    fn topic_removed(&self, topic: &str) {
        if let Some(outgoing) = &self.outgoing {
            outgoing.topic_removed(topic);
        }
    }

    pub(crate) fn unsubscribe(&self, peer: &Peer, topic: &str) {
        let key = peer.inner.key;
        let mut registry = self.write();
        let mut topics = lock(&peer.inner.topics);
        let Some(pos) = topics.iter().position(|t| &**t == topic) else {
            return;
        };
        let mut list = std::mem::take(&mut *topics).into_vec();
        list.remove(pos);
        *topics = list.into_boxed_slice();
        if let Some(ns) = registry.namespaces.get_mut(&peer.inner.namespace) {
            if let Some(subscribers) = ns.topics.get_mut(topic) {
                subscribers.remove(&key);
                if subscribers.is_empty() {
                    ns.topics.remove(topic);
                    self.topic_removed(topic);
                }
            }
        }
    }

    /// Delivers `message` to the subscribers of `topic` in `namespace` (or every namespace),
    /// skipping the peer with key `except`, then hands it to the backplane, if any, without
    /// waiting.
    pub(crate) fn publish(
        &self,
        namespace: Option<&Arc<str>>,
        topic: &str,
        message: Message,
        except: Option<u64>,
    ) {
        let Some(outgoing) = &self.outgoing else {
            return self.deliver(namespace.map(|ns| &**ns), topic, message, except);
        };
        self.deliver(namespace.map(|ns| &**ns), topic, message.clone(), except);
        outgoing.push(Relay::new(
            self.instance,
            namespace.cloned(),
            topic.into(),
            message,
        ));
    }

    /// Delivers `message` to the subscribers of `topic` in `namespace` (or every namespace),
    /// skipping the peer with key `except`; this server only.
    pub(crate) fn deliver(
        &self,
        namespace: Option<&str>,
        topic: &str,
        message: Message,
        except: Option<u64>,
    ) {
        let len = message.len();
        // With compression on, the recipients share one `Prepared`, so that those that
        // compress without context compress it once between them.
        let frame = match &self.deflate {
            Some(config)
                if config.compresses_once()
                    && message.compressible()
                    && message.len() >= config.min_size() =>
            {
                Outbound::Prepared(Arc::new(Prepared::new(message)))
            }
            _ => Outbound::Message(message),
        };
        let registry = self.read();
        let mut delivered = 0;
        let mut deliver = |ns: &Namespace| {
            if let Some(subscribers) = ns.topics.get(topic) {
                for (key, peer) in subscribers {
                    if Some(*key) != except {
                        // A full queue closes that peer; the others still get the message.
                        delivered += u64::from(peer.inner.push(frame.clone()).is_ok());
                    }
                }
            }
        };
        match namespace {
            Some(namespace) => {
                if let Some(ns) = registry.namespaces.get(namespace) {
                    deliver(ns);
                }
            }
            None => registry.namespaces.values().for_each(deliver),
        }
        drop(registry);
        self.counters.sent(except.unwrap_or(0), delivered, len);
        self.counters.fanned_out(delivered);
    }
}

impl Subscribers for Shared {
    fn deliver(&self, namespace: Option<&str>, topic: &str, message: Message) {
        Shared::deliver(self, namespace, topic, message, None);
    }

    fn local_peers(&self, namespace: Option<&str>) -> Vec<(String, String)> {
        let registry = self.read();
        let list = |(name, ns): (&Arc<str>, &Namespace)| {
            ns.peers
                .values()
                .map(|peer| (name.to_string(), peer.id().to_string()))
                .collect::<Vec<_>>()
        };
        match namespace {
            Some(namespace) => registry
                .namespaces
                .get_key_value(namespace)
                .map(list)
                .unwrap_or_default(),
            None => registry.namespaces.iter().flat_map(list).collect(),
        }
    }
}
