//! Serving an [`EventStream`] as a hyper response.

use anyws_core::sse::EventStream;
use futures_util::StreamExt;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::Body;

/// Turns an event stream, or a response around one (to change its status or add headers), into
/// a hyper response with the boxed [`Body`] that [`serve`](crate::serve) and its
/// [`Fallback`](crate::Fallback) use. A bare [`EventStream`] becomes `200 OK` with
/// `content-type: text/event-stream`, `cache-control: no-cache` and `x-accel-buffering: no`
/// (see [`EventStream::into_response`]).
///
/// The body ends when the stream does; when the client goes away hyper drops it, which closes
/// the stream's senders.
///
/// ```no_run
/// use anyws_core::sse::{Event, EventStream};
/// use anyws_core::Server;
///
/// // A fallback for `anyws_hyper::serve(listener, server).fallback(...)`: a tick every second.
/// async fn ticks(server: Server) -> http::Response<anyws_hyper::Body> {
///     let (events, stream) = EventStream::new(server.runtime().clone());
///     server.runtime().spawn(Box::pin(async move {
///         for i in 0.. {
///             // A real producer waits on a timer here, and selects on `events.closed()`.
///             if events.send(Event::data(format!("{i}"))).await.is_err() {
///                 break; // the client went away
///             }
///         }
///     }));
///     anyws_hyper::event_stream_response(stream)
/// }
/// ```
pub fn event_stream_response(response: impl Into<Response<EventStream>>) -> Response<Body> {
    response.into().map(event_stream_body)
}

/// The body of an event stream, without the response head; prefer [`event_stream_response`],
/// which also sets the headers.
pub fn event_stream_body(stream: EventStream) -> Body {
    StreamBody::new(stream.map(|chunk| Ok(Frame::data(chunk))))
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}
