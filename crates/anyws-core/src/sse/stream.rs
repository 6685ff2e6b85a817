//! A stream of server-sent events: an [`EventSender`] pushes [`Event`]s into a bounded buffer, and
//! the [`EventStream`] is the `text/event-stream` response body that drains it.

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{response_headers, Event};
use crate::runtime::{AsyncTimer, Runtime};

/// The default keep-alive interval: a comment line goes out when nothing else was sent for 15 s.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The default buffer size: 64 KiB of encoded events may wait for the client.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// What a keep-alive sends: an empty comment, which `EventSource` ignores.
const KEEP_ALIVE_COMMENT: &[u8] = b":\n\n";

/// A stream of server-sent events, for a handler to return as its response body; its
/// [`EventSender`] pushes the events.
///
/// Compare H3's `createEventStream` and axum's `Sse`. The stream is runtime-free: every adapter
/// serves it (`anyws_hyper::event_stream_response` for hyper, tokio, smol and async-std,
/// `anyws_axum::EventStreamResponse`, `anyws_actix::event_stream_response`), with the headers of
/// [`EventStream::into_response`].
///
/// ```
/// use anyws_core::sse::{Event, EventStream};
/// use futures_util::StreamExt;
/// # #[derive(Debug)] struct NoRuntime;
/// # impl anyws_core::Runtime for NoRuntime {
/// #     fn spawn(&self, _: anyws_core::BoxFuture) { unreachable!() }
/// #     fn new_timer(&self, _: std::time::Instant) -> std::pin::Pin<Box<dyn anyws_core::AsyncTimer>> { unreachable!() }
/// # }
/// # let runtime: std::sync::Arc<dyn anyws_core::Runtime> = std::sync::Arc::new(NoRuntime);
///
/// // `runtime` is the adapter's, such as `anyws_tokio::runtime()`; it makes the keep-alive timer.
/// let (events, stream) = EventStream::builder(runtime).keep_alive(None).build();
/// let response = stream.into_response(); // status 200, content-type text/event-stream, …
/// assert_eq!(response.headers()["content-type"], "text/event-stream");
///
/// // The producer, usually a task of its own; `send` waits while the client is slow.
/// # futures_executor::block_on(async move {
/// events.send(Event::data("hello").id("1")).await?;
/// events.comment("bye").await?;
/// events.close();
///
/// // What the client receives: everything buffered comes out as one chunk, then the end.
/// let mut body = response.into_body();
/// assert_eq!(body.next().await.unwrap(), "id: 1\ndata: hello\n\n: bye\n\n");
/// assert_eq!(body.next().await, None);
/// # Ok::<(), anyws_core::sse::Closed>(())
/// # }).unwrap();
/// ```
///
/// # Buffering and backpressure
///
/// Events are encoded as they are sent, into one buffer of at most
/// [`buffer`](EventStreamBuilder::buffer) bytes ([`DEFAULT_BUFFER`], 64 KiB). When the next event
/// does not fit, [`EventSender::send`] waits until the client has taken what is buffered, and
/// [`EventSender::try_send`] reports [`TrySendError::Full`]. An event larger than the whole
/// buffer waits for an empty buffer and then goes alone, so the memory an event stream holds is at
/// most the buffer size or the largest single event. Each poll of the stream takes everything
/// buffered as one chunk.
///
/// # Ending
///
/// The stream ends, after what is buffered, when [`EventSender::close`] is called or every
/// sender is dropped. When the client goes away, the server drops the stream: the senders are
/// closed and woken ([`EventSender::closed`] resolves, `send` returns [`Closed`]), and the
/// buffer is freed. The keep-alive timer lives inside the stream, so nothing outlives it.
pub struct EventStream {
    shared: Arc<Shared>,
    keep_alive: Option<KeepAlive>,
    ended: bool,
}

/// Builds an [`EventStream`] and its [`EventSender`]; see [`EventStream::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct EventStreamBuilder {
    runtime: Arc<dyn Runtime>,
    keep_alive: Option<Duration>,
    buffer: usize,
}

/// Pushes events into an [`EventStream`]: cheap to clone, `Send` and `Sync`.
pub struct EventSender {
    shared: Arc<Shared>,
}

/// The event stream is closed: [`EventSender::close`] was called, or the client went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the event stream is closed")]
pub struct Closed;

/// Why [`EventSender::try_send`] did not take an event; the event comes back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The buffer has no room for the event: the client is slower than the producer.
    #[error("the event stream's buffer is full")]
    Full(Event),
    /// The event stream is closed.
    #[error("the event stream is closed")]
    Closed(Event),
}

impl TrySendError {
    /// The event that was not sent.
    pub fn into_event(self) -> Event {
        match self {
            TrySendError::Full(event) | TrySendError::Closed(event) => event,
        }
    }

    /// Whether the buffer was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Whether the stream was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Notified when the stream took the buffer, or the stream closed: senders waiting for room.
    space: event_listener::Event,
    /// Notified when the stream closed.
    closed: event_listener::Event,
}

struct State {
    buffer: BytesMut,
    /// `close()` was called or the stream was dropped: no more events.
    closed: bool,
    senders: usize,
    /// The task polling the stream, woken when there is something to take.
    reader: Option<Waker>,
}

struct KeepAlive {
    runtime: Arc<dyn Runtime>,
    interval: Duration,
    /// Made at the first poll, so that the stream can be built outside the runtime.
    timer: Option<Pin<Box<dyn AsyncTimer>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the stream closed and wakes everybody waiting on it.
    fn close(&self, free_buffer: bool) {
        let reader = {
            let mut state = self.lock();
            state.closed = true;
            if free_buffer {
                state.buffer = BytesMut::new();
            }
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        self.space.notify(usize::MAX);
        self.closed.notify(usize::MAX);
    }
}

impl EventStream {
    /// A builder for an event stream whose keep-alive timer comes from `runtime`, with the
    /// defaults: a keep-alive comment after 15 s of silence, a 64 KiB buffer.
    pub fn builder(runtime: Arc<dyn Runtime>) -> EventStreamBuilder {
        EventStreamBuilder {
            runtime,
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            buffer: DEFAULT_BUFFER,
        }
    }

    /// An event stream with the defaults of [`EventStream::builder`], and its sender.
    pub fn new(runtime: Arc<dyn Runtime>) -> (EventSender, EventStream) {
        Self::builder(runtime).build()
    }

    /// The stream as a `200 OK` response with the headers of
    /// [`response_headers`](super::response_headers): `content-type: text/event-stream`,
    /// `cache-control: no-cache` and `x-accel-buffering: no`.
    pub fn into_response(self) -> http::Response<EventStream> {
        let mut response = http::Response::new(self);
        *response.headers_mut() = response_headers();
        response
    }

    /// Bytes encoded and waiting for the client.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffer.len()
    }
}

impl From<EventStream> for http::Response<EventStream> {
    fn from(stream: EventStream) -> Self {
        stream.into_response()
    }
}

impl EventStreamBuilder {
    /// Sends a comment line (`:`) when nothing else was sent for `interval`, so that proxies
    /// and the client see the connection alive. `None` (or zero) turns it off. Default: 15 s.
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval.filter(|i| !i.is_zero());
        self
    }

    /// The most encoded bytes that may wait for the client before a send waits. Default: 64 KiB.
    /// An event larger than this still goes, alone, once the buffer is empty.
    pub fn buffer(mut self, bytes: usize) -> Self {
        self.buffer = bytes;
        self
    }

    /// The sender and the stream.
    pub fn build(self) -> (EventSender, EventStream) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: BytesMut::new(),
                closed: false,
                senders: 1,
                reader: None,
            }),
            capacity: self.buffer,
            space: event_listener::Event::new(),
            closed: event_listener::Event::new(),
        });
        let keep_alive = self.keep_alive.map(|interval| KeepAlive {
            runtime: self.runtime,
            interval,
            timer: None,
        });
        (
            EventSender {
                shared: shared.clone(),
            },
            EventStream {
                shared,
                keep_alive,
                ended: false,
            },
        )
    }
}

impl EventSender {
    /// Sends `event`, waiting while the buffer has no room for it (the client is slow).
    /// `Err(Closed)` when the stream is closed or the client went away.
    ///
    /// Cancel safety: dropping the future before it resolves sends nothing.
    pub async fn send(&self, event: Event) -> Result<(), Closed> {
        let len = event.encoded_len();
        loop {
            let listener = {
                let state = self.shared.lock();
                if state.closed {
                    return Err(Closed);
                }
                if self.fits(&state, len) {
                    self.push(state, &event);
                    return Ok(());
                }
                self.shared.space.listen()
            };
            listener.await;
        }
    }

    /// Sends `event` if the buffer has room for it now; otherwise gives it back in
    /// [`TrySendError::Full`], or [`TrySendError::Closed`] when the stream is closed.
    pub fn try_send(&self, event: Event) -> Result<(), TrySendError> {
        let state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Closed(event));
        }
        if !self.fits(&state, event.encoded_len()) {
            return Err(TrySendError::Full(event));
        }
        self.push(state, &event);
        Ok(())
    }

    /// Sends a comment line, which clients ignore; see [`EventSender::send`].
    pub async fn comment(&self, text: impl Into<String>) -> Result<(), Closed> {
        self.send(Event::comment(text)).await
    }

    /// Closes the stream: what is buffered still goes to the client, then the response ends.
    /// Later sends return [`Closed`].
    pub fn close(&self) {
        self.shared.close(false);
    }

    /// Resolves once the stream is closed: by [`EventSender::close`], or because the client went
    /// away and the server dropped the stream. A producer selects on it to stop its work.
    pub async fn closed(&self) {
        loop {
            if self.is_closed() {
                return;
            }
            let listener = self.shared.closed.listen();
            if self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    /// Whether the stream is closed; see [`EventSender::closed`].
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Bytes encoded and waiting for the client; at most [`EventSender::capacity`], or one
    /// event's size when that event is larger.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffer.len()
    }

    /// The buffer size in bytes, as set with [`EventStreamBuilder::buffer`].
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    fn fits(&self, state: &State, len: usize) -> bool {
        state.buffer.is_empty() || state.buffer.len().saturating_add(len) <= self.shared.capacity
    }

    fn push(&self, mut state: MutexGuard<'_, State>, event: &Event) {
        event.encode(&mut state.buffer);
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl Clone for EventSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        let reader = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.reader.take()
            } else {
                None
            }
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl Stream for EventStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        {
            let mut state = this.shared.lock();
            if !state.buffer.is_empty() {
                let chunk = state.buffer.split().freeze();
                drop(state);
                this.shared.space.notify(usize::MAX);
                if let Some(keep_alive) = &mut this.keep_alive {
                    keep_alive.restart();
                }
                return Poll::Ready(Some(chunk));
            }
            if state.closed || state.senders == 0 {
                drop(state);
                this.ended = true;
                // Free the timer now; the stream may be kept until the response is dropped.
                this.keep_alive = None;
                return Poll::Ready(None);
            }
            match &mut state.reader {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                reader => *reader = Some(cx.waker().clone()),
            }
        }
        if let Some(keep_alive) = &mut this.keep_alive {
            if keep_alive.poll_due(cx).is_ready() {
                return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE_COMMENT)));
            }
        }
        Poll::Pending
    }
}

impl KeepAlive {
    /// Polls the timer; when it fired, moves it one interval on and returns `Ready`.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let runtime = &self.runtime;
        let interval = self.interval;
        let timer = self
            .timer
            .get_or_insert_with(|| runtime.new_timer(runtime.now() + interval));
        if timer.as_mut().poll(cx).is_ready() {
            timer.as_mut().reset(runtime.now() + interval);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Something was sent: the next keep-alive is one interval from now.
    fn restart(&mut self) {
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(self.runtime.now() + self.interval);
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.shared.close(true);
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("buffered_amount", &self.buffered_amount())
            .field("capacity", &self.shared.capacity)
            .field("keep_alive", &self.keep_alive.as_ref().map(|k| k.interval))
            .field("ended", &self.ended)
            .finish()
    }
}

impl fmt::Debug for EventSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("EventSender")
            .field("buffered_amount", &state.buffer.len())
            .field("capacity", &self.shared.capacity)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::BoxFuture;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Instant;

    /// A clock that only moves when a test says so; its timers fire when it passes them.
    #[derive(Debug)]
    struct FakeRuntime {
        now: Mutex<Instant>,
        timers: AtomicUsize,
    }

    #[derive(Debug)]
    struct FakeTimer {
        runtime: Arc<FakeRuntime>,
        deadline: Instant,
    }

    impl FakeRuntime {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                now: Mutex::new(Instant::now()),
                timers: AtomicUsize::new(0),
            })
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += by;
        }
    }

    #[derive(Debug)]
    struct Handle(Arc<FakeRuntime>);

    impl Runtime for Handle {
        fn spawn(&self, _future: BoxFuture) {
            unreachable!("an event stream spawns no task");
        }

        fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
            self.0.timers.fetch_add(1, Ordering::Relaxed);
            Box::pin(FakeTimer {
                runtime: self.0.clone(),
                deadline,
            })
        }

        fn now(&self) -> Instant {
            *self.0.now.lock().unwrap()
        }
    }

    impl AsyncTimer for FakeTimer {
        fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
            self.deadline = deadline;
        }

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            if *self.runtime.now.lock().unwrap() >= self.deadline {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    fn poll_stream(stream: &mut EventStream, waker: &Waker) -> Poll<Option<Bytes>> {
        Pin::new(stream).poll_next(&mut Context::from_waker(waker))
    }

    fn poll_future<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(waker))
    }

    fn stream(
        buffer: usize,
        keep_alive: Option<Duration>,
    ) -> (Arc<FakeRuntime>, EventSender, EventStream) {
        let clock = FakeRuntime::new();
        let (sender, stream) = EventStream::builder(Arc::new(Handle(clock.clone())))
            .buffer(buffer)
            .keep_alive(keep_alive)
            .build();
        (clock, sender, stream)
    }

    #[test]
    fn events_are_encoded_and_batched_into_one_chunk() {
        let (_, sender, mut stream) = stream(DEFAULT_BUFFER, None);
        let (wakes, waker) = counting_waker();
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Pending);
        sender
            .try_send(Event::retry_only(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the reader is woken");
        sender
            .try_send(Event::data("1").id("1").event("tick"))
            .unwrap();
        sender
            .try_send(Event::data("first line\nsecond line").event("note"))
            .unwrap();
        futures_executor::block_on(sender.comment("bye")).unwrap();
        let expected = "retry: 2000\n\nid: 1\nevent: tick\ndata: 1\n\n\
                        event: note\ndata: first line\ndata: second line\n\n: bye\n\n";
        assert_eq!(sender.buffered_amount(), expected.len());
        assert_eq!(
            poll_stream(&mut stream, &waker),
            Poll::Ready(Some(Bytes::from(expected)))
        );
        assert_eq!(sender.buffered_amount(), 0);
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Pending);
    }

    #[test]
    fn keep_alive_comment_after_silence_only() {
        let interval = Duration::from_secs(15);
        let (clock, sender, mut stream) = stream(DEFAULT_BUFFER, Some(interval));
        let waker = Waker::noop();
        assert_eq!(poll_stream(&mut stream, waker), Poll::Pending);
        clock.advance(Duration::from_secs(14));
        assert_eq!(poll_stream(&mut stream, waker), Poll::Pending);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            poll_stream(&mut stream, waker),
            Poll::Ready(Some(Bytes::from_static(b":\n\n")))
        );
        assert_eq!(poll_stream(&mut stream, waker), Poll::Pending);
        // An event 10 s later moves the next keep-alive to 15 s after it.
        clock.advance(Duration::from_secs(10));
        sender.try_send(Event::data("x")).unwrap();
        assert_eq!(
            poll_stream(&mut stream, waker),
            Poll::Ready(Some(Bytes::from_static(b"data: x\n\n")))
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(poll_stream(&mut stream, waker), Poll::Pending);
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            poll_stream(&mut stream, waker),
            Poll::Ready(Some(Bytes::from_static(b":\n\n")))
        );
        assert_eq!(clock.timers.load(Ordering::Relaxed), 1, "one timer, reset");
    }

    #[test]
    fn no_keep_alive_no_timer() {
        let (clock, _sender, mut stream) = stream(DEFAULT_BUFFER, Some(Duration::ZERO));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(poll_stream(&mut stream, Waker::noop()), Poll::Pending);
        assert_eq!(clock.timers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn bounded_buffer_full_then_send_waits_for_the_reader() {
        let (_, sender, mut stream) = stream(100, None);
        let event = |i: usize| Event::data(format!("{i:02}")); // "data: NN\n\n", 10 bytes
        for i in 0..10 {
            sender.try_send(event(i)).unwrap();
        }
        assert_eq!(sender.buffered_amount(), 100);
        let full = sender.try_send(event(10)).unwrap_err();
        assert!(full.is_full(), "{full:?}");
        assert_eq!(full.into_event(), event(10));

        // `send` waits, and is woken once the stream took the buffer.
        let (wakes, waker) = counting_waker();
        let mut send = std::pin::pin!(sender.send(event(10)));
        assert_eq!(poll_future(send.as_mut(), &waker), Poll::Pending);
        assert_eq!(poll_future(send.as_mut(), &waker), Poll::Pending);
        assert_eq!(sender.buffered_amount(), 100, "nothing past the limit");
        let Poll::Ready(Some(chunk)) = poll_stream(&mut stream, Waker::noop()) else {
            panic!("the buffer is ready");
        };
        assert_eq!(chunk.len(), 100);
        assert!(wakes.0.load(Ordering::SeqCst) >= 1, "the sender is woken");
        assert_eq!(poll_future(send.as_mut(), &waker), Poll::Ready(Ok(())));
        assert_eq!(
            poll_stream(&mut stream, Waker::noop()),
            Poll::Ready(Some(Bytes::from_static(b"data: 10\n\n")))
        );
    }

    #[test]
    fn an_event_larger_than_the_buffer_goes_alone() {
        let (_, sender, mut stream) = stream(16, None);
        let big = Event::data("x".repeat(100));
        sender.try_send(Event::data("a")).unwrap();
        assert!(sender.try_send(big.clone()).unwrap_err().is_full());
        assert!(poll_stream(&mut stream, Waker::noop()).is_ready());
        sender.try_send(big.clone()).unwrap();
        assert_eq!(sender.buffered_amount(), big.encoded_len());
        assert!(sender.try_send(Event::data("b")).unwrap_err().is_full());
        assert_eq!(
            poll_stream(&mut stream, Waker::noop()),
            Poll::Ready(Some(big.to_bytes()))
        );
    }

    #[test]
    fn close_flushes_then_ends() {
        let (_, sender, mut stream) = stream(DEFAULT_BUFFER, Some(Duration::from_secs(1)));
        let (wakes, waker) = counting_waker();
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Pending);
        sender.try_send(Event::data("last")).unwrap();
        sender.close();
        assert!(sender.is_closed());
        assert!(wakes.0.load(Ordering::SeqCst) >= 1);
        assert!(sender
            .try_send(Event::data("late"))
            .unwrap_err()
            .is_closed());
        assert_eq!(
            futures_executor::block_on(sender.send(Event::data("late"))),
            Err(Closed)
        );
        futures_executor::block_on(sender.closed());
        assert_eq!(
            poll_stream(&mut stream, &waker),
            Poll::Ready(Some(Bytes::from_static(b"data: last\n\n")))
        );
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Ready(None));
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Ready(None));
    }

    #[test]
    fn ends_when_every_sender_is_dropped() {
        let (_, sender, mut stream) = stream(DEFAULT_BUFFER, None);
        let second = sender.clone();
        let (wakes, waker) = counting_waker();
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Pending);
        second.try_send(Event::data("from the clone")).unwrap();
        drop(sender);
        assert_eq!(
            poll_stream(&mut stream, &waker),
            Poll::Ready(Some(Bytes::from_static(b"data: from the clone\n\n")))
        );
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Pending);
        let before = wakes.0.load(Ordering::SeqCst);
        drop(second);
        assert_eq!(wakes.0.load(Ordering::SeqCst), before + 1);
        assert_eq!(poll_stream(&mut stream, &waker), Poll::Ready(None));
    }

    #[test]
    fn dropping_the_stream_notifies_the_producer_and_frees_the_buffer() {
        let (_, sender, stream) = stream(10, None);
        sender.try_send(Event::data("0123")).unwrap(); // 11 bytes: alone in the buffer
        let (wakes, waker) = counting_waker();
        let mut closed = std::pin::pin!(sender.closed());
        let mut send = std::pin::pin!(sender.send(Event::data("waits")));
        assert_eq!(poll_future(closed.as_mut(), &waker), Poll::Pending);
        assert_eq!(poll_future(send.as_mut(), &waker), Poll::Pending);
        assert!(!sender.is_closed());

        drop(stream); // the client went away
        assert!(wakes.0.load(Ordering::SeqCst) >= 2, "both waiters woken");
        assert!(sender.is_closed());
        assert_eq!(sender.buffered_amount(), 0, "the buffer is freed");
        assert_eq!(poll_future(closed.as_mut(), &waker), Poll::Ready(()));
        assert_eq!(poll_future(send.as_mut(), &waker), Poll::Ready(Err(Closed)));
        assert!(sender.try_send(Event::data("x")).unwrap_err().is_closed());
    }

    #[test]
    fn into_response_has_the_event_stream_headers() {
        let (_, _sender, stream) = stream(DEFAULT_BUFFER, None);
        let response: http::Response<EventStream> = stream.into();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
    }

    #[test]
    fn handles_are_send_sync_and_the_stream_unpin() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn stream<T: Stream<Item = Bytes> + Send + Unpin + 'static>() {}
        send_sync::<EventSender>();
        send_sync::<EventStream>();
        stream::<EventStream>();
        fn send_future<F: Future + Send>(_: F) {}
        let (_, sender, _stream) = super::tests::stream(1, None);
        send_future(sender.send(Event::data("x")));
        send_future(sender.closed());
    }
}
