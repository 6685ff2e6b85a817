//! Peers: one connected client, as a cheap handle.

use bytes::Bytes;
use event_listener::Event;
use futures_util::task::AtomicWaker;
use serde::Serialize;
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::connection::ReadWaker;
use crate::server::Shared;
use crate::socket::Cork;
use crate::upgrade::Context;
use crate::ws::deflate::{Compressor, Deflate, Prepared};
use crate::ws::frames::{Header, BINARY, TEXT};
use crate::SharedSocket;
use crate::{close_code, Message, Request, SendError, Server};

/// A peer's unique id: a random UUID (version 4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(uuid::Uuid);

impl PeerId {
    pub(crate) fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id as a 128-bit number.
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// Parses the hyphenated form that [`Display`](fmt::Display) writes.
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::try_parse(text).ok().map(Self)
    }
}

/// How a peer is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A WebSocket connection.
    WebSocket,
    /// The SSE transport: an event stream from the server, `POST`s from the client.
    Sse,
}

impl fmt::Display for PeerId {
    /// The hyphenated lower-case form, such as `67e55044-10b1-426f-9247-bb680e5fe0c8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// The state of a peer's connection, numbered as the browser's `WebSocket.readyState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// The handshake is done but the peer has not been opened yet (0).
    Connecting = 0,
    /// The peer can send and receive (1).
    Open = 1,
    /// A close has been started; nothing more can be sent (2).
    Closing = 2,
    /// The connection is gone (3).
    Closed = 3,
}

impl ReadyState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Open,
            2 => Self::Closing,
            _ => Self::Closed,
        }
    }
}

/// A connected client, as a cheap `Clone + Send + Sync` handle.
///
/// Sending never waits: a message is queued and the peer's connection writes out everything
/// queued at once. The queue is bounded by
/// [`Limits::max_buffered_bytes`](crate::Limits::max_buffered_bytes).
#[derive(Clone)]
pub struct Peer {
    pub(crate) inner: Arc<PeerInner>,
}

pub(crate) struct PeerInner {
    pub(crate) key: u64,
    id: PeerId,
    request: Request,
    pub(crate) namespace: Arc<str>,
    context: Option<Context>,
    /// The subprotocol and extensions of the `101`, apart as most peers have neither, and
    /// shared by the peers that got the same answer (see [`Answered::shared`]).
    answered: Option<Arc<Answered>>,
    /// The topics it is subscribed to, in order: a boxed slice, a word smaller than a `Vec`
    /// in every peer, reallocated on each (rare) subscribe and unsubscribe.
    pub(crate) topics: Mutex<Box<[Arc<str>]>>,
    pub(crate) outbox: Outbox,
    pub(crate) shared: Arc<Shared>,
    /// When the handshake was accepted, in the sweep's milliseconds (see [`Sweep::millis`]):
    /// half an `Instant`.
    ///
    /// [`Sweep::millis`]: crate::sweep::Sweep::millis
    opened_at: u64,
    /// When the connection's driver next needs its task woken for the idle timeout or a ping,
    /// for the server's sweep (see `crate::sweep`).
    pub(crate) deadline: std::sync::atomic::AtomicU64,
}

/// What the `101` answered beyond the upgrade itself.
#[derive(Debug, PartialEq)]
struct Answered {
    /// The subprotocol selected in the `upgrade` hook.
    protocol: Option<Box<str>>,
    /// The `Sec-WebSocket-Extensions` value, when an extension was negotiated.
    extensions: Option<Arc<str>>,
}

/// How many different answers [`Answered::shared`] keeps to share: far more than a server
/// gives in practice (a few subprotocols, each with or without one of its compression answers).
const SHARED_ANSWERS: usize = 64;

impl Answered {
    /// The answer `protocol` and `extensions` make, `None` when neither is there: the copy that
    /// earlier peers with the same answer hold, so that a peer with permessage-deflate or a
    /// subprotocol holds a pointer and no allocation of its own. The first
    /// [`SHARED_ANSWERS`] different answers are kept for sharing; any after them are the
    /// peer's own.
    fn shared(protocol: Option<String>, extensions: Option<Arc<str>>) -> Option<Arc<Self>> {
        static KNOWN: Mutex<Vec<Arc<Answered>>> = Mutex::new(Vec::new());
        if protocol.is_none() && extensions.is_none() {
            return None;
        }
        let answer = Answered {
            protocol: protocol.map(String::into_boxed_str),
            extensions,
        };
        let mut known = lock(&KNOWN);
        if let Some(same) = known.iter().find(|known| ***known == answer) {
            return Some(same.clone());
        }
        let answer = Arc::new(answer);
        if known.len() < SHARED_ANSWERS {
            known.push(answer.clone());
        }
        Some(answer)
    }
}

impl PeerInner {
    /// How long ago the handshake was accepted, to the millisecond.
    pub(crate) fn age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shared.sweep.now().saturating_sub(self.opened_at))
    }

    /// Queues `item` for the peer, or writes it (see [`Outbox::push`]), after anything this
    /// thread's turn published that the peer may be due first (see [`Cork::release_before`]).
    pub(crate) fn push(self: &Arc<Self>, item: Outbound) -> Result<(), SendError> {
        Cork::release_before(self.key);
        let pushed =
            self.outbox
                .push(item, self.shared.queue_limits, self.shared.deflate.as_ref())?;
        if pushed == Pushed::Deferred {
            Cork::defer(self.clone());
        }
        Ok(())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Peer {
    pub(crate) fn new(
        request: Request,
        namespace: Arc<str>,
        context: Option<Context>,
        protocol: Option<String>,
        extensions: Option<Arc<str>>,
        transport: Transport,
        shared: Arc<Shared>,
    ) -> Self {
        let key = shared
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut request = request;
        request.pack();
        Self {
            inner: Arc::new(PeerInner {
                key,
                id: PeerId::random(),
                request,
                namespace,
                context,
                answered: Answered::shared(protocol, extensions),
                topics: Mutex::default(),
                outbox: Outbox::new(transport),
                opened_at: shared.sweep.now(),
                deadline: std::sync::atomic::AtomicU64::new(crate::sweep::NEVER),
                shared,
            }),
        }
    }

    /// The peer's unique id.
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// The request that opened the peer.
    pub fn request(&self) -> &Request {
        &self.inner.request
    }

    /// How the peer is connected: WebSocket or the SSE transport.
    pub fn transport(&self) -> Transport {
        self.inner.outbox.transport
    }

    /// The client's address, when the adapter knows it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.request.remote_addr()
    }

    /// The context set by [`Accept::context`](crate::Accept::context), if it has type `T`.
    pub fn context<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.inner.context.as_deref()?.downcast_ref()
    }

    /// The peer's namespace: the URL path unless the `upgrade` hook chose another.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The topics the peer is subscribed to, in the order it subscribed.
    pub fn topics(&self) -> Vec<String> {
        lock(&self.inner.topics)
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// The subprotocol selected in the `upgrade` hook, or else the raw `Sec-WebSocket-Protocol`
    /// request header, as CrossWS reports it. `None` when neither exists. On a client's peer,
    /// only the subprotocol the server selected.
    pub fn protocol(&self) -> Option<&str> {
        let answered = self.inner.answered.as_ref();
        let protocol = answered.and_then(|a| a.protocol.as_deref());
        if self.inner.shared.client {
            return protocol;
        }
        protocol.or_else(|| {
            self.inner
                .request
                .headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
        })
    }

    /// The negotiated extensions (the `Sec-WebSocket-Extensions` value of the `101`, such as
    /// `permessage-deflate; server_no_context_takeover; client_no_context_takeover`), or else
    /// the raw `Sec-WebSocket-Extensions` request header, as CrossWS reports it. `None` when
    /// neither exists. On a client's peer, only what the server answered.
    pub fn extensions(&self) -> Option<&str> {
        let answered = self.inner.answered.as_ref();
        let extensions = answered.and_then(|a| a.extensions.as_deref());
        if self.inner.shared.client {
            return extensions;
        }
        extensions.or_else(|| {
            self.inner
                .request
                .headers()
                .get(http::header::SEC_WEBSOCKET_EXTENSIONS)
                .and_then(|v| v.to_str().ok())
        })
    }

    /// The WebSocket URL: the request URL with the `ws://` scheme.
    pub fn url(&self) -> String {
        let url = self.inner.request.url();
        match url.strip_prefix("http") {
            Some(rest) => format!("ws{rest}"),
            None => url.to_owned(),
        }
    }

    /// The state of the connection.
    pub fn ready_state(&self) -> ReadyState {
        ReadyState::from_u8(self.inner.outbox.state.load(Ordering::Acquire))
    }

    /// Moves a connecting peer to [`ReadyState::Open`]; a peer whose close was asked for in the
    /// meantime stays closing.
    pub(crate) fn open(&self) {
        let _ = self.inner.outbox.state.compare_exchange(
            ReadyState::Connecting as u8,
            ReadyState::Open as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    pub(crate) fn set_ready_state(&self, state: ReadyState) {
        self.inner
            .outbox
            .state
            .store(state as u8, Ordering::Release);
    }

    /// Queues a message for the peer.
    ///
    /// Fails when the peer is closing, or when the message would pass
    /// [`Limits::max_buffered_bytes`](crate::Limits::max_buffered_bytes), in which case the peer
    /// is closed with 1013.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        let message = message.into();
        let len = message.len();
        self.inner.push(Outbound::Message(message))?;
        self.inner.shared.counters.sent(self.inner.key, 1, len);
        Ok(())
    }

    /// Queues `value` serialized as a JSON text message.
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        self.send(Message::from_json(value)?)
    }

    /// Subscribes the peer to `topic` in its namespace. Subscribing twice is a no-op.
    pub fn subscribe(&self, topic: &str) {
        self.inner.shared.subscribe(self, topic);
    }

    /// Unsubscribes the peer from `topic`.
    pub fn unsubscribe(&self, topic: &str) {
        self.inner.shared.unsubscribe(self, topic);
    }

    /// Sends `message` to every other subscriber of `topic` in the peer's namespace, never back
    /// to this peer. The payload is encoded once and shared by every recipient.
    ///
    /// Called from a hook, the message reaches the recipients' queues once the hook's turn of
    /// the connection has handled the messages it read at once, before the turn writes to its
    /// own client, together with everything else the turn published to `topic`, as one write
    /// for each recipient. Order holds: a later [`send`](Self::send), [`ping`](Self::ping) or
    /// [`close`](Self::close) to a recipient, and a later subscribe or unsubscribe, deliver
    /// what was published first. A peer that another thread subscribes meanwhile may receive
    /// it too.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) {
        self.inner.shared.publish(
            Some(&self.inner.namespace),
            topic,
            message.into(),
            Some(self.inner.key),
        );
    }

    /// The open peers of this peer's namespace, this one included.
    pub fn peers(&self) -> Vec<Peer> {
        self.inner.shared.peers_in(&self.inner.namespace)
    }

    /// The server this peer belongs to.
    pub fn server(&self) -> Server {
        Server::from_shared(self.inner.shared.clone())
    }

    /// Starts the close handshake: whatever is queued is sent, then a close frame with `code` and
    /// `reason`. The connection ends when the client answers, or after the close timeout.
    pub fn close(&self, code: u16, reason: &str) {
        Cork::release_before(self.inner.key);
        self.inner.outbox.close(code, reason);
    }

    /// Sends a ping frame with `payload`, cut to the 125 bytes a control frame can carry, after
    /// what is already queued; the client's pong reaches [`Hooks::pong`](crate::Hooks::pong).
    ///
    /// Over SSE, which has no ping frames, this does nothing and returns `Ok`. Fails when the
    /// peer is closing.
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        if self.inner.outbox.transport == Transport::Sse {
            return Ok(());
        }
        let mut payload = payload.into();
        payload.truncate(125);
        self.inner.push(Outbound::Ping(payload))
    }

    /// Drops the connection at once, without a close frame or flushing what is queued.
    pub fn terminate(&self) {
        self.inner.outbox.terminate();
    }

    /// Bytes of data messages queued or written but not yet handed to the operating system.
    pub fn buffered_amount(&self) -> usize {
        self.inner.outbox.buffered.load(Ordering::Acquire)
    }

    /// Waits until [`Peer::buffered_amount`] is at most `threshold` bytes, or the peer is closed.
    pub async fn wait_for_drain(&self, threshold: usize) {
        let outbox = &self.inner.outbox;
        loop {
            if self.buffered_amount() <= threshold || self.ready_state() == ReadyState::Closed {
                return;
            }
            let listener = outbox.drained.listen();
            // Pairs with the fence in `Outbox::notify_drained`: either the writer sees this
            // listener or the check below sees what it flushed.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.buffered_amount() <= threshold || self.ready_state() == ReadyState::Closed {
                return;
            }
            listener.await;
        }
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.inner.id)
            .field("namespace", &self.inner.namespace)
            .field("remote_addr", &self.remote_addr())
            .field("ready_state", &self.ready_state())
            .finish()
    }
}

impl PartialEq for Peer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Peer {}

/// What the writer of a peer's connection does next, besides sending queued messages.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) items: VecDeque<Outbound>,
    /// A close frame to send once `items` is written.
    pub(crate) close: Option<Box<(u16, String)>>,
    /// The close was asked for (by the application or an overflow); nothing more may be queued.
    pub(crate) closing: bool,
    /// The send queue passed its limit.
    pub(crate) overflowed: bool,
    /// Drop the connection now.
    pub(crate) terminate: bool,
    /// The connection's socket, while senders may write to it themselves (see
    /// [`Outbox::push`]).
    pub(crate) socket: Option<Arc<dyn SharedSocket>>,
    /// With `socket`: the window bits of the peer's permessage-deflate without context
    /// takeover, whose messages senders compress themselves; 0 when it has none.
    pub(crate) deflate_window: u8,
}

impl Queue {
    /// Appends `item` to `items`. An empty queue holds no capacity (see
    /// [`Outbox::flush_deferred`]), and its first item gets room for itself alone: one small
    /// allocation, which the allocator serves from its fast free lists, where a first growth
    /// to four items takes a larger chunk through its general path. A publish to many idle
    /// peers makes one of these per recipient, and frees it when the turn's writes are done.
    fn push_back(&mut self, item: Outbound) {
        if self.items.capacity() == 0 {
            self.items.reserve_exact(1);
        }
        self.items.push_back(item);
    }
}

/// A peer's outgoing queue, shared between senders and the connection's writer.
pub(crate) struct Outbox {
    pub(crate) queue: Mutex<Queue>,
    /// Bytes of data messages queued or fed to the socket and not yet flushed.
    pub(crate) buffered: AtomicUsize,
    pub(crate) waker: AtomicWaker,
    pub(crate) drained: Event,
    /// Notified when the peer starts closing.
    pub(crate) closing: Event,
    /// The peer's [`ReadyState`].
    pub(crate) state: AtomicU8,
    /// Who may write to the socket now: one of the `direct` states.
    pub(crate) direct: AtomicU8,
    /// Notes that the connection's read side woke its task (which `waker` wakes).
    pub(crate) read_waker: ReadWaker,
    /// The peer's transport, which never changes: kept here, beside the other bytes, where
    /// alignment leaves room, rather than adding a word to every peer.
    pub(crate) transport: Transport,
}

/// The bounds of a peer's send queue, the same for every peer of a server (kept there, not in
/// each peer).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimits {
    /// [`Limits::max_buffered_bytes`](crate::Limits::max_buffered_bytes).
    limit: usize,
    /// While this many bytes wait, the connection reads nothing more from the peer.
    pub(crate) read_pause: usize,
}

impl QueueLimits {
    pub(crate) const fn new(limit: usize) -> Self {
        Self {
            limit,
            read_pause: if READ_PAUSE_BYTES < limit / 2 {
                READ_PAUSE_BYTES
            } else {
                limit / 2
            },
        }
    }
}

/// What [`Outbox::push`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued (the task woken) or written.
    Done,
    /// Queued for the end of this thread's turn: the caller defers the peer to it.
    Deferred,
}

/// What the socket takes now of what `write` writes: 0 when it takes nothing or fails (the
/// task meets the failure itself).
fn write_now(mut write: impl FnMut() -> std::io::Result<usize>) -> usize {
    loop {
        match write() {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return 0,
        }
    }
}

/// What is left of a frame of `header` and `payload` once `written` bytes of it went out;
/// `shared` is `payload` as `Bytes` when it is, to slice rather than copy.
fn rest_of(header: &[u8], payload: &[u8], shared: Option<&Bytes>, written: usize) -> Bytes {
    if written < header.len() {
        let mut rest = header[written..].to_vec();
        rest.extend_from_slice(payload);
        Bytes::from(rest)
    } else {
        let from = written - header.len();
        match shared {
            Some(bytes) => bytes.slice(from..),
            None => Bytes::copy_from_slice(&payload[from..]),
        }
    }
}

/// The server's permessage-deflate configuration with the peer's window, for a peer whose
/// messages senders compress (`window` not 0).
fn with_window(deflate: Option<&Deflate>, window: u8) -> Option<(&Deflate, u8)> {
    deflate
        .filter(|_| window != 0)
        .map(|config| (config, window))
}

/// Frames `item` as the peer's task would when it is a data message, and hands the frame's
/// header and payload to `f`, with the payload as `Bytes` when it is the message's own: plain,
/// or, with `deflate` (the configuration and the window of a peer without context takeover),
/// compressed with the thread's compressor or with the publish's shared compressed bytes.
/// [`Outbound::Frames`] go as they are, with no header. `None`, without calling `f`, for
/// anything else.
fn frame_data<R>(
    item: &Outbound,
    deflate: Option<(&Deflate, u8)>,
    f: impl FnOnce(&[u8], &[u8], Option<&Bytes>) -> R,
) -> Option<R> {
    if let Outbound::Frames(frames, _) = item {
        // Framed already, and never for a peer that compresses (see `Held`).
        return Some(f(&[], frames, Some(frames)));
    }
    let data = item.message()?;
    let mut f = Some(f);
    if let Some((config, window)) = deflate {
        let prepared = match item {
            Outbound::Prepared(prepared) => Some(&**prepared),
            _ => None,
        };
        let opcode = if data.is_text() { TEXT } else { BINARY };
        let compressed =
            Compressor::Shared { window }.compress(config, data, prepared, |payload| {
                let header = Header::compressed(opcode, payload.len());
                f.take().map(|f| f(header.as_slice(), payload, None))
            });
        if let Some(result) = compressed.flatten() {
            return Some(result);
        }
    }
    let header = Header::data(data);
    f.map(|f| f(header.as_slice(), data.bytes(), Some(data.bytes())))
}

/// The largest frame [`write_direct`] copies into one buffer rather than writing its header
/// and payload as two.
const COPIED_FRAME: usize = 1024;

/// Writes `item`, a data message, as one frame straight to `socket`. `None` when all of it
/// went; otherwise what the task must write: the rest of the frame, or (`Some(None)`) the whole
/// message, when the socket took none of it or failed (the task then meets the failure itself).
fn write_direct(
    socket: &dyn SharedSocket,
    item: &Outbound,
    deflate: Option<(&Deflate, u8)>,
) -> Option<Option<Outbound>> {
    frame_data(item, deflate, |header, payload, shared| {
        let total = header.len() + payload.len();
        let written = if total <= COPIED_FRAME {
            // Small: copied into one buffer, for a plain write, which costs the kernel less
            // than a vectored one.
            let mut frame = [0; COPIED_FRAME];
            frame[..header.len()].copy_from_slice(header);
            frame[header.len()..total].copy_from_slice(payload);
            write_now(|| socket.try_write(&frame[..total]))
        } else {
            write_now(|| socket.try_write_vectored(&[IoSlice::new(header), IoSlice::new(payload)]))
        };
        if written >= total {
            return None;
        }
        if written == 0 {
            return Some(None);
        }
        Some(Some(Outbound::Rest(rest_of(
            header, payload, shared, written,
        ))))
    })
    .unwrap_or(Some(None))
}

/// Who writes to a peer's socket: its connection's task, or, while that has nothing to write,
/// whoever sends the peer a message (see [`Outbox::push`]).
pub(crate) mod direct {
    /// Only the connection's task writes: no shared socket, or its task is at work.
    pub(crate) const TASK: u8 = 0;
    /// The task is idle with nothing to write; a sender may write a whole frame itself.
    pub(crate) const IDLE: u8 = 1;
    /// A sender is writing, holding the queue's lock.
    pub(crate) const WRITING: u8 = 2;
}

/// The most outgoing data a peer may have waiting before its connection stops reading from it.
pub(crate) const READ_PAUSE_BYTES: usize = 64 * 1024;

/// What waits in a peer's queue.
#[derive(Clone, Debug)]
pub(crate) enum Outbound {
    /// A data message.
    Message(Message),
    /// A data message published while compression is on, shared by its recipients, which
    /// compress it once between them.
    Prepared(Arc<Prepared>),
    /// A ping frame's payload.
    Ping(Bytes),
    /// The rest of a frame a sender began to write to the socket itself: it goes out first,
    /// whatever else happens, so that the stream stays whole.
    Rest(Bytes),
    /// Data messages a turn published to a topic, framed once for all their recipients (see
    /// [`crate::socket::Cork`]): the frames, and the length of their payloads, which is what
    /// they count towards [`Peer::buffered_amount`].
    Frames(Bytes, usize),
}

impl Outbound {
    /// The data message, if this is one.
    pub(crate) fn message(&self) -> Option<&Message> {
        match self {
            Self::Message(message) => Some(message),
            Self::Prepared(prepared) => Some(&prepared.message),
            Self::Ping(_) | Self::Rest(_) | Self::Frames(..) => None,
        }
    }

    /// Whether this is data: messages, which are dropped once the close handshake begins or
    /// the queue overflows.
    pub(crate) fn is_data(&self) -> bool {
        matches!(
            self,
            Self::Message(_) | Self::Prepared(_) | Self::Frames(..)
        )
    }

    /// The bytes this counts towards [`Peer::buffered_amount`]: a data message's payload, or
    /// the rest of a frame.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Self::Rest(rest) => rest.len(),
            Self::Frames(_, payload) => *payload,
            _ => self.message().map_or(0, Message::len),
        }
    }
}

impl Outbox {
    fn new(transport: Transport) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            buffered: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
            drained: Event::new(),
            closing: Event::new(),
            state: AtomicU8::new(ReadyState::Connecting as u8),
            direct: AtomicU8::new(direct::TASK),
            read_waker: ReadWaker::default(),
            transport,
        }
    }

    /// Queues `message`, or writes it to the socket when the peer's task is idle (see
    /// [`direct`]). [`Pushed::Deferred`] asks the caller to [`Cork::defer`] the peer.
    ///
    /// `deflate` is the server's permessage-deflate configuration, with which a sender
    /// compresses what it writes itself to a peer that negotiated it (see
    /// [`Outbox::share_socket`]).
    pub(crate) fn push(
        &self,
        message: Outbound,
        limits: QueueLimits,
        deflate: Option<&Deflate>,
    ) -> Result<Pushed, SendError> {
        let len = message.payload_len();
        let mut queue = lock(&self.queue);
        if queue.closing || queue.terminate {
            return Err(SendError::Closed);
        }
        let buffered = self.buffered.load(Ordering::Relaxed);
        // Below the read-pause mark a message is always taken, so a peer that reads its replies,
        // however slowly, is never cut off by its own traffic: its connection stops reading from
        // it at that mark instead. Above it, the limit holds.
        if buffered != 0
            && buffered >= limits.read_pause
            && buffered.saturating_add(len) > limits.limit
        {
            // What is queued is dropped, but for the rest of a frame already begun.
            let mut dropped = 0;
            queue.items.retain(|item| {
                let keep = matches!(item, Outbound::Rest(_));
                if !keep {
                    dropped += item.payload_len();
                }
                keep
            });
            self.buffered.fetch_sub(dropped, Ordering::AcqRel);
            queue.overflowed = true;
            queue.closing = true;
            self.set_closing();
            queue.close = Some(Box::new((
                close_code::TRY_AGAIN_LATER,
                "send queue full".to_owned(),
            )));
            drop(queue);
            self.waker.wake();
            return Err(SendError::QueueFull);
        }
        let was_empty = queue.items.is_empty();
        let message = match (&queue.socket, message.is_data()) {
            // During a turn on this thread, an idle peer's first message waits for its end.
            (Some(_), true)
                if was_empty
                    && self.direct.load(Ordering::Acquire) == direct::IDLE
                    && Cork::corked() =>
            {
                queue.push_back(message);
                self.buffered.fetch_add(len, Ordering::AcqRel);
                return Ok(Pushed::Deferred);
            }
            (Some(socket), true) if was_empty && self.start_writing() => {
                let deflate = with_window(deflate, queue.deflate_window);
                match write_direct(&**socket, &message, deflate) {
                    None => {
                        self.direct.store(direct::IDLE, Ordering::Release);
                        return Ok(Pushed::Done);
                    }
                    // The task takes over from here, with what is left, first.
                    Some(rest) => {
                        self.direct.store(direct::TASK, Ordering::Release);
                        rest.unwrap_or(message)
                    }
                }
            }
            _ => message,
        };
        let len = message.payload_len();
        queue.push_back(message);
        self.buffered.fetch_add(len, Ordering::AcqRel);
        drop(queue);
        if was_empty {
            self.waker.wake();
        }
        Ok(Pushed::Done)
    }

    /// Writes what turns queued for this peer while its task was idle (see [`Cork`]): the
    /// frames encoded into `buf`, up to 64 KiB a system call, until the queue is empty or the
    /// socket full. What the socket does not take, and anything but data frames, is left to
    /// the task, woken.
    pub(crate) fn flush_deferred(&self, buf: &mut Vec<u8>, deflate: Option<&Deflate>) {
        /// Frames gathered into one write, as the task's writer gathers them.
        const WRITE_BYTES: usize = 64 * 1024;
        let mut guard = lock(&self.queue);
        let queue = &mut *guard;
        let Some(socket) = &queue.socket else {
            return;
        };
        let deflate = with_window(deflate, queue.deflate_window);
        if queue.items.is_empty() {
            return;
        }
        if !self.start_writing() {
            // The task took over meanwhile: it writes them.
            drop(guard);
            self.waker.wake();
            return;
        }
        let items = &mut queue.items;
        let mut sent = 0;
        let done = loop {
            buf.clear();
            let mut count = 0;
            for item in items.iter() {
                if buf.len() >= WRITE_BYTES {
                    break;
                }
                let framed = frame_data(item, deflate, |header, payload, _| {
                    buf.extend_from_slice(header);
                    buf.extend_from_slice(payload);
                });
                if framed.is_none() {
                    break;
                }
                sent += item.payload_len();
                count += 1;
            }
            if count == 0 {
                break items.is_empty();
            }
            items.drain(..count);
            let written = write_now(|| socket.try_write(buf));
            if written < buf.len() {
                // The socket is full: the task writes the rest, first, when it can.
                let rest = Bytes::copy_from_slice(&buf[written..]);
                self.buffered.fetch_add(rest.len(), Ordering::AcqRel);
                items.push_front(Outbound::Rest(rest));
                break false;
            }
        };
        self.buffered.fetch_sub(sent, Ordering::AcqRel);
        if done {
            // An idle peer keeps no queue capacity, as when its task wrote.
            queue.items = VecDeque::new();
            self.direct.store(direct::IDLE, Ordering::Release);
            drop(guard);
            self.notify_drained();
        } else {
            self.direct.store(direct::TASK, Ordering::Release);
            drop(guard);
            self.waker.wake();
        }
    }

    /// Takes the socket from an idle task (`direct::IDLE` to `direct::WRITING`), holding the
    /// queue's lock; false when the task has it.
    fn start_writing(&self) -> bool {
        self.direct
            .compare_exchange(
                direct::IDLE,
                direct::WRITING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Lets senders write straight to `socket` once the task says it is idle (see
    /// [`Outbox::push`]). `deflate_window` is the window bits of the peer's permessage-deflate
    /// without context takeover (0 without the extension): senders compress with the thread's
    /// compressor, and a publish's compressed bytes are shared, as the task would.
    pub(crate) fn share_socket(&self, socket: Arc<dyn SharedSocket>, deflate_window: u8) {
        let mut queue = lock(&self.queue);
        queue.socket = Some(socket);
        queue.deflate_window = deflate_window;
    }

    /// The connection's task is about to write, or to run code that may send: from now on
    /// senders queue. Waits for a sender writing now to finish.
    pub(crate) fn claim_socket(&self) {
        if self.direct.load(Ordering::Acquire) == direct::TASK {
            return;
        }
        if self
            .direct
            .compare_exchange(
                direct::IDLE,
                direct::TASK,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // A sender is writing, under the queue's lock.
            let _queue = lock(&self.queue);
            self.direct.store(direct::TASK, Ordering::Release);
        }
    }

    /// The connection's task wrote out everything and is going idle: senders may write to
    /// the socket themselves until it claims it back. Only with a shared socket.
    pub(crate) fn release_socket(&self) {
        self.direct.store(direct::IDLE, Ordering::Release);
    }

    /// The connection is ending: no sender touches its socket from now on.
    pub(crate) fn unshare_socket(&self) {
        let mut queue = lock(&self.queue);
        self.direct.store(direct::TASK, Ordering::Release);
        queue.socket = None;
    }

    /// Wakes whoever waits in [`Peer::wait_for_drain`] after a flush. The event's memory is
    /// made on its first use, so a peer nobody ever waited for does not get any.
    pub(crate) fn notify_drained(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.drained.total_listeners() != 0 {
            self.drained.notify(usize::MAX);
        }
    }

    /// Moves an open (or opening) peer to [`ReadyState::Closing`].
    fn set_closing(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s < ReadyState::Closing as u8).then_some(ReadyState::Closing as u8)
            });
        self.closing.notify(usize::MAX);
    }

    /// Asks for a close frame, unless a close or termination was already asked for.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut queue = lock(&self.queue);
        if queue.closing || queue.terminate {
            return;
        }
        queue.closing = true;
        queue.close = Some(Box::new((code, truncate_reason(reason).to_owned())));
        self.set_closing();
        drop(queue);
        self.waker.wake();
    }

    pub(crate) fn terminate(&self) {
        lock(&self.queue).terminate = true;
        self.set_closing();
        self.waker.wake();
    }

    /// The connection is gone: refuse further sends and forget what is queued.
    pub(crate) fn shut(&self) {
        let mut queue = lock(&self.queue);
        queue.closing = true;
        queue.items.clear();
        queue.close = None;
        queue.socket = None;
        self.direct.store(direct::TASK, Ordering::Release);
        drop(queue);
        self.buffered.store(0, Ordering::Release);
        self.drained.notify(usize::MAX);
    }
}

/// A close reason must fit in a control frame: at most 123 bytes, cut at a character boundary.
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_with_the_same_answer_share_it() {
        assert!(Answered::shared(None, None).is_none());
        let deflate: Arc<str> = "permessage-deflate; server_no_context_takeover".into();
        let with = |protocol: &str| {
            Answered::shared(Some(protocol.to_owned()), Some(deflate.clone())).unwrap()
        };
        let first = with("chat.v1");
        assert!(Arc::ptr_eq(&first, &with("chat.v1")));
        let other = with("chat.v2");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.protocol.as_deref(), Some("chat.v2"));
        assert_eq!(other.extensions.as_deref(), Some(&*deflate));
        let alone = Answered::shared(None, Some(deflate.clone())).unwrap();
        assert!(Arc::ptr_eq(
            &alone,
            &Answered::shared(None, Some(deflate)).unwrap()
        ));
        // Past the answers kept, a peer gets its own copy: the cache stays bounded.
        for n in 0..SHARED_ANSWERS {
            Answered::shared(Some(format!("p{n}")), None);
        }
        let late = || Answered::shared(Some("late".to_owned()), None).unwrap();
        assert!(!Arc::ptr_eq(&late(), &late()));
        assert_eq!(late().protocol.as_deref(), Some("late"));
    }

    #[test]
    fn reason_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.chars().count(), 61);
    }

    #[test]
    fn outbox_overflow_policy() {
        let outbox = Outbox::new(Transport::WebSocket);
        let limits = QueueLimits::new(10);
        assert_eq!(limits.read_pause, 5);
        let msg = |n: usize| Outbound::Message(Message::from_binary(vec![0; n]));
        // Below the read-pause mark anything is accepted, even past the limit.
        outbox.push(msg(4), limits, None).unwrap();
        outbox.push(msg(46), limits, None).unwrap();
        assert_eq!(outbox.buffered.load(Ordering::Relaxed), 50);
        // The next one overflows: the queue is dropped and a 1013 close is scheduled.
        assert!(matches!(
            outbox.push(msg(1), limits, None),
            Err(SendError::QueueFull)
        ));
        assert_eq!(outbox.buffered.load(Ordering::Relaxed), 0);
        let queue = lock(&outbox.queue);
        assert!(queue.items.is_empty() && queue.overflowed);
        assert_eq!(queue.close.as_ref().unwrap().0, close_code::TRY_AGAIN_LATER);
        drop(queue);
        assert!(matches!(
            outbox.push(msg(1), limits, None),
            Err(SendError::Closed)
        ));
    }

    /// A socket that takes at most `take` bytes a write (`None`: fails) and keeps them.
    #[derive(Default)]
    struct FakeSocket {
        written: Mutex<Vec<u8>>,
        take: Mutex<Option<usize>>,
        writes: AtomicUsize,
        /// Of `writes`, those of one buffer (`try_write`).
        plain_writes: AtomicUsize,
    }

    impl SharedSocket for FakeSocket {
        fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
            self.plain_writes.fetch_add(1, Ordering::Relaxed);
            self.try_write_vectored(&[IoSlice::new(buf)])
        }

        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            let Some(mut room) = *lock(&self.take) else {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            };
            if room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.writes.fetch_add(1, Ordering::Relaxed);
            let mut written = lock(&self.written);
            let mut n = 0;
            for buf in bufs {
                let part = &buf[..buf.len().min(room)];
                written.extend_from_slice(part);
                room -= part.len();
                n += part.len();
            }
            Ok(n)
        }
    }

    /// A queue limit no test here reaches.
    const BIG: QueueLimits = QueueLimits::new(1 << 20);

    fn shared(take: Option<usize>) -> (Outbox, Arc<FakeSocket>) {
        let outbox = Outbox::new(Transport::WebSocket);
        let socket = Arc::new(FakeSocket::default());
        *lock(&socket.take) = take;
        outbox.share_socket(socket.clone(), 0);
        (outbox, socket)
    }

    fn encoded(message: &Message) -> Vec<u8> {
        use crate::ws::frames::{Frames, BINARY, TEXT};
        let mut frames = Frames::default();
        let opcode = if message.is_text() { TEXT } else { BINARY };
        frames.encode(opcode, message.bytes());
        frames.take_for_test()
    }

    /// The data frames in `bytes`, unmasked and unfragmented: first byte and payload.
    fn frames_in(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let [first, second, rest @ ..] = bytes {
            let (len, rest) = match second {
                126 => (
                    usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                    &rest[2..],
                ),
                127 => unreachable!("no test frame is that long"),
                len => (usize::from(*len), rest),
            };
            frames.push((*first, rest[..len].to_vec()));
            bytes = &rest[len..];
        }
        frames
    }

    #[test]
    fn senders_compress_for_a_peer_without_context_takeover() {
        use crate::ws::deflate::{inflater, negotiate};
        let config = Deflate::shared();
        let mut offer = http::HeaderMap::new();
        offer.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            http::HeaderValue::from_static("permessage-deflate"),
        );
        let negotiated = negotiate(&config, &offer).unwrap();
        let long = Message::from_text("compress me, once ".repeat(64));
        let short = Message::from_text("short");
        let prepared = Arc::new(Prepared::new(long.clone()));
        let mut compressed_publishes = Vec::new();
        // Two peers with the extension and one without, each idle: the sender writes to all.
        for window in [15, 15, 0] {
            let (outbox, socket) = shared(Some(usize::MAX));
            outbox.share_socket(socket.clone(), window);
            outbox.release_socket();
            for item in [
                Outbound::Prepared(prepared.clone()),
                Outbound::Message(short.clone()),
                Outbound::Message(long.clone()),
            ] {
                outbox.push(item, BIG, Some(&config)).unwrap();
            }
            assert!(lock(&outbox.queue).items.is_empty(), "all written directly");
            let frames = frames_in(&lock(&socket.written));
            assert_eq!(frames.len(), 3);
            if window == 0 {
                let plain: Vec<u8> = [&long, &short, &long]
                    .into_iter()
                    .flat_map(encoded)
                    .collect();
                assert!(*lock(&socket.written) == plain);
                continue;
            }
            // The long texts compressed (RSV1), the short one, under the threshold, plain.
            let inflate = |payload: &[u8]| {
                inflater(&negotiated)
                    .decode(payload.to_vec(), 1 << 20)
                    .unwrap()
            };
            assert_eq!(frames[0].0, 0xC1);
            assert_eq!(inflate(&frames[0].1), long.bytes()[..]);
            assert!(frames[0].1.len() < long.len());
            assert_eq!(frames[1], (0x81, b"short".to_vec()));
            assert_eq!(frames[2].0, 0xC1);
            assert_eq!(inflate(&frames[2].1), long.bytes()[..]);
            compressed_publishes.push(frames[0].1.clone());
        }
        // Every recipient gets the publish's one compressed form.
        assert_eq!(compressed_publishes[0], compressed_publishes[1]);
        // Sent during a turn (from a hook), the same frames go out in one write at its end.
        let (outbox, socket) = shared(Some(usize::MAX));
        outbox.share_socket(socket.clone(), 15);
        outbox.release_socket();
        let cork = Cork::new();
        let publish = Outbound::Prepared(prepared.clone());
        assert_eq!(
            outbox.push(publish, BIG, Some(&config)).unwrap(),
            Pushed::Deferred
        );
        let send = Outbound::Message(short.clone());
        assert_eq!(outbox.push(send, BIG, Some(&config)).unwrap(), Pushed::Done);
        drop(cork);
        outbox.flush_deferred(&mut Vec::new(), Some(&config));
        assert_eq!(socket.writes.load(Ordering::Relaxed), 1);
        let frames = frames_in(&lock(&socket.written));
        assert_eq!(
            frames,
            [
                (0xC1, compressed_publishes[0].clone()),
                (0x81, b"short".to_vec())
            ]
        );
    }

    #[test]
    fn direct_write_only_while_the_task_is_idle() {
        let (outbox, socket) = shared(Some(usize::MAX));
        let text = Message::from_text("hello");
        // The task has the socket: the message is queued.
        outbox
            .push(Outbound::Message(text.clone()), BIG, None)
            .unwrap();
        assert!(lock(&socket.written).is_empty());
        assert_eq!(lock(&outbox.queue).items.len(), 1);
        // Idle, but something is queued: still queued behind it, in order.
        outbox.release_socket();
        outbox
            .push(Outbound::Message(text.clone()), BIG, None)
            .unwrap();
        assert!(lock(&socket.written).is_empty());
        lock(&outbox.queue).items.clear();
        outbox.buffered.store(0, Ordering::Relaxed);
        // Idle with nothing queued: written whole by the sender, nothing buffered.
        for len in [0, 125, 126, 65535, 65536] {
            lock(&socket.written).clear();
            let binary = Message::from_binary(vec![7; len]);
            outbox
                .push(Outbound::Message(binary.clone()), BIG, None)
                .unwrap();
            assert_eq!(*lock(&socket.written), encoded(&binary), "{len} bytes");
            assert!(lock(&outbox.queue).items.is_empty());
            assert_eq!(outbox.buffered.load(Ordering::Relaxed), 0);
            assert_eq!(outbox.direct.load(Ordering::Relaxed), direct::IDLE);
        }
        // Claimed back: queued again.
        outbox.claim_socket();
        lock(&socket.written).clear();
        outbox.push(Outbound::Message(text), BIG, None).unwrap();
        assert!(lock(&socket.written).is_empty());
        // Gone: never written directly again.
        outbox.unshare_socket();
        outbox.release_socket();
        lock(&outbox.queue).items.clear();
        outbox
            .push(Outbound::Message(Message::from_text("x")), BIG, None)
            .unwrap();
        assert!(lock(&socket.written).is_empty());
    }

    #[test]
    fn a_small_frame_goes_out_in_one_plain_write() {
        for (size, plain) in [(0, 1), (300, 1), (COPIED_FRAME - 4, 1), (COPIED_FRAME, 0)] {
            let message = Message::from_binary(vec![7; size]);
            let (outbox, socket) = shared(Some(usize::MAX));
            outbox.release_socket();
            outbox
                .push(Outbound::Message(message.clone()), BIG, None)
                .unwrap();
            assert_eq!(socket.writes.load(Ordering::Relaxed), 1, "{size} B");
            assert_eq!(
                socket.plain_writes.load(Ordering::Relaxed),
                plain,
                "{size} B"
            );
            assert_eq!(*lock(&socket.written), encoded(&message), "{size} B");
        }
    }

    #[test]
    fn direct_write_leaves_the_rest_of_a_frame_to_the_task() {
        // Copied into one write, and written as header and payload.
        for message in [
            Message::from_binary(vec![1; 300]),
            Message::from_binary(vec![2; 2 * COPIED_FRAME]),
        ] {
            direct_write_cut(message);
        }
    }

    fn direct_write_cut(message: Message) {
        let whole = encoded(&message);
        // Cut inside the header and inside the payload.
        for take in [1, 3, 100] {
            let (outbox, socket) = shared(Some(take));
            outbox.release_socket();
            outbox
                .push(Outbound::Message(message.clone()), BIG, None)
                .unwrap();
            assert_eq!(outbox.direct.load(Ordering::Relaxed), direct::TASK);
            let queue = lock(&outbox.queue);
            let [Outbound::Rest(rest)] = queue.items.iter().collect::<Vec<_>>()[..] else {
                panic!("{take}: {} items", queue.items.len());
            };
            let mut stream = lock(&socket.written).clone();
            assert_eq!(stream.len(), take);
            stream.extend_from_slice(rest);
            assert_eq!(stream, whole, "cut after {take} bytes");
            assert_eq!(outbox.buffered.load(Ordering::Relaxed), rest.len());
        }
    }

    #[test]
    fn direct_write_that_takes_nothing_queues_the_message() {
        for take in [Some(0), None] {
            let (outbox, socket) = shared(take);
            outbox.release_socket();
            let message = Message::from_text("queued");
            outbox
                .push(Outbound::Message(message.clone()), BIG, None)
                .unwrap();
            assert!(lock(&socket.written).is_empty());
            assert_eq!(outbox.direct.load(Ordering::Relaxed), direct::TASK);
            let queue = lock(&outbox.queue);
            assert!(matches!(&queue.items.front(), Some(Outbound::Message(m)) if *m == message));
            assert_eq!(outbox.buffered.load(Ordering::Relaxed), 6);
        }
    }

    #[test]
    fn a_turn_writes_what_it_sent_to_an_idle_peer_once_at_its_end() {
        let (outbox, socket) = shared(Some(usize::MAX));
        outbox.release_socket();
        let messages: Vec<Message> = (0..40)
            .map(|i| Message::from_binary(vec![i; usize::from(i) * 10]))
            .collect();
        let cork = Cork::new();
        assert!(Cork::corked());
        let pushed: Vec<Pushed> = messages
            .iter()
            .map(|m| {
                outbox
                    .push(Outbound::Message(m.clone()), BIG, None)
                    .unwrap()
            })
            .collect();
        // Only the first asks to be written at the end; nothing is written yet.
        assert_eq!(pushed[0], Pushed::Deferred);
        assert!(pushed[1..].iter().all(|p| *p == Pushed::Done));
        assert_eq!(socket.writes.load(Ordering::Relaxed), 0);
        assert_eq!(lock(&outbox.queue).items.len(), 40);
        drop(cork);
        assert!(!Cork::corked());
        outbox.flush_deferred(&mut Vec::new(), None);
        // 40 frames in one write, whole and in order.
        assert_eq!(socket.writes.load(Ordering::Relaxed), 1);
        let expected: Vec<u8> = messages.iter().flat_map(encoded).collect();
        assert!(*lock(&socket.written) == expected);
        assert!(lock(&outbox.queue).items.is_empty());
        assert_eq!(outbox.buffered.load(Ordering::Relaxed), 0);
        assert_eq!(outbox.direct.load(Ordering::Relaxed), direct::IDLE);
    }

    #[test]
    fn a_deferred_write_leaves_what_the_socket_did_not_take_to_the_task() {
        let messages = [
            Message::from_binary(vec![1; 200]),
            Message::from_text("second"),
            Message::from_text("third"),
        ];
        let whole: Vec<u8> = messages.iter().flat_map(encoded).collect();
        for take in [1, 100, 204, 205, 210] {
            let (outbox, socket) = shared(Some(take));
            outbox.release_socket();
            let cork = Cork::new();
            for message in &messages {
                outbox
                    .push(Outbound::Message(message.clone()), BIG, None)
                    .unwrap();
            }
            drop(cork);
            outbox.flush_deferred(&mut Vec::new(), None);
            assert_eq!(outbox.direct.load(Ordering::Relaxed), direct::TASK);
            let queue = lock(&outbox.queue);
            let mut stream = lock(&socket.written).clone();
            let mut buffered = 0;
            for item in &queue.items {
                let bytes = match item {
                    Outbound::Rest(rest) => rest.to_vec(),
                    Outbound::Message(m) => encoded(m),
                    _ => unreachable!(),
                };
                buffered += item.payload_len();
                stream.extend_from_slice(&bytes);
            }
            assert!(stream == whole, "cut after {take} bytes");
            assert_eq!(outbox.buffered.load(Ordering::Relaxed), buffered);
        }
        // A ping waits for the task, and so does what follows it.
        let (outbox, socket) = shared(Some(usize::MAX));
        outbox.release_socket();
        let cork = Cork::new();
        outbox
            .push(Outbound::Message(messages[1].clone()), BIG, None)
            .unwrap();
        outbox
            .push(Outbound::Ping(Bytes::new()), BIG, None)
            .unwrap();
        outbox
            .push(Outbound::Message(messages[2].clone()), BIG, None)
            .unwrap();
        drop(cork);
        outbox.flush_deferred(&mut Vec::new(), None);
        assert_eq!(*lock(&socket.written), encoded(&messages[1]));
        assert_eq!(lock(&outbox.queue).items.len(), 2);
        assert_eq!(outbox.direct.load(Ordering::Relaxed), direct::TASK);
    }

    #[test]
    fn overflow_keeps_the_rest_of_a_frame() {
        let outbox = Outbox::new(Transport::WebSocket);
        let limits = QueueLimits::new(100);
        let socket = Arc::new(FakeSocket::default());
        *lock(&socket.take) = Some(10);
        outbox.share_socket(socket, 0);
        outbox.release_socket();
        outbox
            .push(
                Outbound::Message(Message::from_binary(vec![0; 60])),
                limits,
                None,
            )
            .unwrap();
        let rest = outbox.buffered.load(Ordering::Relaxed);
        assert_eq!(rest, 52);
        assert!(matches!(
            outbox.push(
                Outbound::Message(Message::from_binary(vec![0; 60])),
                limits,
                None
            ),
            Err(SendError::QueueFull)
        ));
        let queue = lock(&outbox.queue);
        assert!(
            matches!(&queue.items.iter().collect::<Vec<_>>()[..], [Outbound::Rest(r)] if r.len() == rest)
        );
        assert!(queue.overflowed);
        assert_eq!(outbox.buffered.load(Ordering::Relaxed), rest);
    }
}
