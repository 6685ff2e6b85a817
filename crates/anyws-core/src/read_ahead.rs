//! Reads from the socket in large steps through one buffer per thread, not one per connection.
//!
//! A buffer per connection costs every idle connection its size in memory (tungstenite
//! allocates and zero-fills 128 KiB by default); a small one costs a system call per few KiB of
//! a large message. Here each socket read goes into a 64 KiB buffer shared by every connection
//! of the thread, and the frame reader parses it in place (see [`crate::ws`]): an idle
//! connection keeps no read buffer at all, and a 16 KiB message is one system call. Only what a
//! read holds past the event the connection handles next is copied out and kept until used,
//! bounded by the shared buffer's size.

use futures_io::AsyncRead;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most read from the socket at a time, and the size of each thread's shared buffer.
pub(crate) const READ_AHEAD_SIZE: usize = 64 * 1024;

thread_local! {
    static SHARED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Polls `io` for up to [`READ_AHEAD_SIZE`] bytes through the thread's shared buffer and hands
/// what arrived to `f`, whose result this returns; `Ready(Ok(None))` at the end of the stream.
pub(crate) fn poll_read_shared<S, R>(
    io: &mut S,
    cx: &mut Context<'_>,
    f: impl FnOnce(&[u8]) -> R,
) -> Poll<io::Result<Option<R>>>
where
    S: AsyncRead + Unpin,
{
    SHARED.with(|shared| {
        let mut own;
        let mut borrowed;
        let buf: &mut Vec<u8> = match shared.try_borrow_mut() {
            Ok(guard) => {
                borrowed = guard;
                &mut borrowed
            }
            // Only if `io`'s own read reads another connection on this thread: a buffer of its
            // own for this one read.
            Err(_) => {
                own = Vec::new();
                &mut own
            }
        };
        if buf.len() < READ_AHEAD_SIZE {
            buf.resize(READ_AHEAD_SIZE, 0);
        }
        loop {
            return match Pin::new(&mut *io).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(n)) => Poll::Ready(Ok(Some(f(&buf[..n.min(buf.len())])))),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::Cursor;

    /// Every byte of a large input reaches `f` once, in order, in steps of at most 64 KiB; then
    /// the end of the stream.
    #[test]
    fn reads_every_byte_in_order() {
        let input: Vec<u8> = (0..200_000_u32).map(|i| (i % 253) as u8).collect();
        let mut io = Cursor::new(input.clone());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut output = Vec::new();
        loop {
            match poll_read_shared(&mut io, &mut cx, |bytes| {
                assert!(bytes.len() <= READ_AHEAD_SIZE);
                output.extend_from_slice(bytes)
            }) {
                Poll::Ready(Ok(Some(()))) => {}
                Poll::Ready(Ok(None)) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(output, input);
    }
}
