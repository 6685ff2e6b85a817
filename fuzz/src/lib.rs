//! What the fuzz targets share: runtimes whose timers never wake anyone (the targets poll by
//! hand), a poll loop, an in-memory connection and an app.

use anyws_core::{async_trait, AsyncTimer, BoxFuture, Hooks, Message, Peer, Runtime};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Spawned tasks are dropped; timers are ready once their deadline has passed, and never wake.
#[derive(Debug)]
pub struct ManualRuntime;

impl Runtime for ManualRuntime {
    fn spawn(&self, _future: BoxFuture) {}

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(ManualTimer(deadline))
    }
}

#[derive(Debug)]
struct ManualTimer(Instant);

impl AsyncTimer for ManualTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0 = deadline;
    }

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Polls `future` up to `max_polls` times; its output, if it finished.
pub fn poll_to_end<F: Future>(future: F, max_polls: usize) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..max_polls {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
    }
    None
}

/// The client side of an upgraded connection, in memory: reads hand out `input` in chunks whose
/// sizes come from `chunks` (so frames get split at every place), then end of stream; writes are
/// counted and dropped, and sometimes refused for a while, as a full socket would.
#[derive(Debug)]
pub struct MemoryStream<'a> {
    input: &'a [u8],
    chunks: &'a [u8],
    turn: usize,
    /// The last read or write waited: the next one goes ahead, so the stream always progresses.
    waited: bool,
    /// Bytes the server wrote.
    pub written: usize,
}

impl<'a> MemoryStream<'a> {
    /// A stream that delivers `input`, cut as `chunks` says.
    pub fn new(input: &'a [u8], chunks: &'a [u8]) -> Self {
        Self {
            input,
            chunks,
            turn: 0,
            waited: false,
            written: 0,
        }
    }

    fn next_choice(&mut self) -> u8 {
        let choice = if self.chunks.is_empty() {
            255
        } else {
            self.chunks[self.turn % self.chunks.len()]
        };
        self.turn += 1;
        choice
    }

    /// Whether this read or write waits (`Pending`), when `choice` asks for it.
    fn wait(&mut self, asks: bool) -> bool {
        let wait = asks && !self.waited;
        self.waited = wait;
        wait
    }
}

impl futures_io::AsyncRead for MemoryStream<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let choice = self.next_choice();
        if self.wait(choice == 0) {
            // Nothing has arrived yet; it will at once, and wakes the reader as a real stream
            // would (the connection does not poll a read side that was not woken).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf
            .len()
            .min(self.input.len())
            .min(usize::from(choice).max(1) * 16);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(n))
    }
}

impl futures_io::AsyncWrite for MemoryStream<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let choice = self.next_choice();
        if self.wait(choice == 1) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A runtime that keeps what is spawned, for the target to poll by hand
/// ([`TaskRuntime::poll_tasks`]); timers behave as [`ManualRuntime`]'s.
#[derive(Default)]
pub struct TaskRuntime {
    tasks: std::sync::Mutex<Vec<BoxFuture>>,
}

impl std::fmt::Debug for TaskRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRuntime").finish_non_exhaustive()
    }
}

impl TaskRuntime {
    /// Polls every spawned task once (and those they spawn, on the next call); the number of
    /// tasks still running.
    pub fn poll_tasks(&self) -> usize {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks"));
        let mut cx = Context::from_waker(Waker::noop());
        tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        let mut all = self.tasks.lock().expect("tasks");
        tasks.append(&mut all);
        *all = tasks;
        all.len()
    }
}

impl Runtime for TaskRuntime {
    fn spawn(&self, future: BoxFuture) {
        self.tasks.lock().expect("tasks").push(future);
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(ManualTimer(deadline))
    }
}

/// The targets' app: says `welcome` and joins `room` on open, echoes each message and publishes
/// it to the room, and closes with 4000 on `close`.
#[derive(Debug)]
pub struct EchoApp;

#[async_trait]
impl Hooks for EchoApp {
    async fn open(&self, peer: &Peer) {
        peer.subscribe("room");
        let _ = peer.send("welcome");
    }

    async fn message(&self, peer: &Peer, message: Message) {
        if message.bytes().as_ref() == b"close" {
            peer.close(4000, "bye");
            return;
        }
        let _ = peer.send(message.clone());
        peer.publish("room", message);
    }
}

/// The `ws_reader` target's check, also run on the seeds by `cargo test` (no nightly needed):
/// `data` is one byte `n` (mod 16), `n` bytes that steer the read sizes, then a client's bytes,
/// read by the sans-IO frame reader whole, in those pieces, and one byte at a time. None of the
/// three may panic or ask for more input while input is left; the reader never holds more than
/// a message and a control frame under the limits; and all three give the same events and the
/// same close code.
pub fn check_ws_reader(data: &[u8]) {
    let split = usize::from(data.first().copied().unwrap_or(0) % 16).min(data.len());
    let (chunks, input) = data.split_at(split);
    let whole = read_ws(input, &[]);
    assert_eq!(read_ws(input, chunks), whole, "read in pieces {chunks:?}");
    if input.len() <= 4096 {
        assert_eq!(read_ws(input, &[1]), whole, "read a byte at a time");
    }
}

/// The limits of the `ws_reader` target, small enough for the fuzzer to pass them.
const WS_MAX_MESSAGE: usize = 4096;
const WS_MAX_FRAME: usize = 2048;

/// Reads `input` in pieces whose sizes `chunks` gives in turn (0: an empty read; none: all at
/// once): the events, and the close code if reading failed.
fn read_ws(input: &[u8], chunks: &[u8]) -> (Vec<anyws_core::__fuzz::WsEvent>, Option<u16>) {
    let mut reader = anyws_core::__fuzz::WsReader::new(WS_MAX_MESSAGE, WS_MAX_FRAME);
    let mut events = Vec::new();
    let mut rest = input;
    let mut turn = 0;
    loop {
        let n = match chunks {
            [] => rest.len(),
            _ => usize::from(chunks[turn % chunks.len()]).min(rest.len()),
        };
        turn += 1;
        let (mut piece, tail) = rest.split_at(n);
        rest = tail;
        loop {
            let result = reader.read(&mut piece);
            assert!(
                reader.buffered() <= WS_MAX_MESSAGE + 125,
                "the reader holds {} bytes",
                reader.buffered()
            );
            match result {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {
                    assert!(piece.is_empty(), "the reader stopped with input left");
                    break;
                }
                Err(code) => {
                    assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
                    return (events, Some(code));
                }
            }
        }
        if rest.is_empty() {
            return (events, None);
        }
    }
}

/// The `inflate` target's check, also run on its seeds by `cargo test`: the first byte picks
/// the mode (bit 0 dedicated, bit 1 a 9-bit window), then the rest is a list of messages, each a
/// big-endian `u16` length and that many bytes. Each message is inflated as a client's
/// compressed message (bit 15 of its length set) or compressed by the server's side and
/// inflated back (clear). Inflating never panics, never gives more than the limit, and fails
/// only with 1007 or 1009; what the server compresses always inflates back to itself.
pub fn check_inflate(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let (dedicated, small) = (mode & 1 != 0, mode & 2 != 0);
    // What the client sent with context takeover is not read on after a failure.
    let mut client = anyws_core::__fuzz::Deflate::new(dedicated, small);
    let mut server = anyws_core::__fuzz::Deflate::new(dedicated, small);
    let mut reader = anyws_core::__fuzz::Deflate::new(dedicated, small);
    while let [high, low, tail @ ..] = rest {
        let header = u16::from_be_bytes([*high, *low]);
        let len = usize::from(header & 0x7fff).min(tail.len());
        let (message, tail) = tail.split_at(len);
        rest = tail;
        if header & 0x8000 != 0 {
            match client.inflate(message.to_vec(), INFLATE_MAX) {
                Ok(out) => assert!(out.len() <= INFLATE_MAX),
                Err(code) => {
                    assert!(matches!(code, 1007 | 1009), "close code {code}");
                    client = anyws_core::__fuzz::Deflate::new(dedicated, small);
                }
            }
        } else {
            // What goes plain (empty, or no smaller without context takeover) is not inflated.
            if let Some(compressed) = server.compress(message) {
                let back = reader
                    .inflate(compressed, message.len())
                    .expect("what the server compresses inflates");
                assert_eq!(back, message);
            }
        }
    }
}

/// The `inflate` target's limit on a message, small enough for the fuzzer to pass it.
const INFLATE_MAX: usize = 8192;

#[cfg(test)]
mod tests {
    /// The `inflate` seeds pass the check, and so do pseudo-random mutations of them.
    #[test]
    fn inflate_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/inflate");
        let mut seeds = Vec::new();
        for entry in std::fs::read_dir(dir).expect("the corpus") {
            seeds.push(std::fs::read(entry.expect("a seed").path()).expect("a seed"));
        }
        assert!(seeds.len() >= 4);
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for seed in &seeds {
            super::check_inflate(seed);
            for _ in 0..200 {
                let mut mutated = seed.clone();
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if !mutated.is_empty() {
                    let at = (state as usize) % mutated.len();
                    mutated[at] ^= (state >> 32) as u8 | 1;
                }
                super::check_inflate(&mutated);
            }
        }
    }

    /// Every seed of `ws_reader` (and of `frames`, which has the same layout) passes the check,
    /// and so do pseudo-random mutations of them.
    #[test]
    fn ws_reader_seeds() {
        let mut seeds = Vec::new();
        for target in ["ws_reader", "frames"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target);
            for entry in std::fs::read_dir(dir).expect("the corpus") {
                seeds.push(std::fs::read(entry.expect("a seed").path()).expect("a seed"));
            }
        }
        assert!(seeds.len() > 5);
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        for seed in &seeds {
            super::check_ws_reader(seed);
            for _ in 0..200 {
                let mut mutated = seed.clone();
                for _ in 0..4 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if !mutated.is_empty() {
                        let at = (state >> 8) as usize % mutated.len();
                        mutated[at] = state as u8;
                    }
                }
                super::check_ws_reader(&mutated);
            }
        }
    }
}
