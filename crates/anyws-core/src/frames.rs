//! Outgoing data frames, encoded and written by anyws itself rather than by tungstenite.
//!
//! A server sends every data message as one unmasked, unfragmented frame: a header of 2 to 10
//! bytes and the payload. tungstenite's general write path (message checks, a `Frame` value,
//! its own buffer bookkeeping) cost about half of the server's instructions per delivered
//! message in the chat-room benchmark; encoding the header here and copying the payload once
//! into a per-connection buffer does the same job for a fraction. Control frames (close, ping)
//! and tungstenite's automatic replies (pong, the close answer) still go through tungstenite.
//!
//! The two writers share one socket, so a frame of one must never be cut by bytes of the other.
//! The connection driver keeps to two rules: tungstenite is flushed before these frames are
//! written, and nothing calls into tungstenite (whose reads may write a pong) while these frames
//! are only partly written.

use futures_io::AsyncWrite;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The opcode of a text frame.
pub(crate) const TEXT: u8 = 0x1;
/// The opcode of a binary frame.
pub(crate) const BINARY: u8 = 0x2;

/// A buffer of encoded frames bigger than this is given back once written, so a burst does not
/// leave a large buffer behind on an idle connection.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Encoded data frames waiting to be written to the socket.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
}

impl Frames {
    /// Bytes encoded and not yet written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.written
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one final (unfragmented), unmasked frame with `opcode` and `payload`.
    pub(crate) fn encode(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.buf.reserve(10 + len);
        self.buf.push(0x80 | opcode);
        if len < 126 {
            self.buf.push(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.buf.push(126);
            self.buf.extend_from_slice(&len.to_be_bytes());
        } else {
            self.buf.push(127);
            self.buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.buf.extend_from_slice(payload);
    }

    /// Writes everything encoded to `io`. `Ready(Ok)` once all of it is written (not flushed).
    pub(crate) fn poll_write_to<S>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        while self.written < self.buf.len() {
            match Pin::new(&mut *io).poll_write(cx, &self.buf[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.written = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    /// Each frame parses back, with tungstenite's own parser, to its opcode and payload.
    #[test]
    fn frames_parse_back_with_tungstenite() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut frames = Frames::default();
            frames.encode(BINARY, &payload);
            frames.encode(TEXT, b"after");
            let mut cursor = io::Cursor::new(&frames.buf[..]);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(
                header.opcode,
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Binary
                )
            );
            assert_eq!(length, len as u64);
            let start = cursor.position() as usize;
            assert_eq!(&frames.buf[start..start + len], &payload[..]);
            let mut rest = io::Cursor::new(&frames.buf[start + len..]);
            let (header, length) = FrameHeader::parse(&mut rest).unwrap().unwrap();
            assert_eq!(length, 5);
            assert_eq!(
                header.opcode,
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Text
                )
            );
        }
    }

    /// A writer that takes at most 3 bytes a call and is not ready every other call.
    struct Trickle {
        out: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Partial writes resume where they stopped, and the buffer is empty afterwards.
    #[test]
    fn partial_writes_resume() {
        let mut frames = Frames::default();
        frames.encode(TEXT, b"hello");
        frames.encode(BINARY, &[7; 300]);
        let expected = frames.buf.clone();
        let mut io = Trickle {
            out: Vec::new(),
            calls: 0,
        };
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pendings = 0;
        loop {
            match frames.poll_write_to(&mut cx, &mut io) {
                Poll::Ready(result) => {
                    result.unwrap();
                    break;
                }
                Poll::Pending => pendings += 1,
            }
            assert!(!frames.is_empty());
        }
        assert!(pendings > 0);
        assert!(frames.is_empty());
        assert_eq!(io.out, expected);
    }
}
