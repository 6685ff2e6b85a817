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
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let choice = self.next_choice();
        if self.wait(choice == 0) {
            // Nothing has arrived yet.
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
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let choice = self.next_choice();
        if self.wait(choice == 1) {
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
