//! The WebSocket protocol without I/O: both sides of RFC 6455, fed bytes and giving events.
//!
//! [`Reader`] turns the bytes a client sends into [`Event`]s (and, made with
//! [`Reader::client`], the unmasked frames a server sends). It is fed each read as it comes
//! from the socket, parses frames straight out of that buffer and unmasks their payloads into
//! the message being assembled, so no bytes are kept between reads except:
//!
//! - up to 13 bytes of a frame header split across reads, in a fixed array;
//! - the data message in progress, which never grows past `max_message_size` (nor much past
//!   twice what has arrived of it: a frame's declared length is checked, not reserved);
//! - the payload of a control frame split across reads (at most 125 bytes).
//!
//! An idle reader, between messages, holds no heap memory at all. A single-frame message whose
//! frame is in one read is unmasked into one allocation of exactly its size.
//!
//! Every violation of the protocol ends the reading with a [`ReadError`], which says which close
//! code to send: 1002 for protocol errors, 1007 for invalid UTF-8 (reported at the first invalid
//! byte, even inside a fragment or a frame still arriving), 1009 for a frame or message over the
//! limits (judged from the declared length, before anything is buffered).
//!
//! The writing side is [`frames::Frames`]: data frames, and the control frames the
//! driver sends (close, ping, and the pong that answers each ping).
//!
//! # Extensions
//!
//! Without a negotiated extension, RSV1 (like RSV2 and RSV3) is a protocol error. An
//! [`Extension`] such as permessage-deflate (RFC 7692) gives RSV1 on the first frame of a data
//! message its meaning, "this message is transformed". Such a message's payload is not checked
//! for UTF-8 as it arrives (it is compressed); it is handed whole to
//! [`Extension::decode`] at the one place where a complete message's payload passes through,
//! `Reader::complete`, and the decoded text is checked there.

pub(crate) mod deflate;
pub(crate) mod frames;
pub(crate) mod fuzz;
mod reader;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use reader::{ReadLimits, Reader};

use bytes::Bytes;
use std::fmt;

use crate::close_code;

/// What the client said: one complete message or control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A text message; its bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, to be answered with a pong of the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its code and reason if it had any. The reader reads nothing after it.
    Close(Option<(u16, String)>),
}

/// Why the client's bytes cannot be read on: the connection is to be failed with
/// [`close_code`](ReadError::close_code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A frame from the client was not masked.
    Unmasked,
    /// A frame from the server was masked (the client side of the connection).
    Masked,
    /// A reserved bit (RSV1, RSV2 or RSV3) was set without an extension that defines it.
    ReservedBits,
    /// A frame had a reserved opcode.
    ReservedOpcode(u8),
    /// A control frame was fragmented.
    FragmentedControl,
    /// A control frame had more than 125 bytes of payload.
    ControlTooLong,
    /// A continuation frame came with no message in progress.
    UnexpectedContinuation,
    /// A new data message started while a fragmented one was in progress.
    ExpectedContinuation,
    /// A 64-bit payload length had its most significant bit set.
    LengthOverflow,
    /// A close frame had a payload of one byte.
    CloseTooShort,
    /// A close frame had a code that may not be sent (RFC 6455 section 7.4).
    InvalidCloseCode(u16),
    /// A text message or a close reason was not valid UTF-8.
    InvalidUtf8,
    /// A compressed message did not inflate.
    BadCompression,
    /// A frame declared more payload than `max_frame_size`.
    FrameTooBig {
        /// The declared payload length.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A message would have grown past `max_message_size`.
    MessageTooBig {
        /// The message's size with the frame that passed the limit.
        size: u64,
        /// The limit.
        limit: usize,
    },
}

impl ReadError {
    /// The close code to fail the connection with.
    pub(crate) fn close_code(self) -> u16 {
        match self {
            Self::InvalidUtf8 | Self::BadCompression => close_code::INVALID_PAYLOAD,
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmasked => f.write_str("unmasked frame from the client"),
            Self::Masked => f.write_str("masked frame from the server"),
            Self::ReservedBits => f.write_str("reserved bits set"),
            Self::ReservedOpcode(opcode) => write!(f, "reserved opcode {opcode:#x}"),
            Self::FragmentedControl => f.write_str("fragmented control frame"),
            Self::ControlTooLong => f.write_str("control frame longer than 125 bytes"),
            Self::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            Self::ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            Self::LengthOverflow => f.write_str("payload length with its high bit set"),
            Self::CloseTooShort => f.write_str("close frame with a one-byte payload"),
            Self::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::BadCompression => f.write_str("compressed message does not inflate"),
            Self::FrameTooBig { size, limit } => {
                write!(f, "frame of {size} bytes, over the limit of {limit}")
            }
            Self::MessageTooBig { size, limit } => {
                write!(f, "message of {size} bytes, over the limit of {limit}")
            }
        }
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for crate::Error {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::InvalidUtf8 => Self::InvalidUtf8,
            ReadError::BadCompression => Self::InvalidCompression,
            ReadError::FrameTooBig { .. } | ReadError::MessageTooBig { .. } => {
                Self::MessageTooBig(error.to_string())
            }
            _ => Self::Protocol(error.to_string()),
        }
    }
}

/// A per-message extension negotiated in the handshake (RFC 6455 section 9), such as
/// permessage-deflate (RFC 7692). With one set, RSV1 on the first frame of a data message is
/// allowed and marks that message for [`decode`](Extension::decode); RSV1 elsewhere, and RSV2
/// and RSV3 always, stay protocol errors.
pub(crate) trait Extension: fmt::Debug + Send {
    /// Turns the payload of a complete message whose first frame had RSV1 set into the
    /// message's data, of at most `max_size` bytes (else [`ReadError::MessageTooBig`]).
    fn decode(&mut self, payload: Vec<u8>, max_size: usize) -> Result<Vec<u8>, ReadError>;
}

/// Whether a close frame may carry `code` (RFC 6455 section 7.4): the codes defined for use
/// (1000-1003, 1007-1011), those registered since (1012-1014), and the ranges for libraries,
/// frameworks and applications (3000-4999). Never 1004-1006 or 1015, which are reserved or
/// only reported, nor anything unassigned.
pub(crate) fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
