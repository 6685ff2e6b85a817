//! The SSE transport: the same hooks for clients that cannot open a WebSocket, wire-compatible
//! with CrossWS's bidirectional SSE protocol and its `WebSocketSSE` client.
//!
//! - `GET` with `Accept: text/event-stream` opens a peer; that request is its upgrade request.
//!   The answer is an event stream: first `event: crossws-id` with the peer id, then one
//!   `event: message` per message (binary as `data:application/octet-stream;base64,…`).
//! - `POST` with `x-crossws-id: <id>` carries messages to the peer: each chunk of a chunked
//!   (streaming) body is one message, and a body with a length is one message.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use event_listener::Event as Notify;
use futures_core::Stream;
use futures_util::task::AtomicWaker;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{Method, Response, StatusCode};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::admission::Admission;
use crate::limits::RateLimiter;
use crate::peer::{lock, Outbound};
use crate::server::Entry;
use crate::upgrade::check_request;
use crate::{Hooks, Message, Peer, PeerId, ReadyState, Request};

/// The header that names the peer a `POST` is for.
pub const PEER_ID_HEADER: HeaderName = HeaderName::from_static("x-crossws-id");

/// Bytes of client messages that may wait for one SSE peer's `message` hook before the
/// transport stops reading that peer's `POST` bodies. Each message counts its payload plus
/// [`INBOX_OVERHEAD`], so that many tiny (or empty) messages cannot queue without bound.
const INBOX_BYTES: usize = 64 * 1024;

/// What one queued message costs in [`INBOX_BYTES`] on top of its payload: its share of the
/// queue and of the shared buffer that holds it.
pub(super) const INBOX_OVERHEAD: usize = 64;

/// What kind of SSE transport request this is, judged by method and headers alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseRequestKind {
    /// `GET` with `Accept: text/event-stream`: opens a peer.
    Open,
    /// `POST`: messages for an open peer, named by its `x-crossws-id` header.
    Post,
}

/// Tells whether a request may belong to the SSE transport, and which kind it is: a `GET` that
/// accepts an event stream, or any `POST`.
///
/// Adapters call this for requests that are not WebSocket upgrades, when the server has the
/// SSE transport turned on ([`ServerBuilder::sse`](crate::ServerBuilder::sse)), and hand the
/// matching ones to [`Server::sse`](crate::Server::sse). The server's resolver then decides:
/// a request it does not resolve goes back to the application as an ordinary HTTP request.
pub fn sse_request_kind(method: &Method, headers: &http::HeaderMap) -> Option<SseRequestKind> {
    if method == Method::GET && super::accepts_event_stream(headers) {
        Some(SseRequestKind::Open)
    } else if method == Method::POST {
        Some(SseRequestKind::Post)
    } else {
        None
    }
}

/// The outcome of [`Server::sse`](crate::Server::sse).
#[derive(Debug)]
#[non_exhaustive]
pub enum SseOutcome {
    /// No hooks handle this request (the resolver said `None`): hand it to the fallback, as an
    /// ordinary HTTP request, so that an application's own event streams keep working.
    Unresolved(Request),
    /// Send this response and nothing else: a rejection from the `upgrade` hook, or an error
    /// such as `400` for an unknown peer id, `413` for a body over the size limit, or `503`.
    Respond(Response<Bytes>),
    /// A new peer: send this event stream as the response.
    Open(Response<PeerEvents>),
    /// Messages for an open peer: feed the request body to [`PeerPost::receive`] and send the
    /// response it returns.
    Post(PeerPost),
}

/// What the connection side of an SSE peer shares with its hook runner and its `POST`s.
pub(crate) struct SseLink {
    pub(super) state: Mutex<LinkState>,
    /// Wakes the peer's hook runner.
    pub(super) runner: AtomicWaker,
    /// Tells waiting `POST`s that the inbox has room, or that the peer is gone.
    pub(super) space: Notify,
}

#[derive(Default)]
pub(super) struct LinkState {
    pub(super) inbox: VecDeque<Message>,
    pub(super) inbox_bytes: usize,
    /// The event stream was dropped: the client went away or the stream ended.
    pub(super) stream_gone: bool,
    /// The peer's hooks are done; `POST`s find nobody.
    pub(super) finished: bool,
    /// The peer ended while its event stream was still open: the client stopped reading it.
    pub(super) abandoned: bool,
    /// The stream ended because the server closed the peer with this code and reason.
    pub(super) sent_close: Option<(u16, String)>,
    /// Output had to wait for the client since the outbox was last empty.
    pub(super) backpressure: bool,
    pub(super) drain_pending: bool,
    /// The peer's token bucket, with [`Limits::message_rate`](crate::Limits::message_rate).
    pub(super) rate: Option<RateLimiter>,
    /// A message found the bucket empty: the peer is to be closed with 1008 once the messages
    /// that came before it were handled, and nothing more is taken.
    pub(super) over_rate: bool,
}

/// What became of a client message handed to [`SseLink::deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Queued for the `message` hook.
    Queued,
    /// The peer is gone, or closing.
    Gone,
    /// Over the peer's message rate: dropped, and the peer is being closed with 1008.
    OverRate,
}

impl SseLink {
    fn new(rate: Option<crate::MessageRate>) -> Self {
        Self {
            state: Mutex::new(LinkState {
                rate: rate.map(RateLimiter::new),
                ..LinkState::default()
            }),
            runner: AtomicWaker::new(),
            space: Notify::new(),
        }
    }

    /// Queues a client message for the hooks, waiting while the inbox is full. Each message
    /// takes a token of the message rate as it arrives (`now`), before it waits for room.
    async fn deliver(&self, message: Message, now: std::time::Instant) -> Delivery {
        let len = message.len() + INBOX_OVERHEAD;
        {
            let mut state = lock(&self.state);
            if state.finished || state.stream_gone {
                return Delivery::Gone;
            }
            if state.over_rate {
                return Delivery::OverRate;
            }
            if state.rate.as_mut().is_some_and(|rate| !rate.take(now)) {
                state.over_rate = true;
                drop(state);
                self.runner.wake();
                return Delivery::OverRate;
            }
        }
        loop {
            let listener = {
                let mut state = lock(&self.state);
                if state.finished || state.stream_gone {
                    return Delivery::Gone;
                }
                if state.over_rate {
                    // Another message went over the rate while this one waited for room.
                    return Delivery::OverRate;
                }
                if state.inbox_bytes == 0 || state.inbox_bytes + len <= INBOX_BYTES {
                    state.inbox_bytes += len;
                    state.inbox.push_back(message);
                    drop(state);
                    self.runner.wake();
                    return Delivery::Queued;
                }
                self.space.listen()
            };
            listener.await;
        }
    }
}

/// The event stream of one SSE peer: the body of the response that opened it.
///
/// It yields everything queued for the peer as `text/event-stream` bytes, one chunk per turn,
/// with a keep-alive comment when nothing was sent for half of
/// [`Limits::idle_timeout`](crate::Limits::idle_timeout) (15 s when that is off). It ends when
/// the peer is closed; dropping it (the client went away) ends the peer.
pub struct PeerEvents {
    peer: Peer,
    link: Arc<SseLink>,
    hello: Option<Bytes>,
    keep_alive: Duration,
    timer: Option<Pin<Box<dyn crate::AsyncTimer>>>,
    done: bool,
    /// The peer's place in the connection limits, held as long as the stream lives.
    _admission: Option<Admission>,
}

impl fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerEvents")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Writes one message as an `event: message`.
fn encode_message(buf: &mut BytesMut, message: &Outbound) {
    match message.message() {
        Some(text) if text.is_text() => {
            buf.put_slice(b"event: message\n");
            super::encode_data(buf, text.bytes());
            buf.put_u8(b'\n');
        }
        Some(binary) => {
            let bytes = binary.bytes();
            let engine = &base64::engine::general_purpose::STANDARD;
            buf.put_slice(b"event: message\ndata: data:application/octet-stream;base64,");
            let start = buf.len();
            buf.resize(
                start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
                0,
            );
            let written = engine
                .encode_slice(bytes, &mut buf[start..])
                .unwrap_or_default();
            buf.truncate(start + written);
            buf.put_slice(b"\n\n");
        }
        None => {}
    }
}

impl Stream for PeerEvents {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let outbox = &this.peer.inner.outbox;
        outbox.waker.register(cx.waker());
        let mut buf = BytesMut::new();
        if let Some(hello) = this.hello.take() {
            buf.put_slice(&hello);
        }
        let mut freed = 0;
        let mut queue = lock(&outbox.queue);
        if queue.terminate || this.peer.ready_state() == ReadyState::Closed {
            this.done = true;
            return Poll::Ready(None);
        }
        let had_items = !queue.items.is_empty();
        for message in queue.items.drain(..) {
            freed += message.payload_len();
            encode_message(&mut buf, &message);
        }
        let close = if queue.items.is_empty() {
            queue.close.take()
        } else {
            None
        };
        drop(queue);
        if freed > 0 || had_items {
            let before = outbox.buffered.fetch_sub(freed, Ordering::AcqRel);
            outbox.notify_drained();
            let mut state = lock(&this.link.state);
            if before >= this.peer.inner.shared.queue_limits.read_pause {
                state.backpressure = true;
            } else if before == freed && std::mem::take(&mut state.backpressure) {
                state.drain_pending = true;
            }
            drop(state);
            this.link.runner.wake();
        }
        if let Some(close) = close {
            lock(&this.link.state).sent_close = Some(*close);
            this.done = true;
        }
        if !buf.is_empty() {
            this.reset_timer();
            return Poll::Ready(Some(buf.freeze()));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let timer = this.timer.get_or_insert_with(|| {
            let runtime = &this.peer.inner.shared.runtime;
            runtime.new_timer(runtime.now() + this.keep_alive)
        });
        if timer.as_mut().poll(cx).is_ready() {
            this.reset_timer();
            return Poll::Ready(Some(Bytes::from_static(b": keep-alive\n\n")));
        }
        Poll::Pending
    }
}

impl PeerEvents {
    /// Resolves once the peer has ended: `true` when its stream was still open then, because
    /// the client stopped reading it, so that the response can never finish and the connection
    /// carrying it is best dropped; `false` when the stream ended as it should. An adapter that
    /// owns the connection awaits it (`anyws-hyper`'s `serve` does), so that a client that
    /// stops reading loses its connection too, not only its peer.
    pub fn abandoned(&self) -> impl Future<Output = bool> + Send + 'static {
        let link = self.link.clone();
        async move {
            loop {
                let listener = link.space.listen();
                {
                    let state = lock(&link.state);
                    if state.finished {
                        return state.abandoned;
                    }
                }
                listener.await;
            }
        }
    }

    fn reset_timer(&mut self) {
        if let Some(timer) = self.timer.as_mut() {
            let runtime = &self.peer.inner.shared.runtime;
            timer.as_mut().reset(runtime.now() + self.keep_alive);
        }
    }
}

impl Drop for PeerEvents {
    fn drop(&mut self) {
        lock(&self.link.state).stream_gone = true;
        self.link.runner.wake();
        self.link.space.notify(usize::MAX);
    }
}

/// A `POST` of messages for an open SSE peer, ready to read its body.
pub struct PeerPost {
    peer: Peer,
    link: Arc<SseLink>,
    /// The body is chunked: every chunk is one message.
    streaming: bool,
}

impl fmt::Debug for PeerPost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerPost")
            .field("peer", &self.peer)
            .field("streaming", &self.streaming)
            .finish_non_exhaustive()
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl PeerPost {
    /// The peer the messages are for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Reads `body` and hands its messages to the peer's `message` hook, in order, then returns
    /// the response to send: `200` when every message was taken, `413` for a message over
    /// [`Limits::max_message_size`](crate::Limits::max_message_size), `400` for text that is not
    /// UTF-8, `410` when the peer went away meanwhile (at once, even while the body is still
    /// open), `429` for a message over the peer's
    /// [`Limits::message_rate`](crate::Limits::message_rate) (the peer itself is then closed
    /// with 1008: its stream ends, and its `close` hook gets 1008). None of the others affect
    /// the peer itself or any other.
    ///
    /// Reading waits while the peer's earlier messages have not been handled or its output
    /// has not been taken by the client, so a fast sender is slowed down rather than buffered.
    pub async fn receive<B, E>(self, body: B) -> Response<Bytes>
    where
        B: Stream<Item = Result<Bytes, E>>,
    {
        let limit = self.peer.inner.shared.limits.max_message_size;
        futures_util::pin_mut!(body);
        let mut pending = BytesMut::new();
        while let Some(chunk) = self.next_chunk(body.as_mut()).await {
            let Some(chunk) = chunk else {
                // A streaming POST outlives its peer (crossws's client leaves it open when it
                // closes): answer it, so that the request and the peer do not linger.
                return plain(StatusCode::GONE, "peer is gone");
            };
            let Ok(chunk) = chunk else {
                // The client aborted the body: what arrived before was delivered.
                return plain(StatusCode::BAD_REQUEST, "request body aborted");
            };
            if pending.len() + chunk.len() > limit {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
            }
            pending.extend_from_slice(&chunk);
            if !self.streaming {
                continue;
            }
            // A chunk the network split may end inside a character: keep that tail for the
            // next piece.
            let complete = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => return plain(StatusCode::BAD_REQUEST, "message is not valid UTF-8"),
            };
            if complete == 0 && !pending.is_empty() {
                continue;
            }
            let text = pending.split_to(complete).freeze();
            if let Some(refused) = self.deliver(text).await {
                return refused;
            }
        }
        if self.streaming {
            if !pending.is_empty() {
                return plain(StatusCode::BAD_REQUEST, "message is not valid UTF-8");
            }
        } else {
            if std::str::from_utf8(&pending).is_err() {
                return plain(StatusCode::BAD_REQUEST, "message is not valid UTF-8");
            }
            if let Some(refused) = self.deliver(pending.freeze()).await {
                return refused;
            }
        }
        Response::new(Bytes::new())
    }

    /// The next item of `body`; `Some(None)` once the peer is gone.
    async fn next_chunk<B: Stream>(&self, mut body: Pin<&mut B>) -> Option<Option<B::Item>> {
        loop {
            let gone = self.link.space.listen();
            {
                let state = lock(&self.link.state);
                if state.finished || state.stream_gone {
                    return Some(None);
                }
            }
            let next = body.next();
            futures_util::pin_mut!(next);
            if let futures_util::future::Either::Left((item, _)) =
                futures_util::future::select(next, gone).await
            {
                return item.map(Some);
            }
        }
    }

    /// Hands `text` to the peer; the response to end the `POST` with when it was not taken.
    async fn deliver(&self, text: Bytes) -> Option<Response<Bytes>> {
        let message = Message::from_utf8(text).ok();
        let delivery = match message {
            Some(message) => {
                let now = self.peer.inner.shared.runtime.now();
                self.link.deliver(message, now).await
            }
            None => Delivery::Gone,
        };
        match delivery {
            Delivery::Queued => None,
            Delivery::Gone => Some(plain(StatusCode::GONE, "peer is gone")),
            Delivery::OverRate => Some(plain(
                StatusCode::TOO_MANY_REQUESTS,
                "message rate exceeded",
            )),
        }
    }
}

impl crate::Server {
    /// Handles a request of the SSE transport (see [`sse_request_kind`]): opens a peer for a
    /// `GET`, or prepares a `POST` of messages for one.
    ///
    /// Both run the resolver and the `upgrade` hook, so the application checks a `POST` as it
    /// checked the request that opened the peer; a `POST` must resolve to the peer's namespace.
    /// The peer id acts as a capability: only the client that opened the peer learns it from
    /// its stream, unless the application shares it. Before any of that, a head larger than
    /// [`Limits::max_request_head_bytes`](crate::Limits::max_request_head_bytes) gets `431`, and
    /// an HTTP/1.1 request without a valid `Host` header `400`.
    pub async fn sse(&self, request: Request) -> SseOutcome {
        let open =
            sse_request_kind(request.method(), request.headers()) == Some(SseRequestKind::Open);
        let (started, remote_addr) = (self.shared.runtime.now(), request.remote_addr());
        let outcome = self.sse_unobserved(request).await;
        let status = match &outcome {
            SseOutcome::Respond(response) => response.status(),
            _ => StatusCode::OK,
        };
        if open && self.sse_enabled() {
            let now = self.shared.runtime.now();
            crate::observe::answered(&self.shared.counters, remote_addr, status, started, now);
        }
        outcome
    }

    async fn sse_unobserved(&self, request: Request) -> SseOutcome {
        let Some(kind) = sse_request_kind(request.method(), request.headers()) else {
            return SseOutcome::Respond(plain(StatusCode::BAD_REQUEST, "not an SSE request"));
        };
        if !self.sse_enabled() {
            return SseOutcome::Unresolved(request);
        }
        if let Err(response) = check_request(&request, self.limits().max_request_head_bytes) {
            return SseOutcome::Respond(*response);
        }
        let open = kind == SseRequestKind::Open;
        let (request, hooks, accept, admission) = match self.enter(request, open).await {
            Entry::Unresolved(request) => return SseOutcome::Unresolved(request),
            Entry::Refused(response) => return SseOutcome::Respond(response),
            Entry::Accepted {
                request,
                hooks,
                accept,
                admission,
            } => (request, hooks, accept, admission),
        };
        if kind == SseRequestKind::Post {
            if let Some(length) = request
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            {
                if length > self.limits().max_message_size as u64 {
                    return SseOutcome::Respond(plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "message too large",
                    ));
                }
            }
        }
        match kind {
            SseRequestKind::Post => self.sse_post(request, accept),
            SseRequestKind::Open => self.sse_open(request, hooks, accept, admission),
        }
    }

    fn sse_post(&self, request: Request, accept: crate::Accept) -> SseOutcome {
        let shared = &self.shared;
        let entry = request
            .headers()
            .get(PEER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(PeerId::parse)
            .and_then(|id| lock(&shared.sse_peers).get(&id).cloned());
        let Some((peer, link)) = entry else {
            return SseOutcome::Respond(plain(StatusCode::BAD_REQUEST, "invalid peer id"));
        };
        let namespace = accept.namespace.as_deref().unwrap_or(request.path());
        if namespace != peer.namespace() {
            return SseOutcome::Respond(plain(StatusCode::BAD_REQUEST, "invalid peer id"));
        }
        let streaming = request
            .headers()
            .get_all(TRANSFER_ENCODING)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
            });
        SseOutcome::Post(PeerPost {
            peer,
            link,
            streaming,
        })
    }

    fn sse_open(
        &self,
        request: Request,
        hooks: Arc<dyn Hooks>,
        accept: crate::Accept,
        admission: Option<Admission>,
    ) -> SseOutcome {
        let mut response = Response::new(());
        *response.headers_mut() = super::response_headers();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("keep-alive"),
        );
        for (name, value) in &accept.headers {
            headers.append(name, value.clone());
        }
        let peer = self.new_peer(request, accept, None, crate::Transport::Sse);
        let id = peer.id().to_string();
        if let Ok(value) = HeaderValue::try_from(id.as_str()) {
            response.headers_mut().insert(PEER_ID_HEADER, value);
        }
        // Listed before the client can see the stream's headers, as a WebSocket peer is before
        // its `101`.
        if !self.shared.join(&peer) {
            return SseOutcome::Respond(crate::server::shutting_down());
        }
        let link = Arc::new(SseLink::new(self.limits().message_rate));
        lock(&self.shared.sse_peers).insert(peer.id(), (peer.clone(), link.clone()));
        let mut hello = BytesMut::new();
        super::Event::data(id)
            .event("crossws-id")
            .encode(&mut hello);
        let keep_alive = self
            .limits()
            .idle_timeout
            .map_or(Duration::from_secs(15), |idle| idle / 2);
        let events = PeerEvents {
            peer: peer.clone(),
            link: link.clone(),
            hello: Some(hello.freeze()),
            keep_alive,
            timer: None,
            done: false,
            _admission: admission,
        };
        let span = crate::observe::peer_span(&peer);
        self.runtime().spawn(Box::pin(crate::observe::Traced::new(
            super::runner::run_hooks(peer, hooks, link),
            span,
        )));
        SseOutcome::Open(response.map(|()| events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CloseInfo, Error};

    fn encoded(message: Outbound) -> String {
        let mut buf = BytesMut::new();
        encode_message(&mut buf, &message);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn text_becomes_one_data_line_per_line() {
        assert_eq!(
            encoded(Outbound::Message(Message::from_text("a\nb"))),
            "event: message\ndata: a\ndata: b\n\n"
        );
        assert_eq!(
            encoded(Outbound::Message(Message::from_text(""))),
            "event: message\ndata: \n\n"
        );
    }

    #[test]
    fn binary_becomes_a_base64_data_url() {
        assert_eq!(
            encoded(Outbound::Message(Message::from_binary(Bytes::from_static(
                b"binary message works!"
            )))),
            "event: message\ndata: data:application/octet-stream;base64,YmluYXJ5IG1lc3NhZ2Ugd29ya3Mh\n\n"
        );
        assert_eq!(encoded(Outbound::Ping(Bytes::new())), "");
    }

    #[test]
    fn request_kinds() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(sse_request_kind(&Method::GET, &headers), None);
        assert_eq!(
            sse_request_kind(&Method::POST, &headers),
            Some(SseRequestKind::Post)
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert_eq!(
            sse_request_kind(&Method::GET, &headers),
            Some(SseRequestKind::Open)
        );
        assert_eq!(sse_request_kind(&Method::HEAD, &headers), None);
    }

    /// Keeps what is spawned, for the test to poll by hand; timers are ready once due.
    #[derive(Default)]
    struct Tasks(Mutex<Vec<crate::BoxFuture>>);

    impl fmt::Debug for Tasks {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Tasks")
        }
    }

    #[derive(Debug)]
    struct Deadline(std::time::Instant);

    impl crate::AsyncTimer for Deadline {
        fn reset(mut self: Pin<&mut Self>, deadline: std::time::Instant) {
            self.0 = deadline;
        }

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            if std::time::Instant::now() >= self.0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl crate::Runtime for Tasks {
        fn spawn(&self, future: crate::BoxFuture) {
            self.0.lock().unwrap().push(future);
        }

        fn new_timer(&self, deadline: std::time::Instant) -> Pin<Box<dyn crate::AsyncTimer>> {
            Box::pin(Deadline(deadline))
        }
    }

    impl Tasks {
        /// Polls every task once; how many are still running.
        fn run(&self) -> usize {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut tasks = self.0.lock().unwrap();
            tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
            tasks.len()
        }
    }

    /// Records the hooks it sees, and echoes.
    #[derive(Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    #[async_trait::async_trait]
    impl Hooks for Recorder {
        async fn message(&self, peer: &Peer, message: Message) {
            let text = message.text().unwrap().to_owned();
            self.0.lock().unwrap().push(format!("message {text}"));
            let _ = peer.send(text);
        }

        async fn error(&self, _peer: &Peer, error: Error) {
            self.0.lock().unwrap().push(format!("error {error:?}"));
        }

        async fn close(&self, _peer: &Peer, info: CloseInfo) {
            self.0.lock().unwrap().push(format!("close {}", info.code));
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut request = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "example.com");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Request::new(request.body(()).unwrap().into_parts().0, None)
    }

    #[test]
    fn empty_messages_fill_the_inbox_too() {
        let link = SseLink::new(None);
        let now = std::time::Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut queued = 0;
        loop {
            let message = Message::from_text("");
            let deliver = link.deliver(message, now);
            futures_util::pin_mut!(deliver);
            match deliver.poll(&mut cx) {
                Poll::Ready(delivery) => assert_eq!(delivery, Delivery::Queued),
                Poll::Pending => break,
            }
            queued += 1;
            assert!(
                queued <= INBOX_BYTES,
                "the inbox took {queued} empty messages"
            );
        }
        assert_eq!(queued, INBOX_BYTES / INBOX_OVERHEAD);
    }

    #[test]
    fn over_the_message_rate_closes_with_1008() {
        let tasks = Arc::new(Tasks::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = crate::ServerBuilder::new(Recorder(seen.clone()))
            .sse(true)
            .message_rate(Some(crate::MessageRate::new(1, 2)))
            .build(tasks.clone());
        let open = request(Method::GET, &[("accept", "text/event-stream")]);
        let SseOutcome::Open(response) = futures_executor::block_on(server.sse(open)) else {
            panic!("not opened");
        };
        let id = response.headers()[PEER_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        let mut events = response.into_body();
        tasks.run();

        // One streaming POST of four messages: the burst of two is taken, the third is refused.
        let post = request(
            Method::POST,
            &[("x-crossws-id", &id), ("transfer-encoding", "chunked")],
        );
        let SseOutcome::Post(post) = futures_executor::block_on(server.sse(post)) else {
            panic!("no POST");
        };
        let chunks = ["one", "two", "three", "four"]
            .map(|text| Ok::<_, std::convert::Infallible>(Bytes::from_static(text.as_bytes())));
        let response = futures_executor::block_on(post.receive(futures_util::stream::iter(chunks)));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

        // The messages before it are handled, then the peer is closed and its stream ends.
        let mut output = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let ended = (0..100).any(|_| {
            tasks.run();
            match Pin::new(&mut events).poll_next(&mut cx) {
                Poll::Ready(Some(bytes)) => {
                    output.extend_from_slice(&bytes);
                    false
                }
                Poll::Ready(None) => true,
                Poll::Pending => false,
            }
        });
        assert!(ended, "the stream did not end");
        let output = String::from_utf8(output).unwrap();
        assert!(
            output.ends_with("data: one\n\nevent: message\ndata: two\n\n"),
            "{output:?}"
        );
        drop(events);
        while tasks.run() > 0 {}
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "message one",
                "message two",
                "error RateLimited",
                "close 1008"
            ]
        );
        assert_eq!(server.peer_count(), 0);

        // Later POSTs for it find nobody.
        let post = request(Method::POST, &[("x-crossws-id", &id)]);
        let SseOutcome::Respond(response) = futures_executor::block_on(server.sse(post)) else {
            panic!("a POST for a closed peer was taken");
        };
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
