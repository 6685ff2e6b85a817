//! A tokio TCP stream shared with the senders of the WebSocket peer it carries.

use anyws_core::SharedSocket;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A tokio TCP stream behind an `Arc`, so that the WebSocket peer it ends up carrying can share
/// it with whoever sends to the peer: [`serve`](crate::serve) accepts every connection as one.
///
/// A message sent or published to a peer with nothing else to write is then written to the
/// socket by the sender itself, without waking the peer's task (see
/// [`anyws_hyper::Listener::shared_socket`]). Reads and writes through it are those of a
/// [`TcpStream`]: a read waits for readiness and reads what is there, a write writes what the
/// socket takes (a vectored write of one buffer as a plain one, see
/// [`anyws_hyper::only_buffer`]).
#[derive(Debug)]
pub struct SharedTcpStream {
    socket: Arc<Shared>,
}

/// The stream itself, as senders write to it.
#[derive(Debug)]
struct Shared(TcpStream);

/// Flags of a sender's write: no `SIGPIPE` when the client has gone, as the standard library's
/// writes ask, on the platforms that have the flag. (On Apple's platforms the standard library
/// and mio set `SO_NOSIGPIPE` on the sockets they make instead, and accepted sockets inherit
/// it.)
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
))]
const SEND_FLAGS: std::ffi::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
)))]
const SEND_FLAGS: std::ffi::c_int = 0;

/// A sender writes with `send` on the socket itself, not through tokio's `try_write`, which
/// first reads the readiness tokio last saw for the socket, kept in an allocation of its own: in
/// a publish to many idle peers that read was a cache miss for each (about 5 % of the CPU of a
/// publish to 10,000 subscribers). Nothing is lost by skipping it: when the socket is full the
/// write fails with `WouldBlock`, the sender leaves the rest to the peer's task, and the task's
/// own write, through tokio, finds the socket full as well and waits for it.
impl SharedSocket for Shared {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket2::SockRef::from(&self.0).send_vectored_with_flags(bufs, SEND_FLAGS)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(&self.0).send_with_flags(buf, SEND_FLAGS)
    }
}

impl SharedTcpStream {
    /// Wraps `stream`.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            socket: Arc::new(Shared(stream)),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.socket.0
    }

    /// Another handle on the stream, which senders write to.
    pub(crate) fn shared(&self) -> Arc<dyn SharedSocket> {
        self.socket.clone()
    }
}

impl From<TcpStream> for SharedTcpStream {
    fn from(stream: TcpStream) -> Self {
        Self::new(stream)
    }
}

impl AsyncRead for SharedTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.socket.0;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            // A read that finds nothing clears the readiness, and the next poll waits. So does
            // one that got less than it asked for, which emptied the socket (on Unix, whose
            // readiness is edge-triggered), as tokio's own `TcpStream` read does: the next
            // read then waits for the socket rather than making a system call that finds
            // nothing. (`try_io` clears the readiness seen before the read, not an event that
            // came since.)
            let wanted = buf.remaining();
            let mut short = false;
            let read = stream.try_io(Interest::READABLE, || {
                let n = stream.try_read_buf(buf)?;
                if cfg!(unix) && n > 0 && n < wanted {
                    short = true;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !short => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Ready(Ok(())),
                result => return Poll::Ready(result.map(drop)),
            }
        }
    }
}

impl SharedTcpStream {
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let stream = &self.socket.0;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match write(stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for SharedTcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match anyws_hyper::only_buffer(bufs) {
            Some(buf) => self.poll_with(cx, |stream| stream.try_write(buf)),
            None => self.poll_with(cx, |stream| stream.try_write_vectored(bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&self.socket.0).shutdown(Shutdown::Write))
    }
}
