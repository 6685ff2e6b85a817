//! Fail-fast UTF-8 checking of incoming text messages.
//!
//! tungstenite reads a whole frame before it looks at its payload, so invalid UTF-8 early in a
//! large text frame (or in a frame that arrives slowly) is only noticed once the frame is
//! complete. [`Utf8Sentry`] sits between the socket and tungstenite: it follows the client's frame
//! headers in the byte stream, unmasks the payload of text frames (and of the continuation frames
//! of a text message) as it goes by, and fails the read as soon as a byte makes the text invalid.
//! The driver then closes the peer with 1007 (RFC 6455, section 8.1: "fail the connection" as
//! soon as invalid data is seen).
//!
//! Anything it does not expect (reserved bits or opcodes, an unmasked frame, a continuation
//! without a message) it leaves to tungstenite, which rejects it; from then on it only passes
//! bytes through. It never buffers: its state is a few bytes per connection.

use futures_io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The marker inside the `io::Error` a [`Utf8Sentry`] fails a read with.
#[derive(Debug)]
struct InvalidUtf8;

impl std::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid UTF-8 in a text message")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Whether `error` is the one a [`Utf8Sentry`] fails a read with.
pub(crate) fn is_invalid_utf8(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<InvalidUtf8>())
}

/// An incremental UTF-8 validator: feed it bytes in any pieces.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utf8Validator {
    /// Continuation bytes still expected.
    need: u8,
    /// The range the next continuation byte must fall in.
    lower: u8,
    upper: u8,
}

impl Utf8Validator {
    /// Feeds one byte; false when the text can no longer be valid UTF-8.
    #[inline]
    fn push(&mut self, b: u8) -> bool {
        if self.need == 0 {
            let (need, lower, upper) = match b {
                0x00..=0x7F => return true,
                0xC2..=0xDF => (1, 0x80, 0xBF),
                0xE0 => (2, 0xA0, 0xBF),
                0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
                0xED => (2, 0x80, 0x9F),
                0xF0 => (3, 0x90, 0xBF),
                0xF1..=0xF3 => (3, 0x80, 0xBF),
                0xF4 => (3, 0x80, 0x8F),
                _ => return false,
            };
            *self = Self { need, lower, upper };
            true
        } else if (self.lower..=self.upper).contains(&b) {
            self.need -= 1;
            self.lower = 0x80;
            self.upper = 0xBF;
            true
        } else {
            false
        }
    }

    /// Feeds `chunk` unmasked with `mask` starting at mask index `at`: the mask index after it,
    /// or `None` when the text can no longer be valid. ASCII goes eight bytes at a time.
    fn validate_masked(&mut self, chunk: &[u8], mask: [u8; 4], mut at: usize) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.need == 0 {
                if let Some(word) = chunk.get(i..i + 8) {
                    let m = [
                        mask[at],
                        mask[(at + 1) & 3],
                        mask[(at + 2) & 3],
                        mask[(at + 3) & 3],
                    ];
                    let mask_word =
                        u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
                    let mut bytes = [0; 8];
                    bytes.copy_from_slice(word);
                    if (u64::from_ne_bytes(bytes) ^ mask_word) & 0x8080_8080_8080_8080 == 0 {
                        // Eight ASCII bytes; the mask index is where it was.
                        i += 8;
                        continue;
                    }
                }
            }
            if !self.push(chunk[i] ^ mask[at]) {
                return None;
            }
            at = (at + 1) & 3;
            i += 1;
        }
        Some(at)
    }

    /// Whether the text so far ends on a character boundary.
    fn is_complete(&self) -> bool {
        self.need == 0
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a frame header: `have` bytes of it are in `header`.
    Header { header: [u8; 14], have: u8 },
    /// Inside a frame's payload.
    Payload {
        remaining: u64,
        mask: [u8; 4],
        /// Index into `mask` of the next payload byte.
        offset: u8,
        /// The payload is text to validate.
        text: bool,
        /// The frame ends its message.
        fin: bool,
    },
    /// Something tungstenite will reject came by; stop following the frames.
    Passthrough,
}

/// Follows a client's frames and validates text as it arrives; see the module docs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameScanner {
    phase: Phase,
    /// A fragmented data message is in progress.
    in_message: bool,
    /// The message in progress is text.
    in_text: bool,
    utf8: Utf8Validator,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            phase: Phase::Header {
                header: [0; 14],
                have: 0,
            },
            in_message: false,
            in_text: false,
            utf8: Utf8Validator::default(),
        }
    }
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;

impl FrameScanner {
    /// Scans the next bytes of the stream; false once a text message is known to be invalid.
    pub(crate) fn scan(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Passthrough => return true,
                Phase::Header { header, have } => {
                    let at = usize::from(*have);
                    header[at] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    let header = *header;
                    let have = usize::from(*have);
                    if let Some(needed) = header_len(&header[..have]) {
                        if have == needed && !self.start_payload(&header[..have]) {
                            return false;
                        }
                    }
                }
                Phase::Payload {
                    remaining,
                    mask,
                    offset,
                    text,
                    ..
                } => {
                    let take = bytes
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let (chunk, rest) = bytes.split_at(take);
                    bytes = rest;
                    *remaining -= take as u64;
                    if *text {
                        let mask = *mask;
                        match self.utf8.validate_masked(chunk, mask, usize::from(*offset)) {
                            Some(at) => *offset = at as u8,
                            None => return false,
                        }
                    }
                    if *remaining == 0 && !self.end_payload() {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// A complete header is in `header`: sets up its payload. False when it ends invalid text.
    fn start_payload(&mut self, header: &[u8]) -> bool {
        let fin = header[0] & 0x80 != 0;
        let reserved = header[0] & 0x70 != 0;
        let opcode = header[0] & 0x0F;
        let masked = header[1] & 0x80 != 0;
        if reserved || !masked {
            self.phase = Phase::Passthrough;
            return true;
        }
        let (length, mask_at) = match header[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        let mut mask = [0; 4];
        mask.copy_from_slice(&header[mask_at..mask_at + 4]);
        let text = match opcode {
            OP_TEXT | OP_BINARY if !self.in_message => {
                self.in_message = !fin;
                self.in_text = opcode == OP_TEXT;
                self.utf8 = Utf8Validator::default();
                self.in_text
            }
            OP_CONTINUATION if self.in_message => {
                if fin {
                    self.in_message = false;
                }
                self.in_text
            }
            // Control frames: not text, and they may come between fragments.
            0x8..=0xA => false,
            _ => {
                self.phase = Phase::Passthrough;
                return true;
            }
        };
        let data_fin = fin && opcode < 0x8;
        self.phase = Phase::Payload {
            remaining: length,
            mask,
            offset: 0,
            text,
            fin: data_fin,
        };
        if length == 0 {
            return self.end_payload();
        }
        true
    }

    /// The payload of the current frame is complete. False when it ends a text message early.
    fn end_payload(&mut self) -> bool {
        let ends_text = matches!(
            self.phase,
            Phase::Payload {
                text: true,
                fin: true,
                ..
            }
        );
        self.phase = Phase::Header {
            header: [0; 14],
            have: 0,
        };
        if ends_text {
            self.in_text = false;
            if !self.utf8.is_complete() {
                return false;
            }
        }
        true
    }
}

/// The length of the header that starts with `start`, once enough of it is known.
fn header_len(start: &[u8]) -> Option<usize> {
    if start.len() < 2 {
        return None;
    }
    let masked = if start[1] & 0x80 != 0 { 4 } else { 0 };
    Some(
        2 + masked
            + match start[1] & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            },
    )
}

/// The peer's byte stream with a [`FrameScanner`] on its reads, and the bytes the HTTP layer read
/// past the request in front.
#[derive(Debug)]
pub(crate) struct Utf8Sentry<S> {
    io: S,
    prefix: Vec<u8>,
    prefix_at: usize,
    scanner: FrameScanner,
    failed: bool,
}

impl<S> Utf8Sentry<S> {
    pub(crate) fn new(io: S, prefix: Vec<u8>) -> Self {
        Self {
            io,
            prefix,
            prefix_at: 0,
            scanner: FrameScanner::default(),
            failed: false,
        }
    }

    fn check(&mut self, read: &[u8]) -> io::Result<()> {
        if self.failed || !self.scanner.scan(read) {
            self.failed = true;
            return Err(io::Error::new(io::ErrorKind::InvalidData, InvalidUtf8));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Utf8Sentry<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(this.check(&[]).map(|()| 0));
        }
        if this.prefix_at < this.prefix.len() {
            let n = buf.len().min(this.prefix.len() - this.prefix_at);
            buf[..n].copy_from_slice(&this.prefix[this.prefix_at..this.prefix_at + n]);
            this.prefix_at += n;
            if this.prefix_at == this.prefix.len() {
                this.prefix = Vec::new();
                this.prefix_at = 0;
            }
            return Poll::Ready(this.check(&buf[..n]).map(|()| n));
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(this.check(&buf[..n]).map(|()| n)),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Utf8Sentry<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let first = (u8::from(fin) << 7) | opcode;
        crate::ws::tests::raw_frame(first, payload, [0x12, 0x34, 0x56, 0x78])
    }

    /// Scans `stream` one byte at a time; the index of the byte that failed it, if any.
    fn fails_at(stream: &[u8]) -> Option<usize> {
        let mut scanner = FrameScanner::default();
        stream.iter().position(|b| !scanner.scan(&[*b]))
    }

    #[test]
    fn validator_agrees_with_std() {
        // Every 1-, 2- and 3-byte sequence, and a sample of 4-byte ones.
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for a in 0..=255u8 {
            inputs.push(vec![a]);
            for b in 0..=255u8 {
                inputs.push(vec![a, b]);
                if a >= 0xC0 {
                    for c in (0..=255u8).step_by(7) {
                        inputs.push(vec![a, b, c]);
                        if a >= 0xF0 {
                            inputs.push(vec![a, b, c, 0x80 + (c % 64)]);
                        }
                    }
                }
            }
        }
        for input in inputs {
            let mut v = Utf8Validator::default();
            let ok = input.iter().all(|b| v.push(*b)) && v.is_complete();
            assert_eq!(ok, std::str::from_utf8(&input).is_ok(), "{input:x?}");
        }
    }

    #[test]
    fn fails_at_the_first_invalid_byte_of_a_frame() {
        let mut payload = "κόσμε".as_bytes().to_vec();
        let bad = payload.len();
        payload.extend_from_slice(&[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83]);
        payload[bad] = 0xF8;
        payload.extend_from_slice(&[b'a'; 1000]);
        let stream = frame(true, OP_TEXT, &payload);
        // The header is 2 + 2 + 4 bytes long.
        assert_eq!(fails_at(&stream), Some(8 + bad));
    }

    #[test]
    fn follows_fragments_and_control_frames() {
        let text = "Hello-µ@ßöäüàá-UTF-8!!".as_bytes();
        let mut stream = frame(false, OP_TEXT, &text[..7]);
        stream.extend(frame(true, 0x9, b"ping"));
        stream.extend(frame(false, OP_CONTINUATION, &text[7..8]));
        stream.extend(frame(true, OP_CONTINUATION, &text[8..]));
        stream.extend(frame(true, OP_BINARY, &[0xFF; 300]));
        assert_eq!(fails_at(&stream), None);

        // A character split across fragments is fine; one cut short at the end is not.
        let mut stream = frame(false, OP_TEXT, &[0xE2, 0x82]);
        stream.extend(frame(true, OP_CONTINUATION, &[0xAC]));
        assert_eq!(fails_at(&stream), None);
        let stream = frame(true, OP_TEXT, &[b'a', 0xE2, 0x82]);
        assert_eq!(fails_at(&stream), Some(stream.len() - 1));

        // Invalid in the second fragment: fails there, before the third.
        let mut stream = frame(false, OP_TEXT, b"ok");
        let second = stream.len();
        stream.extend(frame(false, OP_CONTINUATION, &[0xED, 0xA0, 0x80]));
        stream.extend(frame(true, OP_CONTINUATION, b"never"));
        assert_eq!(fails_at(&stream), Some(second + 6 + 1));
    }

    #[test]
    fn leaves_what_tungstenite_rejects_to_it() {
        // An unmasked frame: passed through, never judged.
        let mut stream = vec![0x81, 0x02, 0xFF, 0xFF];
        stream.extend(frame(true, OP_TEXT, &[0xFF]));
        assert_eq!(fails_at(&stream), None);
        // A continuation with no message.
        assert_eq!(fails_at(&frame(true, OP_CONTINUATION, &[0xFF])), None);
        // Binary and control payloads are never judged.
        assert_eq!(fails_at(&frame(true, 0x8, &[0x03, 0xE8, 0xFF])), None);
    }

    #[test]
    fn whole_reads_agree_with_byte_reads() {
        // ASCII runs of every length around the 8-byte fast path, then a bad byte or a good one.
        for run in 0..40 {
            for tail in [
                &[0xC3, 0xA9][..],
                &[0xC3, 0x28][..],
                &[0xF0, 0x9F, 0x98, 0x80][..],
            ] {
                let mut payload = vec![b'a'; run];
                payload.extend_from_slice(tail);
                payload.extend_from_slice(b"0123456789abcdef");
                let mut stream = frame(false, OP_TEXT, &payload[..run / 2]);
                stream.extend(frame(true, OP_CONTINUATION, &payload[run / 2..]));
                let valid = std::str::from_utf8(&payload).is_ok();
                assert_eq!(fails_at(&stream).is_none(), valid, "{payload:x?}");
                for cut in [1, 3, 7, 8, 13, stream.len()] {
                    let mut scanner = FrameScanner::default();
                    let ok = stream.chunks(cut).all(|c| scanner.scan(c));
                    assert_eq!(ok, valid, "reads of {cut}: {payload:x?}");
                }
            }
        }
    }

    #[test]
    fn large_lengths_need_no_memory() {
        let mut stream = vec![0x82, 0xFF];
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        stream.extend_from_slice(&[0; 4]);
        stream.extend_from_slice(&[0xFF; 64]);
        let mut scanner = FrameScanner::default();
        assert!(scanner.scan(&stream));
    }
}
