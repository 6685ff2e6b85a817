//! Byte streams between hyper's I/O traits and `futures-io`.

use futures_io::{AsyncRead, AsyncWrite};
use hyper::rt::{ReadBuf, ReadBufCursor};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most a read for hyper reads at a time, and the size of each thread's buffer for them.
const HYPER_READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// Where a [`FuturesIo`] read lands before it is copied into hyper's buffer. A read takes
    /// it out and puts it back, so that a read on this thread in between (none is expected)
    /// finds it empty and fills a buffer of its own.
    static HYPER_READ: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The one buffer with bytes in `bufs`, if only one has any: what a vectored write most often
/// holds (hyper's response head without a body). Written with a plain `send` rather than `writev`, it costs the kernel
/// less: `writev` goes through the file layer (`vfs_writev`, the iovec copied in, the file
/// checks) before it reaches the socket. The runtime adapters' sockets write such a vectored
/// write as a plain one.
pub fn only_buffer<'a>(bufs: &'a [io::IoSlice<'_>]) -> Option<&'a [u8]> {
    let mut with_bytes = bufs.iter().filter(|buf| !buf.is_empty());
    match (with_bytes.next(), with_bytes.next()) {
        (Some(buf), None) => Some(buf),
        _ => None,
    }
}

/// A `futures-io` byte stream (a socket of `async-io`, for one) as a
/// hyper I/O object, which is what [`serve_connection`](crate::serve_connection) takes on
/// runtimes other than tokio.
///
/// hyper's read buffers may be uninitialized and `futures-io` reads into initialized bytes, so
/// a read lands in a buffer of the thread's (64 KiB, initialized once) and only what it
/// returned is copied into hyper's: no zeroing of the whole buffer before every read, which is
/// what a plain bridge does and what costs most for small messages on an upgraded connection.
#[derive(Debug)]
pub struct FuturesIo<T> {
    inner: T,
}

impl<T> FuturesIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self { inner }
    }

    /// The stream wrapped.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The stream wrapped, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> From<T> for FuturesIo<T> {
    fn from(inner: T) -> Self {
        Self::new(inner)
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for FuturesIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        HYPER_READ.with(|shared| {
            let mut scratch = shared.take();
            if scratch.len() < HYPER_READ_SIZE {
                scratch.resize(HYPER_READ_SIZE, 0);
            }
            let len = buf.remaining().min(HYPER_READ_SIZE);
            let polled = Pin::new(&mut self.inner).poll_read(cx, &mut scratch[..len]);
            if let Poll::Ready(Ok(n)) = polled {
                buf.put_slice(&scratch[..n]);
            }
            shared.set(scratch);
            polled.map_ok(|_| ())
        })
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for FuturesIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A hyper I/O object (such as an upgraded connection) as a `futures-io` byte stream, which is
/// what [`PendingPeer::run`](anyws_core::PendingPeer::run) takes.
#[derive(Debug)]
pub struct HyperIo<T> {
    inner: T,
}

impl<T> HyperIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self { inner }
    }

    /// Unwraps the hyper I/O object.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: hyper::rt::Read + Unpin> AsyncRead for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.inner).poll_read(cx, buf.unfilled()) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: hyper::rt::Write + Unpin> AsyncWrite for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection whose first bytes were read (to tell HTTP/2 from HTTP/1.1, and a WebSocket
/// upgrade from other requests: see [`crate::h1`]), and are read again.
pub(crate) struct Prefixed<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    /// `inner`, read from `prefix` first.
    pub(crate) fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }

    /// The stream, and what is left of the prefix (nothing, once the prefix was read): a peer
    /// runs on the stream itself, without the prefix's 32 bytes.
    pub(crate) fn into_parts(self) -> (I, Vec<u8>) {
        let mut prefix = self.prefix;
        prefix.drain(..self.at);
        (self.inner, prefix)
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}
