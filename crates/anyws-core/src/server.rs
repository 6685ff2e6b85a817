//! The server: its peers, pub/sub, the handshake and shutdown.

use bytes::Bytes;
use event_listener::Event;
use futures_util::FutureExt;
use http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{Response, StatusCode};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::admission::Admission;
use crate::backplane::{
    print_error, BackplaneStats, ClusterPeer, ErrorCallback, Outgoing, Subscribers, TopicHold,
};
use crate::hooks::Single;
use crate::peer::Transport;
use crate::registry::Registry;
use crate::sse::SseLink;
use crate::upgrade::{check_handshake, check_request};
use crate::ws::deflate::{self, Deflate};
use crate::{
    close_code, Accept, Backplane, BackplaneError, BackplaneLink, Hooks, InstanceId, Limits,
    Message, MessageRate, Peer, PeerId, PendingPeer, Rejection, Request, Resolver, Runtime,
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
    pub(crate) allowed_origins: Option<Vec<String>>,
    backplane: Option<Arc<dyn Backplane>>,
    on_backplane_error: Option<ErrorCallback>,
    deflate: Option<Deflate>,
    /// The server behind a client's connections: frames go out masked and come in unmasked.
    pub(crate) client: bool,
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
            allowed_origins: None,
            backplane: None,
            on_backplane_error: None,
            deflate: None,
            client: false,
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

    /// See [`Limits::max_request_head_bytes`]: a larger request head gets `431`. Default:
    /// 16 KiB (16,384 bytes).
    pub fn max_request_head_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_request_head_bytes = bytes;
        self
    }

    /// See [`Limits::max_concurrent_streams`]: most streams at once on one HTTP/2 connection.
    /// Default: 128.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.limits.max_concurrent_streams = streams;
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

    /// Turns permessage-deflate (RFC 7692) on, in the [`Deflate`] mode given; `None` turns it
    /// off again. Off by default: every offer is declined and messages go uncompressed. With it
    /// on, a client that offers the extension with parameters the server can honour gets it; one
    /// that does not keeps plain frames, and shares topics with the others. The SSE transport
    /// is unaffected.
    pub fn deflate(mut self, deflate: impl Into<Option<Deflate>>) -> Self {
        self.deflate = deflate.into();
        self
    }

    /// See [`Limits::ping_interval`]. Default: 30 s.
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.limits.ping_interval = interval;
        self
    }

    /// See [`Limits::max_connections`]: beyond it, handshakes get `503`. Default: no limit.
    pub fn max_connections(mut self, peers: Option<usize>) -> Self {
        self.limits.max_connections = peers;
        self
    }

    /// See [`Limits::max_connections_per_ip`]: beyond it, handshakes get `429`. Default: no
    /// limit.
    pub fn max_connections_per_ip(mut self, peers: Option<usize>) -> Self {
        self.limits.max_connections_per_ip = peers;
        self
    }

    /// See [`Limits::message_rate`]: over it, a peer is closed with 1008. Default: no limit.
    pub fn message_rate(mut self, rate: Option<MessageRate>) -> Self {
        self.limits.message_rate = rate;
        self
    }

    /// Accepts upgrades only from these origins, against cross-site WebSocket hijacking: a
    /// request whose `Origin` header is not in the list gets `403 Forbidden` before any hook
    /// sees it.
    ///
    /// An origin is written as browsers send it, `scheme://host` with `:port` when it is not the
    /// scheme's default, such as `https://example.com` or `http://localhost:3000`; the match
    /// ignores ASCII case. A request **without** an `Origin` header is let through: browsers
    /// always send one with a WebSocket handshake, so the attack this guards against always
    /// carries one, while non-browser clients (command-line tools, other servers) usually send
    /// none. The opaque origin `null` is refused unless listed. Default: every origin is
    /// accepted.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let origins = origins
            .into_iter()
            .map(|o| o.into().trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        self.allowed_origins = Some(origins);
        self
    }

    /// See [`Limits::max_backplane_queue_bytes`]. Default: 16 MiB.
    pub fn max_backplane_queue_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_backplane_queue_bytes = bytes;
        self
    }

    /// Relays pub/sub to other server instances through `backplane` (such as the Redis driver
    /// of `anyws-redis`), so that a publish on any instance reaches the subscribers of all of
    /// them; see [`backplane`](crate::backplane) for the delivery semantics. Default: none, pub/sub
    /// stays within this server.
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Some(Arc::new(backplane));
        self
    }

    /// Where backplane errors go: a full relay queue, a relay that could not be read, a lost
    /// broker connection. They never reach the caller of `publish`. Default: one line on
    /// standard error per error.
    pub fn on_backplane_error(
        mut self,
        callback: impl Fn(&BackplaneError) + Send + Sync + 'static,
    ) -> Self {
        self.on_backplane_error = Some(Arc::new(callback));
        self
    }

    /// Builds the server on `runtime`, which an adapter provides.
    ///
    /// With a [`backplane`](Self::backplane), this spawns the backplane's task on `runtime`, so
    /// call it where the runtime can spawn (inside it, for tokio).
    pub fn build(self, runtime: Arc<dyn Runtime>) -> Server {
        #[cfg(feature = "metrics")]
        crate::describe_metrics();
        let instance = InstanceId::random();
        let outgoing = self.backplane.as_ref().map(|backplane| {
            let on_error = self
                .on_backplane_error
                .unwrap_or_else(|| Arc::new(print_error));
            let mut outgoing =
                Outgoing::new(instance, self.limits.max_backplane_queue_bytes, on_error);
            outgoing.routes_by_interest = backplane.routes_by_interest();
            Arc::new(outgoing)
        });
        let queue_limits = crate::peer::QueueLimits::new(self.limits.max_buffered_bytes);
        let shared = Arc::new(Shared {
            queue_limits,
            resolver: self.resolver,
            limits: self.limits,
            allowed_origins: self.allowed_origins,
            connections: AtomicUsize::new(0),
            connections_per_ip: Mutex::new(HashMap::new()),
            runtime: runtime.clone(),
            registry: RwLock::new(Registry::default()),
            next_key: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            shutdown_started: Event::new(),
            peer_left: Event::new(),
            sse: self.sse,
            deflate: self.deflate,
            client: self.client,
            sse_peers: Mutex::new(HashMap::new()),
            instance,
            outgoing: outgoing.clone(),
            // A client's connections are no server's peers: kept out of the metrics facade.
            counters: if self.client {
                crate::stats::Counters::unreported()
            } else {
                Default::default()
            },
            flusher: Default::default(),
            sweep: crate::sweep::Sweep::new(runtime.clone()),
        });
        if let (Some(backplane), Some(outgoing)) = (self.backplane, outgoing) {
            let link = BackplaneLink {
                outgoing: outgoing.clone(),
                server: Arc::downgrade(&shared) as Weak<dyn Subscribers>,
                runtime: runtime.clone(),
            };
            let grace = shared.limits.close_timeout;
            let timers = runtime.clone();
            runtime.spawn(Box::pin(async move {
                let run = backplane.run(link);
                // Once the server closes the queue, the driver has `close_timeout` to return;
                // then it is dropped, which closes its connections.
                let cut_off = async {
                    outgoing.wait_closed().await;
                    let deadline = timers.now() + grace;
                    crate::runtime::sleep_until(&*timers, deadline).await;
                };
                futures_util::pin_mut!(run, cut_off);
                let ended = AssertUnwindSafe(futures_util::future::select(run, cut_off))
                    .catch_unwind()
                    .await;
                if ended.is_err() {
                    // Local pub/sub goes on; relays stay queued until the queue is full.
                    outgoing.report(&BackplaneError::link(
                        "the backplane driver panicked; publishes are no longer relayed",
                    ));
                }
                outgoing.stopped.store(true, Ordering::Release);
                outgoing.stopped_event.notify(usize::MAX);
            }));
        }
        Server::from_shared(shared)
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .field("sse", &self.sse)
            .field("backplane", &self.backplane.is_some())
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
    /// Lower-case origins, when the allow-list is on.
    pub(crate) allowed_origins: Option<Vec<String>>,
    /// Peers holding an [`Admission`].
    pub(crate) connections: AtomicUsize,
    /// Peers holding an [`Admission`], by IP address, when the per-IP limit is on.
    pub(crate) connections_per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) next_key: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) shutdown_started: Event,
    pub(crate) peer_left: Event,
    sse: bool,
    /// permessage-deflate, when on.
    pub(crate) deflate: Option<Deflate>,
    /// The peers are the client side of their connections (see [`crate::client`]).
    pub(crate) client: bool,
    /// The open SSE peers by id, for the `POST`s that carry their messages.
    pub(crate) sse_peers: Mutex<HashMap<PeerId, (Peer, Arc<SseLink>)>>,
    pub(crate) instance: InstanceId,
    /// The backplane's queue of relays, when there is a backplane.
    pub(crate) outgoing: Option<Arc<Outgoing>>,
    /// What [`Server::stats`] reports.
    pub(crate) counters: crate::stats::Counters,
    /// Writes to idle peers what turns sent them (see [`crate::socket::Cork`]).
    pub(crate) flusher: crate::socket::Flusher,
    /// Wakes the peers whose idle timeout or ping is due.
    pub(crate) sweep: crate::sweep::Sweep,
    /// The bounds of every peer's send queue.
    pub(crate) queue_limits: crate::peer::QueueLimits,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The backplane task holds the server weakly; closing the queue ends it.
        if let Some(outgoing) = &self.outgoing {
            outgoing.close();
        }
    }
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

/// The outcome of [`Server::enter`]: a value returned once and taken apart at once, so its size
/// does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Entry {
    /// The resolver found no hooks for the request.
    Unresolved(Request),
    /// Refused, with this response.
    Refused(Response<Bytes>),
    /// Accepted by these hooks, with its place in the connection limits when it takes one.
    Accepted {
        request: Request,
        hooks: Arc<dyn Hooks>,
        accept: Accept,
        admission: Option<Admission>,
    },
}

pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response<Bytes> {
    Rejection::new(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .into_response()
}

/// The `503` for a handshake that arrives while the server shuts down.
pub(crate) fn shutting_down() -> Response<Bytes> {
    plain(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down")
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
    /// [`is_websocket_upgrade`](crate::is_websocket_upgrade) is true, or for an HTTP/2 extended
    /// `CONNECT` whose `:protocol` is `websocket` (RFC 8441; the answer is then `200` rather than
    /// `101`), send the response, and if it carries a [`PendingPeer`], run it on the upgraded
    /// connection or stream. A head larger than
    /// [`Limits::max_request_head_bytes`] gets `431`; a broken handshake (HTTP/1.0, an HTTP/1.1
    /// request without `Host`, a missing or wrong WebSocket header) a 4xx response, an unresolved
    /// path `404`; the checks of [`Server::admit`] (shutting down, origin, connection limits)
    /// come before the hooks.
    pub async fn handshake(&self, request: Request) -> Handshake {
        let (started, remote_addr) = (self.shared.runtime.now(), request.remote_addr());
        let handshake = self.handshake_unobserved(request).await;
        let status = handshake.response.status();
        let now = self.shared.runtime.now();
        crate::observe::answered(&self.shared.counters, remote_addr, status, started, now);
        handshake
    }

    async fn handshake_unobserved(&self, request: Request) -> Handshake {
        let checked = check_request(&request, self.shared.limits.max_request_head_bytes)
            .and_then(|()| check_handshake(request.method(), request.version(), request.headers()));
        let accept_key = match checked {
            Ok(key) => key,
            Err(response) => return Handshake::respond(*response),
        };
        let (request, hooks, accept, admission) = match self.enter(request, true).await {
            Entry::Accepted {
                request,
                hooks,
                accept,
                admission,
            } => (request, hooks, accept, admission),
            Entry::Unresolved(_) => {
                return Handshake::respond(plain(StatusCode::NOT_FOUND, "Not Found"))
            }
            Entry::Refused(response) => return Handshake::respond(response),
        };
        let Some(admission) = admission else {
            return Handshake::internal_error();
        };
        let mut response = Response::new(Bytes::new());
        // Over HTTP/2 (RFC 8441) a `200` opens the stream, with no connection headers.
        if accept_key.is_some() {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        let headers = response.headers_mut();
        if let Some(accept_key) = accept_key {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            match HeaderValue::try_from(accept_key) {
                Ok(v) => headers.insert(SEC_WEBSOCKET_ACCEPT, v),
                Err(_) => return Handshake::internal_error(),
            };
        }
        if let Some(protocol) = &accept.protocol {
            let offered = request.protocols().any(|p| p == protocol);
            match HeaderValue::try_from(protocol.as_str()) {
                Ok(v) if offered => headers.insert(SEC_WEBSOCKET_PROTOCOL, v),
                _ => return Handshake::internal_error(),
            };
        }
        let deflate = self
            .shared
            .deflate
            .as_ref()
            .and_then(|config| deflate::negotiate(config, request.headers()));
        let extensions = deflate.map(|negotiated| deflate::answer(&negotiated));
        if let Some(value) = &extensions {
            match HeaderValue::try_from(&**value) {
                Ok(v) => headers.insert(SEC_WEBSOCKET_EXTENSIONS, v),
                Err(_) => return Handshake::internal_error(),
            };
        }
        for (name, value) in &accept.headers {
            headers.append(name, value.clone());
        }
        let peer = self.new_peer(request, accept, extensions, Transport::WebSocket);
        // Listed before the client can see the `101`: a client that asks who is there as soon as
        // it is open finds itself, and a publish sent after its open reaches it.
        if !self.shared.join(&peer) {
            return Handshake::respond(shutting_down());
        }
        Handshake {
            response,
            peer: Some(PendingPeer::new(peer, hooks, admission, deflate)),
        }
    }

    /// What every transport does before a peer exists: the checks of [`Server::admit`], the
    /// resolver, and the `upgrade` hook. A request that only talks to an existing peer (an SSE
    /// `POST`) takes no place in the connection limits: `connection` is false.
    pub(crate) async fn enter(&self, mut request: Request, connection: bool) -> Entry {
        let admission = if connection {
            match self.admit(&request) {
                Ok(admission) => Some(admission),
                Err(response) => return Entry::Refused(*response),
            }
        } else {
            if let Err(response) = self.screen(&request) {
                return Entry::Refused(*response);
            }
            None
        };
        let resolved = AssertUnwindSafe(self.shared.resolver.resolve(&mut request))
            .catch_unwind()
            .await;
        let hooks = match resolved {
            Ok(Some(hooks)) => hooks,
            Ok(None) => return Entry::Unresolved(request),
            Err(_) => {
                crate::observe::upgrade_panicked("resolver");
                return Entry::Refused(internal_error());
            }
        };
        // Through the trait object: `Arc<dyn Hooks>`'s own impl would box the call twice.
        let accept = match AssertUnwindSafe((*hooks).upgrade(&request))
            .catch_unwind()
            .await
        {
            Ok(Ok(accept)) => accept,
            Ok(Err(rejection)) => return Entry::Refused(rejection.into_response()),
            Err(_) => {
                crate::observe::upgrade_panicked("upgrade");
                return Entry::Refused(internal_error());
            }
        };
        if accept.error.is_some() {
            return Entry::Refused(internal_error());
        }
        Entry::Accepted {
            request,
            hooks,
            accept,
            admission,
        }
    }

    /// A peer for an admitted request, not yet open.
    pub(crate) fn new_peer(
        &self,
        request: Request,
        accept: Accept,
        extensions: Option<Arc<str>>,
        transport: Transport,
    ) -> Peer {
        let name = accept.namespace.as_deref().unwrap_or(request.path());
        // The registry's own name for the namespace when it has peers: one allocation per
        // namespace, not one per peer.
        let listed = self
            .shared
            .read()
            .namespaces
            .get_key_value(name)
            .map(|(listed, _)| listed.clone());
        let namespace = listed.unwrap_or_else(|| name.into());
        Peer::new(
            request,
            namespace,
            accept.context,
            accept.protocol,
            extensions,
            transport,
            self.shared.clone(),
        )
    }

    /// Whether the SSE transport is on; see [`ServerBuilder::sse`].
    pub fn sse_enabled(&self) -> bool {
        self.shared.sse
    }

    /// Every peer, in no particular order: from the moment its handshake is accepted (before
    /// its client can see the `101` or the SSE stream's headers) until its connection is over.
    pub fn peers(&self) -> Vec<Peer> {
        let registry = self.shared.read();
        let mut all = Vec::with_capacity(registry.count);
        for ns in registry.namespaces.values() {
            all.extend(ns.peers.values().cloned());
        }
        all
    }

    /// The peers of `namespace`, listed as by [`Server::peers`].
    pub fn peers_in(&self, namespace: &str) -> Vec<Peer> {
        self.shared.peers_in(namespace)
    }

    /// Counts and reports a request that an adapter's HTTP layer refused with `status` before
    /// it reached [`Server::handshake`] or [`Server::sse`] (as hyper does with `431` for a head
    /// over [`Limits::max_request_head_bytes`]), so that [`Server::stats`] and the logs see it.
    pub fn record_refusal(&self, status: StatusCode, remote_addr: Option<std::net::SocketAddr>) {
        let now = self.shared.runtime.now();
        crate::observe::answered(&self.shared.counters, remote_addr, status, now, now);
    }

    /// A snapshot of the server's counters: peers by transport, messages and bytes in and out,
    /// closes by code, refused upgrades by status and backplane relays. Cheap: it reads a few
    /// dozen atomics and copies two small maps; the message path takes no lock to keep them.
    pub fn stats(&self) -> crate::Stats {
        let relays = self.shared.outgoing.as_ref().map(|o| &o.counted);
        self.shared.counters.snapshot(relays)
    }

    /// The number of peers, counted as by [`Server::peers`].
    pub fn peer_count(&self) -> usize {
        self.shared.read().count
    }

    /// Sends `message` to every subscriber of `topic`, in every namespace. The payload is encoded
    /// once and shared by every recipient. With a [backplane](ServerBuilder::backplane) it is
    /// also relayed to every namespace of the other instances. Called from a hook, it is
    /// delivered when the hook's turn ends, as [`Peer::publish`](crate::Peer::publish) is.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) {
        self.shared.publish(None, topic, message.into(), None);
    }

    /// This server's id among the instances that share a backplane: random, new for every
    /// server.
    pub fn instance_id(&self) -> InstanceId {
        self.shared.instance
    }

    /// Whether the backplane is connected and receiving relays from other instances; always
    /// `false` without a backplane.
    pub fn is_backplane_connected(&self) -> bool {
        self.shared
            .outgoing
            .as_ref()
            .is_some_and(|outgoing| outgoing.is_connected())
    }

    /// Resolves once the backplane is connected (at once when there is no backplane), for
    /// example to wait for it before accepting peers. Wrap it in a timeout: it waits for as long
    /// as the broker is unreachable.
    pub async fn backplane_connected(&self) {
        if let Some(outgoing) = &self.shared.outgoing {
            outgoing.wait_connected().await;
        }
    }

    /// Resolves once every subscription change made before the call is in effect across the
    /// backplane, so that a publish from any instance from then on reaches the subscribers of
    /// this one. With a driver that [routes by interest](crate::Backplane::routes_by_interest)
    /// that is when the driver confirms the changes; with another driver, when it is connected;
    /// without a backplane, at once. Wrap it in a timeout: it waits for as long as the broker is
    /// unreachable.
    pub async fn backplane_synced(&self) {
        if let Some(outgoing) = &self.shared.outgoing {
            outgoing.wait_synced().await;
        }
    }

    /// Keeps this instance's interest in `topic` on the backplane while the returned hold lives,
    /// as a subscriber would: for example to have a subscription in effect
    /// ([`backplane_synced`](Self::backplane_synced)) before a peer subscribes, or to keep it
    /// warm while peers come and go. Without a backplane it does nothing.
    pub fn hold_topic(&self, topic: &str) -> TopicHold {
        let topic: Arc<str> = topic.into();
        if let Some(outgoing) = &self.shared.outgoing {
            outgoing.topic_added(&topic);
        }
        TopicHold {
            outgoing: self.shared.outgoing.clone(),
            topic,
        }
    }

    /// The peers of `namespace` (of every namespace when it is `None`) on every instance that
    /// shares the backplane, this one included: this instance asks the others over the backplane
    /// and gathers the answers that come within `within`, then returns. An instance that is gone,
    /// or too slow, simply does not answer. Without a backplane, the local peers. It always waits
    /// `within` with a backplane, since it cannot know how many instances there are; a few
    /// hundred milliseconds suit a broker nearby.
    pub async fn cluster_peers(
        &self,
        namespace: Option<&str>,
        within: std::time::Duration,
    ) -> Vec<ClusterPeer> {
        let local = |(namespace, id)| ClusterPeer::new(self.shared.instance, namespace, id);
        let mut peers: Vec<ClusterPeer> = Subscribers::local_peers(&*self.shared, namespace)
            .into_iter()
            .map(local)
            .collect();
        let Some(outgoing) = &self.shared.outgoing else {
            return peers;
        };
        let query = crate::backplane::ask_for_peers(outgoing, namespace);
        let deadline = self.shared.runtime.now() + within;
        {
            let timer = crate::runtime::sleep_until(&*self.shared.runtime, deadline);
            let closed = outgoing.wait_closed();
            futures_util::pin_mut!(timer, closed);
            futures_util::future::select(timer, closed).await;
        }
        let answers = outgoing
            .queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&query)
            .unwrap_or_default();
        peers.extend(answers);
        peers
    }

    /// What the backplane has done so far; all zero without a backplane.
    pub fn backplane_stats(&self) -> BackplaneStats {
        let mut stats = BackplaneStats::default();
        if let Some(outgoing) = &self.shared.outgoing {
            stats.relays_received = outgoing.relays_received();
        }
        stats
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
    /// answered within [`Limits::close_timeout`] are dropped. Then the backplane, if any, sends
    /// what is still queued and stops; this waits for it until the same deadline, or at least
    /// 250 ms (it is dropped [`Limits::close_timeout`] after being told to stop in any case).
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
        if let Some(outgoing) = &self.shared.outgoing {
            outgoing.close();
            let stop_by = deadline.max(self.shared.runtime.now() + Duration::from_millis(250));
            let stopped = outgoing.wait_stopped();
            let timer = crate::runtime::sleep_until(&*self.shared.runtime, stop_by);
            futures_util::pin_mut!(stopped, timer);
            futures_util::future::select(stopped, timer).await;
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
