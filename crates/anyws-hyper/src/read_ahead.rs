//! Large socket reads under a client's TLS connection, through one buffer per thread.
//!
//! rustls asks its transport for at most 4 KiB at a time, so a 16 KiB record costs four or five
//! `recv` calls where a plain connection's reader takes it in one. [`ReadAhead`] sits between
//! rustls and the socket: each socket read goes into a 64 KiB buffer shared by the thread's
//! connections, rustls's read is served from it, and only what rustls did not take yet is
//! copied out and kept with the connection until its next read. An idle connection keeps
//! nothing.

use futures_io::{AsyncRead, AsyncWrite};
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most read from the socket at a time, and the size of each thread's shared buffer.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    static SHARED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one connection read from its socket and its TLS layer has not taken yet: empty, and
/// owning no memory, between the reads of an idle connection.
///
/// [`ReadAheadStream`] keeps one of these and reads through [`ReadAhead::poll_read`].
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    rest: Vec<u8>,
    taken: usize,
}

impl ReadAhead {
    /// Fills `out` from what an earlier read left, or else from one read of up to 64 KiB
    /// through `read` (which reads the socket into the buffer it is given, as `poll_read`
    /// does), keeping what does not fit in `out` for the next call. Never `Pending` while
    /// something is kept.
    pub(crate) fn poll_read(
        &mut self,
        out: &mut [u8],
        read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.taken < self.rest.len() {
            let n = out.len().min(self.rest.len() - self.taken);
            out[..n].copy_from_slice(&self.rest[self.taken..self.taken + n]);
            self.taken += n;
            if self.taken == self.rest.len() {
                self.rest = Vec::new();
                self.taken = 0;
            }
            return Poll::Ready(Ok(n));
        }
        if out.len() >= READ_SIZE {
            return read(out);
        }
        SHARED.with(|shared| {
            let mut shared = match shared.try_borrow_mut() {
                Ok(shared) => shared,
                // Only if `read` reads another such connection on this thread, which no
                // socket does: read straight into `out`.
                Err(_) => return read(out),
            };
            if shared.len() < READ_SIZE {
                shared.resize(READ_SIZE, 0);
            }
            let n = match read(&mut shared[..]) {
                Poll::Ready(Ok(n)) => n.min(READ_SIZE),
                other => return other,
            };
            let given = n.min(out.len());
            out[..given].copy_from_slice(&shared[..given]);
            if given < n {
                self.rest = shared[given..n].to_vec();
            }
            Poll::Ready(Ok(given))
        })
    }
}

/// A `futures-io` stream whose reads go through a [`ReadAhead`]; writes go straight through,
/// a vectored one with a single buffer as a plain write (see [`only_buffer`](crate::only_buffer)).
/// What the clients' TLS layer reads from.
#[derive(Debug)]
pub(crate) struct ReadAheadStream<S> {
    io: S,
    ahead: ReadAhead,
}

impl<S> ReadAheadStream<S> {
    /// Reads `io` ahead.
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            ahead: ReadAhead::default(),
        }
    }

    /// The stream read from.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAheadStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = &mut this.io;
        this.ahead
            .poll_read(out, |buf| Pin::new(io).poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAheadStream<S> {
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
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match crate::only_buffer(bufs) {
            Some(buf) => Pin::new(&mut self.io).poll_write(cx, buf),
            None => Pin::new(&mut self.io).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::Cursor;

    fn read_all(stream: &mut ReadAheadStream<Cursor<Vec<u8>>>, step: usize) -> Vec<u8> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut output = Vec::new();
        let mut buf = vec![0; step];
        loop {
            match Pin::new(&mut *stream).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(0)) => return output,
                Poll::Ready(Ok(n)) => {
                    assert!(n <= step);
                    output.extend_from_slice(&buf[..n]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Every byte reaches the reader once, in order, whatever the size of its reads; large
    /// ones straight through.
    #[test]
    fn small_and_large_reads_see_every_byte_in_order() {
        let input: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
        for step in [1, 7, 4096, 5000, READ_SIZE, READ_SIZE + 1] {
            let mut stream = ReadAheadStream::new(Cursor::new(input.clone()));
            assert_eq!(read_all(&mut stream, step), input, "reads of {step}");
            assert!(stream.ahead.rest.capacity() == 0, "nothing kept at the end");
        }
    }

    /// Records how it was written to.
    #[derive(Default)]
    struct Writes {
        plain: Vec<Vec<u8>>,
        vectored: Vec<Vec<Vec<u8>>>,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.plain.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored
                .push(bufs.iter().map(|buf| buf.to_vec()).collect());
            Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A vectored write with one buffer that holds bytes is a plain write of that buffer;
    /// with two or more it stays vectored.
    #[test]
    fn a_vectored_write_of_one_buffer_is_a_plain_write() {
        let mut stream = ReadAheadStream::new(Writes::default());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut write = |bufs: &[&[u8]]| {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|buf| IoSlice::new(buf)).collect();
            match Pin::new(&mut stream).poll_write_vectored(&mut cx, &slices) {
                Poll::Ready(Ok(n)) => n,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(write(&[b"record"]), 6);
        assert_eq!(write(&[b"", b"second", b""]), 6);
        assert_eq!(write(&[b"two", b"records"]), 10);
        let writes = &stream.io;
        assert_eq!(writes.plain, [b"record".to_vec(), b"second".to_vec()]);
        assert_eq!(
            writes.vectored,
            [vec![b"two".to_vec(), b"records".to_vec()]]
        );
        assert_eq!(crate::only_buffer(&[]), None);
    }

    /// One socket read serves several small reads, and what is kept goes once taken.
    #[test]
    fn one_socket_read_serves_small_reads() {
        let mut stream = ReadAheadStream::new(Cursor::new(vec![7_u8; 10_000]));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0; 4096];
        assert!(matches!(
            Pin::new(&mut stream).poll_read(&mut cx, &mut buf),
            Poll::Ready(Ok(4096))
        ));
        assert_eq!(stream.get_ref().position(), 10_000, "read in one step");
        assert_eq!(stream.ahead.rest.len() - stream.ahead.taken, 10_000 - 4096);
        for expected in [4096, 10_000 - 8192] {
            match Pin::new(&mut stream).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(n)) => assert_eq!(n, expected),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(stream.ahead.rest.capacity(), 0);
    }
}
