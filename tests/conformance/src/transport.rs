//! How the suite's clients reach a server: cleartext HTTP/1.1, HTTP/1.1 over TLS (`wss://`), or
//! WebSockets on the streams of one HTTP/2 connection (RFC 8441), in cleartext or over TLS.
//!
//! [`Over`] runs any [`Harness`] with one of these [`Transport`]s: it serves TLS with a
//! throwaway [`Certificate`] when the transport needs it, and the clients of
//! [`Fixture`](crate::client::Fixture) then connect its way. Raw HTTP/1.1 requests (plain
//! routes, malformed handshakes) go over a connection of their own in every transport, over
//! TLS when the server speaks TLS.

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::{Harness, Instance, Options};

/// How the clients reach the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// `ws://` over cleartext HTTP/1.1.
    #[default]
    Plain,
    /// `wss://`: HTTP/1.1 over TLS (ALPN `http/1.1`).
    Tls,
    /// RFC 8441: each WebSocket an extended `CONNECT` stream of one cleartext HTTP/2 connection
    /// per server (prior knowledge).
    H2c,
    /// RFC 8441 over TLS: each WebSocket a stream of one HTTP/2 connection per server,
    /// negotiated with ALPN `h2`.
    H2Tls,
}

impl Transport {
    /// Whether the server speaks TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::H2Tls)
    }

    /// Whether WebSockets go over HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, Transport::H2c | Transport::H2Tls)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plain => "HTTP/1.1",
            Transport::Tls => "TLS",
            Transport::H2c => "h2c",
            Transport::H2Tls => "h2 over TLS",
        })
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files into a
/// directory of its own (removed on drop), and client settings that trust it.
pub struct Certificate {
    dir: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Makes a certificate; `name` goes into the directory's name.
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "anyws-tls-{name}-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("a self-signed certificate");
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem())
            .expect("write key.pem");
        Self {
            dir,
            der: made.cert.der().clone(),
        }
    }

    /// The directory the PEM files are in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The certificate, a PEM file.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// Its private key, a PEM file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// A TLS connector that trusts this certificate only and offers `alpn`, such as
    /// `[b"h2", b"http/1.1"]`.
    pub fn connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("a trusted root");
        #[allow(deprecated)] // The post-quantum key exchange is not needed for loopback tests.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A [`Harness`] whose clients use `transport`: its servers serve TLS with a throwaway
/// certificate when the transport needs it ([`Options::tls`]).
#[derive(Debug)]
pub struct Over<H> {
    transport: Transport,
    certificate: Option<Arc<Certificate>>,
    harness: H,
}

impl<H: Harness> Over<H> {
    /// `harness`, its clients using `transport`.
    pub fn new(transport: Transport, harness: H) -> Self {
        Self {
            transport,
            certificate: transport
                .is_tls()
                .then(|| Arc::new(Certificate::new("conformance"))),
            harness,
        }
    }
}

#[async_trait]
impl<H: Harness> Harness for Over<H> {
    fn name(&self) -> String {
        format!("{} over {}", self.harness.name(), self.transport)
    }

    async fn start(&self, options: &Options) -> Box<dyn Instance> {
        match &self.certificate {
            Some(certificate) => {
                let options = options.clone().tls(certificate.cert(), certificate.key());
                self.harness.start(&options).await
            }
            None => self.harness.start(options).await,
        }
    }

    fn transport(&self) -> Transport {
        self.transport
    }

    fn certificate(&self) -> Option<Arc<Certificate>> {
        self.certificate.clone()
    }
}

/// Opens an HTTP/2 connection for WebSockets (RFC 8441) on `io` (a TCP connection, or TLS with
/// ALPN `h2`) and drives it in a tokio task. `base` is the server's URL without the path
/// (`http://127.0.0.1:PORT`); `GET {base}/` must answer 200. The server's SETTINGS come before
/// that answer, and must enable the extended CONNECT protocol. The connection's window is
/// 16 MiB, far more than a stream's, as browsers have it (Chromium: 15 MiB and 6 MiB): a stream
/// whose reader stalls fills its own window, not the connection's.
pub async fn h2_client<T>(io: T, base: &str) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::Builder::new()
        .initial_connection_window_size(16 << 20)
        .handshake(io)
        .await
        .map_err(|error| format!("the HTTP/2 handshake failed: {error}"))?;
    tokio::spawn(connection);
    let mut client = client
        .ready()
        .await
        .map_err(|error| format!("the HTTP/2 connection failed: {error}"))?;
    let request = http::Request::get(format!("{base}/"))
        .body(())
        .map_err(|error| format!("GET {base}/: {error}"))?;
    let (response, _) = client
        .send_request(request, true)
        .map_err(|error| format!("GET / over HTTP/2: {error}"))?;
    let response = response
        .await
        .map_err(|error| format!("GET / over HTTP/2: {error}"))?;
    if response.status() != 200 {
        return Err(format!("GET / over HTTP/2: {}", response.status()));
    }
    if !client.is_extended_connect_protocol_enabled() {
        return Err(
            "the server's SETTINGS do not enable the extended CONNECT protocol (RFC 8441)"
                .to_owned(),
        );
    }
    client
        .ready()
        .await
        .map_err(|error| format!("the HTTP/2 connection failed: {error}"))
}

/// Sends an RFC 8441 extended `CONNECT` for `url` with `sec-websocket-version: 13` and
/// `headers` on `client`; returns the response head, its body and the request's stream. A
/// `200` accepts the WebSocket: then `H2Stream::new(send, recv)` carries its frames.
pub async fn h2_websocket(
    client: &mut h2::client::SendRequest<Bytes>,
    url: &str,
    headers: &[(String, String)],
) -> Result<(http::response::Parts, h2::RecvStream, h2::SendStream<Bytes>), String> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(url)
        .extension(h2::ext::Protocol::from("websocket"))
        .header("sec-websocket-version", "13");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(())
        .map_err(|error| format!("a CONNECT for {url}: {error}"))?;
    let ready = client
        .clone()
        .ready()
        .await
        .map_err(|error| format!("the HTTP/2 connection failed: {error}"))?;
    *client = ready;
    let (response, send) = client
        .send_request(request, false)
        .map_err(|error| format!("sending the CONNECT: {error}"))?;
    let (parts, recv) = response
        .await
        .map_err(|error| format!("the CONNECT failed: {error}"))?
        .into_parts();
    Ok((parts, recv, send))
}

/// A client connection: TCP, TLS, or one stream of an HTTP/2 connection.
#[derive(Debug)]
pub enum Conn {
    /// Cleartext TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An HTTP/2 stream.
    H2(H2Stream),
}

impl From<TcpStream> for Conn {
    fn from(stream: TcpStream) -> Self {
        Conn::Tcp(stream)
    }
}

impl Conn {
    /// The TCP connection underneath, if it is one of its own (not an HTTP/2 stream).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Tcp(tcp) => Some(tcp),
            Conn::Tls(tls) => Some(tls.get_ref().0),
            Conn::H2(_) => None,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Conn::H2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Conn::H2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
            Conn::H2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Conn::H2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The two halves of an HTTP/2 stream as a byte stream. Reading releases flow-control
/// capacity as the bytes are taken, so a client that stops reading stops the server's writes
/// once the stream's window is full, as a full receive buffer does over TCP. Dropping it before
/// the stream ended resets the stream (`RST_STREAM`).
pub struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    pending: Bytes,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    /// The stream of a request (`send`) and its response's body (`recv`).
    pub fn new(send: h2::SendStream<Bytes>, recv: h2::RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
        }
    }

    /// Resets the stream with `reason`, as a client that gives up on it.
    pub fn reset(&mut self, reason: h2::Reason) {
        self.send.send_reset(reason);
    }
}

fn h2_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        error
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::Other.into())
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, error)
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(h2_error(error))),
                Some(Ok(data)) => this.pending = data,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len());
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                return Poll::Ready(
                    this.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map(|()| n)
                        .map_err(h2_error),
                );
            }
            match ready!(this.send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(error)) => return Poll::Ready(Err(h2_error(error))),
                Some(Ok(_)) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Poll::Ready(this.send.send_data(Bytes::new(), true).map_err(h2_error))
    }
}
