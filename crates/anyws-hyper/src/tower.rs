//! A tower [`Layer`] and [`Service`] that answer WebSocket upgrades with anyws and hand every
//! other request to the service inside.

use anyws_core::Server;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Either;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use crate::{is_anyws_request, is_websocket_connect, Body};

/// Wraps a service so that WebSocket upgrades, on any path, go to an anyws [`Server`] (and the
/// SSE transport's requests too, when the server has it on) and every other request goes on to
/// the wrapped service. Works in any tower stack (axum's
/// `Router::layer`, tonic, hyper-util's `TowerToHyperService`, …) whose requests carry hyper's
/// upgrade extension, as requests served by hyper with `with_upgrades()` do.
///
/// The peer's remote address comes from a [`RemoteAddr`] extension on the request, when an outer
/// layer or the accept loop put one there.
#[derive(Clone, Debug)]
pub struct WebSocketLayer {
    server: Server,
}

impl WebSocketLayer {
    /// Sends WebSocket upgrades to `server`.
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

impl<S> Layer<S> for WebSocketLayer {
    type Service = WebSocketService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebSocketService {
            server: self.server.clone(),
            inner,
        }
    }
}

/// The client's address, as an extension on the request, for services that know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// The service [`WebSocketLayer`] makes: upgrades to anyws, everything else to `inner`.
#[derive(Clone, Debug)]
pub struct WebSocketService<S> {
    server: Server,
    inner: S,
}

impl<S, B, B2> Service<Request<B>> for WebSocketService<S>
where
    S: Service<Request<B>, Response = Response<B2>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B2: 'static,
{
    type Response = Response<Either<Body, B2>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_anyws_request(&self.server, request.method(), request.headers())
            && !is_websocket_connect(&request)
        {
            let future = self.inner.call(request);
            return Box::pin(async move { Ok(future.await?.map(Either::Right)) });
        }
        let server = self.server.clone();
        let remote = remote_addr(&request);
        // The inner service was made ready but is not called; a clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            match crate::upgrade(&server, request, remote).await {
                Ok(response) => Ok(response.map(Either::Left)),
                Err(request) => Ok(inner.call(request).await?.map(Either::Right)),
            }
        })
    }
}

fn remote_addr<B>(request: &Request<B>) -> Option<SocketAddr> {
    request.extensions().get::<RemoteAddr>().map(|r| r.0)
}
