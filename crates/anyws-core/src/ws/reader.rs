//! The frame parser and message assembler; see the [module docs](super).

use bytes::Bytes;

use super::{is_valid_close_code, Event, Extension, ReadError};
use crate::ws::frames::{BINARY, CLOSE, MAX_CONTROL, PING, PONG, TEXT};

/// The opcode of a continuation frame.
const CONTINUATION: u8 = 0x0;
/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Reads a client's frames out of the bytes it sends; see the [module docs](super).
///
/// It lives in every peer's task, so what only a message in progress needs is boxed apart
/// ([`Progress`]): an idle reader holds no heap memory.
#[derive(Debug)]
pub(crate) struct Reader {
    extension: Option<Box<dyn Extension>>,
    /// The frame whose payload is being read.
    frame: Option<Frame>,
    /// The start of a frame header that was split across reads.
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// [`CLIENT`] and [`CLOSED`].
    flags: u8,
    /// The message or control frame in progress, or the error the reader failed with; `None`
    /// between messages.
    progress: Option<Box<Progress>>,
}

/// The reader reads as a client: frames must be unmasked (a server's frames never are), where a
/// server's reader wants them masked.
const CLIENT: u8 = 1;
/// A close frame was read; anything after it is ignored.
const CLOSED: u8 = 2;

/// What the reader holds while a message is in progress.
#[derive(Debug, Default)]
struct Progress {
    /// The data message in progress.
    message: Option<Partial>,
    /// The payload so far of a control frame split across reads.
    control: Vec<u8>,
    /// The client broke the protocol; every read fails with this.
    failed: Option<ReadError>,
}

/// A frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct Frame {
    opcode: u8,
    fin: bool,
    /// RSV1, which only an [`Extension`] allows, on the first frame of a data message.
    rsv1: bool,
    /// Payload bytes still to come.
    remaining: usize,
    /// The masking key, rotated so that the next payload byte is unmasked with `mask[0]`.
    mask: [u8; 4],
}

/// A data message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// The first frame had RSV1: the payload is for the [`Extension`] to decode.
    transformed: bool,
    payload: Vec<u8>,
    /// `payload[..checked]` is valid UTF-8 that ends on a character boundary; what follows
    /// (at most 3 bytes) is the start of a character still arriving.
    checked: usize,
}

impl Partial {
    /// Checks the text that arrived since the last call: fails at the first invalid byte, and
    /// leaves an incomplete character at the end for the bytes that complete it.
    fn check_utf8(&mut self) -> Result<(), ReadError> {
        match simdutf8::compat::from_utf8(&self.payload[self.checked..]) {
            Ok(_) => self.checked = self.payload.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(ReadError::InvalidUtf8),
        }
        Ok(())
    }
}

/// The sizes a [`Reader`] accepts, in bytes: passed to each [`Reader::read`] rather than kept in
/// every connection's reader.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadLimits {
    /// The largest message, whole (and, with an extension, once decoded).
    pub(crate) max_message_size: usize,
    /// The largest frame payload.
    pub(crate) max_frame_size: usize,
}

impl Reader {
    /// A reader, between messages.
    pub(crate) fn new() -> Self {
        Self {
            extension: None,
            frame: None,
            header: [0; MAX_HEADER],
            header_len: 0,
            flags: 0,
            progress: None,
        }
    }

    /// Reads as a client: the server's frames are unmasked, and a masked one is a protocol error
    /// ([`ReadError::Masked`]).
    pub(crate) fn client(mut self) -> Self {
        self.flags |= CLIENT;
        self
    }

    /// Sets the extension negotiated for this connection, which gives RSV1 its meaning.
    pub(crate) fn with_extension(mut self, extension: Box<dyn Extension>) -> Self {
        self.extension = Some(extension);
        self
    }

    /// The heap memory the reader holds, in bytes: what it has of the message and control frame
    /// in progress. Zero between messages.
    pub(crate) fn buffered(&self) -> usize {
        self.progress.as_ref().map_or(0, |p| {
            p.message.as_ref().map_or(0, |m| m.payload.capacity()) + p.control.capacity()
        })
    }

    /// Whether the reader holds no heap memory at all, as between messages.
    #[cfg(test)]
    pub(crate) fn holds_nothing(&self) -> bool {
        self.progress.is_none()
    }

    /// The data message in progress.
    fn message(&self) -> Option<&Partial> {
        self.progress.as_ref()?.message.as_ref()
    }

    /// What is in progress, made on first need.
    fn progress(&mut self) -> &mut Progress {
        self.progress.get_or_insert_with(Box::default)
    }

    /// Reads from the front of `input`, which moves past what was read, up to the end of the
    /// next complete message or control frame: `Ok(Some(event))` then, `Ok(None)` once `input`
    /// is used up without one. Call it again with the rest of `input` while it gives events.
    ///
    /// After a close frame everything is ignored (`Ok(None)`); after an error every call fails
    /// with that error.
    ///
    /// Frames and messages past `limits` fail with [`ReadError::FrameTooBig`] and
    /// [`ReadError::MessageTooBig`].
    pub(crate) fn read(
        &mut self,
        input: &mut &[u8],
        limits: ReadLimits,
    ) -> Result<Option<Event>, ReadError> {
        if self.flags & CLOSED != 0 {
            *input = &[];
            return Ok(None);
        }
        if let Some(error) = self.progress.as_ref().and_then(|p| p.failed) {
            return Err(error);
        }
        let result = self.read_open(input, limits);
        match result {
            Err(error) => {
                self.frame = None;
                self.progress = Some(Box::new(Progress {
                    failed: Some(error),
                    ..Progress::default()
                }));
            }
            // The input is used up: with nothing in progress, the reader lets go of its box
            // (kept while a burst of messages is read, to be reused).
            Ok(_) if input.is_empty() => {
                if self.progress.as_ref().is_some_and(|p| {
                    p.message.is_none() && p.control.capacity() == 0 && p.failed.is_none()
                }) {
                    self.progress = None;
                }
            }
            Ok(_) => {}
        }
        result
    }

    fn read_open(
        &mut self,
        input: &mut &[u8],
        limits: ReadLimits,
    ) -> Result<Option<Event>, ReadError> {
        loop {
            let frame = match self.frame {
                Some(frame) => frame,
                None => match self.read_header(input, limits)? {
                    Some(frame) => frame,
                    None => return Ok(None),
                },
            };
            let take = frame.remaining.min(input.len());
            let (chunk, rest) = input.split_at(take);
            *input = rest;
            self.take_payload(&frame, chunk, limits)?;
            if take < frame.remaining {
                let mut frame = frame;
                frame.remaining -= take;
                frame.mask.rotate_left(take % 4);
                self.frame = Some(frame);
                return Ok(None);
            }
            self.frame = None;
            if let Some(event) = self.end_frame(&frame, limits)? {
                return Ok(Some(event));
            }
        }
    }

    /// Reads a frame header from `input`, or what there is of it. `Ok(None)` when `input` ended
    /// first; the header so far is kept for the next read.
    fn read_header(
        &mut self,
        input: &mut &[u8],
        limits: ReadLimits,
    ) -> Result<Option<Frame>, ReadError> {
        if input.is_empty() {
            return Ok(None);
        }
        let have = usize::from(self.header_len);
        let take = (MAX_HEADER - have).min(input.len());
        self.header[have..have + take].copy_from_slice(&input[..take]);
        let header = self.header;
        match self.parse_header(&header[..have + take], limits)? {
            Some((frame, len)) => {
                *input = &input[len - have..];
                self.header_len = 0;
                self.start_frame(&frame);
                Ok(Some(frame))
            }
            None => {
                *input = &input[take..];
                // `have + take` is below the header's length, so at most 13.
                self.header_len = (have + take) as u8;
                Ok(None)
            }
        }
    }

    /// Parses the frame header at the start of `bytes`: the frame and the header's length, or
    /// `Ok(None)` while it is incomplete. What the first two bytes say is judged as soon as they
    /// are there; the length as soon as it is.
    fn parse_header(
        &self,
        bytes: &[u8],
        limits: ReadLimits,
    ) -> Result<Option<(Frame, usize)>, ReadError> {
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        let rsv1 = first & 0x40 != 0;
        let opcode = first & 0x0F;
        if first & 0x30 != 0 {
            return Err(ReadError::ReservedBits);
        }
        match opcode {
            CONTINUATION if self.message().is_none() => {
                return Err(ReadError::UnexpectedContinuation)
            }
            TEXT | BINARY if self.message().is_some() => {
                return Err(ReadError::ExpectedContinuation)
            }
            CONTINUATION | TEXT | BINARY => {}
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(ReadError::FragmentedControl);
                }
                if usize::from(second & 0x7F) > MAX_CONTROL {
                    return Err(ReadError::ControlTooLong);
                }
            }
            _ => return Err(ReadError::ReservedOpcode(opcode)),
        }
        // The seam for extensions: RSV1 may only mark the first frame of a data message, and
        // only when an extension gives it a meaning.
        if rsv1 && !(self.extension.is_some() && matches!(opcode, TEXT | BINARY)) {
            return Err(ReadError::ReservedBits);
        }
        let masked = second & 0x80 != 0;
        if masked == (self.flags & CLIENT != 0) {
            return Err(if masked {
                ReadError::Masked
            } else {
                ReadError::Unmasked
            });
        }
        let length_bytes = match second & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if length_bytes == 8 && bytes.get(2).is_some_and(|b| b & 0x80 != 0) {
            return Err(ReadError::LengthOverflow);
        }
        let mask_len = if masked { 4 } else { 0 };
        let header_len = 2 + length_bytes + mask_len;
        if bytes.len() < header_len {
            return Ok(None);
        }
        let size = match length_bytes {
            0 => u64::from(second & 0x7F),
            2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            _ => {
                let mut be = [0; 8];
                be.copy_from_slice(&bytes[2..10]);
                u64::from_be_bytes(be)
            }
        };
        let too_big = ReadError::FrameTooBig {
            size,
            limit: limits.max_frame_size,
        };
        let remaining = usize::try_from(size).map_err(|_| too_big)?;
        if remaining > limits.max_frame_size {
            return Err(too_big);
        }
        if let Some(message) = self.message() {
            let total = message.payload.len() as u64 + size;
            if total > limits.max_message_size as u64 {
                return Err(ReadError::MessageTooBig {
                    size: total,
                    limit: limits.max_message_size,
                });
            }
        } else if matches!(opcode, TEXT | BINARY) && remaining > limits.max_message_size {
            return Err(ReadError::MessageTooBig {
                size,
                limit: limits.max_message_size,
            });
        }
        // An unmasked frame (a server's) reads as one masked with zeros, which unmasking skips.
        let mut mask = [0; 4];
        if masked {
            mask.copy_from_slice(&bytes[header_len - 4..header_len]);
        }
        let frame = Frame {
            opcode,
            fin,
            rsv1,
            remaining,
            mask,
        };
        Ok(Some((frame, header_len)))
    }

    /// A frame's header is complete: a new data message starts with its first frame.
    fn start_frame(&mut self, frame: &Frame) {
        if matches!(frame.opcode, TEXT | BINARY) {
            self.progress().message = Some(Partial {
                text: frame.opcode == TEXT,
                transformed: frame.rsv1,
                payload: Vec::new(),
                checked: 0,
            });
        }
    }

    /// Unmasks the next `chunk` of the frame's payload into the message or control frame in
    /// progress. Text is checked as it arrives.
    fn take_payload(
        &mut self,
        frame: &Frame,
        chunk: &[u8],
        limits: ReadLimits,
    ) -> Result<(), ReadError> {
        if chunk.is_empty() {
            return Ok(());
        }
        if frame.opcode & 0x08 != 0 {
            let control = &mut self.progress().control;
            let start = control.len();
            control.reserve_exact(frame.remaining);
            control.extend_from_slice(chunk);
            unmask(&mut control[start..], frame.mask);
            return Ok(());
        }
        let max_message_size = limits.max_message_size;
        let Some(message) = self.progress.as_mut().and_then(|p| p.message.as_mut()) else {
            return Err(ReadError::UnexpectedContinuation);
        };
        let payload = &mut message.payload;
        let start = payload.len();
        let needed = start + chunk.len();
        if needed > payload.capacity() {
            // Grow by doubling (a message in many pieces is copied O(1) times per byte), never
            // past the message's end when the frame is its last, nor past the limit.
            let end = if frame.fin {
                start + frame.remaining
            } else {
                max_message_size
            };
            let target = needed.max(payload.capacity().saturating_mul(2).min(end));
            payload.reserve_exact(target - start);
        }
        payload.extend_from_slice(chunk);
        unmask(&mut payload[start..], frame.mask);
        if message.text && !message.transformed {
            message.check_utf8()?;
        }
        Ok(())
    }

    /// The frame's payload is complete: the event it ends, if any.
    fn end_frame(&mut self, frame: &Frame, limits: ReadLimits) -> Result<Option<Event>, ReadError> {
        match frame.opcode {
            PING => Ok(Some(Event::Ping(self.take_control()))),
            PONG => Ok(Some(Event::Pong(self.take_control()))),
            CLOSE => {
                let payload = self.take_control();
                let close = parse_close(&payload)?;
                // Nothing more is read: a message cut short by the close is let go.
                self.flags |= CLOSED;
                self.progress = None;
                Ok(Some(Event::Close(close)))
            }
            _ if frame.fin => match self.progress.as_mut().and_then(|p| p.message.take()) {
                Some(message) => self.complete(message, limits).map(Some),
                None => Err(ReadError::UnexpectedContinuation),
            },
            _ => Ok(None),
        }
    }

    /// The payload of the control frame just read (empty when it had none).
    fn take_control(&mut self) -> Bytes {
        self.progress
            .as_mut()
            .map_or_else(Bytes::new, |p| Bytes::from(std::mem::take(&mut p.control)))
    }

    /// Hands over a complete data message. This is the one place where a whole message's payload
    /// passes through: an [`Extension`] decodes a message whose first frame had RSV1 here, and
    /// its text is checked once decoded.
    fn complete(&mut self, message: Partial, limits: ReadLimits) -> Result<Event, ReadError> {
        let Partial {
            text,
            transformed,
            mut payload,
            checked,
        } = message;
        if transformed {
            let Some(extension) = self.extension.as_mut() else {
                return Err(ReadError::ReservedBits);
            };
            payload = extension.decode(payload, limits.max_message_size)?;
            if payload.len() > limits.max_message_size {
                return Err(ReadError::MessageTooBig {
                    size: payload.len() as u64,
                    limit: limits.max_message_size,
                });
            }
            if text && simdutf8::basic::from_utf8(&payload).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
        } else if text && checked != payload.len() {
            // The text ends inside a character.
            return Err(ReadError::InvalidUtf8);
        }
        let payload = Bytes::from(payload);
        Ok(if text {
            Event::Text(payload)
        } else {
            Event::Binary(payload)
        })
    }
}

/// The code and reason of a close frame's payload.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, ReadError> {
    let [high, low, reason @ ..] = payload else {
        return if payload.is_empty() {
            Ok(None)
        } else {
            Err(ReadError::CloseTooShort)
        };
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !is_valid_close_code(code) {
        return Err(ReadError::InvalidCloseCode(code));
    }
    let reason = simdutf8::basic::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
    Ok(Some((code, reason.to_owned())))
}

/// Unmasks `payload` in place with `mask`, whose first byte applies to `payload[0]`; eight
/// bytes at a time.
pub(super) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    if mask == [0; 4] {
        return;
    }
    let [a, b, c, d] = mask;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The rest starts at a multiple of 8, so at mask index 0.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}
