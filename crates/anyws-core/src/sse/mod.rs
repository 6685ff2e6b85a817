//! Server-sent events: an [`Event`] type and its encoding, and the `text/event-stream`
//! helpers the event stream and the SSE transport share.

mod event;

#[allow(unused_imports)]
pub(crate) use event::encode_data;
pub use event::{accepts_event_stream, last_event_id, response_headers, Event};
