//! A TLS connection on rustls's unbuffered API, server or client side.
//!
//! rustls's buffered connection (what `tokio-rustls` and `futures-rustls` drive) reads its
//! socket 4 KiB at a time into a buffer of its own that grows, in steps, to hold a 16 KiB
//! record and shrinks again once it is empty: for every large record, three reallocations, the
//! bytes zeroed and copied as it grows. [`TlsStream`] reads the socket in 64 KiB steps into a
//! buffer that the thread's connections share, decrypts the records there, and keeps with the
//! connection only the part of a record that has not arrived whole. Encrypted output goes
//! through another shared buffer straight to the socket, and only what the socket did not take
//! stays with the connection. An idle connection holds no buffer.

use futures_io::{AsyncRead, AsyncWrite};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    ReadEarlyData, UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, ServerConfig};
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// The most read from the socket at a time.
const READ_SIZE: usize = 64 * 1024;

/// The largest TLS record on the wire: 16 KiB of plaintext, 2 KiB of expansion, the header.
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

/// The most a connection keeps between reads: a record that has not arrived whole, or during
/// the handshake the records of a handshake message that has not (rustls takes those of up to
/// 64 KiB).
const MAX_KEPT: usize = 0xffff + MAX_RECORD;

/// The most plaintext encrypted by one write.
const WRITE_SIZE: usize = 64 * 1024;

/// Room for the record headers, content types and tags of a write of `len` bytes (TLS 1.3
/// adds 22 bytes to a record, TLS 1.2 29); a write that needs more is retried with what rustls
/// asks for.
fn sealed_len(len: usize) -> usize {
    len + (len / (16 * 1024) + 1) * 64
}

/// Plaintext pieces smaller than this are gathered into one record with their neighbours (a
/// frame's header with its payload, a burst of small frames); larger ones are encrypted where
/// they lie.
const GATHER_BELOW: usize = 4096;

thread_local! {
    /// Socket reads, and the records decrypted in place.
    static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Encrypted output on its way to the socket.
    static WRITE: RefCell<Output> = RefCell::new(Output::default());
    /// Small plaintext pieces of a vectored write, gathered into one record.
    static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the thread's buffer `key`, or on a buffer of its own when that one is in use.
fn with_buffer<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|shared| match shared.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut T::default()),
    })
}

/// The side of a [`TlsStream`]: rustls's unbuffered server connection (the default) or client
/// connection, and nothing else.
pub trait TlsSide: sealed::Sealed {}

impl TlsSide for UnbufferedServerConnection {}
impl TlsSide for UnbufferedClientConnection {}

mod sealed {
    use super::*;

    /// What a [`TlsStream`] needs of its side that rustls defines for each side apart.
    pub trait Sealed: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Unpin {
        type Data;

        fn process<'c, 'i>(
            &'c mut self,
            incoming: &'i mut [u8],
        ) -> UnbufferedStatus<'c, 'i, Self::Data>;

        /// Appends the early data of `early` to `plain`; how many more bytes to discard.
        fn take_early_data(
            early: &mut ReadEarlyData<'_, '_, Self::Data>,
            plain: &mut Vec<u8>,
        ) -> Result<usize, rustls::Error>;
    }

    impl Sealed for UnbufferedServerConnection {
        type Data = ServerConnectionData;

        fn process<'c, 'i>(
            &'c mut self,
            incoming: &'i mut [u8],
        ) -> UnbufferedStatus<'c, 'i, Self::Data> {
            self.process_tls_records(incoming)
        }

        fn take_early_data(
            early: &mut ReadEarlyData<'_, '_, Self::Data>,
            plain: &mut Vec<u8>,
        ) -> Result<usize, rustls::Error> {
            let mut discard = 0;
            while let Some(record) = early.next_record() {
                let record = record?;
                discard += record.discard;
                plain.extend_from_slice(record.payload);
            }
            Ok(discard)
        }
    }

    impl Sealed for UnbufferedClientConnection {
        type Data = ClientConnectionData;

        fn process<'c, 'i>(
            &'c mut self,
            incoming: &'i mut [u8],
        ) -> UnbufferedStatus<'c, 'i, Self::Data> {
            self.process_tls_records(incoming)
        }

        /// A client receives no early data.
        fn take_early_data(
            _: &mut ReadEarlyData<'_, '_, Self::Data>,
            _: &mut Vec<u8>,
        ) -> Result<usize, rustls::Error> {
            Ok(0)
        }
    }
}

/// A TLS connection over the socket `S`, by default its server side: plaintext in and out, as
/// a `futures-io` stream and as a hyper I/O object. [`TlsStream::accept`] makes a server one
/// and [`TlsStream::connect`] a client one, and each runs its handshake.
///
/// Writes are encrypted as they are made and sent at once; what the socket does not take is
/// kept (at most one write's worth, up to 64 KiB and the records' overhead) and sent before
/// anything else is accepted. Closing the stream sends TLS's `close_notify` first.
pub struct TlsStream<S, C: TlsSide = UnbufferedServerConnection> {
    io: S,
    conn: C,
    /// The start of a record that has not arrived whole.
    incoming: Vec<u8>,
    /// Plaintext decrypted but not read yet, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted bytes not sent yet, from `sent` on.
    outgoing: Output,
    sent: usize,
    /// The peer closed: `close_notify` or the end of the socket.
    eof: bool,
    /// `close_notify` was queued.
    closing: bool,
    /// rustls failed: it is not called again.
    failed: bool,
}

impl<S, C: TlsSide> std::fmt::Debug for TlsStream<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.conn.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("outgoing", &(self.outgoing.len - self.sent))
            .finish_non_exhaustive()
    }
}

/// Where decrypted plaintext goes: the caller's buffer, or else the stream's.
trait Sink {
    /// How many more bytes it takes.
    fn room(&self) -> usize;

    /// Takes what it has room for from `bytes`, and says how much.
    fn put(&mut self, bytes: &[u8]) -> usize;
}

impl Sink for (&mut [u8], usize) {
    fn room(&self) -> usize {
        self.0.len() - self.1
    }

    fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&bytes[..n]);
        self.1 += n;
        n
    }
}

impl Sink for hyper::rt::ReadBufCursor<'_> {
    fn room(&self) -> usize {
        self.remaining()
    }

    fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.remaining());
        self.put_slice(&bytes[..n]);
        n
    }
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// What a read or write of a connection that failed returns.
fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "TLS: the connection failed earlier",
    )
}

/// Why rustls wrote nothing into a buffer: it needs a larger one, or it cannot.
enum Short {
    Need(usize),
    Fail(io::Error),
}

impl From<EncodeError> for Short {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Short::Need(required_size)
            }
            error => Short::Fail(io::Error::other(error)),
        }
    }
}

impl From<EncryptError> for Short {
    fn from(error: EncryptError) -> Self {
        match error {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Short::Need(required_size)
            }
            error => Short::Fail(io::Error::other(error)),
        }
    }
}

/// Bytes on their way out: `buf[..len]`. The buffer only grows (a thread's is reused for every
/// write), so it is zeroed once, not before every record.
#[derive(Default)]
struct Output {
    buf: Vec<u8>,
    len: usize,
}

impl Output {
    fn filled(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.append(bytes.len(), |room| {
            room.copy_from_slice(bytes);
            Ok(bytes.len())
        })
        .expect("a copy fits the room made for it");
    }

    /// Appends the handshake or alert record rustls has in `data`.
    fn encode<D>(&mut self, data: &mut EncodeTlsData<'_, D>) -> io::Result<()> {
        self.append(1024, |out| data.encode(out).map_err(Short::from))
    }

    /// Appends what `write` writes into the room it is given: `room` bytes at first, as many
    /// as rustls asks for after that.
    fn append(
        &mut self,
        mut room: usize,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Short>,
    ) -> io::Result<()> {
        let start = self.len;
        loop {
            if self.buf.len() < start + room {
                self.buf.resize(start + room, 0);
            }
            match write(&mut self.buf[start..start + room]) {
                Ok(n) => {
                    self.len = start + n;
                    return Ok(());
                }
                Err(Short::Need(required)) if required > room => room = required,
                Err(Short::Need(_)) => {
                    return Err(io::Error::other("TLS: no room for a record"));
                }
                Err(Short::Fail(error)) => return Err(error),
            }
        }
    }
}

/// Encrypts what it accepts of `bufs` (up to 64 KiB) into `out` and says how much that was:
/// small pieces gathered into one record, large ones encrypted where they lie.
fn seal_bufs<D>(
    traffic: &mut WriteTraffic<'_, D>,
    bufs: &[IoSlice<'_>],
    out: &mut Output,
) -> io::Result<usize> {
    let mut seal = |plaintext: &[u8], out: &mut Output| {
        out.append(sealed_len(plaintext.len()), |room| {
            traffic.encrypt(plaintext, room).map_err(Short::from)
        })
    };
    with_buffer(&GATHER, |gather| {
        gather.clear();
        let mut accepted = 0;
        for buf in bufs {
            let buf = &buf[..buf.len().min(WRITE_SIZE - accepted)];
            if buf.len() < GATHER_BELOW {
                gather.extend_from_slice(buf);
                if gather.len() >= 16 * 1024 {
                    seal(gather, out)?;
                    gather.clear();
                }
            } else {
                if !gather.is_empty() {
                    seal(gather, out)?;
                    gather.clear();
                }
                seal(buf, out)?;
            }
            accepted += buf.len();
            if accepted == WRITE_SIZE {
                break;
            }
        }
        if !gather.is_empty() {
            seal(gather, out)?;
        }
        Ok(accepted)
    })
}

impl<S> TlsStream<S> {
    /// Starts the server side of a TLS connection on `io` with `config`; await the returned
    /// [`TlsHandshake`] for the stream once its handshake is done.
    pub fn accept(io: S, config: Arc<ServerConfig>) -> TlsHandshake<S> {
        TlsHandshake::new(io, UnbufferedServerConnection::new(config))
    }
}

impl<S> TlsStream<S, UnbufferedClientConnection> {
    /// Starts the client side of a TLS connection to the server `name` on `io` with `config`;
    /// await the returned [`TlsHandshake`] for the stream once its handshake is done.
    pub fn connect(
        io: S,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> TlsHandshake<S, UnbufferedClientConnection> {
        TlsHandshake::new(io, UnbufferedClientConnection::new(config, name))
    }
}

impl<S, C: TlsSide> TlsStream<S, C> {
    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The protocol the client and server agreed on by ALPN, if they did.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Hands `sink` what it takes of the plaintext decrypted earlier, and says how much.
    fn take_plain(&mut self, sink: &mut impl Sink) -> usize {
        if self.plain_at == self.plain.len() {
            return 0;
        }
        let n = sink.put(&self.plain[self.plain_at..]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        n
    }

    /// Processes the records in `buf`: plaintext to `sink` (what it has no room for to
    /// `self.plain`), handshake messages to `self.outgoing`. Returns how many bytes of `buf`
    /// were used up (the rest is the start of a record) and how many went to `sink`.
    fn process(&mut self, buf: &mut [u8], sink: &mut impl Sink) -> io::Result<(usize, usize)> {
        if self.failed {
            return Err(failed());
        }
        let processed = self.process_records(buf, sink);
        // Whatever the error, the bytes kept no longer match what rustls has seen of them.
        self.failed |= processed.is_err();
        processed
    }

    fn process_records(
        &mut self,
        buf: &mut [u8],
        sink: &mut impl Sink,
    ) -> io::Result<(usize, usize)> {
        let mut used = 0;
        let mut given = 0;
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut buf[used..]);
            let state = match state {
                Ok(state) => state,
                Err(error) => {
                    // What rustls queued for the peer (an alert) goes with the error.
                    self.fail();
                    return Err(tls_error(error));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        let taken = if self.plain.is_empty() {
                            sink.put(record.payload)
                        } else {
                            0
                        };
                        given += taken;
                        self.plain.extend_from_slice(&record.payload[taken..]);
                    }
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    discard +=
                        C::take_early_data(&mut early, &mut self.plain).map_err(tls_error)?;
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    self.outgoing.encode(&mut data)?;
                }
                // The bytes are in `self.outgoing`, sent before anything else.
                ConnectionState::TransmitTlsData(data) => data.done(),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.eof = true;
                    return Ok((used + discard, given));
                }
                // Nothing more until more bytes arrive.
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    return Ok((used + discard, given));
                }
                _ => {
                    return Err(io::Error::other(
                        "TLS: a connection state this stream does not handle",
                    ))
                }
            }
            used += discard;
        }
    }

    /// Marks the connection failed, with the alert rustls has for the peer queued.
    fn fail(&mut self) {
        self.failed = true;
        self.queue_output();
    }

    /// Queues what rustls has for the peer without reading more: its hello at a client's
    /// start; after an error, the alert that says why. rustls hands out what it has queued
    /// before it looks at the bytes it is given, and is given none here: after an error it
    /// must not be asked to read again.
    fn queue_output(&mut self) {
        while self.conn.wants_write() {
            let UnbufferedStatus { state, .. } = self.conn.process(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = state else {
                return;
            };
            if self.outgoing.encode(&mut data).is_err() {
                return;
            }
        }
    }

    /// Runs `f` on the connection once it may send application data, after queueing what
    /// rustls has to send first (a key update, session tickets).
    fn with_write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, C::Data>, &mut Output) -> io::Result<R>,
    ) -> io::Result<R> {
        if self.failed {
            return Err(failed());
        }
        let written = self.write_traffic(f);
        self.failed |= written.is_err();
        written
    }

    fn write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, C::Data>, &mut Output) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut f = Some(f);
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(error) => {
                    self.fail();
                    return Err(tls_error(error));
                }
            };
            let result = match state {
                ConnectionState::WriteTraffic(mut traffic) => match f.take() {
                    Some(f) => Some(f(&mut traffic, &mut self.outgoing)),
                    None => Some(Err(io::Error::other("TLS: write state reached twice"))),
                },
                ConnectionState::EncodeTlsData(mut data) => {
                    self.outgoing.encode(&mut data)?;
                    None
                }
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        self.plain.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::PeerClosed => {
                    self.eof = true;
                    None
                }
                ConnectionState::Closed => Some(Err(io::ErrorKind::BrokenPipe.into())),
                ConnectionState::BlockedHandshake => Some(Err(io::ErrorKind::NotConnected.into())),
                _ => Some(Err(io::Error::other(
                    "TLS: a connection state this stream does not handle",
                ))),
            };
            self.incoming.drain(..discard);
            if let Some(result) = result {
                return result;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, C: TlsSide> TlsStream<S, C> {
    /// Sends what is queued in `self.outgoing`; `Ready(Ok)` once all of it went.
    fn poll_send_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.outgoing.filled()[self.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if !self.outgoing.is_empty() {
            self.outgoing = Output::default();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// One read of the socket, and the records it completes: plaintext to `sink`. `Ready` with
    /// whatever came of it (plaintext, handshake progress, the end of the stream), `Pending`
    /// when the socket has nothing.
    fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut impl Sink,
    ) -> Poll<io::Result<usize>> {
        // Handshake messages first: the client may be waiting for them.
        if let Poll::Ready(Err(error)) = self.poll_send_queued(cx) {
            return Poll::Ready(Err(error));
        }
        let polled = with_buffer(&READ, |buf| {
            let kept = self.incoming.len();
            if buf.len() < kept + READ_SIZE {
                buf.resize(kept + READ_SIZE, 0);
            }
            buf[..kept].copy_from_slice(&self.incoming);
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf[kept..kept + READ_SIZE]))?;
            if n == 0 {
                self.eof = true;
                if kept > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS: the connection ended inside a record",
                    )));
                }
                return Poll::Ready(Ok(0));
            }
            let filled = kept + n;
            let (used, given) = self.process(&mut buf[..filled], sink)?;
            let rest = &buf[used..filled];
            if rest.len() > MAX_KEPT {
                self.failed = true;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: a record or handshake message larger than the protocol allows",
                )));
            }
            self.incoming.clear();
            if rest.is_empty() {
                self.incoming = Vec::new();
            } else {
                self.incoming.extend_from_slice(rest);
            }
            Poll::Ready(Ok(given))
        });
        // What processing queued (session tickets, a key update's answer, an alert) goes now.
        if !self.outgoing.is_empty() {
            if let Poll::Ready(Err(error)) = self.poll_send_queued(cx) {
                if polled.is_ready() {
                    return Poll::Ready(Err(error));
                }
            }
        }
        polled
    }

    /// Reads plaintext into `sink`: `Ready` with how much once there was some, or with 0 at
    /// the end of the stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut impl Sink,
    ) -> Poll<io::Result<usize>> {
        if sink.room() == 0 {
            return Poll::Ready(Ok(0));
        }
        loop {
            let n = self.take_plain(sink);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            let n = ready!(self.poll_read_socket(cx, sink))?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
        }
    }

    /// Encrypts what it accepts of `bufs` (up to 64 KiB) and sends it; `Pending` only while
    /// an earlier write is still not sent.
    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_send_queued(cx))?;
        if self.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let written = with_buffer(&WRITE, |out| {
            out.len = 0;
            let accepted = self.with_write_traffic(|traffic, queued| {
                // Records rustls queued first (a key update's answer) go before these.
                let target = if queued.is_empty() { &mut *out } else { queued };
                seal_bufs(traffic, bufs, target)
            })?;
            let mut at = 0;
            while at < out.len {
                match Pin::new(&mut self.io).poll_write(cx, &out.filled()[at..]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(error)) => return Err(error),
                    Poll::Pending => break,
                }
            }
            if at < out.len {
                self.outgoing.extend_from_slice(&out.filled()[at..]);
            }
            Ok(accepted)
        });
        let accepted = written?;
        // Sent now if the socket takes it; otherwise before the next write.
        if let Poll::Ready(Err(error)) = self.poll_send_queued(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(accepted))
    }

    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_queued(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Sends `close_notify` (once the handshake is done), then closes the socket.
    fn poll_close_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closing {
            self.closing = true;
            // Before the handshake is done, or after the peer's, there is nothing to say.
            let _ = self.with_write_traffic(|traffic, queued| {
                queued.append(64, |out| {
                    traffic.queue_close_notify(out).map_err(Short::from)
                })
            });
        }
        ready!(self.poll_send_queued(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// A [`TlsStream`]'s handshake: ready with the stream once it is done.
pub struct TlsHandshake<S, C: TlsSide = UnbufferedServerConnection> {
    stream: Option<io::Result<TlsStream<S, C>>>,
}

impl<S, C: TlsSide> TlsHandshake<S, C> {
    fn new(io: S, conn: Result<C, rustls::Error>) -> Self {
        let stream = conn.map_err(tls_error).map(|conn| {
            let mut stream = TlsStream {
                io,
                conn,
                incoming: Vec::new(),
                plain: Vec::new(),
                plain_at: 0,
                outgoing: Output::default(),
                sent: 0,
                eof: false,
                closing: false,
                failed: false,
            };
            // A client speaks first.
            stream.queue_output();
            stream
        });
        Self {
            stream: Some(stream),
        }
    }
}

impl<S, C: TlsSide> std::fmt::Debug for TlsHandshake<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandshake").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, C: TlsSide> Future for TlsHandshake<S, C> {
    type Output = io::Result<TlsStream<S, C>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let stream = match self.stream.as_mut() {
            Some(Ok(stream)) => stream,
            Some(Err(_)) => return Poll::Ready(self.stream.take().expect("just seen")),
            None => panic!("TlsHandshake polled after it was ready"),
        };
        loop {
            if !stream.conn.is_handshaking() {
                ready!(stream.poll_send_queued(cx))?;
                return Poll::Ready(self.stream.take().expect("just seen"));
            }
            if stream.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS: the peer left during the handshake",
                )));
            }
            // Plaintext sent with the peer's last handshake message is kept for the first read.
            let mut nowhere: (&mut [u8], usize) = (&mut [], 0);
            ready!(stream.poll_read_socket(cx, &mut nowhere))?;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, C: TlsSide> AsyncRead for TlsStream<S, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_into(cx, &mut (buf, 0))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, C: TlsSide> AsyncWrite for TlsStream<S, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_tls(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_tls(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, C: TlsSide> hyper::rt::Read for TlsStream<S, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_into(cx, &mut buf).map_ok(|_| ())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, C: TlsSide> hyper::rt::Write for TlsStream<S, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_tls(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_tls(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// One direction of an in-memory connection: reads take at most `step` bytes at a time.
    #[derive(Default)]
    struct Pipe {
        bytes: VecDeque<u8>,
        closed: bool,
    }

    /// One end of an in-memory connection.
    struct End {
        rx: Arc<Mutex<Pipe>>,
        tx: Arc<Mutex<Pipe>>,
        step: usize,
    }

    fn pair(step: usize) -> (End, End) {
        let (a, b) = (Arc::default(), Arc::default());
        let client = End {
            rx: Arc::clone(&a),
            tx: Arc::clone(&b),
            step: usize::MAX,
        };
        (client, End { rx: b, tx: a, step })
    }

    impl AsyncRead for End {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut pipe = self.rx.lock().unwrap();
            if pipe.bytes.is_empty() {
                return if pipe.closed {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            }
            let n = out.len().min(self.step).min(pipe.bytes.len());
            for (slot, byte) in out.iter_mut().zip(pipe.bytes.drain(..n)) {
                *slot = byte;
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for End {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.tx.lock().unwrap().bytes.extend(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.tx.lock().unwrap().closed = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Polls `a` and `b` in turn until both are done (in-memory pipes always make progress
    /// when polled again).
    fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
        let mut joined = std::pin::pin!(futures_util::future::join(a, b));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1_000_000 {
            if let Poll::Ready(out) = joined.as_mut().poll(&mut cx) {
                return out;
            }
        }
        panic!("no progress");
    }

    fn configs(alpn: &[&[u8]]) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let certified =
            rustls::sign::CertifiedKey::from_der(vec![der.clone()], key, &crate::tls::provider())
                .unwrap();
        let server = crate::tls::server_config(crate::tls::Certificates::new(certified));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        (Arc::new(server), Arc::new(client))
    }

    fn connect(
        client: End,
        config: Arc<rustls::ClientConfig>,
    ) -> TlsHandshake<End, UnbufferedClientConnection> {
        TlsStream::connect(client, config, ServerName::try_from("localhost").unwrap())
    }

    /// Bytes both ways, of every size up to several records, read in small and large steps,
    /// with the server's socket giving `step` bytes at a time; the first request goes out with
    /// the client's last handshake message. Between messages the stream keeps no buffer.
    #[test]
    fn bytes_go_both_ways_whole_and_in_order() {
        for step in [1, 7, 4096, usize::MAX] {
            let (client, server) = pair(step);
            let (server_config, client_config) = configs(&[b"http/1.1"]);
            let (client, server) = both(
                async {
                    let mut client = connect(client, client_config).await.unwrap();
                    client.write_all(b"first").await.unwrap();
                    client.flush().await.unwrap();
                    client
                },
                TlsStream::accept(server, server_config),
            );
            let (mut client, mut server) = (client, server.unwrap());
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
            for size in [5, 1, 100, 16 * 1024, 16 * 1024 + 5, 200_000] {
                let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                let expected = message.clone();
                let check = expected.clone();
                let skip = if size == 5 { 0 } else { usize::MAX };
                let (echoed, ()) = both(
                    async {
                        if skip != 0 {
                            client.write_all(&message).await.unwrap();
                            client.flush().await.unwrap();
                        }
                        let mut back = vec![0; size];
                        client.read_exact(&mut back).await.unwrap();
                        back
                    },
                    async {
                        let mut got = vec![0; size];
                        let mut at = 0;
                        while at < size {
                            let chunk = (size - at).min(if size > 1000 { 3000 } else { 1 });
                            let n = server.read(&mut got[at..at + chunk]).await.unwrap();
                            assert!(n > 0, "no end of stream in the middle");
                            at += n;
                        }
                        if size == 5 {
                            assert_eq!(got, b"first", "sent with the handshake");
                        } else {
                            assert_eq!(got, check, "step {step}, size {size}");
                        }
                        // Two writes: a header and its payload, as a frame goes out.
                        let (head, tail) = got.split_at(size.min(4));
                        let bufs = [IoSlice::new(head), IoSlice::new(tail)];
                        let mut sent = 0;
                        while sent < size {
                            let n = futures_util::future::poll_fn(|cx| {
                                let bufs: Vec<IoSlice<'_>> = if sent < head.len() {
                                    vec![IoSlice::new(&head[sent..]), bufs[1]]
                                } else {
                                    vec![IoSlice::new(&tail[sent - head.len()..])]
                                };
                                Pin::new(&mut server).poll_write_vectored(cx, &bufs)
                            })
                            .await
                            .unwrap();
                            sent += n;
                        }
                        server.flush().await.unwrap();
                    },
                );
                let sent = if size == 5 { &b"first"[..] } else { &expected };
                assert_eq!(echoed, sent, "echoed, step {step}, size {size}");
                assert_eq!(server.incoming.capacity(), 0, "step {step}, size {size}");
                assert_eq!(server.plain.capacity(), 0);
                assert_eq!(server.outgoing.buf.capacity(), 0);
            }
        }
    }

    /// `close` sends `close_notify`, which the client reads as the end of the stream; the
    /// client's `close_notify` is the end of the server's.
    #[test]
    fn close_notify_both_ways() {
        let (client, server) = pair(usize::MAX);
        let (server_config, client_config) = configs(&[]);
        let (client, server) = both(
            connect(client, client_config),
            TlsStream::accept(server, server_config),
        );
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        assert_eq!(server.alpn_protocol(), None);
        let (read, ()) = both(
            async {
                let mut all = Vec::new();
                client.read_to_end(&mut all).await.unwrap();
                all
            },
            async {
                server.write_all(b"bye").await.unwrap();
                server.close().await.unwrap();
            },
        );
        assert_eq!(read, b"bye");
        let mut buf = [0; 8];
        let (closed, n) = both(client.close(), server.read(&mut buf));
        closed.unwrap();
        assert_eq!(n.unwrap(), 0);
    }

    /// A client that does not speak TLS gets an alert and the handshake fails with an error
    /// that says why; one that leaves mid-handshake or mid-record is an error too.
    #[test]
    fn bad_input_is_an_error() {
        let (client, server) = pair(usize::MAX);
        let (server_config, _) = configs(&[]);
        let rx = Arc::clone(&client.rx);
        let mut client = client;
        let (_, accepted) = both(
            async {
                client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            },
            TlsStream::accept(server, server_config.clone()),
        );
        let error = accepted.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        let answer: Vec<u8> = rx.lock().unwrap().bytes.iter().copied().collect();
        assert_eq!(answer.first(), Some(&21), "an alert record: {answer:?}");

        // A client that does not trust the server's certificate refuses it, and the server
        // hears why.
        let (client, server) = pair(usize::MAX);
        let (_, trusting_another) = configs(&[]);
        let (connected, accepted) = both(
            connect(client, trusting_another),
            TlsStream::accept(server, server_config.clone()),
        );
        let error = connected.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(error.to_string().contains("certificate"), "{error}");
        assert!(accepted.is_err());

        // Two handshake messages in one record, the first a malformed ClientHello: an error,
        // with the second one still waiting in rustls.
        let (mut client, server) = pair(usize::MAX);
        let rx = Arc::clone(&client.rx);
        let (_, accepted) = both(
            async {
                let messages = [
                    [1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef],
                    [1, 0, 0, 4, 1, 2, 3, 4],
                ];
                let mut record = vec![22, 3, 1, 0, 16];
                record.extend(messages.iter().flatten());
                client.write_all(&record).await.unwrap();
            },
            TlsStream::accept(server, server_config.clone()),
        );
        let error = accepted.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        let answer: Vec<u8> = rx.lock().unwrap().bytes.iter().copied().collect();
        assert_eq!(answer.first(), Some(&21), "an alert record: {answer:?}");

        let (mut client, server) = pair(usize::MAX);
        let (_, accepted) = both(
            async {
                // The start of a ClientHello record, then the end of the connection.
                client.write_all(&[22, 3, 1, 0, 200, 1, 0]).await.unwrap();
                client.close().await.unwrap();
            },
            TlsStream::accept(server, server_config),
        );
        assert!(accepted.is_err());
    }

    /// A small deterministic generator for the mutations below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Changes `bytes` in one of a few ways that keep some of the TLS record structure.
    fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            bytes.push(23);
        }
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(7) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => bytes.truncate(at),
                3 => {
                    // Repeat a stretch: several handshake messages in one record, records
                    // twice over.
                    let len = rng.below(64).min(bytes.len() - at);
                    let stretch = bytes[at..at + len].to_vec();
                    let to = rng.below(bytes.len());
                    bytes.splice(to..to, stretch);
                }
                4 => {
                    let extra: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, extra);
                }
                5 if bytes.len() >= 5 => {
                    // A record or handshake length that lies.
                    let len = rng.below(70_000) as u16;
                    bytes[3..5].copy_from_slice(&len.to_be_bytes());
                }
                _ => {
                    if bytes.len() > 9 {
                        bytes[6..9]
                            .copy_from_slice(&(rng.below(1 << 17) as u32).to_be_bytes()[1..]);
                    }
                }
            }
            if bytes.is_empty() {
                bytes.push(22);
            }
        }
    }

    /// How many rounds a mangling test runs, and from which seed: `ANYWS_TLS_MANGLE_ROUNDS`
    /// (a multiple of the default) and `ANYWS_TLS_MANGLE_SEED` make a longer or another run.
    fn mangling(rounds: usize, seed: u64) -> (usize, Rng) {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let times = env("ANYWS_TLS_MANGLE_ROUNDS").unwrap_or(1) as usize;
        (
            rounds * times,
            Rng(seed ^ env("ANYWS_TLS_MANGLE_SEED").unwrap_or(0) | 1),
        )
    }

    /// Polls `future` until it is ready, or gives up.
    fn finish<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        (0..100_000).find_map(|_| match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    }

    /// Mangled ClientHellos, cut into reads of every size and followed by the end of the
    /// connection: the handshake always ends, with an error, and nothing panics.
    #[test]
    fn mangled_handshakes_end_in_an_error() {
        let (server_config, client_config) = configs(&[b"http/1.1"]);
        let (client, _) = pair(usize::MAX);
        let tx = Arc::clone(&client.tx);
        assert!(
            finish(connect(client, client_config)).is_none(),
            "waits for the server"
        );
        let hello: Vec<u8> = tx.lock().unwrap().bytes.iter().copied().collect();
        assert_eq!(hello[0], 22, "a handshake record");
        let (rounds, mut rng) = mangling(3000, 0x9e37_79b9_7f4a_7c15);
        for round in 0..rounds {
            let mut input = hello.clone();
            mutate(&mut rng, &mut input);
            let (client, server) = pair(1 + rng.below(600));
            {
                let mut pipe = client.tx.lock().unwrap();
                pipe.bytes.extend(&input);
                pipe.closed = true;
            }
            match finish(TlsStream::accept(server, server_config.clone())) {
                Some(Err(_)) => {}
                Some(Ok(_)) => panic!("round {round}: a handshake from half a conversation"),
                None => panic!("round {round}: the handshake did not end: {input:?}"),
            }
        }
    }

    /// After a real handshake, mangled records: each read ends in plaintext or an error, and
    /// nothing panics.
    #[test]
    fn mangled_records_end_in_an_error() {
        let (server_config, client_config) = configs(&[]);
        let (rounds, mut rng) = mangling(300, 0x2545_f491_4f6c_dd1d);
        for round in 0..rounds {
            let (client, server) = pair(1 + rng.below(5000));
            let to_server = Arc::clone(&client.tx);
            let (client, server) = both(
                connect(client, client_config.clone()),
                TlsStream::accept(server, server_config.clone()),
            );
            let (mut client, mut server) = (client.unwrap(), server.unwrap());
            let message: Vec<u8> = (0..rng.below(40_000)).map(|i| i as u8).collect();
            finish(async {
                client.write_all(&message).await.unwrap();
                client.flush().await.unwrap();
            })
            .unwrap();
            {
                let mut pipe = to_server.lock().unwrap();
                let mut bytes: Vec<u8> = pipe.bytes.drain(..).collect();
                mutate(&mut rng, &mut bytes);
                pipe.bytes.extend(bytes);
                pipe.closed = true;
            }
            let read = finish(async {
                let mut all = Vec::new();
                server.read_to_end(&mut all).await.map(|_| all)
            });
            match read {
                Some(_) => {}
                None => panic!("round {round}: the read did not end"),
            }
            assert!(server.incoming.len() <= MAX_KEPT);
        }
    }
}
