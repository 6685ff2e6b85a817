//! Mount [anyws](https://docs.rs/anyws) hooks in an [axum](https://docs.rs/axum) `Router`, next
//! to ordinary routes.
//!
//! Two ways, both on the server's runtime (tokio, as axum's):
//!
//! - [`WebSocketUpgrade`], an extractor: a handler runs axum's extractors first (state,
//!   headers, an auth check), then hands the request to anyws, optionally with values for the
//!   hooks to read from the request's extensions.
//! - [`layer`]: WebSocket upgrades on any path go to anyws, every other request to the router.
//!
//! A handler returns server-sent events as an [`EventStreamResponse`] around the core's
//! [`EventStream`].
//!
//! ```
//! use anyws_axum::WebSocketUpgrade;
//! use anyws_core::{async_trait, Hooks, Message, Peer, Server};
//! use axum::{extract::State, routing::get, Router};
//! use futures_util::{SinkExt, StreamExt};
//!
//! #[derive(Clone)]
//! struct User(String);
//!
//! struct Greeter;
//!
//! #[async_trait]
//! impl Hooks for Greeter {
//!     async fn message(&self, peer: &Peer, message: Message) {
//!         let user = peer.request().extensions().get::<User>().map_or("?", |u| &u.0);
//!         let _ = peer.send(format!("{user}: {}", message.text().unwrap_or("")));
//!     }
//! }
//!
//! async fn ws(State(server): State<Server>, upgrade: WebSocketUpgrade) -> axum::response::Response {
//!     // Any extractor or check can run here, before the peer exists.
//!     upgrade.extension(User("ada".into())).on(&server).await
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = anyws_tokio::server(Greeter);
//!     let app = Router::new()
//!         .route("/", get(|| async { "hello" }))
//!         .route("/ws", get(ws))
//!         .with_state(server.clone());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("ws://{}/ws", listener.local_addr()?);
//!     tokio::spawn(async move { axum::serve(listener, app).await });
//!
//!     let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
//!     ws.send("hi".into()).await?;
//!     assert_eq!(ws.next().await.unwrap()?.into_text()?, "ada: hi");
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]

use anyws_core::sse::EventStream;
use anyws_core::{is_websocket_upgrade, Server};
use anyws_hyper::{RemoteAddr, WebSocketLayer, WebSocketService};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// An axum extractor for a WebSocket upgrade request; [`WebSocketUpgrade::on`] hands it to an
/// anyws server. Requests that are not upgrades are refused with `426 Upgrade Required`.
///
/// Over HTTP/2 a WebSocket opens with an extended `CONNECT` (RFC 8441), which the extractor
/// takes as well: route it with `axum::routing::any` rather than `get`, and serve with HTTP/2's
/// extended CONNECT enabled (axum's `serve` does).
#[derive(Debug)]
pub struct WebSocketUpgrade {
    request: Request,
}

impl<S: Send + Sync> FromRequest<S> for WebSocketUpgrade {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if is_websocket_upgrade(request.headers()) || anyws_hyper::is_websocket_connect(&request) {
            Ok(Self { request })
        } else {
            Err((StatusCode::UPGRADE_REQUIRED, "expected a WebSocket upgrade").into_response())
        }
    }
}

impl WebSocketUpgrade {
    /// Attaches `value` to the request; the `upgrade` hook and every later hook read it with
    /// `request.extensions().get::<T>()` (through `peer.request()` once the peer exists).
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.request.extensions_mut().insert(value);
        self
    }

    /// Runs the handshake with `server`: the response to return from the handler, and the peer
    /// on the upgraded connection when the `upgrade` hook accepts.
    pub async fn on(self, server: &Server) -> Response {
        let remote = remote_addr(self.request.extensions());
        match anyws_hyper::upgrade(server, self.request, remote).await {
            Ok(response) => response.map(Body::new),
            Err(_) => (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response(),
        }
    }
}

fn remote_addr(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| extensions.get::<RemoteAddr>().map(|r| r.0))
}

/// A layer for an axum `Router`: WebSocket upgrades on any path go to `server`, every other
/// request to the router. The client's address comes from axum's `ConnectInfo<SocketAddr>`
/// (serve with `into_make_service_with_connect_info::<SocketAddr>()`).
///
/// ```no_run
/// # async fn run(server: anyws_core::Server) {
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(anyws_axum::layer(server));
/// # let _: axum::Router = app;
/// # }
/// ```
pub fn layer(server: Server) -> ConnectInfoLayer<WebSocketLayer> {
    ConnectInfoLayer(WebSocketLayer::new(server))
}

/// Copies axum's `ConnectInfo<SocketAddr>` into anyws's [`RemoteAddr`] before the wrapped layer.
#[derive(Clone, Debug)]
pub struct ConnectInfoLayer<L>(L);

impl<L: Layer<S>, S> Layer<S> for ConnectInfoLayer<L> {
    type Service = ConnectInfoService<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectInfoService(self.0.layer(inner))
    }
}

/// The service of [`ConnectInfoLayer`].
#[derive(Clone, Debug)]
pub struct ConnectInfoService<S>(S);

impl<S, B> Service<axum::http::Request<B>> for ConnectInfoService<S>
where
    S: Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> S::Future {
        if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
            let addr = *addr;
            request.extensions_mut().insert(RemoteAddr(addr));
        }
        self.0.call(request)
    }
}

/// The service [`layer`] wraps a router in.
pub type LayeredService<S> = ConnectInfoService<WebSocketService<S>>;

/// An [`EventStream`] of server-sent events as an axum response: return it from a handler.
///
/// The answer is `200 OK` with `content-type: text/event-stream`, `cache-control: no-cache` and
/// `x-accel-buffering: no`; wrap a `Response<EventStream>` instead to change the status or add
/// headers. When the client goes away, axum drops the body and the stream's senders are closed.
///
/// ```
/// use anyws_axum::EventStreamResponse;
/// use anyws_core::sse::{Event, EventStream};
/// use anyws_core::Server;
/// use axum::extract::State;
///
/// async fn ticks(State(server): State<Server>) -> EventStreamResponse {
///     let (events, stream) = EventStream::new(server.runtime().clone());
///     tokio::spawn(async move {
///         let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
///         for i in 0.. {
///             tokio::select! {
///                 _ = interval.tick() => {}
///                 () = events.closed() => break, // the client went away
///             }
///             if events.send(Event::data(i.to_string()).event("tick")).await.is_err() {
///                 break;
///             }
///         }
///     });
///     EventStreamResponse::from(stream)
/// }
///
/// let app: axum::Router<Server> = axum::Router::new().route("/ticks", axum::routing::get(ticks));
/// ```
#[derive(Debug)]
pub struct EventStreamResponse(pub http::Response<EventStream>);

impl From<EventStream> for EventStreamResponse {
    fn from(stream: EventStream) -> Self {
        Self(stream.into_response())
    }
}

impl From<http::Response<EventStream>> for EventStreamResponse {
    fn from(response: http::Response<EventStream>) -> Self {
        Self(response)
    }
}

impl IntoResponse for EventStreamResponse {
    fn into_response(self) -> Response {
        self.0
            .map(|stream| Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>)))
    }
}
