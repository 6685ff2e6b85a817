//! The hyper 1.x glue of anyws, shared by every runtime adapter and free of any runtime.
//!
//! hyper runs on any runtime through its `rt` traits, so everything between a TCP connection and
//! the core lives here once: serving a [`Listener`] with a [`Fallback`] for ordinary HTTP
//! requests and graceful shutdown, [`upgrade`] for embedding in any hyper service, hyper's timer
//! on the core's runtime seam ([`RuntimeTimer`]), a tower [`WebSocketLayer`] for any tower stack
//! (axum's `Router::layer` among them), and byte-stream bridges between hyper and `futures-io`
//! ([`HyperIo`], [`FuturesIo`]). [`event_stream_response`] serves an
//! [`EventStream`](anyws_core::sse::EventStream) of server-sent events as a hyper response.
//!
//! Any other framework that can hand over the request parts and, after the `101` response, the
//! upgraded byte stream can host anyws through the core alone:
//! [`Server::handshake`](anyws_core::Server::handshake) then
//! [`PendingPeer::run`](anyws_core::PendingPeer::run).
//!
//! An adapter adds only its [`Runtime`](anyws_core::Runtime) and a [`Listener`] around its
//! runtime's TCP listener; `anyws-tokio`, `anyws-smol` and `anyws-async-std` are each a few dozen
//! lines.
//!
//! ```
//! use anyws_core::Server;
//! use anyws_hyper::{FuturesIo, Listener};
//! use std::net::SocketAddr;
//!
//! /// A listener of some runtime whose streams implement `futures-io`.
//! struct MyListener(Vec<(Vec<u8>, SocketAddr)>);
//!
//! impl Listener for MyListener {
//!     type Io = FuturesIo<futures_util::io::Cursor<Vec<u8>>>;
//!     // Plain TCP is ready as accepted; a TLS listener does its handshake here.
//!     type Connecting = std::future::Ready<std::io::Result<Self::Io>>;
//!
//!     async fn accept(&mut self) -> std::io::Result<(Self::Connecting, SocketAddr)> {
//!         match self.0.pop() {
//!             Some((bytes, addr)) => {
//!                 let io = FuturesIo::new(futures_util::io::Cursor::new(bytes));
//!                 Ok((std::future::ready(Ok(io)), addr))
//!             }
//!             None => std::future::pending().await,
//!         }
//!     }
//! }
//!
//! fn serve(server: Server) -> impl std::future::IntoFuture<Output = std::io::Result<()>> {
//!     anyws_hyper::serve(MyListener(Vec::new()), server)
//! }
//! ```
#![deny(missing_docs)]

mod client;
mod h1;
mod io;
mod serve;
mod service;
mod sse;
mod timer;
#[cfg(feature = "tls")]
pub mod tls;
mod tower;

pub use client::{ClientConnector, ClientSecurity};
pub use io::{only_buffer, FuturesIo, HyperIo};
pub use serve::{serve, serve_connection, serve_secure_connection, Listener, Serve};
pub use service::{
    is_anyws_request, is_websocket_connect, not_found, upgrade, Body, BoxError, Fallback, NotFound,
};
pub use sse::{event_stream_body, event_stream_response};
pub use timer::RuntimeTimer;
pub use tower::{RemoteAddr, WebSocketLayer, WebSocketService};
