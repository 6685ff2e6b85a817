//! The client: the same [`Hooks`] on the other end of a WebSocket, on any runtime.
//!
//! ```no_run
//! use anyws_core::{async_trait, ClientBuilder, Hooks, Message, Peer};
//!
//! struct Bot;
//!
//! #[async_trait]
//! impl Hooks for Bot {
//!     async fn open(&self, peer: &Peer) {
//!         let _ = peer.send("hello");
//!     }
//!     async fn message(&self, peer: &Peer, message: Message) {
//!         println!("got {:?}", message.text());
//!         peer.close(1000, "done");
//!     }
//! }
//!
//! # async fn run(runtime: std::sync::Arc<dyn anyws_core::Runtime>,
//! #              connector: impl anyws_core::client::Connector) -> Result<(), anyws_core::ClientError> {
//! // An adapter wraps this as `anyws_tokio::connect(builder)` (or smol, async-std).
//! let client = ClientBuilder::new("ws://127.0.0.1:3000/chat", Bot)
//!     .protocols(["chat"])
//!     .connect_with(runtime, connector)
//!     .await?;
//! client.closed().await;
//! # Ok(()) }
//! ```
//!
//! The connection runs on the same engine as a server's peers: the hooks get a [`Peer`] to
//! send, ping and close with, messages are handed over in order, the [`Limits`] apply
//! (`max_message_size`, `max_buffered_bytes`, the idle timeout and automatic pings), and
//! permessage-deflate is offered unless turned off. Frames go out masked with a random key
//! each; a masked frame from the server is a protocol error (1002).
//!
//! An adapter provides the byte stream through a [`Connector`] (TCP, and TLS for `wss://`).
//!
//! # Errors
//!
//! [`ClientBuilder::connect_with`] fails with a [`ClientError`] when the URL is bad, the host
//! cannot be resolved or reached, the server refuses the upgrade (with its status), its answer
//! is not a valid WebSocket handshake for this request (a wrong `Sec-WebSocket-Accept`, a
//! subprotocol or extension that was not offered), or when all of this takes longer than the
//! [connect timeout](ClientBuilder::connect_timeout) (10 s by default).
//!
//! # Reconnection
//!
//! With [`ClientBuilder::reconnect`], a connection that ends for any reason other than
//! [`Client::close`] is made again after an exponential [`Backoff`] with jitter. The hooks see
//! this as `close` for the old connection and `open` for the new one, each with its own
//! [`Peer`].

use bytes::Bytes;
use event_listener::Event;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{AsyncReadExt, AsyncWriteExt};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, StatusCode, Uri};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hooks::Single;
use crate::peer::{lock, Transport};
use crate::ws::deflate::Negotiated;
use crate::{close_code, Accept, Deflate, Hooks, Limits, Peer, PendingPeer, Request, Runtime};
use crate::{Server, ServerBuilder};

/// The longest handshake response head the client reads: 16 KiB.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The most of a refusal's body kept for [`ClientError::Refused`]: 4 KiB.
const MAX_REFUSAL_BODY: usize = 4 * 1024;

/// A byte stream to a server, as a [`Connector`] opens it.
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ClientIo for T {}

/// What [`Connector::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn ClientIo>>> + Send>>;

/// Where a client connects: host, port, and whether the URL asked for TLS (`wss://`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    /// The port: the URL's, else 80 for `ws://` and 443 for `wss://`.
    pub port: u16,
    /// `wss://`: the stream must be TLS, with `host` as the server name.
    pub secure: bool,
}

impl Target {
    /// A target: `host` (an IPv6 literal without brackets), `port`, and TLS or not.
    pub fn new(host: impl Into<String>, port: u16, secure: bool) -> Self {
        Self {
            host: host.into(),
            port,
            secure,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Opens byte streams for a client: resolves the host, connects over TCP and, for `wss://`,
/// runs the TLS handshake. Each runtime adapter has one; it is the client's only tie to a
/// runtime besides [`Runtime`].
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `target`.
    fn connect(&self, target: &Target) -> ConnectFuture;
}

impl<C: Connector + ?Sized> Connector for Arc<C> {
    fn connect(&self, target: &Target) -> ConnectFuture {
        (**self).connect(target)
    }
}

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not a `ws://` or `wss://` URL with a host.
    #[error("invalid WebSocket URL `{0}`")]
    InvalidUrl(String),
    /// A header or subprotocol given to the builder is not a valid HTTP header.
    #[error("invalid request header: {0}")]
    InvalidHeader(String),
    /// The host could not be resolved or reached, or the TLS handshake failed.
    #[error("could not connect to {target}: {source}")]
    Connect {
        /// Where the client tried to connect.
        target: String,
        /// What went wrong.
        source: io::Error,
    },
    /// Connecting and the handshake together took longer than the connect timeout.
    #[error("no WebSocket connection within {0:?}")]
    Timeout(Duration),
    /// The server answered the upgrade with another status than `101`.
    #[error("the server refused the WebSocket upgrade with {status}")]
    Refused {
        /// The status of the answer.
        status: StatusCode,
        /// The answer's headers.
        headers: Box<HeaderMap>,
        /// The start of the answer's body (at most 4 KiB).
        body: Bytes,
    },
    /// The answer was not a valid WebSocket handshake response: not HTTP, too large (over
    /// 16 KiB), or missing `Upgrade: websocket` or `Connection: Upgrade`.
    #[error("invalid handshake response: {0}")]
    InvalidResponse(String),
    /// The `Sec-WebSocket-Accept` of the answer does not match the request's key.
    #[error("the server's Sec-WebSocket-Accept does not match the key sent")]
    InvalidAccept,
    /// The server selected a subprotocol the client did not offer.
    #[error("the server selected subprotocol `{0}`, which was not offered")]
    UnexpectedProtocol(String),
    /// The server answered with an extension the client did not offer, or with parameters the
    /// offer does not allow.
    #[error("unexpected extension in the server's answer: {0}")]
    UnexpectedExtension(String),
    /// Reading or writing the handshake failed, or the server closed the connection during it.
    #[error("I/O error during the handshake: {0}")]
    Io(#[from] io::Error),
}

/// How long to wait between reconnection attempts: exponential, with jitter, capped.
///
/// The n-th attempt after a connection ended waits a random time between half and all of
/// `initial × 2^(n-1)`, capped at `max`. Defaults: `initial` 500 ms, `max` 30 s, no limit on
/// the number of attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// The defaults: 500 ms doubling up to 30 s, attempts without end.
    pub fn new() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }

    /// The wait before the first attempt (default 500 ms).
    pub fn initial(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// The longest wait between attempts (default 30 s).
    pub fn max(mut self, delay: Duration) -> Self {
        self.max = delay;
        self
    }

    /// Gives up after this many failed attempts in a row (default `None`: never).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait before attempt `attempt` (0 for the first), jitter included.
    fn delay(&self, attempt: u32) -> Duration {
        let full = self
            .initial
            .saturating_mul(1 << attempt.min(20))
            .min(self.max);
        // Between half and all of it, so that clients that lost the same server spread out.
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Configures a client: the URL, the hooks, and what goes into the handshake.
///
/// Defaults: no subprotocol, no extra header, the [`Limits`] defaults, permessage-deflate
/// offered ([`Deflate::dedicated`]), a connect timeout of 10 s, no reconnection.
pub struct ClientBuilder {
    url: String,
    hooks: Arc<dyn Hooks>,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    limits: Limits,
    deflate: Option<Deflate>,
    connect_timeout: Duration,
    reconnect: Option<Backoff>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("protocols", &self.protocols)
            .field("limits", &self.limits)
            .field("deflate", &self.deflate)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A client of the `ws://` or `wss://` `url` whose connection runs `hooks`.
    pub fn new(url: impl Into<String>, hooks: impl Hooks) -> Self {
        Self::with_hooks(url, Arc::new(hooks))
    }

    /// Like [`ClientBuilder::new`], with hooks already shared.
    pub fn with_hooks(url: impl Into<String>, hooks: Arc<dyn Hooks>) -> Self {
        Self {
            url: url.into(),
            hooks,
            protocols: Vec::new(),
            headers: Vec::new(),
            limits: Limits::default(),
            deflate: Some(Deflate::dedicated()),
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
        }
    }

    /// The subprotocols to offer, in order of preference (`Sec-WebSocket-Protocol`). The one
    /// the server selects is [`Peer::protocol`]; a server that selects another fails the
    /// handshake. Default: none.
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a header to the upgrade request, such as `Authorization` or `Origin`. Checked when
    /// connecting ([`ClientError::InvalidHeader`]).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The limits of the connection, as on a server: `max_message_size` and `max_frame_size`
    /// (1009 when the server passes them), `max_buffered_bytes` (the send queue), the idle
    /// timeout, the automatic pings and the close timeout. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// permessage-deflate (RFC 7692): the offer and the compressor's settings, or `None` to
    /// offer nothing. [`Deflate::dedicated`] (the default) offers context takeover in both
    /// directions, [`Deflate::shared`] none (less memory per connection).
    pub fn deflate(mut self, deflate: impl Into<Option<Deflate>>) -> Self {
        self.deflate = deflate.into();
        self
    }

    /// How long resolving, connecting, TLS and the WebSocket handshake may take together before
    /// [`ClientError::Timeout`]. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects again after the connection ends, unless it ended with [`Client::close`]: also
    /// after the server closed it, or the hooks did with [`Peer::close`]. The first connection
    /// is not retried: [`connect_with`](Self::connect_with) fails with its error. Default: off.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = Some(backoff);
        self
    }

    /// Connects with `connector` and runs the hooks on the connection, in a task of `runtime`.
    /// Resolves once the connection is open (after the `101`, as the `open` hook starts), or
    /// with the error that kept the first attempt from opening. Runtime adapters wrap this as
    /// their `connect` function.
    pub async fn connect_with(
        self,
        runtime: Arc<dyn Runtime>,
        connector: impl Connector,
    ) -> Result<Client, ClientError> {
        let setup = Setup::new(self, runtime, connector)?;
        let connection = setup.attempt().await?;
        let inner = Arc::new(ClientInner {
            peer: Mutex::new(None),
            stopped: AtomicBool::new(false),
            stop: Event::new(),
            done: AtomicBool::new(false),
            finished: Event::new(),
        });
        *lock(&inner.peer) = Some(connection.peer().clone());
        let client = Client {
            inner: inner.clone(),
        };
        let runtime = setup.server.shared.runtime.clone();
        runtime.spawn(Box::pin(setup.run(connection, inner)));
        Ok(client)
    }
}

/// A connected client: its current [`Peer`], and a way to close it for good. Cheap to clone.
///
/// Dropping every handle does not close the connection; the hooks keep running until it ends.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    /// The open connection's peer; `None` between reconnection attempts and at the end.
    peer: Mutex<Option<Peer>>,
    stopped: AtomicBool,
    stop: Event,
    done: AtomicBool,
    finished: Event,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Client {
    /// The peer of the open connection, to send with; `None` while reconnecting and after the
    /// end.
    pub fn peer(&self) -> Option<Peer> {
        lock(&self.inner.peer).clone()
    }

    /// Closes the connection with `code` and `reason` and stops reconnecting. The `close` hook
    /// runs once the server answers (or after the close timeout).
    pub fn close(&self, code: u16, reason: &str) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.stop.notify(usize::MAX);
        if let Some(peer) = self.peer() {
            peer.close(code, reason);
        }
    }

    /// Whether the client is done: its connection ended and it will not reconnect.
    pub fn is_closed(&self) -> bool {
        self.inner.done.load(Ordering::Acquire)
    }

    /// Resolves once the client is done: the last connection ended, its `close` hook ran, and
    /// no reconnection follows. May be dropped at any time.
    pub async fn closed(&self) {
        loop {
            if self.is_closed() {
                return;
            }
            let listener = self.inner.finished.listen();
            if self.is_closed() {
                return;
            }
            listener.await;
        }
    }
}

/// What every attempt needs: the parsed URL, the request's headers, and the server behind the
/// peers.
struct Setup<C> {
    target: Target,
    /// The request target: path and query.
    path: String,
    /// The `Host` header.
    authority: String,
    headers: HeaderMap,
    protocols: Vec<String>,
    hooks: Arc<dyn Hooks>,
    connector: C,
    connect_timeout: Duration,
    reconnect: Option<Backoff>,
    /// The server whose peers the connections are: limits, deflate settings, the runtime.
    server: Server,
}

/// A connection whose handshake is done.
struct Connection {
    pending: PendingPeer,
    io: Box<dyn ClientIo>,
    /// Bytes that came after the response head.
    rest: Bytes,
}

impl Connection {
    fn peer(&self) -> &Peer {
        self.pending.peer()
    }
}

impl<C: Connector> Setup<C> {
    fn new(
        builder: ClientBuilder,
        runtime: Arc<dyn Runtime>,
        connector: C,
    ) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidUrl(builder.url.clone());
        let uri: Uri = builder.url.parse().map_err(|_| invalid())?;
        let secure = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") => true,
            _ => return Err(invalid()),
        };
        let authority = uri.authority().ok_or_else(invalid)?;
        if authority.as_str().contains('@') {
            // Credentials in the URL would be sent nowhere; refuse rather than drop them.
            return Err(invalid());
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid());
        }
        let target = Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 }),
            secure,
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &builder.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| ClientError::InvalidHeader(format!("header name `{name}`")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| ClientError::InvalidHeader(format!("value of `{name}`")))?;
            headers.append(name, value);
        }
        for protocol in &builder.protocols {
            let token = !protocol.is_empty()
                && protocol
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                return Err(ClientError::InvalidHeader(format!(
                    "subprotocol `{protocol}`"
                )));
            }
        }
        let mut server = ServerBuilder::with_resolver(Single(builder.hooks.clone()))
            .limits(builder.limits)
            .deflate(builder.deflate);
        server.client = true;
        Ok(Self {
            target,
            path,
            authority: authority.as_str().to_owned(),
            headers,
            protocols: builder.protocols,
            hooks: builder.hooks,
            connector,
            connect_timeout: builder.connect_timeout,
            reconnect: builder.reconnect,
            server: server.build(runtime),
        })
    }

    /// One attempt: connect, handshake, and a peer ready to run, within the connect timeout.
    async fn attempt(&self) -> Result<Connection, ClientError> {
        let runtime = &self.server.shared.runtime;
        let deadline = runtime.now() + self.connect_timeout;
        let attempt = std::pin::pin!(self.attempt_untimed());
        let timeout = std::pin::pin!(crate::runtime::sleep_until(&**runtime, deadline));
        match futures_util::future::select(attempt, timeout).await {
            futures_util::future::Either::Left((result, _)) => result,
            futures_util::future::Either::Right(_) => {
                Err(ClientError::Timeout(self.connect_timeout))
            }
        }
    }

    async fn attempt_untimed(&self) -> Result<Connection, ClientError> {
        let mut io = self
            .connector
            .connect(&self.target)
            .await
            .map_err(|source| ClientError::Connect {
                target: self.target.to_string(),
                source,
            })?;
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            uuid::Uuid::new_v4().as_bytes(),
        );
        let request = self.request(&key)?;
        io.write_all(&request_head(&request)).await?;
        io.flush().await?;
        let (response, rest) = read_response(&mut io).await?;
        let (protocol, deflate, extensions) = self.check_response(&response, &key)?;
        let request = Request::new(request.into_parts().0, None);
        let mut accept = Accept::new();
        if let Some(protocol) = protocol {
            accept = accept.protocol(protocol);
        }
        let admission = self
            .server
            .admit(&request)
            .map_err(|_| ClientError::Io(io::ErrorKind::Other.into()))?;
        let peer = self
            .server
            .new_peer(request, accept, extensions, Transport::WebSocket);
        self.server.shared.join(&peer);
        let pending = PendingPeer::new(peer, self.hooks.clone(), admission, deflate);
        Ok(Connection { pending, io, rest })
    }

    /// The upgrade request.
    fn request(&self, key: &str) -> Result<http::Request<()>, ClientError> {
        let mut request = http::Request::get(&self.path)
            .body(())
            .map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
        let headers = request.headers_mut();
        let value = |text: &str| {
            HeaderValue::try_from(text).map_err(|_| ClientError::InvalidHeader(text.to_owned()))
        };
        headers.insert(HOST, value(&self.authority)?);
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(SEC_WEBSOCKET_KEY, value(key)?);
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        if !self.protocols.is_empty() {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, value(&self.protocols.join(", "))?);
        }
        if let Some(deflate) = &self.server.shared.deflate {
            headers.insert(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(deflate.offer()),
            );
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        Ok(request)
    }

    /// Checks the `101` against the request (RFC 6455 section 4.1): the subprotocol selected
    /// and permessage-deflate as agreed, with its `Sec-WebSocket-Extensions` value.
    #[allow(clippy::type_complexity)]
    fn check_response(
        &self,
        response: &Head,
        key: &str,
    ) -> Result<(Option<String>, Option<Negotiated>, Option<Arc<str>>), ClientError> {
        if response.status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::Refused {
                status: response.status,
                headers: Box::new(response.headers.clone()),
                body: response.body.clone(),
            });
        }
        let headers = &response.headers;
        let has_token = |name: HeaderName, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if !has_token(UPGRADE, "websocket") {
            return Err(ClientError::InvalidResponse(
                "no `Upgrade: websocket` header".to_owned(),
            ));
        }
        if !has_token(CONNECTION, "upgrade") {
            return Err(ClientError::InvalidResponse(
                "no `Connection: Upgrade` header".to_owned(),
            ));
        }
        let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = headers
            .get_all(SEC_WEBSOCKET_ACCEPT)
            .iter()
            .collect::<Vec<_>>();
        if accept.len() != 1 || accept[0].as_bytes() != expected.as_bytes() {
            return Err(ClientError::InvalidAccept);
        }
        let protocol = match headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().count() {
            0 => None,
            1 => {
                let selected = headers
                    .get(SEC_WEBSOCKET_PROTOCOL)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .trim();
                if !self.protocols.iter().any(|p| p == selected) {
                    return Err(ClientError::UnexpectedProtocol(selected.to_owned()));
                }
                Some(selected.to_owned())
            }
            _ => {
                return Err(ClientError::UnexpectedProtocol(
                    "more than one Sec-WebSocket-Protocol".to_owned(),
                ))
            }
        };
        let answers: Vec<&str> = headers
            .get_all(SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let (deflate, extensions) = match (answers.as_slice(), &self.server.shared.deflate) {
            ([], _) => (None, None),
            ([answer], Some(config)) => {
                let negotiated = Negotiated::client_side(config, answer)
                    .map_err(ClientError::UnexpectedExtension)?;
                (Some(negotiated), Some(Arc::from(*answer)))
            }
            ([answer], None) => {
                return Err(ClientError::UnexpectedExtension(format!(
                    "`{answer}`, while none was offered"
                )))
            }
            _ => {
                return Err(ClientError::UnexpectedExtension(format!(
                    "`{}`: more than one extension",
                    answers.join(", ")
                )))
            }
        };
        Ok((protocol, deflate, extensions))
    }

    /// Runs connections until one ends for good: after [`Client::close`], without
    /// reconnection, or once the backoff gives up.
    async fn run(self, mut connection: Connection, client: Arc<ClientInner>) {
        loop {
            let peer = connection.peer().clone();
            *lock(&client.peer) = Some(peer.clone());
            if client.stopped.load(Ordering::Acquire) {
                // Closed between the handshake and now: the close goes out first thing.
                peer.close(close_code::NORMAL, "");
            }
            let Connection { pending, io, rest } = connection;
            pending.run_with_prefix(io, rest).await;
            *lock(&client.peer) = None;
            let Some(backoff) = &self.reconnect else {
                break;
            };
            match self.reconnect(backoff, &client).await {
                Some(next) => connection = next,
                None => break,
            }
        }
        client.done.store(true, Ordering::Release);
        client.finished.notify(usize::MAX);
    }

    /// Attempts until one connects; `None` once stopped or out of attempts.
    async fn reconnect(&self, backoff: &Backoff, client: &ClientInner) -> Option<Connection> {
        let runtime = &*self.server.shared.runtime;
        let mut attempt = 0;
        loop {
            if backoff.max_attempts.is_some_and(|max| attempt >= max) {
                tracing::warn!(target: "anyws::client", attempts = attempt, "giving up reconnecting");
                return None;
            }
            let deadline = runtime.now() + backoff.delay(attempt);
            let stop = client.stop.listen();
            if client.stopped.load(Ordering::Acquire) {
                return None;
            }
            let sleep = std::pin::pin!(crate::runtime::sleep_until(runtime, deadline));
            if let futures_util::future::Either::Right(_) =
                futures_util::future::select(sleep, stop).await
            {
                return None;
            }
            match self.attempt().await {
                Ok(connection) => return Some(connection),
                Err(error) => {
                    tracing::debug!(target: "anyws::client", %error, "reconnection attempt failed");
                    attempt += 1;
                }
            }
        }
    }
}

/// A handshake response's status, headers and (for a refusal) the start of its body.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The request's head as sent: `GET path HTTP/1.1`, then the headers.
fn request_head(request: &http::Request<()>) -> Vec<u8> {
    let mut head = format!("GET {} HTTP/1.1\r\n", request.uri()).into_bytes();
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads the response head (at most 16 KiB) and returns it with the bytes that followed it:
/// the first frames of a `101`, or the start of a refusal's body, which is read on up to its
/// `Content-Length` (at most 4 KiB).
async fn read_response(io: &mut Box<dyn ClientIo>) -> Result<(Head, Bytes), ClientError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before answering the upgrade",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut parsed);
        let end = match response.parse(&buf) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ClientError::InvalidResponse(format!(
                    "a response head over {MAX_RESPONSE_HEAD} bytes"
                )))
            }
            Err(error) => return Err(ClientError::InvalidResponse(error.to_string())),
        };
        let status = response
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| ClientError::InvalidResponse("no status".to_owned()))?;
        let mut headers = HeaderMap::new();
        for header in response.headers.iter() {
            let name = HeaderName::try_from(header.name)
                .map_err(|_| ClientError::InvalidResponse(format!("header `{}`", header.name)))?;
            let value = HeaderValue::from_bytes(header.value)
                .map_err(|_| ClientError::InvalidResponse(format!("value of `{name}`")))?;
            headers.append(name, value);
        }
        let mut rest = buf.split_off(end);
        let mut body = Bytes::new();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let length = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_REFUSAL_BODY);
            while rest.len() < length {
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            rest.truncate(MAX_REFUSAL_BODY);
            body = Bytes::from(std::mem::take(&mut rest));
        }
        let head = Head {
            status,
            headers,
            body,
        };
        return Ok((head, Bytes::from(rest)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let backoff = Backoff::new()
            .initial(Duration::from_millis(100))
            .max(Duration::from_secs(1));
        for _ in 0..100 {
            let first = backoff.delay(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff.delay(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }
}
