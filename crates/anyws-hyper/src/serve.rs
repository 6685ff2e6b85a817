//! Serving a listener: accept, upgrade or fall back, shut down gracefully.

use crate::h1::{self, First};
use crate::io::HyperIo;
use anyws_core::{Request, Server, SharedSocket};
use bytes::Bytes;
use futures_util::future::{select, AbortHandle, Abortable, Either};
use futures_util::task::AtomicWaker;
use futures_util::AsyncWriteExt;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::service::{handle, ConnectionCut, Fallback, NotFound, SocketOf};
use crate::timer::sleep_until;
use crate::RuntimeTimer;

/// A source of connections for [`serve`]: each runtime adapter wraps its TCP listener in one,
/// and its TLS listener.
pub trait Listener: Send + 'static {
    /// A connection, as hyper reads and writes it.
    type Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;

    /// An accepted connection on its way to being ready: at once for plain TCP, after the TLS
    /// handshake for TLS. It runs in the connection's own task, within the server's
    /// [`handshake_timeout`](anyws_core::Limits::handshake_timeout), so a client that stalls
    /// there holds up nobody else.
    type Connecting: Future<Output = io::Result<Self::Io>> + Send + 'static;

    /// Whether the connections are encrypted: requests on them read as `https://` (and peers'
    /// URLs as `wss://`), through [`http::uri::Scheme::HTTPS`] in the request's extensions.
    const SECURE: bool = false;

    /// Accepts the next connection and the client's address.
    fn accept(&mut self)
        -> impl Future<Output = io::Result<(Self::Connecting, SocketAddr)>> + Send;

    /// The socket under `io`, shared, when `io` writes to it unchanged (plain TCP, not TLS):
    /// a WebSocket peer upgraded on the connection then gets a message sent or published to
    /// it written to the socket by the sender while the peer has nothing else to write,
    /// without a wake-up of its task (see
    /// [`PendingPeer::run_on_socket`](anyws_core::PendingPeer::run_on_socket)). `None`, the
    /// default, leaves every write to the peer's task.
    fn shared_socket(io: &Self::Io) -> Option<Arc<dyn SharedSocket>> {
        let _ = io;
        None
    }
}

/// Serves `server` on `listener`: WebSocket upgrades go to the server's hooks and every other
/// request to the fallback (by default `404`).
///
/// The returned [`Serve`] is a builder; `.await` it to run. It runs until
/// [`Serve::with_graceful_shutdown`]'s signal fires or [`Server::shutdown`] is called, then
/// stops accepting, closes every peer with 1001 and returns once they are gone. The accept loop,
/// connections and peers run as tasks of the server's runtime, wherever the `Serve` is awaited
/// (dropping it stops the accept loop); the handshake timeout is
/// [`Limits::handshake_timeout`](anyws_core::Limits::handshake_timeout), and a request head
/// larger than [`Limits::max_request_head_bytes`](anyws_core::Limits::max_request_head_bytes)
/// gets `431` (see [`serve_connection`]). While the accept task waits its turn on a busy
/// runtime, new connections wait in the listener's backlog: bind it with room for the bursts
/// you expect (the runtimes' `bind` asks for 128; past it the kernel drops a client's SYN, and
/// the client tries again only a second or more later).
pub fn serve<L: Listener>(listener: L, server: Server) -> Serve<L, NotFound> {
    Serve {
        listener,
        server,
        fallback: NotFound,
        signal: None,
    }
}

/// A server being set up by [`serve`]; `.await` it to run.
#[must_use = "`Serve` does nothing until it is awaited"]
pub struct Serve<L, F> {
    listener: L,
    server: Server,
    fallback: F,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<L, F> fmt::Debug for Serve<L, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<L: Listener, F: Fallback> Serve<L, F> {
    /// Answers ordinary (non-WebSocket) HTTP requests with `fallback`.
    pub fn fallback<G: Fallback>(self, fallback: G) -> Serve<L, G> {
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
            mut listener,
            server,
            fallback,
            signal,
        } = self;
        let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        let runtime = server.runtime().clone();
        loop {
            let accepted = {
                let shutdown = pin!(server.shutdown_started());
                let stop = select(signal.as_mut(), shutdown);
                match select(pin!(listener.accept()), stop).await {
                    Either::Left((accepted, _)) => accepted,
                    Either::Right(_) => break,
                }
            };
            let (connecting, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::warn!(target: "anyws", %error, "accept failed, backing off 50 ms");
                    // Out of file descriptors or similar: back off instead of spinning.
                    sleep_until(&*runtime, runtime.now() + Duration::from_millis(50)).await;
                    continue;
                }
            };
            runtime.spawn(Box::pin(connect(
                connecting,
                remote,
                server.clone(),
                fallback.clone(),
                L::SECURE,
                L::shared_socket,
            )));
        }
        drop(listener);
        server.shutdown().await;
        Ok(())
    }
}

impl<L: Listener, F: Fallback> IntoFuture for Serve<L, F> {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(Running {
            serve: Some(self),
            task: None,
        })
    }
}

/// A [`Serve`] being awaited. The accept loop runs as a task of the server's runtime, started
/// on the first poll, so that it accepts on the runtime's threads, beside the connections it
/// spawns: awaited on a thread of its own (a `block_on`), it would hand every connection over
/// to another thread, at the cost of a wake-up across threads each. This future waits for the
/// loop's result; dropping it stops the loop.
struct Running<L, F> {
    serve: Option<Serve<L, F>>,
    task: Option<(Arc<Outcome>, AbortHandle)>,
}

// Nothing in it is pinned: `serve` moves into the task whole.
impl<L, F> Unpin for Running<L, F> {}

/// What the accept loop's task hands to the [`Running`] future that waits for it.
#[derive(Default)]
struct Outcome {
    result: Mutex<Option<io::Result<()>>>,
    /// The task is over, with its result or dropped by its runtime.
    ended: AtomicBool,
    waker: AtomicWaker,
}

/// Marks the task over however it ends.
struct Ended(Arc<Outcome>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

impl<L: Listener, F: Fallback> Future for Running<L, F> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(serve) = this.serve.take() {
            let outcome = Arc::new(Outcome::default());
            let (abort, registration) = AbortHandle::new_pair();
            let runtime = serve.server.runtime().clone();
            let ended = Ended(outcome.clone());
            runtime.spawn(Box::pin(async move {
                if let Ok(result) = Abortable::new(serve.run(), registration).await {
                    *ended
                        .0
                        .result
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(result);
                }
                drop(ended);
            }));
            this.task = Some((outcome, abort));
        }
        let Some((outcome, _)) = &this.task else {
            return Poll::Pending;
        };
        outcome.waker.register(cx.waker());
        if !outcome.ended.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let result = outcome
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Poll::Ready(result.unwrap_or_else(|| {
            Err(io::Error::other(
                "the server's runtime dropped the accept loop's task",
            ))
        }))
    }
}

impl<L, F> Drop for Running<L, F> {
    fn drop(&mut self) {
        if let Some((_, abort)) = &self.task {
            abort.abort();
        }
    }
}

/// Waits for an accepted connection to be ready (its TLS handshake), within the handshake
/// timeout, then serves it.
async fn connect<C, I, F>(
    connecting: C,
    remote: SocketAddr,
    server: Server,
    fallback: F,
    secure: bool,
    socket_of: SocketOf<I>,
) where
    C: Future<Output = io::Result<I>> + Send,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fallback,
{
    let runtime = server.runtime().clone();
    let deadline = runtime.now() + server.limits().handshake_timeout;
    let io = match select(pin!(connecting), pin!(sleep_until(&*runtime, deadline))).await {
        Either::Left((Ok(io), _)) => io,
        Either::Left((Err(error), _)) => {
            tracing::debug!(target: "anyws", %error, %remote, "connection handshake failed");
            return;
        }
        Either::Right(_) => {
            tracing::debug!(target: "anyws", %remote, "connection handshake timed out");
            return;
        }
    };
    run_connection(io, remote, server, fallback, secure, socket_of).await;
}

/// Serves one connection the application accepted itself: WebSocket upgrades go to `server`,
/// every other request to `fallback`, with the server's handshake timeout on the request head.
/// hyper answers `431` to a head (request line and headers, counted as received) larger than
/// [`Limits::max_request_head_bytes`](anyws_core::Limits::max_request_head_bytes), as soon as
/// that many bytes arrived without its end, for every request of the connection. Resolves when
/// the connection is done (an upgraded peer runs on in a task of its own), when an SSE peer on
/// it ended while its client had stopped reading the stream (the connection is dropped), or
/// soon after [`Server::shutdown`] begins.
///
/// When the connection's first request is a WebSocket upgrade (`GET`, HTTP/1.1, no body), it is
/// parsed and answered here rather than by hyper, which is made only for the connections that
/// need it: its `101` carries the handshake's headers alone (no `Date`), and a refusal of it
/// ends the connection (`Connection: close`).
pub async fn serve_connection<I, F>(io: I, remote: SocketAddr, server: Server, fallback: F)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fallback,
{
    run_connection(io, remote, server, fallback, false, |_| None).await;
}

/// [`serve_connection`] for a connection the application accepted and decrypted itself (TLS):
/// its requests read as `https://` and its peers' URLs as `wss://`.
pub async fn serve_secure_connection<I, F>(io: I, remote: SocketAddr, server: Server, fallback: F)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fallback,
{
    run_connection(io, remote, server, fallback, true, |_| None).await;
}

async fn run_connection<I, F>(
    io: I,
    remote: SocketAddr,
    server: Server,
    fallback: F,
    secure: bool,
    socket_of: SocketOf<I>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fallback,
{
    let runtime = server.runtime().clone();
    // HTTP/2 by its connection preface (prior knowledge in cleartext; what a client that
    // negotiated `h2` over TLS sends first), HTTP/1.1 otherwise, and a WebSocket upgrade
    // answered without hyper. A client that sends nothing gets the handshake timeout, and a
    // connection without a whole first request is dropped when the server shuts down.
    let deadline = runtime.now() + server.limits().handshake_timeout;
    let mut shutdown = pin!(server.shutdown_started());
    let first = match select(
        pin!(h1::read_first(io, server.limits().max_request_head_bytes)),
        select(pin!(sleep_until(&*runtime, deadline)), shutdown.as_mut()),
    )
    .await
    {
        Either::Left((Some(first), _)) => first,
        Either::Left((None, _)) | Either::Right(_) => return,
    };
    let (io, http2) = match first {
        First::Http2(io) => (io, true),
        First::Http1(io) => (io, false),
        First::Upgrade {
            io,
            mut parts,
            rest,
        } => {
            if secure {
                parts.extensions.insert(http::uri::Scheme::HTTPS);
            }
            let request = Request::new(parts, Some(remote));
            answer_upgrade(io, request, rest, &server, socket_of, shutdown).await;
            return;
        }
    };
    let for_service = server.clone();
    let cut = Arc::new(ConnectionCut::default());
    let for_requests = cut.clone();
    let service = service_fn(move |request| {
        let server = for_service.clone();
        let fallback = fallback.clone();
        let cut = for_requests.clone();
        async move {
            let mut request = request;
            if secure {
                request.extensions_mut().insert(http::uri::Scheme::HTTPS);
            }
            Ok::<_, Infallible>(
                handle::<_, I>(server, fallback, remote, request, &cut, socket_of).await,
            )
        }
    });
    if http2 {
        let mut http = http2::Builder::new(RuntimeExecutor(runtime.clone()));
        http.timer(RuntimeTimer(runtime.clone()))
            .enable_connect_protocol()
            .max_concurrent_streams(server.limits().max_concurrent_streams)
            .max_header_list_size(
                u32::try_from(server.limits().max_request_head_bytes).unwrap_or(u32::MAX),
            );
        let connection = pin!(http.serve_connection(io, service));
        // Each stream's response is its own; a stalled SSE stream is held back by HTTP/2's flow
        // control rather than by the connection, so the connection is never cut for one.
        drive(connection, &server, None, shutdown).await;
    } else {
        let mut http = http1::Builder::new();
        http.timer(RuntimeTimer(runtime.clone()))
            .header_read_timeout(server.limits().handshake_timeout);
        limit_head(&mut http, server.limits().max_request_head_bytes);
        let connection = pin!(http.serve_connection(io, service).with_upgrades());
        drive(connection, &server, Some((&cut, remote)), shutdown).await;
    }
}

/// Answers a connection's first request, a WebSocket upgrade read by [`h1::read_first`]: the
/// handshake, then the `101` written here and the peer started in a task of its own on the
/// stream (with `rest`, what the client sent after the head), or the refusal written and the
/// connection closed. Once the server shuts down, a handshake still in its hooks has the close
/// timeout to finish, as a request in flight on hyper's connections has.
async fn answer_upgrade<I>(
    mut io: I,
    request: Request,
    rest: Bytes,
    server: &Server,
    socket_of: SocketOf<I>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let runtime = server.runtime().clone();
    let stopped = pin!(async {
        shutdown.await;
        let deadline = runtime.now() + server.limits().close_timeout;
        sleep_until(&*runtime, deadline).await;
    });
    let (response, peer) = match select(pin!(server.handshake(request)), stopped).await {
        Either::Left((handshake, _)) => handshake.into_parts(),
        Either::Right(_) => return,
    };
    let mut head = Vec::with_capacity(256);
    h1::encode_response(&response, &mut head);
    drop(response);
    // Flushed: a TLS stream holds what it encrypted until then.
    let mut writer = HyperIo::new(&mut io);
    if writer.write_all(&head).await.is_err() || writer.flush().await.is_err() {
        return;
    }
    match peer {
        Some(peer) => {
            let socket = socket_of(&io);
            runtime.spawn(Box::pin(peer.run_on_socket(HyperIo::new(io), rest, socket)));
        }
        None => {
            let _ = writer.close().await;
        }
    }
}

/// A served connection, HTTP/1.1 or HTTP/2: both shut down gracefully (HTTP/2 with a `GOAWAY`).
trait Connection: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Connection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S> Connection for hyper::server::conn::http2::Connection<I, S, RuntimeExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RuntimeExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// Runs `connection` until it ends, an SSE peer on it is cut off (`cut`, HTTP/1.1 only), or
/// the server shuts down (`shutdown`, the connection's wait for
/// [`Server::shutdown_started`]): then it finishes what is in flight and closes, within the
/// close timeout.
async fn drive<C: Connection>(
    mut connection: Pin<&mut C>,
    server: &Server,
    cut: Option<(&Arc<ConnectionCut>, SocketAddr)>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) {
    let runtime = server.runtime().clone();
    // An SSE peer whose client stopped reading has ended: its response can never finish, so the
    // connection goes too.
    let cut_off = pin!(async {
        match cut {
            Some((cut, _)) => cut.fired().await,
            None => std::future::pending().await,
        }
    });
    match select(connection.as_mut(), select(shutdown, cut_off)).await {
        Either::Left((Err(error), _)) if error.is_parse_too_large() => {
            // hyper answered `431` itself, before any upgrade could be looked at.
            server.record_refusal(
                hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                cut.map(|(_, remote)| remote),
            );
            return;
        }
        Either::Left(_) | Either::Right((Either::Right(_), _)) => return,
        Either::Right((Either::Left(_), _)) => {}
    }
    // Finish the request in flight, then close; idle connections close at once.
    connection.as_mut().graceful_shutdown();
    let deadline = runtime.now() + server.limits().close_timeout;
    let _ = select(connection, pin!(sleep_until(&*runtime, deadline))).await;
}

/// hyper's executor on the core's runtime seam: HTTP/2 runs each stream's work as a task. Each
/// task can be cut ([`current_stream`]): it then ends, and dropping its work resets the stream.
#[derive(Clone)]
pub(crate) struct RuntimeExecutor(Arc<dyn anyws_core::Runtime>);

impl<F> hyper::rt::Executor<F> for RuntimeExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(Box::pin(StreamTask {
            future: Some(Box::pin(future)),
            cut: Arc::default(),
        }));
    }
}

std::thread_local! {
    /// The cut of the HTTP/2 stream task being polled on this thread.
    static CURRENT_STREAM: std::cell::RefCell<Option<Arc<ConnectionCut>>> =
        const { std::cell::RefCell::new(None) };
}

/// The cut of the HTTP/2 stream whose task runs the caller (a request's service), when the
/// connection is served here over HTTP/2; `None` elsewhere.
pub(crate) fn current_stream() -> Option<Arc<ConnectionCut>> {
    CURRENT_STREAM.with(|current| current.borrow().clone())
}

/// A task of [`RuntimeExecutor`]: it ends, dropping the stream's work, once its cut fires.
struct StreamTask<F> {
    future: Option<Pin<Box<F>>>,
    cut: Arc<ConnectionCut>,
}

/// Puts back the stream that was current before, even when the poll panics.
struct Restore(Option<Arc<ConnectionCut>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT_STREAM.with(|current| *current.borrow_mut() = previous);
    }
}

impl<F: Future<Output = ()>> Future for StreamTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.get_mut();
        if this.cut.poll_fired(cx).is_ready() {
            this.future = None;
            return std::task::Poll::Ready(());
        }
        let Some(future) = this.future.as_mut() else {
            return std::task::Poll::Ready(());
        };
        let _restore =
            Restore(CURRENT_STREAM.with(|current| current.borrow_mut().replace(this.cut.clone())));
        let poll = future.as_mut().poll(cx);
        if poll.is_ready() {
            this.future = None;
        }
        poll
    }
}

/// hyper's default read buffer limit (8 KiB + 400 KiB), which also caps the request head.
const HYPER_MAX_BUF_SIZE: usize = 8192 + 4096 * 100;

/// Makes hyper refuse a request head larger than `max_bytes` (request line and headers, as
/// received) with `431`, as soon as that many bytes are buffered without the head's end.
///
/// hyper counts the head exactly with `max_header_size`, but its read buffer (`max_buf_size`)
/// still caps the head, so it grows with a limit above hyper's default buffer size.
fn limit_head(http: &mut http1::Builder, max_bytes: usize) {
    http.max_header_size(max_bytes);
    if max_bytes > HYPER_MAX_BUF_SIZE {
        http.max_buf_size(max_bytes);
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
