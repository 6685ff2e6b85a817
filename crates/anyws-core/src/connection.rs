//! The connection driver: runs one peer's WebSocket over any `futures-io` byte stream.

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::future::CatchUnwind;
use futures_util::task::{waker_ref, ArcWake};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::admission::{Admission, Place};
use crate::error::panic_message;
use crate::limits::RateLimiter;
use crate::peer::{lock, Outbound, PeerInner};
use crate::read_ahead::poll_read_shared;
use crate::socket::Cork;
use crate::ws::deflate::{self, Compressor, Negotiated};
use crate::ws::frames::{self, Frames};
use crate::ws::{Event, ReadError, ReadLimits, Reader};
use crate::{close_code, CloseInfo, Error, Hooks, Message, Peer, ReadyState, SharedSocket};

/// Outgoing frames are gathered up to this many bytes before they are written out.
const WRITE_BUFFER_SIZE: usize = 64 * 1024;
/// Messages handled in one turn before the connection yields to other tasks.
const MESSAGES_PER_TURN: usize = 64;

/// An accepted peer whose connection has not started yet: the second half of
/// [`Server::handshake`](crate::Server::handshake).
///
/// The peer is already listed by [`Server::peers`](crate::Server::peers) and can be sent
/// messages and publishes (they wait in its queue), since its client may see the `101` before
/// this runs. Dropped without running, as when the upgrade fails after the response, the peer
/// leaves every list at once; its `open` and `close` hooks never run.
pub struct PendingPeer {
    peer: Peer,
    hooks: Arc<dyn Hooks>,
    /// The peer's place in the connection limits, given back when this is dropped: when the
    /// connection is over, or without running. `None` once given back.
    place: Option<Place>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Negotiated>,
}

impl fmt::Debug for PendingPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingPeer")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl PendingPeer {
    pub(crate) fn new(
        peer: Peer,
        hooks: Arc<dyn Hooks>,
        admission: Admission,
        deflate: Option<Negotiated>,
    ) -> Self {
        let place = admission.into_place(&peer.inner.shared);
        Self {
            peer,
            hooks,
            place: Some(place),
            deflate,
        }
    }

    /// The peer that will run.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Runs the peer on the upgraded connection `io` until it closes: opens it, hands its messages
    /// to the hooks in order, writes what it is sent, and runs the `close` hook at the end.
    ///
    /// `io` is the raw byte stream after the `101` response, with any bytes the HTTP layer read
    /// past the request put back in front. Adapters call this from a task of their runtime; the
    /// future is `Send` when `io` is, and runs on a thread-local executor when it is not (as
    /// with actix-web's payload streams).
    pub fn run<S>(self, io: S) -> impl Future<Output = ()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Not an `async fn` of its own: that would keep a second copy of `self` and `io` in the
        // peer's task for as long as the connection lives.
        self.run_with_prefix(io, Bytes::new())
    }

    /// Like [`PendingPeer::run`], for an HTTP layer that hands back the bytes it read past the
    /// request separately: `prefix` is read before `io`.
    pub fn run_with_prefix<S>(self, io: S, prefix: Bytes) -> impl Future<Output = ()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.start(io, prefix, None)
    }

    /// Like [`PendingPeer::run_with_prefix`], for an `io` that writes to `socket` unchanged
    /// (plain TCP, not TLS): while the peer has nothing else to write, a message sent or
    /// published to it is written to `socket` by the sender, without waking the peer's task;
    /// with permessage-deflate without context takeover ([`Deflate::shared`]) the sender
    /// compresses it as the task would (a publish's compressed bytes are shared). A peer with
    /// a compression context of its own ([`Deflate::dedicated`]), and a client's connection
    /// (whose frames are masked), write everything from their task as
    /// [`PendingPeer::run_with_prefix`] does, and so does every peer when `socket` is `None`.
    ///
    /// It takes an `Option` so that an HTTP layer whose connections may or may not offer their
    /// socket spawns one type of future for both (a choice between two would make every peer's
    /// task larger).
    ///
    /// [`Deflate::shared`]: crate::Deflate::shared
    /// [`Deflate::dedicated`]: crate::Deflate::dedicated
    pub fn run_on_socket<S>(
        self,
        io: S,
        prefix: Bytes,
        socket: Option<Arc<dyn SharedSocket>>,
    ) -> impl Future<Output = ()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.start(io, prefix, socket)
    }

    fn start<S>(
        self,
        io: S,
        prefix: Bytes,
        shared_socket: Option<Arc<dyn SharedSocket>>,
    ) -> impl Future<Output = ()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut reader = Reader::new();
        if self.peer.inner.shared.client {
            reader = reader.client();
        }
        if let Some(negotiated) = &self.deflate {
            reader = reader.with_extension(deflate::inflater(negotiated));
        }
        let mut socket = Some(Socket {
            io,
            reader,
            // `prefix` may be a view into the HTTP layer's whole read buffer: copy what it holds
            // and let go of it, or it would pin that buffer for the life of the connection.
            pending: Leftover::of(&prefix),
        });
        // The socket and `self` are made out here and only borrowed inside: this future is
        // the peer's task for as long as the connection lives, and an `async fn` keeps a copy
        // of every argument it moves on to another future.
        // Senders write to an idle peer's socket themselves, compressing as its task would when
        // it negotiated permessage-deflate without context takeover (the server's shared mode).
        // A peer with a compression context of its own, and a client (whose frames are
        // masked), write only from their task.
        let shared = match (shared_socket, &self.deflate) {
            (Some(shared), deflate) if !self.peer.inner.shared.client => match deflate {
                None => {
                    self.peer.inner.outbox.share_socket(shared, 0);
                    true
                }
                Some(negotiated)
                    if !negotiated.server_takeover && negotiated.server_window >= 9 =>
                {
                    self.peer
                        .inner
                        .outbox
                        .share_socket(shared, negotiated.server_window);
                    true
                }
                Some(_) => false,
            },
            _ => false,
        };
        let span = crate::observe::peer_span(&self.peer);
        crate::observe::Traced::new(
            async move {
                drive(&mut socket, &self, shared).await;
                // Dropping `self` now frees the peer's place in the connection limits.
            },
            span,
        )
    }
}

impl Drop for PendingPeer {
    /// A peer that never ran (or whose run was cancelled) leaves every list; one that ran to
    /// the end has left already. Either way its place in the connection limits is given back.
    fn drop(&mut self) {
        if self.peer.ready_state() != ReadyState::Closed {
            self.peer.set_ready_state(ReadyState::Closed);
            self.peer.inner.outbox.shut();
            self.peer.inner.shared.leave(&self.peer);
        }
        if let Some(place) = self.place.take() {
            place.give_back(&self.peer.inner.shared);
        }
    }
}

type HookFuture<'a> = CatchUnwind<AssertUnwindSafe<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>>;

struct RunningHook<'a> {
    name: HookName,
    future: HookFuture<'a>,
}

/// Which hook is running: a byte in every peer's driver, where its name would take two words.
#[derive(Clone, Copy, Debug)]
enum HookName {
    Open,
    Message,
    Drain,
    Ping,
    Pong,
    Error,
    Close,
}

impl HookName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Message => "message",
            Self::Drain => "drain",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Error => "error",
            Self::Close => "close",
        }
    }
}

fn hook<'a>(
    name: HookName,
    future: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
) -> RunningHook<'a> {
    RunningHook {
        name,
        future: AssertUnwindSafe(future).catch_unwind(),
    }
}

/// Awaits a hook to the end, containing a panic: after the connection is over there is nobody
/// left to report it to.
///
/// A plain fn returning an `async` block, as [`drive`] is, so that the peer's task holds `name`
/// and `future` once.
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn run_hook<'a>(
    name: HookName,
    future: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
) -> impl Future<Output = ()> + 'a {
    let mut running = hook(name, future);
    async move {
        if let Err(payload) = (&mut running.future).await {
            let message = panic_message(&*payload);
            crate::observe::late_panic(&Error::HookPanicked {
                hook: running.name.as_str(),
                message,
            });
        }
    }
}

/// The upgraded byte stream, read through the thread's shared buffer into the frame reader.
struct Socket<S> {
    io: S,
    reader: Reader,
    /// Bytes read (or handed over by the HTTP layer) that the reader has not taken yet: the
    /// rest of a read that held more than the event handled next. `None` on an idle
    /// connection, which keeps one pointer for it.
    pending: Option<Box<Leftover>>,
}

/// What a read held past the event handled next.
struct Leftover {
    bytes: Vec<u8>,
    /// Where the untaken part starts.
    at: usize,
}

impl Leftover {
    /// A copy of `input`, unless it is empty.
    fn of(input: &[u8]) -> Option<Box<Self>> {
        (!input.is_empty()).then(|| {
            Box::new(Self {
                bytes: input.to_vec(),
                at: 0,
            })
        })
    }
}

/// What the client's bytes gave.
enum Input {
    Event(Event),
    /// The client broke the protocol: nothing more is read.
    Failed(ReadError),
    /// The stream ended.
    End,
}

impl<S: AsyncRead + Unpin> Socket<S> {
    /// The next event from the client: from what is pending, else from the socket.
    fn poll_input(&mut self, cx: &mut Context<'_>, limits: ReadLimits) -> Poll<io::Result<Input>> {
        loop {
            let read = if let Some(leftover) = &mut self.pending {
                let mut input = &leftover.bytes[leftover.at..];
                let read = self.reader.read(&mut input, limits);
                leftover.at = leftover.bytes.len() - input.len();
                if input.is_empty() {
                    self.pending = None;
                }
                read
            } else {
                let (reader, pending) = (&mut self.reader, &mut self.pending);
                let read = ready!(poll_read_shared(&mut self.io, cx, |mut input| {
                    let read = reader.read(&mut input, limits);
                    // Kept for the next call; an idle connection keeps nothing.
                    *pending = Leftover::of(input);
                    read
                }))?;
                match read {
                    Some(read) => read,
                    None => return Poll::Ready(Ok(Input::End)),
                }
            };
            match read {
                Ok(Some(event)) => return Poll::Ready(Ok(Input::Event(event))),
                Ok(None) => {}
                Err(error) => return Poll::Ready(Ok(Input::Failed(error))),
            }
        }
    }

    /// Reads and drops what the client still sends: `Ready` once it closed its side (or the
    /// stream failed). At most [`MESSAGES_PER_TURN`] reads a call, so that a flood cannot keep
    /// the task from yielding.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.pending = None;
        for _ in 0..MESSAGES_PER_TURN {
            match poll_read_shared(&mut self.io, cx, |_| ()) {
                Poll::Ready(Ok(Some(()))) => {}
                Poll::Ready(Ok(None) | Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Runs the connection on `socket`, which it drops once the connection is over.
///
/// A plain fn returning an `async` block, which uses its captures in place: an `async fn` keeps
/// a second copy of its arguments.
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn drive<'a, S>(
    socket: &'a mut Option<Socket<S>>,
    pending: &'a PendingPeer,
    shared_socket: bool,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        // The peer and hooks are read from `pending` rather than kept in locals, which the task
        // would hold beside the driver.
        // The peer joined the registry in the handshake; a close asked for since then stands.
        pending.peer.open();
        crate::observe::opened();
        // The driver lives in a block of its own, so that the closing hooks below run in the
        // space it took rather than beside it; and `info` and `error` end with the closing
        // hooks, in the block around them: alive at the read-out's `await` as well, they would
        // be laid out beside the driver (what a future keeps across two of its `await`s gets
        // a place apart from everything else).
        let linger = {
            let (info, error, linger) = {
                let mut driver = Driver::new(
                    &pending.peer,
                    &*pending.hooks,
                    pending.deflate.as_ref(),
                    shared_socket,
                );
                if let Some(io) = socket.as_mut() {
                    std::future::poll_fn(|cx| driver.poll(cx, io)).await;
                }
                // The connection is over: stop queueing, leave every list, drop the socket
                // (unless it lingers), then tell the hooks.
                driver.running = None;
                let linger = driver.linger.then(|| driver.timer.take());
                (driver.close_info(), driver.error.take(), linger)
            };
            let peer = &pending.peer;
            peer.set_ready_state(ReadyState::Closed);
            peer.inner.outbox.shut();
            // Counted before it leaves: once a peer is off the list, its close shows in the
            // stats.
            crate::observe::ended(peer, &info, error.as_deref());
            peer.inner.shared.leave(peer);
            if linger.is_none() {
                *socket = None;
            }
            // A future of its own, which takes the driver's place in the task: what it keeps
            // across its `await`s is not laid out beside the driver.
            closing_hooks(pending, info, error).await;
            linger
        };
        let peer = &pending.peer;
        if let (Some(timer), Some(io)) = (linger, socket.as_mut()) {
            // The peer is gone; only its socket is left to read out (see `Driver::linger`),
            // within what is left of the close timeout.
            let shared = &peer.inner.shared;
            let mut timer = timer.unwrap_or_else(|| {
                shared
                    .runtime
                    .new_timer(shared.runtime.now() + shared.limits.close_timeout)
            });
            std::future::poll_fn(|cx| match io.poll_discard(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => timer.as_mut().poll(cx),
            })
            .await;
            *socket = None;
        }
    }
}

/// Runs the `error` hook (when the connection failed) and the `close` hook of a connection
/// that is over.
///
/// A plain fn returning an `async` block, as [`drive`] is: an `async fn` would keep `info` and
/// `error` twice, and this future takes the driver's place in every peer's task.
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn closing_hooks(
    pending: &PendingPeer,
    info: CloseInfo,
    mut error: Option<Box<Error>>,
) -> impl Future<Output = ()> + '_ {
    async move {
        // Through the trait object: `Arc<dyn Hooks>`'s own impl would box each call twice.
        let hooks: &dyn Hooks = &*pending.hooks;
        if let Some(error) = error.take() {
            run_hook(HookName::Error, hooks.error(&pending.peer, *error)).await;
        }
        run_hook(HookName::Close, hooks.close(&pending.peer, info)).await;
    }
}

/// The waker the read side of a connection is polled with: it notes that the read side woke the
/// task, then wakes the task. A wake-up for anything else (a message queued for the peer, a
/// timer) then skips polling the read side, which has nothing new: on async-io (smol,
/// async-std) that poll would cost a `read` system call that finds nothing and another to re-arm
/// the socket's readiness, for every message a publish delivers.
///
/// It is a field of the peer's outbox, and the peer is the waker (see the `ArcWake` impl below;
/// the driver borrows it per poll): no allocation of its own per connection. The task's waker is
/// the one senders wake, the outbox's.
#[derive(Default)]
pub(crate) struct ReadWaker {
    woken: AtomicBool,
}

impl ArcWake for PeerInner {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self
            .outbox
            .read_waker
            .woken
            .store(true, Ordering::Release);
        arc_self.outbox.waker.wake();
    }
}

struct Driver<'p> {
    peer: &'p Peer,
    hooks: &'p dyn Hooks,
    /// The hook being awaited: messages are handled one after the other.
    running: Option<RunningHook<'p>>,
    /// The read side answered `Pending` when last polled, and holds `read_waker`: until that is
    /// woken, polling the read side again would only find nothing.
    read_idle: bool,
    /// Messages taken from the peer's queue, not yet encoded.
    batch: VecDeque<Outbound>,
    /// permessage-deflate's writing side, when negotiated.
    compressor: Option<Compressor>,
    /// Frames encoded and not yet written to the socket.
    frames: Frames,
    /// The client's close frame is to be answered.
    close_reply_due: bool,
    /// Payload bytes encoded since the last completed flush.
    unflushed: usize,
    needs_flush: bool,
    /// A flush had to wait for the socket since the queue was last empty.
    backpressure: bool,
    drain_pending: bool,
    /// The close frame we sent, once sent. Boxed, as the other rare states below: the driver
    /// lives in every idle peer's task.
    sent_close: Option<Box<(u16, String)>>,
    /// The close frame the client sent.
    received_close: Option<Box<(u16, String)>>,
    /// Reading failed; the connection ends once our close frame is out (or the close timeout
    /// passed).
    read_failed: bool,
    /// The connection ended after a read failure with our close frame out and our side of the
    /// stream shut: the client may still be sending. Closing the socket with its bytes unread
    /// would make the kernel reset the connection, and a reset can destroy what we wrote (the
    /// last messages, our close frame) before the client reads it. So once the peer is gone,
    /// `drive` reads and drops what arrives until the client closes its side, within the close
    /// timeout.
    linger: bool,
    /// Reading stopped because too much output was waiting for the peer.
    read_paused: bool,
    error: Option<Box<Error>>,
    /// The close timeout, once the peer is closing. (The idle timeout and pings are kept by
    /// the server's sweep, `crate::sweep`.)
    timer: Option<Pin<Box<dyn crate::AsyncTimer>>>,
    /// When something was last received from the peer (or when it opened), in the sweep's
    /// milliseconds (`crate::sweep::Sweep::millis`).
    heard_at: u64,
    /// The automatic ping is due an interval after this: the later of `heard_at` and the last
    /// automatic ping.
    ping_base: u64,
    /// An automatic ping waits to be written.
    ping_due: bool,
    /// The peer's token bucket, with [`Limits::message_rate`](crate::Limits::message_rate).
    rate: Option<Box<RateLimiter>>,
    /// Senders may write to the socket while this is idle (see `Outbox::push`).
    shared_socket: bool,
}

impl Drop for Driver<'_> {
    /// However the connection ends (even with its task dropped), no sender writes to the
    /// socket once the driver is gone, and the socket goes only after it.
    fn drop(&mut self) {
        if self.shared_socket {
            self.peer.inner.outbox.unshare_socket();
        }
    }
}

impl<'p> Driver<'p> {
    fn new(
        peer: &'p Peer,
        hooks: &'p dyn Hooks,
        deflate: Option<&Negotiated>,
        shared_socket: bool,
    ) -> Self {
        let opened = peer.inner.shared.sweep.now();
        Self {
            peer,
            hooks,
            running: Some(hook(HookName::Open, hooks.open(peer))),
            read_idle: false,
            batch: VecDeque::new(),
            compressor: deflate.map(Compressor::new),
            frames: if peer.inner.shared.client {
                Frames::masked()
            } else {
                Frames::default()
            },
            close_reply_due: false,
            unflushed: 0,
            needs_flush: false,
            backpressure: false,
            drain_pending: false,
            sent_close: None,
            received_close: None,
            read_failed: false,
            linger: false,
            read_paused: false,
            error: None,
            timer: None,
            heard_at: opened,
            ping_base: opened,
            ping_due: false,
            rate: peer
                .inner
                .shared
                .limits
                .message_rate
                .map(|rate| Box::new(RateLimiter::new(rate))),
            shared_socket,
        }
    }

    fn fail(&mut self, error: Error) {
        if let Some(code) = error.close_code() {
            self.peer.close(code, "");
        }
        if self.error.is_none() {
            self.error = Some(Box::new(error));
        }
    }

    /// Looks at a closing peer's queue: true when the connection must end at once
    /// ([`Peer::terminate`], as after the shutdown deadline). After an overflow, the data still
    /// waiting in the batch is dropped as the queue's was, so that the close frame is next to go
    /// out once a frame partly written is done.
    fn closing_now(&mut self) -> bool {
        let outbox = &self.peer.inner.outbox;
        let queue = lock(&outbox.queue);
        if queue.terminate {
            return true;
        }
        if queue.overflowed && !self.batch.is_empty() {
            drop(queue);
            let mut dropped = 0;
            self.batch.retain(|message| {
                dropped += message.payload_len();
                !message.is_data()
            });
            outbox.buffered.fetch_sub(dropped, Ordering::AcqRel);
        }
        false
    }

    fn close_info(&self) -> CloseInfo {
        match self
            .received_close
            .as_deref()
            .or(self.sent_close.as_deref())
        {
            Some((code, reason)) => CloseInfo::new(*code, reason.clone()),
            None => CloseInfo::new(close_code::ABNORMAL, ""),
        }
    }

    /// One turn of the connection. Ready when the connection is over.
    fn poll<S>(&mut self, cx: &mut Context<'_>, socket: &mut Socket<S>) -> Poll<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (peer, hooks) = (self.peer, self.hooks);
        // What this turn sends to other peers that are idle is written to them when it ends,
        // each once.
        let _cork = Cork::new();
        // The task's waker before any look at the read side's flag or the queue: a wake-up
        // after that look reaches the task through it.
        self.peer.inner.outbox.waker.register(cx.waker());
        if self.shared_socket {
            // What this turn writes, and what its hooks send, goes through the task.
            self.peer.inner.outbox.claim_socket();
        }
        if peer.ready_state() >= ReadyState::Closing && self.closing_now() {
            return Poll::Ready(());
        }
        let mut handled = 0;
        let mut heard = false;
        let mut now = None;
        loop {
            // Finish the running hook before reading the next message, so messages are handled
            // in order.
            if let Some(current) = self.running.as_mut() {
                match current.future.poll_unpin(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(())) => self.running = None,
                    Poll::Ready(Err(payload)) => {
                        let name = current.name;
                        self.running = None;
                        self.fail(Error::HookPanicked {
                            hook: name.as_str(),
                            message: panic_message(&*payload),
                        });
                    }
                }
            }
            if self.drain_pending && self.sent_close.is_none() {
                self.drain_pending = false;
                self.running = Some(hook(HookName::Drain, hooks.drain(peer)));
                continue;
            }
            if self.read_failed || self.received_close.is_some() || handled == MESSAGES_PER_TURN {
                break;
            }
            if peer.buffered_amount() >= peer.inner.shared.queue_limits.read_pause
                || !self.frames.is_empty()
            {
                // Backpressure: read nothing more until the peer takes what it was sent, so that
                // neither its queue nor the pongs and replies its input asks for can grow.
                self.read_paused = true;
                break;
            }
            self.read_paused = false;
            let woken = self
                .peer
                .inner
                .outbox
                .read_waker
                .woken
                .swap(false, Ordering::AcqRel);
            if self.read_idle && !woken {
                break;
            }
            // The read side is polled with the peer as its waker (see `ReadWaker`), borrowed.
            let read_waker = waker_ref(&peer.inner);
            let limits = &peer.inner.shared.limits;
            let limits = ReadLimits {
                max_message_size: limits.max_message_size,
                max_frame_size: limits.max_frame_size,
            };
            let polled = socket.poll_input(&mut Context::from_waker(&read_waker), limits);
            self.read_idle = polled.is_pending();
            let event = match polled {
                Poll::Pending => break,
                Poll::Ready(Ok(Input::Event(event))) => event,
                Poll::Ready(Ok(Input::End)) => return Poll::Ready(()),
                Poll::Ready(Ok(Input::Failed(error))) => {
                    // The connection ends once our close frame is out.
                    self.read_failed = true;
                    self.fail(error.into());
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    self.fail(Error::Io(error));
                    return Poll::Ready(());
                }
            };
            let now = *now.get_or_insert_with(|| peer.inner.shared.runtime.now());
            heard = true;
            let counted = matches!(event, Event::Text(_) | Event::Binary(_) | Event::Ping(_));
            if counted
                && peer.ready_state() == ReadyState::Open
                && self.rate.as_mut().is_some_and(|rate| !rate.take(now))
            {
                // Over the rate: the close handshake starts, and what the peer sends until it
                // answers (at most the close timeout) is read and dropped, so that it gets the
                // close frame cleanly.
                self.fail(Error::RateLimited);
                handled += 1;
                continue;
            }
            // Data after a close frame is not handed to the hooks. Dropped or not, every event
            // counts towards the turn, so a flood after a close cannot keep the task from
            // yielding.
            let open = self.peer.ready_state() == ReadyState::Open;
            match event {
                Event::Close(frame) => {
                    self.received_close = Some(Box::new(
                        frame.unwrap_or((close_code::NO_STATUS, String::new())),
                    ));
                    self.peer.set_ready_state(ReadyState::Closing);
                    // Our own close, if already sent, is the answer.
                    self.close_reply_due = self.sent_close.is_none();
                }
                Event::Text(text) => {
                    handled += 1;
                    // The reader checked the text; this cannot fail.
                    if let (true, Ok(message)) = (open, Message::from_utf8(text)) {
                        peer.inner
                            .shared
                            .counters
                            .received(peer.inner.key, message.len());
                        self.running = Some(hook(HookName::Message, hooks.message(peer, message)));
                    }
                }
                Event::Binary(bytes) => {
                    handled += 1;
                    if open {
                        let message = Message::from_binary(bytes);
                        peer.inner
                            .shared
                            .counters
                            .received(peer.inner.key, message.len());
                        self.running = Some(hook(HookName::Message, hooks.message(peer, message)));
                    }
                }
                Event::Ping(payload) => {
                    handled += 1;
                    // Every ping is answered, ahead of queued data. Reading pauses while frames
                    // wait to be written, so a client that sends pings and reads nothing makes
                    // at most a turn's worth of pongs wait.
                    if self.sent_close.is_none() {
                        self.frames.encode_control(frames::PONG, &payload);
                    }
                    if open {
                        self.running = Some(hook(HookName::Ping, hooks.ping(peer, payload)));
                    }
                }
                Event::Pong(payload) => {
                    handled += 1;
                    if open {
                        self.running = Some(hook(HookName::Pong, hooks.pong(peer, payload)));
                    }
                }
            }
        }

        if heard {
            let shared = &peer.inner.shared;
            self.heard_at = shared
                .sweep
                .millis(now.unwrap_or_else(|| shared.runtime.now()));
            self.ping_base = self.ping_base.max(self.heard_at);
        }

        // What the turn published reaches its recipients' queues before anything the turn
        // wrote can reach its client: a client that sees the answer to its message and then
        // makes another peer subscribe must not find that peer among the recipients.
        Cork::release_all();
        match self.poll_write(cx, &mut socket.io) {
            Poll::Ready(Err(error)) => {
                if self.received_close.is_none() {
                    self.fail(Error::Io(error));
                }
                return Poll::Ready(());
            }
            Poll::Ready(Ok(Written::Terminated)) => return Poll::Ready(()),
            Poll::Ready(Ok(Written::All)) => {
                // Our close frame is out: as the answer to the client's (or answered by it), the
                // connection is over.
                if self.sent_close.is_some() && self.received_close.is_some() {
                    return Poll::Ready(());
                }
                // After a read failure, the connection is over once our side is shut; the
                // socket lingers (see `linger`).
                if self.sent_close.is_some() && self.read_failed {
                    return match Pin::new(&mut socket.io).poll_close(cx) {
                        Poll::Ready(Ok(())) => {
                            self.linger = true;
                            Poll::Ready(())
                        }
                        Poll::Ready(Err(_)) => Poll::Ready(()),
                        Poll::Pending => self.poll_timer(cx),
                    };
                }
                // Nothing left to write: until the next turn, senders write themselves. Not
                // once the close handshake began, and not while a ping or a drain is due.
                if self.shared_socket
                    && self.sent_close.is_none()
                    && self.received_close.is_none()
                    && !self.read_failed
                    && !self.ping_due
                    && !self.drain_pending
                    && peer.ready_state() == ReadyState::Open
                {
                    self.peer.inner.outbox.release_socket();
                }
            }
            Poll::Pending => {}
        }

        let resume = self.read_paused
            && peer.buffered_amount() < peer.inner.shared.queue_limits.read_pause
            && self.running.is_none();
        if resume || (handled == MESSAGES_PER_TURN && self.running.is_none()) {
            // More may be waiting to be read; let other tasks run first.
            cx.waker().wake_by_ref();
        }
        self.poll_timer(cx)
    }

    /// Writes out queued messages and the control frames the connection owes, and flushes once.
    /// `Ready(Ok(All))` when everything queued has been written out.
    fn poll_write<S>(&mut self, cx: &mut Context<'_>, io: &mut S) -> Poll<io::Result<Written>>
    where
        S: AsyncWrite + Unpin,
    {
        let outbox = &self.peer.inner.outbox;
        loop {
            if self.batch.is_empty() {
                let mut queue = lock(&outbox.queue);
                if queue.terminate {
                    return Poll::Ready(Ok(Written::Terminated));
                }
                if queue.overflowed && self.error.is_none() {
                    self.error = Some(Box::new(Error::SendQueueFull {
                        limit: self.peer.inner.shared.limits.max_buffered_bytes,
                    }));
                }
                if !queue.items.is_empty() {
                    std::mem::swap(&mut queue.items, &mut self.batch);
                } else if let Some(close) = queue.close.take() {
                    drop(queue);
                    if self.sent_close.is_none() && self.received_close.is_none() {
                        self.frames.encode_close(close.0, &close.1);
                        self.sent_close = Some(close);
                    }
                } else if std::mem::take(&mut self.ping_due) {
                    self.frames.encode_control(frames::PING, &[]);
                }
            }
            // The answer to the client's close frame: the same code and reason, or none when it
            // had none.
            if std::mem::take(&mut self.close_reply_due) {
                if let Some((code, reason)) = self.received_close.as_deref().cloned() {
                    if code == close_code::NO_STATUS {
                        self.frames.encode(frames::CLOSE, &[]);
                    } else {
                        self.frames.encode_close(code, &reason);
                    }
                    self.sent_close = Some(Box::new((code, reason)));
                }
            }
            // Encode the messages at the front of the batch, up to a write buffer's worth. Data
            // after the close handshake began is dropped.
            let open = self.sent_close.is_none() && self.received_close.is_none();
            while self.frames.len() < WRITE_BUFFER_SIZE {
                let Some(item) = self.batch.pop_front() else {
                    break;
                };
                let (message, prepared) = match &item {
                    Outbound::Rest(rest) => {
                        // The end of a frame already begun on the socket: always written.
                        self.unflushed += rest.len();
                        self.frames.extend_raw(rest);
                        continue;
                    }
                    Outbound::Frames(frames, payload) => {
                        if open {
                            self.unflushed += payload;
                            self.frames.extend_raw(frames);
                        } else {
                            outbox.buffered.fetch_sub(*payload, Ordering::AcqRel);
                        }
                        continue;
                    }
                    Outbound::Message(message) => (message, None),
                    Outbound::Prepared(prepared) => (&prepared.message, Some(&**prepared)),
                    Outbound::Ping(payload) => {
                        if open {
                            self.frames.encode_control(frames::PING, payload);
                        }
                        continue;
                    }
                };
                if !open {
                    outbox.buffered.fetch_sub(message.len(), Ordering::AcqRel);
                    continue;
                }
                self.unflushed += message.len();
                let opcode = if message.is_text() {
                    frames::TEXT
                } else {
                    frames::BINARY
                };
                let frames = &mut self.frames;
                let compressed = match (&mut self.compressor, &self.peer.inner.shared.deflate) {
                    (Some(compressor), Some(config)) => {
                        compressor.compress(config, message, prepared, |payload| {
                            frames.encode_compressed(opcode, payload)
                        })
                    }
                    _ => None,
                };
                if compressed.is_none() {
                    frames.encode(opcode, message.bytes());
                }
            }
            if self.frames.is_empty() {
                if self.batch.is_empty() {
                    break;
                }
                continue;
            }
            match self.frames.poll_write_to(cx, io) {
                Poll::Pending => {
                    self.backpressure = true;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => self.needs_flush = true,
            }
        }
        if self.needs_flush {
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Pending => {
                    self.backpressure = true;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    let flushed = std::mem::take(&mut self.unflushed);
                    let before = outbox.buffered.fetch_sub(flushed, Ordering::AcqRel);
                    outbox.notify_drained();
                    if before == flushed && std::mem::take(&mut self.backpressure) {
                        self.drain_pending = true;
                        cx.waker().wake_by_ref();
                    }
                }
            }
        }
        // The batch's memory goes back too (it is swapped with the queue's, so neither keeps
        // any): an idle connection holds no queue memory, and the next burst allocates anew.
        if self.batch.capacity() != 0 {
            self.batch = VecDeque::new();
        }
        self.frames.release();
        Poll::Ready(Ok(Written::All))
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let peer = self.peer;
        let shared = &peer.inner.shared;
        let limits = &shared.limits;
        // The close timeout runs from the moment the close was decided (asked for, a limit, a
        // full queue, the client's close frame), not from when the close frame was written: a
        // client that stops reading may never let it be written.
        let closing = self.sent_close.is_some()
            || self.read_failed
            || peer.ready_state() >= ReadyState::Closing;
        if closing {
            let timer = self.timer.get_or_insert_with(|| {
                shared
                    .runtime
                    .new_timer(shared.runtime.now() + limits.close_timeout)
            });
            // Ready once the close timeout passed without an answer.
            return timer.as_mut().poll(cx);
        }
        // Deadlines only move later (as the peer is heard from, or pinged), so the one
        // published to the server's sweep stands until the sweep finds it passed and takes it
        // back (see `crate::sweep`): only then is there anything to look at.
        let inner = &peer.inner;
        if inner.deadline.load(Ordering::Relaxed) != crate::sweep::NEVER {
            return Poll::Pending;
        }
        if self.next_deadline().is_none() {
            return Poll::Pending;
        }
        let now = shared.sweep.now();
        if limits
            .idle_timeout
            .is_some_and(|idle| now >= self.heard_at.saturating_add(millis(idle)))
        {
            if self.error.is_none() {
                self.error = Some(Box::new(Error::IdleTimeout));
            }
            return Poll::Ready(());
        }
        if let Some(interval) = ping_interval(limits) {
            if now >= self.ping_base.saturating_add(millis(interval)) {
                self.ping_base = now;
                self.ping_due = true;
                cx.waker().wake_by_ref();
            }
        }
        if let Some(deadline) = self.next_deadline() {
            inner.deadline.store(deadline, Ordering::Relaxed);
            shared.sweep.ensure_running(shared);
        }
        Poll::Pending
    }

    /// When the idle timeout or the next automatic ping is due, whichever comes first, in the
    /// sweep's milliseconds.
    fn next_deadline(&self) -> Option<u64> {
        let limits = &self.peer.inner.shared.limits;
        let idle = limits
            .idle_timeout
            .map(|idle| self.heard_at.saturating_add(millis(idle)));
        let ping =
            ping_interval(limits).map(|interval| self.ping_base.saturating_add(millis(interval)));
        match (idle, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `duration` in whole milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The automatic ping interval in effect: the configured one, or half the idle timeout when that
/// is shorter, so that a live client always has time to answer before the idle timeout.
pub(crate) fn ping_interval(limits: &crate::Limits) -> Option<Duration> {
    match (limits.ping_interval, limits.idle_timeout) {
        (Some(interval), Some(idle)) => Some(interval.min(idle / 2)),
        (interval, _) => interval,
    }
}

enum Written {
    All,
    Terminated,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AsyncTimer, BoxFuture, Request, Runtime, ServerBuilder};
    use std::io;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::task::{Wake, Waker};
    use std::time::Instant;

    /// A runtime whose timers never fire; the test turns timeouts off anyway.
    #[derive(Debug)]
    struct NoTimers;

    #[derive(Debug)]
    struct Never;

    impl AsyncTimer for Never {
        fn reset(self: Pin<&mut Self>, _: Instant) {}
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }

    impl Runtime for NoTimers {
        fn spawn(&self, _: BoxFuture) {
            unreachable!("nothing spawns in this test")
        }
        fn new_timer(&self, _: Instant) -> Pin<Box<dyn AsyncTimer>> {
            Box::pin(Never)
        }
    }

    /// The client side of a connection in memory: what it has to say, what it was sent, and
    /// how often the server polled it for input.
    #[derive(Default)]
    struct Wire {
        input: Vec<u8>,
        output: Vec<u8>,
        read_polls: usize,
        reader: Option<Waker>,
    }

    struct Stream(Arc<Mutex<Wire>>);

    impl AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut wire = self.0.lock().unwrap();
            wire.read_polls += 1;
            if wire.input.is_empty() {
                wire.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(wire.input.len());
            buf[..n].copy_from_slice(&wire.input[..n]);
            wire.input.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().output.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts the messages it is handed.
    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Hooks for Counting {
        async fn message(&self, _: &Peer, _: Message) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Counts the times the task is woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Counts the `open` and `close` hooks it runs.
    #[derive(Default)]
    struct Lifecycle {
        opened: AtomicUsize,
        closed: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Hooks for Arc<Lifecycle> {
        async fn open(&self, _: &Peer) {
            self.opened.fetch_add(1, Ordering::SeqCst);
        }
        async fn close(&self, _: &Peer, _: CloseInfo) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn upgrade_request() -> Request {
        let (parts, ()) = http::Request::get("/")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap()
            .into_parts();
        Request::new(parts, None)
    }

    /// A peer is listed, and takes messages, from the moment its handshake is accepted, before
    /// the adapter has written the `101` or run it; dropped without running (the upgrade failed
    /// after the response), it leaves every list, gives its place in the limits back, and no
    /// hook runs.
    #[test]
    fn a_peer_is_listed_from_its_handshake_until_dropped() {
        let hooks = Arc::new(Lifecycle::default());
        let server = ServerBuilder::new(hooks.clone()).build(Arc::new(NoTimers));
        let handshake = futures_executor::block_on(server.handshake(upgrade_request()));
        let (response, pending) = handshake.into_parts();
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        let pending = pending.expect("a peer");
        let peer = pending.peer().clone();
        assert_eq!(server.peers(), vec![peer.clone()]);
        assert_eq!(server.connection_count(), 1);
        peer.subscribe("room");
        server.publish("room", "early");
        assert_eq!(peer.buffered_amount(), 5, "the publish waits in its queue");

        drop(pending);
        assert!(server.peers().is_empty());
        assert_eq!(server.connection_count(), 0);
        assert_eq!(peer.ready_state(), ReadyState::Closed);
        assert!(peer.send("late").is_err());
        assert_eq!(hooks.opened.load(Ordering::SeqCst), 0);
        assert_eq!(hooks.closed.load(Ordering::SeqCst), 0);
    }

    /// The frames a peer's queue holds, and how many items hold them.
    fn queued(peer: &Peer) -> (Vec<u8>, usize) {
        let queue = lock(&peer.inner.outbox.queue);
        let mut wire = Vec::new();
        for item in &queue.items {
            match item {
                Outbound::Frames(frames, _) => wire.extend_from_slice(frames),
                Outbound::Message(message) => {
                    wire.extend_from_slice(frames::Header::data(message).as_slice());
                    wire.extend_from_slice(message.bytes());
                }
                _ => unreachable!("only data is queued here"),
            }
        }
        (wire, queue.items.len())
    }

    /// The frames of `texts`, one after another.
    fn text_frames(texts: &[&str]) -> Vec<u8> {
        let mut wire = Vec::new();
        for text in texts {
            let header = frames::Header::new(0x80 | frames::TEXT, text.len());
            wire.extend_from_slice(header.as_slice());
            wire.extend_from_slice(text.as_bytes());
        }
        wire
    }

    /// What a turn publishes is delivered when the turn ends, and each subscriber takes what
    /// it published to a topic as one item, framed once. The order holds: a send to a peer
    /// the held messages reach delivers them first, a send to the peer they skip does not,
    /// and a subscription made after a publish does not receive it.
    #[test]
    fn a_turns_publishes_arrive_at_its_end_as_one_item_in_order() {
        let server = ServerBuilder::new(Arc::new(Lifecycle::default())).build(Arc::new(NoTimers));
        let pending: Vec<_> = (0..3)
            .map(|_| {
                let handshake = futures_executor::block_on(server.handshake(upgrade_request()));
                handshake.into_parts().1.expect("a peer")
            })
            .collect();
        let [a, b, c] = [0, 1, 2].map(|i| pending[i].peer().clone());
        a.subscribe("room");
        b.subscribe("room");
        {
            let _turn = Cork::new();
            a.publish("room", "one");
            a.publish("room", "two");
            assert_eq!(queued(&b), (vec![], 0), "held to the turn's end");
            a.send("back").unwrap();
            assert_eq!(
                queued(&b),
                (vec![], 0),
                "a send to the publisher overtakes nothing"
            );
            a.publish("room", "three");
        }
        assert_eq!(queued(&b), (text_frames(&["one", "two", "three"]), 1));
        assert_eq!(b.buffered_amount(), 11);
        assert_eq!(queued(&a), (text_frames(&["back"]), 1));
        assert_eq!(queued(&c), (vec![], 0));
        assert_eq!(server.stats().messages_out, 4);

        lock(&b.inner.outbox.queue).items.clear();
        {
            let _turn = Cork::new();
            a.publish("room", "x");
            b.send("direct").unwrap();
            c.subscribe("room");
            a.publish("room", "y");
            a.publish("room", "z");
            assert_eq!(queued(&c), (vec![], 0));
        }
        assert_eq!(queued(&b), (text_frames(&["x", "direct", "y", "z"]), 3));
        assert_eq!(queued(&c), (text_frames(&["y", "z"]), 1));
        assert_eq!(queued(&a), (text_frames(&["back"]), 1));

        // Outside a turn a publish is delivered at once.
        server.publish("room", "now");
        assert_eq!(queued(&c), (text_frames(&["y", "z", "now"]), 2));
    }

    /// A close asked for between the handshake and the start of the connection stands: the
    /// peer does not become open again when it starts.
    #[test]
    fn a_close_before_the_start_stands() {
        let server = ServerBuilder::new(Arc::new(Lifecycle::default()))
            .idle_timeout(None)
            .ping_interval(None)
            .build(Arc::new(NoTimers));
        let handshake = futures_executor::block_on(server.handshake(upgrade_request()));
        let pending = handshake.into_parts().1.expect("a peer");
        let peer = pending.peer().clone();
        peer.close(close_code::GOING_AWAY, "bye");
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut run = Box::pin(pending.run(Stream(wire.clone())));
        let task = Waker::from(Arc::new(Wakes::default()));
        assert!(run
            .as_mut()
            .poll(&mut Context::from_waker(&task))
            .is_pending());
        assert_eq!(peer.ready_state(), ReadyState::Closing);
        // The close frame went out: 0x88, length 5, code 1001, "bye".
        assert_eq!(wire.lock().unwrap().output, b"\x88\x05\x03\xe9bye");
    }

    /// A peer woken for output only does not poll its socket for input, which has nothing new
    /// (on async-io that poll is a `read` system call and a re-arm of the socket's readiness,
    /// per delivered message); input that arrives later is still read at its wake-up.
    #[test]
    fn output_wake_ups_do_not_poll_the_socket_for_input() {
        let received = Arc::new(AtomicUsize::new(0));
        let server = ServerBuilder::new(Counting(received.clone()))
            .idle_timeout(None)
            .ping_interval(None)
            .build(Arc::new(NoTimers));
        let handshake = futures_executor::block_on(server.handshake(upgrade_request()));
        let (response, pending) = handshake.into_parts();
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut run = Box::pin(pending.expect("a peer").run(Stream(wire.clone())));
        let wakes = Arc::new(Wakes::default());
        let task = Waker::from(wakes.clone());
        let mut poll = || {
            assert!(run
                .as_mut()
                .poll(&mut Context::from_waker(&task))
                .is_pending())
        };

        poll();
        let peer = server.peers().pop().expect("the peer is open");
        let read_polls = wire.lock().unwrap().read_polls;
        assert!(read_polls > 0, "the socket was polled for input once");

        for i in 0..100 {
            let woken = wakes.0.load(Ordering::SeqCst);
            peer.send(format!("{i:03}")).unwrap();
            assert_eq!(
                wakes.0.load(Ordering::SeqCst),
                woken + 1,
                "a send wakes the task"
            );
            poll();
        }
        let wire_now = wire.lock().unwrap();
        assert_eq!(
            wire_now.read_polls, read_polls,
            "output wake-ups polled for input"
        );
        // 100 unmasked text frames of 3 bytes, each `81 03` and the payload.
        assert_eq!(wire_now.output.len(), 100 * 5);
        assert_eq!(&wire_now.output[495..], b"\x81\x03099");
        drop(wire_now);

        // A masked text frame "hi" arrives and wakes the read side: it is read and handled.
        let reader = {
            let mut wire = wire.lock().unwrap();
            let mask = [1u8, 2, 3, 4];
            wire.input
                .extend_from_slice(&[0x81, 0x82, mask[0], mask[1], mask[2], mask[3]]);
            wire.input
                .extend(b"hi".iter().zip(mask).map(|(b, m)| b ^ m));
            wire.reader.take().expect("the read side waits for input")
        };
        reader.wake();
        poll();
        assert_eq!(
            received.load(Ordering::SeqCst),
            1,
            "the message was handled"
        );
        assert!(wire.lock().unwrap().read_polls > read_polls);
    }

    /// What the peer's task keeps beside the driver while the connection runs is no more than
    /// the driver's captures and the poll's state: a local kept across two of the later
    /// `await`s (the closing hooks, the read-out after a failed close) would be laid out beside
    /// the driver, in every idle peer. (The closing hooks' `info` and `error`, 64 B, once did;
    /// then the closing hooks as an `async fn`, which kept both twice, set the task at 56 B
    /// beside the driver.)
    #[test]
    fn the_task_keeps_little_beside_the_driver() {
        fn size_of_future<F: Future>(_: impl FnOnce() -> F) -> usize {
            std::mem::size_of::<F>()
        }
        #[allow(unreachable_code)]
        let task = size_of_future(|| drive::<Stream>(todo!(), todo!(), false));
        let driver = std::mem::size_of::<Driver<'static>>();
        assert!(
            task <= driver + 48,
            "the task takes {task} B, the driver {driver} B"
        );
    }
}
