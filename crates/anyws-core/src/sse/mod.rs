//! Server-sent events: an [`Event`] type and its encoding, the `text/event-stream` helpers the
//! event stream and the SSE transport share, and [`EventStream`], a bounded stream of events
//! with keep-alive and backpressure for a handler to return.

mod event;
mod stream;

#[allow(unused_imports)]
pub(crate) use event::encode_data;
pub use event::{accepts_event_stream, last_event_id, response_headers, Event};
pub use stream::{
    Closed, EventSender, EventStream, EventStreamBuilder, TrySendError, DEFAULT_BUFFER,
    DEFAULT_KEEP_ALIVE,
};
