//! An `async-io` TCP stream that waits for readiness after a short read.

use anyws_hyper::FuturesIo;
use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};
use hyper::rt::ReadBufCursor;
use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// A TCP stream of `async-io` (the reactor under smol and async-std) that, once a read came
/// back short, waits for the socket to become readable before it reads again.
///
/// `async-io`'s own streams try every read first and only wait for readiness once the read
/// found nothing (`EAGAIN`): for a peer that sends one message at a time, that is a read that
/// finds nothing on every message (two on async-std's stream). A
/// read that returns fewer bytes than asked for has emptied the socket's receive queue, so
/// this stream goes straight to [`Async::poll_readable`] on the next read: one read per
/// arrival, as on tokio. Readiness is only ever a hint; a read that still finds nothing waits
/// again, and the end of the stream and errors pass through as they come.
///
/// Writes go straight to the socket as on `async-io`'s streams (a vectored write of one buffer
/// as a plain one, see [`anyws_hyper::only_buffer`]); closing shuts down the
/// writing half. It implements hyper's I/O traits as well as `futures-io`'s: the
/// [serving functions](crate::serve) hand it to hyper for every accepted connection, and it
/// serves any other hyper service on `async-io` the same way. For hyper, a read goes through
/// [`FuturesIo`]'s buffer of the thread and only what it returned is copied into hyper's.
#[derive(Debug)]
pub struct ReadyStream {
    io: Arc<Async<TcpStream>>,
    /// The last read came back short or found nothing: the next one waits for readability.
    drained: bool,
}

impl ReadyStream {
    /// Wraps a registered stream; it may be shared with other handles, but only this one
    /// should read from it.
    pub fn new(io: Arc<Async<TcpStream>>) -> Self {
        Self { io, drained: false }
    }

    /// The registered stream.
    pub fn get_ref(&self) -> &Async<TcpStream> {
        &self.io
    }

    /// Another handle on the registered stream, for writing to it beside this one (as
    /// [`anyws_hyper::Listener::shared_socket`] does).
    pub fn shared(&self) -> Arc<Async<TcpStream>> {
        self.io.clone()
    }
}

impl From<Async<TcpStream>> for ReadyStream {
    fn from(io: Async<TcpStream>) -> Self {
        Self::new(Arc::new(io))
    }
}

impl From<smol::net::TcpStream> for ReadyStream {
    fn from(stream: smol::net::TcpStream) -> Self {
        Self::new(stream.into())
    }
}

impl TryFrom<TcpStream> for ReadyStream {
    type Error = io::Error;

    /// Puts `stream` in non-blocking mode and registers it with the `async-io` reactor.
    fn try_from(stream: TcpStream) -> io::Result<Self> {
        Ok(Self::from(Async::new(stream)?))
    }
}

impl AsyncRead for ReadyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.drained {
                // `Pending` registers the waker and arms the socket's interest; the kernel reports
                // data that arrived before the arming as well, so nothing since the short read
                // goes unnoticed. `Ready` only for an event delivered after the last `Pending`.
                ready!(this.io.poll_readable(cx))?;
                this.drained = false;
            }
            match this.io.get_ref().read(buf) {
                Ok(n) => {
                    this.drained = n > 0 && n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.drained = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::rt::Read for ReadyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Through the thread's buffer of `FuturesIo`, which copies only what the read returned.
        hyper::rt::Read::poll_read(Pin::new(&mut FuturesIo::new(&mut *self)), cx, buf)
    }
}

impl hyper::rt::Write for ReadyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write_vectored(self, cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }
}

impl AsyncWrite for ReadyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match anyws_hyper::only_buffer(bufs) {
            Some(buf) => Pin::new(&mut &*self.io).poll_write(cx, buf),
            None => Pin::new(&mut &*self.io).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{AsyncReadExt, AsyncWriteExt};

    /// A pair of connected streams: the `ReadyStream` and the peer writing to it.
    async fn pair() -> (ReadyStream, Async<TcpStream>) {
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let client = Async::<TcpStream>::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (ReadyStream::from(server), client)
    }

    /// Short reads, reads that wait for data sent after them, and the end of the stream after
    /// a short read.
    #[test]
    fn reads_across_waits_and_ends() {
        smol::block_on(async {
            let (mut stream, mut peer) = pair().await;
            let mut buf = [0; 64];
            peer.write_all(b"hello").await.unwrap();
            assert_eq!(stream.read(&mut buf).await.unwrap(), 5);
            assert!(stream.drained);
            // The next read waits for readiness, then reads what came after the short read.
            let reader = smol::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0; 3];
                loop {
                    match stream.read(&mut buf).await.unwrap() {
                        0 => return got,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
            for chunk in [&b"one"[..], b"two!", b"3"] {
                async_io::Timer::after(std::time::Duration::from_millis(20)).await;
                peer.write_all(chunk).await.unwrap();
            }
            peer.get_ref().shutdown(Shutdown::Write).unwrap();
            assert_eq!(reader.await, b"onetwo!3");
        });
    }

    /// Through hyper's trait, into an uninitialized buffer: every byte of an input larger than
    /// the thread's buffer arrives in order, then the end.
    #[test]
    fn reads_for_hyper() {
        smol::block_on(async {
            let (mut stream, mut peer) = pair().await;
            let input: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
            let writer = smol::spawn({
                let input = input.clone();
                async move {
                    peer.write_all(&input).await.unwrap();
                    peer.get_ref().shutdown(Shutdown::Write).unwrap();
                }
            });
            let mut got = Vec::new();
            let mut storage = vec![std::mem::MaybeUninit::uninit(); 100_000];
            loop {
                let mut buf = hyper::rt::ReadBuf::uninit(&mut storage);
                std::future::poll_fn(|cx| {
                    hyper::rt::Read::poll_read(Pin::new(&mut stream), cx, buf.unfilled())
                })
                .await
                .unwrap();
                let filled = buf.filled();
                assert!(
                    filled.len() <= 64 * 1024,
                    "at most the thread buffer at a time"
                );
                if filled.is_empty() {
                    break;
                }
                got.extend_from_slice(filled);
            }
            writer.await;
            assert_eq!(got, input);
        });
    }

    /// Writes go through, and closing shuts down the writing half: the peer sees the end.
    #[test]
    fn writes_and_closes() {
        smol::block_on(async {
            let (mut stream, mut peer) = pair().await;
            stream.write_all(b"abc").await.unwrap();
            stream.close().await.unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"abc");
        });
    }
}
