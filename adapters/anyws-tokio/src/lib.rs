//! Run [anyws](https://docs.rs/anyws) hooks on tokio with hyper 1.x.
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
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = anyws_tokio::server(Echo);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("ws://{}/", listener.local_addr()?);
//!     tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());
//!
//!     // Any WebSocket client will do; this one is tokio-tungstenite.
//!     let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
//!     ws.send("hello".into()).await?;
//!     assert_eq!(ws.next().await.unwrap()?.into_text()?, "hello");
//!
//!     drop(ws);
//!     server.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # Serving and embedding
//!
//! - [`serve`] accepts connections on a listener, upgrades WebSocket requests and hands every
//!   other request to a [fallback](Serve::fallback). It shuts down gracefully on a signal or on
//!   [`Server::shutdown`].
//! - `serve_tls` (feature `tls`) does the same over TLS (`wss://`), with a rustls configuration
//!   and the TLS stream of [`anyws_hyper::tls`].
//! - [`upgrade`] handles one hyper request inside any hyper service: it answers the handshake and
//!   runs the peer on the upgraded connection, or gives the request back when it is not a
//!   WebSocket upgrade.
//! - [`event_stream_response`] serves an [`EventStream`](anyws_core::sse::EventStream) of
//!   server-sent events, from a fallback or any hyper service.
//!
//! # Runtime
//!
//! [`TokioRuntime`] implements the core's [`Runtime`](anyws_core::Runtime) with `tokio::spawn`
//! and `tokio::time`. Everything here must run inside a tokio runtime with the time driver
//! enabled.
//!
//! # Limits
//!
//! The server's [`Limits`](anyws_core::Limits) apply; `handshake_timeout` (default 10 s) is the
//! time a connection has to send its complete request head, and `max_request_head_bytes`
//! (default 16 KiB) its largest size, counted as received: a larger head gets `431`, on every
//! request of the connection.
#![deny(missing_docs)]

mod client;
mod runtime;
mod stream;

#[cfg(feature = "tls")]
pub use client::connect_tls;
pub use client::{connect, connector};

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
    anyws_hyper::serve_connection(TokioIo::new(stream), remote, server, fallback).await
}
pub use runtime::{runtime, TokioRuntime};
pub use stream::SharedTcpStream;

#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
pub use tls::{serve_tls, ServeTls, TlsConnecting, TokioTlsListener};

use anyws_core::{Hooks, Server, ServerBuilder};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// [`anyws_hyper::Serve`] on a tokio listener, as [`serve`] returns it.
pub type Serve<F = NotFound> = anyws_hyper::Serve<TokioListener, F>;

/// Serves `server` on `listener`: WebSocket upgrades go to the server's hooks and every other
/// request to the fallback (by default `404`).
///
/// `.await` the returned builder to run. It runs until
/// [`Serve::with_graceful_shutdown`](anyws_hyper::Serve::with_graceful_shutdown)'s signal fires
/// or [`Server::shutdown`] is called, then stops accepting, closes every peer with 1001 and
/// returns once they are gone. The accept loop runs as a task of the server's runtime; see
/// [`anyws_hyper::serve`] on the listener's backlog.
///
/// ```no_run
/// # async fn run(server: anyws_core::Server) -> std::io::Result<()> {
/// use http_body_util::Full;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// anyws_tokio::serve(listener, server)
///     .fallback(|_request| async { http::Response::new(Full::new(bytes::Bytes::from("hello"))) })
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
pub fn serve(listener: TcpListener, server: Server) -> Serve {
    anyws_hyper::serve(TokioListener(listener), server)
}

/// A tokio TCP listener as an [`anyws_hyper::Listener`]; accepted sockets get `TCP_NODELAY`.
#[derive(Debug)]
pub struct TokioListener(pub TcpListener);

impl anyws_hyper::Listener for TokioListener {
    type Io = TokioIo<SharedTcpStream>;
    type Connecting = std::future::Ready<std::io::Result<Self::Io>>;

    async fn accept(&mut self) -> std::io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((
            std::future::ready(Ok(TokioIo::new(SharedTcpStream::new(stream)))),
            remote,
        ))
    }

    /// The connection's socket: a publish writes to an idle peer's socket itself.
    fn shared_socket(io: &Self::Io) -> Option<std::sync::Arc<dyn anyws_core::SharedSocket>> {
        Some(io.inner().shared())
    }
}

/// A server for `hooks` with default limits on tokio: `ServerBuilder::new(hooks).build(runtime())`.
pub fn server(hooks: impl Hooks) -> Server {
    ServerBuilder::new(hooks).build(runtime())
}
