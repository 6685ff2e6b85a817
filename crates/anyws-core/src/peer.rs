//! Peers: one connected client, as a cheap handle.

use bytes::Bytes;
use event_listener::Event;
use futures_util::task::AtomicWaker;
use serde::Serialize;
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::connection::ReadWaker;
use crate::server::Shared;
use crate::upgrade::Context;
use crate::ws::deflate::Prepared;
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
    protocol: Option<Box<str>>,
    /// The `Sec-WebSocket-Extensions` value of the `101`, when an extension was negotiated;
    /// shared by the peers that got the same answer (see `deflate::answer`).
    extensions: Option<Arc<str>>,
    transport: Transport,
    pub(crate) topics: Mutex<Vec<Arc<str>>>,
    pub(crate) outbox: Outbox,
    /// Notes that the connection's read side woke its task.
    pub(crate) read_waker: ReadWaker,
    pub(crate) shared: Arc<Shared>,
    /// When the handshake was accepted.
    pub(crate) opened_at: std::time::Instant,
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
        let limit = shared.limits.max_buffered_bytes;
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
                protocol: protocol.map(String::into_boxed_str),
                extensions,
                transport,
                topics: Mutex::new(Vec::new()),
                outbox: Outbox::new(limit),
                read_waker: ReadWaker::default(),
                opened_at: shared.runtime.now(),
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
        self.inner.transport
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
        if self.inner.shared.client {
            return self.inner.protocol.as_deref();
        }
        self.inner.protocol.as_deref().or_else(|| {
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
        if self.inner.shared.client {
            return self.inner.extensions.as_deref();
        }
        self.inner.extensions.as_deref().or_else(|| {
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
        self.inner.outbox.push(Outbound::Message(message))?;
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
        self.inner.outbox.close(code, reason);
    }

    /// Sends a ping frame with `payload`, cut to the 125 bytes a control frame can carry, after
    /// what is already queued; the client's pong reaches [`Hooks::pong`](crate::Hooks::pong).
    ///
    /// Over SSE, which has no ping frames, this does nothing and returns `Ok`. Fails when the
    /// peer is closing.
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        if self.inner.transport == Transport::Sse {
            return Ok(());
        }
        let mut payload = payload.into();
        payload.truncate(125);
        self.inner.outbox.push(Outbound::Ping(payload))
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
    limit: usize,
    /// While this many bytes wait, the connection reads nothing more from the peer.
    pub(crate) read_pause: usize,
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
}

impl Outbound {
    /// The data message, if this is one.
    pub(crate) fn message(&self) -> Option<&Message> {
        match self {
            Self::Message(message) => Some(message),
            Self::Prepared(prepared) => Some(&prepared.message),
            Self::Ping(_) => None,
        }
    }

    /// The payload bytes this counts towards [`Peer::buffered_amount`]: a data message's.
    pub(crate) fn payload_len(&self) -> usize {
        self.message().map_or(0, Message::len)
    }
}

impl Outbox {
    fn new(limit: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            buffered: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
            drained: Event::new(),
            closing: Event::new(),
            state: AtomicU8::new(ReadyState::Connecting as u8),
            limit,
            read_pause: READ_PAUSE_BYTES.min(limit / 2),
        }
    }

    pub(crate) fn push(&self, message: Outbound) -> Result<(), SendError> {
        let len = message.payload_len();
        let mut queue = lock(&self.queue);
        if queue.closing || queue.terminate {
            return Err(SendError::Closed);
        }
        let buffered = self.buffered.load(Ordering::Relaxed);
        // Below the read-pause mark a message is always taken, so a peer that reads its replies,
        // however slowly, is never cut off by its own traffic: its connection stops reading from
        // it at that mark instead. Above it, the limit holds.
        if buffered != 0 && buffered >= self.read_pause && buffered.saturating_add(len) > self.limit
        {
            let dropped: usize = queue.items.drain(..).map(|m| m.payload_len()).sum();
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
        queue.items.push_back(message);
        self.buffered.fetch_add(len, Ordering::AcqRel);
        drop(queue);
        if was_empty {
            self.waker.wake();
        }
        Ok(())
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
    fn reason_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.chars().count(), 61);
    }

    #[test]
    fn outbox_overflow_policy() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.read_pause, 5);
        let msg = |n: usize| Outbound::Message(Message::from_binary(vec![0; n]));
        // Below the read-pause mark anything is accepted, even past the limit.
        outbox.push(msg(4)).unwrap();
        outbox.push(msg(46)).unwrap();
        assert_eq!(outbox.buffered.load(Ordering::Relaxed), 50);
        // The next one overflows: the queue is dropped and a 1013 close is scheduled.
        assert!(matches!(outbox.push(msg(1)), Err(SendError::QueueFull)));
        assert_eq!(outbox.buffered.load(Ordering::Relaxed), 0);
        let queue = lock(&outbox.queue);
        assert!(queue.items.is_empty() && queue.overflowed);
        assert_eq!(queue.close.as_ref().unwrap().0, close_code::TRY_AGAIN_LATER);
        drop(queue);
        assert!(matches!(outbox.push(msg(1)), Err(SendError::Closed)));
    }
}
