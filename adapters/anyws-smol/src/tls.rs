//! Serving over TLS with [`anyws_hyper::tls::TlsStream`].

use crate::ReadyStream;
use anyws_core::Server;
use anyws_hyper::tls::rustls::ServerConfig;
use anyws_hyper::tls::{TlsHandshake, TlsStream};
use anyws_hyper::NotFound;
use smol::net::TcpListener;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// [`anyws_hyper::Serve`] on a smol TLS listener, as [`serve_tls`] returns it.
pub type ServeTls<F = NotFound> = anyws_hyper::Serve<SmolTlsListener, F>;

/// [`serve`](crate::serve) over TLS: `wss://` and `https://` with `tls`, a rustls configuration
/// (see [`anyws_hyper::tls::load_pem`] and [`anyws_hyper::tls::server_config`], whose
/// certificates can be replaced while running). Each connection's TLS handshake runs in its own
/// task and must finish, with the request head, within the server's
/// [`handshake_timeout`](anyws_core::Limits::handshake_timeout).
///
/// ```no_run
/// # async fn run(server: anyws_core::Server) -> Result<(), Box<dyn std::error::Error>> {
/// let tls = anyws_hyper::tls::load_pem("cert.pem", "key.pem")?;
/// let listener = smol::net::TcpListener::bind("0.0.0.0:443").await?;
/// anyws_smol::serve_tls(listener, tls, server).await?;
/// # Ok(()) }
/// ```
pub fn serve_tls(
    listener: TcpListener,
    tls: impl Into<Arc<ServerConfig>>,
    server: Server,
) -> ServeTls {
    anyws_hyper::serve(SmolTlsListener::new(listener, tls), server)
}

/// A smol TCP listener whose connections speak TLS, as an [`anyws_hyper::Listener`]; accepted
/// sockets get `TCP_NODELAY` and are read through a [`ReadyStream`].
pub struct SmolTlsListener {
    listener: TcpListener,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for SmolTlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolTlsListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl SmolTlsListener {
    /// Accepts TLS connections on `listener` with the configuration `tls`.
    pub fn new(listener: TcpListener, tls: impl Into<Arc<ServerConfig>>) -> Self {
        Self {
            listener,
            config: tls.into(),
        }
    }
}

impl anyws_hyper::Listener for SmolTlsListener {
    type Io = TlsStream<ReadyStream>;
    type Connecting = TlsConnecting;
    const SECURE: bool = true;

    async fn accept(&mut self) -> io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((TlsConnecting::new(&self.config, stream.into()), remote))
    }
}

/// The TLS handshake of an accepted connection, on any runtime built on `async-io` (smol's
/// [`SmolTlsListener`], async-std's as well).
pub struct TlsConnecting(TlsHandshake<ReadyStream>);

impl TlsConnecting {
    /// Starts the handshake of `stream` with the configuration `config`.
    pub fn new(config: &Arc<ServerConfig>, stream: ReadyStream) -> Self {
        Self(TlsStream::accept(stream, config.clone()))
    }
}

impl std::fmt::Debug for TlsConnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnecting").finish_non_exhaustive()
    }
}

impl Future for TlsConnecting {
    type Output = io::Result<TlsStream<ReadyStream>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}
