//! anyws: write WebSocket logic once, as one [`Hooks`] implementation, and run it unchanged on
//! any runtime.
//!
//! ```
//! use anyws::{async_trait, Hooks, Message, Peer};
//!
//! struct Chat;
//!
//! #[async_trait]
//! impl Hooks for Chat {
//!     async fn open(&self, peer: &Peer) {
//!         peer.subscribe("chat");
//!     }
//!
//!     async fn message(&self, peer: &Peer, message: Message) {
//!         let _ = peer.send(message.clone()); // back to the sender
//!         peer.publish("chat", message); // and to everyone else in the namespace
//!     }
//! }
//!
//! # #[cfg(feature = "tokio")]
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     use futures_util::{SinkExt, StreamExt};
//!     use std::future::IntoFuture;
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("ws://{}/room", listener.local_addr()?);
//!     let server = anyws::tokio::server(Chat);
//!     tokio::spawn(anyws::tokio::serve(listener, server.clone()).into_future());
//!
//!     let (mut alice, _) = tokio_tungstenite::connect_async(&url).await?;
//!     let (mut bob, _) = tokio_tungstenite::connect_async(&url).await?;
//!     while server.peers_in("/room").len() < 2 {
//!         tokio::task::yield_now().await; // both have opened and subscribed
//!     }
//!     alice.send("hi".into()).await?;
//!     assert_eq!(alice.next().await.unwrap()?.into_text()?, "hi");
//!     assert_eq!(bob.next().await.unwrap()?.into_text()?, "hi");
//!
//!     drop((alice, bob));
//!     server.shutdown().await;
//!     Ok(())
//! }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! The [guide](https://github.com/anyws/anyws/blob/main/docs/guide.md) walks through hooks,
//! peers, pub/sub, the router, every runtime and framework, limits and shutdown.
//!
//! # Features
//!
//! - `tokio` (default): the tokio adapter, as `anyws::tokio`, serving with hyper 1.x or
//!   embedded in any hyper service.
//! - `smol`: the smol adapter, as `anyws::smol`.
//! - `async-std`: the async-std adapter, as `anyws::async_std` (async-std is discontinued
//!   upstream; the adapter shares smol's `async-io` foundation).
//! - `axum`: mount hooks in an axum `Router`, as `anyws::axum`.
//! - `actix`: run hooks inside actix-web handlers, as `anyws::actix`.
//! - `redis`: scale-out, as `anyws::redis`: a Redis backplane that relays pub/sub between
//!   server instances (`ServerBuilder::backplane(anyws::redis::RedisBackplane::new(url)?)`), on
//!   every runtime above.
//! - `redis-cluster`: scale-out through a Redis Cluster's sharded pub/sub, as
//!   `anyws::redis::cluster::RedisClusterBackplane`; implies `redis`.
//! - `hyper` (implied by each adapter): the runtime-free hyper glue, as `anyws::hyper`: `upgrade`
//!   inside any hyper service, a tower `WebSocketLayer`, `serve` on any listener.
//!
//! Features are additive: any combination builds, and the same `Hooks` run on each.
//!
//! Everything else is the runtime-free core, re-exported from `anyws-core`: [`Hooks`], [`Peer`],
//! [`Message`], [`Server`], [`Resolver`], [`Limits`], the client ([`ClientBuilder`], connected
//! with `anyws::tokio::connect`, `anyws::smol::connect` or `anyws::async_std::connect`; see
//! [`client`]), the WebSocket proxy [`proxy::Proxy`], and server-sent events in [`sse`]
//! ([`sse::EventStream`], which each adapter serves: `event_stream_response` in `anyws::tokio`,
//! `anyws::smol`, `anyws::async_std`, `anyws::hyper` and `anyws::actix`,
//! `EventStreamResponse` in `anyws::axum`).
//!
//! # Runtimes
//!
//! A runtime plugs in through the core's [`Runtime`] trait and the two calls
//! [`Server::handshake`] and [`PendingPeer::run`]; each adapter crate is that glue for one runtime.
//!
//! # Limits and defaults
//!
//! See [`Limits`]. Every limit has a default with a unit, and passing one closes only the peer
//! that passed it.
#![deny(missing_docs)]

pub use anyws_core::*;

/// The tokio adapter: [`serve`](anyws_tokio::serve), [`upgrade`](anyws_tokio::upgrade) and the
/// runtime.
#[cfg(feature = "tokio")]
pub mod tokio {
    pub use anyws_tokio::*;
}

/// The smol adapter: [`serve`](anyws_smol::serve), [`upgrade`](anyws_smol::upgrade) and the
/// runtime.
#[cfg(feature = "smol")]
pub mod smol {
    pub use anyws_smol::*;
}

/// The async-std adapter: [`serve`](anyws_async_std::serve),
/// [`upgrade`](anyws_async_std::upgrade) and the runtime. async-std is discontinued upstream;
/// this adapter shares smol's `async-io` foundation.
#[cfg(feature = "async-std")]
pub mod async_std {
    pub use anyws_async_std::*;
}

/// axum integration: the [`WebSocketUpgrade`](anyws_axum::WebSocketUpgrade) extractor and
/// [`layer`](anyws_axum::layer) for a `Router`.
#[cfg(feature = "axum")]
pub mod axum {
    pub use anyws_axum::*;
}

/// actix-web integration: [`upgrade`](anyws_actix::upgrade) inside an actix-web handler, on
/// actix's own request and payload types.
#[cfg(feature = "actix")]
pub mod actix {
    pub use anyws_actix::*;
}

/// Scale-out through Redis: [`RedisBackplane`](anyws_redis::RedisBackplane) relays pub/sub
/// between server instances; give it to [`ServerBuilder::backplane`].
#[cfg(feature = "redis")]
pub mod redis {
    pub use anyws_redis::*;
}

/// The runtime-free hyper glue every adapter is built from: [`serve`](anyws_hyper::serve) on any
/// [`Listener`](anyws_hyper::Listener), [`upgrade`](anyws_hyper::upgrade), and the byte-stream
/// bridges. Write an adapter for another runtime with it.
#[cfg(feature = "hyper")]
pub mod hyper {
    pub use anyws_hyper::*;
}

/// TLS for the `serve_tls` functions of the runtime adapters: a rustls configuration from PEM
/// files ([`load_pem`](anyws_hyper::tls::load_pem)), with [`Certificates`](anyws_hyper::tls::Certificates)
/// that can be replaced while running.
#[cfg(feature = "tls")]
pub mod tls {
    pub use anyws_hyper::tls::*;
}
