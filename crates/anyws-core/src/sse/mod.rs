//! Server-sent events: the [`Event`] wire form, and the SSE transport that serves [`Hooks`]
//! to clients without WebSockets.
//!
//! [`Hooks`]: crate::Hooks

mod event;
mod transport;

pub(crate) use event::encode_data;
pub use event::{accepts_event_stream, last_event_id, response_headers, Event};
pub(crate) use transport::SseLink;
pub use transport::{
    sse_request_kind, PeerEvents, PeerPost, SseOutcome, SseRequestKind, PEER_ID_HEADER,
};
