//! What the server tells `tracing` and its counters about peers and handshakes.
//!
//! The connection driver and the SSE runner call these at a handful of points (a peer's start
//! and end, a refused request); nothing here runs per message, so a server without a `tracing`
//! subscriber pays only an empty pointer in each peer task ([`Traced`]).
//!
//! Events use the target `anyws`. Levels:
//!
//! - `debug`: a peer opened or closed (code, reason, lifetime), an upgrade refused by the
//!   application or as malformed;
//! - `warn`: a limit hit (1009, 1007, 1008, 1013, 1002, the idle timeout, and `503`, `429`,
//!   `403`, `431` for upgrades), and the backplane losing its broker or dropping relays;
//! - `error`: a hook that panicked, with the hook's name.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::{CloseInfo, Error, Peer, Transport};

/// The span every peer's task runs in: `anyws.peer`, at `info` level, with the peer's id,
/// namespace, remote address, transport and HTTP version.
pub(crate) fn peer_span(peer: &Peer) -> tracing::Span {
    let request = peer.request();
    tracing::info_span!(
        target: "anyws",
        "anyws.peer",
        id = %peer.id(),
        namespace = peer.namespace(),
        remote_addr = request.remote_addr().map(tracing::field::display),
        transport = transport_name(peer.transport()),
        http_version = ?request.version(),
    )
}

pin_project_lite::pin_project! {
    /// A peer's task, run in its span as with `tracing::Instrument`; but the span, 40 bytes
    /// even when disabled, is boxed and kept only when a subscriber wants it, since this lives
    /// in every idle peer's task.
    pub(crate) struct Traced<F> {
        span: Option<Box<tracing::Span>>,
        // `None` once dropped: see the `PinnedDrop` below.
        #[pin]
        future: Option<F>,
    }

    impl<F> PinnedDrop for Traced<F> {
        /// The future is dropped inside the span too, as when its task is cancelled.
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.as_deref().map(tracing::Span::enter);
            this.future.set(None);
        }
    }
}

impl<F> Traced<F> {
    /// `future`, run in `span` when that is enabled.
    pub(crate) fn new(future: F, span: tracing::Span) -> Self {
        Self {
            span: (!span.is_disabled()).then(|| Box::new(span)),
            future: Some(future),
        }
    }
}

impl<F: Future<Output = ()>> Future for Traced<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let _entered = this.span.as_deref().map(tracing::Span::enter);
        match this.future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Ready(()),
        }
    }
}

/// The transport's name in events and metric labels.
pub(crate) fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::WebSocket => "websocket",
        Transport::Sse => "sse",
    }
}

/// A peer's connection ended with `info`, after `error` if any: counts the close and reports
/// it, from within the peer's span. Runs before the `error` and `close` hooks.
pub(crate) fn ended(peer: &Peer, info: &CloseInfo, error: Option<&Error>) {
    let shared = &peer.inner.shared;
    shared.counters.closed(info.code);
    let lifetime = peer.inner.age();
    if let Some(error) = error {
        failed(error);
    }
    tracing::debug!(
        target: "anyws",
        code = info.code,
        reason = %info.reason,
        lifetime_ms = lifetime.as_millis() as u64,
        "peer closed"
    );
}

/// Reports what ended a peer: a limit as a warning, a panic as an error.
fn failed(error: &Error) {
    match error {
        Error::HookPanicked { hook, message } => {
            tracing::error!(target: "anyws", hook = *hook, code = 1011, panic = %message, "hook panicked");
        }
        Error::Io(e) => {
            tracing::debug!(target: "anyws", error = %e, "connection failed");
        }
        other => {
            let code = other.close_code();
            tracing::warn!(target: "anyws", code, error = %other, "limit hit, peer closed");
        }
    }
}

/// A hook panicked after the connection ended (`error` or `close`), where nothing else reports
/// it.
pub(crate) fn late_panic(error: &Error) {
    failed(error);
}

/// A peer's task starts: reports the open.
pub(crate) fn opened() {
    tracing::debug!(target: "anyws", "peer opened");
}

/// The resolver or `upgrade` hook panicked: the request gets `500`.
pub(crate) fn upgrade_panicked(hook: &'static str) {
    tracing::error!(target: "anyws", hook, status = 500, "hook panicked");
}

/// An upgrade request (WebSocket or SSE stream) that started at `started` was answered with
/// `status`: counts a refusal, and reports it (a limit's status as a warning).
pub(crate) fn answered(
    counters: &crate::stats::Counters,
    remote_addr: Option<std::net::SocketAddr>,
    status: http::StatusCode,
    started: Instant,
    now: Instant,
) {
    let code = status.as_u16();
    if code == 101 || status.is_success() {
        counters.handshake_took(now.saturating_duration_since(started).as_secs_f64());
        return;
    }
    counters.rejected(code);
    match code {
        403 | 429 | 431 | 503 => tracing::warn!(
            target: "anyws",
            status = code,
            remote_addr = remote_addr.map(tracing::field::display),
            "upgrade refused by a limit"
        ),
        _ => tracing::debug!(
            target: "anyws",
            status = code,
            remote_addr = remote_addr.map(tracing::field::display),
            "upgrade refused"
        ),
    }
}

/// The backplane driver connected to its broker, or lost it.
pub(crate) fn backplane_connected(connected: bool) {
    if connected {
        tracing::info!(target: "anyws", "backplane connected");
    } else {
        tracing::warn!(target: "anyws", "backplane disconnected: publishes stay local until it is back");
    }
}
