//! Run [anyws](https://docs.rs/anyws) hooks on [smol](https://docs.rs/smol).
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
//! smol::block_on(async {
//!     let server = anyws_smol::server(Echo);
//!     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     smol::spawn(anyws_smol::serve(listener, server.clone()).into_future()).detach();
//!
//!     // Any WebSocket client will do; this one is async-tungstenite.
//!     let stream = smol::net::TcpStream::connect(addr).await?;
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
//! - [`serve`] accepts connections on a smol [`TcpListener`], upgrades WebSocket requests and
//!   hands every other request to a [fallback](anyws_hyper::Serve::fallback). It shuts down
//!   gracefully on a signal or on [`Server::shutdown`].
//! - `serve_tls` (feature `tls`) does the same over TLS (`wss://`), with a rustls configuration
//!   and the TLS stream of [`anyws_hyper::tls`].
//! - [`upgrade`] handles one hyper request inside any hyper service running on smol.
//! - [`event_stream_response`] serves an [`EventStream`](anyws_core::sse::EventStream) of
//!   server-sent events, from a fallback or any hyper service.
//!
//! Both come from `anyws-hyper`, the runtime-free hyper glue every adapter shares. Accepted
//! connections are read through a [`ReadyStream`], which after a short read waits for the
//! socket's readiness instead of trying a read that would find nothing.
//!
//! # Runtime
//!
//! [`SmolRuntime`] implements the core's [`Runtime`]: tasks go to
//! `smol::spawn` (smol's global executor; `SMOL_THREADS` sets its thread count) and timers are
//! `async-io` timers ([`AsyncIoTimer`]). No tokio runtime is involved.
//!
//! # Limits
//!
//! The server's [`Limits`](anyws_core::Limits) apply; `handshake_timeout` (default 10 s) is the
//! time a connection has to send its complete request head, and `max_request_head_bytes`
//! (default 16 KiB) its largest size, counted as received: a larger head gets `431`, on every
//! request of the connection.
#![deny(missing_docs)]

use anyws_core::{AsyncTimer, BoxFuture, Hooks, Runtime, Server, ServerBuilder};
use smol::net::{TcpListener, TcpStream};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

mod client;
mod stream;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
pub use client::connect_tls;
pub use client::{connect, connector};
pub use stream::ReadyStream;
#[cfg(feature = "tls")]
pub use tls::{serve_tls, ServeTls, SmolTlsListener, TlsConnecting};

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
    anyws_hyper::serve_connection(ReadyStream::from(stream), remote, server, fallback).await
}

/// The smol implementation of the core's [`Runtime`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

/// The smol runtime as the core takes it.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(SmolRuntime)
}

/// A server for `hooks` with default limits on smol: `ServerBuilder::new(hooks).build(runtime())`.
pub fn server(hooks: impl Hooks) -> Server {
    ServerBuilder::new(hooks).build(runtime())
}

impl Runtime for SmolRuntime {
    fn spawn(&self, future: BoxFuture) {
        smol::spawn(future).detach();
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(AsyncIoTimer::at(deadline))
    }
}

/// An `async-io` timer as the core's [`AsyncTimer`]: the timer of every runtime built on
/// `async-io`, smol and async-std among them.
#[derive(Debug)]
pub struct AsyncIoTimer(async_io::Timer);

impl AsyncIoTimer {
    /// A timer that fires at `deadline`.
    pub fn at(deadline: Instant) -> Self {
        Self(async_io::Timer::at(deadline))
    }
}

impl AsyncTimer for AsyncIoTimer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.get_mut().0.set_at(deadline);
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx).map(|_| ())
    }
}

/// [`anyws_hyper::Serve`] on a smol listener, as [`serve`] returns it.
pub type Serve<F = NotFound> = anyws_hyper::Serve<SmolListener, F>;

/// Serves `server` on `listener`: WebSocket upgrades go to the server's hooks and every other
/// request to the fallback (by default `404`). `.await` the returned builder to run it; see
/// [`anyws_hyper::serve`].
pub fn serve(listener: TcpListener, server: Server) -> Serve {
    anyws_hyper::serve(SmolListener(listener), server)
}

/// A smol TCP listener as an [`anyws_hyper::Listener`]; accepted sockets get `TCP_NODELAY` and
/// are read through a [`ReadyStream`].
#[derive(Debug)]
pub struct SmolListener(pub TcpListener);

impl anyws_hyper::Listener for SmolListener {
    type Io = ReadyStream;
    type Connecting = std::future::Ready<std::io::Result<Self::Io>>;

    async fn accept(&mut self) -> std::io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((std::future::ready(Ok(ReadyStream::from(stream))), remote))
    }

    /// The connection's socket: a publish writes to an idle peer's socket itself.
    fn shared_socket(io: &ReadyStream) -> Option<std::sync::Arc<dyn anyws_core::SharedSocket>> {
        Some(io.shared())
    }
}
