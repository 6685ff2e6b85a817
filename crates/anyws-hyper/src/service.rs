//! One request: the WebSocket upgrade or the fallback.

use anyws_core::sse::{sse_request_kind, SseOutcome};
use anyws_core::{is_websocket_upgrade, ReasonPhrase, Request, Server, SharedSocket};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, StreamExt};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use crate::io::Prefixed;
use crate::HyperIo;

/// A boxed error, as bodies report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of [`serve`](crate::serve): any body, boxed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Answers the ordinary HTTP requests that reach [`serve`](crate::serve).
///
/// Implemented for every `Fn(hyper::Request<Incoming>) -> impl Future<Output = Response<B>>`
/// that is `Clone + Send + Sync`, where `B` is any `http_body::Body<Data = Bytes>`.
pub trait Fallback: Clone + Send + Sync + 'static {
    /// Answers `request`.
    fn call(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
}

impl<F, Fut, B> Fallback for F
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn call(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let future = self(request);
        Box::pin(async move {
            future
                .await
                .map(|body| body.map_err(Into::into).boxed_unsync())
        })
    }
}

/// The default fallback: `404 Not Found` for every ordinary HTTP request.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl Fallback for NotFound {
    fn call(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        Box::pin(async move { not_found(request).await.map(boxed) })
    }
}

/// Answers `404 Not Found`, as the default fallback of [`serve`](crate::serve) does.
pub async fn not_found<B>(_request: hyper::Request<B>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Not Found")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

pub(crate) fn boxed(body: Full<Bytes>) -> Body {
    body.map_err(|never| match never {}).boxed_unsync()
}

/// Serves one request of a connection served by this crate, whose byte stream is a
/// `Prefixed<I>`; `socket_of` finds the socket under an `I`.
pub(crate) async fn handle<F: Fallback, I: Stream>(
    server: Server,
    fallback: F,
    remote: SocketAddr,
    request: hyper::Request<Incoming>,
    cut: &Arc<ConnectionCut>,
    socket_of: SocketOf<I>,
) -> Response<Body> {
    match serve_request::<_, I>(&server, request, Some(remote), Some((cut, socket_of))).await {
        Ok(response) => response,
        Err(request) => fallback.call(request).await,
    }
}

/// Tells the code serving a connection (HTTP/1.1), or an HTTP/2 stream's task, to drop it: an
/// SSE peer on it ended while the client had stopped reading its stream, so that the response
/// can never finish.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCut {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl ConnectionCut {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the connection or stream is to be dropped.
    pub(crate) fn poll_fired(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.fired.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once the connection is to be dropped.
    pub(crate) async fn fired(&self) {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }
}

/// Whether `upgrade` takes a request with this method and these headers: a WebSocket upgrade,
/// or a request of the SSE transport when `server` has it on.
///
/// An HTTP/2 WebSocket stream (an extended `CONNECT`, RFC 8441) is told by its `:protocol`,
/// which only the whole request carries: see [`is_websocket_connect`].
pub fn is_anyws_request(server: &Server, method: &http::Method, headers: &http::HeaderMap) -> bool {
    is_websocket_upgrade(headers)
        || (server.sse_enabled() && sse_request_kind(method, headers).is_some())
}

/// Whether `request` opens a WebSocket over HTTP/2: an extended `CONNECT` whose `:protocol`
/// is `websocket` (RFC 8441). hyper accepts those once `enable_connect_protocol` is set on its
/// HTTP/2 builder, as [`serve`](crate::serve) does.
pub fn is_websocket_connect<B>(request: &hyper::Request<B>) -> bool {
    request.method() == http::Method::CONNECT
        && request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// Handles one request inside any hyper service: a WebSocket upgrade, or, when the server has
/// the SSE transport on ([`ServerBuilder::sse`](anyws_core::ServerBuilder::sse)), a request of
/// that transport. Returns the response to send; an upgraded peer runs in a task of the
/// server's runtime. Any other request comes back unchanged as `Err`, and so does an SSE
/// request that the server's resolver does not resolve, so the application's own event streams
/// keep working.
///
/// The connection must be served with hyper's `with_upgrades()`. hyper's own head limit (about
/// 400 KiB by default; `http1::Builder::max_header_size` sets it) comes first; below it, the
/// server measures the parsed head against
/// [`Limits::max_request_head_bytes`](anyws_core::Limits::max_request_head_bytes) and answers
/// `431` past it.
///
/// ```no_run
/// # use hyper::{body::Incoming, Request, Response};
/// # use http_body_util::{BodyExt, Full};
/// # use bytes::Bytes;
/// async fn service(
///     server: anyws_core::Server,
///     request: Request<Incoming>,
/// ) -> Response<anyws_hyper::Body> {
///     match anyws_hyper::upgrade(&server, request, None).await {
///         Ok(anyws) => anyws,
///         Err(_request) => Response::new(
///             Full::new(Bytes::from("plain HTTP")).map_err(|e| match e {}).boxed_unsync(),
///         ),
///     }
/// }
/// ```
pub async fn upgrade<B>(
    server: &Server,
    request: hyper::Request<B>,
    remote_addr: Option<SocketAddr>,
) -> Result<Response<Body>, hyper::Request<B>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    // The stream under the upgrade is the server's own, of a type unknown here: the peer reads
    // and writes through hyper's `Upgraded`.
    serve_request::<_, Upgraded>(server, request, remote_addr, None).await
}

/// Finds the socket under a connection's stream, for peers whose senders write to it
/// themselves (see [`Listener::shared_socket`](crate::Listener::shared_socket)).
pub(crate) type SocketOf<I> = fn(&I) -> Option<Arc<dyn SharedSocket>>;

/// A byte stream hyper serves: what an upgraded connection is downcast to.
pub(crate) trait Stream:
    hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static
{
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static> Stream for T {}

/// [`upgrade`], for a connection served by this crate when `served` is given: an SSE peer
/// whose client stops reading its stream then costs the client its connection when the peer
/// ends.
///
/// An HTTP/1.1 upgrade of a connection whose stream is a `Prefixed<I>` runs its peer on that
/// stream itself, without hyper's boxed `Upgraded` around it (one allocation less per peer,
/// and no dynamic call per read and write), and on the socket under it when the listener
/// shares it; an HTTP/2 stream, or a stream of another type, runs on `Upgraded`.
async fn serve_request<B, I: Stream>(
    server: &Server,
    mut request: hyper::Request<B>,
    remote_addr: Option<SocketAddr>,
    served: Option<(&Arc<ConnectionCut>, SocketOf<I>)>,
) -> Result<Response<Body>, hyper::Request<B>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    if !is_websocket_upgrade(request.headers()) && !is_websocket_connect(&request) {
        if server.sse_enabled() && sse_request_kind(request.method(), request.headers()).is_some() {
            return sse(server, request, remote_addr, served.map(|(cut, _)| cut)).await;
        }
        return Err(request);
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (parts, _body) = request.into_parts();
    let (response, peer) = server
        .handshake(Request::new(parts, remote_addr))
        .await
        .into_parts();
    if let Some(peer) = peer {
        let socket_of = served.map(|(_, socket_of)| socket_of);
        // Combinators rather than an `async` block, which would keep the pending peer and the
        // upgraded stream a second time beside the peer's future for the life of the
        // connection.
        server
            .runtime()
            .spawn(Box::pin(on_upgrade.then(move |upgraded| match upgraded {
                Ok(upgraded) => Either::Left(match upgraded.downcast::<Prefixed<I>>() {
                    Ok(parts) => {
                        let (io, unread) = parts.io.into_parts();
                        let read_buf = if unread.is_empty() {
                            parts.read_buf
                        } else {
                            Bytes::from([&unread[..], &parts.read_buf[..]].concat())
                        };
                        let socket = socket_of.and_then(|socket_of| socket_of(&io));
                        Either::Left(peer.run_on_socket(HyperIo::new(io), read_buf, socket))
                    }
                    // Boxed: this future, with hyper's larger `Upgraded`, would otherwise set
                    // the size of every peer's task.
                    Err(upgraded) => Either::Right(Box::pin(peer.run(HyperIo::new(upgraded)))),
                }),
                Err(error) => {
                    tracing::debug!(target: "anyws", %error, "upgrade failed after the 101");
                    Either::Right(std::future::ready(()))
                }
            })));
    }
    Ok(full(response))
}

/// A request of the SSE transport.
async fn sse<B>(
    server: &Server,
    request: hyper::Request<B>,
    remote_addr: Option<SocketAddr>,
    cut: Option<&Arc<ConnectionCut>>,
) -> Result<Response<Body>, hyper::Request<B>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    match server.sse(Request::new(parts, remote_addr)).await {
        SseOutcome::Unresolved(request) => {
            Err(hyper::Request::from_parts(request.into_parts(), body))
        }
        SseOutcome::Respond(response) => Ok(full(response)),
        SseOutcome::Open(response) => {
            // Over HTTP/2 the stream's task is dropped, which resets the stream (`RST_STREAM`)
            // and leaves the connection's other streams be; over HTTP/1.1 the connection is.
            let stream = crate::serve::current_stream();
            if let Some(cut) = stream.as_ref().or(cut) {
                let abandoned = response.body().abandoned();
                let cut = cut.clone();
                server.runtime().spawn(Box::pin(async move {
                    if abandoned.await {
                        cut.fire();
                    }
                }));
            }
            Ok(response.map(|events| {
                StreamBody::new(events.map(|bytes| Ok::<_, BoxError>(Frame::data(bytes))))
                    .boxed_unsync()
            }))
        }
        SseOutcome::Post(post) => {
            let chunks = BodyStream::new(body).filter_map(|frame| {
                std::future::ready(match frame {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(_) => Some(Err(())),
                })
            });
            Ok(full(post.receive(chunks).await))
        }
        _ => Ok(full(Response::new(Bytes::new()))),
    }
}

/// A response with a complete body, with its reason phrase carried over to hyper.
fn full(response: Response<Bytes>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if let Some(reason) = parts.extensions.remove::<ReasonPhrase>() {
        if let Ok(reason) =
            hyper::ext::ReasonPhrase::try_from(Bytes::copy_from_slice(reason.as_bytes()))
        {
            parts.extensions.insert(reason);
        }
    }
    Response::from_parts(parts, boxed(Full::new(body)))
}
