//! Serving over TLS with [`anyws_hyper::tls::TlsStream`].

use anyws_core::Server;
use anyws_hyper::tls::rustls::ServerConfig;
use anyws_hyper::tls::{TlsHandshake, TlsStream};
use anyws_hyper::NotFound;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// [`anyws_hyper::Serve`] on a tokio TLS listener, as [`serve_tls`] returns it.
pub type ServeTls<F = NotFound> = anyws_hyper::Serve<TokioTlsListener, F>;

/// [`serve`](crate::serve) over TLS: `wss://` and `https://` with `tls`, a rustls configuration
/// (see [`anyws_hyper::tls::load_pem`] and [`anyws_hyper::tls::server_config`], whose
/// certificates can be replaced while running). Each connection's TLS handshake runs in its own
/// task and must finish, with the request head, within the server's
/// [`handshake_timeout`](anyws_core::Limits::handshake_timeout).
///
/// ```no_run
/// # async fn run(server: anyws_core::Server) -> Result<(), Box<dyn std::error::Error>> {
/// let tls = anyws_hyper::tls::load_pem("cert.pem", "key.pem")?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
/// anyws_tokio::serve_tls(listener, tls, server).await?;
/// # Ok(()) }
/// ```
pub fn serve_tls(
    listener: TcpListener,
    tls: impl Into<Arc<ServerConfig>>,
    server: Server,
) -> ServeTls {
    anyws_hyper::serve(TokioTlsListener::new(listener, tls), server)
}

/// A tokio TCP listener whose connections speak TLS, as an [`anyws_hyper::Listener`]; accepted
/// sockets get `TCP_NODELAY`.
pub struct TokioTlsListener {
    listener: TcpListener,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TokioTlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioTlsListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TokioTlsListener {
    /// Accepts TLS connections on `listener` with the configuration `tls`.
    pub fn new(listener: TcpListener, tls: impl Into<Arc<ServerConfig>>) -> Self {
        Self {
            listener,
            config: tls.into(),
        }
    }
}

impl anyws_hyper::Listener for TokioTlsListener {
    type Io = TlsStream<Compat<TcpStream>>;
    type Connecting = TlsConnecting;
    const SECURE: bool = true;

    async fn accept(&mut self) -> io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let accept = TlsStream::accept(stream.compat(), self.config.clone());
        Ok((TlsConnecting(accept), remote))
    }
}

/// The TLS handshake of a connection accepted by a [`TokioTlsListener`].
pub struct TlsConnecting(TlsHandshake<Compat<TcpStream>>);

impl std::fmt::Debug for TlsConnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnecting").finish_non_exhaustive()
    }
}

impl Future for TlsConnecting {
    type Output = io::Result<TlsStream<Compat<TcpStream>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}
