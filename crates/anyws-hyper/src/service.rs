//! One request: the WebSocket upgrade or the fallback.

use anyws_core::{is_websocket_upgrade, ReasonPhrase, Request, Server};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

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

pub(crate) async fn handle<F: Fallback>(
    server: Server,
    fallback: F,
    remote: SocketAddr,
    request: hyper::Request<Incoming>,
) -> Response<Body> {
    match upgrade(&server, request, Some(remote)).await {
        Ok(response) => response.map(boxed),
        Err(request) => fallback.call(request).await,
    }
}

/// Handles one request inside any hyper service: when it is a WebSocket upgrade, runs the
/// handshake, returns the response to send, and runs the peer on the upgraded connection in a
/// task of the server's runtime. Any other request comes back unchanged as `Err`.
///
/// The connection must be served with hyper's `with_upgrades()`.
///
/// ```no_run
/// # use hyper::{body::Incoming, Request, Response};
/// # use http_body_util::Full;
/// # use bytes::Bytes;
/// async fn service(
///     server: anyws_core::Server,
///     request: Request<Incoming>,
/// ) -> Response<Full<Bytes>> {
///     match anyws_hyper::upgrade(&server, request, None).await {
///         Ok(websocket) => websocket,
///         Err(_request) => Response::new(Full::new(Bytes::from("plain HTTP"))),
///     }
/// }
/// ```
pub async fn upgrade<B>(
    server: &Server,
    mut request: hyper::Request<B>,
    remote_addr: Option<SocketAddr>,
) -> Result<Response<Full<Bytes>>, hyper::Request<B>> {
    if !is_websocket_upgrade(request.headers()) {
        return Err(request);
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (parts, _body) = request.into_parts();
    let (response, peer) = server
        .handshake(Request::new(parts, remote_addr))
        .await
        .into_parts();
    if let Some(peer) = peer {
        server.runtime().spawn(Box::pin(async move {
            if let Ok(upgraded) = on_upgrade.await {
                peer.run(HyperIo::new(upgraded)).await;
            }
        }));
    }
    let (mut parts, body) = response.into_parts();
    if let Some(reason) = parts.extensions.remove::<ReasonPhrase>() {
        if let Ok(reason) =
            hyper::ext::ReasonPhrase::try_from(Bytes::copy_from_slice(reason.as_bytes()))
        {
            parts.extensions.insert(reason);
        }
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}
