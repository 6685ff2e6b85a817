//! The hook runner of an SSE peer: its hooks one at a time, in order, as a task of their own,
//! fed by the peer's `POST`s through its [`SseLink`]; and its end, bounded by the close timeout.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;

use super::transport::{SseLink, INBOX_OVERHEAD};
use crate::error::panic_message;
use crate::peer::lock;
use crate::{close_code, CloseInfo, Error, Hooks, Message, Peer, ReadyState};

/// Runs one SSE peer's hooks in order: `open`, each message, `drain`, then `error` and `close`
/// once its stream is gone.
pub(super) async fn run_hooks(peer: Peer, hooks: Arc<dyn Hooks>, link: Arc<SseLink>) {
    let shared = peer.inner.shared.clone();
    // Called through the trait object: `Arc<dyn Hooks>`'s own impl would box each call twice.
    let hooks: &dyn Hooks = &*hooks;
    // The peer joined the registry in `sse_open`; a close asked for since then stands.
    peer.open();
    crate::observe::opened();
    let deadline = CloseDeadline {
        peer: &peer,
        at: OnceLock::new(),
    };
    let mut error = None;
    if let Some(e) = deadline.bound("open", hooks.open(&peer)).await {
        peer.close(close_code::INTERNAL_ERROR, "");
        error.get_or_insert(e);
    }
    let outbox = &peer.inner.outbox;
    let mut gone = false;
    loop {
        let closing = outbox.closing.listen();
        if peer.ready_state() != ReadyState::Open {
            break;
        }
        let next = std::future::poll_fn(|cx| next_event(&peer, &link, cx));
        futures_util::pin_mut!(next);
        let next = match futures_util::future::select(next, closing).await {
            futures_util::future::Either::Left((next, _)) => next,
            futures_util::future::Either::Right(_) => continue,
        };
        let failed = match next {
            Next::Gone => {
                gone = true;
                break;
            }
            Next::OverRate => {
                peer.close(close_code::POLICY_VIOLATION, "");
                error.get_or_insert(Error::RateLimited);
                None
            }
            Next::Drain => deadline.bound("drain", hooks.drain(&peer)).await,
            Next::Message(message) => {
                shared.counters.received(peer.inner.key, message.len());
                deadline
                    .bound("message", hooks.message(&peer, message))
                    .await
            }
        };
        if let Some(e) = failed {
            peer.close(close_code::INTERNAL_ERROR, "");
            error.get_or_insert(e);
        }
    }
    if !gone {
        // Closing: the stream ends once what is queued has been sent. A client that stopped
        // reading gets what is left of the close timeout, then the peer ends without it.
        let ended = std::future::poll_fn(|cx| {
            link.runner.register(cx.waker());
            if lock(&link.state).stream_gone {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let timeout = deadline.passed();
        futures_util::pin_mut!(ended, timeout);
        futures_util::future::select(ended, timeout).await;
    }
    peer.set_ready_state(ReadyState::Closed);
    peer.inner.outbox.shut();
    shared.leave(&peer);
    lock(&shared.sse_peers).remove(&peer.id());
    let sent_close = {
        let mut state = lock(&link.state);
        state.finished = true;
        state.abandoned = !state.stream_gone;
        state.inbox.clear();
        state.inbox_bytes = 0;
        state.sent_close.take()
    };
    link.space.notify(usize::MAX);
    if lock(&peer.inner.outbox.queue).overflowed {
        error.get_or_insert(Error::SendQueueFull {
            limit: shared.limits.max_buffered_bytes,
        });
    }
    let info = match sent_close {
        Some((code, reason)) => CloseInfo::new(code, reason),
        // An event stream has no close frame: the client just went away.
        None => CloseInfo::new(close_code::NO_STATUS, ""),
    };
    crate::observe::ended(&peer, &info, error.as_ref());
    if let Some(e) = error {
        if let Some(panic) = guarded("error", hooks.error(&peer, e)).await {
            crate::observe::late_panic(&panic);
        }
    }
    if let Some(panic) = guarded("close", hooks.close(&peer, info)).await {
        crate::observe::late_panic(&panic);
    }
}

/// The close timeout of one SSE peer, which runs from the moment the peer starts closing.
struct CloseDeadline<'a> {
    peer: &'a Peer,
    at: OnceLock<Instant>,
}

impl CloseDeadline<'_> {
    /// Resolves once the peer is closing and the close timeout has passed since it started to.
    async fn passed(&self) {
        let peer = self.peer;
        loop {
            let listener = peer.inner.outbox.closing.listen();
            if peer.ready_state() >= ReadyState::Closing {
                break;
            }
            listener.await;
        }
        let shared = &peer.inner.shared;
        let at = *self
            .at
            .get_or_init(|| shared.runtime.now() + shared.limits.close_timeout);
        crate::runtime::sleep_until(&*shared.runtime, at).await;
    }

    /// Runs a hook like [`guarded`]; once the peer is closing, the hook has until the close
    /// timeout to finish and is then dropped, so that a hook waiting on a client that stopped
    /// reading (for a drain, say) cannot keep the peer alive.
    async fn bound(
        &self,
        name: &'static str,
        future: Pin<Box<dyn Future<Output = ()> + Send + '_>>,
    ) -> Option<Error> {
        let hook = guarded(name, future);
        let cut_off = self.passed();
        futures_util::pin_mut!(hook, cut_off);
        match futures_util::future::select(hook, cut_off).await {
            futures_util::future::Either::Left((failed, _)) => failed,
            futures_util::future::Either::Right(_) => None,
        }
    }
}

/// Runs a hook to the end; a panic comes back as the error to report.
async fn guarded(
    name: &'static str,
    future: Pin<Box<dyn Future<Output = ()> + Send + '_>>,
) -> Option<Error> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .err()
        .map(|payload| Error::HookPanicked {
            hook: name,
            message: panic_message(&*payload),
        })
}

enum Next {
    Message(Message),
    Drain,
    /// A message went over the rate and those before it were handled: close with 1008.
    OverRate,
    Gone,
}

fn next_event(peer: &Peer, link: &SseLink, cx: &mut Context<'_>) -> Poll<Next> {
    link.runner.register(cx.waker());
    let mut state = lock(&link.state);
    if state.stream_gone {
        return Poll::Ready(Next::Gone);
    }
    if std::mem::take(&mut state.drain_pending) && peer.ready_state() == ReadyState::Open {
        return Poll::Ready(Next::Drain);
    }
    if peer.ready_state() != ReadyState::Open {
        // Messages that arrive once a close has begun are not handed to the hooks.
        if !state.inbox.is_empty() {
            state.inbox.clear();
            state.inbox_bytes = 0;
            link.space.notify(usize::MAX);
        }
        return Poll::Pending;
    }
    if state.over_rate
        && (state.inbox.is_empty()
            || peer.buffered_amount() >= peer.inner.shared.queue_limits.read_pause)
    {
        // The messages before the one over the rate were handled (or the client does not read
        // and they will not be): the peer is closed.
        return Poll::Ready(Next::OverRate);
    }
    if peer.buffered_amount() >= peer.inner.shared.queue_limits.read_pause {
        // Backpressure: hand over nothing more until the client takes what it was sent.
        return Poll::Pending;
    }
    match state.inbox.pop_front() {
        Some(message) => {
            state.inbox_bytes -= message.len() + INBOX_OVERHEAD;
            drop(state);
            link.space.notify(usize::MAX);
            Poll::Ready(Next::Message(message))
        }
        None => Poll::Pending,
    }
}
