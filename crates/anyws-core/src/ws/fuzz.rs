//! [`Reader`] behind a small public face, for the fuzz targets in `fuzz/` only: reached as
//! `anyws_core::__fuzz`, hidden from the docs and not part of the API.

use bytes::Bytes;

use super::{Event as WsEvent, Reader as WsReader};

/// The crate's WebSocket frame reader; see [`Reader::read`].
#[derive(Debug)]
pub struct Reader(WsReader);

/// What [`Reader::read`] gives: a complete message or control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its code and reason if any.
    Close(Option<(u16, String)>),
}

impl Reader {
    /// A reader with these limits, in bytes.
    pub fn new(max_message_size: usize, max_frame_size: usize) -> Self {
        Self(WsReader::new(max_message_size, max_frame_size))
    }

    /// Reads from the front of `input` up to the next event; `Ok(None)` once `input` is used up,
    /// `Err` with the close code to send when the client broke the protocol.
    pub fn read(&mut self, input: &mut &[u8]) -> Result<Option<Event>, u16> {
        match self.0.read(input) {
            Ok(event) => Ok(event.map(|event| match event {
                WsEvent::Text(bytes) => Event::Text(bytes),
                WsEvent::Binary(bytes) => Event::Binary(bytes),
                WsEvent::Ping(bytes) => Event::Ping(bytes),
                WsEvent::Pong(bytes) => Event::Pong(bytes),
                WsEvent::Close(close) => Event::Close(close),
            })),
            Err(error) => Err(error.close_code()),
        }
    }

    /// The heap memory the reader holds, in bytes.
    pub fn buffered(&self) -> usize {
        self.0.buffered()
    }
}
