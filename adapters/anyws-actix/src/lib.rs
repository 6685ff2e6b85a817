//! Run [anyws](https://docs.rs/anyws) hooks inside [actix-web](https://docs.rs/actix-web), on
//! actix's own request and payload types.
//!
//! ```no_run
//! use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
//! use anyws_core::{async_trait, Hooks, Message, Peer, Server, ServerBuilder};
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
//! async fn ws(server: web::Data<Server>, request: HttpRequest, payload: web::Payload) -> HttpResponse {
//!     anyws_actix::upgrade(&server, &request, payload).await
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let server = ServerBuilder::new(Echo).build(anyws_actix::runtime());
//!     HttpServer::new(move || {
//!         App::new()
//!             .app_data(web::Data::new(server.clone()))
//!             .route("/ws", web::get().to(ws))
//!     })
//!     .bind(("127.0.0.1", 3000))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! # How it runs
//!
//! actix-web hands a handler the request and its payload stream, not a socket. [`upgrade`] runs
//! the handshake, answers `101` with a streaming body, and runs the peer on a byte stream made of
//! the two: the payload for reading, the response body for writing (bounded, so a slow client
//! pushes back). The peer's task runs on the actix worker that accepted the connection.
//!
//! # TLS and HTTP/2
//!
//! actix-web serves TLS itself (`HttpServer::bind_rustls_0_23` with its `rustls-0_23` feature);
//! requests on such a listener read as `https://` and peers as `wss://`. actix-web has no
//! extended `CONNECT` (RFC 8441), so WebSockets there run over HTTP/1.1 only; a browser on an
//! HTTP/2 connection to the same origin opens a separate HTTP/1.1 connection for them.
//!
//! # Runtime
//!
//! [`ActixRuntime`] implements the core's [`Runtime`] with `actix_rt::spawn`
//! and actix's timers; build the server with [`runtime`]. Everything here runs inside an actix
//! system (`#[actix_web::main]`).
//!
//! # Limits
//!
//! The server's [`Limits`](anyws_core::Limits) apply; set actix's own
//! `HttpServer::client_request_timeout` to the handshake timeout you want.
//! [`max_request_head_bytes`](anyws_core::Limits::max_request_head_bytes) is checked on the head
//! actix parsed, before any hook runs (`431`); actix-http itself reads heads of up to 128 KiB
//! and 96 headers, a fixed limit no setting changes, and answers `431` past it, so a larger
//! limit has no effect here.
//!
//! Three actix-web settings matter for WebSockets and SSE:
//! - `HttpServer::client_disconnect_timeout(Duration::ZERO)`: after a peer's close handshake,
//!   actix otherwise keeps the TCP connection open for up to its default disconnect timeout,
//!   waiting for the client to close it.
//! - `HttpServer::h1_allow_half_closed(false)`, with the SSE transport: actix otherwise takes a
//!   client's EOF for a half-close and keeps an idle event stream (and its peer) until its next
//!   write fails, up to a keep-alive interval later.
//! - `TCP_NODELAY`: actix leaves Nagle's algorithm on; turn it off in `HttpServer::on_connect` by
//!   downcasting the connection to `actix_web::rt::net::TcpStream` and calling
//!   `set_nodelay(true)`.
//!
//! # Server-sent events
//!
//! [`event_stream_response`] serves the core's [`EventStream`] as an actix `HttpResponse`
//! with a streaming body.
//!
//! A rejection's custom reason phrase is not sent: actix-web writes the canonical phrase of the
//! status.
#![deny(missing_docs)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anyws_core::sse::{sse_request_kind, EventStream, SseOutcome};
use anyws_core::{AsyncTimer, BoxFuture, Request, Runtime, Server};
use bytes::Bytes;
use futures_channel::mpsc;
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::StreamExt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

/// Outgoing chunks that may wait for actix to write them before the peer's writes wait too.
const BODY_CHUNKS_IN_FLIGHT: usize = 16;

/// The actix implementation of the core's [`Runtime`]: `actix_rt::spawn` and actix's timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActixRuntime;

/// The actix runtime as the core takes it.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(ActixRuntime)
}

impl Runtime for ActixRuntime {
    fn spawn(&self, future: BoxFuture) {
        actix_rt::spawn(future);
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Timer {
            sleep: actix_rt::time::sleep_until(deadline.into()),
        })
    }
}

pin_project_lite::pin_project! {
    #[derive(Debug)]
    struct Timer {
        #[pin]
        sleep: actix_rt::time::Sleep,
    }
}

impl AsyncTimer for Timer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.project().sleep.reset(deadline.into());
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

/// Handles a WebSocket upgrade inside an actix-web handler: runs the handshake with `server` and
/// returns the response, `101` with the peer running behind it, or the rejection.
///
/// When the server has the SSE transport on
/// ([`ServerBuilder::sse`](anyws_core::ServerBuilder::sse)), it also takes that transport's
/// requests: a `GET` with `Accept: text/event-stream` gets the peer's event stream, a `POST` with
/// `x-crossws-id` delivers messages. Other requests get `426 Upgrade Required`; an SSE request
/// the server's resolver does not resolve gets `404`.
pub async fn upgrade(
    server: &Server,
    request: &HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let Some(parts) = parts(request) else {
        return HttpResponse::BadRequest().body("malformed request");
    };
    if !anyws_core::is_websocket_upgrade(&parts.headers) {
        if server.sse_enabled() && sse_request_kind(&parts.method, &parts.headers).is_some() {
            return sse(server, Request::new(parts, request.peer_addr()), payload).await;
        }
        return HttpResponse::build(StatusCode::UPGRADE_REQUIRED)
            .insert_header(("upgrade", "websocket"))
            .body("expected a WebSocket upgrade");
    }
    let remote = request.peer_addr();
    let (response, peer) = server
        .handshake(Request::new(parts, remote))
        .await
        .into_parts();
    let (head, body) = response.into_parts();
    let mut builder = response_builder(&head, peer.is_some());
    match peer {
        None => builder.body(body),
        Some(peer) => {
            let (sender, receiver) = mpsc::channel(BODY_CHUNKS_IN_FLIGHT);
            let io = ActixIo {
                payload,
                pending: Bytes::new(),
                sender,
            };
            actix_rt::spawn(peer.run(io));
            builder
                .upgrade("websocket")
                .streaming(receiver.map(Ok::<_, actix_web::Error>))
        }
    }
}

/// Whether an actix request may belong to the SSE transport of `server` (a `GET` accepting an
/// event stream, or a `POST`); use it in a route guard next to the `Upgrade` header check.
pub fn is_sse_request(server: &Server, head: &actix_web::dev::RequestHead) -> bool {
    if !server.sse_enabled() {
        return false;
    }
    let mut headers = http::HeaderMap::new();
    for name in ["accept", "x-crossws-id"] {
        for value in head.headers().get_all(name) {
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name, value);
            }
        }
    }
    let method = http::Method::from_bytes(head.method.as_str().as_bytes()).unwrap_or_default();
    sse_request_kind(&method, &headers).is_some()
}

/// A request of the SSE transport.
async fn sse(server: &Server, request: Request, payload: web::Payload) -> HttpResponse {
    match server.sse(request).await {
        SseOutcome::Open(response) => {
            let (head, events) = response.into_parts();
            response_builder(&head, true).streaming(events.map(Ok::<_, actix_web::Error>))
        }
        SseOutcome::Post(post) => {
            let (head, body) = post.receive(payload).await.into_parts();
            response_builder(&head, false).body(body)
        }
        SseOutcome::Respond(response) => {
            let (head, body) = response.into_parts();
            response_builder(&head, false).body(body)
        }
        _ => HttpResponse::NotFound().body("Not Found"),
    }
}

/// An actix response builder with the status and headers of `head`; `upgrade` and
/// `connection` are left to actix when `managed`. actix writes no `connection` header of a
/// response itself, so `Connection: close` (on a `431`) closes the connection after it instead.
fn response_builder(head: &http::response::Parts, managed: bool) -> actix_web::HttpResponseBuilder {
    let status =
        StatusCode::from_u16(head.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    if !managed
        && head
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v == "close")
    {
        builder.force_close();
    }
    for (name, value) in &head.headers {
        let name = name.as_str();
        if managed && (name == "upgrade" || name == "connection") {
            continue;
        }
        builder.append_header((name, value.as_bytes()));
    }
    builder
}

/// The request head as `http` 1.x parts.
fn parts(request: &HttpRequest) -> Option<http::request::Parts> {
    let mut builder = http::Request::builder()
        .method(request.method().as_str())
        .uri(request.uri().to_string())
        .version(version(request.version()));
    for (name, value) in request.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let mut parts = builder.body(()).ok()?.into_parts().0;
    if request.app_config().secure() {
        // Served over TLS (actix-web's `bind_rustls_0_23` and the like): the URL reads `https://`.
        parts.extensions.insert(http::uri::Scheme::HTTPS);
    }
    Some(parts)
}

/// An actix (`http` 0.2) version as an `http` 1.x one.
fn version(version: actix_web::http::Version) -> http::Version {
    use actix_web::http::Version as Actix;
    match version {
        Actix::HTTP_09 => http::Version::HTTP_09,
        Actix::HTTP_10 => http::Version::HTTP_10,
        Actix::HTTP_2 => http::Version::HTTP_2,
        Actix::HTTP_3 => http::Version::HTTP_3,
        _ => http::Version::HTTP_11,
    }
}

/// The upgraded connection as a byte stream: actix's payload in, the response body out.
struct ActixIo {
    payload: web::Payload,
    pending: Bytes,
    sender: mpsc::Sender<Bytes>,
}

impl AsyncRead for ActixIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.payload).poll_next(cx)) {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error.to_string()))),
                None => return Poll::Ready(Ok(0)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ActixIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if ready!(self.sender.poll_ready(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match self.sender.start_send(Bytes::copy_from_slice(buf)) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sender.close_channel();
        Poll::Ready(Ok(()))
    }
}

/// Turns an event stream, or a response around one (to change its status or add headers), into
/// an actix `HttpResponse` with a streaming body. A bare [`EventStream`] becomes `200 OK` with
/// `content-type: text/event-stream`, `cache-control: no-cache` and `x-accel-buffering: no`.
///
/// When the client goes away, actix drops the body, which closes the stream's senders.
///
/// ```no_run
/// use actix_web::{web, HttpResponse};
/// use anyws_core::sse::{Event, EventStream};
///
/// async fn ticks() -> HttpResponse {
///     let (events, stream) = EventStream::new(anyws_actix::runtime());
///     actix_web::rt::spawn(async move {
///         for i in 0.. {
///             actix_web::rt::time::sleep(std::time::Duration::from_secs(1)).await;
///             if events.send(Event::data(i.to_string()).event("tick")).await.is_err() {
///                 break; // the client went away
///             }
///         }
///     });
///     anyws_actix::event_stream_response(stream)
/// }
/// # let _ = web::get().to(ticks);
/// ```
pub fn event_stream_response(response: impl Into<http::Response<EventStream>>) -> HttpResponse {
    let (head, stream) = response.into().into_parts();
    let status =
        StatusCode::from_u16(head.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (name, value) in &head.headers {
        builder.append_header((name.as_str(), value.as_bytes()));
    }
    builder.streaming(stream.map(Ok::<_, actix_web::Error>))
}
