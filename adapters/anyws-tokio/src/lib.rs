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
//! - [`upgrade`] handles one hyper request inside any hyper service: it answers the handshake and
//!   runs the peer on the upgraded connection, or gives the request back when it is not a
//!   WebSocket upgrade.
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
//! time a connection has to send its complete request head.
#![deny(missing_docs)]

mod runtime;
mod serve;

pub use runtime::{runtime, TokioRuntime};
pub use serve::{not_found, serve, upgrade, Body, Serve};

use anyws_core::{Hooks, Server, ServerBuilder};

/// A server for `hooks` with default limits on tokio: `ServerBuilder::new(hooks).build(runtime())`.
pub fn server(hooks: impl Hooks) -> Server {
    ServerBuilder::new(hooks).build(runtime())
}
