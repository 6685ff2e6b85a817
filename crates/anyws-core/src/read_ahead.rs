//! Reads from the socket in large steps through one buffer per thread, not one per connection.
//!
//! tungstenite reads into a buffer of its own that is allocated (and zero-filled) up front for
//! every connection, and never reads more at a time than that buffer's size. A large buffer
//! costs every idle connection its size in memory; a small one costs a system call per few KiB
//! of a large message. [`ReadAhead`] sits between the two: each socket read goes into a
//! 64 KiB buffer shared by every connection of the thread, tungstenite gets what fits in the
//! space it offers, and only the rest (if any) is kept for the connection, until tungstenite
//! has taken it. So tungstenite's own buffer can stay small, an idle connection keeps no read
//! buffer of ours, and a 16 KiB message is one system call.
//!
//! What a connection keeps between reads is bounded by the shared buffer's size: 64 KiB.

use futures_io::{AsyncRead, AsyncWrite};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most read from the socket at a time, and the size of each thread's shared buffer.
pub(crate) const READ_AHEAD_SIZE: usize = 64 * 1024;

thread_local! {
    static SHARED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A byte stream whose reads go through the thread's shared buffer; writes pass through.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Bytes read from the socket that the reader has not taken yet, from `taken` on.
    rest: Vec<u8>,
    taken: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            rest: Vec::new(),
            taken: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.taken < this.rest.len() {
            let n = buf.len().min(this.rest.len() - this.taken);
            buf[..n].copy_from_slice(&this.rest[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.rest.len() {
                // Taken entirely: give the memory back.
                this.rest = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(n));
        }
        if buf.len() >= READ_AHEAD_SIZE {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut read = |shared: &mut Vec<u8>| {
            if shared.len() < READ_AHEAD_SIZE {
                shared.resize(READ_AHEAD_SIZE, 0);
            }
            match Pin::new(&mut this.inner).poll_read(cx, &mut shared[..]) {
                Poll::Ready(Ok(got)) => {
                    let got = got.min(shared.len());
                    let n = got.min(buf.len());
                    buf[..n].copy_from_slice(&shared[..n]);
                    if got > n {
                        this.rest = shared[n..got].to_vec();
                        this.taken = 0;
                    }
                    Poll::Ready(Ok(n))
                }
                other => other,
            }
        };
        SHARED.with(|shared| match shared.try_borrow_mut() {
            Ok(mut shared) => read(&mut shared),
            // Only if the inner stream's read reads another `ReadAhead` on this thread: use a
            // buffer of its own for this one read.
            Err(_) => read(&mut Vec::new()),
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
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
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::{AsyncReadExt, Cursor};

    /// Small reads of a large input return every byte once, in order, and leave nothing kept.
    #[test]
    fn small_reads_see_every_byte_in_order() {
        let input: Vec<u8> = (0..200_000_u32).map(|i| (i % 253) as u8).collect();
        let mut reader = ReadAhead::new(Cursor::new(input.clone()));
        let mut output = Vec::new();
        let mut chunk = [0_u8; 1000];
        futures_executor_block_on(async {
            loop {
                let n = reader.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                output.extend_from_slice(&chunk[..n]);
            }
        });
        assert_eq!(output, input);
        assert!(reader.rest.is_empty() && reader.rest.capacity() == 0);
    }

    /// A read larger than the shared buffer goes straight to the stream.
    #[test]
    fn large_reads_pass_through() {
        let input = vec![7_u8; 3 * READ_AHEAD_SIZE];
        let mut reader = ReadAhead::new(Cursor::new(input.clone()));
        let mut big = vec![0_u8; 2 * READ_AHEAD_SIZE];
        let n = futures_executor_block_on(reader.read(&mut big)).unwrap();
        assert_eq!(n, 2 * READ_AHEAD_SIZE);
        assert!(reader.rest.is_empty());
    }

    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
    }
}
