//! permessage-deflate (RFC 7692): the settings, the negotiation, and the codecs.
//!
//! A message is compressed as one raw DEFLATE stream flushed with `Z_SYNC_FLUSH`, whose trailing
//! `00 00 ff ff` is left off, and sent in one frame with RSV1 set; a compressed message from the
//! client is inflated with those four bytes put back.
//!
//! Where no context is carried from one message to the next (the server's side in
//! [`Deflate::shared`], and either side when the client asks for it), the compressor or
//! decompressor is not the peer's: each thread keeps one per window size and resets it after
//! every message, so a peer holds no compression state between messages. A publish compresses
//! its payload at most once for all such recipients ([`Prepared`]).

use bytes::Bytes;
use http::HeaderMap;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use zlib_rs::{DeflateConfig, DeflateFlush, InflateFlush, Status};

use super::{Extension, ReadError};
use crate::Message;

/// The four bytes a `Z_SYNC_FLUSH` ends with, which RFC 7692 leaves off the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// A thread's scratch buffer bigger than this after a message is given back.
const KEEP_SCRATCH: usize = 64 * 1024;

/// permessage-deflate (RFC 7692) settings, for
/// [`ServerBuilder::deflate`](crate::ServerBuilder::deflate). Compression is off unless set.
///
/// Two modes, as in uWebSockets:
///
/// - [`Deflate::shared`]: no context takeover in either direction. One compressor and one
///   decompressor per thread (per window size) serve every peer and are reset after each
///   message, so **a peer costs no memory for compression between messages**, and a publish
///   compresses its payload once for all its recipients. Compresses less well than
///   dedicated for streams of small, similar messages.
/// - [`Deflate::dedicated`]: context takeover, as the client offers it. Each peer that
///   negotiates it gets its own compressor, made on its first compressed message and kept, so
///   that later messages refer back to earlier ones: better ratios for chatty streams of
///   similar messages, at a cost per peer of about `2^(window_bits + 2) + 2^(mem_level + 9)`
///   bytes (256 KiB at the defaults, 2 KiB + 1 KiB at 9 bits and level 1), plus
///   `2^window_bits` bytes for the client's context when it keeps one (32 KiB by default;
///   less when the client accepts a smaller `client_max_window_bits`).
///
/// A message shorter than [`threshold`](Deflate::threshold) is sent uncompressed, as is an
/// empty one and one made with [`Message::without_compression`]. Peers whose clients did not
/// offer the extension get plain frames; a publish reaches every kind of peer with the same
/// message.
///
/// Defaults, in both modes: [`level`](Deflate::level) 1, [`window_bits`](Deflate::window_bits)
/// 15 (a 32 KiB window), [`mem_level`](Deflate::mem_level) 8 (a 128 KiB hash table),
/// [`threshold`](Deflate::threshold) 128 bytes.
///
/// What a client sends compressed is inflated at most to
/// [`max_message_size`](crate::Limits::max_message_size) plus one byte: a message that would
/// inflate past it closes the peer with 1009, whatever its compressed size, and one that does
/// not inflate (not DEFLATE data) with 1007. A frame with RSV1 set when the extension was not
/// negotiated closes with 1002.
///
/// See the guide's compression page (`docs/compression.md`) for when to turn it on and what
/// each mode costs.
///
/// ```
/// use anyws_core::{Deflate, Hooks, ServerBuilder};
///
/// struct App;
/// impl Hooks for App {}
///
/// let builder = ServerBuilder::new(App).deflate(Deflate::shared().threshold(256));
/// # let _ = builder;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deflate {
    dedicated: bool,
    level: u8,
    window_bits: u8,
    mem_level: u8,
    threshold: usize,
    /// A publish is compressed once for all its recipients without context (`false` only as
    /// the benchmark's control, through [`Deflate::__compress_per_recipient`]).
    compress_once: bool,
}

impl Deflate {
    /// No context takeover in either direction: the server answers an offer with
    /// `server_no_context_takeover; client_no_context_takeover`, compresses and inflates with
    /// its thread's codecs, and keeps nothing per peer between messages; a publish is compressed
    /// once for all its recipients. The defaults are in the [type docs](Deflate).
    pub fn shared() -> Self {
        Self {
            dedicated: false,
            level: 1,
            window_bits: 15,
            mem_level: 8,
            threshold: 128,
            compress_once: true,
        }
    }

    /// Context takeover, as the client offers it: each peer gets its own compressor on its
    /// first compressed message (about 256 KiB at the defaults, see the [type docs](Deflate))
    /// and keeps it, and its own decompressor when the client keeps its context (2^`window_bits`
    /// bytes of window, which the server asks the client to respect when the offer allows).
    pub fn dedicated() -> Self {
        Self {
            dedicated: true,
            ..Self::shared()
        }
    }

    /// The compression level, from 0 (store only) to 9 (smallest, slowest). Default: 1, the
    /// fastest, as fits messages sent as they happen.
    pub fn level(mut self, level: u8) -> Self {
        self.level = level.min(9);
        self
    }

    /// The compressor's LZ77 window, 2^`bits` bytes, from 9 to 15 (values outside are brought
    /// in). A client that asks for a smaller one (`server_max_window_bits`) gets its size;
    /// in dedicated mode the server also asks the client to use at most this window when the
    /// client allows it. Default: 15 (32 KiB).
    pub fn window_bits(mut self, bits: u8) -> Self {
        self.window_bits = bits.clamp(9, 15);
        self
    }

    /// The compressor's memory level, from 1 (least memory, 2^10 bytes) to 9 (2^18 bytes).
    /// Default: 8 (2^17 bytes).
    pub fn mem_level(mut self, level: u8) -> Self {
        self.mem_level = level.clamp(1, 9);
        self
    }

    /// Messages of fewer payload bytes than this go uncompressed: they rarely shrink enough
    /// to pay for it. Default: 128 bytes.
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Whether this is [`Deflate::dedicated`] (context takeover).
    pub fn is_dedicated(&self) -> bool {
        self.dedicated
    }

    /// Not part of the API: every recipient of a publish compresses it itself, as if each
    /// had been sent on its own, instead of the recipients without context sharing one
    /// compressed copy. Only the benchmark uses it, as the control for compress-once
    /// (`anyws-fixture --deflate shared-per-recipient`).
    #[doc(hidden)]
    pub fn __compress_per_recipient(mut self) -> Self {
        self.compress_once = false;
        self
    }

    /// Whether a publish is compressed once for all its recipients without context.
    pub(crate) fn compresses_once(&self) -> bool {
        self.compress_once
    }

    /// The [`threshold`](Deflate::threshold): messages this long or longer are compressed.
    pub(crate) fn min_size(&self) -> usize {
        self.threshold
    }

    fn config(&self, window: u8) -> DeflateConfig {
        DeflateConfig {
            level: i32::from(self.level),
            window_bits: -i32::from(window),
            mem_level: i32::from(self.mem_level),
            ..DeflateConfig::default()
        }
    }
}

/// What the handshake agreed on for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The server compresses with at most 2^this window.
    pub(crate) server_window: u8,
    /// The server keeps its compression context between messages.
    pub(crate) server_takeover: bool,
    /// The client compresses with at most 2^this window.
    pub(crate) client_window: u8,
    /// The client keeps its compression context between messages.
    pub(crate) client_takeover: bool,
    /// The response named `server_max_window_bits`.
    server_window_said: bool,
    /// The response named `client_max_window_bits`.
    client_window_said: bool,
}

impl Negotiated {
    /// The `Sec-WebSocket-Extensions` value of the `101`.
    pub(crate) fn response(&self) -> String {
        let mut value = String::from("permessage-deflate");
        if !self.server_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if !self.client_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if self.server_window_said {
            value.push_str(&format!("; server_max_window_bits={}", self.server_window));
        }
        if self.client_window_said {
            value.push_str(&format!("; client_max_window_bits={}", self.client_window));
        }
        value
    }
}

/// The answers given so far (`Negotiated::response`), shared by the peers that got the same
/// one: a peer then holds a pointer, not a copy of 75 bytes. There are at most a few hundred
/// different answers (two context flags, and each window said or not, 9 to 15 bits).
static ANSWERS: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());

/// The `Sec-WebSocket-Extensions` value of the `101` for `negotiated`, shared with every other
/// connection that got the same answer.
pub(crate) fn answer(negotiated: &Negotiated) -> Arc<str> {
    let response = negotiated.response();
    let mut answers = ANSWERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = answers.iter().find(|known| ***known == *response) {
        return known.clone();
    }
    let answer: Arc<str> = response.into();
    answers.push(answer.clone());
    answer
}

/// The first offer of permessage-deflate in `headers` that `config` can honour, and what was
/// agreed; `None` (no extension) when there is none.
pub(crate) fn negotiate(config: &Deflate, headers: &HeaderMap) -> Option<Negotiated> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offer| accept(config, offer))
}

/// The parameters of one offer or answer (`permessage-deflate; param; param=value`).
#[derive(Default)]
struct Params {
    server_no_takeover: bool,
    client_no_takeover: bool,
    server_bits: Option<u8>,
    /// `Some(None)`: named without a value (allowed in an offer only).
    client_bits: Option<Option<u8>>,
}

/// Parses `permessage-deflate; param; param=value`: `None` when it names another extension or
/// has a parameter twice, an unknown one, or a bad value (RFC 7692 section 7.1).
fn params(text: &str) -> Option<Params> {
    let mut parts = text.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut params = Params::default();
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                (name.trim(), Some(value))
            }
            None => (part, None),
        };
        let bits = |value: &str| -> Option<u8> {
            // 1*DIGIT with no leading zero, 8 to 15 (RFC 7692 section 7.1.2).
            if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            value.parse().ok().filter(|b| (8..=15).contains(b))
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !params.server_no_takeover => {
                params.server_no_takeover = true
            }
            ("client_no_context_takeover", None) if !params.client_no_takeover => {
                params.client_no_takeover = true
            }
            ("server_max_window_bits", Some(value)) if params.server_bits.is_none() => {
                params.server_bits = Some(bits(value)?)
            }
            ("client_max_window_bits", None) if params.client_bits.is_none() => {
                params.client_bits = Some(None)
            }
            ("client_max_window_bits", Some(value)) if params.client_bits.is_none() => {
                params.client_bits = Some(Some(bits(value)?))
            }
            _ => return None,
        }
    }
    Some(params)
}

/// Accepts one offer (`permessage-deflate; param; param=value`) if it can be honoured.
fn accept(config: &Deflate, offer: &str) -> Option<Negotiated> {
    // A parameter twice, an unknown one, or a bad value declines the whole offer.
    let Params {
        server_no_takeover,
        client_no_takeover,
        server_bits,
        client_bits,
    } = params(offer)?;
    // zlib cannot compress with a 256-byte window (it uses 512): an offer that asks for one
    // is declined, and the next one (or none) is taken.
    if server_bits == Some(8) {
        return None;
    }
    let server_window = server_bits.map_or(config.window_bits, |b| b.min(config.window_bits));
    let (client_window, client_window_said) = match client_bits {
        // The client lets the server pick its window: dedicated mode keeps its own memory per
        // peer small by asking for the configured one.
        Some(offered) if config.dedicated && !client_no_takeover => {
            let window = offered.map_or(config.window_bits, |b| b.min(config.window_bits));
            // A 256-byte window is read with a 512-byte one, which zlib can do.
            (window.max(9), true)
        }
        Some(Some(offered)) => (offered, false),
        _ => (15, false),
    };
    Some(Negotiated {
        server_window,
        server_takeover: config.dedicated && !server_no_takeover,
        client_window,
        client_takeover: config.dedicated && !client_no_takeover,
        server_window_said: server_bits.is_some(),
        client_window_said,
    })
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` offer of a client with these settings: context takeover
    /// in both directions for [`Deflate::dedicated`], none for [`Deflate::shared`]; the server
    /// may always pick the client's window (`client_max_window_bits`).
    pub(crate) fn offer(&self) -> &'static str {
        if self.dedicated {
            "permessage-deflate; client_max_window_bits"
        } else {
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits"
        }
    }
}

impl Negotiated {
    /// What a client agreed to, read from the server's `answer` to [`Deflate::offer`], seen from
    /// the client's side: the `server_*` fields are the client's own sending (what
    /// [`Compressor`] reads) and the `client_*` fields the server's (what [`Inflater`] reads),
    /// so the codecs serve both roles unchanged. An answer the offer does not allow is an error
    /// (RFC 7692 section 7.1): the client fails the connection.
    pub(crate) fn client_side(config: &Deflate, answer: &str) -> Result<Self, String> {
        let Some(params) = params(answer) else {
            return Err(format!("the server answered the offer with `{answer}`"));
        };
        if params.client_bits == Some(None) {
            return Err("client_max_window_bits without a value".to_owned());
        }
        // A window of 2^8 bytes, which zlib cannot compress with: messages then go plain.
        let own_window = params
            .client_bits
            .flatten()
            .map_or(config.window_bits, |bits| bits.min(config.window_bits));
        Ok(Self {
            server_window: own_window,
            server_takeover: config.dedicated && !params.client_no_takeover,
            client_window: params.server_bits.unwrap_or(15),
            client_takeover: !params.server_no_takeover,
            server_window_said: false,
            client_window_said: false,
        })
    }
}

/// A thread's compressors and decompressor for the messages that carry no context, and a
/// scratch buffer for compressed output.
#[derive(Default)]
struct Codecs {
    /// Keyed by window bits, level and memory level.
    deflaters: Vec<((u8, u8, u8), zlib_rs::Deflate)>,
    inflater: Option<zlib_rs::Inflate>,
    scratch: Vec<u8>,
}

thread_local! {
    static CODECS: RefCell<Codecs> = RefCell::new(Codecs::default());
}

/// Compresses `input` as one message into `out`: the DEFLATE data up to a sync flush, without
/// its last four bytes, as `out[..n]` for the `n` returned. `out` is a scratch buffer whose
/// bytes are all initialised; it grows as needed and is never shrunk here.
fn compress_into(deflate: &mut zlib_rs::Deflate, input: &[u8], out: &mut Vec<u8>) -> usize {
    // A sync flush of incompressible data adds 5 bytes per 16 KiB block, plus the flush itself.
    let want = input.len() + input.len() / 1024 + 64;
    if out.len() < want {
        out.resize(want, 0);
    }
    let (mut fed, mut made) = (0, 0);
    loop {
        let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
        let result = deflate.compress(&input[fed..], &mut out[made..], DeflateFlush::SyncFlush);
        made += (deflate.total_out() - before_out) as usize;
        fed += (deflate.total_in() - before_in) as usize;
        match result {
            // Done once all input is in and the output was not full (the flush is complete).
            Ok(_) if fed == input.len() && made < out.len() => break,
            Ok(_) => out.resize(out.len() * 2, 0),
            // Only a misuse of the stream can fail; what there is goes out as it is.
            Err(_) => break,
        }
    }
    if out[..made].ends_with(&TAIL) {
        made -= TAIL.len();
    }
    made
}

/// Compresses `input` with the calling thread's compressor for `window`, reset afterwards (no
/// context takeover), and hands the result to `f`.
fn with_shared_compressed<R>(
    config: &Deflate,
    window: u8,
    input: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    CODECS.with(|codecs| {
        let mut codecs = codecs.borrow_mut();
        let Codecs {
            deflaters, scratch, ..
        } = &mut *codecs;
        let key = (window, config.level, config.mem_level);
        let index = match deflaters.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                deflaters.push((
                    key,
                    zlib_rs::Deflate::new_with_config(config.config(window)),
                ));
                deflaters.len() - 1
            }
        };
        let deflate = &mut deflaters[index].1;
        let made = compress_into(deflate, input, scratch);
        deflate.reset();
        let result = f(&scratch[..made]);
        if scratch.capacity() > KEEP_SCRATCH {
            *scratch = Vec::new();
        }
        result
    })
}

/// Inflates one message's `payload` (its DEFLATE data without the four-byte tail) with
/// `inflate`, to at most `max_size` bytes.
fn inflate_into(
    inflate: &mut zlib_rs::Inflate,
    mut payload: Vec<u8>,
    max_size: usize,
) -> Result<Vec<u8>, ReadError> {
    payload.extend_from_slice(&TAIL);
    // Grown by doubling, never past one byte over the limit: enough to tell that it is over.
    let cap = max_size.saturating_add(1);
    let mut out: Vec<u8> = vec![0; payload.len().saturating_mul(2).max(64).min(cap)];
    let (mut fed, mut made) = (0, 0);
    loop {
        if made == out.len() {
            if made >= cap {
                return Err(ReadError::MessageTooBig {
                    size: made as u64,
                    limit: max_size,
                });
            }
            out.resize(out.len().saturating_mul(2).min(cap), 0);
        }
        let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
        let result = inflate.decompress(&payload[fed..], &mut out[made..], InflateFlush::SyncFlush);
        let produced = (inflate.total_out() - before_out) as usize;
        made += produced;
        fed += (inflate.total_in() - before_in) as usize;
        match result {
            // A final block: the message ends there.
            Ok(Status::StreamEnd) => break,
            Ok(_) if fed == payload.len() && made < out.len() => break,
            Ok(Status::BufError) if produced == 0 && made < out.len() => {
                // No progress with room to spare: the data is cut short.
                return Err(ReadError::BadCompression);
            }
            Ok(_) => {}
            Err(_) => return Err(ReadError::BadCompression),
        }
    }
    if made > max_size {
        return Err(ReadError::MessageTooBig {
            size: made as u64,
            limit: max_size,
        });
    }
    out.truncate(made);
    Ok(out)
}

/// The reading side of permessage-deflate for `negotiated`, set on the connection's
/// [`Reader`](super::Reader): without client context takeover (the server's shared mode) a
/// [`ThreadInflater`], which is zero-sized and so costs the connection no allocation; with it
/// an [`Inflater`] of the connection's own.
pub(crate) fn inflater(negotiated: &Negotiated) -> Box<dyn Extension> {
    if negotiated.client_takeover {
        Box::new(Inflater {
            own: None,
            window: negotiated.client_window.max(9),
        })
    } else {
        Box::new(ThreadInflater)
    }
}

/// Inflates each message with the thread's decompressor, reset after it: the client keeps no
/// context between messages.
#[derive(Debug)]
pub(crate) struct ThreadInflater;

impl Extension for ThreadInflater {
    fn decode(&mut self, payload: Vec<u8>, max_size: usize) -> Result<Vec<u8>, ReadError> {
        // An empty payload carries no data (the tail alone would open a stored block that never
        // ends, leaving a decompressor with context in its middle): nothing to inflate.
        if payload.is_empty() {
            return Ok(payload);
        }
        CODECS.with(|codecs| {
            let mut codecs = codecs.borrow_mut();
            let inflate = codecs
                .inflater
                .get_or_insert_with(|| zlib_rs::Inflate::new(false, 15));
            let result = inflate_into(inflate, payload, max_size);
            inflate.reset(false);
            result
        })
    }
}

/// Inflates with the connection's own decompressor, made on its first compressed message: the
/// client keeps its context from one message to the next.
pub(crate) struct Inflater {
    own: Option<Box<zlib_rs::Inflate>>,
    window: u8,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Extension for Inflater {
    fn decode(&mut self, payload: Vec<u8>, max_size: usize) -> Result<Vec<u8>, ReadError> {
        if payload.is_empty() {
            return Ok(payload);
        }
        let window = self.window;
        let inflate = self
            .own
            .get_or_insert_with(|| Box::new(zlib_rs::Inflate::new(false, window)));
        inflate_into(inflate, payload, max_size)
    }
}

/// A message published while compression is on, shared by its recipients: the first one that
/// compresses it without context keeps the result here for the others.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) message: Message,
    /// The window it was compressed with, and the compressed payload (`None` when compressing
    /// did not make it smaller: it goes plain).
    compressed: OnceLock<(u8, Option<Bytes>)>,
}

impl Prepared {
    pub(crate) fn new(message: Message) -> Self {
        Self {
            message,
            compressed: OnceLock::new(),
        }
    }
}

/// The writing side of permessage-deflate for one connection.
pub(crate) enum Compressor {
    /// No context takeover: the thread's compressors.
    Shared { window: u8 },
    /// Context takeover: the connection's own compressor, made on its first use.
    Dedicated {
        window: u8,
        deflate: Option<Box<zlib_rs::Deflate>>,
    },
}

impl Compressor {
    pub(crate) fn new(negotiated: &Negotiated) -> Self {
        // 8 only on a client that the server asked for a 256-byte window: it sends plain.
        let window = negotiated.server_window;
        if negotiated.server_takeover {
            Self::Dedicated {
                window,
                deflate: None,
            }
        } else {
            Self::Shared { window }
        }
    }

    /// Compresses `message` (or takes the compressed bytes `prepared` holds) and hands the
    /// payload to `f`; `None`, without calling `f`, when the message goes uncompressed: opted
    /// out, under the threshold, or, without context takeover, no smaller compressed.
    pub(crate) fn compress<R>(
        &mut self,
        config: &Deflate,
        message: &Message,
        prepared: Option<&Prepared>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let payload = message.bytes();
        // An empty message has nothing to compress, and a compressor with context would emit
        // nothing for it after a flush: not even the empty block the reader's tail completes.
        if !message.compressible() || payload.len() < config.threshold || payload.is_empty() {
            return None;
        }
        let (Self::Shared { window } | Self::Dedicated { window, .. }) = self;
        if *window < 9 {
            return None;
        }
        match self {
            Self::Shared { window } => {
                let window = *window;
                // Without context takeover each message stands alone, so one that does not
                // shrink (already compressed, random, or too short for the level's codes) goes
                // plain. With context it cannot: the peer's decompressor must see every byte.
                let smaller = |out: &[u8]| out.len() < payload.len();
                if let Some(prepared) = prepared {
                    let (used, bytes) = prepared.compressed.get_or_init(|| {
                        with_shared_compressed(config, window, payload, |out| {
                            (window, smaller(out).then(|| Bytes::copy_from_slice(out)))
                        })
                    });
                    // Data compressed with a smaller window reads fine with a larger one.
                    if *used <= window {
                        return bytes.as_deref().map(f);
                    }
                }
                with_shared_compressed(config, window, payload, |out| smaller(out).then(|| f(out)))
            }
            Self::Dedicated { window, deflate } => {
                let window = *window;
                let deflate = deflate.get_or_insert_with(|| {
                    Box::new(zlib_rs::Deflate::new_with_config(config.config(window)))
                });
                CODECS.with(|codecs| {
                    let scratch = &mut codecs.borrow_mut().scratch;
                    let made = compress_into(deflate, payload, scratch);
                    let result = f(&scratch[..made]);
                    if scratch.capacity() > KEEP_SCRATCH {
                        *scratch = Vec::new();
                    }
                    Some(result)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn offer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                http::header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    fn answer(config: &Deflate, values: &[&str]) -> Option<String> {
        negotiate(config, &offer(values)).map(|n| n.response())
    }

    #[test]
    fn shared_answers_without_context_takeover() {
        let shared = Deflate::shared();
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(answer(&shared, &["permessage-deflate"]).unwrap(), both);
        // What browsers offer.
        assert_eq!(
            answer(&shared, &["permessage-deflate; client_max_window_bits"]).unwrap(),
            both
        );
        assert_eq!(
            answer(&shared, &["permessage-deflate; server_max_window_bits=10"]).unwrap(),
            format!("{both}; server_max_window_bits=10")
        );
        assert_eq!(answer(&shared, &["x-webkit-deflate-frame"]), None);
        assert_eq!(answer(&shared, &[]), None);
    }

    #[test]
    fn dedicated_keeps_context_as_offered() {
        let dedicated = Deflate::dedicated();
        assert_eq!(
            answer(&dedicated, &["permessage-deflate"]).unwrap(),
            "permessage-deflate"
        );
        assert_eq!(
            answer(&dedicated, &["permessage-deflate; client_max_window_bits"]).unwrap(),
            "permessage-deflate; client_max_window_bits=15"
        );
        let small = Deflate::dedicated().window_bits(10);
        let n = negotiate(
            &small,
            &offer(&["permessage-deflate; client_max_window_bits=12"]),
        )
        .unwrap();
        assert_eq!((n.server_window, n.client_window), (10, 10));
        assert!(n.server_takeover && n.client_takeover);
        assert_eq!(
            answer(
                &dedicated,
                &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]
            )
            .unwrap(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn peers_share_their_answer() {
        let shared = Deflate::shared();
        let browser = negotiate(
            &shared,
            &offer(&["permessage-deflate; client_max_window_bits"]),
        );
        let plain = negotiate(&shared, &offer(&["permessage-deflate"]));
        let (a, b) = (
            super::answer(&browser.unwrap()),
            super::answer(&plain.unwrap()),
        );
        assert_eq!(
            &*a,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(
            Arc::ptr_eq(&a, &b),
            "one allocation for every peer with this answer"
        );
        let small = negotiate(
            &shared,
            &offer(&["permessage-deflate; server_max_window_bits=10"]),
        );
        let c = super::answer(&small.unwrap());
        assert!(c.ends_with("server_max_window_bits=10"));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn first_offer_that_can_be_honoured_wins() {
        let shared = Deflate::shared();
        // Unknown parameters, duplicates, bad values and an 8-bit server window are declined.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert_eq!(answer(&shared, &[bad]), None, "{bad}");
        }
        assert_eq!(
            answer(
                &shared,
                &[
                    "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=\"9\"",
                    "permessage-deflate"
                ]
            )
            .unwrap(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
        );
    }

    /// Compresses `text`, checks that it shrank and inflates back; the compressed size.
    fn round_trip(
        compressor: &mut Compressor,
        config: &Deflate,
        inflater: &mut dyn Extension,
        text: &str,
    ) -> usize {
        let message = Message::from_text(text.to_owned());
        let compressed = compressor
            .compress(config, &message, None, |b| b.to_vec())
            .unwrap();
        let size = compressed.len();
        assert!(size < text.len());
        let plain = inflater.decode(compressed, 1 << 20).unwrap();
        assert_eq!(plain, text.as_bytes());
        size
    }

    #[test]
    fn messages_round_trip_with_and_without_context() {
        let text = "the quick brown fox jumps over the lazy dog; ".repeat(9);
        for config in [
            Deflate::shared(),
            Deflate::dedicated(),
            Deflate::dedicated().window_bits(9).mem_level(1),
        ] {
            let offer = offer(&["permessage-deflate; client_max_window_bits"]);
            let n = negotiate(&config, &offer).unwrap();
            let mut compressor = Compressor::new(&n);
            let mut inflater = inflater(&n);
            let first = round_trip(&mut compressor, &config, &mut *inflater, &text);
            let again = round_trip(&mut compressor, &config, &mut *inflater, &text);
            round_trip(&mut compressor, &config, &mut *inflater, &text[3..]);
            // With context takeover the second copy of a message refers back to the first.
            if config.is_dedicated() {
                assert!(again * 3 < first * 2, "{again} vs {first}");
            } else {
                assert_eq!(again, first);
            }
        }
    }

    #[test]
    fn short_and_opted_out_messages_go_plain() {
        let config = Deflate::shared();
        let n = negotiate(&config, &offer(&["permessage-deflate"])).unwrap();
        let mut compressor = Compressor::new(&n);
        let short = Message::from_text("hi");
        assert!(compressor.compress(&config, &short, None, |_| ()).is_none());
        let long = Message::from_text("a".repeat(1000));
        assert!(compressor.compress(&config, &long, None, |_| ()).is_some());
        let opted_out = long.clone().without_compression();
        assert!(compressor
            .compress(&config, &opted_out, None, |_| ())
            .is_none());
    }

    #[test]
    fn a_publish_is_compressed_once() {
        let config = Deflate::shared();
        let n = negotiate(&config, &offer(&["permessage-deflate"])).unwrap();
        let prepared = Prepared::new(Message::from_text("b".repeat(5000)));
        let mut a = Compressor::new(&n);
        let mut b = Compressor::new(&n);
        let first = a
            .compress(&config, &prepared.message, Some(&prepared), |p| p.as_ptr())
            .unwrap();
        let second = b
            .compress(&config, &prepared.message, Some(&prepared), |p| p.as_ptr())
            .unwrap();
        assert_eq!(first, second, "both recipients send the same bytes");
        // A recipient with a smaller window cannot use bytes made with a larger one.
        let small = negotiate(
            &config,
            &offer(&["permessage-deflate; server_max_window_bits=9"]),
        )
        .unwrap();
        let mut c = Compressor::new(&small);
        let third = c
            .compress(&config, &prepared.message, Some(&prepared), |p| p.as_ptr())
            .unwrap();
        assert_ne!(third, first);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB at level 9.
        let config = Deflate::shared().level(9);
        let n = negotiate(&config, &offer(&["permessage-deflate"])).unwrap();
        let bomb = vec![0u8; 64 << 20];
        let compressed = Compressor::new(&n)
            .compress(&config, &Message::from_binary(bomb), None, |b| b.to_vec())
            .unwrap();
        assert!(compressed.len() < 128 << 10, "{}", compressed.len());
        let mut inflater = inflater(&n);
        let error = inflater.decode(compressed.clone(), 1 << 20).unwrap_err();
        assert!(
            matches!(error, ReadError::MessageTooBig { limit, size } if limit == 1 << 20 && size <= (1 << 20) + 1)
        );
        // Garbage does not inflate.
        assert_eq!(
            inflater.decode(vec![0xff; 100], 1 << 20),
            Err(ReadError::BadCompression)
        );
        // The thread's decompressor was reset: the next message inflates.
        let text = "x".repeat(300);
        let ok = Compressor::new(&n)
            .compress(&config, &Message::from_text(text.clone()), None, |b| {
                b.to_vec()
            })
            .unwrap();
        assert_eq!(inflater.decode(ok, 1 << 20).unwrap(), text.as_bytes());
    }

    /// A compressor that keeps its context emits nothing for an empty message after a flush
    /// (zlib has no progress to make), and four bytes of tail alone are not a complete block:
    /// an inflater with context was left inside a stored block, and read the next message as
    /// its contents. Empty messages now go uncompressed, and an empty compressed payload
    /// inflates to nothing without touching the decompressor.
    #[test]
    fn empty_messages_keep_the_context_intact() {
        for config in [Deflate::dedicated(), Deflate::shared()] {
            let config = config.threshold(0);
            let n = negotiate(&config, &offer(&["permessage-deflate"])).unwrap();
            let mut compressor = Compressor::new(&n);
            let mut inflater = inflater(&n);
            let mut first = b"{\"type\":\"chat\",".to_vec();
            first.resize(56, 0xff);
            let texts = [first.clone(), Vec::new(), Vec::new(), Vec::new(), first];
            for text in texts {
                let message = Message::from_binary(text.clone());
                let Some(compressed) = compressor.compress(&config, &message, None, |b| b.to_vec())
                else {
                    assert!(
                        text.is_empty(),
                        "only empty messages go plain at threshold 0"
                    );
                    // What a client's compressor may send for one all the same.
                    assert_eq!(inflater.decode(Vec::new(), 0).unwrap(), b"");
                    continue;
                };
                assert_eq!(inflater.decode(compressed, text.len()).unwrap(), text);
            }
        }
    }

    #[test]
    fn tiny_limits_hold() {
        let config = Deflate::shared();
        let n = negotiate(&config, &offer(&["permessage-deflate"])).unwrap();
        let text = "y".repeat(300);
        let compressed = Compressor::new(&n)
            .compress(&config, &Message::from_text(text.clone()), None, |b| {
                b.to_vec()
            })
            .unwrap();
        let mut inflater = inflater(&n);
        for limit in [0, 1, 63, 299] {
            let error = inflater.decode(compressed.clone(), limit).unwrap_err();
            assert!(
                matches!(error, ReadError::MessageTooBig { .. }),
                "{limit}: {error:?}"
            );
        }
        assert_eq!(inflater.decode(compressed, 300).unwrap(), text.as_bytes());
    }

    #[test]
    fn what_does_not_shrink_goes_plain_without_context_takeover() {
        // Pseudo-random bytes do not compress.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..1500)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let message = Message::from_binary(noise);
        let shared = Deflate::shared();
        let n = negotiate(&shared, &offer(&["permessage-deflate"])).unwrap();
        let mut compressor = Compressor::new(&n);
        assert!(compressor
            .compress(&shared, &message, None, |_| ())
            .is_none());
        let prepared = Prepared::new(message.clone());
        assert!(compressor
            .compress(&shared, &message, Some(&prepared), |_| ())
            .is_none());
        // With context takeover every message is compressed, shrinking or not.
        let dedicated = Deflate::dedicated();
        let n = negotiate(&dedicated, &offer(&["permessage-deflate"])).unwrap();
        let mut compressor = Compressor::new(&n);
        assert!(compressor
            .compress(&dedicated, &message, None, |_| ())
            .is_some());
    }

    /// The client's reading of a server's answer: the roles swap (the client compresses with
    /// the `client_*` settings, inflates with the `server_*` ones); an answer the offer does not
    /// allow is an error; a 256-byte window for the client means plain frames.
    #[test]
    fn the_client_side_of_the_negotiation() {
        let dedicated = Deflate::dedicated();
        let answer = "permessage-deflate; server_no_context_takeover; client_max_window_bits=10";
        let agreed = Negotiated::client_side(&dedicated, answer).unwrap();
        assert_eq!((agreed.server_window, agreed.server_takeover), (10, true));
        assert_eq!((agreed.client_window, agreed.client_takeover), (15, false));

        let agreed = Negotiated::client_side(&Deflate::shared(), "permessage-deflate").unwrap();
        assert!(
            !agreed.server_takeover,
            "shared offered no context takeover"
        );

        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
        ] {
            assert!(Negotiated::client_side(&dedicated, bad).is_err(), "{bad}");
        }

        let agreed =
            Negotiated::client_side(&dedicated, "permessage-deflate; client_max_window_bits=8")
                .unwrap();
        let mut compressor = Compressor::new(&agreed);
        let message = Message::from("a".repeat(1000));
        assert!(
            compressor
                .compress(&dedicated, &message, None, |_| ())
                .is_none(),
            "zlib cannot compress for a 256-byte window: the message goes plain"
        );
        assert!(dedicated.offer().contains("client_max_window_bits"));
        assert!(Deflate::shared()
            .offer()
            .contains("client_no_context_takeover"));
    }
}
