//! A permessage-deflate (RFC 7692) client of its own, independent of the server's codec: it
//! offers the extension, follows what the `101` agreed on, and compresses and inflates with
//! flate2 (raw DEFLATE, `Z_SYNC_FLUSH`, the `00 00 ff ff` tail left off on the wire and put
//! back before inflating, RFC 7692 section 7.2).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::client::*;

/// The four bytes a sync flush ends with, which RFC 7692 leaves off the wire.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The parameters of a `Sec-WebSocket-Extensions` value of one extension, such as
/// `permessage-deflate; server_no_context_takeover; client_max_window_bits=10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The extension's name, lower-case.
    pub name: String,
    /// The parameters in order: lower-case names, values without quotes.
    pub params: Vec<(String, Option<String>)>,
}

impl Agreed {
    /// Parses one extension (the whole header value; a `,` would mean several, which a
    /// response must not hold for one extension).
    pub fn parse(value: &str) -> Self {
        assert!(
            !value.contains(','),
            "the response accepts more than one extension: {value:?}"
        );
        let mut parts = value.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default().to_ascii_lowercase();
        let params = parts
            .map(|part| match part.split_once('=') {
                Some((name, value)) => (
                    name.trim().to_ascii_lowercase(),
                    Some(value.trim().trim_matches('"').to_owned()),
                ),
                None => (part.to_ascii_lowercase(), None),
            })
            .collect();
        Self { name, params }
    }

    /// Whether parameter `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(n, _)| n == name)
    }

    /// The value of `name`, a window size from 8 to 15; `None` when absent.
    pub fn bits(&self, name: &str) -> Option<u8> {
        let (_, value) = self.params.iter().find(|(n, _)| n == name)?;
        let value = value
            .as_deref()
            .unwrap_or_else(|| panic!("{name} without a value in a response: {self:?}"));
        let bits: u8 = value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number"));
        assert!((8..=15).contains(&bits), "{name}={bits} is out of range");
        Some(bits)
    }

    /// Checks that this is an acceptable answer to an offer of permessage-deflate (RFC 7692
    /// section 7.1): known parameters, each at most once, `client_max_window_bits` only when
    /// the offer allowed it.
    pub fn check(&self, offered_client_bits: bool) {
        assert_eq!(self.name, "permessage-deflate", "{self:?}");
        for (i, (name, value)) in self.params.iter().enumerate() {
            assert!(
                !self.params[..i].iter().any(|(n, _)| n == name),
                "{name} twice: {self:?}"
            );
            match name.as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => {
                    assert!(value.is_none(), "{name} has a value: {self:?}")
                }
                "server_max_window_bits" => {
                    self.bits(name);
                }
                "client_max_window_bits" => {
                    assert!(offered_client_bits, "client_max_window_bits not offered");
                    self.bits(name);
                }
                other => panic!("unknown parameter {other} in the response: {self:?}"),
            }
        }
    }
}

/// One side of a permessage-deflate connection as a client sees it: a compressor for what it
/// sends and a decompressor for what it receives, each reset after every message unless the
/// agreement lets that side keep its context.
#[derive(Debug)]
pub struct Codec {
    compress: Compress,
    decompress: Decompress,
    /// The client keeps its compression context between messages.
    pub client_takeover: bool,
    /// The server keeps its compression context between messages.
    pub server_takeover: bool,
    /// The window the server compresses with at most, in bits.
    pub server_bits: u8,
}

impl Codec {
    /// The codec for what `agreed` says, compressing at `level`.
    pub fn new(agreed: &Agreed, level: u32) -> Self {
        // zlib cannot compress with a 256-byte window; 9 bits is what RFC 7692 suggests then.
        let client_bits = agreed.bits("client_max_window_bits").unwrap_or(15).max(9);
        // An 8-bit window is read with a 9-bit one, which is what zlib supports.
        let server_bits = agreed.bits("server_max_window_bits").unwrap_or(15).max(9);
        Self {
            compress: Compress::new_with_window_bits(Compression::new(level), false, client_bits),
            decompress: Decompress::new_with_window_bits(false, server_bits),
            client_takeover: !agreed.has("client_no_context_takeover"),
            server_takeover: !agreed.has("server_no_context_takeover"),
            server_bits,
        }
    }

    /// Compresses one message: the DEFLATE data up to a sync flush, without its tail.
    pub fn compress(&mut self, message: &[u8]) -> Vec<u8> {
        let out = deflate(&mut self.compress, message);
        if !self.client_takeover {
            self.compress.reset();
        }
        out
    }

    /// Inflates one message's payload (without its tail). Panics when it does not inflate,
    /// for example when the server referred to data of an earlier message after saying it
    /// would not keep its context, or used a larger window than agreed.
    pub fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let out = inflate(&mut self.decompress, payload)
            .unwrap_or_else(|error| panic!("the server's message does not inflate: {error}"));
        if !self.server_takeover {
            self.decompress.reset(false);
        }
        out
    }
}

/// Compresses `input` as one message with `compress`: raw DEFLATE up to a sync flush, the
/// four-byte tail left off.
pub fn deflate(compress: &mut Compress, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let start = compress.total_in();
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let fed = (compress.total_in() - start) as usize;
        compress
            .compress_vec(&input[fed..], &mut out, FlushCompress::Sync)
            .expect("compress");
        let fed = (compress.total_in() - start) as usize;
        // Done once all input is in and the flush fitted.
        if fed == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates one message's `payload` (without its tail) with `decompress`. It inflates 256
/// bytes at a time, so that a reference further back than the agreed window (which zlib would
/// otherwise take from the output of the same call) fails as "too far back".
pub fn inflate(decompress: &mut Decompress, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(input.len() * 4);
    let mut chunk = [0u8; 256];
    let start = decompress.total_in();
    loop {
        let fed = (decompress.total_in() - start) as usize;
        let before = decompress.total_out();
        let status = decompress
            .decompress(&input[fed..], &mut chunk, FlushDecompress::Sync)
            .map_err(|e| e.to_string())?;
        let made = (decompress.total_out() - before) as usize;
        out.extend_from_slice(&chunk[..made]);
        let now_fed = (decompress.total_in() - start) as usize;
        if status == Status::StreamEnd || (now_fed == input.len() && made < chunk.len()) {
            return Ok(out);
        }
        if now_fed == fed && made == 0 {
            return Err("the data is cut short".to_owned());
        }
    }
}

/// `len` bytes of text whose only repetitions are copies of one 1500-byte block of
/// pseudo-random letters: it compresses well only with a window of 2 KiB or more, and a
/// compressor that uses a larger window than agreed refers back too far for [`inflate`].
pub fn far_repeats(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let block: Vec<u8> = (0..1500)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            b'a' + (state % 26) as u8
        })
        .collect();
    block.iter().copied().cycle().take(len).collect()
}

/// A message as it came from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `OP_TEXT` or `OP_BINARY`.
    pub opcode: u8,
    /// Whether its first frame had RSV1 set (it came compressed).
    pub compressed: bool,
    /// The payload as it crossed the wire, before inflating.
    pub wire_len: usize,
    /// The payload, inflated.
    pub payload: Vec<u8>,
}

impl Received {
    /// The payload as text; panics unless this is a text message in UTF-8.
    pub fn text(&self) -> &str {
        assert_eq!(self.opcode, OP_TEXT, "expected a text message: {self:?}");
        std::str::from_utf8(&self.payload).expect("a text message is UTF-8")
    }
}

/// A raw WebSocket connection that negotiated permessage-deflate.
#[derive(Debug)]
pub struct DeflateWs {
    /// The connection.
    pub raw: RawWs,
    /// What the `101` agreed on.
    pub agreed: Agreed,
    /// The compressor and decompressor.
    pub codec: Codec,
}

impl DeflateWs {
    /// Upgrades on `path` offering `offer` (a whole `Sec-WebSocket-Extensions` value) and
    /// asserts that the `101` accepts permessage-deflate; returns the connection and the
    /// header value of the `101`.
    pub async fn connect(f: &Fixture, path: &str, offer: &str) -> (Self, String) {
        let (response, raw) = f
            .raw_upgrade(path, &[&format!("Sec-WebSocket-Extensions: {offer}")])
            .await;
        assert_eq!(response.status, 101, "{}", response.status_line);
        assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
        let values = response.header_all("sec-websocket-extensions");
        assert_eq!(
            values.len(),
            1,
            "one Sec-WebSocket-Extensions in the 101 for the offer {offer:?}: {values:?}"
        );
        let value = values[0].to_owned();
        let agreed = Agreed::parse(&value);
        agreed.check(offer.contains("client_max_window_bits"));
        let codec = Codec::new(&agreed, 6);
        (Self { raw, agreed, codec }, value)
    }

    /// Sends `payload` as one message with `opcode`, compressed in one frame.
    pub async fn send_compressed(&mut self, opcode: u8, payload: &[u8]) {
        let compressed = self.codec.compress(payload);
        self.raw
            .write(&encode_frame_rsv1(true, true, opcode, &compressed, true))
            .await;
    }

    /// Sends `payload` compressed, its compressed bytes cut into `parts` frames: RSV1 on the
    /// first only, as RFC 7692 section 6.1 says.
    pub async fn send_compressed_fragments(&mut self, opcode: u8, payload: &[u8], parts: usize) {
        let compressed = self.codec.compress(payload);
        let size = compressed.len().div_ceil(parts).max(1);
        let chunks: Vec<&[u8]> = compressed.chunks(size).collect();
        let mut frames = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == chunks.len());
            let op = if first { opcode } else { OP_CONTINUATION };
            frames.extend(encode_frame_rsv1(last, first, op, chunk, true));
        }
        self.raw.write(&frames).await;
    }

    /// Sends `payload` as one plain (uncompressed) message.
    pub async fn send_plain(&mut self, opcode: u8, payload: &[u8]) {
        self.raw.send_frame(true, opcode, payload, true).await;
    }

    /// The next data message, put together from its frames and inflated when it came with
    /// RSV1; pings and pongs are skipped. Panics when the connection ends, on a close frame,
    /// and on anything RFC 7692 forbids the server (RSV1 on a continuation or control frame).
    pub async fn recv(&mut self) -> Received {
        let mut message: Option<(u8, bool, Vec<u8>)> = None;
        loop {
            let frame = self.raw.read_frame().await.expect("the connection ended");
            assert!(!frame.masked, "a server frame is masked");
            match frame.opcode {
                OP_PING | OP_PONG => {
                    assert!(!frame.rsv1, "RSV1 on a control frame");
                    continue;
                }
                OP_CLOSE => panic!(
                    "expected a message, got a close with code {}",
                    frame.close_code()
                ),
                OP_CONTINUATION => {
                    assert!(!frame.rsv1, "RSV1 on a continuation frame");
                    let (_, _, payload) = message
                        .as_mut()
                        .expect("a continuation frame starts no message");
                    payload.extend_from_slice(&frame.payload);
                }
                OP_TEXT | OP_BINARY => {
                    assert!(message.is_none(), "a new message inside a fragmented one");
                    message = Some((frame.opcode, frame.rsv1, frame.payload));
                }
                other => panic!("unknown opcode {other}"),
            }
            if frame.fin {
                let (opcode, compressed, wire) = message.take().expect("a message");
                let payload = if compressed {
                    self.codec.inflate(&wire)
                } else {
                    wire.clone()
                };
                return Received {
                    opcode,
                    compressed,
                    wire_len: wire.len(),
                    payload,
                };
            }
        }
    }

    /// The next message, which must be the text `want`; returns it.
    pub async fn recv_text_eq(&mut self, want: &str) -> Received {
        let got = self.recv().await;
        assert_same_text("the message", got.text(), want);
        got
    }

    /// Reads the welcome line of the conformance app; returns the peer id.
    pub async fn welcome(&mut self) -> String {
        let got = self.recv().await;
        parse_welcome(got.text()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_the_window_is_enforced() {
        let agreed = Agreed::parse("permessage-deflate; server_max_window_bits=10");
        agreed.check(false);
        let mut codec = Codec::new(&agreed, 6);
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(20);
        let compressed = codec.compress(&text);
        assert!(!compressed.ends_with(&TAIL) && compressed.len() < text.len() / 4);
        // Inflated with the client's own window (15 bits: nothing was agreed for it).
        let mut decompress = Decompress::new(false);
        assert_eq!(inflate(&mut decompress, &compressed).unwrap(), text);

        // Copies 1500 bytes back, past a 1 KiB window: the 10-bit decompressor refuses them.
        let twice = far_repeats(3000);
        let wide = deflate(&mut Compress::new(Compression::best(), false), &twice);
        assert!(wide.len() < 1600, "{}", wide.len());
        assert!(inflate(&mut Decompress::new_with_window_bits(false, 10), &wide).is_err());
        assert_eq!(inflate(&mut Decompress::new(false), &wide).unwrap(), twice);
    }
}
