//! Run [anyws](https://docs.rs/anyws) hooks on [async-std](https://docs.rs/async-std).
//!
//! async-std is discontinued upstream; this adapter stays because users ask for it. It is built
//! on the same `async-io` foundation as `anyws-smol` and shares its code: the timers are
//! [`anyws_smol::AsyncIoTimer`], the HTTP and WebSocket handling is `anyws-hyper`, and only the
//! executor (`async_std::task::spawn`) and the listener type are async-std's own. New projects
//! should prefer smol or tokio.
//!
//! ```
//! use anyws_core::{async_trait, Hooks, Message, Peer};
//! use futures_util::{SinkExt, StreamExt};
//! use std::future::IntoFuture;
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl Hooks for Echo {
//!     async fn message(&self, peer: &Peer, message: Message) {
//!         let _ = peer.send(message);
//!     }
//! }
//!
//! async_std::task::block_on(async {
//!     let server = anyws_async_std::server(Echo);
//!     let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     async_std::task::spawn(anyws_async_std::serve(listener, server.clone()).into_future());
//!
//!     // Any WebSocket client will do; this one is async-tungstenite.
//!     let stream = async_std::net::TcpStream::connect(addr).await?;
//!     let (mut ws, _) = async_tungstenite::client_async(format!("ws://{addr}/"), stream).await?;
//!     ws.send("hello".into()).await?;
//!     assert_eq!(ws.next().await.unwrap()?.into_text()?, "hello");
//!
//!     drop(ws);
//!     server.shutdown().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! ```
//!
//! # Serving and embedding
//!
//! - [`serve`] accepts connections on an async-std [`TcpListener`], upgrades WebSocket requests
//!   and hands every other request to a [fallback](anyws_hyper::Serve::fallback). It shuts down
//!   gracefully on a signal or on [`Server::shutdown`].
//! - [`upgrade`] handles one hyper request inside any hyper service running on async-std.
//! - [`event_stream_response`] serves an [`EventStream`](anyws_core::sse::EventStream) of
//!   server-sent events, from a fallback or any hyper service.
//!
//! # Runtime
//!
//! [`AsyncStdRuntime`] implements the core's [`Runtime`] with
//! `async_std::task::spawn` and `async-io` timers. No tokio runtime is involved.
//!
//! # Limits
//!
//! The server's [`Limits`](anyws_core::Limits) apply; `handshake_timeout` (default 10 s) is the
//! time a connection has to send its complete request head, and `max_request_head_bytes`
//! (default 16 KiB) its largest size, counted as received: a larger head gets `431`, on every
//! request of the connection.
#![deny(missing_docs)]

use anyws_core::{AsyncTimer, BoxFuture, Hooks, Runtime, Server, ServerBuilder};
use anyws_hyper::FuturesIo;
use anyws_smol::AsyncIoTimer;
use async_std::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// The stream the listener hands hyper for each accepted connection (async-std's streams are
/// `async-io` streams too).
pub use anyws_smol::ReadyStream;

pub use anyws_hyper::{
    event_stream_body, event_stream_response, not_found, upgrade, Body, Fallback, NotFound,
};

/// Serves one connection the application accepted itself: WebSocket upgrades go to `server`,
/// every other request to `fallback` ([`NotFound`] for none). Resolves when the connection is
/// done; an upgraded peer runs on in a task of its own. See [`anyws_hyper::serve_connection`].
pub async fn serve_connection<F: Fallback>(stream: TcpStream, server: Server, fallback: F) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    anyws_hyper::serve_connection(FuturesIo::new(stream), remote, server, fallback).await
}

/// Opens a client's streams: the async-io connector of `anyws-smol`, since async-std's sockets
/// are async-io sockets too.
pub use anyws_smol::connector;

/// Connects `client` on async-std and runs its hooks in an async-std task; resolves once the
/// connection is open, or with the reason it could not be opened. `wss://` URLs need the `tls`
/// feature and are checked against the Mozilla root store (see [`connect_tls`] for others).
///
/// ```no_run
/// # struct Bot;
/// # impl anyws_core::Hooks for Bot {}
/// # async fn run() -> Result<(), anyws_core::ClientError> {
/// let client =
///     anyws_async_std::connect(anyws_core::ClientBuilder::new("ws://127.0.0.1:3000/", Bot)).await?;
/// client.closed().await;
/// # Ok(()) }
/// ```
pub async fn connect(
    client: anyws_core::ClientBuilder,
) -> Result<anyws_core::Client, anyws_core::ClientError> {
    client
        .connect_with(runtime(), connector(anyws_hyper::ClientSecurity::default()))
        .await
}

/// [`connect`] with the rustls client configuration `tls` for `wss://` URLs, for example one
/// that trusts a private certificate authority.
#[cfg(feature = "tls")]
pub async fn connect_tls(
    client: anyws_core::ClientBuilder,
    tls: impl Into<Arc<anyws_hyper::tls::rustls::ClientConfig>>,
) -> Result<anyws_core::Client, anyws_core::ClientError> {
    let security = anyws_hyper::ClientSecurity::with_config(tls);
    client.connect_with(runtime(), connector(security)).await
}

/// The async-std implementation of the core's [`Runtime`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdRuntime;

/// The async-std runtime as the core takes it.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(AsyncStdRuntime)
}

/// A server for `hooks` with default limits on async-std:
/// `ServerBuilder::new(hooks).build(runtime())`.
pub fn server(hooks: impl Hooks) -> Server {
    ServerBuilder::new(hooks).build(runtime())
}

impl Runtime for AsyncStdRuntime {
    fn spawn(&self, future: BoxFuture) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(future));
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(AsyncIoTimer::at(deadline))
    }
}

/// [`anyws_hyper::Serve`] on an async-std listener, as [`serve`] returns it.
pub type Serve<F = NotFound> = anyws_hyper::Serve<AsyncStdListener, F>;

/// Serves `server` on `listener`: WebSocket upgrades go to the server's hooks and every other
/// request to the fallback (by default `404`). `.await` the returned builder to run it; see
/// [`anyws_hyper::serve`].
pub fn serve(listener: TcpListener, server: Server) -> Serve {
    anyws_hyper::serve(AsyncStdListener(listener), server)
}

/// An async-std TCP listener as an [`anyws_hyper::Listener`]; accepted sockets get
/// `TCP_NODELAY` and are read through a [`ReadyStream`], which after a short read waits for the
/// socket's readiness instead of trying a read that would find nothing.
#[derive(Debug)]
pub struct AsyncStdListener(pub TcpListener);

impl anyws_hyper::Listener for AsyncStdListener {
    type Io = ReadyStream;
    type Connecting = std::future::Ready<std::io::Result<Self::Io>>;

    async fn accept(&mut self) -> std::io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = accept(&self.0).await?;
        Ok((std::future::ready(Ok(stream)), remote))
    }

    /// The connection's socket: a publish writes to an idle peer's socket itself.
    fn shared_socket(io: &ReadyStream) -> Option<std::sync::Arc<dyn anyws_core::SharedSocket>> {
        Some(io.shared())
    }
}

/// Accepts a connection on `listener`, with `TCP_NODELAY`, as a [`ReadyStream`].
///
/// async-std registers every socket it accepts in an `async_io::Async` of its own, which it
/// keeps to itself: taking the socket back out costs four system calls (deregistered, made
/// blocking, then non-blocking and registered again as a `ReadyStream`). So a connection
/// already waiting is taken with a plain `accept` on the listening socket (non-blocking, as
/// async-std set it up), and async-std's own `accept` is awaited only when none is waiting.
async fn accept(listener: &TcpListener) -> std::io::Result<(ReadyStream, SocketAddr)> {
    let (stream, remote) = match socket2::SockRef::from(listener).accept() {
        Ok((socket, address)) => match address.as_socket() {
            Some(remote) => (std::net::TcpStream::from(socket), remote),
            None => {
                return Err(std::io::Error::other(
                    "a TCP listener accepted a non-IP peer",
                ))
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
            let (stream, remote) = listener.accept().await?;
            // The only handle, just accepted: out of async-std's `Async`, to be registered anew.
            (std::net::TcpStream::try_from(stream)?, remote)
        }
        Err(error) => return Err(error),
    };
    let _ = stream.set_nodelay(true);
    Ok((ReadyStream::try_from(stream)?, remote))
}

/// [`anyws_hyper::Serve`] on an async-std TLS listener, as [`serve_tls`] returns it.
#[cfg(feature = "tls")]
pub type ServeTls<F = NotFound> = anyws_hyper::Serve<AsyncStdTlsListener, F>;

/// [`serve`] over TLS: `wss://` and `https://` with `tls`, a rustls configuration (see
/// [`anyws_hyper::tls::load_pem`] and [`anyws_hyper::tls::server_config`], whose certificates
/// can be replaced while running). Each connection's TLS handshake runs in its own task and
/// must finish, with the request head, within the server's
/// [`handshake_timeout`](anyws_core::Limits::handshake_timeout).
#[cfg(feature = "tls")]
pub fn serve_tls(
    listener: TcpListener,
    tls: impl Into<Arc<anyws_hyper::tls::rustls::ServerConfig>>,
    server: Server,
) -> ServeTls {
    anyws_hyper::serve(AsyncStdTlsListener::new(listener, tls), server)
}

/// An async-std TCP listener whose connections speak TLS ([`anyws_hyper::tls::TlsStream`]), as an
/// [`anyws_hyper::Listener`]; accepted sockets get `TCP_NODELAY` and are read through a
/// [`ReadyStream`].
#[cfg(feature = "tls")]
pub struct AsyncStdTlsListener {
    listener: TcpListener,
    config: Arc<anyws_hyper::tls::rustls::ServerConfig>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for AsyncStdTlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncStdTlsListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl AsyncStdTlsListener {
    /// Accepts TLS connections on `listener` with the configuration `tls`.
    pub fn new(
        listener: TcpListener,
        tls: impl Into<Arc<anyws_hyper::tls::rustls::ServerConfig>>,
    ) -> Self {
        Self {
            listener,
            config: tls.into(),
        }
    }
}

#[cfg(feature = "tls")]
impl anyws_hyper::Listener for AsyncStdTlsListener {
    type Io = anyws_hyper::tls::TlsStream<ReadyStream>;
    type Connecting = anyws_smol::TlsConnecting;
    const SECURE: bool = true;

    async fn accept(&mut self) -> std::io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = accept(&self.listener).await?;
        Ok((anyws_smol::TlsConnecting::new(&self.config, stream), remote))
    }
}
