//! The runtime-free core of anyws: write WebSocket logic once as [`Hooks`], run it on any
//! runtime.
//!
//! ```
//! use anyws_core::{async_trait, Hooks, Message, Peer};
//!
//! /// Every message goes back to its sender and to the rest of the room.
//! struct Chat;
//!
//! #[async_trait]
//! impl Hooks for Chat {
//!     async fn open(&self, peer: &Peer) {
//!         peer.subscribe("room");
//!         peer.publish("room", format!("{} joined", peer.id()));
//!     }
//!
//!     async fn message(&self, peer: &Peer, message: Message) {
//!         let _ = peer.send(message.clone());
//!         peer.publish("room", message);
//!     }
//! }
//! ```
//!
//! An adapter runs it: `anyws_tokio::serve(listener, ServerBuilder::new(Chat).build(runtime))`.
//! The `anyws` crate re-exports this crate and the adapters behind features.
//!
//! # What is here
//!
//! - [`Hooks`]: `upgrade`, `open`, `message`, `close`, `error`, `drain`, `ping` and `pong`,
//!   each with a default.
//! - [`Peer`]: a cheap handle on one client: id, request, context, namespace, topics, send,
//!   publish, ping, close, buffered amount and drain.
//! - [`Message`]: text or binary, with shared bytes.
//! - [`Server`] and [`ServerBuilder`]: peers, server-wide publish, graceful shutdown, limits.
//! - [`ClientBuilder`] and [`Client`]: the other end, the same hooks on a client connection
//!   (see [`client`]), with subprotocols, headers, permessage-deflate and reconnection.
//! - [`proxy::Proxy`]: hooks that forward every peer to an upstream WebSocket server.
//! - [`Resolver`] and [`Router`]: pick the hooks per request (by path, with parameters such as
//!   `/rooms/:id`), so many handlers share one server.
//! - [`sse`]: the SSE transport, which serves the same hooks to clients without WebSockets
//!   (wire-compatible with CrossWS), and server-sent [`sse::Event`]s.
//! - [`Backplane`]: scale-out, relaying pub/sub between server instances (the Redis driver is
//!   `anyws-redis`); see [`backplane`] for the delivery semantics.
//! - [`Runtime`]: the seam each adapter implements; [`Server::handshake`] and
//!   [`PendingPeer::run`] are what an adapter calls.
//! - [`sse`]: server-sent events: the [`Event`](sse::Event) wire form and
//!   [`EventStream`](sse::EventStream), a bounded stream of events with keep-alive and
//!   backpressure that a handler returns as its response body; every adapter serves it.
//!
//! # Features
//!
//! This crate has no optional features and depends on no async runtime. The `anyws` crate adds
//! the adapters behind its features (`tokio`, …).
//!
//! # Runtimes
//!
//! An adapter connects a runtime in three steps:
//!
//! 1. implement [`Runtime`] (spawn a task, make a timer) and build the server with it;
//! 2. for each HTTP request where [`is_websocket_upgrade`] holds, build a [`Request`] and call
//!    [`Server::handshake`]; send the response it returns;
//! 3. when that response is `101`, run the [`PendingPeer`] on the upgraded byte stream (any
//!    `futures-io` `AsyncRead + AsyncWrite`) in a task of its own.
//!
//! The `upgrade` function of `anyws-tokio` does exactly this; read it as the reference adapter.
//!
//! # Namespaces and pub/sub
//!
//! Each peer lives in a namespace, by default its URL path. [`Peer::publish`] reaches the other
//! subscribers of a topic in the same namespace and never the publisher; [`Server::publish`]
//! reaches every namespace. A publish encodes the payload once and every recipient shares it.
//!
//! # Limits and defaults
//!
//! See [`Limits`]: `max_message_size` 16 MiB (1009 when passed), `max_frame_size` 16 MiB,
//! `max_buffered_bytes` 16 MiB per peer (1013 when passed), `handshake_timeout` 10 s,
//! `max_request_head_bytes` 16 KiB (`431` before any hook, for upgrades and SSE requests),
//! `idle_timeout` 120 s (a silent peer is dropped and its `close` hook runs), `ping_interval` 30 s,
//! `close_timeout` 2 s; off by default: `max_connections` (`503` past it),
//! `max_connections_per_ip` (`429`), `message_rate` (1008) and
//! [`ServerBuilder::allowed_origins`] (`403`). Invalid UTF-8 in a text message closes with 1007,
//! as soon as the first invalid byte arrives, even inside a fragment; a panicking hook with 1011,
//! a protocol violation with 1002.
//!
//! # Cancel safety
//!
//! Nothing a user calls blocks: [`Peer::send`] and [`Peer::publish`] queue and return.
//! [`Peer::wait_for_drain`] and [`Server::shutdown`] may be dropped at any time without effect on
//! the peers.
#![deny(missing_docs)]

#[cfg(feature = "admin")]
pub mod admin;
mod admission;
pub mod backplane;
pub mod client;
mod connection;
mod error;
mod hooks;
mod limits;
mod message;
mod observe;
mod peer;
pub mod proxy;
mod read_ahead;
mod registry;
mod request;
mod router;
mod runtime;
mod server;
mod socket;
pub mod sse;
mod stats;
mod sweep;
mod upgrade;
mod ws;

/// Internals for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::ws::fuzz::{Deflate, Event as WsEvent, Reader as WsReader};
}

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use http;

pub use admission::Admission;
pub use backplane::{
    Backplane, BackplaneError, BackplaneLink, BackplaneStats, ClusterPeer, Control, InstanceId,
    InterestChanges, InterestVersion, Relay, TopicHold,
};
pub use client::{Backoff, Client, ClientBuilder, ClientError};
pub use connection::PendingPeer;
pub use error::{close_code, Error, SendError};
pub use hooks::{CloseInfo, Hooks, Resolver};
pub use limits::{Limits, MessageRate};
pub use message::{Message, MessageError};
pub use peer::{Peer, PeerId, ReadyState, Transport};
pub use request::Request;
pub use router::{PathParams, Router};
pub use runtime::{AsyncTimer, BoxFuture, Runtime};
pub use server::{Handshake, Server, ServerBuilder};
pub use socket::SharedSocket;
#[cfg(feature = "metrics")]
pub use stats::describe_metrics;
pub use stats::Stats;
pub use upgrade::{is_websocket_upgrade, Accept, ReasonPhrase, Rejection};
pub use ws::deflate::Deflate;
