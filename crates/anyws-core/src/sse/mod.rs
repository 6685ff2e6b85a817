//! Server-sent events: the [`Event`] wire form, [`EventStream`] (a bounded stream of events
//! with keep-alive and backpressure for a handler to return), and the SSE transport that serves
//! [`Hooks`] to clients without WebSockets.
//!
//! # The SSE transport
//!
//! Turn it on with [`ServerBuilder::sse`](crate::ServerBuilder::sse); every adapter then serves
//! the same hooks over CrossWS's bidirectional SSE protocol, next to WebSockets, and the
//! `WebSocketSSE` client of the `crossws` npm package (or any `EventSource` plus `fetch`) talks
//! to it:
//!
//! - A `GET` with `Accept: text/event-stream` opens a peer. It goes through the resolver and the
//!   `upgrade` hook like a WebSocket upgrade, and a rejection is sent as it was built. The answer
//!   is an event stream that starts with `event: crossws-id` (the peer id, also in the
//!   `x-crossws-id` response header) and carries every message to the peer as
//!   `event: message`; binary messages are sent as `data:application/octet-stream;base64,…`.
//!   Text is sent as one `data:` line per line, and the client joins the lines with `\n`.
//! - A `POST` with `x-crossws-id: <id>` brings messages from the client, as text: each chunk of
//!   a chunked (streaming) body is one message, and a body with a `content-length` is one
//!   message. It too goes through the resolver and the `upgrade` hook, and must resolve to the
//!   peer's namespace. An unknown or missing id gets `400`, a message over
//!   [`Limits::max_message_size`](crate::Limits::max_message_size) `413`, text that is not
//!   UTF-8 `400`; none of them affect the peer.
//! - WebSocket and SSE peers share namespaces, topics and the peer list: a publish reaches both.
//!   [`Peer::transport`](crate::Peer::transport) tells them apart.
//! - Hooks run in order in a task per peer, as for WebSockets. A client that sends faster than
//!   its hooks handle, or than it reads its own output, is slowed down: its `POST` bodies are
//!   read no further until it catches up.
//! - The stream carries a keep-alive comment when nothing was sent for half of
//!   [`Limits::idle_timeout`](crate::Limits::idle_timeout) (15 s without one); an SSE peer that
//!   only listens is never idle.
//! - [`Peer::close`](crate::Peer::close) ends the stream once what is queued has been sent; the
//!   `close` hook gets the code it was given. When the client goes away, the `close` hook gets
//!   1005 (no status): an event stream has no close frame. A client that stopped reading and
//!   passes [`Limits::max_buffered_bytes`](crate::Limits::max_buffered_bytes) is closed with
//!   1013, like a WebSocket peer.
//!
//! A request the resolver does not resolve goes back to the application as an ordinary HTTP
//! request, so event streams of its own (say, with [`Event`]) keep working next to the
//! transport. With a single handler, every path resolves: route other event streams first, or
//! use a [`Router`](crate::Router).
//!
//! ```
//! use anyws_core::{Hooks, ServerBuilder};
//!
//! struct Chat;
//! impl Hooks for Chat {}
//!
//! let builder = ServerBuilder::new(Chat).sse(true);
//! // let server = builder.build(runtime); // an adapter serves both transports
//! # let _ = builder;
//! ```
//!
//! [`Hooks`]: crate::Hooks

mod event;
mod runner;
mod stream;
mod transport;

pub(crate) use event::encode_data;
pub use event::{accepts_event_stream, last_event_id, response_headers, Event};
pub use stream::{
    Closed, EventSender, EventStream, EventStreamBuilder, TrySendError, DEFAULT_BUFFER,
    DEFAULT_KEEP_ALIVE,
};
pub(crate) use transport::SseLink;
pub use transport::{
    sse_request_kind, PeerEvents, PeerPost, SseOutcome, SseRequestKind, PEER_ID_HEADER,
};
