use anyws_core::{is_websocket_upgrade, ReasonPhrase, Request, Server};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of [`serve`]: any body, boxed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Answers ordinary HTTP requests that reach [`serve`].
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

/// Answers `404 Not Found`, as the default fallback of [`serve`] does.
pub async fn not_found<B>(_request: hyper::Request<B>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Not Found")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

fn boxed(body: Full<Bytes>) -> Body {
    body.map_err(|never| match never {}).boxed_unsync()
}

/// Serves `server` on `listener`: WebSocket upgrades go to the server's hooks and every other
/// request to the fallback (by default `404`).
///
/// The returned [`Serve`] is a builder; `.await` it to run. It runs until
/// [`Serve::with_graceful_shutdown`]'s signal fires or [`Server::shutdown`] is called, then
/// stops accepting, closes every peer with 1001 and returns once they are gone.
///
/// ```no_run
/// # async fn run(server: anyws_core::Server) -> std::io::Result<()> {
/// use http_body_util::Full;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// anyws_tokio::serve(listener, server)
///     .fallback(|_request| async { http::Response::new(Full::new(bytes::Bytes::from("hello"))) })
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
pub fn serve(listener: TcpListener, server: Server) -> Serve<NotFound> {
    Serve {
        listener,
        server,
        fallback: NotFound,
        signal: None,
    }
}

/// A server being set up by [`serve`]; `.await` it to run.
#[must_use = "`Serve` does nothing until it is awaited"]
pub struct Serve<F> {
    listener: TcpListener,
    server: Server,
    fallback: F,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<F> fmt::Debug for Serve<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<F: Fallback> Serve<F> {
    /// Answers ordinary (non-WebSocket) HTTP requests with `fallback`.
    pub fn fallback<G: Fallback>(self, fallback: G) -> Serve<G> {
        Serve {
            listener: self.listener,
            server: self.server,
            fallback,
            signal: self.signal,
        }
    }

    /// Shuts down gracefully when `signal` resolves.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            listener,
            server,
            fallback,
            signal,
        } = self;
        let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(server.limits().handshake_timeout);
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) if is_per_connection(&error) => continue,
                    Err(_) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut signal => break,
                () = server.shutdown_started() => break,
            };
            let _ = stream.set_nodelay(true);
            let for_service = server.clone();
            let fallback = fallback.clone();
            let service = service_fn(move |request| {
                let server = for_service.clone();
                let fallback = fallback.clone();
                async move { Ok::<_, Infallible>(handle(server, fallback, remote, request).await) }
            });
            let connection = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let server = server.clone();
            tokio::spawn(async move {
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = server.shutdown_started() => {}
                }
                // Finish the request in flight, then close; idle connections close at once.
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(server.limits().close_timeout, connection).await;
            });
        }
        drop(listener);
        server.shutdown().await;
        Ok(())
    }
}

impl<F: Fallback> IntoFuture for Serve<F> {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn handle<F: Fallback>(
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
/// tokio task. Any other request comes back unchanged as `Err`.
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
///     match anyws_tokio::upgrade(&server, request, None).await {
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
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            // Unwrap hyper's boxed I/O when it is our own TCP stream: one less indirection and
            // allocation per connection.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    peer.run_with_prefix(parts.io.into_inner().compat(), parts.read_buf)
                        .await
                }
                Err(upgraded) => peer.run(TokioIo::new(upgraded).compat()).await,
            }
        });
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
