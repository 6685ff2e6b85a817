//! Outgoing frames: every frame the server sends, encoded into one buffer per connection.
//! On the client side ([`Frames::masked`]) each frame is masked with a random key of its own.
//!
//! A server sends every data message as one unmasked, unfragmented frame: a header of 2 to 10
//! bytes and the payload, copied once into the connection's buffer; a publish shares the
//! payload's bytes and each recipient copies them here. Control frames (close, ping, and the
//! pong that answers a ping) go into the same buffer, in the order the driver encodes them, so
//! one frame is never cut by another. The reading side is [`crate::ws`].

use futures_io::AsyncWrite;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The opcode of a text frame.
pub(crate) const TEXT: u8 = 0x1;
/// The opcode of a binary frame.
pub(crate) const BINARY: u8 = 0x2;
/// The opcode of a close frame.
pub(crate) const CLOSE: u8 = 0x8;
/// The opcode of a ping frame.
pub(crate) const PING: u8 = 0x9;
/// The opcode of a pong frame.
pub(crate) const PONG: u8 = 0xA;
/// The most payload a control frame may carry.
pub(crate) const MAX_CONTROL: usize = 125;
/// RSV1 in a frame's first byte: permessage-deflate's "compressed" bit.
const RSV1: u8 = 0x40;

/// A buffer of encoded frames bigger than this is given back once written, so a burst does not
/// leave a large buffer behind on an idle connection.
const KEEP_CAPACITY: usize = 4 * 1024;

/// The longest header of an unmasked frame, in bytes.
pub(crate) const MAX_HEADER: usize = 10;

/// The header of one final, unmasked frame: 2 to [`MAX_HEADER`] bytes.
pub(crate) struct Header {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl Header {
    /// The header of a frame whose first byte is `first` (FIN, RSV bits and opcode) and whose
    /// payload is `len` bytes long.
    pub(crate) fn new(first: u8, len: usize) -> Self {
        let mut bytes = [0; MAX_HEADER];
        bytes[0] = first;
        let used = if len < 126 {
            bytes[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self { bytes, len: used }
    }

    /// The header of an unfragmented data message compressed by permessage-deflate (RSV1 set)
    /// into `len` bytes; `opcode` is [`TEXT`] or [`BINARY`].
    pub(crate) fn compressed(opcode: u8, len: usize) -> Self {
        Self::new(0x80 | RSV1 | opcode, len)
    }

    /// The header of an unfragmented data message.
    pub(crate) fn data(message: &crate::Message) -> Self {
        let opcode = if message.is_text() { TEXT } else { BINARY };
        Self::new(0x80 | opcode, message.len())
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Encoded frames waiting to be written to the socket.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
    /// Every frame is masked with a random key of its own, as a client's must be.
    masked: bool,
}

impl Frames {
    /// The frames of a client: each masked with a fresh random key (RFC 6455 section 5.3).
    pub(crate) fn masked() -> Self {
        Self {
            masked: true,
            ..Self::default()
        }
    }

    /// Bytes encoded and not yet written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.written
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one final (unfragmented), unmasked frame with `opcode` and `payload`.
    pub(crate) fn encode(&mut self, opcode: u8, payload: &[u8]) {
        self.encode_with(0x80 | opcode, payload);
    }

    /// Appends a data frame like [`encode`](Frames::encode), with RSV1 set: `payload` is a
    /// message compressed with permessage-deflate.
    pub(crate) fn encode_compressed(&mut self, opcode: u8, payload: &[u8]) {
        self.encode_with(0x80 | RSV1 | opcode, payload);
    }

    fn encode_with(&mut self, first: u8, payload: &[u8]) {
        let mut header = Header::new(first, payload.len());
        if self.masked {
            header.bytes[1] |= 0x80;
        }
        self.buf.reserve(14 + payload.len());
        self.buf.extend_from_slice(header.as_slice());
        if !self.masked {
            self.buf.extend_from_slice(payload);
            return;
        }
        // A key that is never all zeros, which would leave the payload as it is.
        let key = fastrand::u32(1..).to_ne_bytes();
        self.buf.extend_from_slice(&key);
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        super::reader::unmask(&mut self.buf[start..], key);
    }

    /// Appends bytes that are already encoded: the rest of a frame that a sender began to
    /// write straight to the socket (see `Outbox::push`).
    pub(crate) fn extend_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Gives the buffer's memory back once everything in it is written: an idle connection
    /// holds none.
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            *self = Self {
                masked: self.masked,
                ..Self::default()
            };
        }
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
impl Frames {
    /// Everything encoded, taken out of the buffer.
    pub(crate) fn take_for_test(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

impl Frames {
    /// Appends a control frame (ping or pong) with `payload`, cut to the 125 bytes a control
    /// frame may carry. A pong answers a ping with the ping's payload, which is never longer.
    pub(crate) fn encode_control(&mut self, opcode: u8, payload: &[u8]) {
        self.encode(opcode, &payload[..payload.len().min(MAX_CONTROL)]);
    }

    /// Appends a close frame with `code` and `reason`, the reason cut at a character boundary
    /// to the 123 bytes that fit beside the code.
    pub(crate) fn encode_close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(MAX_CONTROL - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = [0; MAX_CONTROL];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        self.encode(CLOSE, &payload[..2 + end]);
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

    /// Close, ping and pong frames: final, unmasked, with the payload RFC 6455 gives them.
    #[test]
    fn control_frames() {
        let mut frames = Frames::default();
        frames.encode_close(1000, "bye");
        frames.encode_control(PING, b"");
        frames.encode_control(PONG, b"abc");
        assert_eq!(
            frames.buf,
            b"\x88\x05\x03\xE8bye\x89\x00\x8A\x03abc".as_slice()
        );

        // A long reason is cut at a character boundary to fit 125 bytes with the code.
        let mut frames = Frames::default();
        let reason = "é".repeat(100);
        frames.encode_close(4000, &reason);
        assert_eq!(frames.buf[..2], [0x88, 2 + 122]);
        assert_eq!(frames.buf[2..4], 4000_u16.to_be_bytes());
        assert_eq!(&frames.buf[4..], "é".repeat(61).as_bytes());
        let mut frames = Frames::default();
        frames.encode_close(1001, &"a".repeat(200));
        assert_eq!(frames.buf.len(), 2 + 125);

        // A control payload never passes 125 bytes.
        let mut frames = Frames::default();
        frames.encode_control(PING, &[1; 300]);
        assert_eq!(frames.buf[..2], [0x89, 125]);
        assert_eq!(frames.buf.len(), 2 + 125);
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
