//! Serving over TLS with `tokio-rustls`.

use anyws_core::Server;
use anyws_hyper::tls::rustls::ServerConfig;
use anyws_hyper::tls::ReadAhead;
use anyws_hyper::NotFound;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

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
    acceptor: tokio_rustls::TlsAcceptor,
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
            acceptor: tokio_rustls::TlsAcceptor::from(tls.into()),
        }
    }
}

impl anyws_hyper::Listener for TokioTlsListener {
    type Io = TokioIo<TlsStream<ReadAheadTcpStream>>;
    type Connecting = TlsConnecting;
    const SECURE: bool = true;

    async fn accept(&mut self) -> io::Result<(Self::Connecting, SocketAddr)> {
        let (stream, remote) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let stream = ReadAheadTcpStream {
            io: stream,
            ahead: ReadAhead::default(),
        };
        Ok((TlsConnecting(self.acceptor.accept(stream)), remote))
    }
}

/// The TLS handshake of a connection accepted by a [`TokioTlsListener`].
pub struct TlsConnecting(tokio_rustls::Accept<ReadAheadTcpStream>);

impl std::fmt::Debug for TlsConnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnecting").finish_non_exhaustive()
    }
}

impl Future for TlsConnecting {
    type Output = io::Result<TokioIo<TlsStream<ReadAheadTcpStream>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_ok(TokioIo::new)
    }
}

/// A TCP stream whose reads go through an [`anyws_hyper::tls::ReadAhead`]: what rustls reads
/// from under a [`TokioTlsListener`]'s connections, so that a 16 KiB record takes one `recv`,
/// not rustls's 4 KiB steps. Writes go straight through, a vectored one with a single buffer
/// as a plain write (see [`anyws_hyper::only_buffer`]).
#[derive(Debug)]
pub struct ReadAheadTcpStream {
    io: TcpStream,
    ahead: ReadAhead,
}

impl AsyncRead for ReadAheadTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = &mut this.io;
        let read = this.ahead.poll_read(buf.initialize_unfilled(), |into| {
            let mut into = ReadBuf::new(into);
            Pin::new(io)
                .poll_read(cx, &mut into)
                .map_ok(|()| into.filled().len())
        });
        read.map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for ReadAheadTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match anyws_hyper::only_buffer(bufs) {
            Some(buf) => Pin::new(&mut self.io).poll_write(cx, buf),
            None => Pin::new(&mut self.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
