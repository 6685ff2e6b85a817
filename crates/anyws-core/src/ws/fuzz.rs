//! [`Reader`] behind a small public face, for the fuzz targets in `fuzz/` only: reached as
//! `anyws_core::__fuzz`, hidden from the docs and not part of the API.

use bytes::Bytes;
use std::fmt;

use super::{Event as WsEvent, ReadLimits, Reader as WsReader};

/// The crate's WebSocket frame reader; see [`Reader::read`].
#[derive(Debug)]
pub struct Reader(WsReader, ReadLimits);

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
        Self(
            WsReader::new(),
            ReadLimits {
                max_message_size,
                max_frame_size,
            },
        )
    }

    /// Reads from the front of `input` up to the next event; `Ok(None)` once `input` is used up,
    /// `Err` with the close code to send when the client broke the protocol.
    pub fn read(&mut self, input: &mut &[u8]) -> Result<Option<Event>, u16> {
        match self.0.read(input, self.1) {
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

/// permessage-deflate's two sides for one connection, as negotiated from a client's offer of
/// `permessage-deflate` (with `client_max_window_bits` when `small_window`).
pub struct Deflate {
    config: super::deflate::Deflate,
    compressor: super::deflate::Compressor,
    inflater: Box<dyn super::Extension>,
}

impl fmt::Debug for Deflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Deflate {
    /// Shared (no context takeover) or dedicated (context takeover both ways), with a 9-bit
    /// window and level 1 when `small_window`.
    pub fn new(dedicated: bool, small_window: bool) -> Self {
        let mut config = if dedicated {
            super::deflate::Deflate::dedicated()
        } else {
            super::deflate::Deflate::shared()
        };
        config = config.threshold(0);
        let mut offer = String::from("permessage-deflate");
        if small_window {
            config = config.window_bits(9).mem_level(1);
            offer.push_str("; client_max_window_bits");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            http::HeaderValue::from_str(&offer).expect("a header value"),
        );
        let negotiated =
            super::deflate::negotiate(&config, &headers).expect("the offer is honoured");
        Self {
            compressor: super::deflate::Compressor::new(&negotiated),
            inflater: super::deflate::inflater(&negotiated),
            config,
        }
    }

    /// Compresses `payload` as the server sends it; `None` when it goes plain.
    pub fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let message = crate::Message::from_binary(Bytes::copy_from_slice(payload));
        self.compressor
            .compress(&self.config, &message, None, <[u8]>::to_vec)
    }

    /// Inflates a compressed message from the client to at most `max_size` bytes; `Err` with
    /// the close code to send when it cannot.
    pub fn inflate(&mut self, payload: Vec<u8>, max_size: usize) -> Result<Vec<u8>, u16> {
        self.inflater
            .decode(payload, max_size)
            .map_err(|error| error.close_code())
    }
}
