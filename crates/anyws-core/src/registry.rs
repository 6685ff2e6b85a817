//! The server's registry of peers: who is connected, in which namespace, subscribed to what;
//! and the delivery of a publish to the subscribers of a topic.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use bytes::BytesMut;

use crate::backplane::Subscribers;
use crate::peer::{lock, Outbound};
use crate::server::Shared;
use crate::socket::Cork;
use crate::ws::deflate::Prepared;
use crate::ws::frames::{Header, MAX_HEADER};
use crate::{Message, Peer, ReadyState, Relay, Transport};

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
        // What this thread's turn published before goes to the subscribers of then.
        Cork::release_all();
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
        Cork::release_all();
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
    /// waiting. During a turn on this thread the delivery waits until the turn writes to its
    /// own socket or ends (see [`Cork::hold`]), unless compression is on (each peer's frames are its own) or the
    /// server is a client's (its frames are masked one by one).
    pub(crate) fn publish(
        self: &Arc<Self>,
        namespace: Option<&Arc<str>>,
        topic: &str,
        message: Message,
        except: Option<u64>,
    ) {
        let relay = self
            .outgoing
            .as_ref()
            .map(|outgoing| (outgoing, message.clone()));
        let held = if self.deflate.is_none() && !self.client {
            Cork::hold(self, namespace, topic, message, except)
        } else {
            Some(message)
        };
        if let Some(message) = held {
            self.deliver(namespace.map(|ns| &**ns), topic, message, except);
        }
        if let Some((outgoing, message)) = relay {
            outgoing.push(Relay::new(
                self.instance,
                namespace.cloned(),
                topic.into(),
                message,
            ));
        }
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
        let mut delivered = 0;
        each_subscriber(&self.read(), namespace, topic, |key, peer| {
            if Some(key) != except {
                // A full queue closes that peer; the others still get the message.
                delivered += u64::from(peer.inner.push(frame.clone()).is_ok());
            }
        });
        self.counters.sent(except.unwrap_or(0), delivered, len);
        self.counters.fanned_out(delivered);
    }

    /// Delivers what a turn published to `topic`, in order (see [`Held`]). Their frames are
    /// encoded once, and each WebSocket subscriber that every message reaches takes them as
    /// one item; the others (SSE peers, and the peers some of the messages skip) take the
    /// messages one by one.
    fn deliver_held(
        &self,
        namespace: Option<&str>,
        topic: &str,
        messages: &[(Message, Option<u64>)],
    ) {
        let payload = messages.iter().map(|(message, _)| message.len()).sum();
        let mut frames = BytesMut::with_capacity(payload + MAX_HEADER * messages.len());
        for (message, _) in messages {
            frames.extend_from_slice(Header::data(message).as_slice());
            frames.extend_from_slice(message.bytes());
        }
        let frames = Outbound::Frames(frames.freeze(), payload);
        // The peers some of the messages skip: usually one, the turn's own.
        let mut skipped = Vec::new();
        for key in messages.iter().filter_map(|(_, except)| *except) {
            if !skipped.contains(&key) {
                skipped.push(key);
            }
        }
        // How many took all the messages, and how many took each one alone.
        let mut whole = 0;
        let mut alone = vec![0; messages.len()];
        each_subscriber(&self.read(), namespace, topic, |key, peer| {
            if !skipped.contains(&key) && peer.transport() == Transport::WebSocket {
                whole += u64::from(peer.inner.push(frames.clone()).is_ok());
                return;
            }
            for ((message, except), count) in messages.iter().zip(&mut alone) {
                if *except != Some(key) {
                    let pushed = peer.inner.push(Outbound::Message(message.clone()));
                    *count += u64::from(pushed.is_ok());
                }
            }
        });
        for ((message, except), alone) in messages.iter().zip(alone) {
            self.counters
                .sent(except.unwrap_or(0), whole + alone, message.len());
            self.counters.fanned_out(whole + alone);
        }
    }
}

/// Calls `f` with each subscriber of `topic` in `namespace` (or in every namespace) and its key.
fn each_subscriber(
    registry: &Registry,
    namespace: Option<&str>,
    topic: &str,
    mut f: impl FnMut(u64, &Peer),
) {
    let mut visit = |ns: &Namespace| {
        if let Some(subscribers) = ns.topics.get(topic) {
            for (key, peer) in subscribers {
                f(*key, peer);
            }
        }
    };
    match namespace {
        Some(namespace) => {
            if let Some(ns) = registry.namespaces.get(namespace) {
                visit(ns);
            }
        }
        None => registry.namespaces.values().for_each(visit),
    }
}

/// The publishes a turn made to one topic of a server, one after another, held for a while
/// (see [`Cork::hold`]).
pub(crate) struct Held {
    shared: Arc<Shared>,
    namespace: Option<Arc<str>>,
    topic: Box<str>,
    /// Each message with the key of the peer it skips.
    messages: Vec<(Message, Option<u64>)>,
    /// The messages' payloads, in bytes.
    bytes: usize,
}

impl Held {
    /// The messages and bytes past which a turn's publishes are delivered without waiting
    /// for its end: a write's worth.
    const MESSAGES: usize = 256;
    const BYTES: usize = 64 * 1024;

    pub(crate) fn new(
        shared: &Arc<Shared>,
        namespace: Option<&Arc<str>>,
        topic: &str,
        message: Message,
        except: Option<u64>,
    ) -> Self {
        Self {
            shared: shared.clone(),
            namespace: namespace.cloned(),
            topic: topic.into(),
            bytes: message.len(),
            messages: vec![(message, except)],
        }
    }

    /// Whether a publish to `topic` of `shared` in `namespace` follows on from these.
    pub(crate) fn continues(
        &self,
        shared: &Arc<Shared>,
        namespace: Option<&Arc<str>>,
        topic: &str,
    ) -> bool {
        Arc::ptr_eq(&self.shared, shared)
            && self.namespace.as_deref() == namespace.map(|ns| &**ns)
            && *self.topic == *topic
    }

    pub(crate) fn add(&mut self, message: Message, except: Option<u64>) {
        self.bytes += message.len();
        self.messages.push((message, except));
    }

    /// Whether these are as many as a turn holds.
    pub(crate) fn full(&self) -> bool {
        self.messages.len() >= Self::MESSAGES || self.bytes >= Self::BYTES
    }

    /// Delivers them, in order.
    pub(crate) fn deliver(mut self) {
        let namespace = self.namespace.as_deref();
        if self.messages.len() == 1 {
            let (message, except) = self.messages.pop().expect("one message");
            return self.shared.deliver(namespace, &self.topic, message, except);
        }
        self.shared
            .deliver_held(namespace, &self.topic, &self.messages);
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
