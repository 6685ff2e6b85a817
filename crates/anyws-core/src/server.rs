//! The server: its peers, pub/sub, the handshake and shutdown.

use bytes::Bytes;
use event_listener::Event;
use futures_util::FutureExt;
use http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{Response, StatusCode};
use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::hooks::Single;
use crate::peer::lock;
use crate::peer::Transport;
use crate::sse::SseLink;
use crate::upgrade::check_handshake;
use crate::{
    close_code, Accept, Hooks, Limits, Message, Peer, PeerId, PendingPeer, ReadyState, Rejection,
    Request, Resolver, Runtime,
};

/// Builds a [`Server`]: its hooks or resolver and its limits.
///
/// ```
/// # use anyws_core::{Hooks, ServerBuilder};
/// # use std::time::Duration;
/// struct App;
/// impl Hooks for App {}
///
/// let builder = ServerBuilder::new(App)
///     .max_message_size(1 << 20)
///     .idle_timeout(Some(Duration::from_secs(60)));
/// // let server = builder.build(runtime);  // the runtime comes from an adapter
/// # let _ = builder;
/// ```
pub struct ServerBuilder {
    resolver: Box<dyn Resolver>,
    limits: Limits,
    sse: bool,
}

impl ServerBuilder {
    /// A server where every request goes to `hooks`.
    pub fn new(hooks: impl Hooks) -> Self {
        Self::with_resolver(Single(Arc::new(hooks)))
    }

    /// A server that picks the hooks per request; see [`Resolver`].
    pub fn with_resolver(resolver: impl Resolver) -> Self {
        Self {
            resolver: Box::new(resolver),
            limits: Limits::default(),
            sse: false,
        }
    }

    /// Replaces all limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// See [`Limits::max_message_size`]. Default: 16 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// See [`Limits::max_frame_size`]. Default: 16 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_frame_size = bytes;
        self
    }

    /// See [`Limits::max_buffered_bytes`]. Default: 16 MiB.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_buffered_bytes = bytes;
        self
    }

    /// See [`Limits::handshake_timeout`]. Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }

    /// See [`Limits::idle_timeout`]. Default: 120 s.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// See [`Limits::close_timeout`]. Default: 2 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// Turns the SSE transport on or off (default: off).
    ///
    /// When on, the adapters also serve the hooks to clients without WebSockets, over
    /// CrossWS's bidirectional SSE protocol: a `GET` with `Accept: text/event-stream` opens a
    /// peer, and `POST`s with its id carry its messages (see [`crate::sse`]). WebSocket and SSE
    /// peers share namespaces, topics and the peer list.
    pub fn sse(mut self, enabled: bool) -> Self {
        self.sse = enabled;
        self
    }

    /// Builds the server on `runtime`, which an adapter provides.
    pub fn build(self, runtime: Arc<dyn Runtime>) -> Server {
        Server::from_shared(Arc::new(Shared {
            resolver: self.resolver,
            limits: self.limits,
            runtime,
            registry: RwLock::new(Registry::default()),
            next_key: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            shutdown_started: Event::new(),
            peer_left: Event::new(),
            sse: self.sse,
            sse_peers: Mutex::new(HashMap::new()),
        }))
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .field("sse", &self.sse)
            .finish_non_exhaustive()
    }
}

/// A handle on a running server: its peers, server-wide publish, and shutdown.
///
/// Cheap to clone; every clone is the same server. Adapters take it to serve connections.
#[derive(Clone)]
pub struct Server {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    resolver: Box<dyn Resolver>,
    pub(crate) limits: Limits,
    pub(crate) runtime: Arc<dyn Runtime>,
    registry: RwLock<Registry>,
    next_key: AtomicU64,
    shutting_down: AtomicBool,
    shutdown_started: Event,
    peer_left: Event,
    sse: bool,
    /// The open SSE peers by id, for the `POST`s that carry their messages.
    pub(crate) sse_peers: Mutex<HashMap<PeerId, (Peer, Arc<SseLink>)>>,
}

#[derive(Default)]
struct Registry {
    namespaces: HashMap<Arc<str>, Namespace>,
    count: usize,
}

#[derive(Default)]
struct Namespace {
    peers: HashMap<u64, Peer>,
    topics: HashMap<Arc<str>, HashMap<u64, Peer>>,
}

/// The outcome of [`Server::handshake`]: the response to send, and the peer to run on the
/// upgraded connection when the upgrade was accepted.
#[derive(Debug)]
pub struct Handshake {
    response: Response<Bytes>,
    peer: Option<PendingPeer>,
}

impl Handshake {
    fn respond(response: Response<Bytes>) -> Self {
        Self {
            response,
            peer: None,
        }
    }

    /// A `500` for a resolver or `upgrade` hook that panicked or returned an invalid `Accept`.
    fn internal_error() -> Self {
        Self::respond(internal_error())
    }

    /// The response: `101 Switching Protocols`, or the rejection or error to send instead.
    pub fn response(&self) -> &Response<Bytes> {
        &self.response
    }

    /// The response, and the peer to [`run`](PendingPeer::run) once the response is written and
    /// the connection upgraded (`None` when the handshake was refused).
    pub fn into_parts(self) -> (Response<Bytes>, Option<PendingPeer>) {
        (self.response, self.peer)
    }
}

/// A `500` for a resolver or `upgrade` hook that panicked or returned an invalid `Accept`.
fn internal_error() -> Response<Bytes> {
    Rejection::internal("").into_response()
}

/// The outcome of [`Server::admit`].
pub(crate) enum Admission {
    /// The resolver found no hooks for the request.
    Unresolved(Request),
    /// Refused, with this response.
    Refused(Response<Bytes>),
    /// Accepted by these hooks.
    Accepted(Request, Arc<dyn Hooks>, Accept),
}

fn plain(status: StatusCode, body: &'static str) -> Response<Bytes> {
    Rejection::new(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .into_response()
}

impl Server {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The server's limits.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The runtime the server was built on.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.shared.runtime
    }

    /// Runs the handshake for a WebSocket upgrade request: checks it, picks the hooks with the
    /// resolver, and runs the `upgrade` hook.
    ///
    /// This is the entry point for adapters. Call it for requests where
    /// [`is_websocket_upgrade`](crate::is_websocket_upgrade) is true, send the response, and if it
    /// carries a [`PendingPeer`], run it on the upgraded connection. A broken handshake gets a
    /// 4xx response, an unresolved path `404`, a server shutting down `503`.
    pub async fn handshake(&self, request: Request) -> Handshake {
        let accept_key = match check_handshake(request.method(), request.headers()) {
            Ok(key) => key,
            Err(response) => return Handshake::respond(*response),
        };
        let (request, hooks, accept) = match self.admit(request).await {
            Admission::Accepted(request, hooks, accept) => (request, hooks, accept),
            Admission::Unresolved(_) => {
                return Handshake::respond(plain(StatusCode::NOT_FOUND, "Not Found"))
            }
            Admission::Refused(response) => return Handshake::respond(response),
        };
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        match HeaderValue::try_from(accept_key) {
            Ok(v) => headers.insert(SEC_WEBSOCKET_ACCEPT, v),
            Err(_) => return Handshake::internal_error(),
        };
        if let Some(protocol) = &accept.protocol {
            let offered = request.protocols().any(|p| p == protocol);
            match HeaderValue::try_from(protocol.as_str()) {
                Ok(v) if offered => headers.insert(SEC_WEBSOCKET_PROTOCOL, v),
                _ => return Handshake::internal_error(),
            };
        }
        for (name, value) in &accept.headers {
            headers.append(name, value.clone());
        }
        let peer = self.new_peer(request, accept, Transport::WebSocket);
        Handshake {
            response,
            peer: Some(PendingPeer::new(peer, hooks)),
        }
    }

    /// What every transport does before a peer exists: refuses while shutting down, picks the
    /// hooks with the resolver and runs the `upgrade` hook.
    pub(crate) async fn admit(&self, mut request: Request) -> Admission {
        if self.is_shutting_down() {
            return Admission::Refused(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "server is shutting down",
            ));
        }
        let resolved = AssertUnwindSafe(self.shared.resolver.resolve(&mut request))
            .catch_unwind()
            .await;
        let hooks = match resolved {
            Ok(Some(hooks)) => hooks,
            Ok(None) => return Admission::Unresolved(request),
            Err(_) => return Admission::Refused(internal_error()),
        };
        let accept = match AssertUnwindSafe(hooks.upgrade(&request))
            .catch_unwind()
            .await
        {
            Ok(Ok(accept)) => accept,
            Ok(Err(rejection)) => return Admission::Refused(rejection.into_response()),
            Err(_) => return Admission::Refused(internal_error()),
        };
        if accept.error.is_some() {
            return Admission::Refused(internal_error());
        }
        Admission::Accepted(request, hooks, accept)
    }

    /// A peer for an admitted request, not yet open.
    pub(crate) fn new_peer(&self, request: Request, accept: Accept, transport: Transport) -> Peer {
        let namespace: Arc<str> = match accept.namespace {
            Some(ns) => ns.into(),
            None => request.path().into(),
        };
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        Peer::new(
            key,
            request,
            namespace,
            accept.context,
            accept.protocol,
            transport,
            self.shared.clone(),
        )
    }

    /// Whether the SSE transport is on; see [`ServerBuilder::sse`].
    pub fn sse_enabled(&self) -> bool {
        self.shared.sse
    }

    /// Every open peer, in no particular order.
    pub fn peers(&self) -> Vec<Peer> {
        let registry = self.shared.read();
        let mut all = Vec::with_capacity(registry.count);
        for ns in registry.namespaces.values() {
            all.extend(ns.peers.values().cloned());
        }
        all
    }

    /// The open peers of `namespace`.
    pub fn peers_in(&self, namespace: &str) -> Vec<Peer> {
        self.shared.peers_in(namespace)
    }

    /// The number of open peers.
    pub fn peer_count(&self) -> usize {
        self.shared.read().count
    }

    /// Sends `message` to every subscriber of `topic`, in every namespace. The payload is encoded
    /// once and shared by every recipient.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) {
        self.shared.publish(None, topic, message.into(), None);
    }

    /// Starts the close handshake with every open peer.
    pub fn close_all(&self, code: u16, reason: &str) {
        for peer in self.peers() {
            peer.close(code, reason);
        }
    }

    /// Whether [`Server::shutdown`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// Resolves once [`Server::shutdown`] has been called; adapters stop accepting then.
    pub async fn shutdown_started(&self) {
        loop {
            if self.is_shutting_down() {
                return;
            }
            let listener = self.shared.shutdown_started.listen();
            if self.is_shutting_down() {
                return;
            }
            listener.await;
        }
    }

    /// Shuts down gracefully: new upgrades get `503`, every open peer gets a close frame with
    /// 1001 (going away), and this resolves when every peer is gone. Peers that have not
    /// answered within [`Limits::close_timeout`] are dropped.
    pub async fn shutdown(&self) {
        if !self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            self.shared.shutdown_started.notify(usize::MAX);
        }
        self.close_all(close_code::GOING_AWAY, "server shutting down");
        let deadline = self.shared.runtime.now() + self.shared.limits.close_timeout;
        let timed_out = {
            let all_gone = self.all_peers_gone();
            let timer = crate::runtime::sleep_until(&*self.shared.runtime, deadline);
            futures_util::pin_mut!(all_gone, timer);
            matches!(
                futures_util::future::select(all_gone, timer).await,
                futures_util::future::Either::Right(_)
            )
        };
        if timed_out {
            for peer in self.peers() {
                peer.terminate();
            }
            self.all_peers_gone().await;
        }
    }

    async fn all_peers_gone(&self) {
        loop {
            if self.peer_count() == 0 {
                return;
            }
            let listener = self.shared.peer_left.listen();
            if self.peer_count() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("peers", &self.peer_count())
            .field("limits", &self.shared.limits)
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an opening peer to the registry; false when the server is shutting down.
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
                        }
                    }
                }
                let empty = ns.peers.is_empty();
                if empty {
                    registry.namespaces.remove(&peer.inner.namespace);
                }
                registry.count -= 1;
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
        topics.push(topic.clone());
        ns.topics
            .entry(topic)
            .or_default()
            .insert(key, peer.clone());
    }

    pub(crate) fn unsubscribe(&self, peer: &Peer, topic: &str) {
        let key = peer.inner.key;
        let mut registry = self.write();
        let mut topics = lock(&peer.inner.topics);
        let Some(pos) = topics.iter().position(|t| &**t == topic) else {
            return;
        };
        topics.remove(pos);
        if let Some(ns) = registry.namespaces.get_mut(&peer.inner.namespace) {
            if let Some(subscribers) = ns.topics.get_mut(topic) {
                subscribers.remove(&key);
                if subscribers.is_empty() {
                    ns.topics.remove(topic);
                }
            }
        }
    }

    /// Delivers `message` to the subscribers of `topic` in `namespace` (or every namespace),
    /// skipping the peer with key `except`.
    pub(crate) fn publish(
        &self,
        namespace: Option<&str>,
        topic: &str,
        message: Message,
        except: Option<u64>,
    ) {
        let frame = message.into_ws();
        let registry = self.read();
        let deliver = |ns: &Namespace| {
            if let Some(subscribers) = ns.topics.get(topic) {
                for (key, peer) in subscribers {
                    if Some(*key) != except {
                        // A full queue closes that peer; the others still get the message.
                        let _ = peer.inner.outbox.push(frame.clone());
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
    }
}
