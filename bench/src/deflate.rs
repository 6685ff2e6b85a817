//! The load client's side of permessage-deflate (RFC 7692), for the `--deflate` variants of the
//! `idle`, `chat` and `broadcast` modes. tungstenite refuses frames with RSV1 set, so these
//! modes speak WebSocket themselves over a plain `TcpStream`: a handshake that offers
//! `permessage-deflate; client_max_window_bits` (what browsers offer), masked frames (the
//! masking key is all zeros, so the client does not spend its core on masking; the server
//! unmasks as it always does), and raw DEFLATE through `flate2` (zlib-rs) with the RFC's tail
//! handling: a message is compressed up to a sync flush whose trailing `00 00 ff ff` is left
//! off, and those four bytes are put back before inflating.
//!
//! The client compresses each message on its own (no context carried over), which every
//! negotiated answer allows. It inflates with a decompressor of the connection's own when the
//! server keeps its context between messages, and otherwise with one per thread, reset after
//! each message.

use super::{peak_rss_kib, sample, scheduled_ns, ChatEvent};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use futures_util::StreamExt;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// The four bytes a sync flush ends with, which RFC 7692 leaves off the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The opcodes this client sends and reads.
pub(crate) const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// What the server's `101` said about permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The server resets its compressor after each message (`server_no_context_takeover`).
    pub(crate) server_no_takeover: bool,
    /// The server's window (`server_max_window_bits`, 15 when not said).
    pub(crate) server_window: u8,
    /// The window the client may use (`client_max_window_bits`, 15 when not said).
    pub(crate) client_window: u8,
}

impl Negotiated {
    /// Reads the `Sec-WebSocket-Extensions` value of a `101`.
    fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
            return None;
        }
        let mut negotiated = Self {
            server_no_takeover: false,
            server_window: 15,
            client_window: 15,
        };
        for part in parts {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let bits = value.trim().trim_matches('"').parse::<u8>().ok();
            match name.trim().to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => negotiated.server_no_takeover = true,
                "server_max_window_bits" => negotiated.server_window = bits?.clamp(9, 15),
                "client_max_window_bits" => negotiated.client_window = bits?.clamp(9, 15),
                _ => {}
            }
        }
        Some(negotiated)
    }
}

/// An open connection: its socket, bytes read past the last message, what was negotiated,
/// and its own decompressor when the server keeps context.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) reader: FrameReader,
    pub(crate) negotiated: Option<Negotiated>,
}

/// Opens a connection to `url` (ws://HOST:PORT/PATH), offering permessage-deflate unless
/// `offer` is false, with TCP_NODELAY.
pub(crate) async fn connect(url: &str, offer: bool) -> Result<Connection, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("`{url}` is not a ws:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|error| format!("connect to {authority}: {error}"))?;
    let _ = stream.set_nodelay(true);
    let extensions = if offer {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("handshake write: {error}"))?;
    let mut head = Vec::with_capacity(512);
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 16 * 1024 {
            return Err("handshake: response head over 16 KiB".to_owned());
        }
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|error| format!("handshake read: {error}"))?;
        if n == 0 {
            return Err("handshake: connection closed".to_owned());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]);
    if !text.starts_with("HTTP/1.1 101") {
        let status = text.lines().next().unwrap_or_default();
        return Err(format!("handshake: `{status}`, not 101"));
    }
    let negotiated = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| Negotiated::parse(value.trim()))
            .flatten()
    });
    let mut reader = FrameReader::new(negotiated);
    reader.buffer.extend_from_slice(&head[end..]);
    Ok(Connection {
        stream,
        reader,
        negotiated,
    })
}

/// Compresses `payload` on its own with a window of 2^`window_bits`: raw DEFLATE up to a sync
/// flush, without the four-byte tail.
pub(crate) fn compress(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut deflate = Compress::new_with_window_bits(Compression::fast(), false, window_bits);
    let mut out = Vec::with_capacity(payload.len() + 64);
    loop {
        let fed = deflate.total_in() as usize;
        deflate
            .compress_vec(&payload[fed..], &mut out, FlushCompress::Sync)
            .expect("compressing into a Vec cannot fail");
        if deflate.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    out
}

/// Appends one masked client frame (FIN set; RSV1 when `compressed`) to `out`. The masking key
/// is all zeros, so the payload goes as it is.
pub(crate) fn encode_frame(out: &mut Vec<u8>, opcode: u8, compressed: bool, payload: &[u8]) {
    out.push(0x80 | if compressed { 0x40 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// A message read from the server, inflated if it came compressed.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) opcode: u8,
    pub(crate) compressed: bool,
    pub(crate) payload: Vec<u8>,
}

thread_local! {
    /// The thread's decompressor for messages that carry no context, reset after each.
    static SHARED_INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new_with_window_bits(false, 15));
}

/// Parses the server's frames out of the bytes read, and inflates compressed messages.
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
    /// Where the unparsed bytes of `buffer` start.
    pos: usize,
    negotiated: Option<Negotiated>,
    /// The connection's own decompressor when the server keeps context; made on first use.
    own: Option<Box<Decompress>>,
    /// A message in fragments so far: its opcode, whether compressed, its payload.
    partial: Option<(u8, bool, Vec<u8>)>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.buffer.len())
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    pub(crate) fn new(negotiated: Option<Negotiated>) -> Self {
        Self {
            buffer: Vec::new(),
            pos: 0,
            negotiated,
            own: None,
            partial: None,
        }
    }

    /// Gives back the read buffer and the decompressor while the connection idles.
    pub(crate) fn shrink(&mut self) {
        if self.pos == self.buffer.len() {
            self.buffer = Vec::new();
            self.pos = 0;
        }
        self.own = None;
    }

    /// The next data message (pings, pongs are skipped), reading from `stream` as needed.
    pub(crate) async fn next<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Incoming, String> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(message);
            }
            self.buffer.drain(..self.pos);
            self.pos = 0;
            self.buffer.reserve(8 * 1024);
            let n = stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|error| format!("read failed: {error}"))?;
            if n == 0 {
                return Err("connection ended".to_owned());
            }
        }
    }

    /// One complete message out of the buffer, if it holds one.
    fn parse(&mut self) -> Result<Option<Incoming>, String> {
        loop {
            let buf = &self.buffer[self.pos..];
            if buf.len() < 2 {
                return Ok(None);
            }
            let (fin, rsv1, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x40 != 0, buf[0] & 0x0f);
            if buf[1] & 0x80 != 0 {
                return Err("the server sent a masked frame".to_owned());
            }
            let (len, start) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(be) as usize, 10)
                }
                126 | 127 => return Ok(None),
                len => (usize::from(len), 2),
            };
            if buf.len() < start + len {
                return Ok(None);
            }
            let payload = buf[start..start + len].to_vec();
            self.pos += start + len;
            match opcode {
                PING | PONG => continue,
                CLOSE => return Err("the server closed the connection".to_owned()),
                0 => {
                    let Some((_, _, data)) = self.partial.as_mut() else {
                        return Err("a continuation frame without a message".to_owned());
                    };
                    data.extend_from_slice(&payload);
                    if !fin {
                        continue;
                    }
                    let (opcode, compressed, data) = self.partial.take().unwrap_or_default();
                    return self.finish(opcode, compressed, data).map(Some);
                }
                TEXT | BINARY if !fin => {
                    self.partial = Some((opcode, rsv1, payload));
                    continue;
                }
                TEXT | BINARY => return self.finish(opcode, rsv1, payload).map(Some),
                other => return Err(format!("unexpected opcode {other}")),
            }
        }
    }

    fn finish(&mut self, opcode: u8, compressed: bool, data: Vec<u8>) -> Result<Incoming, String> {
        if !compressed {
            return Ok(Incoming {
                opcode,
                compressed,
                payload: data,
            });
        }
        let negotiated = self
            .negotiated
            .ok_or("a compressed frame, but nothing was negotiated")?;
        let payload = if negotiated.server_no_takeover {
            SHARED_INFLATE.with(|inflate| {
                let mut inflate = inflate.borrow_mut();
                let out = inflate_into(&mut inflate, data);
                inflate.reset(false);
                out
            })?
        } else {
            let window = negotiated.server_window;
            let inflate = self
                .own
                .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, window)));
            inflate_into(inflate, data)?
        };
        Ok(Incoming {
            opcode,
            compressed,
            payload,
        })
    }
}

/// Inflates one message's payload (its tail put back).
fn inflate_into(inflate: &mut Decompress, mut data: Vec<u8>) -> Result<Vec<u8>, String> {
    data.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    let start = inflate.total_in();
    loop {
        let fed = (inflate.total_in() - start) as usize;
        let status = inflate
            .decompress_vec(&data[fed..], &mut out, FlushDecompress::Sync)
            .map_err(|error| format!("inflate failed: {error}"))?;
        let fed = (inflate.total_in() - start) as usize;
        if status == Status::StreamEnd || (fed == data.len() && out.len() < out.capacity()) {
            return Ok(out);
        }
        if out.len() >= 64 << 20 {
            return Err("a message inflated past 64 MiB".to_owned());
        }
        out.reserve(out.capacity());
    }
}

/// A compressible text of exactly `size` bytes: chat messages as JSON, with words and numbers
/// drawn pseudo-randomly (the same for the same `tag`), so that it compresses about as well as
/// real JSON does (to a third to a half), not as well as a repeated string would.
pub(crate) fn text_of(size: usize, tag: &str) -> String {
    const WORDS: [&str; 48] = [
        "the", "a", "server", "client", "message", "room", "hello", "there", "how", "are", "you",
        "today", "price", "update", "order", "filled", "quote", "market", "open", "close", "ready",
        "joined", "left", "typing", "seen", "sent", "error", "retry", "again", "soon", "thanks",
        "great", "news", "stream", "chart", "volume", "high", "low", "buy", "sell", "limit",
        "stop", "alert", "user", "admin", "bot", "lobby", "general",
    ];
    let mut state = tag.bytes().fold(0x9E37_79B9_7F4A_7C15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut text = String::with_capacity(size + 256);
    text.push('[');
    while text.len() < size {
        let words: Vec<&str> = (0..3 + next(8)).map(|_| WORDS[next(WORDS.len())]).collect();
        text.push_str(&format!(
            "{{\"id\":{},\"room\":\"{}\",\"user\":\"{}{}\",\"ts\":{},\"text\":\"{}\"}},",
            100_000 + next(900_000),
            WORDS[next(WORDS.len())],
            WORDS[next(WORDS.len())],
            next(1000),
            1_733_380_000_000_u64 + next(1_000_000) as u64,
            words.join(" "),
        ));
    }
    text.truncate(size);
    text
}

/// The frame bytes for one text message: compressed with the negotiated client window when
/// compression was negotiated and `size` is at least `threshold`, plain otherwise.
pub(crate) fn text_frame(text: &str, negotiated: Option<Negotiated>, threshold: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(text.len() + 14);
    match negotiated {
        Some(negotiated) if text.len() >= threshold => {
            encode_frame(
                &mut frame,
                TEXT,
                true,
                &compress(text.as_bytes(), negotiated.client_window),
            );
        }
        _ => encode_frame(&mut frame, TEXT, false, text.as_bytes()),
    }
    frame
}

/// Sends a close frame and waits briefly for the server's.
pub(crate) async fn close(mut connection: Connection) {
    let mut frame = Vec::new();
    encode_frame(&mut frame, CLOSE, false, &1000u16.to_be_bytes());
    let closing = async {
        connection.stream.write_all(&frame).await.ok()?;
        let mut sink = [0u8; 1024];
        while connection.stream.read(&mut sink).await.ok()? > 0 {}
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

// ---------------------------------------------------------------------------------------------
// The `--deflate` runs of the idle, chat and broadcast modes.

/// The server's threshold: the client compresses what it sends from this size on, as the
/// anyws fixture does (`Deflate`'s default).
const THRESHOLD: usize = 128;

/// Opens `n` connections offering permessage-deflate, at most `concurrency` handshakes in
/// flight, each followed by `then` (which gets the connection and hands it back).
async fn open_many<F, Fut, T>(
    mode: &str,
    url: &str,
    n: usize,
    concurrency: usize,
    then: F,
) -> Result<Vec<T>, String>
where
    F: Fn(Connection) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let then = &then;
    let opened: Vec<Result<T, String>> = futures_util::stream::iter(0..n)
        .map(|_| async move {
            let opening = async { then(connect(url, true).await?).await };
            tokio::time::timeout(Duration::from_secs(30), opening)
                .await
                .unwrap_or_else(|_| Err("not open within 30 s".to_owned()))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    opened
        .into_iter()
        .collect::<Result<Vec<T>, String>>()
        .map_err(|error| format!("{mode}: opening {n} connections: {error}"))
}

/// Waits for the chat room's `ready`.
async fn ready(mut connection: Connection) -> Result<Connection, String> {
    let message = connection.reader.next(&mut connection.stream).await?;
    if message.payload != b"ready" {
        return Err(format!(
            "expected `ready`, got {:?}",
            String::from_utf8_lossy(&message.payload)
        ));
    }
    Ok(connection)
}

/// `idle --deflate`: each connection offers permessage-deflate, sends one compressible text of
/// `size` bytes (compressed when negotiated) and waits for its echo; then RSS and CPU per
/// connection as in the plain mode, and how many connections negotiated the extension and got
/// their echo compressed.
pub(super) async fn idle_run(options: super::IdleOptions, ticks: u64) -> Result<(), String> {
    let pid = options.server_pid;
    let url = options.url.as_str();
    let text = text_of(options.size, "idle");
    let before = sample(pid, ticks)?;
    let started = Instant::now();
    let text = text.as_str();
    let opening = open_many(
        "idle",
        url,
        options.connections,
        options.concurrency,
        |mut connection| async move {
            let frame = text_frame(text, connection.negotiated, THRESHOLD);
            connection
                .stream
                .write_all(&frame)
                .await
                .map_err(|error| format!("send failed: {error}"))?;
            let echo = connection.reader.next(&mut connection.stream).await?;
            if echo.opcode != TEXT || echo.payload != text.as_bytes() {
                return Err("the echo differs from the text sent".to_owned());
            }
            connection.reader.shrink();
            Ok((connection, echo.compressed))
        },
    );
    let clients = tokio::time::timeout(options.timeout, opening)
        .await
        .map_err(|_| format!("idle: not done after {:?}", options.timeout))??;
    let opened_in = started.elapsed();
    tokio::time::sleep(options.settle).await;
    let after = sample(pid, ticks)?;

    let n = clients.len();
    let negotiated = clients
        .iter()
        .filter(|(c, _)| c.negotiated.is_some())
        .count();
    let compressed = clients.iter().filter(|(_, compressed)| *compressed).count();
    let rss_delta = after.rss_kib.saturating_sub(before.rss_kib);
    let cpu_delta = after.cpu_us.saturating_sub(before.cpu_us);
    let kib_per_conn = rss_delta as f64 / n as f64;
    let cpu_us_per_conn = cpu_delta as f64 / n as f64;
    println!(
        "{n} connections to {url} open and echoed a {} B text in {:.2} s (server pid {pid}); \
         {negotiated} negotiated permessage-deflate, {compressed} echoes came compressed",
        options.size,
        opened_in.as_secs_f64()
    );
    println!("server RSS before:         {:>10} KiB", before.rss_kib);
    println!("server RSS after:          {:>10} KiB", after.rss_kib);
    println!("server RSS per connection: {kib_per_conn:>10.2} KiB");
    println!("server CPU per connection: {cpu_us_per_conn:>10.1} µs");
    futures_util::stream::iter(clients)
        .for_each_concurrent(options.concurrency, |(connection, _)| close(connection))
        .await;
    println!(
        "RESULT connections={n} size={} negotiated={negotiated} compressed={compressed} \
         rss_before_kib={} rss_after_kib={} kib_per_conn={kib_per_conn:.3} cpu_us={cpu_delta} \
         cpu_us_per_conn={cpu_us_per_conn:.2} open_secs={:.3}",
        options.size,
        before.rss_kib,
        after.rss_kib,
        opened_in.as_secs_f64(),
    );
    Ok(())
}

/// `chat --deflate`: the chat room with compressible texts of `size` bytes, sent compressed;
/// every delivery is inflated and checked. Figures as in the plain mode, plus the share of
/// deliveries that came compressed.
pub(super) async fn chat_run(options: super::ChatOptions, ticks: u64) -> Result<(), String> {
    let pid = options.server_pid;
    let n = options.clients;
    let url = options.url.as_str();
    let clients = open_many("chat", url, n, 64, ready).await?;
    let text = Arc::new(text_of(options.size, "chat"));
    let per_batch_per_client = options.messages * n;
    let (batch_tx, batch_rx) = watch::channel(0_usize);
    let (event_tx, mut events) = mpsc::unbounded_channel::<ChatEvent>();
    let compressed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(2 * n);
    for (client, connection) in clients.into_iter().enumerate() {
        let Connection {
            stream,
            mut reader,
            negotiated,
        } = connection;
        let (mut read_half, mut write_half) = stream.into_split();
        // The whole batch, ready to go: the same text M times, compressed once.
        let one = text_frame(&text, negotiated, THRESHOLD);
        let batch = one.repeat(options.messages);
        let mut batch_rx = batch_rx.clone();
        let write_events = event_tx.clone();
        tasks.push(tokio::spawn(async move {
            while batch_rx.changed().await.is_ok() {
                if let Err(error) = write_half.write_all(&batch).await {
                    let _ = write_events.send(ChatEvent::Failed {
                        client,
                        error: format!("write failed: {error}"),
                    });
                    return;
                }
            }
            let mut frame = Vec::new();
            encode_frame(&mut frame, CLOSE, false, &1000u16.to_be_bytes());
            let _ = write_half.write_all(&frame).await;
        }));
        let read_events = event_tx.clone();
        let text = text.clone();
        let compressed = compressed.clone();
        tasks.push(tokio::spawn(async move {
            let mut received = 0_usize;
            let mut came_compressed = 0_usize;
            let error = loop {
                match reader.next(&mut read_half).await {
                    Ok(message) if message.payload == text.as_bytes() => {
                        received += 1;
                        came_compressed += usize::from(message.compressed);
                        if received % per_batch_per_client == 0 {
                            compressed.fetch_add(came_compressed, Ordering::AcqRel);
                            came_compressed = 0;
                            let batch = received / per_batch_per_client;
                            let _ = read_events.send(ChatEvent::BatchDone { client, batch });
                        }
                    }
                    Ok(_) => break "unexpected message".to_owned(),
                    Err(error) => break error,
                }
            };
            // The end of the run closes the connection; anything earlier is a failure.
            let _ = read_events.send(ChatEvent::Failed { client, error });
        }));
    }
    drop(event_tx);

    let delivered_per_batch = (n * per_batch_per_client) as u64;
    let mut before = None;
    let mut measured_from = Instant::now();
    for batch in 1..=options.batches + 1 {
        if batch == 2 {
            before = Some((
                sample(pid, ticks)?,
                scheduled_ns(pid),
                sample(std::process::id(), ticks)?,
                compressed.load(Ordering::Acquire),
            ));
            measured_from = Instant::now();
        }
        batch_tx
            .send(batch)
            .map_err(|_| "chat: every client task has ended".to_owned())?;
        super::wait_for_batch(&mut events, batch, n).await?;
    }
    let secs = measured_from.elapsed().as_secs_f64();
    let after = sample(pid, ticks)?;
    let after_sched = scheduled_ns(pid);
    let after_client = sample(std::process::id(), ticks)?;
    let hwm_kib = peak_rss_kib(pid)?;
    let (before, before_sched, before_client, compressed_before) =
        before.ok_or("chat: no measured batch")?;
    let delivered = delivered_per_batch * options.batches as u64;
    let compressed_pct =
        (compressed.load(Ordering::Acquire) - compressed_before) as f64 * 100.0 / delivered as f64;
    let msgs_per_sec = delivered as f64 / secs;
    let cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
    let cpu_us_per_1k = cpu_us as f64 * 1000.0 / delivered as f64;
    let sched_us_per_1k = match (before_sched, after_sched) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 / delivered as f64,
        _ => f64::NAN,
    };
    let client_cpu_pct =
        after_client.cpu_us.saturating_sub(before_client.cpu_us) as f64 / 1e4 / secs;
    println!(
        "{n} clients on {url} (server pid {pid}): {} batches measured after 1 warm-up, each \
         {n} x {} sends of {} B compressible text and {delivered_per_batch} deliveries",
        options.batches, options.messages, options.size,
    );
    println!("delivered per second:        {msgs_per_sec:>12.0}");
    println!("delivered compressed:        {compressed_pct:>12.1} %");
    println!("server CPU per 1,000:        {cpu_us_per_1k:>12.1} µs");
    println!("  cross-check, schedstat:    {sched_us_per_1k:>12.1} µs");
    println!("server peak RSS (VmHWM):     {hwm_kib:>12} KiB");
    println!("client CPU:                  {client_cpu_pct:>12.1} % of one core");
    println!(
        "RESULT clients={n} messages={} batches={} size={} delivered={delivered} secs={secs:.4} \
         msgs_per_sec={msgs_per_sec:.0} cpu_us={cpu_us} cpu_us_per_1k={cpu_us_per_1k:.2} \
         sched_us_per_1k={sched_us_per_1k:.2} hwm_kib={hwm_kib} client_cpu_pct={client_cpu_pct:.1} \
         compressed_pct={compressed_pct:.1}",
        options.messages, options.batches, options.size,
    );
    drop(batch_tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    Ok(())
}

/// `broadcast --deflate`: one publish of a compressible text of `size` bytes to every
/// subscriber, all of which negotiated permessage-deflate; each inflates and checks it. Figures
/// as in the plain mode, plus the share of deliveries that came compressed.
pub(super) async fn broadcast_run(options: super::BroadcastOptions) -> Result<(), String> {
    let pid = options.server_pid;
    let url = options.url.as_str();
    let n = options.subscribers;
    let clients = open_many("broadcast", url, n, 200, ready).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let compressed = Arc::new(AtomicUsize::new(0));
    let (round_done, mut rounds_done) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut senders = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for connection in clients {
        let Connection {
            stream,
            mut reader,
            negotiated,
        } = connection;
        let (mut read_half, write_half) = stream.into_split();
        senders.push((write_half, negotiated));
        let (received, compressed, round_done) =
            (received.clone(), compressed.clone(), round_done.clone());
        readers.push(tokio::spawn(async move {
            loop {
                match reader.next(&mut read_half).await {
                    Ok(message) if message.payload.starts_with(b"broadcast ") => {
                        compressed.fetch_add(usize::from(message.compressed), Ordering::AcqRel);
                        if received.fetch_add(1, Ordering::AcqRel) + 1 == n {
                            let _ = round_done.send(Ok(()));
                        }
                    }
                    Ok(_) => {
                        let _ = round_done.send(Err("unexpected message".to_owned()));
                        return;
                    }
                    // The end of the run closes the connections.
                    Err(_) => return,
                }
            }
        }));
    }
    drop(round_done);

    let mut latencies = Vec::with_capacity(options.rounds);
    let mut before = None;
    for round in 0..=options.rounds {
        if round == 1 {
            before = Some((
                scheduled_ns(pid).ok_or("broadcast: cannot read the server's schedstat")?,
                compressed.load(Ordering::Acquire),
            ));
        }
        received.store(0, Ordering::Release);
        let prefix = format!("broadcast {round} ");
        let text = prefix.clone() + &text_of(options.size.saturating_sub(prefix.len()), "b");
        let (sender, negotiated) = &mut senders[0];
        let frame = text_frame(&text, *negotiated, THRESHOLD);
        let started = Instant::now();
        sender
            .write_all(&frame)
            .await
            .map_err(|error| format!("broadcast: send failed: {error}"))?;
        super::wait_for_round(&mut rounds_done, round, &received, n).await?;
        if round >= 1 {
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let after = scheduled_ns(pid).ok_or("broadcast: cannot read the server's schedstat")?;
    let (before, compressed_before) = before.ok_or("broadcast: nothing measured")?;
    let delivered = (n * options.rounds) as f64;
    let compressed_pct =
        (compressed.load(Ordering::Acquire) - compressed_before) as f64 * 100.0 / delivered;
    let cpu_ns_per_delivered = after.saturating_sub(before) as f64 / delivered;
    latencies.sort_by(f64::total_cmp);
    let median_ms = latencies[latencies.len() / 2];
    println!(
        "{n} subscribers on {url} (server pid {pid}): {} measured publishes of {} B after 1 \
         warm-up",
        options.rounds, options.size
    );
    println!("time to the last subscriber: {median_ms:.2} ms (median)");
    println!("delivered compressed:        {compressed_pct:>12.1} %");
    println!("server CPU per delivered:    {cpu_ns_per_delivered:>12.0} ns");
    println!(
        "RESULT subscribers={n} rounds={} size={} cpu_ns_per_msg={cpu_ns_per_delivered:.1} \
         last_ms_median={median_ms:.3} compressed_pct={compressed_pct:.1}",
        options.rounds, options.size
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        futures_util::stream::iter(senders)
            .for_each_concurrent(200, |(mut sender, _)| async move {
                let mut frame = Vec::new();
                encode_frame(&mut frame, CLOSE, false, &1000u16.to_be_bytes());
                let _ = sender.write_all(&frame).await;
            })
            .await;
        for reader in readers {
            let _ = reader.await;
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let shared = Negotiated::parse(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert!(shared.server_no_takeover);
        assert_eq!((shared.server_window, shared.client_window), (15, 15));
        let dedicated = Negotiated::parse("permessage-deflate; client_max_window_bits=10").unwrap();
        assert!(!dedicated.server_no_takeover);
        assert_eq!(dedicated.client_window, 10);
        assert_eq!(Negotiated::parse("x-webkit-deflate-frame"), None);
    }

    #[test]
    fn compressed_messages_inflate_back() {
        let text = text_of(1000, "t");
        assert_eq!(text.len(), 1000);
        let compressed = compress(text.as_bytes(), 15);
        // Compresses as JSON does: well, but not to nothing.
        assert!(
            (250..600).contains(&compressed.len()),
            "{}",
            compressed.len()
        );
        for no_takeover in [true, false] {
            let mut reader = FrameReader::new(Some(Negotiated {
                server_no_takeover: no_takeover,
                server_window: 15,
                client_window: 15,
            }));
            for _ in 0..3 {
                let message = reader.finish(TEXT, true, compressed.clone()).unwrap();
                assert_eq!(message.payload, text.as_bytes());
            }
        }
    }

    #[test]
    fn frames_round_trip_through_the_reader() {
        let mut reader = FrameReader::new(None);
        // A server frame is unmasked: build one by hand, split in two fragments.
        let payload = b"hello there";
        reader.buffer.extend_from_slice(&[0x01, 5]);
        reader.buffer.extend_from_slice(&payload[..5]);
        reader.buffer.extend_from_slice(&[0x89, 0]); // a ping in between
        reader.buffer.extend_from_slice(&[0x80, 6]);
        reader.buffer.extend_from_slice(&payload[5..]);
        let message = reader.parse().unwrap().unwrap();
        assert_eq!((message.opcode, message.compressed), (TEXT, false));
        assert_eq!(message.payload, payload);
        assert!(reader.parse().unwrap().is_none());
        let mut out = Vec::new();
        encode_frame(&mut out, TEXT, true, &[7; 300]);
        assert_eq!(&out[..4], &[0xc1, 0xfe, 1, 44]);
        assert_eq!(out.len(), 4 + 4 + 300);
    }
}
